"""atheris targets over the sans-IO core: each is ``bytes -> None``, and whatever it raises is a
finding.

The core's declared rejection is ``WireError`` (a ``ValueError``): ``Stack.receive_frame``
catches it itself and counts a drop, so *any* exception out of the stack, its timers or the
facts the shell reports is a bug; where a target calls a decoder directly it catches
``WireError`` and nothing else. The JSON reader rejects by value (``Rejected``), never by
raising, so nothing may escape it either.

Beyond "does not raise", the targets check what the core hands out (``check_frame``): every
frame toward the guest decodes with our own decoders, IPv4 headers and, unless offloaded,
transport checksums verify, and no frame exceeds the MTU unless it is a GSO burst; API replies
are JSON; DHCP replies decode; reassembly gives back exactly what was fragmented.

Inputs are mostly *records*: ``[u16 length][bytes]`` repeated (``records``/``pack_records``),
so a seed can be a sequence of real frames or requests and the mutator can still cut, splice
and grow them. A length running past the end takes the rest. ``tests/fuzz/seeds.py`` writes
the seeds; ``tests/fuzz/run.py`` runs the targets under libFuzzer.
"""

from __future__ import annotations

import json
import socket
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace

from pyslirp4netns.config import Config
from pyslirp4netns.core import events
from pyslirp4netns.core.api import EPHEMERAL, MAX_REQUEST, AddHostfwd, Api, RemoveHostfwd
from pyslirp4netns.core.dhcp import DhcpServer
from pyslirp4netns.core.dhcpv6 import Dhcpv6Server
from pyslirp4netns.core.fragments import Reassembler, fragment_ipv4, fragment_ipv6
from pyslirp4netns.core.jsonreader import Document, Outcome, Reader
from pyslirp4netns.core.nat import Nameservers
from pyslirp4netns.core.stack import Stack
from pyslirp4netns.wire import dhcp, dhcpv6, ethernet, icmpv6, ipv4, ipv6, udp, vnet
from pyslirp4netns.wire.codec import Buffer, WireError, checksum, pseudo_sum
from pyslirp4netns.wire.numbers import IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP
from tests.rig import frames as rig

CONFIG = Config(target="1", pid=1)
NAMESERVERS = Nameservers(v4=bytes([127, 0, 0, 53]), v6=socket.inet_pton(socket.AF_INET6, "::1"))
LINK_CLIENT6 = socket.inet_pton(socket.AF_INET6, "fe80::1")
ETHERTYPE_IPV4 = b"\x08\x00"
ETHERTYPE_IPV6 = b"\x86\xdd"
_IPV6_EXTENSIONS = (0, 43, 60)  # hop-by-hop, routing, destination options (RFC 8200 §4)


class Finding(AssertionError):
    """An oracle failed: the core handed out something it must not."""


def check(condition: bool, what: str) -> None:
    if not condition:
        raise Finding(what)


# -- records -------------------------------------------------------------------------------
def records(data: bytes) -> Iterator[bytes]:
    """``[u16 length][bytes]`` repeated; a length past the end takes the rest."""
    pos, size = 0, len(data)
    while pos + 2 <= size:
        length = data[pos] << 8 | data[pos + 1]
        pos += 2
        yield data[pos : pos + length]
        pos += length


def pack_records(items: Iterable[bytes]) -> bytes:
    return b"".join(len(item).to_bytes(2, "big") + item for item in items)


# -- checksums, fixed in the mutated frame so that inputs get past them ----------------------
def fix_checksums(frame: bytearray, offset: int = 0) -> None:
    """Rewrite the IPv4 header checksum and the TCP/UDP/ICMP/ICMPv6 checksum of the Ethernet
    frame at ``offset`` in place, wherever the headers are there to say where they go.
    Fragments keep their transport checksum (it covers the reassembled datagram)."""
    if len(frame) < offset + 14:
        return
    ethertype = frame[offset + 12 : offset + 14]
    if ethertype == ETHERTYPE_IPV4:
        _fix_ipv4(frame, offset + 14)
    elif ethertype == ETHERTYPE_IPV6:
        _fix_ipv6(frame, offset + 14)


def _fix_ipv4(frame: bytearray, ip: int) -> None:
    if len(frame) < ip + 20 or frame[ip] >> 4 != 4:
        return
    ihl = (frame[ip] & 0x0F) * 4
    if ihl < 20 or len(frame) < ip + ihl:
        return
    total = frame[ip + 2] << 8 | frame[ip + 3]
    fragment = (frame[ip + 6] << 8 | frame[ip + 7]) & 0x3FFF
    if total >= ihl and not fragment:
        end = min(len(frame), ip + total)
        src, dst = bytes(frame[ip + 12 : ip + 16]), bytes(frame[ip + 16 : ip + 20])
        _fix_transport(frame, frame[ip + 9], ip + ihl, end, src, dst)
    frame[ip + 10 : ip + 12] = b"\0\0"
    frame[ip + 10 : ip + 12] = checksum(frame[ip : ip + ihl]).to_bytes(2, "big")


def _fix_ipv6(frame: bytearray, ip: int) -> None:
    if len(frame) < ip + 40:
        return
    src, dst = bytes(frame[ip + 8 : ip + 24]), bytes(frame[ip + 24 : ip + 40])
    end = min(len(frame), ip + 40 + (frame[ip + 4] << 8 | frame[ip + 5]))
    protocol, pos = frame[ip + 6], ip + 40
    for _ in range(8):
        if protocol == 44:  # fragment header: only an atomic fragment has its header here
            if pos + 8 > end or frame[pos + 2 : pos + 4] != b"\0\0":
                return
            protocol, pos = frame[pos], pos + 8
        elif protocol in _IPV6_EXTENSIONS:
            if pos + 2 > end:
                return
            protocol, pos = frame[pos], pos + (frame[pos + 1] + 1) * 8
        else:
            break
    _fix_transport(frame, protocol, pos, end, src, dst)


def _fix_transport(
    frame: bytearray, protocol: int, start: int, end: int, src: bytes, dst: bytes
) -> None:
    if protocol == IPPROTO_TCP:
        where = start + 16
    elif protocol == IPPROTO_UDP:
        where = start + 6
        if start + 8 <= end:
            length = frame[start + 4] << 8 | frame[start + 5]
            if 8 <= length <= end - start:
                end = start + length  # the UDP checksum covers the UDP length (RFC 768)
    elif protocol in (IPPROTO_ICMP, IPPROTO_ICMPV6) and (protocol == IPPROTO_ICMP) == (
        len(src) == 4
    ):
        where = start + 2
    else:
        return
    if where + 2 > end:
        return
    frame[where : where + 2] = b"\0\0"
    initial = 0 if protocol == IPPROTO_ICMP else pseudo_sum(src, dst, protocol, end - start)
    value = checksum(frame[start:end], initial)
    if protocol == IPPROTO_UDP and value == 0:
        value = 0xFFFF  # RFC 768: a computed zero is sent as all ones
    frame[where : where + 2] = value.to_bytes(2, "big")


# -- what the core hands out -----------------------------------------------------------------
def check_frame(parts: list[Buffer], vnet_hdr: bool, mtu: int) -> None:
    """One frame toward the guest must be what a guest kernel accepts."""
    raw = b"".join(bytes(p) for p in parts)
    offload = False
    gso = False
    if vnet_hdr:
        check(len(raw) >= vnet.SIZE, "frame shorter than its virtio-net header")
        header = vnet.decode(raw)
        offload = bool(header.flags & vnet.NEEDS_CSUM)
        gso = header.gso_type != vnet.GSO_NONE
        raw = raw[vnet.SIZE :]
    try:
        eth = ethernet.decode(raw)
        check(gso or len(raw) - ethernet.SIZE <= mtu, f"frame of {len(raw)} bytes over mtu {mtu}")
        if eth.ethertype == ethernet.ETHERTYPE_IPV4:
            ip = ipv4.decode(raw, eth.payload_offset)  # the header checksum is checked here
            if not offload and not ip.more_fragments and not ip.fragment_offset:
                _check_transport(
                    raw, ip.protocol, ip.payload_offset, ip.payload_length, ip.src, ip.dst
                )
        elif eth.ethertype == ethernet.ETHERTYPE_IPV6:
            ip6 = ipv6.decode(raw, eth.payload_offset)
            upper = ipv6.walk_extensions(raw, ip6)
            if not offload and upper.fragment is None:
                _check_transport(raw, upper.protocol, upper.offset, upper.length, ip6.src, ip6.dst)
    except WireError as e:
        raise Finding(f"the core sent a frame its own decoders refuse: {e}: {raw.hex()}") from e


def _check_transport(
    raw: bytes, protocol: int, offset: int, length: int, src: bytes, dst: bytes
) -> None:
    data = raw[offset : offset + length]
    if protocol == IPPROTO_UDP:
        datagram = udp.decode(raw, offset, length)
        check(udp.checksum_ok(raw, datagram, src, dst), "udp checksum wrong toward the guest")
    elif protocol in (IPPROTO_TCP, IPPROTO_ICMPV6):
        check(checksum(data, pseudo_sum(src, dst, protocol, length)) == 0, "checksum toward guest")
    elif protocol == IPPROTO_ICMP:
        check(checksum(data) == 0, "icmp checksum wrong toward the guest")


# -- the frames target: the whole stack with an in-memory shell ------------------------------
class Shell:
    """Does what ``shell/daemon.py`` does after every input, in memory: flush, carry out the
    requests (answering each with the facts a host socket would give), take the frames and
    check them. Facts are only ever stated where a real shell could state them."""

    def __init__(self, stack: Stack, mode: int) -> None:
        self.stack = stack
        self.mode = mode  # how connects end: 0 connected, 1 refused, 2 failed, 3 left pending
        # How much a host socket takes of each write (None: all of it). As in shell/streams.py
        # every StreamWrite is answered at once: the core's host_written is about the last one.
        self.write_limit: int | None = None
        self.pending: set[int] = set()  # connects not yet answered
        self.connected: set[int] = set()  # stream flows with a live host socket
        self.reading: set[int] = set()  # of those, the ones the shell reads
        self.ended: set[int] = set()  # host EOF or reset reported
        self.datagrams: dict[int, int] = {}  # open datagram flows: kind (UDP or PING)
        self.vnet_hdr = stack.egress.vnet_hdr
        self.mtu = stack.egress.mtu
        self.seen: Counter[str] = Counter()  # requests carried out, by kind (for the tests)

    def carry_out(self, now: float) -> None:
        stack = self.stack
        stack.flush(now)
        for _ in range(64):  # a shell answering facts forever would be a bug of its own
            requests = stack.take_requests()
            if not requests:
                break
            for request in requests:
                self._carry(request, now)
            stack.flush(now)
        else:
            raise Finding("the core keeps asking: 64 rounds of requests in one turn")
        for parts in stack.take_frames():
            check_frame(parts, self.vnet_hdr, self.mtu)

    def _carry(self, request: events.Request, now: float) -> None:
        streams = self.stack.streams
        self.seen[type(request).__name__] += 1
        match request:
            case events.StreamConnect(flow=flow):
                if self.mode == 0:
                    self.connected.add(flow)
                    streams.host_connected(flow, now)
                elif self.mode == 1:
                    streams.host_refused(flow, now)
                elif self.mode == 2:
                    streams.host_failed(flow, bool(flow & 1), now)
                else:
                    self.pending.add(flow)
            case events.StreamWrite(flow=flow, data=data):
                size = sum(len(chunk) for chunk in data)
                n = size if self.write_limit is None else min(size, self.write_limit)
                streams.host_written(flow, n, n == 0, now)
            case events.StreamResume(flow=flow):
                self.reading.add(flow)
            case events.StreamPause(flow=flow):
                self.reading.discard(flow)
            case events.StreamClose(flow=flow):
                for table in (self.pending, self.connected, self.reading, self.ended):
                    table.discard(flow)
            case events.DatagramOpen(flow=flow, kind=kind):
                self.datagrams[flow] = kind
            case events.DatagramClose(flow=flow):
                self.datagrams.pop(flow, None)
            case _:
                pass  # sends, shutdowns and log lines need no answer

    def fact(self, record: bytes, now: float) -> None:
        """One fact about a host socket the record picks: ``[kind][which][args...]``."""
        if len(record) < 2:
            return
        kind, which, rest = record[0] % 16, record[1], record[2:]
        streams, datagrams = self.stack.streams, self.stack.datagrams
        if kind < 3:
            flow = _pick(self.pending, which)
            if flow is None:
                return
            self.pending.discard(flow)
            if kind == 0:
                self.connected.add(flow)
                streams.host_connected(flow, now)
            elif kind == 1:
                streams.host_refused(flow, now)
            else:
                streams.host_failed(flow, bool(rest[:1]) and rest[0] & 1 == 1, now)
        elif kind == 3:
            flow = _pick(self.reading - self.ended, which)
            if flow is not None:
                streams.host_data(flow, bytes(rest), now)
        elif kind == 4:  # host sockets take this much of each write from now on
            self.write_limit = int.from_bytes(rest[:3], "big") if rest else None
        elif kind == 5:
            flow = _pick(self.connected, which)
            if flow is not None:
                streams.host_writable(flow, now)
        elif kind in (6, 7):
            flow = _pick(self.connected - self.ended, which)
            if flow is not None:
                self.ended.add(flow)
                self.reading.discard(flow)
                if kind == 6:
                    streams.host_eof(flow, now)
                else:
                    streams.host_reset(flow, now)
        elif kind in (8, 9):
            flow = _pick(set(self.datagrams), which)
            if flow is None:
                return
            if self.datagrams[flow] == events.UDP:
                datagrams.udp_received(flow, bytes(rest), now)
            else:
                datagrams.ping_received(flow, bytes(rest), now, kind == 9)
        elif kind == 10:
            flow = _pick(set(self.datagrams), which)
            if flow is not None and len(rest) >= 3:
                datagrams.host_error(flow, rest[0] % 4, rest[1], rest[2], bytes(rest[3:]), now)
        elif kind == 11:
            flow = _pick(set(self.datagrams), which)
            if flow is not None:
                self.datagrams.pop(flow)
                datagrams.host_failed(flow, which & 1 == 1, bytes(rest))
        elif kind in (12, 13):
            self._forward(kind == 12, which, rest, now)

    def _forward(self, tcp: bool, which: int, rest: bytes, now: float) -> None:
        """A host client of a port forward: an accepted connection or a datagram."""
        if len(rest) < 4:
            return
        stack = self.stack
        v6 = which & 1 and stack.enable_ipv6
        guest = rig.GUEST6 if v6 else rig.GUEST4
        remote = stack.egress.gateway6 if v6 else stack.egress.gateway
        guest_port = (rest[0] << 8 | rest[1]) or 1
        remote_port = (rest[2] << 8 | rest[3]) or 1
        if tcp:
            flow = stack.streams.open_to_guest(guest, guest_port, remote, remote_port, now)
            if flow is not None:
                self.connected.add(flow)
                self.reading.add(flow)
        else:
            flow, _ = stack.datagrams.forward_flow(guest, guest_port, remote, remote_port, now)
            self.datagrams[flow] = events.UDP
            stack.datagrams.udp_received(flow, bytes(rest[4:]), now)


def _pick(flows: set[int], which: int) -> int | None:
    if not flows:
        return None
    ordered = sorted(flows)
    return ordered[which % len(ordered)]


def frame_options(options: int) -> tuple[Config, bool]:
    """Byte 0 of a frames input: the stack's configuration and whether the tap has a
    virtio-net header."""
    config = replace(
        CONFIG,
        enable_ipv6=bool(options & 0x04),
        debug=bool(options & 0x08),
        disable_host_loopback=bool(options & 0x10),
        mtu=65520 if options & 0x20 else 1500,
    )
    return config, bool(options & 0x01)


def run_frames(data: bytes) -> Shell | None:
    """The frames target; returns the shell (and its stack) for tests that look at them.

    Byte 0: bit 0 vnet header, bit 1 fix checksums, bit 2 IPv6, bit 3 debug, bit 4
    disable host loopback, bit 5 MTU 65520, bits 6-7 how host connects end. Then records, each
    ``[op][body]``: op % 4 == 0 a frame from the tap (after a 10-byte virtio-net header when
    the tap has one), 1 time passes (body[0] * 50 ms, then the timers the daemon would run),
    2 a fact about a host socket (``Shell.fact``), 3 host sockets full (they take no write)
    or no longer.
    """
    if not data:
        return None
    options = data[0]
    config, vnet_hdr = frame_options(options)
    fix = bool(options & 0x02)
    now = 1.0
    stack = Stack(config, vnet_hdr=vnet_hdr, now=now)
    stack.set_nameservers(NAMESERVERS)
    shell = Shell(stack, options >> 6)
    for record in records(data[1:]):
        if not record:
            continue
        op, body = record[0] % 4, record[1:]
        now += 0.001
        if op == 0:
            csum_done, gso_size = False, 0
            if vnet_hdr:  # as shell/tap.py reads it
                if len(body) <= vnet.SIZE:
                    continue
                csum_done = bool(body[0] & (vnet.NEEDS_CSUM | vnet.DATA_VALID))
                if body[1] == vnet.GSO_UDP_L4:
                    gso_size = body[4] | body[5] << 8
                body = body[vnet.SIZE :]
            frame = bytearray(body)
            if fix:
                fix_checksums(frame)
            stack.receive_frame(bytes(frame), now, csum_done, gso_size)
        elif op == 1:
            now += (body[0] if body else 1) * 0.05
            deadline = stack.next_deadline()
            if deadline is not None and now >= deadline:
                stack.on_timer(now)
        elif op == 2:
            shell.fact(body, now)
        else:
            shell.write_limit = 0 if shell.write_limit is None else None  # full, or not
        shell.carry_out(now)
    # Let every timer run out: retransmissions, give-ups, TIME-WAIT, flow and fragment expiry.
    for _ in range(8):
        deadline = stack.next_deadline()
        if deadline is None:
            break
        now = max(now, deadline) + 1.0
        stack.on_timer(now)
        shell.carry_out(now)
    return shell


def frames(data: bytes) -> None:
    run_frames(data)


# -- the API target: what clients send on the unix socket ------------------------------------
def chunks(request: bytes, seed: int) -> list[bytes]:
    """``request`` cut as partial reads would cut it (seed 0: in one piece)."""
    if not seed:
        return [request]
    out, pos, state = [], 0, seed
    while pos < len(request):
        state = (state * 1103515245 + 12345) & 0x7FFFFFFF
        size = 1 + (state >> 16) % (1 + (seed & 0x3F))
        out.append(request[pos : pos + size])
        pos += size
    return out


def read_request(pieces: list[bytes]) -> Outcome:
    """As ``shell/apiserver.py`` reads a client: never more than MAX_REQUEST in all."""
    reader = Reader(limit=MAX_REQUEST)
    for piece in pieces:
        piece = piece[: MAX_REQUEST - reader.size]
        if not piece:
            break
        outcome = reader.feed(piece)
        if outcome is not None:
            return outcome
    return reader.finish()


def api(data: bytes) -> None:
    """Byte 0: bit 0 IPv6, bit 1 binds fail. Then one record per client connection:
    ``[split seed][the bytes it sends]``; every request goes to the same forwarding table."""
    if not data:
        return
    table = Api(replace(CONFIG, enable_ipv6=bool(data[0] & 1)))
    binds_fail = bool(data[0] & 2)
    port = 40000
    for record in records(data[1:]):
        if not record:
            continue
        request = record[1:]
        outcome = read_request(chunks(request, record[0]))
        if len(request) < MAX_REQUEST:
            # However the bytes arrive, the same request (test_api's split property).
            whole = Reader(limit=MAX_REQUEST).feed(request)
            if whole is None:
                whole = read_request([request])
            check(outcome == whole, f"split reads decided {outcome!r}, one read {whole!r}")
        result = table.execute(outcome)
        if isinstance(result, AddHostfwd):
            if binds_fail:
                continue
            port += 1
            rule = table.rule(result, port if result.host_port == EPHEMERAL else None)
            reply = table.added(rule, result.host_port == EPHEMERAL)
        elif isinstance(result, RemoveHostfwd):
            reply = result.reply
        elif isinstance(result, bytes):
            reply = result
        else:
            continue  # get_stats: the shell's counters
        value = json.loads(reply)  # every reply is JSON a client can decode
        check(isinstance(value, dict), f"reply is not an object: {reply!r}")
        parsed = Reader().feed(reply)
        check(isinstance(parsed, Document), f"our own reader refuses our reply {reply!r}")
    table.list_reply()


# -- DHCP: the v4 server and stateless DHCPv6 -----------------------------------------------
def dhcp_target(data: bytes) -> None:
    """Byte 0: bit 0 DHCPv6, bit 1 through the whole stack (UDP frames to the server port),
    else the decoder and server alone. Then one record per client message (the UDP payload);
    one server (and its leases) for all of them."""
    if not data:
        return
    v6, whole = bool(data[0] & 1), bool(data[0] & 2)
    messages = [bytes(r) for r in records(data[1:])]
    if whole:
        stack = Stack(replace(CONFIG, enable_ipv6=True))
        shell = Shell(stack, 0)
        for i, payload in enumerate(messages):
            if v6:
                frame = rig.udp6_frame(dhcpv6.ALL_SERVERS, dhcpv6.SERVER_PORT, payload, sport=546)
            else:
                frame = rig.udp4_frame(
                    rig.BROADCAST4, dhcp.SERVER_PORT, payload, sport=68, src=bytes(4)
                )
            stack.receive_frame(frame, float(i))
            shell.carry_out(float(i))
        return
    if v6:
        server6 = Dhcpv6Server(bytes(16), bytes(6))
        for payload in messages:
            try:
                message6 = dhcpv6.decode(payload)
                # The server reads the Option Request option itself: a malformed one is the
                # same WireError (test_dhcpv6), which the stack counts as a drop.
                reply6 = server6.handle(message6)
            except WireError:
                continue
            if isinstance(reply6, bytes):
                try:
                    dhcpv6.decode(reply6)
                except WireError as e:
                    raise Finding(f"our DHCPv6 reply does not decode: {reply6.hex()}") from e
        return
    server = DhcpServer(CONFIG)
    for payload in messages:
        try:
            message = dhcp.decode(payload)
        except WireError:
            continue
        reply = server.handle(message)
        if reply is not None:
            try:
                answer = dhcp.decode(reply)
            except WireError as e:
                raise Finding(f"our DHCP reply does not decode: {reply.hex()}") from e
            check(answer.xid == message.xid and answer.chaddr == message.chaddr, "reply mismatch")


# -- NDP and RA --------------------------------------------------------------------------------
def ndp(data: bytes) -> None:
    """ICMPv6 from the guest with ``--enable-ipv6``, built and checksummed here: one record per
    message, ``[hop limit][source][destination][type][code][rest:4][body]``, sources and
    destinations picked from the addresses NDP deals with. Time passes between messages so
    that unsolicited RAs go out too."""
    if not data:
        return
    config = replace(CONFIG, enable_ipv6=True)
    stack = Stack(config, vnet_hdr=bool(data[0] & 1), now=0.0)
    if data[0] & 2:
        stack.set_nameservers(NAMESERVERS)  # RAs carry RDNSS
    shell = Shell(stack, 0)
    egress = stack.egress
    addresses = [
        *egress.aliases6,
        bytes(16),  # unspecified: duplicate address detection
        LINK_CLIENT6,
        rig.ALL_ROUTERS6,
        socket.inet_pton(socket.AF_INET6, "ff02::1"),
        socket.inet_pton(socket.AF_INET6, "ff02::1:ff00:2"),
        socket.inet_pton(socket.AF_INET6, "fd00::100"),
    ]
    now = 0.0
    for record in records(data[1:]):
        if len(record) < 9:
            continue
        hop_limit, src, dst = record[0], record[1], record[2]
        type_, code, rest, body = record[3], record[4], record[5:9], bytes(record[9:])
        source = addresses[src % len(addresses)]
        target = addresses[dst % len(addresses)]
        message = icmpv6.encode(source, target, type_, code, int.from_bytes(rest, "big"), body)
        packet = ipv6.encode(source, target, icmpv6.NEXT_HEADER, len(message), hop_limit=hop_limit)
        frame = ethernet.encode(ethernet.BROADCAST, rig.GUEST_MAC, ethernet.ETHERTYPE_IPV6)
        stack.receive_frame(frame + packet + message, now, bool(src & 0x80))
        shell.carry_out(now)
        now += (dst >> 4) * 40.0  # up to 600 s: the RA timer's range
        deadline = stack.next_deadline()
        if deadline is not None and now >= deadline:
            stack.on_timer(now)
            shell.carry_out(now)


# -- reassembly --------------------------------------------------------------------------------
def fragments(data: bytes) -> None:
    """Byte 0: bit 0 IPv6; bit 1 through the whole stack, else a Reassembler alone, bit 2 a
    round trip (fragment then reassemble). Then one record per fragment,
    ``[key][offset:2][flags][time][data]`` (offset in 8-byte units, flags bit 0 more
    fragments), or for a round trip ``[mtu:2][payload]``."""
    if not data:
        return
    v6, whole, round_trip = bool(data[0] & 1), bool(data[0] & 2), bool(data[0] & 4)
    if round_trip:
        _round_trip(v6, data[1:])
    elif whole:
        _stack_fragments(v6, data[1:])
    else:
        _reassembler(v6, data[1:])


def _reassembler(v6: bool, data: bytes) -> None:
    reassembler: Reassembler[int] = Reassembler(
        max_datagrams=4, max_bytes=4096, timeout=30.0, max_size=0xFFFF if v6 else 0xFFFF - 20
    )
    now = 0.0
    for record in records(data):
        if len(record) < 5:
            continue
        key, offset, flags, step = record[0] & 7, record[1] << 8 | record[2], record[3], record[4]
        offset *= 8
        more = bool(flags & 1)
        payload = bytes(record[5:])
        now += step * 0.25
        if flags & 2:
            reassembler.expire(now)
        done = reassembler.add(key, offset, more, payload, now, key if offset == 0 else None)
        if done is not None:
            first, whole = done
            check(first == key, "reassembled under another key")
            check(len(whole) <= reassembler.max_size, "reassembled past max_size")
            check(whole[offset : offset + len(payload)] == payload, "last fragment not in place")
        check(0 <= reassembler.held_bytes <= reassembler.max_bytes, "held bytes out of bounds")
        check(len(reassembler) <= reassembler.max_datagrams, "too many datagrams held")
    reassembler.expire(now + 60.0)
    check(reassembler.held_bytes == 0 and len(reassembler) == 0, "expiry left bytes behind")


def _round_trip(v6: bool, data: bytes) -> None:
    for record in records(data):
        if len(record) < 2:
            continue
        mtu, payload = record[0] << 8 | record[1], bytes(record[2:])
        try:
            pieces = fragment_ipv6(payload, mtu) if v6 else fragment_ipv4(payload, mtu)
        except ValueError:
            continue  # no datagram can carry it, or no room to fragment into: documented
        reassembler: Reassembler[str] = Reassembler()
        result: tuple[str, bytes] | None = None
        for offset, more, chunk in pieces:
            check(len(chunk) + (48 if v6 else 20) <= max(mtu, 68) or not more, "fragment > mtu")
            result = reassembler.add(1, offset, more, chunk, 0.0, "first" if not offset else None)
        check(result == ("first", payload), "fragments do not reassemble to the payload")


def _stack_fragments(v6: bool, data: bytes) -> None:
    stack = Stack(replace(CONFIG, enable_ipv6=v6))
    stack.set_nameservers(NAMESERVERS)
    shell = Shell(stack, 0)
    now = 0.0
    for record in records(data):
        if len(record) < 5:
            continue
        key, offset, flags, step = record[0], record[1] << 8 | record[2], record[3], record[4]
        payload = bytes(record[5:])
        now += step * 0.25
        more = bool(flags & 1)
        dst = (rig.GATEWAY6 if key & 1 else rig.ALL_ROUTERS6) if v6 else rig.GATEWAY4
        protocol = (IPPROTO_UDP, IPPROTO_TCP, IPPROTO_ICMPV6 if v6 else IPPROTO_ICMP, 0)[key >> 6]
        if v6:
            header = (
                bytes((protocol, 0))
                + ((offset & 0x1FFF) << 3 | more).to_bytes(2, "big")
                + (key & 7).to_bytes(4, "big")
            )
            frame = rig.ipv6_frame(dst, ipv6.NEXT_FRAGMENT, header + payload)
        else:
            frame = rig.ipv4_frame(
                dst,
                protocol,
                payload,
                identification=key & 7,
                more_fragments=more,
                fragment_offset=(offset & 0x1FFF) * 8,
            )
        stack.receive_frame(frame, now)
        shell.carry_out(now)
        deadline = stack.next_deadline()
        if deadline is not None and now >= deadline:
            stack.on_timer(now)
            shell.carry_out(now)
    stack.on_timer(now + 60.0)
    shell.carry_out(now + 60.0)
    check(not len(stack.reassembler) and not len(stack.reassembler6), "reassembly never expired")


TARGETS: dict[str, Callable[[bytes], None]] = {
    "frames": frames,
    "api": api,
    "dhcp": dhcp_target,
    "ndp": ndp,
    "fragments": fragments,
}
