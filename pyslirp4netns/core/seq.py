"""Sequence-number arithmetic: RFC 9293 §3.4, modulo 2**32.

Two numbers compare by the signed distance between them, so ``a < b`` holds when ``b`` lies
less than half the space (2**31) ahead of ``a``. Exactly half apart, neither is before the other.
The hottest callers inline these expressions instead of calling the functions.
"""

from __future__ import annotations

MASK = 0xFFFFFFFF  # sequence numbers are 32 bits
HALF = 0x80000000  # 2**31: distances at least this far ahead count as behind


def seq_add(a: int, n: int) -> int:
    """``a + n`` in sequence space."""
    return (a + n) & MASK


def seq_diff(a: int, b: int) -> int:
    """``a - b`` as a signed distance in sequence space."""
    return ((a - b + HALF) & MASK) - HALF


def seq_lt(a: int, b: int) -> bool:
    """``a`` comes before ``b``."""
    return 0 < (b - a) & MASK < HALF


def seq_le(a: int, b: int) -> bool:
    """``a`` comes before ``b`` or equals it."""
    return (b - a) & MASK < HALF


def seq_gt(a: int, b: int) -> bool:
    """``a`` comes after ``b``."""
    return 0 < (a - b) & MASK < HALF


def seq_ge(a: int, b: int) -> bool:
    """``a`` comes after ``b`` or equals it."""
    return (a - b) & MASK < HALF
