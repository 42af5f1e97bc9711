"""OutOfOrder: guest text held beyond a hole, the SACK blocks reporting it, and the drain."""

from __future__ import annotations

from pyslirp4netns.core.sack import OOO_MAX_SEGMENTS, OutOfOrder
from pyslirp4netns.core.seq import MASK

NXT = 1000  # RCV.NXT in these tests


def test_sack_blocks_merge_neighbours_and_put_the_latest_arrival_first() -> None:
    ooo = OutOfOrder()
    ooo.insert(NXT, 10, b"aaaaa")  # [1010, 1015)
    ooo.insert(NXT, 30, b"bbbbb")  # [1030, 1035)
    ooo.insert(NXT, 15, b"ccc")  # [1015, 1018): joins the first block
    assert ooo.blocks() == ((1010, 1018), (1030, 1035))  # RFC 2018 §4: latest first
    ooo.insert(NXT, 30, b"bb")  # a duplicate of held text still counts as the latest arrival
    assert ooo.blocks() == ((1030, 1035), (1010, 1018))
    assert ooo.size == 13


def test_sack_blocks_are_at_most_four() -> None:
    ooo = OutOfOrder()
    for k in range(6):
        ooo.insert(NXT, 10 + 20 * k, b"x")
    blocks = ooo.blocks()
    assert len(blocks) == 4 and blocks[0] == (1110, 1111)


def test_sack_insert_keeps_held_bytes_and_fills_only_the_gaps() -> None:
    ooo = OutOfOrder()
    ooo.insert(NXT, 5, b"BB")  # [1005, 1007)
    ooo.insert(NXT, 3, b"aaaaaaa")  # [1003, 1010): overlaps it
    assert b"".join(d for _, d in ooo.pieces) == b"aaBBaaa"
    assert [s for s, _ in ooo.pieces] == [1003, 1005, 1007] and ooo.size == 7


def test_sack_drain_takes_what_rcv_nxt_reached_and_stops_at_a_hole() -> None:
    ooo = OutOfOrder()
    ooo.insert(NXT, 4, b"efgh")  # [1004, 1008)
    ooo.insert(NXT, 20, b"zz")  # after a hole
    assert ooo.drain(NXT, None) == []  # the hole at RCV.NXT is not filled yet
    assert ooo.drain(NXT + 6, None) == [b"gh"]  # RCV.NXT moved into the piece: the rest
    assert ooo.pieces == [(NXT + 20, b"zz")] and ooo.size == 2
    assert ooo.drain(NXT + 30, None) == []  # wholly behind RCV.NXT: dropped
    assert ooo.pieces == [] and ooo.size == 0


def test_sack_drain_stops_at_the_guests_fin() -> None:
    ooo = OutOfOrder()
    ooo.insert(NXT, 2, b"cd")
    ooo.insert(NXT, 4, b"efgh")
    assert ooo.drain(NXT + 2, NXT + 6) == [b"cd", b"ef"]  # nothing after the FIN is text


def test_sack_works_across_the_sequence_wrap() -> None:
    ooo = OutOfOrder()
    nxt = MASK - 2
    ooo.insert(nxt, 2, b"abcd")  # [MASK, 3) wraps
    assert ooo.blocks() == ((MASK, 3),)
    assert ooo.drain(MASK, None) == [b"abcd"]


def test_sack_is_bounded_in_pieces() -> None:
    ooo = OutOfOrder()
    for k in range(OOO_MAX_SEGMENTS):
        ooo.insert(NXT, 2 + 2 * k, b"x")
    ooo.insert(NXT, 10_000, b"new")  # one piece too many: dropped
    assert len(ooo.pieces) == OOO_MAX_SEGMENTS and ooo.size == OOO_MAX_SEGMENTS
    ooo.insert(NXT, 2, b"x")  # held text again: still fits
    assert len(ooo.pieces) == OOO_MAX_SEGMENTS
