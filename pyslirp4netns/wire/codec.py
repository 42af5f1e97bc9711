"""The struct codecs of the wire formats, their derivation from construct, and the checksum.

Every header in ``wire/`` is declared once as a construct ``Struct`` (``wire/declarations.py``):
that declaration is the specification. Parsing with construct costs ~9 µs per header,
``struct.unpack_from`` ~0.4 µs, so each module carries a ``Codec``: a ``struct.Struct`` plus a
``NamedTuple`` with the declaration's field names, written out as what ``derive()`` makes of the
declaration. The daemon never imports construct (about 7 MiB and 15 ms); the tests derive every
codec again and check that the two agree, and that they parse and build byte for byte alike.
"""

from __future__ import annotations

import struct
from collections import namedtuple
from typing import Any

Buffer = bytes | bytearray | memoryview


class WireError(ValueError):
    """A frame is malformed; the only exception a decoder raises."""


# Format characters of fixed-size fields; anything else is rejected at import time.
_FORMAT_CHARS = frozenset("BbHhIiLlQq")


class Codec:
    """A ``struct.Struct`` and ``NamedTuple`` that stand for one construct ``Struct``."""

    __slots__ = ("name", "declaration", "struct", "tuple", "size")

    def __init__(self, name: str, fmt: str, fields: str, declaration: Any) -> None:
        self.name = name
        # The construct Struct, or its name in wire/declarations.py (loaded only when asked).
        self.declaration = declaration
        self.struct = struct.Struct(fmt)
        self.tuple: Any = namedtuple(name, fields)  # type: ignore[misc]  # names known at runtime
        self.size: int = self.struct.size

    @property
    def spec(self) -> Any:
        """The construct declaration this codec was derived from (imports construct)."""
        if isinstance(self.declaration, str):
            from pyslirp4netns.wire import declarations

            return getattr(declarations, self.declaration)
        return self.declaration

    def unpack_from(self, buf: Buffer, offset: int = 0) -> Any:
        """Fields at ``offset`` as the named tuple; WireError if ``buf`` is too short."""
        if offset < 0 or len(buf) - offset < self.size:
            raise WireError(f"{self.name}: truncated")
        return self.tuple._make(self.struct.unpack_from(buf, offset))

    def values_from(self, buf: Buffer, offset: int = 0) -> tuple[Any, ...]:
        """Fields at ``offset`` as a plain tuple (hot path); WireError if ``buf`` is too short."""
        if offset < 0 or len(buf) - offset < self.size:
            raise WireError(f"{self.name}: truncated")
        return self.struct.unpack_from(buf, offset)

    def pack(self, *values: Any, **fields: Any) -> bytes:
        """Bytes of the fields, given in declaration order or by name."""
        return self.struct.pack(*self.tuple(*values, **fields))

    def pack_into(self, buf: bytearray | memoryview, offset: int, *values: Any) -> None:
        """Write the fields (declaration order) into ``buf`` at ``offset``."""
        self.struct.pack_into(buf, offset, *values)


def derive(name: str, spec: Any) -> Codec:
    """Derive a Codec from a construct Struct of byte-aligned fixed-size fields.

    Supported fields: FormatField integers (Int8ub, Int16ub, Int32ub, Int64ub, their signed and
    little-endian forms) and ``Bytes(n)`` with a constant ``n``. All multi-byte integers must share
    one byte order. Anything else raises TypeError: a programming error, found at import time.
    """
    import construct  # tests and tooling only: the daemon's codecs are written out

    if not isinstance(spec, construct.Struct):
        raise TypeError(f"{name}: not a construct Struct")
    order = ""
    chars: list[str] = []
    fields: list[str] = []
    for sub in spec.subcons:
        if not isinstance(sub, construct.Renamed) or not sub.name:
            raise TypeError(f"{name}: every field needs a name")
        con = sub.subcon
        if (
            isinstance(con, construct.FormatField)
            and con.fmtstr[0] in "<>"
            and con.fmtstr[1:] in _FORMAT_CHARS
        ):
            char = con.fmtstr[1:]
            if con.length > 1:  # single bytes have no byte order
                field_order = "<" if con.fmtstr[0] == "<" else ">"
                if order and order != field_order:
                    raise TypeError(f"{name}: mixed byte orders")
                order = field_order
            chars.append(char)
        elif isinstance(con, construct.Bytes) and isinstance(con.length, int):
            chars.append(f"{con.length}s")
        else:
            raise TypeError(f"{name}.{sub.name}: unsupported field {con!r}")
        fields.append(sub.name)
    return Codec(name, (order or ">") + "".join(chars), " ".join(fields), spec)


# RFC 1071 §2: the one's complement sum of 16-bit words. Because 2**16 == 1 (mod 0xffff), the sum
# of the words of a big-endian number is that number modulo 0xffff, so one C-level big-int modulo
# replaces the word loop.


def ones_sum(data: Buffer, initial: int = 0) -> int:
    """The folded 16-bit one's complement sum of ``data`` (odd length zero-padded) and ``initial``.

    Results are in 0..0xffff. The sum is 0 only when ``data`` and ``initial`` are all zero; any
    other multiple of 0xffff gives 0xffff ("negative zero"), as the end-around-carry adder of
    RFC 1071 does: it never turns a non-zero sum into 0x0000.
    """
    value = int.from_bytes(data, "big")
    if len(data) & 1:
        value <<= 8  # RFC 1071 §4.1: pad the last odd byte with a zero byte on the right
    value += initial
    total = value % 0xFFFF
    if total == 0 and value:
        return 0xFFFF
    return total


def checksum(data: Buffer, initial: int = 0) -> int:
    """The Internet checksum of ``data``: the one's complement of ``ones_sum(data, initial)``.

    All-zero (or empty) data gives 0xffff; data that sums to 0xffff gives 0. Computed over a
    message whose checksum field is filled in correctly, the result is 0: that is the receiver's
    check.
    """
    return 0xFFFF - ones_sum(data, initial)


def ipv4_pseudo_sum(src: bytes, dst: bytes, protocol: int, length: int) -> int:
    """Folded sum of the IPv4 pseudo-header (RFC 9293 §3.1, RFC 768): src, dst, 0, protocol, length.

    Pass it as ``initial`` to ``checksum``; with checksum offload (virtio NEEDS_CSUM) it is the
    value the checksum field must carry.
    """
    return ones_sum(src + dst, protocol + length)


def ipv6_pseudo_sum(src: bytes, dst: bytes, next_header: int, length: int) -> int:
    """Folded sum of the IPv6 pseudo-header (RFC 8200 §8.1): src, dst, length, next header."""
    return ones_sum(src + dst, next_header + (length >> 16) + (length & 0xFFFF))


def pseudo_sum(src: bytes, dst: bytes, protocol: int, length: int) -> int:
    """The pseudo-header sum for IPv4 (4-byte addresses) or IPv6 (16-byte addresses)."""
    if len(src) == 4:
        return ipv4_pseudo_sum(src, dst, protocol, length)
    return ipv6_pseudo_sum(src, dst, protocol, length)


def udp_checksum_field(computed: int) -> int:
    """The value UDP puts on the wire: a computed 0 is sent as 0xffff (RFC 768; RFC 8200 §8.1).

    0 in the field means "no checksum" (IPv4 only), so a real checksum of 0 is sent as its
    one's complement twin 0xffff.
    """
    return computed or 0xFFFF
