"""RttEstimator: RFC 6298 SRTT/RTTVAR/RTO, Karn's rule and exponential back-off."""

from __future__ import annotations

import pytest

from pyslirp4netns.core.rtt import RTO_INITIAL, RTO_MAX, RTO_MIN, RttEstimator
from pyslirp4netns.core.seq import MASK


def test_rtt_first_and_later_samples_follow_rfc6298() -> None:
    rtt = RttEstimator()
    assert rtt.srtt is None and rtt.timeout() == RTO_INITIAL
    rtt.sample(0.1)  # §2.2: SRTT = R, RTTVAR = R/2, RTO = SRTT + 4 RTTVAR
    assert (rtt.srtt, rtt.rttvar, rtt.rto) == pytest.approx((0.1, 0.05, 0.3))
    rtt.sample(0.2)  # §2.3: beta 1/4, alpha 1/8
    assert (rtt.srtt, rtt.rttvar) == pytest.approx((0.1125, 0.0625))
    assert rtt.rto == pytest.approx(0.1125 + 4 * 0.0625)
    rtt.sample(-1.0)  # a clock going backwards gives no sample
    assert rtt.srtt == pytest.approx(0.1125)


def test_rtt_rto_is_clamped_to_min_and_max() -> None:
    rtt = RttEstimator()
    rtt.sample(0.001)
    assert rtt.rto == RTO_MIN
    rtt = RttEstimator()
    rtt.sample(100.0)
    assert rtt.rto == RTO_MAX


def test_rtt_times_one_segment_until_an_ack_covers_it() -> None:
    rtt = RttEstimator()
    rtt.start(MASK - 9, 1.0)  # ends just before the wrap
    rtt.start(500, 1.5)  # one measurement at a time: ignored
    assert rtt.acked(MASK - 20, 2.0) == RTO_INITIAL and rtt.srtt is None  # not covered yet
    rtt.acked(5, 1.25)  # past the wrap: covered
    assert rtt.srtt == pytest.approx(0.25) and rtt.timed is None


def test_rtt_karn_retransmission_cancels_the_measurement() -> None:
    rtt = RttEstimator()
    rtt.start(100, 1.0)
    rtt.cancel()
    rtt.acked(100, 3.0)
    assert rtt.srtt is None
    rtt.start(200, 4.0)
    rtt.back_off()  # a timeout also forgets what was timed
    rtt.acked(200, 5.0)
    assert rtt.srtt is None


def test_rtt_back_off_doubles_up_to_rto_max_and_an_ack_resets_it() -> None:
    rtt = RttEstimator()
    rtt.sample(0.1)
    rtt.back_off()
    rtt.back_off()
    assert rtt.timeout() == pytest.approx(4 * 0.3)
    for _ in range(30):
        rtt.back_off()
    assert rtt.timeout() == RTO_MAX
    assert rtt.acked(0, 9.0) == pytest.approx(0.3) and rtt.timeout() == pytest.approx(0.3)
