"""Ethernet II header (IEEE 802.3 §3.2.6) with recognition of one 802.1Q/802.1ad VLAN tag."""

from __future__ import annotations

from typing import NamedTuple

from pyslirp4netns.wire.codec import Buffer, Codec

#  0                   6                   12       14
# +-------------------+-------------------+--------+
# | destination MAC   | source MAC        | type   |
# +-------------------+-------------------+--------+

ETHERNET = Codec("EthernetHeader", ">6s6sH", "dst src ethertype", "ETHERNET_HEADER")
SIZE = ETHERNET.size

# IEEE 802.1Q §9.6: after a TPID of 0x8100 (or 0x88a8 for 802.1ad) come the tag control
# information (PCP 3 bits, DEI 1 bit, VID 12 bits) and the real ethertype.

VLAN = Codec("VlanTag", ">HH", "tci ethertype", "VLAN_TAG")
VLAN_VID_MASK = 0x0FFF

ETHERTYPE_IPV4 = 0x0800
ETHERTYPE_ARP = 0x0806
ETHERTYPE_VLAN = 0x8100
ETHERTYPE_QINQ = 0x88A8
ETHERTYPE_IPV6 = 0x86DD

BROADCAST = b"\xff" * 6

_PACK = ETHERNET.struct.pack
_PACK_INTO = ETHERNET.struct.pack_into


class EthernetRepr(NamedTuple):
    """A decoded Ethernet header; ``vlan`` is the tag's TCI, or None when the frame is untagged."""

    dst: bytes
    src: bytes
    ethertype: int
    vlan: int | None
    payload_offset: int


def decode(buf: Buffer, offset: int = 0) -> EthernetRepr:
    """The Ethernet header at ``offset``; a VLAN tag is reported (the stack drops tagged frames)."""
    dst, src, ethertype = ETHERNET.values_from(buf, offset)
    if ethertype == ETHERTYPE_VLAN or ethertype == ETHERTYPE_QINQ:
        tci, ethertype = VLAN.values_from(buf, offset + SIZE)
        return EthernetRepr(dst, src, ethertype, tci, offset + SIZE + VLAN.size)
    return EthernetRepr(dst, src, ethertype, None, offset + SIZE)


def encode(dst: bytes, src: bytes, ethertype: int) -> bytes:
    """A 14-byte untagged Ethernet header."""
    return _PACK(dst, src, ethertype)


def encode_into(
    buf: bytearray | memoryview, offset: int, dst: bytes, src: bytes, ethertype: int
) -> None:
    """Write a 14-byte untagged Ethernet header into ``buf`` at ``offset``."""
    _PACK_INTO(buf, offset, dst, src, ethertype)
