"""The transmission control block (RFC 9293 §3.3.1) of one guest TCP connection, sans-IO.

``Tcb`` is what a connection remembers: the sequence variables, both windows, the queues each
way, the timers, and what the next ``flush`` owes. It also derives what needs no decision: the
window we can offer, the SACK option, whether anything is unsent, the next deadline, and the
segments that carry a run of the send buffer. ``tcp.TcpConnection`` subclasses it with every
rule: what each input does in each state, and when a segment is sent.

Receiving (guest -> host). In-order text is appended to ``to_host`` and counted in
``to_host_bytes``; the shell reports what the host socket took and the window reopens
(``rcv_buffer - to_host_bytes``, see ``_window_field``). Text that arrives out of order is held
(``sack.OutOfOrder``) and reported back with SACK blocks.

Sending (host -> guest). The host's chunks wait in a ``SendBuffer`` until the guest acknowledges
them; segments carry views of them, at most ``_max_payload`` bytes each (one GSO burst when the
tap offloads, else one frame).
"""

from __future__ import annotations

import enum
from collections import deque
from typing import NamedTuple

from pyslirp4netns.core.rtt import RttEstimator
from pyslirp4netns.core.sack import OutOfOrder
from pyslirp4netns.core.sendbuffer import SendBuffer
from pyslirp4netns.core.seq import HALF, MASK, seq_gt
from pyslirp4netns.wire.codec import Buffer
from pyslirp4netns.wire.tcp import ACK, FIN, MAX_WINDOW_SCALE, PSH, RST, SYN
from pyslirp4netns.wire.tcp import encode_options as _encode_options

# -- timers and limits -------------------------------------------------------------------------
MAX_RETRANSMITS = 15  # Linux tcp_retries2: RFC 9293 §3.8.3 R2 threshold
SYN_RETRIES = 5  # Linux tcp_synack_retries; also used for our active SYN
CONNECT_TIMEOUT = 75.0  # pending host connect (BSD's connection-establishment timer)
FIN_WAIT_2_TIMEOUT = 60.0  # of guest silence in FIN_WAIT_2 (Linux tcp_fin_timeout)
# CLOSE-WAIT (the guest closed, the host has not): after this much guest silence, keep-alive
# probes (RFC 9293 §3.8.4, RFC 1122 §4.2.3.6) ask whether the guest still has the connection;
# a guest kernel that dropped its orphan answers RST, one that kept it answers ACK; no answer
# to KEEPALIVE_PROBES probes KEEPALIVE_INTERVAL apart ends it too (issue 14: host sockets of
# connections the guest forgot must not pile up).
CLOSE_WAIT_IDLE = 60.0
KEEPALIVE_INTERVAL = 10.0
KEEPALIVE_PROBES = 3
# MSL: the guest is on this machine, its segments do not linger in a network, and a busy guest
# must not pile up thousands of TIME-WAIT connections.
MSL = 15.0
TIME_WAIT_TIMEOUT = 2 * MSL  # RFC 9293 §3.4.2
DEFAULT_MSS = 536  # RFC 9293 §3.7.1: when the SYN carries no MSS option
MIN_PEER_MSS = 48  # Linux's tcp_min_snd_mss: a tiny MSS must not turn us into a packet storm
DUPACK_THRESHOLD = 3  # RFC 5681 §3.2
COALESCE_BELOW = 512  # to_host: payloads this small join a small last chunk (see on_segment)
MAX_CONTROL = 8  # RSTs queued for one flush; more in one batch are dropped
MAX_WINDOW = 0xFFFF << MAX_WINDOW_SCALE  # RFC 7323 §2.3: the largest window a shift of 14 reaches


class TcpState(enum.Enum):
    """RFC 9293 §3.3.2 (no LISTEN: a passive connection starts from the guest's SYN)."""

    SYN_SENT = "SYN-SENT"
    SYN_RECEIVED = "SYN-RECEIVED"
    ESTABLISHED = "ESTABLISHED"
    FIN_WAIT_1 = "FIN-WAIT-1"
    FIN_WAIT_2 = "FIN-WAIT-2"
    CLOSING = "CLOSING"
    TIME_WAIT = "TIME-WAIT"
    CLOSE_WAIT = "CLOSE-WAIT"
    LAST_ACK = "LAST-ACK"
    CLOSED = "CLOSED"


SYN_SENT = TcpState.SYN_SENT
SYN_RECEIVED = TcpState.SYN_RECEIVED
ESTABLISHED = TcpState.ESTABLISHED
FIN_WAIT_1 = TcpState.FIN_WAIT_1
FIN_WAIT_2 = TcpState.FIN_WAIT_2
CLOSING = TcpState.CLOSING
TIME_WAIT = TcpState.TIME_WAIT
CLOSE_WAIT = TcpState.CLOSE_WAIT
LAST_ACK = TcpState.LAST_ACK
CLOSED = TcpState.CLOSED

QUEUEING = frozenset({SYN_SENT, SYN_RECEIVED, ESTABLISHED, CLOSE_WAIT})  # host_data taken


class Segment(NamedTuple):
    """One segment (or one GSO burst) for the stack to frame and send to the guest."""

    seq: int
    ack: int
    flags: int
    window: int  # the 16-bit header field, already scaled
    options: bytes  # raw, a multiple of 4 bytes
    payload: bytes | memoryview  # a view of the host's bytes: frame it before it is dropped


def reset_for(seq: int, ack: int, flags: int, length: int) -> Segment | None:
    """The RST answering a segment of a flow we have no connection for (RFC 9293 §3.10.7.1).

    ``length`` is the payload length; an RST is never answered.
    """
    if flags & RST:
        return None
    if flags & ACK:
        return Segment(ack, 0, RST, 0, b"", b"")
    seg_len = length + (1 if flags & SYN else 0) + (1 if flags & FIN else 0)
    return Segment(0, (seq + seg_len) & MASK, RST | ACK, 0, b"", b"")


def shift_for(buffer: int) -> int:
    """The smallest window-scale shift that lets ``buffer`` be advertised (RFC 7323 §2.3)."""
    shift = 0
    while (buffer >> shift) > 0xFFFF and shift < MAX_WINDOW_SCALE:
        shift += 1
    return shift


class Tcb:
    """One connection's variables and what follows from them without a decision."""

    __slots__ = (
        "state",
        "connecting",
        "iss",
        "irs",
        "snd_una",
        "snd_nxt",
        "snd_max",
        "snd_wnd",
        "snd_wl1",
        "snd_wl2",
        "rcv_nxt",
        "rcv_adv",
        "mss",
        "max_segment",
        "peer_mss",
        "send_mss",
        "rcv_buffer",
        "snd_buffer",
        "snd_wscale",
        "rcv_wscale",
        "to_host",
        "to_host_bytes",
        "shutdown_host",
        "reset",
        "refused",
        "timed_out",
        "reopen",
        "rtt",
        "_max_payload",
        "_max_snd_wnd",
        "_sws",
        "_syn_options",
        "_sack_ok",
        "delayed_ack",
        "_delack_bytes",
        "_delack_at",
        "_sndbuf",
        "_snd_base",
        "_fin_queued",
        "_ooo",
        "_ooo_fin",
        "_ctl",
        "_ack_owed",
        "_dup_owed",
        "_syn_owed",
        "_rexmit_owed",
        "_force",
        "_dupacks",
        "_recover",
        "_retries",
        "_rto_deadline",
        "_timer",
        "_probes",
    )

    def __init__(
        self, *, iss: int, mss: int, max_segment: int, rcv_buffer: int, snd_buffer: int
    ) -> None:
        """Common fields; use ``accept`` or ``connect``."""
        iss &= MASK
        self.state = CLOSED
        self.connecting = False  # passive: waiting for the host connect (nothing sent yet)
        self.iss = iss
        self.irs = 0
        self.snd_una = iss
        self.snd_nxt = iss
        self.snd_max = iss  # highest sequence sent: snd_nxt moves back on go-back-N
        self.snd_wnd = 0
        self.snd_wl1 = 0
        self.snd_wl2 = 0
        self.rcv_nxt = 0
        self.rcv_adv = 0  # the highest right edge we ever advertised (see _window_field)
        self.mss = max(1, mss)
        self.max_segment = max(1, max_segment)
        self.peer_mss = DEFAULT_MSS
        self.send_mss = min(self.mss, DEFAULT_MSS)  # Eff.snd.MSS, RFC 9293 §3.7.1
        self.rcv_buffer = max(0, min(rcv_buffer, MAX_WINDOW))
        self.snd_buffer = max(0, snd_buffer)
        self.snd_wscale = 0  # the guest's shift, applied to windows it sends (RFC 7323 §2.3)
        self.rcv_wscale = 0  # our shift, applied to windows we send
        # Guest text for the host socket. The shell pops chunks and reports them written with
        # host_consumed; bytes popped but not yet reported still count in to_host_bytes. A
        # small last chunk may still grow (COALESCE_BELOW), so a flood of tiny segments cannot
        # cost an object per byte.
        self.to_host: deque[bytes | memoryview] = deque()
        self.to_host_bytes = 0
        self.shutdown_host = False
        self.reset = False
        self.refused = False
        self.timed_out = False
        self.reopen = False
        self.rtt = RttEstimator()  # RFC 6298: SRTT, RTTVAR, RTO and its back-off
        self._max_payload = self.send_mss
        self._max_snd_wnd = 0
        self._sws = max(1, min(self.rcv_buffer // 2, self.mss))  # RFC 9293 §3.8.6.2.2
        self._syn_options = b""
        self._sack_ok = False  # RFC 2018: the guest allowed SACK blocks in our ACKs
        self.delayed_ack = 0.0  # seconds an ACK of a little in-order data may wait; 0 = never
        self._delack_bytes = 0  # in-order bytes received since our last ACK, ACK held back
        self._delack_at: float | None = None  # when that held ACK must go out at the latest
        self._sndbuf = SendBuffer()
        self._snd_base = (iss + 1) & MASK  # sequence number of _sndbuf's first byte
        self._fin_queued = False
        self._ooo: OutOfOrder | None = None  # text held beyond a hole; None while there is none
        self._ooo_fin: int | None = None  # where the guest's FIN is, when it came out of order
        self._ctl: list[Segment] = []
        self._ack_owed = False
        self._dup_owed = 0
        self._syn_owed = False
        self._rexmit_owed = False
        self._force = False
        self._dupacks = 0
        self._recover: int | None = None
        self._retries = 0
        self._rto_deadline: float | None = None
        self._timer: float | None = None  # connect, FIN-WAIT-2, CLOSE-WAIT or TIME-WAIT deadline
        self._probes = 0  # keep-alive probes sent in CLOSE-WAIT since the guest last spoke

    def _rcv_wnd(self) -> int:
        wnd = (self.rcv_adv - self.rcv_nxt) & MASK
        return 0 if wnd >= HALF else wnd

    def _last_window(self) -> int:
        """The guest's last window field, as it sent it (for the fast path's no-change test)."""
        return self.snd_wnd >> self.snd_wscale

    def _set_window(self, seq: int, ack: int, wnd: int) -> None:
        self.snd_wnd = wnd
        self.snd_wl1 = seq
        self.snd_wl2 = ack
        if wnd > self._max_snd_wnd:
            self._max_snd_wnd = wnd

    def _window_field(self) -> tuple[int, int]:
        """The window field to send and the right edge it implies (RFC 9293 §3.8.6.2.2).

        The window is ``rcv_buffer - to_host_bytes``. Text held out of order is not subtracted:
        it lies inside [RCV.NXT, rcv_adv) already, so ``to_host_bytes + (rcv_adv - rcv_nxt) <=
        rcv_buffer`` bounds both, and subtracting it again would collapse the window exactly
        when the guest is recovering from a loss. ``rcv_adv``, the highest right edge ever
        advertised, never moves back (RFC 9293 §3.8.6.2.2), and data up to it is accepted even
        when rounding to our scale made the last field look smaller (RFC 7323 §2.4).
        """
        nxt = self.rcv_nxt
        cur = (self.rcv_adv - nxt) & MASK
        if cur >= HALF:
            cur = 0
        avail = self.rcv_buffer - self.to_host_bytes
        if avail - cur >= self._sws:  # receiver SWS avoidance: move the edge by enough or not
            cur = avail
        shift = self.rcv_wscale
        field = cur >> shift  # rounded down: never past the buffer (RFC 7323 §2.4)
        if field > 0xFFFF:
            field = 0xFFFF
        return field, (nxt + (field << shift)) & MASK

    def _sack_option(self) -> bytes:
        """The SACK option for our ACKs while text is held (RFC 2018 §4), if the guest's SYN
        allowed it (§2)."""
        ooo = self._ooo
        if ooo is None or not self._sack_ok:
            return b""
        return _encode_options(sack_blocks=ooo.blocks())

    def _take_text(self, payload: Buffer) -> None:
        """In-order text at RCV.NXT into to_host (``payload`` may be the shell's reused buffer:
        copied then; a view of immutable bytes is kept as it is)."""
        to_host = self.to_host
        n = len(payload)
        if n < COALESCE_BELOW and to_host and len(to_host[-1]) < COALESCE_BELOW:
            to_host[-1] = bytes(to_host[-1]) + bytes(payload)  # tiny segments: one chunk
        elif type(payload) is memoryview and payload.readonly:
            to_host.append(payload)
        else:
            to_host.append(bytes(payload))
        self.to_host_bytes += n
        self.rcv_nxt = (self.rcv_nxt + n) & MASK

    def _drain(self, ooo: OutOfOrder) -> None:
        """Move held text that RCV.NXT has reached into to_host; forget the store once empty."""
        for d in ooo.drain(self.rcv_nxt, self._ooo_fin):
            self._take_text(d)
        if not ooo.pieces:
            self._ooo = None

    def send_space(self) -> int:
        """How many more host bytes ``host_data`` would take now."""
        st = self.state  # ESTABLISHED first: Enum hashing (the set test) is Python code
        if self._fin_queued or self.connecting or (st is not ESTABLISHED and st not in QUEUEING):
            return 0
        return max(0, self.snd_buffer - len(self._sndbuf))

    def _unsent(self) -> bool:
        """Whether data or our FIN waits to be sent beyond SND.NXT."""
        off = (self.snd_nxt - self._snd_base) & MASK
        return off < len(self._sndbuf) or (self._fin_queued and off == len(self._sndbuf))

    def _control(self, segment: Segment) -> None:
        if len(self._ctl) < MAX_CONTROL:
            self._ctl.append(segment)

    def _segments(self, out: list[Segment], off: int, end: int, fin: int, field: int) -> None:
        """Bytes [off, end) of the send buffer as segments of at most ``_max_payload`` bytes;
        the last one has PSH, and our FIN when ``fin``; a bare FIN when the run is empty."""
        base, rcv_nxt, maxp, buf = self._snd_base, self.rcv_nxt, self._max_payload, self._sndbuf
        if off == end:
            out.append(Segment((base + off) & MASK, rcv_nxt, ACK | FIN, field, b"", b""))
            return
        pos = off
        while pos < end:
            m = end - pos
            if m > maxp:
                m = maxp
            flags = ACK
            if pos + m == end:
                flags = ACK | PSH | FIN if fin else ACK | PSH
            out.append(Segment((base + pos) & MASK, rcv_nxt, flags, field, b"", buf.view(pos, m)))
            pos += m

    def _send_syn(self, out: list[Segment], now: float) -> None:
        """Our SYN (SYN-SENT) or SYN|ACK (SYN-RECEIVED); its window is never scaled."""
        self._syn_owed = False
        window = min(self.rcv_buffer - self.to_host_bytes, 0xFFFF)
        if self.state is SYN_SENT:
            out.append(Segment(self.iss, 0, SYN, window, self._syn_options, b""))
        else:
            out.append(Segment(self.iss, self.rcv_nxt, SYN | ACK, window, self._syn_options, b""))
            edge = (self.rcv_nxt + window) & MASK
            if seq_gt(edge, self.rcv_adv):
                self.rcv_adv = edge
        if self.snd_max == self.iss:  # first transmission: time it (Karn)
            self.rtt.start((self.iss + 1) & MASK, now)
        self.snd_nxt = self.snd_max = (self.iss + 1) & MASK
        if self._rto_deadline is None:
            self._rto_deadline = now + self.rtt.timeout()

    def _retransmit_first(self, out: list[Segment], field: int, now: float) -> bool:
        """Fast retransmit: one segment from SND.UNA (RFC 5681 §3.2, RFC 6582 §3.2)."""
        una = self.snd_una
        off = (una - self._snd_base) & MASK
        buflen = len(self._sndbuf)
        if off > buflen or una == self.snd_max:
            return False
        n = min(self.send_mss, buflen - off, (self.snd_max - una) & MASK)
        fin = self._fin_queued and off + n == buflen and self.snd_max == (una + n + 1) & MASK
        if n == 0 and not fin:
            return False
        flags = ACK | FIN if fin else ACK
        payload = self._sndbuf.view(off, n) if n else b""
        out.append(Segment(una, self.rcv_nxt, flags, field, b"", payload))
        self._rto_deadline = now + self.rtt.timeout()
        return True

    def next_deadline(self) -> float | None:
        """When ``on_timer`` next has work, or None."""
        if self.state is CLOSED:
            return None
        a = self._rto_deadline
        b = self._timer
        c = self._delack_at
        if c is not None and (a is None or c < a):
            a = c
        if a is None:
            return b
        if b is None or a < b:
            return a
        return b

    def _close(self, *, abort: bool) -> None:
        self.state = CLOSED
        self.connecting = False
        self._sndbuf = SendBuffer()
        self._ooo = None
        self._ooo_fin = None
        self._ack_owed = False
        self._dup_owed = 0
        self._syn_owed = False
        self._rexmit_owed = False
        self._force = False
        self._rto_deadline = None
        self._timer = None
        self._delack_bytes = 0
        self._delack_at = None
        if abort:
            # The guest's bytes still queued are dropped, so its FIN must not reach the host
            # either: a shutdown would end the host's stream cleanly, short (the close
            # resets it instead).
            self.to_host.clear()
            self.to_host_bytes = 0
            self.shutdown_host = False

    @property
    def closed(self) -> bool:
        """Nothing more will happen: no segment owed and every guest byte reached the host."""
        return self.state is CLOSED and not self._ctl and self.to_host_bytes == 0
