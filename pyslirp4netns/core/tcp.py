"""One guest TCP connection as an RFC 9293 state machine, sans-IO.

Theory of operation
-------------------
We are the *remote end* the guest talks to. A ``TcpConnection`` knows sequence numbers, flags,
windows, payload bytes and ``now`` (seconds, passed in); it knows nothing of frames, addresses,
sockets or clocks. ``core/streams.py`` turns frames into ``on_segment`` calls, ``Segment``
values back into frames, the shell's facts into ``host_*`` calls, and what the connection
exposes (``to_host``, ``shutdown_host``, ``reset``, ``timed_out``) into requests for the shell
(write these bytes, shut down, close, pause or resume reading). Every state rule
is in this file. The mechanisms it relies on have modules of their own: ``seq`` (arithmetic
modulo 2**32), ``sendbuffer`` (host bytes until the guest acknowledges them), ``sack`` (guest
text held out of order, and the SACK blocks that report it), ``rtt`` (the RFC 6298 estimator).

Opening. Passive (``accept``, the forwarder, ARCHITECTURE principle 5): built from the guest's
SYN while the shell connects a host socket, SYN-RECEIVED with ``connecting`` set. Nothing goes
to the guest until the shell reports ``host_connected`` (SYN|ACK), ``host_refused`` (RST|ACK),
``host_failed`` (silence: the stack sends ICMP unreachable) or ``CONNECT_TIMEOUT`` passes
(RST|ACK). Active (``connect``, port forwards): SYN-SENT; RST|ACK sets ``refused``; unanswered
SYNs are retried ``SYN_RETRIES`` times with back-off.

Batching. ``on_segment`` never returns segments: it updates the state and notes what is owed
(an ACK, duplicate ACKs, a SYN|ACK, an RST). The stack calls ``flush(now)`` once per batch of
frames (and after host events and ``on_timer``); it returns everything due: RSTs, duplicate
ACKs, the data the guest's window allows (every data segment carries the cumulative ACK, the
last one PSH, and our FIN when it fits), and a pure ACK only if something is owed and no data
segment carried it. So a batch of 40 guest segments costs one ACK, and challenge ACKs are
throttled to one per flush (RFC 5961 §7). The common ``on_segment`` case (ESTABLISHED, in
order) is a few comparisons and an append.

Receiving (guest -> host). In-order text is appended to ``to_host`` and counted in
``to_host_bytes``; ``host_consumed(n)`` (the host socket took ``n`` of them) reopens the
window (``rcv_buffer - to_host_bytes``, see ``_window_field``). Text that arrives out of order
is held and reported back with SACK blocks. The guest's FIN sets ``shutdown_host``: every byte
before it is in ``to_host`` already.

Sending (host -> guest). ``host_data`` queues the host's chunks (while ``send_space()`` > 0);
``flush`` sends from SND.NXT up to the guest's window, in segments of at most ``max_segment``
bytes whose payloads are views of those chunks. A timeout resends go-back-N from SND.UNA
(after ``MAX_RETRANSMITS`` we reset); three duplicate ACKs resend one segment, then NewReno
recovery. There is no congestion window: the only path is a local tap and the guest's receive
window paces us already; a cwnd would only add per-ACK work. The guest's SACK blocks are not
read.

Options. MSS always; window scale (RFC 7323) and SACK-permitted (RFC 2018) only if the guest's
SYN carried them (our active SYN offers both); neither side's shift applies to SYN segments.
No timestamps (RFC 7323 §3): 12 bytes on every segment and per-segment option parsing, for RTT
samples we take anyway and for PAWS, which a local link does not need (the 2**32 sequence
space does not wrap within a segment's life there).

Closing (principle 6). The guest's FIN -> CLOSE-WAIT and ``shutdown_host``; ``host_eof`` -> our
FIN after the queued data; a half-closed connection keeps carrying data the other way. A guest
RST closes with ``reset`` (the shell closes its socket with SO_LINGER 0); ``host_reset`` sends
RST|ACK. After ``closed`` the stack forgets the flow; segments for unknown flows get
``reset_for``.

Every input in every state is handled: nothing is raised for any combination of state, flags,
sequence and acknowledgment numbers, window or payload; anything raised is a bug.
"""

from __future__ import annotations

import enum
from collections import deque
from typing import NamedTuple

from pyslirp4netns.core.rtt import RttEstimator
from pyslirp4netns.core.sack import OutOfOrder
from pyslirp4netns.core.sendbuffer import SendBuffer
from pyslirp4netns.core.seq import HALF, MASK, seq_ge, seq_gt, seq_le, seq_lt
from pyslirp4netns.wire.codec import Buffer
from pyslirp4netns.wire.tcp import ACK, FIN, MAX_WINDOW_SCALE, PSH, RST, SYN, TcpOptions
from pyslirp4netns.wire.tcp import encode_options as _encode_options

# -- timers and limits -------------------------------------------------------------------------
MAX_RETRANSMITS = 15  # Linux tcp_retries2: RFC 9293 §3.8.3 R2 threshold
SYN_RETRIES = 5  # Linux tcp_synack_retries; also used for our active SYN
CONNECT_TIMEOUT = 75.0  # pending host connect (BSD's connection-establishment timer)
FIN_WAIT_2_TIMEOUT = 60.0  # of guest silence in FIN_WAIT_2 (Linux tcp_fin_timeout)
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


_SYN_SENT = TcpState.SYN_SENT
_SYN_RECEIVED = TcpState.SYN_RECEIVED
_ESTABLISHED = TcpState.ESTABLISHED
_FIN_WAIT_1 = TcpState.FIN_WAIT_1
_FIN_WAIT_2 = TcpState.FIN_WAIT_2
_CLOSING = TcpState.CLOSING
_TIME_WAIT = TcpState.TIME_WAIT
_CLOSE_WAIT = TcpState.CLOSE_WAIT
_LAST_ACK = TcpState.LAST_ACK
_CLOSED = TcpState.CLOSED

# RFC 9293 §3.3.2, Figure 5: every state change this module makes is one of these edges (one
# input may take several in a row, e.g. SYN-RECEIVED -> ESTABLISHED -> CLOSE-WAIT on ACK+FIN).
# Any state may also go to CLOSED (RST, abort, timeout), which the figure leaves implicit.
TRANSITIONS: dict[TcpState, frozenset[TcpState]] = {
    _SYN_SENT: frozenset({_SYN_RECEIVED, _ESTABLISHED, _CLOSED}),
    _SYN_RECEIVED: frozenset({_ESTABLISHED, _FIN_WAIT_1, _CLOSED}),
    _ESTABLISHED: frozenset({_FIN_WAIT_1, _CLOSE_WAIT, _CLOSED}),
    _FIN_WAIT_1: frozenset({_FIN_WAIT_2, _CLOSING, _TIME_WAIT, _CLOSED}),
    _FIN_WAIT_2: frozenset({_TIME_WAIT, _CLOSED}),
    _CLOSING: frozenset({_TIME_WAIT, _CLOSED}),
    _TIME_WAIT: frozenset({_CLOSED}),
    _CLOSE_WAIT: frozenset({_LAST_ACK, _CLOSED}),
    _LAST_ACK: frozenset({_CLOSED}),
    _CLOSED: frozenset(),
}

_RECEIVING = frozenset({_ESTABLISHED, _FIN_WAIT_1, _FIN_WAIT_2})  # guest text still accepted
_QUEUEING = frozenset({_SYN_SENT, _SYN_RECEIVED, _ESTABLISHED, _CLOSE_WAIT})  # host_data taken
_CTL = SYN | RST | FIN | ACK


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


def _shift_for(buffer: int) -> int:
    """The smallest window-scale shift that lets ``buffer`` be advertised (RFC 7323 §2.3)."""
    shift = 0
    while (buffer >> shift) > 0xFFFF and shift < MAX_WINDOW_SCALE:
        shift += 1
    return shift


class TcpConnection:
    """One guest TCP flow; build it with ``accept`` (guest SYN) or ``connect`` (our SYN)."""

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
    )

    def __init__(
        self, *, iss: int, mss: int, max_segment: int, rcv_buffer: int, snd_buffer: int
    ) -> None:
        """Common fields; use ``accept`` or ``connect``."""
        iss &= MASK
        self.state = _CLOSED
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
        self._timer: float | None = None  # connect, FIN-WAIT-2 or TIME-WAIT deadline

    # -- construction ----------------------------------------------------------------------
    @classmethod
    def accept(
        cls,
        *,
        irs: int,
        peer_window: int,
        options: TcpOptions,
        iss: int,
        now: float,
        mss: int,
        max_segment: int,
        rcv_buffer: int,
        snd_buffer: int,
    ) -> TcpConnection:
        """A passive connection from the guest's SYN; send nothing until ``host_connected``."""
        c = cls(
            iss=iss, mss=mss, max_segment=max_segment, rcv_buffer=rcv_buffer, snd_buffer=snd_buffer
        )
        c.state = _SYN_RECEIVED
        c.connecting = True
        c.irs = irs & MASK
        c.rcv_nxt = c.rcv_adv = (irs + 1) & MASK
        # RFC 7323 §2.2: offer window scaling only if the guest's SYN did.
        c.rcv_wscale = _shift_for(c.rcv_buffer) if options.window_scale is not None else 0
        c._peer_syn(options)
        c.snd_wnd = c._max_snd_wnd = peer_window  # RFC 7323 §2.2: a SYN's window is not scaled
        c.snd_wl1 = c.irs
        c.snd_wl2 = c.iss
        c._timer = now + CONNECT_TIMEOUT
        return c

    @classmethod
    def connect(
        cls,
        *,
        iss: int,
        now: float,
        mss: int,
        max_segment: int,
        rcv_buffer: int,
        snd_buffer: int,
    ) -> TcpConnection:
        """An active open toward the guest: SYN_SENT, the SYN goes out at the next flush."""
        c = cls(
            iss=iss, mss=mss, max_segment=max_segment, rcv_buffer=rcv_buffer, snd_buffer=snd_buffer
        )
        c.state = _SYN_SENT
        c.rcv_wscale = _shift_for(c.rcv_buffer)  # offered; dropped if the guest does not agree
        c._syn_options = _encode_options(mss=c.mss, window_scale=c.rcv_wscale, sack_permitted=True)
        c._syn_owed = True  # SND.NXT becomes ISS+1 when the SYN goes out (RFC 9293 §3.10.1)
        return c

    def _peer_syn(self, options: TcpOptions) -> None:
        """Take MSS and window scale from the guest's SYN or SYN|ACK (RFC 9293 §3.7.1, 7323)."""
        peer_mss = options.mss if options.mss is not None else DEFAULT_MSS
        self.peer_mss = max(peer_mss, MIN_PEER_MSS)
        self.send_mss = min(self.mss, self.peer_mss)
        # Without GSO a segment is one frame: the guest's MSS bounds it. With GSO the stack
        # cuts our bursts into send_mss pieces, so only max_segment bounds the burst.
        self._max_payload = (
            min(self.max_segment, self.send_mss)
            if self.max_segment <= self.mss
            else self.max_segment
        )
        if options.window_scale is not None:
            self.snd_wscale = min(options.window_scale, MAX_WINDOW_SCALE)
        else:
            self.snd_wscale = self.rcv_wscale = 0  # RFC 7323 §2.2: both sides scale or neither
        # Our SYN|ACK (passive or simultaneous open) offers scaling only if the guest did.
        ws = self.rcv_wscale if options.window_scale is not None else None
        self._sack_ok = options.sack_permitted  # RFC 2018 §2: only if the SYN allowed it
        self._syn_options = _encode_options(
            mss=self.mss, window_scale=ws, sack_permitted=options.sack_permitted
        )

    # -- facts from the guest ----------------------------------------------------------------
    def on_segment(
        self,
        seq: int,
        ack: int,
        flags: int,
        window: int,
        payload: Buffer,
        now: float,
        options: TcpOptions | None = None,
    ) -> None:
        """A segment from the guest (``payload`` may be a reused view: it is copied if kept)."""
        # Fast path: ESTABLISHED, in order, no SYN/RST/FIN, fits the window, nothing held.
        # Everything else takes the full RFC 9293 §3.10.7.4 walk in _segment.
        if (
            self.state is _ESTABLISHED
            and seq == self.rcv_nxt
            and flags & _CTL == ACK
            and self._ooo is None
            and len(payload) <= ((self.rcv_adv - seq) & MASK)
        ):
            n = len(payload)
            if ack != self.snd_una or self.snd_max != ack or self._rto_deadline is not None:
                if not self._on_ack(seq, ack, window, n, flags, now):
                    return
            elif self.snd_wl1 != seq or self.snd_wl2 != ack or window != self._last_window():
                # RFC 9293 §3.10.7.4 window update: SND.WL1 < SEG.SEQ, or equal and
                # SND.WL2 =< SEG.ACK (here SEG.ACK = SND.UNA = SND.WL2 or newer).
                if seq_gt(seq, self.snd_wl1) or (seq == self.snd_wl1 and seq_le(self.snd_wl2, ack)):
                    self._set_window(seq, ack, window << self.snd_wscale)
            if n:
                to_host = self.to_host
                if n < COALESCE_BELOW and to_host and len(to_host[-1]) < COALESCE_BELOW:
                    # tiny segments: bound the per-chunk overhead
                    to_host[-1] = bytes(to_host[-1]) + bytes(payload)
                elif type(payload) is memoryview and payload.readonly:
                    to_host.append(payload)  # a view of immutable bytes: kept without a copy
                else:
                    to_host.append(bytes(payload))  # the shell's reused buffer: copied
                self.to_host_bytes += n
                self.rcv_nxt = (seq + n) & MASK
                # RFC 9293 §3.8.6.3 / RFC 1122 §4.2.3.2: a little data may wait a moment for
                # the answer to carry its ACK (request/response: one frame instead of two);
                # two full segments' worth, or anything else owed, is acknowledged at once.
                pending = self._delack_bytes + n
                if self.delayed_ack and pending < 2 * self.mss:
                    self._delack_bytes = pending
                else:
                    self._ack_owed = True
            return
        self._segment(seq, ack, flags, window, payload, now, options)

    def _last_window(self) -> int:
        """The guest's last window field, as it sent it (for the fast path's no-change test)."""
        return self.snd_wnd >> self.snd_wscale

    def _segment(
        self,
        seq: int,
        ack: int,
        flags: int,
        window: int,
        payload: Buffer,
        now: float,
        options: TcpOptions | None,
    ) -> None:
        """RFC 9293 §3.10.7.3 (SYN-SENT) and §3.10.7.4 (all other states), in order."""
        st = self.state
        if st is _CLOSED:
            return  # forgotten soon: the stack answers unknown flows (reset_for)
        if st is _SYN_SENT:
            self._syn_sent(seq, ack, flags, window, payload, now, options)
            return
        if self.connecting:
            # ARCHITECTURE principle 5: nothing goes to the guest before the host answers.
            # Retransmitted SYNs are dropped; an exact RST (RFC 5961 §3.2) abandons the connect.
            if flags & RST and seq == self.rcv_nxt:
                self._guest_reset()
            return
        if st is _TIME_WAIT and flags & (SYN | ACK | RST) == SYN and seq_gt(seq, self.rcv_nxt):
            # RFC 1122 §4.2.2.13 / RFC 6191: a new SYN may reopen from TIME-WAIT: end this
            # incarnation now; the stack sees ``reopen`` and builds a new connection from it.
            self.reopen = True
            self._close(abort=False)
            return
        if st is _SYN_RECEIVED and flags & (SYN | ACK | RST) == SYN and seq == self.irs:
            self._syn_owed = True  # the guest lost our SYN|ACK: resend it (as Linux does)
            self.rtt.cancel()  # Karn: the SYN|ACK is ambiguous now (RFC 6298 §3)
            return

        rcv_nxt = self.rcv_nxt
        n = len(payload)
        seg_len = n + (1 if flags & SYN else 0) + (1 if flags & FIN else 0)
        wnd = (self.rcv_adv - rcv_nxt) & MASK
        if wnd >= HALF:
            wnd = 0
        off = (seq - rcv_nxt) & MASK
        # First: RFC 9293 §3.10.7.4 sequence acceptability, the four cases of its table.
        if seg_len == 0:
            ok = off == 0 if wnd == 0 else off < wnd
        elif wnd == 0:
            ok = False
        else:
            ok = off < wnd or ((off + seg_len - 1) & MASK) < wnd
        probe = False
        if not ok:
            if wnd == 0 and off == 0 and not flags & SYN:
                # RFC 9293 §3.10.7.4: with RCV.WND zero, still process valid ACKs and RSTs
                # (the guest's zero-window probe); the text itself is dropped below.
                probe = True
            else:
                if not flags & RST:
                    self._ack_owed = True  # "send an acknowledgment ... and drop"
                    if st is _TIME_WAIT and flags & FIN:
                        self._timer = now + TIME_WAIT_TIMEOUT  # restart the 2 MSL wait
                return
        if st is _FIN_WAIT_2:
            # The guest is alive: the idle timer restarts (as BSD, and libslirp's idle rule: a
            # half-close that still carries data must not be cut).
            self._timer = now + FIN_WAIT_2_TIMEOUT
        # Second: RST. RFC 5961 §3.2: exact RCV.NXT resets, elsewhere in window -> challenge.
        if flags & RST:
            if off == 0:
                self._guest_reset()
            else:
                self._ack_owed = True
            return
        # Fourth: SYN in a synchronized state -> challenge ACK (RFC 5961 §4.2, RFC 9293).
        # For SYN-RECEIVED RFC 9293 would return to LISTEN; we have no listener (the host
        # socket is connected already), so the guest's reply to the challenge resets us.
        if flags & SYN:
            self._ack_owed = True
            return
        # Fifth: the ACK field. Without ACK, drop.
        if not flags & ACK:
            return
        if st is _SYN_RECEIVED:
            d = (ack - self.snd_una) & MASK
            if d == 0 or d > ((self.snd_max - self.snd_una) & MASK):
                # RFC 9293 §3.10.7.4 SYN-RECEIVED: unacceptable ACK -> <SEQ=SEG.ACK><CTL=RST>
                self._control(Segment(ack, 0, RST, 0, b"", b""))
                return
            self._set_window(seq, ack, window << self.snd_wscale)
            self._acked(ack, now)
            self._established()
            st = self.state
        else:
            if not self._on_ack(seq, ack, window, n, flags, now):
                return
            st = self.state
            if st is _CLOSED:
                return
        # Sixth: URG. Ignored entirely: urgent data is ordinary inline text (SO_OOBINLINE, as
        # slirp4netns sets on host sockets) and the urgent pointer is never trusted.
        # Seventh: segment text; eighth: FIN.
        if probe:
            self._ack_owed = True
            return
        if st in _RECEIVING:
            self._text(seq, off, payload, flags & FIN, wnd, now)
        elif n or flags & FIN:
            # CLOSE-WAIT, CLOSING, LAST-ACK, TIME-WAIT: the guest's FIN came already; ignore
            # the text (RFC 9293 §3.10.7.4 seventh) but acknowledge, and restart TIME-WAIT.
            self._ack_owed = True
            if st is _TIME_WAIT and flags & FIN:
                self._timer = now + TIME_WAIT_TIMEOUT

    def _syn_sent(
        self,
        seq: int,
        ack: int,
        flags: int,
        window: int,
        payload: Buffer,
        now: float,
        options: TcpOptions | None,
    ) -> None:
        """RFC 9293 §3.10.7.3, SYN-SENT."""
        if flags & ACK and ack != self.snd_max:
            # First: an ACK that does not acknowledge our SYN (ack =< ISS or > SND.NXT).
            if not flags & RST:
                self._control(Segment(ack, 0, RST, 0, b"", b""))
            return
        if flags & RST:
            # Second: RST is acceptable only with an acceptable ACK (RFC 5961 §3.2 for
            # SYN-SENT); then "connection reset": the guest refused.
            if flags & ACK:
                self.refused = True
                self._close(abort=True)
            return
        if not flags & SYN:
            return  # fifth: neither SYN nor RST
        # Fourth: SYN.
        self.irs = seq
        self.rcv_nxt = (seq + 1) & MASK
        self.rcv_adv = (self.rcv_nxt + min(self.rcv_buffer, 0xFFFF)) & MASK  # our SYN's window
        self.snd_wnd = self._max_snd_wnd = window  # RFC 7323 §2.2: not scaled on a SYN
        self.snd_wl1 = seq
        self.snd_wl2 = ack
        self._peer_syn(options if options is not None else TcpOptions())
        if flags & ACK:
            self._acked(ack, now)
            self._established()
            self._ack_owed = True
            if len(payload) or flags & FIN:
                # "If there are other controls or text in the segment, then continue
                # processing at the sixth step": text and FIN.
                self._text((seq + 1) & MASK, 0, payload, flags & FIN, self._rcv_wnd(), now)
        else:
            # Simultaneous open: SYN-RECEIVED, resend our SYN as SYN|ACK.
            self.state = _SYN_RECEIVED
            self._syn_owed = True

    def _rcv_wnd(self) -> int:
        wnd = (self.rcv_adv - self.rcv_nxt) & MASK
        return 0 if wnd >= HALF else wnd

    def _established(self) -> None:
        self.state = _ESTABLISHED
        self._syn_owed = False
        if self._fin_queued:
            self.state = _FIN_WAIT_1  # RFC 9293 §3.10.4: a CLOSE queued in SYN-RECEIVED

    def _set_window(self, seq: int, ack: int, wnd: int) -> None:
        self.snd_wnd = wnd
        self.snd_wl1 = seq
        self.snd_wl2 = ack
        if wnd > self._max_snd_wnd:
            self._max_snd_wnd = wnd

    def _on_ack(self, seq: int, ack: int, window: int, n: int, flags: int, now: float) -> bool:
        """RFC 9293 §3.10.7.4 fifth check, synchronized states. False: drop the segment."""
        una = self.snd_una
        d = (ack - una) & MASK
        out = (self.snd_max - una) & MASK
        if d > out:
            if d < HALF:
                self._ack_owed = True  # acknowledges something not yet sent: ACK and drop
                return False
            return True  # older than SND.UNA: a duplicate, ignore the field
        wnd = window << self.snd_wscale
        if d:
            self._acked(ack, now)
        elif out and not n and not flags & (SYN | FIN) and wnd and wnd == self.snd_wnd:
            # RFC 5681 §2 duplicate ACK (never at a zero window: nothing could be resent).
            self._dupacks += 1
            if self._dupacks == DUPACK_THRESHOLD and self._recover is None:
                # RFC 5681 §3.2 fast retransmit; RFC 6582 §3.2 recovery point.
                self._rexmit_owed = True
                self._recover = self.snd_max
                self.rtt.cancel()  # Karn (RFC 6298 §3)
        elif wnd == 0 and (out or self._unsent()):
            # A zero-window probe was answered: never give up (RFC 9293 §3.8.6.1, RFC 1122
            # §4.2.2.17).
            self._retries = 0
        # RFC 9293 §3.10.7.4: update the window if SND.WL1 < SEG.SEQ or (SND.WL1 = SEG.SEQ
        # and SND.WL2 =< SEG.ACK).
        wl1 = self.snd_wl1
        if seq_gt(seq, wl1) or (seq == wl1 and seq_le(self.snd_wl2, ack)):
            if wnd and not self.snd_wnd:
                # The window opened: probing is over; the next send restarts the timer at the
                # plain RTO instead of a backed-off persist interval.
                self.rtt.backoff = 0
                self._rto_deadline = None
            self._set_window(seq, ack, wnd)
        return True

    def _acked(self, ack: int, now: float) -> None:
        """SND.UNA advances to ``ack`` (RFC 9293 §3.10.7.4 fifth check)."""
        base = self._snd_base
        k = (ack - base) & MASK
        if 0 < k < HALF:
            buf = self._sndbuf
            if k > len(buf):
                k = len(buf)  # the rest acknowledges our SYN or FIN, not bytes
            buf.consume(k)  # acknowledged bytes leave the retransmission queue
            self._snd_base = (base + k) & MASK
        self.snd_una = ack
        if seq_lt(self.snd_nxt, ack):
            self.snd_nxt = ack  # after go-back-N the guest may ack beyond snd_nxt
        rto = self.rtt.acked(ack, now)  # a sample if the timed segment is covered (RFC 6298)
        self._retries = 0
        self._dupacks = 0
        # RFC 6298 §5.2 (all acknowledged: stop) and §5.3 (new data acknowledged: restart).
        self._rto_deadline = None if ack == self.snd_max else now + rto
        recover = self._recover
        if recover is not None:
            if seq_ge(ack, recover):
                self._recover = None
            else:
                self._rexmit_owed = True  # RFC 6582 §3.2: partial ACK, resend the next hole
        if self._fin_queued and not self._sndbuf and ack == (self._snd_base + 1) & MASK:
            st = self.state
            # Our FIN is acknowledged (RFC 9293 §3.10.7.4 fifth check, per state).
            if st is _FIN_WAIT_1:
                self.state = _FIN_WAIT_2
                self._timer = now + FIN_WAIT_2_TIMEOUT
            elif st is _CLOSING:
                self._enter_time_wait(now)
            elif st is _LAST_ACK:
                self._close(abort=False)

    def _text(self, seq: int, off: int, payload: Buffer, fin: int, wnd: int, now: float) -> None:
        """Seventh and eighth checks: text into to_host in order, then FIN."""
        n = len(payload)
        start = 0
        if off >= HALF:  # starts before RCV.NXT: drop the part we have (RFC 9293 §3.10.7.4)
            start = (-off) & MASK
            if start > n:
                start = n
            off = 0
        end = n
        # Trim text beyond the window, and a FIN past it; a FIN right at the edge is kept.
        if off + end - start > wnd:
            end = start + max(0, wnd - off)
            fin = 0
        if end > start or fin:
            self._ack_owed = True
        if off == 0:
            if end > start:
                self._dup_owed = 0  # a filled hole: the cumulative ACK replaces duplicates
                data = bytes(payload) if start == 0 and end == n else bytes(payload[start:end])
                to_host = self.to_host
                if len(data) < COALESCE_BELOW and to_host and len(to_host[-1]) < COALESCE_BELOW:
                    to_host[-1] = bytes(to_host[-1]) + data
                else:
                    to_host.append(data)
                self.to_host_bytes += end - start
                self.rcv_nxt = (self.rcv_nxt + end - start) & MASK
                ooo = self._ooo
                if ooo is not None and not fin:
                    self._drain(ooo)
            if fin or self._ooo_fin == self.rcv_nxt:
                self._guest_fin(now)
        else:
            # Out of order (RFC 9293 §3.10.7.4 "held for later processing"): keep it and owe
            # an immediate duplicate ACK (RFC 5681 §4.2), one per arrival.
            if end > start:
                ooo = self._ooo
                if ooo is None:
                    ooo = self._ooo = OutOfOrder()
                ooo.insert(self.rcv_nxt, off, bytes(payload[start:end]))
            if fin and self._ooo_fin is None:
                self._ooo_fin = (seq + n) & MASK
            if self._dup_owed < DUPACK_THRESHOLD:
                self._dup_owed += 1

    def _drain(self, ooo: OutOfOrder) -> None:
        """Move held text that RCV.NXT has reached into to_host; forget the store once empty."""
        to_host = self.to_host
        for d in ooo.drain(self.rcv_nxt, self._ooo_fin):
            to_host.append(d)
            self.to_host_bytes += len(d)
            self.rcv_nxt = (self.rcv_nxt + len(d)) & MASK
        if not ooo.pieces:
            self._ooo = None

    def _sack_option(self) -> bytes:
        """The SACK option for our ACKs while text is held (RFC 2018 §4), if the guest's SYN
        allowed it (§2)."""
        ooo = self._ooo
        if ooo is None or not self._sack_ok:
            return b""
        return _encode_options(sack_blocks=ooo.blocks())

    def _guest_fin(self, now: float) -> None:
        """RFC 9293 §3.10.7.4 eighth check: the guest's FIN, in order."""
        self.rcv_nxt = (self.rcv_nxt + 1) & MASK
        if seq_gt(self.rcv_nxt, self.rcv_adv):
            self.rcv_adv = self.rcv_nxt  # a FIN right at the edge, accepted as Linux does
        self._ack_owed = True
        self.shutdown_host = True  # everything before the FIN is in to_host already
        self._ooo = None
        self._ooo_fin = None
        st = self.state
        if st is _ESTABLISHED:
            self.state = _CLOSE_WAIT
        elif st is _FIN_WAIT_1:
            self.state = _CLOSING  # our FIN is not acknowledged (else we'd be in FIN-WAIT-2)
        elif st is _FIN_WAIT_2:
            self._enter_time_wait(now)

    def _enter_time_wait(self, now: float) -> None:
        self.state = _TIME_WAIT
        self._timer = now + TIME_WAIT_TIMEOUT
        self._rto_deadline = None  # "turn off the other timers"
        self._rexmit_owed = False
        self._force = False

    def _guest_reset(self) -> None:
        """RFC 9293 §3.10.7.4 second check: the guest reset the connection, in any state."""
        self.reset = True
        self._close(abort=True)

    # -- facts from the host -----------------------------------------------------------------
    def host_connected(self, now: float) -> None:
        """The host connect succeeded: answer the guest's SYN with SYN|ACK."""
        if self.connecting:
            self.connecting = False
            self._timer = None
            self._syn_owed = True

    def host_refused(self, now: float) -> None:
        """The host refused (ECONNREFUSED): RST|ACK to the guest, as slirp4netns (contract §3.4)."""
        if self.connecting:
            self._refuse()

    def host_failed(self, now: float) -> None:
        """Any other connect error: closed and silent (the stack sends ICMP unreachable)."""
        if self.connecting:
            self._close(abort=True)

    def _refuse(self) -> None:
        self._control(Segment(0, self.rcv_nxt, RST | ACK, 0, b"", b""))
        self._close(abort=True)

    def host_data(self, data: Buffer, now: float) -> int:
        """Queue host bytes for the guest; returns how many were taken: all of them while
        ``send_space()`` > 0 (so the buffer may pass its mark by one read of the shell, which
        is then asked to pause), none after our FIN or before the connection can carry them."""
        if self.send_space() <= 0 or not data:
            return 0
        self._sndbuf.append(bytes(data))
        return len(data)

    def host_eof(self, now: float) -> None:
        """The host sent FIN: ours follows the queued data (RFC 9293 §3.10.4 CLOSE)."""
        st = self.state
        if self._fin_queued or self.connecting or st is _CLOSED:
            return
        if st is _ESTABLISHED:
            self.state = _FIN_WAIT_1
        elif st is _CLOSE_WAIT:
            self.state = _LAST_ACK
        elif st is not _SYN_SENT and st is not _SYN_RECEIVED:
            return  # our FIN is queued already in every other state
        # SYN-SENT / SYN-RECEIVED: queued until ESTABLISHED (RFC 9293 §3.10.4).
        self._fin_queued = True

    def host_reset(self, now: float) -> None:
        """The host socket was reset or failed: RST|ACK to the guest and CLOSED."""
        st = self.state
        if st is _CLOSED:
            self._close(abort=True)  # after a graceful close: the undelivered bytes are lost
            return
        if self.connecting:
            self._refuse()
            return
        if st is not _SYN_SENT and st is not _TIME_WAIT:
            # RFC 9293 §3.10.5 ABORT: <SEQ=SND.NXT><CTL=RST>; with ACK so a guest still in
            # SYN-SENT accepts it, and at snd_max, where a lossless guest's RCV.NXT is.
            self._control(Segment(self.snd_max, self.rcv_nxt, RST | ACK, 0, b"", b""))
        self._close(abort=True)

    def send_space(self) -> int:
        """How many more host bytes ``host_data`` would take now."""
        if self._fin_queued or self.connecting or self.state not in _QUEUEING:
            return 0
        return max(0, self.snd_buffer - len(self._sndbuf))

    def host_consumed(self, n: int, now: float) -> None:
        """``n`` bytes of to_host reached the host socket: the window may reopen."""
        if n <= 0:
            return
        left = self.to_host_bytes - n
        self.to_host_bytes = left if left > 0 else 0
        if self.state in _RECEIVING:
            cur = self._rcv_wnd()
            avail = self.rcv_buffer - self.to_host_bytes
            # Window update: the right edge may move (RFC 9293 §3.8.6.2.2) and the guest's
            # view is at most half of what we now offer (Linux's tcp_cleanup_rbuf rule), so the
            # update is worth a segment; otherwise the next ACK carries it.
            if avail - cur >= self._sws and avail >= 2 * cur:
                self._ack_owed = True

    # -- output ------------------------------------------------------------------------------
    def _control(self, segment: Segment) -> None:
        if len(self._ctl) < MAX_CONTROL:
            self._ctl.append(segment)

    def _unsent(self) -> bool:
        """Whether data or our FIN waits to be sent beyond SND.NXT."""
        off = (self.snd_nxt - self._snd_base) & MASK
        return off < len(self._sndbuf) or (self._fin_queued and off == len(self._sndbuf))

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

    def flush(self, now: float) -> list[Segment]:
        """Every segment due now, in order; call after a batch, a host event or on_timer."""
        out = self._ctl
        if out:
            self._ctl = []
        else:
            out = []
        st = self.state
        if st is _CLOSED or self.connecting:
            return out
        if st is _SYN_SENT or st is _SYN_RECEIVED:
            if self._syn_owed or (st is _SYN_RECEIVED and (self._ack_owed or self._dup_owed)):
                self._send_syn(out, now)
            self._ack_owed = False
            self._dup_owed = 0
            return out

        field, edge = self._window_field()
        rcv_nxt = self.rcv_nxt
        acked = False
        k = self._dup_owed
        if k:
            # RFC 5681 §4.2: one immediate duplicate ACK per out-of-order arrival (up to the
            # three the guest needs for a fast retransmit), even within one batch.
            dup = Segment(self.snd_nxt, rcv_nxt, ACK, field, self._sack_option(), b"")
            out.extend((dup,) * k)
            self._dup_owed = 0
            acked = True
        if self._rexmit_owed:
            self._rexmit_owed = False
            acked |= self._retransmit_first(out, field, now)

        buf = self._sndbuf
        base = self._snd_base
        nxt = self.snd_nxt
        buflen = len(buf)
        off = (nxt - base) & MASK
        if off < buflen or (self._fin_queued and off == buflen):
            unsent = buflen - off
            room = (self.snd_una + self.snd_wnd - nxt) & MASK
            if room >= HALF:
                room = 0  # the guest shrank its window behind SND.NXT
            n = unsent if unsent < room else room
            probe = False
            if n < unsent:
                # RFC 9293 §3.8.6.2.1 sender SWS avoidance: the window is the limit, so send
                # whole segments, or at least half the largest window offered, or wait.
                smss = self.send_mss
                if n >= smss:
                    n -= n % smss
                elif 2 * n < self._max_snd_wnd:
                    n = 0
                if n == 0 and self._force:
                    n = room if room else 1  # persist timer: what fits, or a 1-byte probe
            fin = self._fin_queued and off + n == buflen and (room > n or self._force)
            if room == 0 and (n or fin):
                probe = True  # beyond a zero window: a probe (RFC 9293 §3.8.6.1)
            if n or fin:
                end = off + n
                maxp = self._max_payload
                pos = off
                if n:
                    while pos < end:
                        m = end - pos
                        if m > maxp:
                            m = maxp
                        flags = ACK
                        if pos + m == end:
                            flags = ACK | PSH | FIN if fin else ACK | PSH
                        out.append(
                            Segment(
                                (base + pos) & MASK,
                                rcv_nxt,
                                flags,
                                field,
                                b"",
                                buf.view(pos, m),
                            )
                        )
                        pos += m
                else:
                    out.append(Segment(nxt, rcv_nxt, ACK | FIN, field, b"", b""))
                new_nxt = (base + end + (1 if fin else 0)) & MASK
                snd_max = self.snd_max
                if probe:
                    # As BSD: a probe does not advance SND.NXT (the byte is resent when the
                    # window opens), only SND.MAX so that an ACK of it is acceptable.
                    if seq_gt(new_nxt, snd_max):
                        self.snd_max = new_nxt
                    new_nxt = nxt
                elif nxt == snd_max:
                    self.rtt.start(new_nxt, now)  # time new data only (Karn, RFC 6298 §3)
                    self.snd_max = new_nxt
                elif seq_gt(new_nxt, snd_max):
                    self.snd_max = new_nxt  # a go-back-N resend ran into new data
                self.snd_nxt = new_nxt
                acked = True
        self._force = False
        if self._delack_bytes and not acked and not self._ack_owed:
            at = self._delack_at
            if at is None:
                self._delack_at = now + self.delayed_ack
            elif now >= at:
                self._ack_owed = True
        if self._ack_owed and not acked:
            sack = self._sack_option() if self._ooo is not None else b""
            out.append(Segment(self.snd_nxt, rcv_nxt, ACK, field, sack, b""))
            acked = True
        self._ack_owed = False
        if acked:
            self._delack_bytes = 0
            self._delack_at = None
        if acked and seq_gt(edge, self.rcv_adv):
            self.rcv_adv = edge
        # RFC 6298 §5.1: run the timer while data is outstanding; RFC 9293 §3.8.6.1: and while
        # data waits for a window (the persist timer, which also overrides SWS avoidance).
        if self.snd_max != self.snd_una or self._unsent():
            if self._rto_deadline is None and st is not _TIME_WAIT:
                self._rto_deadline = now + self.rtt.timeout()
        else:
            self._rto_deadline = None
        return out

    def _send_syn(self, out: list[Segment], now: float) -> None:
        """Our SYN (SYN-SENT) or SYN|ACK (SYN-RECEIVED); its window is never scaled."""
        self._syn_owed = False
        window = min(self.rcv_buffer - self.to_host_bytes, 0xFFFF)
        if self.state is _SYN_SENT:
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

    # -- time --------------------------------------------------------------------------------
    def next_deadline(self) -> float | None:
        """When ``on_timer`` next has work, or None."""
        if self.state is _CLOSED:
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

    def on_timer(self, now: float) -> None:
        """Run the timers due at ``now``; then call ``flush``."""
        st = self.state
        if st is _CLOSED:
            return
        if self._delack_at is not None and now >= self._delack_at:
            self._ack_owed = True  # the held ACK's time is up: the next flush sends it
        t = self._timer
        if t is not None and now >= t:
            self._timer = None
            if self.connecting:
                self.timed_out = True  # CONNECT_TIMEOUT: give up as if refused
                self._refuse()
                return
            if st is _TIME_WAIT:
                self._close(abort=False)  # RFC 9293 §3.10.8 time-wait timeout
                return
            if st is _FIN_WAIT_2:
                # An idle half-closed guest: reset it (as Linux on tcp_fin_timeout).
                self.timed_out = True
                self._control(Segment(self.snd_max, self.rcv_nxt, RST | ACK, 0, b"", b""))
                self._close(abort=True)
                return
        t = self._rto_deadline
        if t is not None and now >= t:
            self._on_rto(now)

    def _on_rto(self, now: float) -> None:
        """RFC 6298 §5.4-5.6: retransmit, back off, restart; give up after too many."""
        st = self.state
        handshake = st is _SYN_SENT or st is _SYN_RECEIVED
        if not handshake and self.snd_max == self.snd_una and not self._unsent():
            self._rto_deadline = None  # nothing left to time: everything was acknowledged
            return
        self._retries += 1
        if self._retries > (SYN_RETRIES if handshake else MAX_RETRANSMITS):
            self.timed_out = True
            if st is not _SYN_SENT:  # RFC 9293 §3.8.3: R2 reached, abort with RST
                self._control(Segment(self.snd_max, self.rcv_nxt, RST | ACK, 0, b"", b""))
            self._close(abort=True)
            return
        self.rtt.back_off()  # RFC 6298 §5.5, and Karn: nothing in flight is timed now (§3)
        if handshake:
            self._syn_owed = True
        else:
            self.snd_nxt = self.snd_una  # go-back-N
            self._force = True  # at least one byte even into a zero window (probe)
            self._recover = None
            self._dupacks = 0
            self._rexmit_owed = False
        self._rto_deadline = now + self.rtt.timeout()

    # -- end -------------------------------------------------------------------------------
    def _close(self, *, abort: bool) -> None:
        self.state = _CLOSED
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
            self.to_host.clear()
            self.to_host_bytes = 0

    @property
    def closed(self) -> bool:
        """Nothing more will happen: no segment owed and every guest byte reached the host."""
        return self.state is _CLOSED and not self._ctl and self.to_host_bytes == 0
