"""Sequence-number arithmetic modulo 2**32 (RFC 9293 §3.4)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pyslirp4netns.core.seq import HALF, MASK, seq_add, seq_diff, seq_ge, seq_gt, seq_le, seq_lt

seqs = st.integers(0, MASK) | st.sampled_from([0, 1, HALF - 1, HALF, HALF + 1, MASK - 1, MASK])


def test_seq_add_and_diff_wrap_around() -> None:
    assert seq_add(MASK, 1) == 0 and seq_add(MASK - 1, 5) == 3
    assert seq_diff(2, MASK) == 3 and seq_diff(MASK, 2) == -3
    assert seq_lt(MASK - 10, 5) and seq_gt(5, MASK - 10) and seq_le(MASK, 2)


def test_seq_exactly_half_apart_is_neither_before_nor_after() -> None:
    for a, b in ((0, HALF), (HALF, 0), (MASK, HALF - 1)):
        assert not (seq_lt(a, b) or seq_le(a, b) or seq_gt(a, b) or seq_ge(a, b))


@given(a=seqs, n=st.integers(-(HALF - 1), HALF - 1))
def test_seq_diff_undoes_seq_add(a: int, n: int) -> None:
    assert seq_diff(seq_add(a, n), a) == n


@given(a=seqs, b=seqs)
def test_seq_comparisons_follow_the_signed_distance(a: int, b: int) -> None:
    d = seq_diff(a, b)
    assert -HALF <= d < HALF
    assert seq_lt(a, b) == (seq_diff(b, a) > 0)
    assert seq_le(a, b) == (seq_diff(b, a) >= 0)
    assert seq_gt(a, b) == (d > 0)
    assert seq_ge(a, b) == (d >= 0)
    assert seq_lt(a, b) == seq_gt(b, a) and seq_le(a, b) == seq_ge(b, a)
