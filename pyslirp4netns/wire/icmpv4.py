"""ICMP for IPv4 (RFC 792): decoding, echo replies and destination unreachable messages."""

from __future__ import annotations

from typing import NamedTuple

from pyslirp4netns.wire.codec import Buffer, Codec, WireError, checksum, ones_sum

# RFC 792, common to all messages; ``rest`` is identifier | sequence for echo, unused for
# unreachable except the next-hop MTU in its low 16 bits for "fragmentation needed" (RFC 1191 §4):
#  0                   1                   2                   3
#  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
# +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
# |     Type      |     Code      |          Checksum             |
# +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
# |           Identifier          |        Sequence Number        |
# +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
# |     Data ...

ICMPV4 = Codec("Icmpv4Header", ">BBHL", "type code checksum rest", "ICMPV4_HEADER")
SIZE = ICMPV4.size

ECHO_REPLY = 0
DEST_UNREACHABLE = 3
ECHO_REQUEST = 8
TIME_EXCEEDED = 11

# Destination unreachable codes (RFC 792; 13 from RFC 1812 §5.2.7.1).
NET_UNREACHABLE = 0
HOST_UNREACHABLE = 1
PROTOCOL_UNREACHABLE = 2
PORT_UNREACHABLE = 3
FRAGMENTATION_NEEDED = 4
ADMIN_PROHIBITED = 13

_PACK = ICMPV4.struct.pack


class IcmpRepr(NamedTuple):
    """A checked ICMP or ICMPv6 message; data: ``payload_length`` bytes at ``payload_offset``."""

    type: int
    code: int
    rest: int
    payload_offset: int
    payload_length: int

    @property
    def identifier(self) -> int:
        """Echo identifier (high half of ``rest``)."""
        return self.rest >> 16

    @property
    def sequence(self) -> int:
        """Echo sequence number (low half of ``rest``)."""
        return self.rest & 0xFFFF


Icmpv4Repr = IcmpRepr


def decode(buf: Buffer, offset: int = 0, length: int | None = None) -> Icmpv4Repr:
    """The ICMP message of ``length`` bytes (default: to the end) at ``offset``, checksummed."""
    if length is None:
        length = len(buf) - offset
    if length < SIZE or length > len(buf) - offset:
        raise WireError("icmpv4: truncated")
    type_, code, _, rest = ICMPV4.values_from(buf, offset)
    if checksum(buf[offset : offset + length]) != 0:  # RFC 792: over the whole ICMP message
        raise WireError("icmpv4: bad checksum")
    return Icmpv4Repr(type_, code, rest, offset + SIZE, length - SIZE)


def encode(type_: int, code: int, rest: int, data: Buffer) -> bytes:
    """An ICMP message with its checksum."""
    header = _PACK(type_, code, 0, rest)
    value = checksum(data, ones_sum(header))
    return _PACK(type_, code, value, rest) + data


def echo_reply(identifier: int, sequence: int, data: Buffer) -> bytes:
    """An echo reply carrying the request's identifier, sequence and data (RFC 792)."""
    return encode(ECHO_REPLY, 0, identifier << 16 | sequence, data)


def dest_unreachable(code: int, original: Buffer, next_hop_mtu: int = 0) -> bytes:
    """A destination unreachable message about the IPv4 datagram ``original``.

    RFC 792: the data is the original internet header plus the first 64 bits of its data.
    """
    header_length = (original[0] & 0x0F) * 4 if len(original) else 0
    return encode(
        DEST_UNREACHABLE, code, next_hop_mtu & 0xFFFF, bytes(original[: header_length + 8])
    )
