"""Guest TCP connections as host streams: the flow table, the forwarder decision, timers, and
what each connection asks of its host socket.

The forwarder decision (gVisor's): a guest SYN to a destination the policy allows becomes a
``StreamConnect``; the guest gets SYN|ACK only once the shell reports ``host_connected``, RST|ACK
on ``host_refused``, and ICMP unreachable about its SYN on ``host_failed``. Retransmitted SYNs
meanwhile reach the pending connection, which ignores them.

Values out, facts in: ``flush`` hands the shell the bytes to write (``StreamWrite``, read-only
views of the connection's queue) and is told how much went (``host_written``); a full host
socket says so, and nothing more is offered until ``host_writable`` or new guest bytes. When
a connection's send buffer (host bytes not yet acknowledged by the guest) is full the shell is
asked to stop reading (``StreamPause``) and later to go on (``StreamResume``), so a fast host
sender feels TCP backpressure instead of our memory filling. The buffer may pass its mark by
one read.
"""

from __future__ import annotations

import heapq
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterator

from pyslirp4netns.core import events
from pyslirp4netns.core.egress import Egress
from pyslirp4netns.core.events import (
    StreamClose,
    StreamConnect,
    StreamPause,
    StreamResume,
    StreamShutdown,
    StreamWrite,
)
from pyslirp4netns.core.nat import Deny, Policy
from pyslirp4netns.core.neighbours import UNKNOWN_MAC
from pyslirp4netns.core.stats import flow_line
from pyslirp4netns.core.tcb import TcpState, reset_for
from pyslirp4netns.core.tcp import TcpConnection
from pyslirp4netns.wire import ethernet, ipv4, ipv6, tcp, tcpframe
from pyslirp4netns.wire.codec import Buffer, checksum
from pyslirp4netns.wire.numbers import DNS_PORT, IPPROTO_TCP

TCP_LIMIT = 16384  # connections at once; a SYN beyond that gets RST|ACK
# Half-open guest connections (SYN-RECEIVED: the host connect pending, or our SYN|ACK not yet
# acknowledged). A SYN flood would otherwise fill the whole table, an fd per SYN, for the 75 s
# connect timer. A half-open connection is reset once HALF_OPEN_LIMIT newer guest connections
# have been opened while it waited, as a listener drops the oldest entry of a full SYN queue.
# 4,096 is Linux's default somaxconn; about 16 MiB of state.
HALF_OPEN_LIMIT = 4096
# New guest connections taken between two flushes (one batch of tap frames) at most; a SYN
# beyond it is dropped unanswered, as a full SYN queue drops one, and the guest sends it again
# (after 1 s). A flood's SYN then costs a lookup instead of a host socket, so the tap is read
# faster than a guest can write it and the guest's other frames (its pings to the gateway) are
# not lost in its own full tap queue (measured: 100,000 SYNs in 10 s, no ping lost at 256; at
# 512, 2 of 97). A burst of more than 256 connects within one batch waits 1 s for the rest.
SYN_BATCH_LIMIT = 256
TCP_RCV_BUFFER = 4 << 20  # per connection: the window we offer, bounded by what we hold
TCP_SND_BUFFER = 4 << 20  # per connection: host bytes kept until the guest acknowledges them
# How long an ACK of a little guest data may wait for the host's answer to carry it.
DELAYED_ACK = 0.002
# A GSO burst toward the guest: whole frame within 64 KiB with any IP and TCP header chain.
GSO_MAX_SEGMENT = 0xFFFF - ipv6.SIZE - 60
COMPACT_SLACK = 256  # stale timer entries tolerated beyond twice the live flows
WRITE_CHUNKS = 64  # buffers offered in one StreamWrite (one sendmsg; IOV_MAX is 1024)

FlowKey = tuple[bytes, int, bytes, int]  # guest, guest port, remote, remote port


class TcpFlow:
    """One guest TCP connection: its protocol state, its addresses and what the shell knows."""

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
        "host_full",
        "reading",
        "host_done",
        "template",
        "bytes_to_host",
        "bytes_from_host",
    )

    def __init__(
        self, flow_id: int, conn: TcpConnection, key: FlowKey, mac: bytes, original: bytes
    ) -> None:
        self.id = flow_id
        self.conn = conn
        self.key = key
        self.guest_mac = mac
        self.guest, self.guest_port, self.remote, self.remote_port = key
        self.original = original  # the SYN's IP header + 8 bytes, for an ICMP error about it
        self.timer_at: float | None = None  # earliest deadline of ours in the timer heap
        self.dirty = False
        self.shutdown_sent = False
        self.host_full = False  # the host socket took less than offered: wait for writable
        self.reading = False  # whether the shell reads the host socket (pause/resume)
        self.host_done = False  # the host socket sent EOF or failed: nothing more to read
        self.template: tcpframe.Template | None = None  # headers toward the guest, fast path
        self.bytes_to_host = 0  # guest bytes the host socket took (counted per write, not frame)
        self.bytes_from_host = 0  # bytes read from the host socket for the guest


class Streams:
    """The TCP flow table and the timer heap over its connections."""

    def __init__(
        self,
        egress: Egress,
        policy: Policy,
        requests: list[events.Request],
        dropped: Counter[str],
        ids: Iterator[int],
        rng: Callable[[], float],
    ) -> None:
        self.egress = egress
        self.policy = policy
        self.requests = requests
        self.dropped = dropped
        self._ids = ids
        self._rng = rng  # a callable () -> float in [0, 1): ISNs and forward source ports
        self.flows: dict[FlowKey, TcpFlow] = {}
        self.fast: dict[bytes, TcpFlow] = {}  # IPv4 flows by the key bytes of a guest frame
        self._peak = 0  # most flows at once since the tables were last rebuilt
        self.by_id: dict[int, TcpFlow] = {}
        # Guest connections in their opening order, each until HALF_OPEN_LIMIT newer ones came:
        # the oldest is reset then if it is still half-open (O(1) at the front; the fast path
        # never has to take an established flow out).
        self.opening: OrderedDict[int, TcpFlow] = OrderedDict()
        self._syns = 0  # new connections taken since the last flush (SYN_BATCH_LIMIT)
        self._dirty: list[TcpFlow] = []
        self._timers: list[tuple[float, int]] = []  # (deadline, flow id), a lazy heap
        self.debug = False  # --debug: a log line per connection opened and closed

    # -- from the guest ------------------------------------------------------------------
    def fast_segment(self, flow: TcpFlow, frame: Buffer, now: float, csum_done: bool) -> bool:
        """An IPv4 frame of ``flow`` without IP or TCP options, SYN or RST (the caller looked
        at the key, version/IHL and protocol): what ``segment`` does, with one header read and
        no header objects. False, and nothing done, for anything ``segment`` must judge."""
        total, fragment, seq, ack, offset, flags, window = tcpframe.RECEIVE.unpack_from(frame)
        header = (offset & 0xF0) >> 2
        if (
            flags & (tcp.SYN | tcp.RST)
            or fragment & 0x3FFF  # fragments go to reassembly
            or total > len(frame) - tcpframe.IP_OFFSET
            or total < ipv4.SIZE + header
            or header < tcp.SIZE
            or frame[6:12] != flow.guest_mac  # a new MAC is learned on the general path
            or checksum(frame[tcpframe.IP_OFFSET : tcpframe.TCP_OFFSET]) != 0
        ):
            return False
        end = tcpframe.IP_OFFSET + total
        if not csum_done:
            length = total - ipv4.SIZE
            if not tcp.checksum_ok(frame, tcpframe.TCP_OFFSET, length, flow.guest, flow.remote):
                return False
        payload = frame[tcpframe.TCP_OFFSET + header : end]
        flow.conn.on_segment(seq, ack, flags, window, payload, now, None)
        if payload:
            flow.host_full = False  # as in segment: offer the new bytes at once
        self._mark(flow)
        return True

    def segment(
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
        flow = self.flows.get(key)
        if flow is not None:
            conn = flow.conn
            start = seg.payload_offset
            payload = buf[start : start + seg.payload_length]
            options = tcp.parse_options(seg.options) if flags & tcp.SYN and seg.options else None
            conn.on_segment(seg.seq, seg.ack, flags, seg.window, payload, now, options)
            if payload:
                # New bytes for the host: offer a write even to a socket that was full (one
                # cheap EAGAIN at worst) rather than wait for EPOLLOUT, which the kernel only
                # reports once half the socket's queue has drained: it keeps the pipe full.
                flow.host_full = False
            if not (conn.reopen and conn.closed):
                self._mark(flow)
                return
            self._forget(flow)  # TIME-WAIT ended by a new SYN: a new incarnation follows
            if self.debug:
                self._log(flow, "closed (TIME-WAIT ended by a new SYN)")
        full = len(self.flows) >= TCP_LIMIT
        if flags & (tcp.SYN | tcp.ACK | tcp.RST) != tcp.SYN or full:
            # RFC 9293 §3.10.7.1: a segment of no connection gets a reset (never an RST); so
            # does a SYN when the table is full.
            if full:
                self.dropped["tcp: too many connections"] += 1
            answer = reset_for(seg.seq, seg.ack, flags, seg.payload_length)
            if answer is not None:
                self.egress.tcp(eth.src, dst, src, seg.dst_port, seg.src_port, answer, 0)
            return
        if self._syns >= SYN_BATCH_LIMIT:
            self.dropped["tcp: SYN over the batch limit"] += 1
            return
        self._syns += 1
        decision = self.policy.resolve(IPPROTO_TCP, dst, seg.dst_port)
        original = bytes(buf[ip_start : offset + 8])
        if isinstance(decision, Deny):
            self.egress.refuse(eth.src, src, dst, original)
            return
        mss, max_segment = self._sizes(len(src) == 4)
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
        flow = self._add(conn, key, eth.src, original)
        if self.debug:
            self._log(flow, "open")
        opening = self.opening
        opening[flow.id] = flow
        if len(opening) > HALF_OPEN_LIMIT:
            _, oldest = opening.popitem(last=False)
            if oldest.conn.state is TcpState.SYN_RECEIVED:
                self.dropped["tcp: half-open connection reset"] += 1
                oldest.conn.host_reset(now)  # RST|ACK to the guest; flush closes the socket
                self._mark(oldest)
        scope = self.policy.nameservers.v6_scope if decision.port == DNS_PORT else 0
        self.requests.append(
            StreamConnect(flow.id, decision.family, decision.addr, decision.port, scope)
        )

    def _sizes(self, v4: bool) -> tuple[int, int]:
        """Our MSS from the MTU, and the largest burst a segment may carry (GSO or not)."""
        mss = self.egress.mtu - (ipv4.SIZE if v4 else ipv6.SIZE) - tcp.SIZE
        return mss, GSO_MAX_SEGMENT if self.egress.vnet_hdr else mss

    def _add(self, conn: TcpConnection, key: FlowKey, mac: bytes, original: bytes) -> TcpFlow:
        conn.delayed_ack = DELAYED_ACK
        flow = TcpFlow(next(self._ids), conn, key, mac, original)
        self.flows[key] = flow
        self.by_id[flow.id] = flow
        if len(self.by_id) > self._peak:
            self._peak = len(self.by_id)
        if len(key[0]) == 4:
            self.fast[tcpframe.key(*key)] = flow
        self._mark(flow)
        return flow

    def _mark(self, flow: TcpFlow) -> None:
        """The flow has something for ``flush``: segments, host work or a new deadline."""
        if not flow.dirty:
            flow.dirty = True
            self._dirty.append(flow)

    def _log(self, flow: TcpFlow, event: str) -> None:
        """--debug: one line about ``flow``; byte counts with any event but an open."""
        counts: tuple[int | None, int | None] = (None, None)
        if not event.startswith("open"):
            counts = (flow.bytes_to_host, flow.bytes_from_host)
        guest, remote = (flow.guest, flow.guest_port), (flow.remote, flow.remote_port)
        self.requests.append(events.Log(flow_line("tcp", flow.id, event, guest, remote, *counts)))

    def _forget(self, flow: TcpFlow) -> None:
        self.opening.pop(flow.id, None)
        self.flows.pop(flow.key, None)
        self.by_id.pop(flow.id, None)
        if len(flow.guest) == 4:
            self.fast.pop(tcpframe.key(*flow.key), None)

    # -- port forwards: host clients toward the guest ------------------------------------
    def open_to_guest(
        self, guest: bytes, guest_port: int, remote: bytes, remote_port: int, now: float
    ) -> int | None:
        """An accepted host client becomes an active open toward ``guest``:``guest_port``,
        appearing to come from ``remote``:``remote_port``; None if no flow can be made. The
        shell reads the client at once: its bytes queue until the guest answers."""
        if len(self.flows) >= TCP_LIMIT:
            self.dropped["tcp: too many connections"] += 1
            return None
        key = (guest, guest_port, remote, remote_port)
        for _ in range(64):  # two clients mapped to the same source: pick another port
            if key not in self.flows:
                break
            remote_port = 1024 + int(self._rng() * 64000)
            key = (guest, guest_port, remote, remote_port)
        else:
            return None
        mss, max_segment = self._sizes(len(guest) == 4)
        conn = TcpConnection.connect(
            iss=int(self._rng() * 2**32),
            now=now,
            mss=mss,
            max_segment=max_segment,
            rcv_buffer=TCP_RCV_BUFFER,
            snd_buffer=TCP_SND_BUFFER,
        )
        mac = self.egress.neighbours.get(guest) or UNKNOWN_MAC
        flow = self._add(conn, key, mac, b"")
        flow.reading = True
        if self.debug:
            self._log(flow, "open (port forward)")
        return flow.id

    # -- facts about host sockets --------------------------------------------------------
    def host_connected(self, flow_id: int, now: float) -> None:
        flow = self.by_id.get(flow_id)
        if flow is not None:
            flow.conn.host_connected(now)
            self._mark(flow)

    def host_refused(self, flow_id: int, now: float) -> None:
        """Connection refused: RST|ACK to the guest (contract §3.4)."""
        flow = self.by_id.get(flow_id)
        if flow is not None:
            flow.conn.host_refused(now)
            self._mark(flow)

    def host_failed(self, flow_id: int, host_unreachable: bool, now: float) -> None:
        """Any other connect error: ICMP net (host) unreachable from the gateway about the SYN."""
        flow = self.by_id.get(flow_id)
        if flow is None:
            return
        flow.conn.host_failed(now)
        self._forget(flow)
        self.requests.append(StreamClose(flow.id))
        if self.debug:
            self._log(flow, "closed (host unreachable)" if host_unreachable else "closed (failed)")
        self.egress.unreachable(flow.guest_mac, flow.guest, flow.original, host_unreachable)

    def host_data(self, flow_id: int, data: bytes, now: float) -> None:
        flow = self.by_id.get(flow_id)
        if flow is not None:
            flow.bytes_from_host += len(data)
            flow.conn.host_data(data, now)
            self._mark(flow)

    def host_written(self, flow_id: int, n: int, full: bool, now: float) -> None:
        """The shell wrote ``n`` bytes of the last ``StreamWrite``; ``full``: the socket took
        none (EAGAIN), so nothing more is offered until ``host_writable`` or new guest data. A
        short write is not full: the rest is offered again at once, as a socket that took
        some may take more."""
        flow = self.by_id.get(flow_id)
        if flow is None:
            return
        flow.host_full = full
        conn = flow.conn
        owed = False
        if n:
            flow.bytes_to_host += n
            _consume(conn.to_host, n)
            owed = conn.host_consumed(n, now)
        # A flush only if this changed what it would do: more to write, the guest's FIN to
        # pass on, a window update owed (the common whole write of a request needs none).
        if full or owed or conn.to_host or conn.shutdown_host:
            self._mark(flow)

    def host_writable(self, flow_id: int, now: float) -> None:
        flow = self.by_id.get(flow_id)
        if flow is not None:
            flow.host_full = False
            self._mark(flow)

    def host_eof(self, flow_id: int, now: float) -> None:
        flow = self.by_id.get(flow_id)
        if flow is not None:
            flow.host_done = True
            flow.conn.host_eof(now)
            self._mark(flow)

    def host_reset(self, flow_id: int, now: float) -> None:
        flow = self.by_id.get(flow_id)
        if flow is not None:
            flow.host_done = True
            flow.conn.host_reset(now)
            self._mark(flow)

    # -- output and timers ---------------------------------------------------------------
    def flush(self, now: float) -> None:
        """Once per batch: every changed flow sends what it owes (one cumulative ACK, data
        within the guest's window) and says what its host socket should do."""
        self._syns = 0
        dirty = self._dirty
        if not dirty:
            return
        self._dirty = []
        requests = self.requests
        egress = self.egress
        for flow in dirty:
            flow.dirty = False
            conn = flow.conn
            if flow.guest_mac == UNKNOWN_MAC:  # a port forward's guest: heard from yet?
                flow.guest_mac = egress.neighbours.get(flow.guest) or UNKNOWN_MAC
            template = flow.template
            if template is None and flow.guest_mac != UNKNOWN_MAC:
                template = flow.template = egress.template(
                    flow.guest_mac, flow.remote, flow.guest, flow.remote_port, flow.guest_port
                )
            for segment in conn.flush(now):
                if template is not None and not segment.options:
                    egress.tcp4(template, segment, conn.send_mss)
                    continue
                egress.tcp(
                    flow.guest_mac,
                    flow.remote,
                    flow.guest,
                    flow.remote_port,
                    flow.guest_port,
                    segment,
                    conn.send_mss,
                )
            to_host = conn.to_host
            if to_host:
                if not flow.host_full:
                    chunks = list(to_host) if len(to_host) <= WRITE_CHUNKS else _head(to_host)
                    requests.append(StreamWrite(flow.id, chunks))
            elif conn.shutdown_host and not flow.shutdown_sent:
                # Guest FIN: every byte before it has reached the host socket.
                flow.shutdown_sent = True
                requests.append(StreamShutdown(flow.id))
            if conn.state is TcpState.CLOSED and (conn.closed or conn.reset or conn.timed_out):
                if flow.id in self.by_id:
                    self._forget(flow)
                    abort = conn.reset or conn.timed_out or conn.refused
                    requests.append(StreamClose(flow.id, abort=abort))
                    if self.debug:
                        self._log(flow, _why_closed(conn))
                continue
            if not flow.host_done:
                room = conn.send_space() > 0
                if room is not flow.reading:
                    flow.reading = room
                    requests.append(StreamResume(flow.id) if room else StreamPause(flow.id))
            deadline = conn.next_deadline()
            if deadline is not None and (flow.timer_at is None or deadline < flow.timer_at):
                flow.timer_at = deadline
                heapq.heappush(self._timers, (deadline, flow.id))

        if len(self._timers) > 2 * len(self.by_id) + COMPACT_SLACK:
            self._compact_timers()

    def _compact_timers(self) -> None:
        """Drop the heap's stale entries (flows gone, deadlines moved): after many connections
        close, their 75 s connect deadlines would otherwise stay for minutes, and the little
        objects they are made of keep the allocator's arenas from going back to the kernel."""
        by_id = self.by_id
        live = []
        for deadline, flow_id in self._timers:
            flow = by_id.get(flow_id)
            if flow is not None and flow.timer_at == deadline:
                live.append((deadline, flow_id))
        heapq.heapify(live)
        self._timers = live
        if 4 * len(by_id) < self._peak:
            # Dicts never shrink as keys go: copies sized for what is left return the tables
            # (about 1 MiB for 10,000 connections) to the heap, which the idle trim gives back.
            self.flows, self.by_id, self.fast = dict(self.flows), dict(by_id), dict(self.fast)
            self._peak = len(self.by_id)

    def next_deadline(self) -> float | None:
        return self._timers[0][0] if self._timers else None

    def on_timer(self, now: float) -> None:
        timers = self._timers
        while timers and timers[0][0] <= now:
            deadline, flow_id = heapq.heappop(timers)
            flow = self.by_id.get(flow_id)
            if flow is None:
                continue
            if flow.timer_at == deadline:
                flow.timer_at = None
            real = flow.conn.next_deadline()
            if real is None:
                continue
            if real <= now:
                flow.conn.on_timer(now)
                self._mark(flow)  # flush sends what the timer owes and re-arms the next one
            elif flow.timer_at is None or real < flow.timer_at:
                # A deadline that moved (a delayed ACK that went out with data, say): wait
                # for the real one without a flush for nothing.
                flow.timer_at = real
                heapq.heappush(timers, (real, flow_id))


def _why_closed(conn: TcpConnection) -> str:
    if conn.refused:
        return "closed (refused by the host)"
    if conn.timed_out:
        return "closed (timed out)"
    if conn.reset:
        return "closed (reset)"
    return "closed"


def _head(queue: deque[bytes | memoryview]) -> list[bytes | memoryview]:
    return [queue[i] for i in range(WRITE_CHUNKS)]


def _consume(queue: deque[bytes | memoryview], n: int) -> None:
    """Drop the first ``n`` bytes of ``queue`` (what the host socket took)."""
    while n:
        head = queue[0]
        size = len(head)
        if n >= size:
            queue.popleft()
            n -= size
        else:
            queue[0] = memoryview(head)[n:]
            n = 0
