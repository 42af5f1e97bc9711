"""The legacy 10-byte ``virtio_net_hdr`` the tap prepends with IFF_VNET_HDR (virtio spec §5.1.6)."""

from __future__ import annotations

from typing import NamedTuple

from pyslirp4netns.wire.codec import Buffer, Codec

# struct virtio_net_hdr (include/uapi/linux/virtio_net.h); little-endian, unlike everything else:
#  0        1          2         4          6            8             10
# +--------+----------+---------+----------+------------+-------------+
# | flags  | gso_type | hdr_len | gso_size | csum_start | csum_offset |
# +--------+----------+---------+----------+------------+-------------+

VNET = Codec(
    "VnetHeader", "<BBHHHH", "flags gso_type hdr_len gso_size csum_start csum_offset", "VNET_HEADER"
)
SIZE = VNET.size

# flags
NEEDS_CSUM = 1  # checksum from csum_start is to be filled in at csum_start + csum_offset
DATA_VALID = 2  # checksum already verified (ignored by tun on write)
# gso_type
GSO_NONE = 0
GSO_TCPV4 = 1
GSO_UDP = 3
GSO_TCPV6 = 4
GSO_UDP_L4 = 5
GSO_ECN = 0x80  # flag bit: the TCP segments carry CWR/ECE

_PACK = VNET.struct.pack


class VnetRepr(NamedTuple):
    """A decoded virtio_net_hdr."""

    flags: int
    gso_type: int
    hdr_len: int
    gso_size: int
    csum_start: int
    csum_offset: int


def decode(buf: Buffer, offset: int = 0) -> VnetRepr:
    """The virtio_net_hdr at ``offset``; the frame starts at ``offset + SIZE``."""
    return VnetRepr._make(VNET.values_from(buf, offset))


def encode(
    flags: int = 0,
    gso_type: int = GSO_NONE,
    hdr_len: int = 0,
    gso_size: int = 0,
    csum_start: int = 0,
    csum_offset: int = 0,
) -> bytes:
    """A virtio_net_hdr; all zero means a plain frame with a complete checksum."""
    return _PACK(flags, gso_type, hdr_len, gso_size, csum_start, csum_offset)


PLAIN = encode()  # the header of every frame that needs no offload
