"""The send side's retransmission queue: host bytes the guest has not yet acknowledged.

``SendBuffer`` keeps the immutable ``bytes`` chunks the host socket gave us, in order, and
consumes them from the front as the guest's ACKs arrive. Its first byte is the oldest one not
acknowledged (SND.UNA, RFC 9293 §3.3.1, once our SYN is); the connection maps sequence numbers
to offsets into it.

Why not one bytearray: deleting acknowledged bytes from its front and appending new ones makes
CPython copy the whole live buffer (megabytes) whenever it grows, and a memoryview of it would
pin it and forbid the resize. Chunks never change, so a segment's payload can be a zero-copy
view of one chunk (a join only when it straddles two), valid for as long as anyone holds it.
"""

from __future__ import annotations

from collections import deque


class SendBuffer:
    """A queue of immutable chunks that reads like one flat byte string from its front."""

    __slots__ = ("_chunks", "_head", "_size")

    def __init__(self) -> None:
        self._chunks: deque[bytes] = deque()
        self._head = 0  # bytes of _chunks[0] already consumed
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def append(self, data: bytes) -> None:
        """Queue ``data`` at the end (kept as is, never copied)."""
        if data:
            self._chunks.append(data)
            self._size += len(data)

    def consume(self, k: int) -> None:
        """Drop ``k`` bytes from the front (they were acknowledged)."""
        k = min(k, self._size)
        self._size -= k
        chunks = self._chunks
        k += self._head
        while chunks and k >= len(chunks[0]):
            k -= len(chunks.popleft())
        self._head = k if chunks else 0

    def view(self, off: int, n: int) -> bytes | memoryview:
        """``n`` bytes starting ``off`` bytes past the front (fewer if the buffer ends)."""
        pos = off + self._head
        pieces: list[memoryview] = []
        for chunk in self._chunks:
            size = len(chunk)
            if pos >= size:
                pos -= size
                continue
            take = min(n, size - pos)
            if not pieces and take == n:
                return memoryview(chunk)[pos : pos + n]  # the common case: no copy
            pieces.append(memoryview(chunk)[pos : pos + take])
            n -= take
            pos = 0
            if n == 0:
                break
        return b"".join(pieces)
