"""Fragment reassembly and fragmentation (pyslirp4netns.core.fragments): bounded, strict, exact.

Run as a script for the timing figures: ``python tests/unit/test_fragments.py``.
"""

from __future__ import annotations

import random
from collections.abc import Hashable, Iterable, Sequence

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from pyslirp4netns.core.fragments import (
    FRAGMENT_OVERHEAD,
    Reassembler,
    fragment_ipv4,
    fragment_ipv6,
)
from pyslirp4netns.wire import ipv4, ipv6

SRC = bytes([10, 0, 2, 100])
DST = bytes([198, 51, 100, 10])
KEY = (SRC, DST, 0x1234, ipv4.PROTO_UDP)
FIRST = "header of the first fragment"
PAYLOAD = bytes(range(256)) * 16  # 4096 bytes
Fragment = tuple[int, bool, bytes]


def pieces(payload: bytes, size: int) -> list[Fragment]:
    """``payload`` cut into ``size``-byte fragments (the last one shorter), as bytes."""
    return [
        (o, o + size < len(payload), payload[o : o + size]) for o in range(0, len(payload), size)
    ]


def feed(
    r: Reassembler[str], fragments: Iterable[Fragment], key: Hashable = KEY, now: float = 0.0
) -> list[tuple[str | None, bytes] | None]:
    """Every answer of ``add``; the offset-0 fragment carries FIRST."""
    return [
        r.add(key, offset, more, data, now, FIRST if offset == 0 else None)
        for offset, more, data in fragments
    ]


def only_last_completes(answers: Sequence[object], payload: bytes) -> None:
    assert all(answer is None for answer in answers[:-1]), answers
    assert answers[-1] == (FIRST, payload)


def assert_empty(r: Reassembler[str]) -> None:
    assert len(r) == 0
    assert r.held_bytes == 0
    assert r.next_deadline() is None


# -- reassembly, the good cases ----------------------------------------------------------------
def test_in_order_fragments_reassemble() -> None:
    r = Reassembler[str]()
    only_last_completes(feed(r, pieces(PAYLOAD, 1480)), PAYLOAD)
    assert_empty(r)
    assert r.dropped == {}


def test_reverse_order_fragments_reassemble() -> None:
    r = Reassembler[str]()
    only_last_completes(feed(r, reversed(pieces(PAYLOAD, 512))), PAYLOAD)
    assert_empty(r)


@pytest.mark.parametrize("seed", range(20))
def test_shuffled_fragments_reassemble(seed: int) -> None:
    fragments = pieces(PAYLOAD, 8 * (seed + 1))
    random.Random(seed).shuffle(fragments)
    r = Reassembler[str]()
    only_last_completes(feed(r, fragments), PAYLOAD)
    assert_empty(r)


def test_first_comes_from_the_offset_zero_fragment_whenever_it_arrives() -> None:
    r = Reassembler[str]()
    fragments = pieces(PAYLOAD, 1024)
    assert r.add(KEY, 1024, True, fragments[1][2], 0.0, "not me") is None
    assert r.add(KEY, 0, True, fragments[0][2], 0.0, FIRST) is None
    assert r.add(KEY, 3072, False, fragments[3][2], 0.0, "nor me") is None
    assert r.add(KEY, 2048, True, fragments[2][2], 0.0, "nor me") == (FIRST, PAYLOAD)


def test_a_datagram_whose_offset_zero_fragment_had_no_first_is_not_delivered() -> None:
    r = Reassembler[str]()
    fragments = pieces(PAYLOAD, 1024)
    for offset, more, data in fragments:
        assert r.add(KEY, offset, more, data, 0.0) is None
    assert r.add(KEY, 0, False, PAYLOAD, 0.0) is None  # unfragmented, but nothing to hand on
    assert_empty(r)


def test_unfragmented_datagram_is_returned_at_once_and_not_held() -> None:
    r = Reassembler[str]()
    assert r.add(KEY, 0, False, PAYLOAD, 0.0, FIRST) == (FIRST, PAYLOAD)
    assert r.add(KEY, 0, False, b"", 0.0, FIRST) == (FIRST, b"")
    assert_empty(r)


def test_atomic_fragment_leaves_a_datagram_with_its_key_alone() -> None:
    # RFC 6946 §4: an IPv6 atomic fragment is processed in isolation.
    r = Reassembler[str]()
    assert r.add(KEY, 0, True, PAYLOAD[:1024], 0.0, FIRST) is None
    assert r.add(KEY, 0, False, b"atomic", 0.0, "atomic") == ("atomic", b"atomic")
    assert r.add(KEY, 1024, False, PAYLOAD[1024:], 0.0) == (FIRST, PAYLOAD)
    assert r.dropped == {}


def test_payload_views_are_copied() -> None:
    r = Reassembler[str]()
    buffer = bytearray(PAYLOAD[:2048])
    assert r.add(KEY, 0, True, memoryview(buffer), 0.0, FIRST) is None
    buffer[:] = bytes(2048)  # the shell reuses its read buffer for the next frame
    assert r.add(KEY, 2048, False, memoryview(bytearray(PAYLOAD[2048:])), 0.0) == (FIRST, PAYLOAD)


def test_keys_do_not_mix() -> None:
    r = Reassembler[str]()
    other_src = (bytes([10, 0, 2, 101]), DST, 0x1234, ipv4.PROTO_UDP)
    other_protocol = (SRC, DST, 0x1234, ipv4.PROTO_ICMP)
    other_id = (SRC, DST, 0x1235, ipv4.PROTO_UDP)
    keys = [KEY, other_src, other_protocol, other_id]
    halves = [(k, bytes([n]) * 2048) for n, k in enumerate(keys)]
    for key, data in halves:
        assert r.add(key, 0, True, data[:1024], 0.0, FIRST) is None
    for key, data in reversed(halves):
        assert r.add(key, 1024, False, data[1024:], 0.0) == (FIRST, data)
    assert_empty(r)
    assert r.dropped == {}


# -- duplicates --------------------------------------------------------------------------------
@pytest.mark.parametrize("which", [0, 1, 3])  # first, middle, last
def test_exact_duplicate_is_ignored_and_the_datagram_kept(which: int) -> None:
    # RFC 5722 erratum 3089: duplicates are dropped, not treated as overlaps.
    fragments = pieces(PAYLOAD, 1024)
    r = Reassembler[str]()
    others = [f for n, f in enumerate(fragments) if n != which]
    answers = feed(r, [fragments[which], fragments[which], *others])
    only_last_completes(answers, PAYLOAD)
    assert r.dropped == {"duplicate": 1}
    assert_empty(r)


def test_duplicate_with_other_bytes_is_an_overlap() -> None:
    r = Reassembler[str]()
    assert r.add(KEY, 0, True, PAYLOAD[:1024], 0.0, FIRST) is None
    assert r.add(KEY, 0, True, bytes(1024), 0.0, FIRST) is None
    assert r.dropped == {"overlap": 1}


def test_duplicate_turning_a_middle_fragment_into_the_last_is_refused() -> None:
    r = Reassembler[str]()
    assert r.add(KEY, 1024, True, PAYLOAD[1024:2048], 0.0) is None
    assert r.add(KEY, 1024, False, PAYLOAD[1024:2048], 0.0) is None
    assert r.dropped == {"bad last": 1}


# -- overlaps: RFC 5722 / RFC 8200 §4.5, applied to IPv4 too -----------------------------------
# The datagram holds [1024, 2048) (not last); then the second fragment arrives.
OVERLAPS = {
    "partial at the start": (512, True, 1024),  # [512, 1536)
    "partial at the end": (1536, True, 1024),  # [1536, 2560)
    "contained, same start": (1024, True, 512),  # [1024, 1536)
    "contained, inside": (1280, True, 256),  # [1280, 1536)
    "containing": (512, True, 2048),  # [512, 2560)
    "one byte over, last": (2040, False, 100),  # [2040, 2140)
    "teardrop: inside, last": (1536, False, 100),  # ends inside held data
    "containing, last": (512, False, 2048),  # [512, 2560)
}


@pytest.mark.parametrize("shape", OVERLAPS)
@pytest.mark.parametrize("held_first", [True, False])
def test_any_overlap_discards_the_datagram_until_it_times_out(shape: str, held_first: bool) -> None:
    offset, more, length = OVERLAPS[shape]
    held = (1024, True, PAYLOAD[1024:2048])
    second = (offset, more, PAYLOAD[offset : offset + length])
    r = Reassembler[str](timeout=30.0)
    answers = feed(r, [held, second] if held_first else [second, held], now=1.0)
    assert answers == [None, None]
    assert sum(r.dropped.values()) == 1
    assert set(r.dropped) <= {"overlap", "bad last"}
    assert r.held_bytes == 0
    # Every further fragment of it is ignored, even ones that would complete it.
    assert feed(r, pieces(PAYLOAD, 1024), now=2.0) == [None] * 4
    assert r.dropped["after discard"] == 4
    assert r.next_deadline() == 31.0
    assert r.expire(30.9) == []
    assert r.expire(31.0) == []  # silently discarded: no time exceeded for it
    assert "timeout" not in r.dropped
    assert_empty(r)
    # After the timeout the identification may be reused.
    only_last_completes(feed(r, pieces(PAYLOAD, 1024), now=32.0), PAYLOAD)


def test_overlap_with_the_neighbour_after_is_seen() -> None:
    r = Reassembler[str]()
    assert feed(r, [(2048, True, PAYLOAD[2048:3072]), (1024, True, PAYLOAD[1024:2056])]) == [
        None,
        None,
    ]
    assert r.dropped == {"overlap": 1}


def test_adjacent_fragments_do_not_overlap() -> None:
    r = Reassembler[str]()
    fragments = pieces(PAYLOAD, 8)
    random.Random(1).shuffle(fragments)
    only_last_completes(feed(r, fragments), PAYLOAD)
    assert r.dropped == {}


# -- malformed fragments ------------------------------------------------------------------------
def test_fragment_ending_past_max_size_discards_the_datagram() -> None:
    r = Reassembler[str]()
    assert r.add(KEY, 0, True, bytes(1480), 0.0, FIRST) is None
    assert r.add(KEY, 65528, False, bytes(8), 0.0) is None  # ends at 65536 > 65535
    assert r.dropped == {"too big": 1}
    assert r.held_bytes == 0
    assert r.add(KEY, 1480, False, bytes(8), 0.0) is None
    assert r.dropped["after discard"] == 1


def test_max_size_is_configurable_and_inclusive() -> None:
    r = Reassembler[str](max_size=2048)
    assert r.add(KEY, 1024, False, PAYLOAD[1024:2048], 0.0) is None
    assert r.add(KEY, 0, True, PAYLOAD[:1024], 0.0, FIRST) == (FIRST, PAYLOAD[:2048])
    assert r.add(KEY, 0, False, PAYLOAD[:2049], 0.0, FIRST) is None
    assert r.dropped == {"too big": 1}


def test_middle_fragment_not_a_multiple_of_8_discards_the_datagram() -> None:
    r = Reassembler[str]()
    assert r.add(KEY, 0, True, PAYLOAD[:1024], 0.0, FIRST) is None
    assert r.add(KEY, 1024, True, PAYLOAD[1024:2045], 0.0) is None
    assert r.dropped == {"unaligned": 1}
    assert r.held_bytes == 0


def test_last_fragment_may_have_any_length() -> None:
    r = Reassembler[str]()
    only_last_completes(feed(r, pieces(PAYLOAD[:2047], 1024)), PAYLOAD[:2047])


@pytest.mark.parametrize(
    ("offset", "reason"), [(-8, "bad offset"), (1020, "bad offset"), (1024, "empty")]
)
def test_bad_offset_or_empty_fragment_discards_the_datagram(offset: int, reason: str) -> None:
    r = Reassembler[str]()
    assert r.add(KEY, 0, True, PAYLOAD[:1024], 0.0, FIRST) is None
    assert r.add(KEY, offset, True, b"" if reason == "empty" else bytes(8), 0.0) is None
    assert r.dropped == {reason: 1}


def test_two_last_fragments_disagreeing_discard_the_datagram() -> None:
    r = Reassembler[str]()
    assert r.add(KEY, 2048, False, PAYLOAD[2048:3000], 0.0) is None
    assert r.add(KEY, 3072, False, PAYLOAD[3072:], 0.0) is None
    assert r.dropped == {"bad last": 1}


def test_fragment_past_the_known_end_discards_the_datagram() -> None:
    r = Reassembler[str]()
    assert r.add(KEY, 1024, False, PAYLOAD[1024:2048], 0.0) is None
    assert r.add(KEY, 2048, True, PAYLOAD[2048:3072], 0.0) is None
    assert r.dropped == {"bad last": 1}


def test_last_fragment_ending_before_held_data_discards_the_datagram() -> None:
    r = Reassembler[str]()
    assert r.add(KEY, 3072, True, PAYLOAD[3072:], 0.0) is None
    assert r.add(KEY, 1024, False, PAYLOAD[1024:2048], 0.0) is None
    assert r.dropped == {"bad last": 1}


# -- limits -------------------------------------------------------------------------------------
def test_count_limit_evicts_the_oldest_datagram() -> None:
    r = Reassembler[str](max_datagrams=2)
    keys = [(SRC, DST, n, ipv4.PROTO_UDP) for n in range(3)]
    for n, key in enumerate(keys):
        assert r.add(key, 0, True, PAYLOAD[:1024], float(n), FIRST) is None
        assert len(r) <= 2
    assert r.dropped == {"limit": 1}
    assert r.next_deadline() == 31.0  # the oldest left started at 1.0
    for key in keys[1:]:
        assert r.add(key, 1024, False, PAYLOAD[1024:], 3.0) == (FIRST, PAYLOAD)
    assert r.add(keys[0], 1024, False, PAYLOAD[1024:], 3.0) is None  # its start is gone
    assert len(r) == 1


def test_byte_limit_evicts_the_oldest_and_is_never_exceeded() -> None:
    cost = 1024 + FRAGMENT_OVERHEAD
    r = Reassembler[str](max_bytes=5 * cost)
    keys = [(SRC, DST, n, ipv4.PROTO_UDP) for n in range(3)]
    # Two fragments each of keys 0 and 1 (4 * cost), then two of key 2: key 0 must go.
    for key in keys:
        for offset in (0, 1024):
            r.add(key, offset, True, PAYLOAD[offset : offset + 1024], 0.0, FIRST)
            assert r.held_bytes <= r.max_bytes
    assert r.dropped == {"limit": 1}
    assert r.held_bytes == 4 * cost
    assert r.add(keys[0], 2048, False, PAYLOAD[2048:3072], 0.0) is None  # a new one; it fits
    assert r.held_bytes == 5 * cost
    # keys[1] is now the oldest holding data: it makes room for keys[2] to complete.
    assert r.add(keys[2], 2048, False, PAYLOAD[2048:3072], 0.0) == (FIRST, PAYLOAD[:3072])
    assert r.dropped == {"limit": 2}
    assert r.held_bytes == cost


def test_datagram_that_is_itself_the_oldest_is_evicted_for_its_own_fragment() -> None:
    cost = 1024 + FRAGMENT_OVERHEAD
    r = Reassembler[str](max_bytes=2 * cost)
    assert r.add(KEY, 0, True, PAYLOAD[:1024], 0.0, FIRST) is None
    assert r.add(KEY, 1024, True, PAYLOAD[1024:2048], 0.0) is None
    assert r.add(KEY, 2048, True, PAYLOAD[2048:3072], 0.0) is None
    assert r.dropped == {"limit": 1}
    assert_empty(r)


def test_fragment_bigger_than_max_bytes_is_refused() -> None:
    r = Reassembler[str](max_bytes=1000)
    assert r.add(KEY, 0, True, PAYLOAD[:1024], 0.0, FIRST) is None
    assert r.dropped == {"limit": 1}
    assert_empty(r)


def test_tiny_fragments_are_charged_their_overhead() -> None:
    r = Reassembler[str](max_bytes=100 * (8 + FRAGMENT_OVERHEAD))
    for offset in range(0, 8 * 150, 8):
        r.add(KEY, offset, True, bytes(8), 0.0)
        assert r.held_bytes <= r.max_bytes
    assert r.dropped == {"limit": 1}  # the datagram itself was the oldest


# -- time ---------------------------------------------------------------------------------------
def test_expiry_after_the_first_fragment_returns_it_for_time_exceeded() -> None:
    r = Reassembler[str](timeout=30.0)
    assert r.next_deadline() is None
    assert r.add(KEY, 1024, True, PAYLOAD[1024:2048], 10.0) is None
    assert r.add(KEY, 0, True, PAYLOAD[:1024], 20.0, FIRST) is None
    assert r.next_deadline() == 40.0  # from the first arrival; later fragments don't extend it
    assert r.expire(39.99) == []
    assert len(r) == 1
    assert r.expire(40.0) == [FIRST]
    assert r.dropped == {"timeout": 1}
    assert_empty(r)


def test_expiry_without_the_first_fragment_returns_nothing() -> None:
    r = Reassembler[str](timeout=5.0)
    assert r.add(KEY, 1024, True, PAYLOAD[1024:2048], 1.0) is None
    assert r.add(KEY, 3072, False, PAYLOAD[3072:], 2.0) is None
    assert r.expire(100.0) == []
    assert r.dropped == {"timeout": 1}
    assert_empty(r)


def test_expiry_goes_oldest_first_and_stops_at_the_first_alive() -> None:
    r = Reassembler[str](timeout=10.0)
    keys = [(SRC, DST, n, ipv4.PROTO_UDP) for n in range(3)]
    for n, key in enumerate(keys):
        r.add(key, 0, True, PAYLOAD[:1024], float(n), f"first {n}")
    assert r.expire(11.0) == ["first 0", "first 1"]
    assert r.next_deadline() == 12.0
    assert r.held_bytes == 1024 + FRAGMENT_OVERHEAD


# -- fragmentation ------------------------------------------------------------------------------
def test_fragment_ipv4_leaves_a_fitting_payload_whole() -> None:
    assert [(o, m, bytes(c)) for o, m, c in fragment_ipv4(PAYLOAD[:1480], 1500)] == [
        (0, False, PAYLOAD[:1480])
    ]


def test_fragment_ipv4_of_the_largest_udp_datagram_at_mtu_1500() -> None:
    payload = random.Random(0).randbytes(65515)  # 65535 - 20: the largest IPv4 payload
    fragments = fragment_ipv4(payload, 1500)
    assert len(fragments) == 45
    assert [o for o, _, _ in fragments] == list(range(0, 65515, 1480))
    assert [m for _, m, _ in fragments] == [True] * 44 + [False]
    assert all(len(c) == 1480 for _, _, c in fragments[:-1])
    assert b"".join(fragments_bytes(fragments)) == payload


@pytest.mark.parametrize(
    ("mtu", "header_length", "room"),
    [(68, 60, 8), (576, 24, 552), (1500, 20, 1480), (1499, 20, 1472)],
)
def test_fragment_ipv4_rounds_the_room_down_to_8(mtu: int, header_length: int, room: int) -> None:
    fragments = fragment_ipv4(PAYLOAD, mtu, header_length)
    assert {len(c) for _, _, c in fragments[:-1]} == {room}
    assert all(header_length + len(c) <= mtu for _, _, c in fragments)


def test_fragment_ipv4_refuses_what_cannot_be_sent() -> None:
    with pytest.raises(ValueError):
        fragment_ipv4(bytes(65516), 1500)  # 20 + 65516 > 65535
    with pytest.raises(ValueError):
        fragment_ipv4(PAYLOAD, 67, 60)  # 7 bytes of room


def test_fragment_ipv6_counts_the_fragment_header() -> None:
    assert len(fragment_ipv6(PAYLOAD[:1460], 1500)) == 1
    fragments = fragment_ipv6(PAYLOAD, 1280)  # 1280 - 40 - 8 = 1232, a multiple of 8
    assert {len(c) for _, _, c in fragments[:-1]} == {1232}
    assert b"".join(fragments_bytes(fragments)) == PAYLOAD
    with pytest.raises(ValueError):
        fragment_ipv6(bytes(65536), 1280)


def fragments_bytes(fragments: Iterable[tuple[int, bool, memoryview]]) -> list[bytes]:
    return [bytes(chunk) for _, _, chunk in fragments]


# -- with the wire decoders, as the stack will call it ------------------------------------------
def test_ipv4_packets_through_wire_decode() -> None:
    payload = random.Random(4).randbytes(20000)
    packets = [
        ipv4.encode(
            SRC,
            DST,
            ipv4.PROTO_UDP,
            len(chunk),
            identification=7,
            more_fragments=more,
            fragment_offset=offset,
        )
        + chunk
        for offset, more, chunk in fragment_ipv4(payload, 1500)
    ]
    random.Random(5).shuffle(packets)
    r = Reassembler[ipv4.Ipv4Repr]()
    answers = []
    for packet in packets:
        ip = ipv4.decode(packet)
        key = (ip.src, ip.dst, ip.identification, ip.protocol)
        data = memoryview(packet)[ip.payload_offset : ip.payload_offset + ip.payload_length]
        answers.append(r.add(key, ip.fragment_offset, ip.more_fragments, data, 0.0, ip))
    done = answers[-1]
    assert done is not None and all(a is None for a in answers[:-1])
    first, whole = done
    assert first is not None and first.fragment_offset == 0 and first.more_fragments
    assert whole == payload


def test_ipv6_packets_through_walk_extensions() -> None:
    src6, dst6 = bytes(15) + b"\x01", bytes(15) + b"\x02"
    payload = random.Random(6).randbytes(9000)
    packets = []
    for offset, more, chunk in fragment_ipv6(payload, 1280):
        header = ipv6.FRAGMENT.struct.pack(ipv6.NEXT_UDP, 0, offset | more, 0xDEADBEEF)
        fixed = ipv6.encode(src6, dst6, ipv6.NEXT_FRAGMENT, len(header) + len(chunk))
        packets.append(fixed + header + bytes(chunk))
    packets.reverse()
    r = Reassembler[ipv6.Ipv6Upper]()
    answers = []
    for packet in packets:
        ip = ipv6.decode(packet)
        upper = ipv6.walk_extensions(packet, ip)
        assert upper.fragment is not None
        key = (ip.src, ip.dst, upper.fragment.identification)
        data = memoryview(packet)[upper.offset : upper.offset + upper.length]
        answers.append(
            r.add(key, upper.fragment.offset, upper.fragment.more_fragments, data, 0.0, upper)
        )
    done = answers[-1]
    assert done is not None and all(a is None for a in answers[:-1])
    first, whole = done
    assert first is not None and first.protocol == ipv6.NEXT_UDP
    assert whole == payload


# -- properties ---------------------------------------------------------------------------------
@settings(max_examples=300, deadline=None)
@given(
    size=st.integers(1, 65507) | st.integers(30000, 65507),  # the first alone favours small
    mtu=st.integers(68, 9000) | st.integers(68, 1500),
    version=st.sampled_from([4, 6]),
    duplicates=st.integers(0, 20),
    seed=st.integers(0, 2**32),  # a Random of its own: drawing 64 KiB from Hypothesis overruns
)
def test_fragmented_then_shuffled_reassembles_byte_identical(
    size: int, mtu: int, version: int, duplicates: int, seed: int
) -> None:
    rnd = random.Random(seed)
    payload = rnd.randbytes(size)
    event(f"IPv{version}")
    if version == 4:
        fragments = fragment_ipv4(payload, mtu)
    else:
        fragments = fragment_ipv6(payload, max(mtu, 1280))
    event("fragments: " + ("1" if len(fragments) == 1 else "<45" if len(fragments) < 45 else "45+"))
    order = fragments + rnd.choices(fragments, k=duplicates)
    rnd.shuffle(order)
    r = Reassembler[str]()
    seen: set[int] = set()
    for offset, more, chunk in order:
        answer = r.add(KEY, offset, more, chunk, 0.0, FIRST if offset == 0 else None)
        seen.add(offset)
        if len(seen) < len(fragments):
            assert answer is None
            continue
        assert answer == (FIRST, payload)
        break
    assert_empty(r)
    assert set(r.dropped) <= {"duplicate"}


PATTERN = bytes(n % 251 for n in range(80000))  # fragment data is PATTERN at its offset
Op = tuple[int, int, bool, int, float, bool]  # key, offset, more, length, time step, expire?

garbage_op = st.tuples(
    st.integers(0, 2),  # key
    st.one_of(
        st.integers(0, 1024).map(lambda n: n * 8),
        st.integers(0, 8300).map(lambda n: n * 8),
        st.integers(-16, 70000),
    ),
    st.booleans(),  # more
    st.one_of(st.integers(0, 250).map(lambda n: n * 8), st.integers(0, 3000)),
    st.floats(0.0, 4.0),
    st.booleans(),
)


@st.composite
def valid_burst(draw: st.DrawFn) -> list[Op]:
    """All the fragments of one datagram, shuffled: without these garbage rarely completes."""
    key = draw(st.integers(0, 1))  # two keys of three: bursts meet and overlap more often
    size = draw(st.integers(1, 6000))
    room = draw(st.integers(8, 200)) * 8
    burst = [
        (key, o, o + room < size, min(room, size - o), 0.0, False) for o in range(0, size, room)
    ]
    return draw(st.permutations(burst))


@st.composite
def garbage(draw: st.DrawFn) -> list[Op]:
    """Garbage fragments and whole datagrams, either in runs or all mixed up."""
    runs = draw(st.lists(st.one_of(garbage_op.map(lambda op: [op]), valid_burst()), max_size=60))
    ops = [op for run in runs for op in run]
    return draw(st.permutations(ops)) if draw(st.booleans()) else ops


@settings(max_examples=300, deadline=None)
@given(
    ops=garbage(),
    max_size=st.sampled_from([65535, 4000]),
    max_bytes=st.integers(0, 20000) | st.just(2 * 1024 * 1024),
)
def test_garbage_never_raises_and_stays_in_bounds(
    ops: list[Op], max_size: int, max_bytes: int
) -> None:
    r = Reassembler[int](max_datagrams=3, max_bytes=max_bytes, timeout=10.0, max_size=max_size)
    now = 0.0
    completed = 0
    for key, offset, more, length, step, expire in ops:
        now += step
        start = max(offset, 0)
        data = PATTERN[start : start + length]
        if offset < 0:
            data = bytes(length)
        answer = r.add(key, offset, more, data, now, key)
        if answer is not None:
            first, whole = answer
            assert len(whole) <= max_size
            # Whatever order, the result is exactly the pattern: no overlap ever rewrote it.
            assert whole == (data if offset == 0 and not more else PATTERN[: len(whole)])
            assert first == key
            completed += not (offset == 0 and not more)
        if expire:
            r.expire(now)
        check_invariants(r, now)
    for reason in r.dropped:
        event(reason)
    event(f"reassembled: {min(completed, 3)}")


@settings(max_examples=100, deadline=None)
@given(ops=st.lists(garbage_op, max_size=200), seed=st.integers(0, 2**32))
def test_garbage_on_other_keys_leaves_a_datagram_alone(ops: list[Op], seed: int) -> None:
    rnd = random.Random(seed)
    payload = rnd.randbytes(rnd.randint(2000, 65507))
    fragments = fragment_ipv4(payload, rnd.randint(576, 9000))
    rnd.shuffle(fragments)
    # Room for every garbage key: limits are per instance, a flood may evict (tested above).
    r = Reassembler[int](max_datagrams=4, max_bytes=64 * 1024 * 1024, timeout=1e9)
    answers = []
    for n, (key, offset, more, length, _, _) in enumerate(ops):
        r.add(key, offset, more, PATTERN[max(offset, 0) :][:length], 0.0, key)
        if n < len(fragments):
            victim_offset, victim_more, chunk = fragments[n]
            answers.append(r.add("victim", victim_offset, victim_more, chunk, 0.0, 99))
    for victim_offset, victim_more, chunk in fragments[len(answers) :]:
        answers.append(r.add("victim", victim_offset, victim_more, chunk, 0.0, 99))
    assert answers[-1] == (99, payload)
    assert all(answer is None for answer in answers[:-1])


def check_invariants(r: Reassembler[int], now: float) -> None:
    assert 0 <= r.held_bytes <= r.max_bytes
    assert len(r) <= r.max_datagrams
    held = 0
    deadline = r.next_deadline()
    assert deadline is None or deadline <= now + r.timeout
    for datagram in r._datagrams.values():
        ends = [o + len(c) for o, c in zip(datagram.offsets, datagram.chunks, strict=True)]
        assert all(end <= start for end, start in zip(ends, datagram.offsets[1:], strict=False))
        assert all(end <= r.max_size for end in ends)
        if datagram.total >= 0 and not datagram.dead:
            assert ends and ends[-1] == datagram.total
        assert datagram.received == sum(map(len, datagram.chunks))
        assert datagram.held == datagram.received + FRAGMENT_OVERHEAD * len(datagram.chunks)
        assert not datagram.dead or datagram.held == 0
        held += datagram.held
    assert held == r.held_bytes


# -- timing (not a test: run this file as a script) ---------------------------------------------
def _bench() -> None:
    import timeit

    payload = random.Random(0).randbytes(65507)
    fragments = [(o, m, bytes(c)) for o, m, c in fragment_ipv4(payload, 1500)]
    middle = fragments[:-1]  # 44 fragments of 1480 bytes that never complete

    def add_middle() -> None:
        r = Reassembler[str]()
        add = r.add
        for offset, more, chunk in middle:
            add(KEY, offset, more, chunk, 0.0)

    def whole() -> None:
        r = Reassembler[str]()
        add = r.add
        for offset, more, chunk in fragments:
            add(KEY, offset, more, chunk, 0.0)

    number = 2000
    per_add = min(timeit.repeat(add_middle, number=number, repeat=5)) / number / len(middle)
    per_datagram = min(timeit.repeat(whole, number=number, repeat=5)) / number
    print(f"add() of a 1480-byte fragment: {per_add * 1e6:.2f} µs (best of 5)")
    print(
        f"65507-byte datagram at MTU 1500 ({len(fragments)} fragments): "
        f"{per_datagram * 1e6:.1f} µs (best of 5)"
    )


if __name__ == "__main__":
    _bench()
