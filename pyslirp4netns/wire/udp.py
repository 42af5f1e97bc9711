"""UDP header (RFC 768)."""

from __future__ import annotations

from typing import NamedTuple

from pyslirp4netns.wire import numbers
from pyslirp4netns.wire.codec import (
    Buffer,
    Codec,
    WireError,
    checksum,
    ones_sum,
    pseudo_sum,
    udp_checksum_field,
)

# RFC 768:
#  0      7 8     15 16    23 24    31
# +--------+--------+--------+--------+
# |     Source      |   Destination   |
# |      Port       |      Port       |
# +--------+--------+--------+--------+
# |     Length      |    Checksum     |
# +--------+--------+--------+--------+

UDP = Codec("UdpHeader", ">HHHH", "src_port dst_port length checksum", "UDP_HEADER")
SIZE = UDP.size

PROTOCOL = numbers.IPPROTO_UDP

_VALUES = UDP.values_from
_PACK = UDP.struct.pack


class UdpRepr(NamedTuple):
    """A validated UDP header; the payload is ``payload_length`` bytes at ``payload_offset``."""

    src_port: int
    dst_port: int
    checksum: int
    payload_offset: int
    payload_length: int


def decode(buf: Buffer, offset: int = 0, length: int | None = None) -> UdpRepr:
    """The UDP datagram at ``offset`` in an IP payload of ``length`` bytes (default: to the end).

    The UDP length field must fit in the IP payload; bytes beyond it are ignored. The checksum is
    not verified here (with virtio NEEDS_CSUM it is not filled in yet): see ``checksum_ok``.
    """
    if length is None:
        length = len(buf) - offset
    if length > len(buf) - offset:
        raise WireError("udp: truncated")
    src_port, dst_port, udp_length, checksum_ = _VALUES(buf, offset)
    if udp_length < SIZE or udp_length > length:
        raise WireError("udp: bad length")
    return UdpRepr(src_port, dst_port, checksum_, offset + SIZE, udp_length - SIZE)


def checksum_ok(buf: Buffer, udp: UdpRepr, src: bytes, dst: bytes) -> bool:
    """Whether the checksum is right; 0 means "none" over IPv4 only (RFC 768, RFC 8200 §8.1)."""
    if udp.checksum == 0:
        return len(src) == 4
    start = udp.payload_offset - SIZE
    length = SIZE + udp.payload_length
    return checksum(buf[start : start + length], pseudo_sum(src, dst, PROTOCOL, length)) == 0


def encode(
    src: bytes,
    dst: bytes,
    src_port: int,
    dst_port: int,
    payload: Buffer,
    *,
    partial: bool = False,
) -> bytes:
    """The 8-byte UDP header for ``payload`` between ``src`` and ``dst`` (4 or 16 bytes each).

    The checksum covers pseudo-header, header and payload (RFC 768). With ``partial`` the field
    holds only the pseudo-header sum, for the tap to finish (virtio NEEDS_CSUM, csum_offset 6).
    """
    length = SIZE + len(payload)
    initial = pseudo_sum(src, dst, PROTOCOL, length)
    if partial:
        return _PACK(src_port, dst_port, length, initial)
    value = checksum(payload, ones_sum(_PACK(src_port, dst_port, length, 0), initial))
    return _PACK(src_port, dst_port, length, udp_checksum_field(value))
