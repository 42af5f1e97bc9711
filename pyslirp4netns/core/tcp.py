"""One guest TCP connection as an RFC 9293 state machine, sans-IO.

Theory of operation
-------------------
We are the *remote end* the guest talks to. A ``TcpConnection`` knows sequence numbers, flags,
windows, payload bytes and ``now`` (seconds, passed in); it knows nothing of frames, addresses,
sockets or clocks. ``core/streams.py`` turns frames into ``on_segment`` calls, ``Segment``
values back into frames, the shell's facts into ``host_*`` calls, and what the connection
exposes (``to_host``, ``shutdown_host``, ``reset``, ``timed_out``) into requests for the shell
(write these bytes, shut down, close, pause or resume reading). Every state rule is in this
file; what a connection remembers, and what follows from it without a decision (the window we
offer, segments cut from the send buffer, the next deadline), is ``tcb.Tcb``, its base class.
Beside them: ``seq`` (arithmetic modulo 2**32), ``sendbuffer``, ``sack`` and ``rtt`` (RFC 6298).

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

Receiving (guest -> host): text in order goes to ``to_host``, out of order to the SACK store;
``host_consumed(n)`` may reopen the window; the guest's FIN sets ``shutdown_host`` once every
byte before it is in ``to_host``. Sending (host -> guest): ``host_data`` queues the host's
chunks (while ``send_space()`` > 0) and ``flush`` sends from SND.NXT up to the guest's window.
A timeout resends go-back-N from SND.UNA (after ``MAX_RETRANSMITS`` we reset); three duplicate
ACKs resend one segment, then NewReno recovery. No congestion window: the only path is a local
tap and the guest's receive window paces us already. The guest's SACK blocks are not read.

Options. MSS always; window scale (RFC 7323) and SACK-permitted (RFC 2018) only if the guest's
SYN carried them (our active SYN offers both); neither side's shift applies to SYN segments.
No timestamps (RFC 7323 §3): 12 bytes on every segment and per-segment option parsing, for RTT
samples we take anyway and for PAWS, which a local link does not need (the 2**32 sequence
space does not wrap within a segment's life there).

Closing (principle 6). The guest's FIN -> CLOSE-WAIT and ``shutdown_host``; ``host_eof`` -> our
FIN after the queued data; a half-closed connection keeps carrying data the other way (in
CLOSE-WAIT, keep-alive probes after a minute of guest silence find a guest that has forgotten
the connection: ``_keepalive``). A guest RST closes with ``reset`` (the shell closes its
socket with SO_LINGER 0); ``host_reset`` sends RST|ACK. After ``closed`` the stack forgets the
flow; segments for unknown flows get ``reset_for``.

Every input in every state is handled: nothing is raised for any combination of state, flags,
sequence and acknowledgment numbers, window or payload; anything raised is a bug.
"""

from __future__ import annotations

from pyslirp4netns.core.sack import OutOfOrder
from pyslirp4netns.core.seq import HALF, MASK, seq_ge, seq_gt, seq_le, seq_lt
from pyslirp4netns.core.tcb import (
    CLOSE_WAIT,
    CLOSE_WAIT_IDLE,
    CLOSED,
    CLOSING,
    CONNECT_TIMEOUT,
    DEFAULT_MSS,
    DUPACK_THRESHOLD,
    ESTABLISHED,
    FIN_WAIT_1,
    FIN_WAIT_2,
    FIN_WAIT_2_TIMEOUT,
    KEEPALIVE_INTERVAL,
    KEEPALIVE_PROBES,
    LAST_ACK,
    MAX_RETRANSMITS,
    MIN_PEER_MSS,
    SYN_RECEIVED,
    SYN_RETRIES,
    SYN_SENT,
    TIME_WAIT,
    TIME_WAIT_TIMEOUT,
    Segment,
    Tcb,
    TcpState,
    shift_for,
)
from pyslirp4netns.wire.codec import Buffer
from pyslirp4netns.wire.tcp import ACK, FIN, MAX_WINDOW_SCALE, RST, SYN, TcpOptions
from pyslirp4netns.wire.tcp import encode_options as _encode_options

# RFC 9293 §3.3.2, Figure 5: every state change this module makes is one of these edges (one
# input may take several in a row, e.g. SYN-RECEIVED -> ESTABLISHED -> CLOSE-WAIT on ACK+FIN).
# Any state may also go to CLOSED (RST, abort, timeout), which the figure leaves implicit.
TRANSITIONS: dict[TcpState, frozenset[TcpState]] = {
    SYN_SENT: frozenset({SYN_RECEIVED, ESTABLISHED, CLOSED}),
    SYN_RECEIVED: frozenset({ESTABLISHED, FIN_WAIT_1, CLOSED}),
    ESTABLISHED: frozenset({FIN_WAIT_1, CLOSE_WAIT, CLOSED}),
    FIN_WAIT_1: frozenset({FIN_WAIT_2, CLOSING, TIME_WAIT, CLOSED}),
    FIN_WAIT_2: frozenset({TIME_WAIT, CLOSED}),
    CLOSING: frozenset({TIME_WAIT, CLOSED}),
    TIME_WAIT: frozenset({CLOSED}),
    CLOSE_WAIT: frozenset({LAST_ACK, CLOSED}),
    LAST_ACK: frozenset({CLOSED}),
    CLOSED: frozenset(),
}

_RECEIVING = frozenset({ESTABLISHED, FIN_WAIT_1, FIN_WAIT_2})  # guest text still accepted
_CTL = SYN | RST | FIN | ACK


class TcpConnection(Tcb):
    """One guest TCP flow; build it with ``accept`` (guest SYN) or ``connect`` (our SYN)."""

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
        c.state = SYN_RECEIVED
        c.connecting = True
        c.irs = irs & MASK
        c.rcv_nxt = c.rcv_adv = (irs + 1) & MASK
        # RFC 7323 §2.2: offer window scaling only if the guest's SYN did.
        c.rcv_wscale = shift_for(c.rcv_buffer) if options.window_scale is not None else 0
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
        c.state = SYN_SENT
        c.rcv_wscale = shift_for(c.rcv_buffer)  # offered; dropped if the guest does not agree
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
            self.state is ESTABLISHED
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
                self._take_text(payload)
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
        if st is CLOSED:
            return  # forgotten soon: the stack answers unknown flows (reset_for)
        if st is SYN_SENT:
            self._syn_sent(seq, ack, flags, window, payload, now, options)
            return
        if self.connecting:
            # ARCHITECTURE principle 5: nothing goes to the guest before the host answers.
            # Retransmitted SYNs are dropped; an exact RST (RFC 5961 §3.2) abandons the connect.
            if flags & RST and seq == self.rcv_nxt:
                self._guest_reset()
            return
        if st is TIME_WAIT and flags & (SYN | ACK | RST) == SYN and seq_gt(seq, self.rcv_nxt):
            # RFC 1122 §4.2.2.13 / RFC 6191: a new SYN may reopen from TIME-WAIT: end this
            # incarnation now; the stack sees ``reopen`` and builds a new connection from it.
            self.reopen = True
            self._close(abort=False)
            return
        if st is SYN_RECEIVED and flags & (SYN | ACK | RST) == SYN and seq == self.irs:
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
            # The table says off < wnd; as BSD and Linux, the right edge itself is accepted too:
            # a guest that filled our window sends its ACKs from SND.NXT = RCV.NXT+RCV.WND while
            # a hole is open, and they must not lose their ACK and window fields.
            ok = off <= wnd
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
                    if st is TIME_WAIT and flags & FIN:
                        self._timer = now + TIME_WAIT_TIMEOUT  # restart the 2 MSL wait
                return
        if st is FIN_WAIT_2:
            # The guest is alive: the idle timer restarts (as BSD, and libslirp's idle rule: a
            # half-close that still carries data must not be cut).
            self._timer = now + FIN_WAIT_2_TIMEOUT
        elif st is CLOSE_WAIT:
            self._timer = now + CLOSE_WAIT_IDLE  # the guest still has it: no probe due
            self._probes = 0
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
        if st is SYN_RECEIVED:
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
            if st is CLOSED:
                return
        # Sixth: URG. Ignored entirely: urgent data is ordinary inline text (SO_OOBINLINE, as
        # slirp4netns sets on host sockets) and the urgent pointer is never trusted.
        # Seventh: segment text; eighth: FIN.
        if probe:
            self._ack_owed = True
            return
        if st is ESTABLISHED or st in _RECEIVING:
            self._text(seq, off, payload, flags & FIN, wnd, now)
        elif n or flags & FIN:
            # CLOSE-WAIT, CLOSING, LAST-ACK, TIME-WAIT: the guest's FIN came already; ignore
            # the text (RFC 9293 §3.10.7.4 seventh) but acknowledge, and restart TIME-WAIT.
            self._ack_owed = True
            if st is TIME_WAIT and flags & FIN:
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
            self.state = SYN_RECEIVED
            self._syn_owed = True

    def _established(self) -> None:
        self.state = ESTABLISHED
        self._syn_owed = False
        if self._fin_queued:
            self.state = FIN_WAIT_1  # RFC 9293 §3.10.4: a CLOSE queued in SYN-RECEIVED

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
            if st is FIN_WAIT_1:
                self.state = FIN_WAIT_2
                self._timer = now + FIN_WAIT_2_TIMEOUT
            elif st is CLOSING:
                self._enter_time_wait(now)
            elif st is LAST_ACK:
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
                self._take_text(payload if start == 0 and end == n else payload[start:end])
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
        if st is ESTABLISHED:
            self.state = CLOSE_WAIT
            self._timer = now + CLOSE_WAIT_IDLE  # keep-alive probes if the guest falls silent
            self._probes = 0
        elif st is FIN_WAIT_1:
            self.state = CLOSING  # our FIN is not acknowledged (else we'd be in FIN-WAIT-2)
        elif st is FIN_WAIT_2:
            self._enter_time_wait(now)

    def _enter_time_wait(self, now: float) -> None:
        self.state = TIME_WAIT
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
        if self._fin_queued or self.connecting or st is CLOSED:
            return
        if st is ESTABLISHED:
            self.state = FIN_WAIT_1
        elif st is CLOSE_WAIT:
            self.state = LAST_ACK
            self._timer = None  # our FIN is timed by the retransmission timer from here
        elif st is not SYN_SENT and st is not SYN_RECEIVED:
            return  # our FIN is queued already in every other state
        # SYN-SENT / SYN-RECEIVED: queued until ESTABLISHED (RFC 9293 §3.10.4).
        self._fin_queued = True

    def host_reset(self, now: float) -> None:
        """The host socket was reset or failed: RST|ACK to the guest and CLOSED."""
        st = self.state
        if st is CLOSED:
            self._close(abort=True)  # after a graceful close: the undelivered bytes are lost
            return
        if self.connecting:
            self._refuse()
            return
        if st is not SYN_SENT and st is not TIME_WAIT:
            # RFC 9293 §3.10.5 ABORT: <SEQ=SND.NXT><CTL=RST>; with ACK so a guest still in
            # SYN-SENT accepts it, and at snd_max, where a lossless guest's RCV.NXT is.
            self._control(Segment(self.snd_max, self.rcv_nxt, RST | ACK, 0, b"", b""))
        self._close(abort=True)

    def host_consumed(self, n: int, now: float) -> bool:
        """``n`` bytes of to_host reached the host socket: the window may reopen. True when
        that makes a window update due (``flush`` then sends it)."""
        if n <= 0:
            return False
        left = self.to_host_bytes - n
        self.to_host_bytes = left if left > 0 else 0
        st = self.state
        if st is ESTABLISHED or st in _RECEIVING:  # the identity test spares an Enum hash
            cur = self._rcv_wnd()
            avail = self.rcv_buffer - self.to_host_bytes
            # Window update: the right edge may move (RFC 9293 §3.8.6.2.2) and the guest's
            # view is at most half of what we now offer (Linux's tcp_cleanup_rbuf rule), so the
            # update is worth a segment; otherwise the next ACK carries it.
            if avail - cur >= self._sws and avail >= 2 * cur:
                self._ack_owed = True
                return True
        return False

    # -- output ------------------------------------------------------------------------------

    def flush(self, now: float) -> list[Segment]:
        """Every segment due now, in order; call after a batch, a host event or on_timer."""
        out = self._ctl
        if out:
            self._ctl = []
        else:
            out = []
        st = self.state
        if st is CLOSED or self.connecting:
            return out
        if st is SYN_SENT or st is SYN_RECEIVED:
            if self._syn_owed or (st is SYN_RECEIVED and (self._ack_owed or self._dup_owed)):
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
                self._segments(out, off, end, fin, field)
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
            if self._rto_deadline is None and st is not TIME_WAIT:
                self._rto_deadline = now + self.rtt.timeout()
        else:
            self._rto_deadline = None
        return out

    # -- time --------------------------------------------------------------------------------

    def on_timer(self, now: float) -> None:
        """Run the timers due at ``now``; then call ``flush``."""
        st = self.state
        if st is CLOSED:
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
            if st is TIME_WAIT:
                self._close(abort=False)  # RFC 9293 §3.10.8 time-wait timeout
                return
            if st is FIN_WAIT_2:
                # An idle half-closed guest: reset it (as Linux on tcp_fin_timeout).
                self.timed_out = True
                self._control(Segment(self.snd_max, self.rcv_nxt, RST | ACK, 0, b"", b""))
                self._close(abort=True)
                return
            if st is CLOSE_WAIT and self._keepalive(now):
                return
        t = self._rto_deadline
        if t is not None and now >= t:
            self._on_rto(now)

    def _keepalive(self, now: float) -> bool:
        """CLOSE-WAIT's idle timer (tcb.CLOSE_WAIT_IDLE): probe the silent guest, or give up
        after KEEPALIVE_PROBES unanswered probes. True when the connection is gone."""
        if self.snd_max != self.snd_una or self._unsent():
            self._timer = now + CLOSE_WAIT_IDLE  # data in flight: the RTO watches the guest
            return False
        if self._probes >= KEEPALIVE_PROBES:
            self.timed_out = True
            self._control(Segment(self.snd_max, self.rcv_nxt, RST | ACK, 0, b"", b""))
            self._close(abort=True)
            return True
        # RFC 1122 §4.2.3.6: SEG.SEQ = SND.NXT - 1, no data; any live peer answers with an
        # ACK (an unacceptable segment), a peer without the connection with RST.
        field, _ = self._window_field()
        probe = Segment((self.snd_max - 1) & MASK, self.rcv_nxt, ACK, field, b"", b"")
        self._control(probe)
        self._probes += 1
        self._timer = now + KEEPALIVE_INTERVAL
        return False

    def _on_rto(self, now: float) -> None:
        """RFC 6298 §5.4-5.6: retransmit, back off, restart; give up after too many."""
        st = self.state
        handshake = st is SYN_SENT or st is SYN_RECEIVED
        if not handshake and self.snd_max == self.snd_una and not self._unsent():
            self._rto_deadline = None  # nothing left to time: everything was acknowledged
            return
        self._retries += 1
        if self._retries > (SYN_RETRIES if handshake else MAX_RETRANSMITS):
            self.timed_out = True
            if st is not SYN_SENT:  # RFC 9293 §3.8.3: R2 reached, abort with RST
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
