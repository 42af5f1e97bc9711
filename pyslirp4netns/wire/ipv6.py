"""IPv6 fixed header (RFC 8200 §3) and a bounded walk over its extension headers (§4)."""

from __future__ import annotations

from typing import NamedTuple

from pyslirp4netns.wire import numbers
from pyslirp4netns.wire.codec import Buffer, Codec, WireError

# RFC 8200 §3:
#  0                   1                   2                   3
#  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
# +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
# |Version| Traffic Class |           Flow Label                  |
# +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
# |         Payload Length        |  Next Header  |   Hop Limit   |
# +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
# |                   Source Address (128 bits)                   |
# +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
# |                Destination Address (128 bits)                 |
# +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+

IPV6 = Codec(
    "Ipv6Header",
    ">LHBB16s16s",
    "version_class_flow payload_length next_header hop_limit src dst",
    "IPV6_HEADER",
)
SIZE = IPV6.size

VERSION_MASK = 0xF0000000  # of version_class_flow
TRAFFIC_CLASS_MASK = 0x0FF00000
FLOW_LABEL_MASK = 0x000FFFFF

# RFC 8200 §4.3 (hop-by-hop), §4.4 (routing), §4.6 (destination options): every one starts with
# next header and a length in 8-octet units not counting the first 8 octets.
#  0               1               2
# +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
# |  Next Header  |  Hdr Ext Len  |  ...
# +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+

EXTENSION = Codec("Ipv6ExtensionHeader", ">BB", "next_header hdr_ext_len", "EXTENSION_HEADER")

# RFC 8200 §4.5:
# +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
# |  Next Header  |   Reserved    |      Fragment Offset    |Res|M|
# +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
# |                         Identification                        |
# +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+

FRAGMENT = Codec(
    "Ipv6FragmentHeader",
    ">BBHL",
    "next_header reserved offset_flags identification",
    "FRAGMENT_HEADER",
)
FRAGMENT_OFFSET_MASK = 0xFFF8  # of offset_flags: 8-byte units sit 3 bits up, so this is bytes
FRAGMENT_MF = 0x0001  # of offset_flags: more fragments

NEXT_HOP_BY_HOP = numbers.IPPROTO_HOPOPTS
NEXT_TCP = numbers.IPPROTO_TCP
NEXT_UDP = numbers.IPPROTO_UDP
NEXT_ROUTING = numbers.IPPROTO_ROUTING
NEXT_FRAGMENT = numbers.IPPROTO_FRAGMENT
NEXT_ICMPV6 = numbers.IPPROTO_ICMPV6
NEXT_NONE = numbers.IPPROTO_NONE
NEXT_DEST_OPTS = numbers.IPPROTO_DSTOPTS

MAX_EXTENSION_HEADERS = 8  # more than any legitimate packet carries; bounds the walk
_EXTENSIONS = frozenset((NEXT_HOP_BY_HOP, NEXT_ROUTING, NEXT_FRAGMENT, NEXT_DEST_OPTS))

_VALUES = IPV6.values_from
_PACK = IPV6.struct.pack


class Ipv6Repr(NamedTuple):
    """A validated IPv6 fixed header; offsets are absolute in the decoded buffer."""

    src: bytes
    dst: bytes
    next_header: int
    hop_limit: int
    traffic_class: int
    flow_label: int
    payload_offset: int
    payload_length: int


class Ipv6Fragment(NamedTuple):
    """The fields of an IPv6 fragment header."""

    offset: int  # in bytes
    more_fragments: bool
    identification: int


class Ipv6Upper(NamedTuple):
    """Where the extension headers end: the upper-layer protocol and its extent."""

    protocol: int
    offset: int
    length: int
    fragment: Ipv6Fragment | None


def decode(buf: Buffer, offset: int = 0) -> Ipv6Repr:
    """The IPv6 fixed header at ``offset`` (RFC 8200 §3); bytes past its payload are ignored."""
    version_class_flow, payload_length, next_header, hop_limit, src, dst = _VALUES(buf, offset)
    if version_class_flow & VERSION_MASK != 0x60000000:
        raise WireError("ipv6: version is not 6")
    if payload_length > len(buf) - offset - SIZE:
        raise WireError("ipv6: truncated")
    return Ipv6Repr(
        src,
        dst,
        next_header,
        hop_limit,
        (version_class_flow & TRAFFIC_CLASS_MASK) >> 20,
        version_class_flow & FLOW_LABEL_MASK,
        offset + SIZE,
        payload_length,
    )


def walk_extensions(buf: Buffer, ip: Ipv6Repr) -> Ipv6Upper:
    """Skip hop-by-hop, routing and destination options headers to the upper layer (RFC 8200 §4.1).

    The walk stops at a fragment header: what follows it is fragment data, to be reassembled
    before it is walked again. At most MAX_EXTENSION_HEADERS headers are skipped.
    """
    next_header = ip.next_header
    pos = ip.payload_offset
    end = pos + ip.payload_length
    for count in range(MAX_EXTENSION_HEADERS + 1):
        if next_header not in _EXTENSIONS:
            return Ipv6Upper(next_header, pos, end - pos, None)
        if count == MAX_EXTENSION_HEADERS:
            raise WireError("ipv6: too many extension headers")
        if next_header == NEXT_HOP_BY_HOP and count:
            raise WireError("ipv6: hop-by-hop header not first")  # RFC 8200 §4.3
        if next_header == NEXT_FRAGMENT:
            if end - pos < FRAGMENT.size:
                raise WireError("ipv6: truncated fragment header")
            next_header, _, offset_flags, identification = FRAGMENT.values_from(buf, pos)
            fragment = Ipv6Fragment(
                offset_flags & FRAGMENT_OFFSET_MASK,
                bool(offset_flags & FRAGMENT_MF),
                identification,
            )
            pos += FRAGMENT.size
            return Ipv6Upper(next_header, pos, end - pos, fragment)
        if end - pos < EXTENSION.size:
            raise WireError("ipv6: truncated extension header")
        next_header, hdr_ext_len = EXTENSION.values_from(buf, pos)
        length = (hdr_ext_len + 1) * 8
        if length > end - pos:
            raise WireError("ipv6: extension header overruns payload")
        pos += length
    raise AssertionError("unreachable")  # the loop returns or raises by count == MAX


def encode(
    src: bytes,
    dst: bytes,
    next_header: int,
    payload_length: int,
    *,
    hop_limit: int = 64,
    traffic_class: int = 0,
    flow_label: int = 0,
) -> bytes:
    """A 40-byte IPv6 header."""
    return _PACK(
        0x60000000 | traffic_class << 20 | flow_label,
        payload_length,
        next_header,
        hop_limit,
        src,
        dst,
    )
