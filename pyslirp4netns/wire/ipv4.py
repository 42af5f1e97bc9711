"""IPv4 header (RFC 791 §3.1)."""

from __future__ import annotations

from typing import NamedTuple

from pyslirp4netns.wire import numbers
from pyslirp4netns.wire.codec import Buffer, Codec, WireError, checksum

# RFC 791 §3.1:
#  0                   1                   2                   3
#  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
# +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
# |Version|  IHL  |Type of Service|          Total Length         |
# +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
# |         Identification        |Flags|      Fragment Offset    |
# +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
# |  Time to Live |    Protocol   |         Header Checksum       |
# +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
# |                       Source Address                          |
# +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
# |                    Destination Address                        |
# +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
# |                    Options                    |    Padding    |
# +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+

IPV4 = Codec(
    "Ipv4Header",
    ">BBHHHBBH4s4s",
    "version_ihl tos total_length identification flags_fragment ttl protocol checksum src dst",
    "IPV4_HEADER",
)
SIZE = IPV4.size  # without options

VERSION_MASK = 0xF0  # of version_ihl
IHL_MASK = 0x0F  # of version_ihl, in 32-bit words
FLAG_DF = 0x4000  # of flags_fragment: don't fragment
FLAG_MF = 0x2000  # of flags_fragment: more fragments
FRAGMENT_OFFSET_MASK = 0x1FFF  # of flags_fragment, in 8-byte units

# Protocol numbers (IANA), shared with IPv6's next header.
PROTO_ICMP = numbers.IPPROTO_ICMP
PROTO_TCP = numbers.IPPROTO_TCP
PROTO_UDP = numbers.IPPROTO_UDP
PROTO_ICMPV6 = numbers.IPPROTO_ICMPV6

_VALUES = IPV4.values_from
_PACK = IPV4.struct.pack


class Ipv4Repr(NamedTuple):
    """A validated IPv4 header; offsets are absolute in the decoded buffer."""

    src: bytes
    dst: bytes
    protocol: int
    ttl: int
    identification: int
    tos: int
    dont_fragment: bool
    more_fragments: bool
    fragment_offset: int  # in bytes (the field times 8)
    header_length: int
    total_length: int
    options: bytes  # raw, never interpreted (no source routing, no record route)
    payload_offset: int
    payload_length: int


def decode(buf: Buffer, offset: int = 0) -> Ipv4Repr:
    """The IPv4 header at ``offset``, its lengths and header checksum checked (RFC 791 §3.1).

    Bytes past ``total_length`` (Ethernet padding) are ignored.
    """
    (
        version_ihl,
        tos,
        total_length,
        identification,
        flags_fragment,
        ttl,
        protocol,
        _,
        src,
        dst,
    ) = _VALUES(buf, offset)
    if version_ihl & VERSION_MASK != 0x40:
        raise WireError("ipv4: version is not 4")
    header_length = (version_ihl & IHL_MASK) * 4
    if header_length < SIZE:
        raise WireError("ipv4: IHL < 5")
    if total_length < header_length:
        raise WireError("ipv4: total length < header length")
    if total_length > len(buf) - offset:
        raise WireError("ipv4: truncated")
    if checksum(buf[offset : offset + header_length]) != 0:
        raise WireError("ipv4: bad header checksum")
    options = b"" if header_length == SIZE else bytes(buf[offset + SIZE : offset + header_length])
    return Ipv4Repr(
        src,
        dst,
        protocol,
        ttl,
        identification,
        tos,
        bool(flags_fragment & FLAG_DF),
        bool(flags_fragment & FLAG_MF),
        (flags_fragment & FRAGMENT_OFFSET_MASK) * 8,
        header_length,
        total_length,
        options,
        offset + header_length,
        total_length - header_length,
    )


def encode(
    src: bytes,
    dst: bytes,
    protocol: int,
    payload_length: int,
    *,
    ttl: int = 64,
    identification: int = 0,
    tos: int = 0,
    dont_fragment: bool = False,
    more_fragments: bool = False,
    fragment_offset: int = 0,
) -> bytes:
    """A 20-byte IPv4 header with its checksum; ``fragment_offset`` is in bytes (multiple of 8)."""
    if fragment_offset & 7:
        raise ValueError("fragment offset must be a multiple of 8")
    flags_fragment = fragment_offset >> 3
    if dont_fragment:
        flags_fragment |= FLAG_DF
    if more_fragments:
        flags_fragment |= FLAG_MF
    header = bytearray(
        _PACK(
            0x45,
            tos,
            SIZE + payload_length,
            identification,
            flags_fragment,
            ttl,
            protocol,
            0,
            src,
            dst,
        )
    )
    set_checksum(header)
    return bytes(header)


def set_checksum(buf: bytearray | memoryview, offset: int = 0) -> None:
    """Recompute the header checksum of the IPv4 header at ``offset`` in place (RFC 791 §3.1).

    For a per-flow header template: patch total length and identification, then call this.
    """
    header_length = (buf[offset] & IHL_MASK) * 4
    buf[offset + 10 : offset + 12] = b"\x00\x00"
    value = checksum(buf[offset : offset + header_length])
    buf[offset + 10 : offset + 12] = value.to_bytes(2, "big")
