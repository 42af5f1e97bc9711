"""Round-trip time and the retransmission timeout (RTO) of one connection: RFC 6298, sans-IO.

``RttEstimator`` times one segment at a time (``start``), takes a sample when an ACK covers it
(``acked``) and keeps SRTT and RTTVAR (§2). Karn's rule (§3): only data sent once is timed, so a
retransmission that may cover the timed segment forgets it (``cancel``; ``back_off`` does it on
a timeout).
The RTO is max(RTO_MIN, SRTT + 4 RTTVAR), RTO_INITIAL before the first sample; each timeout
doubles it (§5.5) up to RTO_MAX, and any ACK of new data resets the back-off (§5 would wait for
a new sample). The clock is the caller's ``now``: this module reads none.
"""

from __future__ import annotations

from pyslirp4netns.core.seq import HALF, MASK

RTO_INITIAL = 1.0  # RFC 6298 §2.1
RTO_MIN = 0.2  # Linux's floor (TCP_RTO_MIN); RFC 6298 §2.4 says 1 s, too slow for a local tap
RTO_MAX = 60.0  # RFC 6298 §2.5 allows a maximum of at least 60 s
MAX_BACKOFF = 16  # doublings counted; RTO_MAX caps the timeout long before


class RttEstimator:
    """SRTT, RTTVAR and the RTO of one connection, and the one segment being timed."""

    __slots__ = ("srtt", "rttvar", "rto", "backoff", "timed", "timed_at")

    def __init__(self) -> None:
        self.srtt: float | None = None  # None until the first sample
        self.rttvar = 0.0
        self.rto = RTO_INITIAL  # never above RTO_MAX
        self.backoff = 0  # timeouts since the last progress: the RTO is doubled that often
        self.timed: int | None = None  # the sequence number whose ACK ends the measurement
        self.timed_at = 0.0  # when the timed segment was sent

    def start(self, seq: int, now: float) -> None:
        """A segment ending just before ``seq`` is sent for the first time at ``now``: time it,
        unless another measurement is running (one at a time, RFC 6298 §3)."""
        if self.timed is None:
            self.timed = seq
            self.timed_at = now

    def cancel(self) -> None:
        """Karn's rule (RFC 6298 §3): what is in flight was retransmitted, do not time it."""
        self.timed = None

    def acked(self, ack: int, now: float) -> float:
        """New data acknowledged up to ``ack`` at ``now``: take a sample if the timed segment is
        covered and reset the back-off; returns the RTO to restart the timer with (§5.3)."""
        timed = self.timed
        if timed is not None and (ack - timed) & MASK < HALF:  # SEG.ACK >= timed
            self.timed = None
            self.sample(now - self.timed_at)
        self.backoff = 0
        return self.rto

    def sample(self, r: float) -> None:
        """RFC 6298 §2.2-2.3 (alpha 1/8, beta 1/4, K 4; G taken as 0 on a float clock)."""
        if r < 0:
            return
        srtt = self.srtt
        if srtt is None:
            srtt = r
            self.rttvar = r / 2
        else:
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(srtt - r)
            srtt = 0.875 * srtt + 0.125 * r
        self.srtt = srtt
        self.rto = min(RTO_MAX, max(RTO_MIN, srtt + 4 * self.rttvar))  # §2.4, §2.5

    def back_off(self) -> None:
        """The retransmission timer expired: double the RTO (§5.5) and time nothing (§3)."""
        if self.backoff < MAX_BACKOFF:
            self.backoff += 1
        self.timed = None

    def timeout(self) -> float:
        """The current RTO with exponential back-off (RFC 6298 §5.5), at most RTO_MAX."""
        return min(RTO_MAX, self.rto * (1 << self.backoff))
