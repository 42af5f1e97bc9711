"""A guest <-> host TCP relay against a reference model: Hypothesis drives the stack.

``RelayModel`` plays both ends of one relayed connection. Toward the core's guest side it is
a small, correct TCP endpoint of its own (``Guest``): sequence numbers, cumulative ACKs, the
window it advertises (rules change it, down to zero), go-back-N retransmission with a
backed-off timer that doubles as the persist timer, FIN, RST, RFC 5961 RST acceptance. Frames
cross a network that loses, reorders and duplicates them. Toward the host side it is the shell
(``Host``): it carries out the core's requests (a host socket with a bounded buffer that a
slow application reads, pause and resume, shutdown, close) and states the facts (host data,
host EOF, host reset, writable).

Checked after every step: each byte stream is a prefix of what was sent (in order, exactly
once); every frame the core emits decodes, checksums, fits the guest's MSS and the window the
guest offered, carries the host's very bytes at its sequence number and a FIN only where the
host's stream ended; nothing but RSTs after an RST; the guest's FIN reaches the host once,
after all its bytes; the core's buffers stay within their bounds and it reads the host only
while its send buffer has room. At teardown, losses stop and time runs on: every byte sent
either way arrives, FINs too, and a connection closed both ways is forgotten (liveness).

``RELAY_MODEL_EXAMPLES`` sets the number of examples (default 1000, about 30 s here).
"""

from __future__ import annotations

import os
import random
from typing import NamedTuple
from unittest import mock

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from pyslirp4netns.config import Config
from pyslirp4netns.core import events, streams
from pyslirp4netns.core.sack import OutOfOrder
from pyslirp4netns.core.seq import MASK, seq_diff
from pyslirp4netns.core.stack import Stack
from pyslirp4netns.core.tcb import QUEUEING, TcpState
from pyslirp4netns.core.tcp import TcpConnection
from pyslirp4netns.wire import ethernet, ipv4, tcp
from pyslirp4netns.wire.codec import checksum
from pyslirp4netns.wire.numbers import IPPROTO_TCP

CONFIG = Config(target="1", pid=1)
GUEST_MAC = bytes.fromhex("020000000001")
GUEST = bytes([10, 0, 2, 100])
GATEWAY = bytes([10, 0, 2, 2])
GATEWAY_MAC = b"\x52\x55" + GATEWAY
GPORT, RPORT = 40000, 8080
CORE_MSS = CONFIG.mtu - ipv4.SIZE - tcp.SIZE

EXAMPLES = int(os.environ.get("RELAY_MODEL_EXAMPLES", "1000"))
PATTERN_SIZE = 1 << 18
GUEST_BYTES = random.Random(1).randbytes(PATTERN_SIZE)  # what the guest application writes
HOST_BYTES = random.Random(2).randbytes(PATTERN_SIZE)  # what the host application writes
MAX_HOST_CHUNK = 3000  # the largest host read the model hands the core at once
IN_FLIGHT = 200  # frames a direction of the network holds; more are tail-dropped
GUEST_RTO = 0.3  # the guest's initial retransmission timeout (doubling to GUEST_RTO_MAX)
GUEST_RTO_MAX = 20.0
SETTLE_ROUNDS = 600  # teardown: timer rounds allowed for everything to arrive


class CoreSegment(NamedTuple):
    """One TCP segment the core sent toward the guest, decoded and checked."""

    seq: int
    ack: int
    flags: int
    window: int
    payload: bytes


def guest_frame(seq: int, ack: int, flags: int, window: int, payload: bytes = b"") -> bytes:
    """A guest segment to the gateway, checksummed as the guest kernel would."""
    return guest_frame_with(seq, ack, flags, window, payload, b"")


def guest_frame_with(
    seq: int, ack: int, flags: int, window: int, payload: bytes, options: bytes
) -> bytes:
    header = tcp.encode(
        GUEST,
        GATEWAY,
        GPORT,
        RPORT,
        seq & MASK,
        ack & MASK,
        flags,
        window,
        payload,
        options=options,
    )
    ip = ipv4.encode(GUEST, GATEWAY, IPPROTO_TCP, len(header) + len(payload))
    return ethernet.encode(GATEWAY_MAC, GUEST_MAC, ethernet.ETHERTYPE_IPV4) + ip + header + payload


def decode_core_frame(frame: bytes) -> tuple[CoreSegment, bytes]:
    """A frame toward the guest: every layer decodes and checksums (else AssertionError)."""
    assert len(frame) <= ethernet.SIZE + CONFIG.mtu, "a frame beyond the MTU"
    eth = ethernet.decode(frame)
    assert (eth.dst, eth.src, eth.ethertype) == (GUEST_MAC, GATEWAY_MAC, ethernet.ETHERTYPE_IPV4)
    ip = ipv4.decode(frame, eth.payload_offset)
    head = frame[eth.payload_offset : eth.payload_offset + ip.header_length]
    assert checksum(head) == 0, "a bad IPv4 header checksum"
    assert (ip.src, ip.dst, ip.protocol) == (GATEWAY, GUEST, IPPROTO_TCP)
    assert not ip.more_fragments and not ip.fragment_offset
    assert ip.payload_offset + ip.payload_length == len(frame), "IP length and frame disagree"
    seg = tcp.decode(frame, ip.payload_offset, ip.payload_length)
    assert tcp.checksum_ok(frame, ip.payload_offset, ip.payload_length, GATEWAY, GUEST)
    assert (seg.src_port, seg.dst_port) == (RPORT, GPORT)
    payload = frame[seg.payload_offset : seg.payload_offset + seg.payload_length]
    return CoreSegment(seg.seq, seg.ack, seg.flags, seg.window, payload), seg.options


class RelayModel(RuleBasedStateMachine):
    """One relayed connection: the model's guest and host around the real core."""

    def __init__(self) -> None:
        super().__init__()
        self.ready = False
        self.now = 0.0
        self.patches: list[mock._patch[int]] = []
        self.to_core: list[bytes] = []  # guest frames in flight
        self.to_guest: list[CoreSegment] = []  # core segments in flight
        # -- the guest's sender: offsets from G0, the sequence number of its first byte
        self.g0 = 0
        self.g_out = bytearray()  # what the guest application wrote
        self.g_una = 0
        self.g_nxt = 0
        self.g_max = 0  # highest offset sent (the FIN counts one)
        self.g_fin = False  # the guest application closed: FIN after g_out
        self.g_peer_wnd = 0  # the core's window, scaled
        self.g_wl1 = 0  # the core's segment (offset from C0) and ACK of the last window update
        self.g_wl2 = 0
        self.g_rto = GUEST_RTO
        self.g_rto_at: float | None = None
        self.g_mss = 0  # segment size toward the core
        # -- the guest's receiver: offsets from C0, the sequence number of the core's first byte
        self.c0 = 0
        self.g_rcv = 0  # RCV.NXT (the core's FIN counts one)
        self.g_in = bytearray()  # what reached the guest application, in order
        self.g_fin_in = False
        self.g_wnd = 0  # the window the guest offers
        self.g_ws = 0  # the guest's window shift (0 unless both sides agreed)
        self.c_ws = 0  # the core's window shift
        self.g_max_edge = 0  # the highest right edge the guest ever advertised
        self.g_reset = False  # the guest sent or accepted an RST: it is CLOSED
        self.g_rst_sent = False
        # -- the host side (the shell and the host socket)
        self.flow = 0
        self.conn: TcpConnection | None = None
        self.rcv_buffer = 0
        self.snd_buffer = 0
        self.h_out = bytearray()  # what the host application wrote to the core
        self.h_in = bytearray()  # what the core wrote to the host socket
        self.h_cap = 0  # the host socket's receive buffer
        self.h_unread = 0  # bytes in it the host application has not read
        self.h_blocked = False  # the last write was not taken whole: writable comes later
        self.h_reading = False  # the core asked to read the socket
        self.h_eof = False
        self.h_reset = False
        self.h_shutdowns = 0
        self.h_closed: events.StreamClose | None = None
        # -- what the core sent
        self.c_rst = False  # an RST went toward the guest: only RSTs may follow
        self.c_ack = 0  # the highest ACK (offset from G0) the core sent
        self.c_fin_at: int | None = None

    # -- setup -----------------------------------------------------------------------------
    @initialize(
        giss=st.sampled_from([1000, 2**32 - 700, 2**31 - 5]),
        ciss=st.sampled_from([2**31, 2**32 - 1500, 7]),
        mss=st.sampled_from([48, 100, 536, CORE_MSS]),
        wscale=st.sampled_from([None, 0, 2, 7]),
        sack=st.booleans(),
        window=st.sampled_from([0, 1, 300, 3000, 65535]),
        rcv_buffer=st.sampled_from([1000, 4000, 70000]),
        snd_buffer=st.sampled_from([1000, 5000, 70000]),
        h_cap=st.sampled_from([1, 700, 1 << 30]),
    )
    def open(
        self,
        giss: int,
        ciss: int,
        mss: int,
        wscale: int | None,
        sack: bool,
        window: int,
        rcv_buffer: int,
        snd_buffer: int,
        h_cap: int,
    ) -> None:
        """Guest SYN -> host connect -> SYN|ACK -> ACK, losslessly."""
        self.rcv_buffer, self.snd_buffer, self.h_cap = rcv_buffer, snd_buffer, h_cap
        for name, value in (("TCP_RCV_BUFFER", rcv_buffer), ("TCP_SND_BUFFER", snd_buffer)):
            patch = mock.patch.object(streams, name, value)
            patch.start()
            self.patches.append(patch)
        self.stack = Stack(CONFIG, rng=lambda: ciss / 2**32)
        self.g0 = giss + 1
        self.g_wnd = window
        options = tcp.encode_options(mss=mss, window_scale=wscale, sack_permitted=sack)
        syn_window = min(window, 0xFFFF)
        self.stack.receive_frame(
            guest_frame_with(giss, 0, tcp.SYN, syn_window, b"", options), self.now
        )
        self.stack.flush(self.now)
        (connect,) = self.stack.take_requests()
        assert isinstance(connect, events.StreamConnect)
        assert self.stack.take_frames() == []
        self.flow = connect.flow
        self.conn = self.stack.streams.by_id[self.flow].conn
        self.now = 0.01
        self.stack.streams.host_connected(self.flow, self.now)
        self.stack.flush(self.now)
        assert self.stack.take_requests() == [events.StreamResume(self.flow)]
        self.h_reading = True
        (frame,) = self.stack.take_frames()
        synack, raw_options = decode_core_frame(b"".join(bytes(p) for p in frame))
        assert synack.flags == tcp.SYN | tcp.ACK and synack.ack == (giss + 1) & MASK
        assert synack.seq == ciss
        offered = tcp.parse_options(raw_options)
        assert offered.mss == CORE_MSS
        assert (offered.window_scale is not None) == (wscale is not None)
        assert offered.sack_permitted == sack
        if wscale is not None and offered.window_scale is not None:
            self.g_ws, self.c_ws = wscale, offered.window_scale
        self.c0 = (ciss + 1) & MASK
        self.g_mss = min(mss, CORE_MSS)
        self.g_peer_wnd = synack.window  # a SYN's window is never scaled
        self.g_wl1 = -1
        self.g_max_edge = syn_window - 1
        self.ready = True
        self.guest_send_segment(0, tcp.ACK, b"")  # the handshake's last ACK, not lost
        self.stack.receive_frame(self.to_core.pop(), self.now)
        self.pump()
        assert self.conn.state is TcpState.ESTABLISHED

    def teardown(self) -> None:
        try:
            if self.ready:
                self.settle()
        finally:
            for patch in self.patches:
                patch.stop()

    # -- the guest endpoint ------------------------------------------------------------------
    def window_field(self) -> int:
        return min(self.g_wnd >> self.g_ws, 0xFFFF)

    def guest_send_segment(self, off: int, flags: int, payload: bytes) -> None:
        """A segment at offset ``off`` of the guest's stream, carrying our ACK and window."""
        field = self.window_field()
        edge = self.g_rcv + (field << self.g_ws)
        self.g_max_edge = max(self.g_max_edge, edge)
        frame = guest_frame(self.g0 + off, self.c0 + self.g_rcv, flags, field, payload)
        if len(self.to_core) < IN_FLIGHT:
            self.to_core.append(frame)

    def guest_output(self, force: bool = False) -> bool:
        """Send what the core's window allows (``force``: at least one byte, a probe)."""
        if self.g_reset:
            return False
        sent = False
        end = len(self.g_out)
        while self.g_nxt < end:
            room = self.g_una + self.g_peer_wnd - self.g_nxt
            if room <= 0:
                if force:  # a window probe: one byte, SND.NXT stays (as BSD)
                    probe = bytes(self.g_out[self.g_nxt : self.g_nxt + 1])
                    self.guest_send_segment(self.g_nxt, tcp.ACK, probe)
                    self.g_max = max(self.g_max, self.g_nxt + 1)
                    sent = True
                break
            n = min(room, self.g_mss, end - self.g_nxt)
            data = bytes(self.g_out[self.g_nxt : self.g_nxt + n])
            flags = tcp.ACK | tcp.PSH if self.g_nxt + n == end else tcp.ACK
            self.guest_send_segment(self.g_nxt, flags, data)
            self.g_nxt += n
            self.g_max = max(self.g_max, self.g_nxt)
            sent = True
            force = False
        if self.g_fin and self.g_nxt == end:
            self.guest_send_segment(end, tcp.ACK | tcp.FIN, b"")
            self.g_nxt = end + 1
            self.g_max = max(self.g_max, self.g_nxt)
            sent = True
        if self.g_rto_at is None and self.guest_outstanding():
            self.g_rto_at = self.now + self.g_rto
        return sent

    def guest_outstanding(self) -> bool:
        """Bytes (or the FIN) not yet acknowledged: the timer runs (retransmit or persist)."""
        return self.g_una < len(self.g_out) + (1 if self.g_fin else 0)

    def guest_timer(self) -> None:
        if self.g_rto_at is None or self.now < self.g_rto_at or self.g_reset:
            return
        self.g_rto_at = None
        if not self.guest_outstanding():
            return
        self.g_nxt = self.g_una  # go-back-N
        self.g_rto = min(2 * self.g_rto, GUEST_RTO_MAX)
        self.guest_output(force=True)

    def guest_receive(self, seg: CoreSegment) -> None:
        """RFC 9293 §3.10.7.4, the parts a simple correct receiver needs."""
        if self.g_reset:
            # CLOSED (RFC 9293 §3.10.7.1): anything but an RST is answered with one.
            if not seg.flags & tcp.RST and seg.flags & tcp.ACK:
                if len(self.to_core) < IN_FLIGHT:
                    self.to_core.append(guest_frame(seg.ack, 0, tcp.RST, 0))
            return
        off = self.g_rcv + seq_diff(seg.seq, (self.c0 + self.g_rcv) & MASK)
        wnd = self.window_field() << self.g_ws
        if seg.flags & tcp.RST:
            if off == self.g_rcv:
                self.guest_accepts_reset()
            elif self.g_rcv < off < self.g_rcv + wnd:
                self.guest_send_segment(self.g_nxt, tcp.ACK, b"")  # RFC 5961 §3.2 challenge
            return
        owe = False
        if seg.flags & tcp.ACK:
            self.guest_ack(off, seg)
        n = len(seg.payload)
        if n or seg.flags & tcp.FIN:
            owe = True
            if off <= self.g_rcv <= off + n and not self.g_fin_in:
                take = max(0, min(off + n, self.g_rcv + wnd) - self.g_rcv)
                start = self.g_rcv - off
                self.g_in += seg.payload[start : start + take]
                self.g_rcv += take
                if seg.flags & tcp.FIN and self.g_rcv == off + n and wnd:  # none at zero
                    self.g_fin_in = True
                    self.g_rcv += 1
        elif off < self.g_rcv or off > self.g_rcv + wnd:
            owe = True  # unacceptable (a keep-alive probe, an old segment): say where we are
        if not self.guest_output() and owe:
            self.guest_send_segment(self.g_nxt, tcp.ACK, b"")

    def guest_ack(self, off: int, seg: CoreSegment) -> None:
        ack = self.g_una + seq_diff(seg.ack, (self.g0 + self.g_una) & MASK)
        assert ack <= self.g_max, f"the core acknowledged {ack} of {self.g_max} guest offsets"
        if ack < self.g_una:
            return  # an old duplicate: ignore the field
        if ack > self.g_una:
            self.g_una = ack
            self.g_nxt = max(self.g_nxt, ack)
            self.g_rto = GUEST_RTO
            self.g_rto_at = self.now + self.g_rto if self.guest_outstanding() else None
        if off > self.g_wl1 or (off == self.g_wl1 and ack >= self.g_wl2):
            self.g_peer_wnd = seg.window << self.c_ws
            self.g_wl1, self.g_wl2 = off, ack

    def guest_accepts_reset(self) -> None:
        self.g_reset = True
        self.g_rto_at = None
        if not self.aborted():
            # No one reset and nothing timed out: the core forgot a connection it closed
            # gracefully, and answers a late segment with reset_for. Then all has arrived.
            assert self.stack.streams.by_id.get(self.flow) is None
            assert self.h_closed is not None and not self.h_closed.abort
            assert self.delivered(), self.describe()

    # -- the host side ---------------------------------------------------------------------
    def pump(self) -> None:
        """What the shell does after every input: flush, carry out requests, take frames."""
        stack = self.stack
        stack.flush(self.now)
        while requests := stack.take_requests():
            for request in requests:
                self.carry_out(request)
            stack.flush(self.now)
        for parts in stack.take_frames():
            self.core_frame(b"".join(bytes(p) for p in parts))

    def carry_out(self, request: events.Request) -> None:
        assert getattr(request, "flow", self.flow) == self.flow, request
        assert self.h_closed is None, f"{request} after {self.h_closed}"
        if self.h_reset:  # the shell forgot the socket: only the close may still come
            assert isinstance(request, events.StreamClose), f"{request} after the host reset"
        match request:
            case events.StreamWrite():
                data = b"".join(bytes(b) for b in request.data)
                assert data, "an empty write"
                n = min(len(data), self.h_cap - self.h_unread)
                self.h_in += data[:n]
                self.h_unread += n
                self.h_blocked = n < len(data)
                self.stack.streams.host_written(self.flow, n, n == 0, self.now)
            case events.StreamShutdown():
                assert self.g_fin and self.h_in == self.g_out, "shutdown before the last byte"
                self.h_shutdowns += 1
            case events.StreamPause():
                assert self.h_reading
                self.h_reading = False
            case events.StreamResume():
                assert not self.h_reading
                self.h_reading = True
            case events.StreamClose():
                self.h_closed = request
                conn = self.conn
                assert conn is not None
                assert request.abort == (conn.reset or conn.timed_out), request
                if not self.aborted():
                    # A graceful close: both FINs went through, every byte arrived.
                    assert self.h_eof and self.g_fin and self.h_shutdowns == 1
                    assert self.delivered(), self.describe()
            case _:
                raise AssertionError(f"unexpected request {request}")

    def host_read_all(self) -> None:
        self.h_unread = 0
        if self.h_blocked and self.host_open():
            self.h_blocked = False
            self.stack.streams.host_writable(self.flow, self.now)
            self.pump()

    def host_open(self) -> bool:
        return self.ready and self.h_closed is None and not self.h_reset

    # -- what the core sends -----------------------------------------------------------------
    def core_frame(self, frame: bytes) -> None:
        seg, options = decode_core_frame(frame)
        conn = self.conn
        assert conn is not None
        assert not seg.flags & tcp.SYN, "a SYN after the handshake"
        n = len(seg.payload)
        if seg.flags & tcp.RST:
            assert not n, "an RST with data"
            self.c_rst = True
        else:
            assert not self.c_rst, f"{seg} after an RST"
            assert seg.flags & tcp.ACK
            assert n <= conn.send_mss, f"{n} bytes beyond the MSS {conn.send_mss}"
            ack = self.c_ack + seq_diff(seg.ack, (self.g0 + self.c_ack) & MASK)
            assert ack >= self.c_ack, "the core's ACK went back"
            assert ack <= self.g_max, "the core acknowledged what the guest never sent"
            assert ack >= len(self.h_in), "bytes written to the host before their ACK"
            self.c_ack = ack
            off = seq_diff(seg.seq, self.c0)
            if n:
                assert 0 <= off and off + n <= len(self.h_out), (off, n, len(self.h_out))
                assert seg.payload == self.h_out[off : off + n], "not the host's bytes"
                assert off + n <= self.g_max_edge + 1, "data beyond the guest's window"
            if seg.flags & tcp.FIN:
                assert self.h_eof and off + n == len(self.h_out), "a FIN out of place"
                self.c_fin_at = off + n
            if options:
                for left, right in tcp.parse_options(options).sack_blocks:
                    lo = ack + seq_diff(left, seg.ack)
                    hi = ack + seq_diff(right, seg.ack)
                    assert ack < lo < hi <= self.g_max, ("a SACK block out of range", lo, hi)
        if len(self.to_guest) < IN_FLIGHT:
            self.to_guest.append(seg)

    # -- the network -----------------------------------------------------------------------
    def deliver_to_core(self, index: int) -> None:
        frame = self.to_core.pop(index)
        self.stack.receive_frame(frame, self.now)
        self.pump()

    def deliver_to_guest(self, index: int) -> None:
        self.guest_receive(self.to_guest.pop(index))  # its answers are queued, not sent

    def deliver_everything(self) -> None:
        for _ in range(10_000):
            if self.to_core:
                self.deliver_to_core(0)
            elif self.to_guest:
                self.deliver_to_guest(0)
            else:
                return
        raise AssertionError("frames kept coming: a storm")

    def fire(self) -> None:
        self.stack.on_timer(self.now)
        self.pump()
        self.guest_timer()

    def next_deadline(self) -> float | None:
        deadlines = [d for d in (self.stack.next_deadline(), self.g_rto_at) if d is not None]
        return min(deadlines) if deadlines else None

    def advance(self, dt: float) -> None:
        """Time passes by ``dt``: every timer due on the way fires at its deadline."""
        target = self.now + dt
        for _ in range(40):
            deadline = self.next_deadline()
            if deadline is None or deadline > target:
                break
            self.now = max(self.now, deadline)
            self.fire()
        self.now = target
        self.fire()

    # -- rules -----------------------------------------------------------------------------
    @rule(n=st.integers(1, 4000))
    def guest_sends(self, n: int) -> None:
        if self.g_fin or self.g_reset or len(self.g_out) + n > PATTERN_SIZE:
            return
        start = len(self.g_out)
        self.g_out += GUEST_BYTES[start : start + n]
        self.guest_output()

    @rule(gate=st.integers(0, 7))
    def guest_closes(self, gate: int) -> None:
        if not gate and not self.g_fin and not self.g_reset:  # gated: let data flow first
            self.g_fin = True
            self.guest_output()

    @rule(window=st.sampled_from([0, 1, 200, 1500, 5000, 65535, 1 << 20]))
    def guest_window(self, window: int) -> None:
        """The guest application reads slower or faster: a window update (which may shrink)."""
        self.set_guest_window(window)

    def set_guest_window(self, window: int) -> None:
        if not self.g_reset:
            self.g_wnd = min(window, 0xFFFF << self.g_ws)
            self.guest_send_segment(self.g_nxt, tcp.ACK, b"")

    @rule(gate=st.integers(0, 39))
    def guest_resets(self, gate: int) -> None:
        if gate or self.g_reset:
            return  # rare: the connection's end
        self.g_rst_sent = True
        self.guest_send_segment(self.g_max, tcp.RST | tcp.ACK, b"")
        self.g_reset = True
        self.g_rto_at = None

    @rule(n=st.integers(1, MAX_HOST_CHUNK))
    def host_sends(self, n: int) -> None:
        if not (self.host_open() and self.h_reading and not self.h_eof):
            return  # the shell reads only while the core says so
        conn = self.conn
        assert conn is not None
        start = len(self.h_out)
        if start + n > PATTERN_SIZE:
            return
        assert conn.send_space() > 0, "reading, yet no room for what is read"
        self.h_out += HOST_BYTES[start : start + n]
        self.stack.streams.host_data(self.flow, HOST_BYTES[start : start + n], self.now)
        self.pump()

    @rule(n=st.sampled_from([1, 300, 4000, 1 << 30]))
    def host_reads(self, n: int) -> None:
        """The host application reads from its socket: room for the core's next write."""
        self.h_unread -= min(n, self.h_unread)
        if self.h_blocked and self.h_unread < self.h_cap and self.host_open():
            self.h_blocked = False
            self.stack.streams.host_writable(self.flow, self.now)
            self.pump()

    @rule(gate=st.integers(0, 7))
    def host_closes(self, gate: int) -> None:
        """The host's FIN: the shell reads EOF (only while reading)."""
        if gate or not (self.host_open() and self.h_reading and not self.h_eof):
            return
        self.h_eof = True
        self.stack.streams.host_eof(self.flow, self.now)
        self.pump()

    @rule(gate=st.integers(0, 39))
    def host_resets(self, gate: int) -> None:
        if gate or not self.host_open():
            return
        self.h_reset = True
        self.stack.streams.host_reset(self.flow, self.now)
        self.pump()

    @rule(index=st.integers(0, 255))
    def frame_to_core(self, index: int) -> None:
        """The head of the line, or (reordering) any frame after it."""
        if self.to_core:
            self.deliver_to_core(index % len(self.to_core) if index % 3 == 0 else 0)

    @rule(index=st.integers(0, 255))
    def frame_to_guest(self, index: int) -> None:
        if self.to_guest:
            self.deliver_to_guest(index % len(self.to_guest) if index % 3 == 0 else 0)

    @rule(count=st.integers(1, 30))
    def frames_in_order(self, count: int) -> None:
        """Some frames each way, in order, interleaved as a real link would."""
        for _ in range(count):
            if self.to_core:
                self.deliver_to_core(0)
            if self.to_guest:
                self.deliver_to_guest(0)

    @rule(toward_core=st.booleans(), index=st.integers(0, 255))
    def frame_lost(self, toward_core: bool, index: int) -> None:
        queue: list[bytes] | list[CoreSegment] = self.to_core if toward_core else self.to_guest
        if queue:
            queue.pop(index % len(queue))

    @rule(toward_core=st.booleans(), index=st.integers(0, 255))
    def frame_duplicated(self, toward_core: bool, index: int) -> None:
        if toward_core and self.to_core:
            self.to_core.append(self.to_core[index % len(self.to_core)])
        elif not toward_core and self.to_guest:
            self.to_guest.append(self.to_guest[index % len(self.to_guest)])

    @rule(dt=st.sampled_from([0.001, 0.05, 0.25, 1.0, 4.0, 15.0, 61.0]))
    def time_passes(self, dt: float) -> None:
        self.advance(dt)

    # -- invariants ------------------------------------------------------------------------
    @invariant()
    def streams_are_prefixes(self) -> None:
        assert self.g_out[: len(self.h_in)] == self.h_in, "guest -> host bytes corrupted"
        assert self.h_out[: len(self.g_in)] == self.g_in, "host -> guest bytes corrupted"
        assert self.h_shutdowns <= 1, "the guest's FIN reached the host twice"

    @invariant()
    def core_buffers_are_bounded(self) -> None:
        conn = self.conn
        if conn is None:
            return
        ooo = conn._ooo
        held = ooo.size if isinstance(ooo, OutOfOrder) else 0
        assert conn.to_host_bytes + held <= self.rcv_buffer, (conn.to_host_bytes, held)
        assert len(conn._sndbuf) < self.snd_buffer + MAX_HOST_CHUNK, len(conn._sndbuf)
        if self.host_open() and not self.h_eof and conn.state in QUEUEING:
            # It reads the host while, and only while, its send buffer has room.
            assert self.h_reading == (conn.send_space() > 0), (self.h_reading, conn.state)

    # -- teardown: losses stop, time runs on -------------------------------------------------
    def aborted(self) -> bool:
        """Whether someone reset the connection or the core gave up on the guest."""
        conn = self.conn
        return self.h_reset or self.g_rst_sent or (conn is not None and conn.timed_out)

    def delivered(self) -> bool:
        """Every byte sent either way arrived, and each FIN sent."""
        return (
            self.h_in == self.g_out
            and (not self.g_fin or self.h_shutdowns == 1)
            and self.g_in == self.h_out
            and (not self.h_eof or self.g_fin_in)
        )

    def acknowledged(self) -> bool:
        conn = self.conn
        assert conn is not None
        return not self.guest_outstanding() and (
            conn.state is TcpState.CLOSED or conn.snd_una == conn.snd_max
        )

    def describe(self) -> str:
        conn = self.conn
        assert conn is not None
        return (
            f"state {conn.state} g_out {len(self.g_out)} h_in {len(self.h_in)} "
            f"h_out {len(self.h_out)} g_in {len(self.g_in)} g_fin {self.g_fin} "
            f"shutdowns {self.h_shutdowns} h_eof {self.h_eof} g_fin_in {self.g_fin_in} "
            f"g_una {self.g_una} g_wnd {self.g_wnd} peer_wnd {self.g_peer_wnd} "
            f"snd_una {conn.snd_una} snd_max {conn.snd_max} snd_wnd {conn.snd_wnd} "
            f"to_host {conn.to_host_bytes} now {self.now}"
        )

    def settle(self) -> None:
        for name, n in (("guest -> host", len(self.g_out)), ("host -> guest", len(self.h_out))):
            event(f"{name}: " + ("none" if not n else "< 4 KB" if n < 4096 else ">= 4 KB"))
        self.h_cap = 1 << 40
        self.host_read_all()
        if not self.g_reset and self.g_wnd < 65535:
            self.set_guest_window(65535)
        for _ in range(SETTLE_ROUNDS):
            self.deliver_everything()
            self.host_read_all()
            if self.delivered() and self.acknowledged():
                break
            deadline = self.next_deadline()
            if deadline is None:
                break
            self.now = max(self.now, deadline)
            self.fire()
        if self.aborted():
            event("ended by a reset or a timeout")
            return
        if self.g_reset:
            # Only a late segment after a graceful close (guest_accepts_reset checked it).
            assert self.h_closed is not None and not self.h_closed.abort, self.describe()
            assert self.delivered(), "not all arrived: " + self.describe()
            event("closed both ways, then a late segment reset")
            return
        assert self.delivered() and self.acknowledged(), "not all arrived: " + self.describe()
        if not (self.g_fin and self.h_eof):
            event("half-open or open at the end")
            return
        # Closed both ways: the core forgets the connection (TIME-WAIT or LAST-ACK ends).
        for _ in range(SETTLE_ROUNDS):
            if self.stack.streams.by_id.get(self.flow) is None:
                break
            self.deliver_everything()
            deadline = self.next_deadline()
            if deadline is None:
                break
            self.now = max(self.now, deadline)
            self.fire()
        assert self.stack.streams.by_id.get(self.flow) is None, self.describe()
        assert self.h_closed is not None and not self.h_closed.abort
        event("closed both ways")


TestRelayModel = RelayModel.TestCase
TestRelayModel.settings = settings(
    max_examples=EXAMPLES,
    stateful_step_count=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
