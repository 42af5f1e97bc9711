"""SendBuffer: the host's chunks until the guest acknowledges them; views instead of copies."""

from __future__ import annotations

from pyslirp4netns.core.sendbuffer import SendBuffer


def filled(*chunks: bytes) -> SendBuffer:
    buf = SendBuffer()
    for chunk in chunks:
        buf.append(chunk)
    return buf


def test_sendbuffer_view_inside_one_chunk_is_a_view_of_it() -> None:
    chunk = b"abcdef"
    view = filled(chunk).view(1, 3)
    assert isinstance(view, memoryview) and view.obj is chunk and bytes(view) == b"bcd"


def test_sendbuffer_view_across_chunks_is_joined() -> None:
    buf = filled(b"abc", b"def", b"ghi")
    assert buf.view(2, 5) == b"cdefg"
    assert buf.view(7, 10) == b"hi"  # short at the end
    assert buf.view(9, 4) == b""


def test_sendbuffer_consume_drops_from_the_front_across_chunks() -> None:
    buf = filled(b"abc", b"def")
    buf.consume(4)
    assert len(buf) == 2 and bytes(buf.view(0, 10)) == b"ef"
    buf.consume(10)  # more than it holds: empty, and ready for new chunks
    assert len(buf) == 0
    buf.append(b"xyz")
    assert len(buf) == 3 and bytes(buf.view(0, 3)) == b"xyz"


def test_sendbuffer_ignores_empty_chunks() -> None:
    buf = filled(b"", b"ab", b"")
    buf.consume(1)
    assert len(buf) == 1 and bytes(buf.view(0, 5)) == b"b"
