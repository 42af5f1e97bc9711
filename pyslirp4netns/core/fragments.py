"""IP fragment reassembly (IPv4 and IPv6) and fragmentation, sans-IO.

Theory of operation
-------------------
The stack decodes an IP header (``wire.ipv4.decode`` / ``wire.ipv6.walk_extensions``), sees a
fragment and calls ``Reassembler.add(key, offset, more, payload, now, first)``. The answer is
``None`` until the last missing byte arrives, then ``(first, payload)``: ``first`` is whatever
the caller passed with the offset-0 fragment (its decoded header, say), ``payload`` the whole
reassembled transport payload as one ``bytes`` joined once.

Reassembly is the classic attack surface (teardrop, overlapping fragments that rewrite a
checked header, memory exhaustion: RFC 1858, RFC 3128, libslirp's CVE history), so everything
here is bounded and strict:

- memory: at most ``max_datagrams`` datagrams in progress and ``max_bytes`` held. Held bytes
  count each fragment's data plus ``FRAGMENT_OVERHEAD``, so a flood of 8-byte fragments can't
  hide 10x its size in object headers. When a new fragment would break a limit the oldest
  datagram is evicted first (counted as ``"limit"``).
- size: no fragment may end past ``max_size``; a datagram is at most ``max_size`` bytes, so
  one datagram's data is bounded whatever arrives.
- time: a datagram is abandoned ``timeout`` seconds after its first fragment arrived, however
  many more arrive (the timer is never pushed back). ``next_deadline()``/``expire(now)`` are
  how the shell's single timer drives this.
- overlap: any overlap discards the whole datagram and every later fragment of it until its
  deadline (RFC 8200 §4.5, RFC 5722 §4); the same rule is applied to IPv4, as Linux does.

Exact duplicates (same offset, same bytes, nothing else changed: RFC 5722 erratum 3089) are
ignored and the datagram is kept: a duplicated frame on the link must not kill a datagram.
A "duplicate" with different bytes is an overlap.

Bookkeeping per datagram: the fragments sorted by offset in two parallel lists (offsets, data),
found with ``bisect`` (in-order arrival appends), and the count of bytes received. Since nothing
overlaps and nothing lies past the end, the datagram is complete exactly when the bytes
received equal the end given by the last fragment: an O(1) check per fragment, no re-sort.

The table is a dict in creation order; with one ``timeout`` for all, that is also deadline
order, so the oldest datagram and the next deadline are its first entry. ``now`` must not go
backwards (a monotonic clock).

``dropped`` counts, per reason, datagrams discarded ("overlap", "too big", "unaligned",
"bad offset", "empty", "bad last", "limit", "timeout") and single fragments ignored
("duplicate", "after discard": a fragment of a datagram already discarded).
"""

from __future__ import annotations

from bisect import bisect_right
from collections import Counter
from collections.abc import Hashable
from typing import Generic, TypeVar

T = TypeVar("T")

# What CPython spends on one held fragment besides its data: the bytes object header (33),
# its offset as an int (28) and two list slots (16), rounded up. Charged so that max_bytes
# bounds real memory even when the fragments are tiny (RFC 1858 §3: tiny fragments).
FRAGMENT_OVERHEAD = 80

# RFC 791 §3.1: Total Length is 16 bits; RFC 8200 §3: so is Payload Length.
IPV4_MAX_TOTAL_LENGTH = 0xFFFF
IPV6_MAX_PAYLOAD_LENGTH = 0xFFFF
IPV6_FRAGMENT_HEADER_SIZE = 8  # RFC 8200 §4.5


class _Datagram(Generic[T]):
    """One datagram being reassembled (or, when ``dead``, a tombstone until its deadline)."""

    __slots__ = ("deadline", "offsets", "chunks", "received", "total", "first", "held", "dead")

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.offsets: list[int] = []  # sorted; fragments never overlap
        self.chunks: list[bytes] = []  # data of the fragment at the same index
        self.received = 0  # sum of len(chunks)
        self.total = -1  # the datagram's length once its last fragment arrived, else -1
        self.first: T | None = None  # given with the offset-0 fragment
        self.held = 0  # bytes charged to max_bytes
        self.dead = False  # discarded: ignore its fragments until the deadline


class Reassembler(Generic[T]):
    """Bounded reassembly of IPv4 or IPv6 fragments; one instance per IP version."""

    def __init__(
        self,
        *,
        max_datagrams: int = 64,
        max_bytes: int = 2 * 1024 * 1024,
        timeout: float = 30.0,
        max_size: int = 65535,
    ) -> None:
        if max_datagrams < 1 or max_bytes < 0 or max_size < 0 or timeout < 0:
            raise ValueError("reassembly limits must be positive")
        self.max_datagrams = max_datagrams
        self.max_bytes = max_bytes
        # RFC 791 §3.2 leaves the timer to the implementation, RFC 8200 §4.5 says 60 s; 30 s is
        # Linux's ipfrag_time, what a guest's peers see from a real host.
        self.timeout = timeout
        self.max_size = max_size
        self.dropped: Counter[str] = Counter()
        self.held_bytes = 0
        self._datagrams: dict[Hashable, _Datagram[T]] = {}

    def __len__(self) -> int:
        """Datagrams in progress, tombstones of discarded ones included."""
        return len(self._datagrams)

    def add(
        self,
        key: Hashable,
        offset: int,
        more: bool,
        payload: bytes | bytearray | memoryview,
        now: float,
        first: T | None = None,
    ) -> tuple[T, bytes] | None:
        """Take one fragment; the reassembled ``(first, payload)`` when it completes a datagram.

        ``key``: (src, dst, identification, protocol) for IPv4 (RFC 791 §3.2), (src, dst,
        identification) for IPv6 (RFC 8200 §4.5). ``offset`` in bytes. ``payload`` may be a
        view of a reused buffer: it is copied. ``first`` is kept from the offset-0 fragment;
        a datagram whose offset-0 fragment came without one is never delivered.
        Call ``expire(now)`` once ``next_deadline()`` has passed: ``add`` never expires.
        """
        data = bytes(payload)
        length = len(data)
        end = offset + length
        if offset == 0 and not more:
            # Not fragmented at all, or an IPv6 atomic fragment: processed in isolation, never
            # merged with fragments that share its identification (RFC 6946 §4).
            if length > self.max_size:
                self.dropped["too big"] += 1
                return None
            return None if first is None else (first, data)

        datagrams = self._datagrams
        datagram = datagrams.get(key)
        if datagram is None:
            if len(datagrams) >= self.max_datagrams:
                self._evict(next(iter(datagrams)))
            datagram = datagrams[key] = _Datagram(now + self.timeout)
        elif datagram.dead:
            # RFC 8200 §4.5 / RFC 5722 §4: fragments of a discarded datagram, "including those
            # not yet received", are discarded too.
            self.dropped["after discard"] += 1
            return None

        offsets = datagram.offsets
        chunks = datagram.chunks
        index = bisect_right(offsets, offset)  # where it goes; in-order arrival appends
        reason = self._refuse(datagram, offset, length, more)
        if reason is None:
            # Does it touch a neighbour? (RFC 5722 §4)
            if index:
                before = index - 1
                if offsets[before] == offset:
                    if chunks[before] != data:
                        reason = "overlap"
                    elif more or datagram.total >= 0:
                        # RFC 5722 erratum 3089: an exact duplicate is dropped, the datagram
                        # kept.
                        self.dropped["duplicate"] += 1
                        return None
                    else:
                        reason = "bad last"  # the same bytes, now claiming to end the datagram
                elif offsets[before] + len(chunks[before]) > offset:
                    reason = "overlap"
            if reason is None and index < len(offsets) and offsets[index] < end:
                reason = "overlap"
        if reason is not None:
            # RFC 8200 §4.5 / RFC 5722 §4: the whole datagram goes; applied to IPv4 as well
            # (RFC 1858 §4, RFC 3128: overlaps rewrite headers a filter already checked).
            self._discard(datagram, reason)
            return None

        cost = length + FRAGMENT_OVERHEAD
        if self.held_bytes + cost > self.max_bytes and not self._make_room(cost, datagram):
            return None
        offsets.insert(index, offset)
        chunks.insert(index, data)
        datagram.received += length
        datagram.held += cost
        self.held_bytes += cost
        if not more:
            datagram.total = end
        if offset == 0:
            datagram.first = first
        if datagram.received != datagram.total:
            return None
        # Complete: nothing overlaps and nothing lies past ``total``, so ``total`` bytes
        # received cover it all (RFC 791 §3.2: "all fragments received").
        del datagrams[key]
        self.held_bytes -= datagram.held
        if datagram.first is None:
            return None
        return (datagram.first, b"".join(chunks))

    def next_deadline(self) -> float | None:
        """When the oldest datagram (or tombstone) times out; None when nothing is held."""
        for datagram in self._datagrams.values():
            return datagram.deadline
        return None

    def expire(self, now: float) -> list[T]:
        """Drop datagrams past their deadline; the ``first`` values of those that had one.

        The stack answers those with ICMP Time Exceeded, code 1 (RFC 792; RFC 8200 §4.5: only
        if the first fragment arrived). Discarded datagrams were dropped silently and stay so.
        """
        expired: list[T] = []
        datagrams = self._datagrams
        while datagrams:
            key, datagram = next(iter(datagrams.items()))
            if datagram.deadline > now:
                break
            del datagrams[key]
            if datagram.dead:
                continue
            self.held_bytes -= datagram.held
            self.dropped["timeout"] += 1
            if datagram.first is not None:
                expired.append(datagram.first)
        return expired

    # -- internals ---------------------------------------------------------------------------
    def _refuse(self, datagram: _Datagram[T], offset: int, length: int, more: bool) -> str | None:
        """Why a fragment can't belong to ``datagram`` whatever else it holds; None if it can."""
        end = offset + length
        if offset < 0 or offset & 7:
            # RFC 791 §3.1 / RFC 8200 §4.5: offsets count 8-octet units. Only a caller bug gets
            # here, but a bad datagram must not be half-built.
            return "bad offset"
        if length == 0:
            return "empty"  # carries nothing and only muddles the end; Linux drops these too
        if more and length & 7:
            # RFC 791 §3.2 / RFC 8200 §4.5: every fragment but the last carries a multiple of
            # 8 octets, else the next offset can't be expressed.
            return "unaligned"
        if end > self.max_size:
            # RFC 8200 §4.5: a fragment making the reassembled packet exceed 65,535 octets is
            # discarded; RFC 791 §3.1's Total Length bounds IPv4 the same way.
            return "too big"
        total = datagram.total
        if total >= 0:
            # RFC 791 §3.2 / RFC 8200 §4.5: the last fragment fixes the length. A non-last
            # fragment reaching it, or a second last fragment disagreeing, is corrupt.
            if (end >= total) if more else (end != total):
                return "bad last"
        elif not more and datagram.offsets:
            if datagram.offsets[-1] + len(datagram.chunks[-1]) > end:
                return "bad last"  # a last fragment ending before data already held
        return None

    def _discard(self, datagram: _Datagram[T], reason: str) -> None:
        """Free a datagram's data and keep its tombstone until the deadline (RFC 5722 §4)."""
        self.dropped[reason] += 1
        self.held_bytes -= datagram.held
        datagram.held = 0
        datagram.offsets = []
        datagram.chunks = []
        datagram.received = 0
        datagram.first = None
        datagram.dead = True

    def _evict(self, key: Hashable) -> None:
        """Remove a datagram for room; a tombstone goes quietly (it was counted already)."""
        datagram = self._datagrams.pop(key)
        if not datagram.dead:
            self.held_bytes -= datagram.held
            self.dropped["limit"] += 1

    def _make_room(self, cost: int, current: _Datagram[T]) -> bool:
        """Evict the oldest datagrams holding data until ``cost`` more bytes fit.

        False when ``current`` itself had to go (it was the oldest) or can never fit.
        """
        if cost > self.max_bytes:
            self._evict(next(k for k, d in self._datagrams.items() if d is current))
            return False
        while self.held_bytes + cost > self.max_bytes:
            # Over the limit means some live datagram holds data: this finds one.
            key, victim = next((k, d) for k, d in self._datagrams.items() if d.held)
            self._evict(key)
            if victim is current:
                return False
        return True


def _split(view: memoryview, room: int) -> list[tuple[int, bool, memoryview]]:
    size = view.nbytes
    return [
        (start, start + room < size, view[start : start + room]) for start in range(0, size, room)
    ]


def fragment_ipv4(
    payload: bytes | bytearray | memoryview, mtu: int, header_length: int = 20
) -> list[tuple[int, bool, memoryview]]:
    """``(offset_in_bytes, more_fragments, chunk)`` for each IPv4 fragment of ``payload``.

    One tuple ``(0, False, payload)`` when it fits in ``mtu`` with a header of
    ``header_length``. Raises ValueError if no IPv4 datagram can carry it or ``mtu`` leaves
    less than 8 bytes of data.
    """
    view = memoryview(payload).cast("B")
    size = view.nbytes
    if header_length + size > IPV4_MAX_TOTAL_LENGTH:
        raise ValueError("payload too big for one IPv4 datagram")  # RFC 791 §3.1 Total Length
    if header_length + size <= mtu:
        return [(0, False, view)]
    # RFC 791 §3.2: every fragment but the last carries a multiple of 8 octets.
    room = (mtu - header_length) & ~7
    if room < 8:
        raise ValueError("mtu too small to fragment into")
    return _split(view, room)


def fragment_ipv6(
    payload: bytes | bytearray | memoryview, mtu: int, header_length: int = 40
) -> list[tuple[int, bool, memoryview]]:
    """``(offset_in_bytes, more_fragments, chunk)`` for each IPv6 fragment of ``payload``.

    ``payload`` is the fragmentable part; ``header_length`` the fixed header plus the
    unfragmentable extension headers; each fragment also carries an 8-byte fragment header
    (RFC 8200 §4.5). One tuple ``(0, False, payload)`` when no fragment header is needed. The
    caller keeps the first fragment holding the whole header chain (RFC 8200 §4.5, RFC 7112).
    """
    view = memoryview(payload).cast("B")
    size = view.nbytes
    if header_length - 40 + size > IPV6_MAX_PAYLOAD_LENGTH:
        raise ValueError("payload too big for one IPv6 packet")  # RFC 8200 §3 Payload Length
    if header_length + size <= mtu:
        return [(0, False, view)]
    # RFC 8200 §4.5: fragments but the last are multiples of 8 octets long.
    room = (mtu - header_length - IPV6_FRAGMENT_HEADER_SIZE) & ~7
    if room < 8:
        raise ValueError("mtu too small to fragment into")
    return _split(view, room)
