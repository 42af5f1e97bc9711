"""ICMPv6 (RFC 4443): decoding, echo replies and destination unreachable messages."""

from __future__ import annotations

from pyslirp4netns.wire import numbers
from pyslirp4netns.wire.codec import Buffer, Codec, WireError, checksum, ipv6_pseudo_sum, ones_sum
from pyslirp4netns.wire.icmpv4 import IcmpRepr

# RFC 4443 §2.1; ``rest`` is identifier | sequence for echo (§4.1), unused for unreachable (§3.1),
# the MTU for packet too big (§3.2), the pointer for parameter problem (§3.4):
#  0                   1                   2                   3
#  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
# +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
# |     Type      |     Code      |          Checksum             |
# +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
# |           Identifier          |        Sequence Number        |
# +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
# |     Data ...

ICMPV6 = Codec("Icmpv6Header", ">BBHL", "type code checksum rest", "ICMPV6_HEADER")
SIZE = ICMPV6.size

NEXT_HEADER = numbers.IPPROTO_ICMPV6
DEST_UNREACHABLE = 1
PACKET_TOO_BIG = 2
TIME_EXCEEDED = 3
PARAMETER_PROBLEM = 4
ECHO_REQUEST = 128
ECHO_REPLY = 129
ROUTER_SOLICITATION = 133
ROUTER_ADVERTISEMENT = 134
NEIGHBOR_SOLICITATION = 135
NEIGHBOR_ADVERTISEMENT = 136

# Destination unreachable codes (RFC 4443 §3.1).
NO_ROUTE = 0
ADMIN_PROHIBITED = 1
ADDRESS_UNREACHABLE = 3
PORT_UNREACHABLE = 4
# Time exceeded codes (RFC 4443 §3.3).
REASSEMBLY_TIME_EXCEEDED = 1

# RFC 4443 §2.4 (c): an error message must not exceed the minimum IPv6 MTU.
MIN_MTU = 1280

_PACK = ICMPV6.struct.pack


# RFC 4443 §2.1 keeps ICMPv4's layout (type, code, checksum, 32 bits of "rest"): one Repr.
Icmpv6Repr = IcmpRepr


def decode(buf: Buffer, offset: int, length: int, src: bytes, dst: bytes) -> Icmpv6Repr:
    """The ICMPv6 message of ``length`` bytes at ``offset`` from ``src`` to ``dst``, checksummed.

    RFC 4443 §2.3: the checksum covers the IPv6 pseudo-header and the whole message.
    """
    if length < SIZE or length > len(buf) - offset:
        raise WireError("icmpv6: truncated")
    type_, code, _, rest = ICMPV6.values_from(buf, offset)
    if checksum(buf[offset : offset + length], ipv6_pseudo_sum(src, dst, NEXT_HEADER, length)):
        raise WireError("icmpv6: bad checksum")
    return Icmpv6Repr(type_, code, rest, offset + SIZE, length - SIZE)


def encode(src: bytes, dst: bytes, type_: int, code: int, rest: int, data: Buffer) -> bytes:
    """An ICMPv6 message from ``src`` to ``dst`` with its checksum (RFC 4443 §2.3)."""
    header = _PACK(type_, code, 0, rest)
    initial = ipv6_pseudo_sum(src, dst, NEXT_HEADER, SIZE + len(data))
    value = checksum(data, ones_sum(header, initial))
    return _PACK(type_, code, value, rest) + data


def echo_reply(src: bytes, dst: bytes, identifier: int, sequence: int, data: Buffer) -> bytes:
    """An echo reply carrying the request's identifier, sequence and data (RFC 4443 §4.2)."""
    return encode(src, dst, ECHO_REPLY, 0, identifier << 16 | sequence, data)


def dest_unreachable(src: bytes, dst: bytes, code: int, original: Buffer) -> bytes:
    """A destination unreachable message quoting the IPv6 packet ``original`` (RFC 4443 §3.1).

    As much of the original as fits without the whole IPv6 packet exceeding 1280 bytes.
    """
    room = MIN_MTU - 40 - SIZE
    return encode(src, dst, DEST_UNREACHABLE, code, 0, bytes(original[:room]))


def time_exceeded(src: bytes, dst: bytes, code: int, original: Buffer) -> bytes:
    """A time exceeded message quoting ``original`` (RFC 4443 §3.3; code 1: fragment
    reassembly time exceeded, RFC 8200 §4.5), cut as ``dest_unreachable`` cuts it."""
    room = MIN_MTU - 40 - SIZE
    return encode(src, dst, TIME_EXCEEDED, code, 0, bytes(original[:room]))
