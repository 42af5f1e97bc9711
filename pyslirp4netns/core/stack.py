"""The guest-facing stack, sans-IO: frames in, frames and requests out.

Theory of operation
-------------------
The shell (``daemon``) hands every Ethernet frame it reads from the tap to
``Stack.receive_frame(frame, now, csum_done, gso_size)`` and afterwards takes ``Stack.out``
(frames for the guest, each a list of buffers for one ``writev``, the virtio-net header first
when the tap has one) and ``Stack.requests`` (``events``: host sockets to open, payloads to send,
sockets to close, lines to log). What the host side brings back comes in as facts:
``udp_received``, ``ping_received``, ``datagram_error``, ``datagram_failed``. The stack never
opens an fd, reads a clock or draws a random number: ``now`` is an argument, randomness is a
callable handed in, and ``next_deadline()``/``on_timer(now)`` are how its timers run.

``frame`` may be a view of the shell's reusable read buffer: nothing here keeps it after the call.
A malformed frame raises ``WireError`` inside, is counted by reason in ``dropped`` and changes
nothing else: one bad frame can't stop the stack.

What answers (contract §3):

* ARP for the gateway N+2 and DNS alias N+3 only (MAC ``52:55:`` + the IPv4 address); guest
  MACs are learned from their ARP and IPv4 traffic, and ``send_to_guest`` asks by ARP (holding a
  few frames) before delivering to a guest address not heard from yet; with
  ``--enable-ipv6`` NDP for fd00::2, fd00::3, fe80::2, fe80::3 (MAC ``52:56:`` + low 32 bits)
  and a Router Advertisement on every Router Solicitation and every 200-600 s.
* ICMP echo to those aliases, answered by us (TTL/hop limit 255, whatever the disable flags).
* DHCP on port 67 of the gateway or broadcast (``dhcp.DhcpServer``); TFTP refused with
  "Access violation", as slirp4netns.
* UDP to anywhere else and ICMP echo to other hosts: a *flow* per (guest address, port or echo
  identifier, destination), whose destination went through ``nat.Policy`` once, before the
  shell opened any socket. A denied flow gets ICMP net unreachable from the gateway. Flows
  idle out after 240 s (10 s for port 53) and the tables are bounded (least recently used
  evicted). Errors the host socket receives (``IP_RECVERR``) come back to the guest as the
  matching ICMP error quoting its own datagram: better than slirp4netns, where UDP to a closed
  port is silently lost.
* IPv4 fragments are reassembled (``fragments.Reassembler``: bounded in count, bytes and time,
  overlaps refused); datagrams bigger than the MTU toward the guest are fragmented.

ICMP errors are never sent about multicast or broadcast datagrams (RFC 1122 §3.2.2).

"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Callable

from pyslirp4netns.config import Config
from pyslirp4netns.core import events, ndp
from pyslirp4netns.core.dhcp import DhcpServer
from pyslirp4netns.core.events import (
    DatagramClose,
    DatagramOpen,
    DatagramSend,
    Log,
    StreamClose,
    StreamConnect,
    StreamShutdown,
    StreamWrite,
)
from pyslirp4netns.core.fragments import Reassembler, fragment_ipv4
from pyslirp4netns.core.nat import (
    IPPROTO_ICMP,
    IPPROTO_ICMPV6,
    IPPROTO_TCP,
    IPPROTO_UDP,
    Deny,
    Flow,
    FlowTable,
    Policy,
)
from pyslirp4netns.core.tcp import Segment, TcpConnection, TcpState, reset_for
from pyslirp4netns.wire import arp, dhcp, ethernet, icmpv4, icmpv6, ipv4, ipv6, tcp, udp, vnet
from pyslirp4netns.wire.codec import Buffer, WireError

ALIAS_MAC_PREFIX = b"\x52\x55"  # libslirp's MAC for an alias: 52:55 + its IPv4 address
REPLY_TTL = 255  # libslirp answers ICMP itself with TTL 255
FORWARD_TTL = 64  # what we put on datagrams relayed from host sockets
BROADCAST4 = b"\xff\xff\xff\xff"
UNKNOWN_MAC = bytes(6)  # a frame's destination until ARP/NDP tells us the guest's MAC
UNSPECIFIED6 = bytes(16)
TFTP_PORT = 69
TFTP_RRQ, TFTP_WRQ, TFTP_ERROR = 1, 2, 5
TFTP_ACCESS_VIOLATION = 2

UDP_TIMEOUT = 240.0  # contract §3.8
DNS_TIMEOUT = 10.0  # flows to port 53: slirp4netns's 10 s after the last answer
PING_TIMEOUT = 240.0  # contract §3.5
FLOW_LIMIT = 4096  # per table; the least recently used flow makes room

# sock_extended_err origins (linux/errqueue.h)
ORIGIN_ICMP = 2
ORIGIN_ICMP6 = 3

UDP_CSUM_OFFSET = 6  # of the checksum within the UDP header, for virtio NEEDS_CSUM

NEIGHBOUR_LIMIT = 4096  # guest IPv4 addresses remembered
ARP_RETRY = 1.0  # seconds before asking again for an unanswered guest address
AWAITING_LIMIT = 64  # guest addresses being resolved at once
AWAITING_FRAMES = 16  # frames held per address meanwhile

TCP_LIMIT = 16384  # connections at once; a SYN beyond that gets RST|ACK
TCP_RCV_BUFFER = 4 << 20  # per connection: the window we offer, bounded by what we hold
TCP_SND_BUFFER = 4 << 20  # per connection: host bytes kept until the guest acknowledges them
# How long an ACK of a little guest data may wait for the host's answer to carry it.
DELAYED_ACK = 0.002
# A GSO burst toward the guest: whole frame within 64 KiB with any IP and TCP header chain.
GSO_MAX_SEGMENT = 0xFFFF - ipv6.SIZE - 60


class TcpFlow:
    """One guest TCP connection: its protocol state and how to frame segments to the guest."""

    __slots__ = (
        "id",
        "conn",
        "key",
        "guest_mac",
        "guest",
        "guest_port",
        "remote",
        "remote_port",
        "original",
        "timer_at",
        "dirty",
        "shutdown_sent",
    )

    def __init__(
        self,
        flow_id: int,
        conn: TcpConnection,
        key: tuple[bytes, int, bytes, int],
        mac: bytes,
        original: bytes,
    ) -> None:
        self.id = flow_id
        self.conn = conn
        self.key = key
        self.guest_mac = mac
        self.guest, self.guest_port, self.remote, self.remote_port = key
        self.original = original  # the SYN's IP header + 8 bytes, for an ICMP error about it
        self.timer_at: float | None = None  # earliest deadline of ours in the stack's heap
        self.dirty = False
        self.shutdown_sent = False


FirstFragment = tuple[ethernet.EthernetRepr, ipv4.Ipv4Repr, bytes]


def alias_mac(address: bytes) -> bytes:
    return ALIAS_MAC_PREFIX + address


def _multicast_or_broadcast(address: bytes) -> bool:
    if len(address) == 4:
        return address == BROADCAST4 or 224 <= address[0] <= 239
    return address[0] == 0xFF


class Stack:
    """One virtual network: the gateway and DNS aliases as the guest sees them."""

    def __init__(
        self,
        config: Config,
        *,
        vnet_hdr: bool = False,
        policy: Policy | None = None,
        rng: Callable[[], float] | None = None,
        now: float = 0.0,
    ) -> None:
        self.cidr = config.cidr
        self.mtu = config.mtu
        self.enable_ipv6 = config.enable_ipv6
        self.vnet_hdr = vnet_hdr
        self.gateway = config.gateway.packed
        self.dns = config.dns.packed
        self.subnet_broadcast = config.cidr.broadcast_address.packed
        self.aliases = {self.gateway: alias_mac(self.gateway), self.dns: alias_mac(self.dns)}
        self.policy = policy or Policy(config)
        self.neighbours: dict[bytes, bytes] = {}  # guest IPv4 -> MAC, learned
        self.neighbours6: dict[bytes, bytes] = {}  # guest IPv6 -> MAC, learned
        # Guest addresses we ARP for: (when we asked, frames waiting for the answer).
        self._awaiting: dict[bytes, tuple[float, list[tuple[list[Buffer], bytes]]]] = {}
        self._now = now  # the latest time the shell gave us (for ARP retries)
        self.out: list[list[Buffer]] = []
        self.requests: list[events.Request] = []
        self.dropped: Counter[str] = Counter()
        self.dhcp = DhcpServer(config)
        # The first fragment's Ethernet and IP headers, kept for the reassembled datagram.
        self.reassembler: Reassembler[FirstFragment] = Reassembler(max_size=0xFFFF - ipv4.SIZE)
        self.udp_flows = FlowTable(UDP_TIMEOUT, FLOW_LIMIT)
        self.dns_flows = FlowTable(DNS_TIMEOUT, FLOW_LIMIT)
        self.ping_flows = FlowTable(PING_TIMEOUT, FLOW_LIMIT)
        self.flows: dict[int, tuple[Flow, FlowTable]] = {}
        self.tcp_flows: dict[tuple[bytes, int, bytes, int], TcpFlow] = {}
        self.tcp_by_id: dict[int, TcpFlow] = {}
        self._dirty: list[TcpFlow] = []
        self._timers: list[tuple[float, int]] = []  # (deadline, TCP flow id), a lazy heap
        self._next_flow = 0
        self._ip_id = 0
        self._rng = rng or (lambda: 0.5)
        self._warned: set[str] = set()
        self._next_ra: float | None = None
        if self.enable_ipv6:
            self._next_ra = now + self._ra_interval()

    # -- input ---------------------------------------------------------------------------
    def receive_frame(
        self, frame: Buffer, now: float, csum_done: bool = False, gso_size: int = 0
    ) -> None:
        """One frame from the guest. ``csum_done``: the tap says its L4 checksum is not to be
        verified (virtio NEEDS_CSUM/DATA_VALID); ``gso_size``: a UDP GSO super-frame's size."""
        self._now = now
        try:
            eth = ethernet.decode(frame)
            if eth.vlan is not None:
                self.dropped["ethernet: vlan tagged"] += 1
            elif eth.ethertype == ethernet.ETHERTYPE_IPV4:
                self._ipv4(eth, frame, now, csum_done, gso_size)
            elif eth.ethertype == ethernet.ETHERTYPE_ARP:
                self._arp(eth, frame)
            elif eth.ethertype == ethernet.ETHERTYPE_IPV6 and self.enable_ipv6:
                self._ipv6(eth, frame, now, csum_done, gso_size)
            else:
                self.dropped["ethernet: ethertype not served"] += 1
        except WireError as e:
            self.dropped[str(e)] += 1

    def _learn(self, ip: bytes, mac: bytes) -> None:
        """Remember a guest address: only unicast sources inside the CIDR, never our aliases."""
        if ip in self.aliases or mac[0] & 1:
            return
        if self.neighbours.get(ip) == mac:
            return
        if len(self.neighbours) >= NEIGHBOUR_LIMIT and ip not in self.neighbours:
            return
        if int.from_bytes(ip, "big") & int(self.cidr.netmask) == int(self.cidr.network_address):
            self.neighbours[ip] = mac
            self._release(ip, mac)

    def _learn6(self, ip: bytes, mac: bytes) -> None:
        """Remember a guest IPv6 address (unicast, not ours) from any frame it sends."""
        if ip[0] == 0xFF or ip == UNSPECIFIED6 or ip in ndp.ALIASES6 or mac[0] & 1:
            return
        if self.neighbours6.get(ip) == mac:
            return
        if len(self.neighbours6) < NEIGHBOUR_LIMIT or ip in self.neighbours6:
            self.neighbours6[ip] = mac
            self._release(ip, mac)

    def _release(self, ip: bytes, mac: bytes) -> None:
        waiting = self._awaiting.pop(ip, None)
        if waiting is not None:
            for parts, header in waiting[1]:
                self._emit([mac + bytes(parts[0][6:]), *parts[1:]], header)

    def _resolve(self, parts: list[Buffer], header: bytes) -> None:
        """A frame built for a guest address whose MAC we don't know yet (UNKNOWN_MAC): held,
        a few per address, while we ask by ARP or neighbour solicitation, as libslirp does
        before delivering to a guest it has not heard from (contract §3.2)."""
        head = parts[0]
        v4 = head[12:14] == b"\x08\x00"
        ip = bytes(head[30:34]) if v4 else bytes(head[38:54])
        mac = self.neighbours.get(ip) if v4 else self.neighbours6.get(ip)
        if mac is not None:
            self._emit([mac + bytes(head[6:]), *parts[1:]], header)
            return
        now = self._now
        asked, held = self._awaiting.get(ip, (None, []))
        if asked is None or now - asked >= ARP_RETRY:
            if asked is None and len(self._awaiting) >= AWAITING_LIMIT:
                self.dropped["arp: too many unresolved guest addresses"] += 1
                return
            self._solicit(ip)
            if asked is not None:
                held = []  # no answer within ARP_RETRY: what waited is stale
            asked = now
        if len(held) < AWAITING_FRAMES:
            held.append((parts, header))
        else:
            self.dropped["arp: frame dropped while resolving"] += 1
        self._awaiting[ip] = (asked, held)

    def _solicit(self, ip: bytes) -> None:
        """ARP request (IPv4) or neighbour solicitation (IPv6, RFC 4861 §7.2.2) for ``ip``."""
        if len(ip) == 4:
            gateway_mac = self.aliases[self.gateway]
            request = arp.request(gateway_mac, self.gateway, ip)
            frame = ethernet.encode(ethernet.BROADCAST, gateway_mac, ethernet.ETHERTYPE_ARP)
            self._emit([frame + request])
            return
        group = ndp.solicited_node(ip)
        message = ndp.neighbor_solicitation(ndp.LINK_GATEWAY6, group, ip)
        mac = b"\x33\x33" + group[12:]  # RFC 2464 §7
        self._send_ipv6(mac, ndp.LINK_GATEWAY6, group, IPPROTO_ICMPV6, message, ndp.NDP_HOP_LIMIT)

    def _arp(self, eth: ethernet.EthernetRepr, frame: Buffer) -> None:
        packet = arp.decode(frame, eth.payload_offset)
        self._learn(packet.spa, packet.sha)
        if packet.oper != arp.REQUEST:
            return
        mac = self.aliases.get(packet.tpa)
        if mac is None:
            return  # slirp4netns answers for its aliases only (contract §3.2)
        answer = arp.reply(mac, packet.tpa, packet.sha, packet.spa)
        self._emit([ethernet.encode(packet.sha, mac, ethernet.ETHERTYPE_ARP) + answer])

    # -- IPv4 ----------------------------------------------------------------------------
    def _ipv4(
        self, eth: ethernet.EthernetRepr, frame: Buffer, now: float, csum_done: bool, gso: int
    ) -> None:
        ip = ipv4.decode(frame, eth.payload_offset)
        self._learn(ip.src, eth.src)
        if ip.more_fragments or ip.fragment_offset:
            self._ipv4_fragment(eth, ip, frame, now)
            return
        self._ipv4_payload(
            eth, ip, frame, ip.payload_offset, ip.payload_length, now, csum_done, gso
        )

    def _ipv4_fragment(
        self, eth: ethernet.EthernetRepr, ip: ipv4.Ipv4Repr, frame: Buffer, now: float
    ) -> None:
        start = ip.payload_offset
        key = (ip.src, ip.dst, ip.identification, ip.protocol)
        first = (
            (eth, ip, bytes(frame[eth.payload_offset : start])) if not ip.fragment_offset else None
        )
        done = self.reassembler.add(
            key,
            ip.fragment_offset,
            ip.more_fragments,
            frame[start : start + ip.payload_length],
            now,
            first,
        )
        if done is None:
            return
        head, payload = done
        if head is None:
            return
        first_eth, first_ip, header = head
        # The transport header is now contiguous after the first fragment's IP header.
        whole = header + payload
        self._ipv4_payload(
            first_eth, first_ip, whole, len(header), len(payload), now, False, 0, offset_base=0
        )

    def _ipv4_payload(
        self,
        eth: ethernet.EthernetRepr,
        ip: ipv4.Ipv4Repr,
        buf: Buffer,
        offset: int,
        length: int,
        now: float,
        csum_done: bool,
        gso: int,
        offset_base: int | None = None,
    ) -> None:
        """The transport payload of ``ip`` at ``offset`` in ``buf`` (a frame or a reassembly)."""
        ip_start = eth.payload_offset if offset_base is None else offset_base
        protocol = ip.protocol
        if protocol == ipv4.PROTO_UDP:
            datagram = udp.decode(buf, offset, length)
            if not csum_done and not udp.checksum_ok(buf, datagram, ip.src, ip.dst):
                self.dropped["udp: bad checksum"] += 1
                return
            self._udp4(eth, ip, buf, ip_start, datagram, now, gso)
        elif protocol == ipv4.PROTO_TCP:
            self._tcp(eth, ip.src, ip.dst, buf, offset, length, ip_start, now, csum_done)
        elif protocol == ipv4.PROTO_ICMP:
            message = icmpv4.decode(buf, offset, length)
            self._icmp4(eth, ip, buf, ip_start, message, now)
        else:
            self.dropped["ipv4: protocol not served"] += 1

    def _icmp4(
        self,
        eth: ethernet.EthernetRepr,
        ip: ipv4.Ipv4Repr,
        buf: Buffer,
        ip_start: int,
        message: icmpv4.Icmpv4Repr,
        now: float,
    ) -> None:
        if message.type != icmpv4.ECHO_REQUEST or message.code != 0:
            self.dropped["icmpv4: not an echo request"] += 1
            return
        start = message.payload_offset
        if ip.dst in self.aliases:
            data = bytes(buf[start : start + message.payload_length])
            reply = icmpv4.echo_reply(message.identifier, message.sequence, data)
            self._send_ipv4(eth.src, ip.dst, ip.src, ipv4.PROTO_ICMP, reply, b"", REPLY_TTL)
            return
        whole = bytes(buf[start - icmpv4.SIZE : start + message.payload_length])
        original = buf[ip_start : start + 8]
        self._ping_out(eth, ip.src, ip.dst, message.identifier, whole, original, now, IPPROTO_ICMP)

    def _udp4(
        self,
        eth: ethernet.EthernetRepr,
        ip: ipv4.Ipv4Repr,
        buf: Buffer,
        ip_start: int,
        datagram: udp.UdpRepr,
        now: float,
        gso: int,
    ) -> None:
        port = datagram.dst_port
        if ip.dst in (self.gateway, BROADCAST4) and port == dhcp.SERVER_PORT:
            self._dhcp(eth, buf, datagram)
            return
        if ip.dst == self.gateway and port == TFTP_PORT:
            self._tftp(eth, ip, buf, datagram)
            return
        original = buf[ip_start : datagram.payload_offset]
        self._udp_out(eth, ip.src, ip.dst, datagram, buf, original, now, gso)

    def _dhcp(self, eth: ethernet.EthernetRepr, frame: Buffer, datagram: udp.UdpRepr) -> None:
        message = dhcp.decode(frame, datagram.payload_offset, datagram.payload_length)
        answer = self.dhcp.handle(message)
        if answer is None:
            return
        # Sent to the broadcast address: the client has no address yet (RFC 2131 §4.1).
        header = udp.encode(self.gateway, BROADCAST4, dhcp.SERVER_PORT, dhcp.CLIENT_PORT, answer)
        self._send_ipv4(eth.src, self.gateway, BROADCAST4, ipv4.PROTO_UDP, header, answer, 64)

    def _tftp(
        self, eth: ethernet.EthernetRepr, ip: ipv4.Ipv4Repr, buf: Buffer, datagram: udp.UdpRepr
    ) -> None:
        """slirp4netns runs no TFTP server: read and write requests get "Access violation"."""
        start = datagram.payload_offset
        opcode = (
            int.from_bytes(buf[start : start + 2], "big") if datagram.payload_length >= 2 else 0
        )
        if opcode not in (TFTP_RRQ, TFTP_WRQ):
            self.dropped["tftp: not a request"] += 1
            return
        # RFC 1350 §5: opcode 5, error code, message, NUL.
        error = TFTP_ERROR.to_bytes(2, "big") + TFTP_ACCESS_VIOLATION.to_bytes(2, "big")
        error += b"Access violation\x00"
        header = udp.encode(ip.dst, ip.src, TFTP_PORT, datagram.src_port, error)
        self._send_ipv4(eth.src, ip.dst, ip.src, ipv4.PROTO_UDP, header, error, 64)

    # -- IPv6 ----------------------------------------------------------------------------
    def _ipv6(
        self, eth: ethernet.EthernetRepr, frame: Buffer, now: float, csum_done: bool, gso: int
    ) -> None:
        ip = ipv6.decode(frame, eth.payload_offset)
        self._learn6(ip.src, eth.src)
        upper = ipv6.walk_extensions(frame, ip)
        if upper.fragment is not None:
            # Guests don't fragment what we serve on IPv6 below the MTU (UDP and ICMP at most);
            # fragments are counted and dropped rather than kept in a second reassembly table.
            self.dropped["ipv6: fragment"] += 1
            return
        if upper.protocol == IPPROTO_TCP:
            start = eth.payload_offset
            self._tcp(eth, ip.src, ip.dst, frame, upper.offset, upper.length, start, now, csum_done)
        elif upper.protocol == IPPROTO_ICMPV6:
            message = icmpv6.decode(frame, upper.offset, upper.length, ip.src, ip.dst)
            self._icmp6(eth, ip, frame, message, now)
        elif upper.protocol == IPPROTO_UDP:
            datagram = udp.decode(frame, upper.offset, upper.length)
            if not csum_done and not udp.checksum_ok(frame, datagram, ip.src, ip.dst):
                self.dropped["udp: bad checksum"] += 1
                return
            original = frame[eth.payload_offset : datagram.payload_offset]
            self._udp_out(eth, ip.src, ip.dst, datagram, frame, original, now, gso)
        else:
            self.dropped["ipv6: protocol not served"] += 1

    def _icmp6(
        self,
        eth: ethernet.EthernetRepr,
        ip: ipv6.Ipv6Repr,
        frame: Buffer,
        message: icmpv6.Icmpv6Repr,
        now: float,
    ) -> None:
        kind = message.type
        start = message.payload_offset
        if kind == icmpv6.NEIGHBOR_SOLICITATION:
            if ip.hop_limit != ndp.NDP_HOP_LIMIT or message.code:
                self.dropped["ndp: bad hop limit or code"] += 1  # RFC 4861 §7.1.1
                return
            target = bytes(frame[start : start + 16]) if message.payload_length >= 16 else b""
            if target in ndp.ALIASES6:
                dst = ip.src if ip.src != UNSPECIFIED6 else ndp.ALL_NODES6
                answer = ndp.neighbor_advertisement(target, dst)
                self._send_ipv6(eth.src, target, dst, IPPROTO_ICMPV6, answer, ndp.NDP_HOP_LIMIT)
        elif kind == icmpv6.ROUTER_SOLICITATION:
            if ip.hop_limit != ndp.NDP_HOP_LIMIT or message.code:
                self.dropped["ndp: bad hop limit or code"] += 1  # RFC 4861 §6.1.1
                return
            self._send_ra()
        elif kind in (icmpv6.ROUTER_ADVERTISEMENT, ndp.REDIRECT):
            name = "RA" if kind == icmpv6.ROUTER_ADVERTISEMENT else "REDIRECT"
            self._warn_once(f"libslirp: Warning: guest sent NDP {name}, but shouldn't")
        elif kind == icmpv6.ECHO_REQUEST and message.code == 0:
            if ip.dst in ndp.ALIASES6:
                data = bytes(frame[start : start + message.payload_length])
                reply = icmpv6.echo_reply(
                    ip.dst, ip.src, message.identifier, message.sequence, data
                )
                self._send_ipv6(eth.src, ip.dst, ip.src, IPPROTO_ICMPV6, reply, REPLY_TTL)
                return
            whole = bytes(frame[start - icmpv6.SIZE : start + message.payload_length])
            original = frame[eth.payload_offset : start + 4]
            self._ping_out(
                eth, ip.src, ip.dst, message.identifier, whole, original, now, IPPROTO_ICMPV6
            )
        elif kind == icmpv6.NEIGHBOR_ADVERTISEMENT:
            pass  # the guest's own addresses: we reply to frame sources, nothing to learn here
        else:
            self.dropped["icmpv6: type not served"] += 1

    def _send_ra(self) -> None:
        answer = ndp.router_advertisement(self.policy.nameservers.v6)
        src = ndp.LINK_GATEWAY6
        self._send_ipv6(
            ndp.ALL_NODES_MAC, src, ndp.ALL_NODES6, IPPROTO_ICMPV6, answer, ndp.NDP_HOP_LIMIT
        )

    def _ra_interval(self) -> float:
        low, high = ndp.RA_INTERVAL
        return low + (high - low) * self._rng()

    # -- flows: UDP and ICMP echo through host sockets --------------------------------------
    def _new_flow(
        self,
        table: FlowTable,
        key: tuple[object, ...],
        kind: int,
        mac: bytes,
        guest: bytes,
        guest_port: int,
        remote: bytes,
        remote_port: int,
        now: float,
    ) -> Flow:
        self._next_flow += 1
        flow = Flow(self._next_flow, kind, mac, guest, guest_port, remote, remote_port, now)
        evicted = table.add(key, flow)
        if evicted is not None:
            del self.flows[evicted.id]
            self.requests.append(DatagramClose(evicted.id))
            self.dropped["flow: evicted (table full)"] += 1
        self.flows[flow.id] = (flow, table)
        return flow

    def _udp_out(
        self,
        eth: ethernet.EthernetRepr,
        src: bytes,
        dst: bytes,
        datagram: udp.UdpRepr,
        buf: Buffer,
        original: Buffer,
        now: float,
        gso: int,
    ) -> None:
        port = datagram.dst_port
        key = (src, datagram.src_port, dst, port)
        table = self.dns_flows if port == 53 else self.udp_flows
        flow = table.get(key)
        if flow is None:
            decision = self.policy.resolve(IPPROTO_UDP, dst, port)
            if isinstance(decision, Deny):
                self._refuse(eth.src, src, dst, original)
                return
            flow = self._new_flow(
                table, key, events.UDP, eth.src, src, datagram.src_port, dst, port, now
            )
            scope = self.policy.nameservers.v6_scope if decision.port == 53 else 0
            self.requests.append(
                DatagramOpen(
                    flow.id, events.UDP, decision.family, decision.addr, decision.port, scope
                )
            )
        else:
            table.touch(flow, now)
        start = datagram.payload_offset
        payload = bytes(buf[start : start + datagram.payload_length])
        self.requests.append(DatagramSend(flow.id, payload, gso))

    def _ping_out(
        self,
        eth: ethernet.EthernetRepr,
        src: bytes,
        dst: bytes,
        identifier: int,
        message: bytes,
        original: Buffer,
        now: float,
        proto: int,
    ) -> None:
        key = (src, dst, identifier)
        flow = self.ping_flows.get(key)
        if flow is None:
            decision = self.policy.resolve(proto, dst, 0)
            if isinstance(decision, Deny):
                self._refuse(eth.src, src, dst, original)
                return
            flow = self._new_flow(
                self.ping_flows, key, events.PING, eth.src, src, identifier, dst, 0, now
            )
            self.requests.append(
                DatagramOpen(flow.id, events.PING, decision.family, decision.addr, 0)
            )
        else:
            self.ping_flows.touch(flow, now)
        self.requests.append(DatagramSend(flow.id, message))

    def _refuse(self, mac: bytes, src: bytes, dst: bytes, original: Buffer) -> None:
        """A denied destination: ICMP net unreachable from the gateway (contract §3.4)."""
        if _multicast_or_broadcast(dst) or dst == self.subnet_broadcast:
            self.dropped["policy: denied (no ICMP for multicast or broadcast)"] += 1
            return
        self.dropped["policy: denied"] += 1
        self._unreachable(mac, src, original, host=False)

    def _unreachable(self, mac: bytes, guest: bytes, original: Buffer, host: bool) -> None:
        """ICMP net (or, with ``host``, host/address) unreachable from the gateway to
        ``guest`` about its packet ``original``, as slirp4netns answers a failed connect."""
        if len(guest) == 4:
            code = icmpv4.HOST_UNREACHABLE if host else icmpv4.NET_UNREACHABLE
            message = icmpv4.dest_unreachable(code, original)
            self._send_ipv4(mac, self.gateway, guest, ipv4.PROTO_ICMP, message, b"", 64)
        else:
            code = icmpv6.ADDRESS_UNREACHABLE if host else icmpv6.NO_ROUTE
            message = icmpv6.dest_unreachable(ndp.GATEWAY6, guest, code, original)
            self._send_ipv6(mac, ndp.GATEWAY6, guest, IPPROTO_ICMPV6, message, 64)

    # -- TCP: guest connections through host sockets ---------------------------------------
    def _tcp(
        self,
        eth: ethernet.EthernetRepr,
        src: bytes,
        dst: bytes,
        buf: Buffer,
        offset: int,
        length: int,
        ip_start: int,
        now: float,
        csum_done: bool,
    ) -> None:
        seg = tcp.decode(buf, offset, length)
        if not csum_done and not tcp.checksum_ok(buf, offset, length, src, dst):
            self.dropped["tcp: bad checksum"] += 1
            return
        key = (src, seg.src_port, dst, seg.dst_port)
        flags = seg.flags
        start = seg.payload_offset
        payload = buf[start : start + seg.payload_length]
        flow = self.tcp_flows.get(key)
        if flow is not None:
            conn = flow.conn
            options = tcp.parse_options(seg.options) if flags & tcp.SYN and seg.options else None
            conn.on_segment(seg.seq, seg.ack, flags, seg.window, payload, now, options)
            if not (conn.reopen and conn.closed):
                self._mark(flow)
                return
            self._forget_tcp(flow)  # TIME-WAIT ended by a new SYN: a new incarnation follows
        full = len(self.tcp_flows) >= TCP_LIMIT
        if flags & (tcp.SYN | tcp.ACK | tcp.RST) != tcp.SYN or full:
            # RFC 9293 §3.10.7.1: a segment of no connection gets a reset (never an RST); so
            # does a SYN when the table is full.
            if full:
                self.dropped["tcp: too many connections"] += 1
            answer = reset_for(seg.seq, seg.ack, flags, seg.payload_length)
            if answer is not None:
                self._tcp_frame(eth.src, dst, src, seg.dst_port, seg.src_port, answer, 0)
            return
        decision = self.policy.resolve(IPPROTO_TCP, dst, seg.dst_port)
        original = bytes(buf[ip_start : offset + 8])
        if isinstance(decision, Deny):
            self._refuse(eth.src, src, dst, original)
            return
        mss, max_segment = self._tcp_sizes(len(src) == 4)
        conn = TcpConnection.accept(
            irs=seg.seq,
            peer_window=seg.window,
            options=tcp.parse_options(seg.options),
            iss=int(self._rng() * 2**32),
            now=now,
            mss=mss,
            max_segment=max_segment,
            rcv_buffer=TCP_RCV_BUFFER,
            snd_buffer=TCP_SND_BUFFER,
        )
        flow = self._add_tcp_flow(conn, key, eth.src, original)
        scope = self.policy.nameservers.v6_scope if decision.port == 53 else 0
        self.requests.append(
            StreamConnect(flow.id, decision.family, decision.addr, decision.port, scope)
        )

    def _tcp_sizes(self, v4: bool) -> tuple[int, int]:
        """Our MSS from the MTU, and the largest burst a segment may carry (GSO or not)."""
        mss = self.mtu - (ipv4.SIZE if v4 else ipv6.SIZE) - tcp.SIZE
        return mss, GSO_MAX_SEGMENT if self.vnet_hdr else mss

    def _add_tcp_flow(
        self, conn: TcpConnection, key: tuple[bytes, int, bytes, int], mac: bytes, original: bytes
    ) -> TcpFlow:
        conn.delayed_ack = DELAYED_ACK
        self._next_flow += 1
        flow = TcpFlow(self._next_flow, conn, key, mac, original)
        self.tcp_flows[key] = flow
        self.tcp_by_id[flow.id] = flow
        self._mark(flow)
        return flow

    def _mark(self, flow: TcpFlow) -> None:
        """The flow has something for ``flush``: segments, host work or a new deadline."""
        if not flow.dirty:
            flow.dirty = True
            self._dirty.append(flow)

    def _forget_tcp(self, flow: TcpFlow) -> None:
        self.tcp_flows.pop(flow.key, None)
        self.tcp_by_id.pop(flow.id, None)

    def flush(self, now: float) -> None:
        """Once per batch: every changed TCP flow sends what it owes (one cumulative ACK, data
        within the guest's window) and tells the shell what to do with its host socket."""
        self._now = now
        dirty = self._dirty
        if not dirty:
            return
        self._dirty = []
        requests = self.requests
        for flow in dirty:
            flow.dirty = False
            conn = flow.conn
            if flow.guest_mac == UNKNOWN_MAC:  # a port forward's guest: heard from yet?
                table = self.neighbours if len(flow.guest) == 4 else self.neighbours6
                flow.guest_mac = table.get(flow.guest, UNKNOWN_MAC)
            for segment in conn.flush(now):
                self._tcp_frame(
                    flow.guest_mac,
                    flow.remote,
                    flow.guest,
                    flow.remote_port,
                    flow.guest_port,
                    segment,
                    conn.send_mss,
                )
            if conn.to_host:
                requests.append(StreamWrite(flow.id))
            if conn.shutdown_host and not flow.shutdown_sent:
                flow.shutdown_sent = True
                requests.append(StreamShutdown(flow.id))
            if conn.state is TcpState.CLOSED and (conn.closed or conn.reset or conn.timed_out):
                if flow.id in self.tcp_by_id:
                    self._forget_tcp(flow)
                    abort = conn.reset or conn.timed_out or conn.refused
                    requests.append(StreamClose(flow.id, abort=abort))
                continue
            deadline = conn.next_deadline()
            if deadline is not None and (flow.timer_at is None or deadline < flow.timer_at):
                flow.timer_at = deadline
                heapq.heappush(self._timers, (deadline, flow.id))

    def _tcp_frame(
        self,
        mac: bytes,
        src: bytes,
        dst: bytes,
        src_port: int,
        dst_port: int,
        segment: Segment,
        gso_size: int,
    ) -> None:
        """One segment (or GSO burst of ``gso_size`` pieces) to the guest. With the vnet header
        only the pseudo-header sum is computed: the tap finishes the checksum (NEEDS_CSUM) and
        cuts the burst (GSO); without it the segment fits the MTU and is checksummed here."""
        seq, ack, flags, window, options, payload = segment
        header = tcp.encode(
            src,
            dst,
            src_port,
            dst_port,
            seq,
            ack,
            flags,
            window,
            payload,
            options=options,
            partial=self.vnet_hdr,
        )
        length = len(header) + len(payload)
        if len(src) == 4:
            self._ip_id = (self._ip_id + 1) & 0xFFFF
            ip = ipv4.encode(
                src, dst, ipv4.PROTO_TCP, length, identification=self._ip_id, dont_fragment=True
            )
            src_mac = self.aliases.get(src, self.aliases[self.gateway])
            head = ethernet.encode(mac, src_mac, ethernet.ETHERTYPE_IPV4) + ip + header
            gso_type = vnet.GSO_TCPV4
        else:
            ip = ipv6.encode(src, dst, IPPROTO_TCP, length)
            src_mac = ndp.alias_mac6(src if src in ndp.ALIASES6 else ndp.GATEWAY6)
            head = ethernet.encode(mac, src_mac, ethernet.ETHERTYPE_IPV6) + ip + header
            gso_type = vnet.GSO_TCPV6
        parts: list[Buffer] = [head, payload] if payload else [head]
        if self.vnet_hdr:
            csum_start = ethernet.SIZE + len(ip)
            if gso_size and len(payload) > gso_size:
                info = vnet.encode(
                    vnet.NEEDS_CSUM, gso_type, len(head), gso_size, csum_start, tcp.CHECKSUM_OFFSET
                )
            else:
                info = vnet.encode(
                    vnet.NEEDS_CSUM, 0, len(head), 0, csum_start, tcp.CHECKSUM_OFFSET
                )
            self._emit(parts, info)
        else:
            self._emit(parts)

    # -- port forwards: host clients toward the guest -------------------------------------------
    def tcp_open_to_guest(
        self, guest: bytes, guest_port: int, remote: bytes, remote_port: int, now: float
    ) -> int | None:
        """An accepted host client becomes an active open toward ``guest``:``guest_port``,
        appearing to come from ``remote``:``remote_port``; None if no flow can be made."""
        self._now = now
        if len(self.tcp_flows) >= TCP_LIMIT:
            self.dropped["tcp: too many connections"] += 1
            return None
        key = (guest, guest_port, remote, remote_port)
        for _ in range(64):  # two clients mapped to the same source: pick another port
            if key not in self.tcp_flows:
                break
            remote_port = 1024 + int(self._rng() * 64000)
            key = (guest, guest_port, remote, remote_port)
        else:
            return None
        mss, max_segment = self._tcp_sizes(len(guest) == 4)
        conn = TcpConnection.connect(
            iss=int(self._rng() * 2**32),
            now=now,
            mss=mss,
            max_segment=max_segment,
            rcv_buffer=TCP_RCV_BUFFER,
            snd_buffer=TCP_SND_BUFFER,
        )
        table = self.neighbours if len(guest) == 4 else self.neighbours6
        return self._add_tcp_flow(conn, key, table.get(guest, UNKNOWN_MAC), b"").id

    def udp_forward_flow(
        self, guest: bytes, guest_port: int, remote: bytes, remote_port: int, now: float
    ) -> tuple[int, bool]:
        """The UDP flow for a host client of a forward (``(id, new)``): the guest's replies to
        ``remote``:``remote_port`` come back to it, whatever the address policy says."""
        self._now = now
        key = (guest, guest_port, remote, remote_port)
        table = self.dns_flows if remote_port == 53 else self.udp_flows
        flow = table.get(key)
        if flow is not None:
            table.touch(flow, now)
            return flow.id, False
        neighbours = self.neighbours if len(guest) == 4 else self.neighbours6
        mac = neighbours.get(guest, UNKNOWN_MAC)
        flow = self._new_flow(
            table, key, events.UDP, mac, guest, guest_port, remote, remote_port, now
        )
        return flow.id, True

    # -- facts about TCP host sockets --------------------------------------------------------
    def tcp_connection(self, flow_id: int) -> TcpConnection | None:
        flow = self.tcp_by_id.get(flow_id)
        return None if flow is None else flow.conn

    def tcp_connected(self, flow_id: int, now: float) -> None:
        flow = self.tcp_by_id.get(flow_id)
        if flow is not None:
            flow.conn.host_connected(now)
            self._mark(flow)

    def tcp_refused(self, flow_id: int, now: float) -> None:
        """Connection refused: RST|ACK to the guest (contract §3.4)."""
        flow = self.tcp_by_id.get(flow_id)
        if flow is not None:
            flow.conn.host_refused(now)
            self._mark(flow)

    def tcp_failed(self, flow_id: int, host_unreachable: bool, now: float) -> None:
        """Any other connect error: ICMP net (host) unreachable from the gateway about the SYN."""
        flow = self.tcp_by_id.get(flow_id)
        if flow is None:
            return
        flow.conn.host_failed(now)
        self._forget_tcp(flow)
        self.requests.append(StreamClose(flow.id))
        self._unreachable(flow.guest_mac, flow.guest, flow.original, host_unreachable)

    def tcp_host_data(self, flow_id: int, data: bytes, now: float) -> None:
        flow = self.tcp_by_id.get(flow_id)
        if flow is not None:
            flow.conn.host_data(data, now)
            self._mark(flow)

    def tcp_host_written(self, flow_id: int, n: int, now: float) -> None:
        flow = self.tcp_by_id.get(flow_id)
        if flow is not None:
            flow.conn.host_consumed(n, now)
            self._mark(flow)

    def tcp_host_eof(self, flow_id: int, now: float) -> None:
        flow = self.tcp_by_id.get(flow_id)
        if flow is not None:
            flow.conn.host_eof(now)
            self._mark(flow)

    def tcp_host_reset(self, flow_id: int, now: float) -> None:
        flow = self.tcp_by_id.get(flow_id)
        if flow is not None:
            flow.conn.host_reset(now)
            self._mark(flow)

    def _tcp_timers(self, now: float) -> None:
        timers = self._timers
        while timers and timers[0][0] <= now:
            deadline, flow_id = heapq.heappop(timers)
            flow = self.tcp_by_id.get(flow_id)
            if flow is None:
                continue
            if flow.timer_at == deadline:
                flow.timer_at = None
            real = flow.conn.next_deadline()
            if real is not None and real <= now:
                flow.conn.on_timer(now)
            self._mark(flow)  # flush sends what the timer owes and re-arms the next deadline

    # -- facts from the shell --------------------------------------------------------------
    def udp_received(self, flow_id: int, data: Buffer, now: float) -> None:
        """A datagram arrived on a UDP flow's host socket: relay it to the guest."""
        entry = self.flows.get(flow_id)
        if entry is None:
            return
        flow, table = entry
        table.touch(flow, now)
        guest, remote = flow.guest, flow.remote
        if len(guest) == 4:
            whole = udp.SIZE + len(data) + ipv4.SIZE <= self.mtu
            header = udp.encode(
                remote,
                guest,
                flow.remote_port,
                flow.guest_port,
                data,
                partial=whole and self.vnet_hdr,
            )
            self._send_ipv4(
                flow.guest_mac, remote, guest, ipv4.PROTO_UDP, header, data, FORWARD_TTL
            )
        else:
            header = udp.encode(remote, guest, flow.remote_port, flow.guest_port, data)
            self._send_ipv6(flow.guest_mac, remote, guest, IPPROTO_UDP, header + data, FORWARD_TTL)

    def ping_received(self, flow_id: int, message: Buffer, now: float, raw: bool) -> None:
        """An ICMP(v6) message on a ping flow's socket (``raw``: a raw socket, which sees every
        echo reply from that host, so the identifier must be ours)."""
        entry = self.flows.get(flow_id)
        if entry is None or len(message) < icmpv4.SIZE:
            return
        flow, table = entry
        v4 = len(flow.guest) == 4
        kind, code = message[0], message[1]
        if kind != (icmpv4.ECHO_REPLY if v4 else icmpv6.ECHO_REPLY) or code:
            return
        if raw and int.from_bytes(message[4:6], "big") != flow.guest_port:
            return
        table.touch(flow, now)
        sequence = int.from_bytes(message[6:8], "big")
        data = bytes(message[icmpv4.SIZE :])
        if v4:
            reply = icmpv4.echo_reply(flow.guest_port, sequence, data)
            self._send_ipv4(
                flow.guest_mac, flow.remote, flow.guest, ipv4.PROTO_ICMP, reply, b"", FORWARD_TTL
            )
        else:
            reply = icmpv6.echo_reply(flow.remote, flow.guest, flow.guest_port, sequence, data)
            self._send_ipv6(
                flow.guest_mac, flow.remote, flow.guest, IPPROTO_ICMPV6, reply, FORWARD_TTL
            )

    def datagram_error(
        self, flow_id: int, origin: int, type_: int, code: int, payload: Buffer, now: float
    ) -> None:
        """An ICMP error the host socket received (``IP_RECVERR``) about what we sent on a flow:
        the guest gets the matching error, quoting the datagram as it had sent it."""
        entry = self.flows.get(flow_id)
        if entry is None:
            return
        flow = entry[0]
        mapped = _guest_error(len(flow.guest) == 4, origin, type_, code)
        if mapped is None:
            return
        self._send_error(flow, mapped[0], mapped[1], payload)

    def datagram_failed(self, flow_id: int, host_unreachable: bool, payload: Buffer) -> None:
        """The shell couldn't open or send on a flow's socket (routing, permissions): ICMP net
        (or host) unreachable from the gateway, as slirp4netns answers; the flow is forgotten."""
        entry = self.flows.pop(flow_id, None)
        if entry is None:
            return
        flow, table = entry
        table.remove(flow)
        self.requests.append(DatagramClose(flow.id))
        if len(flow.guest) == 4:
            code = icmpv4.HOST_UNREACHABLE if host_unreachable else icmpv4.NET_UNREACHABLE
            self._send_error(flow, icmpv4.DEST_UNREACHABLE, code, payload, from_gateway=True)
        else:
            code = icmpv6.ADDRESS_UNREACHABLE if host_unreachable else icmpv6.NO_ROUTE
            self._send_error(flow, icmpv6.DEST_UNREACHABLE, code, payload, from_gateway=True)

    def _send_error(
        self, flow: Flow, type_: int, code: int, payload: Buffer, from_gateway: bool = False
    ) -> None:
        """An ICMP error about the flow's guest datagram carrying ``payload`` (as sent by us)."""
        guest, remote = flow.guest, flow.remote
        if _multicast_or_broadcast(remote) or remote == self.subnet_broadcast:
            return
        if flow.kind == events.UDP:
            transport = udp.encode(guest, remote, flow.guest_port, flow.remote_port, payload)
            proto = IPPROTO_UDP
            body = bytes(payload)
        else:
            # Our echo request as the guest sent it: its own identifier, not the ping socket's.
            sequence = bytes(payload[6:8]).rjust(2, b"\x00")
            request = icmpv4.ECHO_REQUEST if len(guest) == 4 else icmpv6.ECHO_REQUEST
            transport = bytes((request, 0, 0, 0)) + flow.guest_port.to_bytes(2, "big") + sequence
            proto = IPPROTO_ICMP if len(guest) == 4 else IPPROTO_ICMPV6
            body = bytes(payload[8:])
        length = len(transport) + len(body)
        port_unreachable = (type_, code) in (
            (icmpv4.DEST_UNREACHABLE, icmpv4.PORT_UNREACHABLE),
            (icmpv6.DEST_UNREACHABLE, icmpv6.PORT_UNREACHABLE),
        )
        if len(guest) == 4:
            source = remote if port_unreachable and not from_gateway else self.gateway
            original = ipv4.encode(guest, remote, proto, length) + transport[:8]
            message = icmpv4.encode(type_, code, 0, original)
            self._send_ipv4(flow.guest_mac, source, guest, ipv4.PROTO_ICMP, message, b"", 64)
        else:
            source = remote if port_unreachable and not from_gateway else ndp.GATEWAY6
            original = ipv6.encode(guest, remote, proto, length) + transport + body
            room = icmpv6.MIN_MTU - ipv6.SIZE - icmpv6.SIZE
            message = icmpv6.encode(source, guest, type_, code, 0, original[:room])
            self._send_ipv6(flow.guest_mac, source, guest, IPPROTO_ICMPV6, message, 64)

    # -- output --------------------------------------------------------------------------
    def _emit(self, parts: list[Buffer], header: bytes = vnet.PLAIN) -> None:
        if parts[0][:6] == UNKNOWN_MAC:
            self._resolve(parts, header)
            return
        if self.vnet_hdr:
            parts.insert(0, header)
        self.out.append(parts)

    def _send_ipv4(
        self,
        dst_mac: bytes,
        src: bytes,
        dst: bytes,
        protocol: int,
        transport: bytes,
        payload: Buffer,
        ttl: int,
    ) -> None:
        """``transport`` (an L4 header, or a whole message) + ``payload`` in IPv4 to the guest,
        fragmented when it doesn't fit the MTU (RFC 791). A UDP datagram that fits was encoded
        with a partial checksum when the tap offloads: the vnet header asks it to finish."""
        self._ip_id = (self._ip_id + 1) & 0xFFFF
        src_mac = self.aliases.get(src, self.aliases[self.gateway])
        eth = ethernet.encode(dst_mac, src_mac, ethernet.ETHERTYPE_IPV4)
        length = len(transport) + len(payload)
        if ipv4.SIZE + length <= self.mtu:
            header = ipv4.encode(src, dst, protocol, length, ttl=ttl, identification=self._ip_id)
            parts: list[Buffer] = [eth + header + transport]
            if payload:
                parts.append(payload)
            if protocol == ipv4.PROTO_UDP and self.vnet_hdr:
                start = ethernet.SIZE + ipv4.SIZE
                self._emit(parts, vnet.encode(vnet.NEEDS_CSUM, 0, 0, 0, start, UDP_CSUM_OFFSET))
            else:
                self._emit(parts)
            return
        whole = transport + bytes(payload)
        for offset, more, chunk in fragment_ipv4(whole, self.mtu):
            header = ipv4.encode(
                src,
                dst,
                protocol,
                len(chunk),
                ttl=ttl,
                identification=self._ip_id,
                more_fragments=more,
                fragment_offset=offset,
            )
            self._emit([eth + header, chunk])

    def _send_ipv6(
        self, dst_mac: bytes, src: bytes, dst: bytes, next_header: int, message: bytes, hops: int
    ) -> None:
        """An IPv6 packet to the guest; bigger than the MTU, it goes in fragments (RFC 8200 §4.5)"""
        src_mac = ndp.alias_mac6(src if src in ndp.ALIASES6 else ndp.GATEWAY6)
        eth = ethernet.encode(dst_mac, src_mac, ethernet.ETHERTYPE_IPV6)
        if ipv6.SIZE + len(message) <= self.mtu:
            header = ipv6.encode(src, dst, next_header, len(message), hop_limit=hops)
            self._emit([eth + header + message])
            return
        self._ip_id = (self._ip_id + 1) & 0xFFFF
        room = (self.mtu - ipv6.SIZE - ipv6.FRAGMENT.size) & ~7
        view = memoryview(message)
        for offset in range(0, len(message), room):
            chunk = view[offset : offset + room]
            more = offset + room < len(message)
            fragment = ipv6.FRAGMENT.struct.pack(next_header, 0, offset | more, self._ip_id)
            header = ipv6.encode(
                src, dst, ipv6.NEXT_FRAGMENT, ipv6.FRAGMENT.size + len(chunk), hop_limit=hops
            )
            self._emit([eth + header + fragment, chunk])

    def _warn_once(self, text: str) -> None:
        if text not in self._warned:
            self._warned.add(text)
            self.requests.append(Log(text))

    # -- timers --------------------------------------------------------------------------
    def next_deadline(self) -> float | None:
        """The earliest timer of any part; called once per loop turn, so kept cheap."""
        best = self._timers[0][0] if self._timers else self._next_ra
        if self._next_ra is not None and (best is None or self._next_ra < best):
            best = self._next_ra
        if self.flows or len(self.reassembler):
            for deadline in (
                self.udp_flows.next_deadline(),
                self.dns_flows.next_deadline(),
                self.ping_flows.next_deadline(),
                self.reassembler.next_deadline(),
            ):
                if deadline is not None and (best is None or deadline < best):
                    best = deadline
        return best

    def on_timer(self, now: float) -> None:
        self._now = now
        self._tcp_timers(now)
        for table in (self.udp_flows, self.dns_flows, self.ping_flows):
            for flow in table.expire(now):
                del self.flows[flow.id]
                self.requests.append(DatagramClose(flow.id))
        for head in self.reassembler.expire(now):
            # RFC 792 / RFC 1122 §3.3.2: time exceeded (code 1) when the first fragment came.
            eth, ip, header = head
            if _multicast_or_broadcast(ip.dst):
                continue
            message = icmpv4.encode(icmpv4.TIME_EXCEEDED, 1, 0, header[: ip.header_length + 8])
            self._send_ipv4(eth.src, self.gateway, ip.src, ipv4.PROTO_ICMP, message, b"", 64)
        if self._next_ra is not None and now >= self._next_ra:
            self._send_ra()
            self._next_ra = now + self._ra_interval()
        self.flush(now)


def _guest_error(v4: bool, origin: int, type_: int, code: int) -> tuple[int, int] | None:
    """The ICMP (type, code) for the guest's family from a host socket's extended error."""
    if origin == ORIGIN_ICMP:
        if type_ == icmpv4.DEST_UNREACHABLE and code != icmpv4.FRAGMENTATION_NEEDED:
            if v4:
                return type_, code
            port = code == icmpv4.PORT_UNREACHABLE
            return icmpv6.DEST_UNREACHABLE, icmpv6.PORT_UNREACHABLE if port else icmpv6.NO_ROUTE
        if type_ == icmpv4.TIME_EXCEEDED:
            return (type_, code) if v4 else (icmpv6.TIME_EXCEEDED, code)
        return None
    if origin == ORIGIN_ICMP6:
        if type_ == icmpv6.DEST_UNREACHABLE:
            if not v4:
                return type_, code
            port = code == icmpv6.PORT_UNREACHABLE
            return (
                icmpv4.DEST_UNREACHABLE,
                icmpv4.PORT_UNREACHABLE if port else icmpv4.HOST_UNREACHABLE,
            )
        if type_ == icmpv6.TIME_EXCEEDED:
            return (type_, code) if not v4 else (icmpv4.TIME_EXCEEDED, code)
    return None
