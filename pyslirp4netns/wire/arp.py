"""ARP for Ethernet and IPv4 only (RFC 826)."""

from __future__ import annotations

from typing import NamedTuple

from pyslirp4netns.wire.codec import Buffer, Codec, WireError

# RFC 826 "Packet format", with Ethernet (hrd 1) and IPv4 (pro 0x0800) lengths filled in:
#  0        2        4     5     6        8           14      18          24      28
# +--------+--------+-----+-----+--------+-----------+-------+-----------+-------+
# | htype  | ptype  |hlen |plen | oper   | sha       | spa   | tha       | tpa   |
# +--------+--------+-----+-----+--------+-----------+-------+-----------+-------+

ARP = Codec(
    "ArpPacket", ">HHBBH6s4s6s4s", "htype ptype hlen plen oper sha spa tha tpa", "ARP_PACKET"
)
SIZE = ARP.size

HTYPE_ETHERNET = 1
PTYPE_IPV4 = 0x0800
REQUEST = 1
REPLY = 2

_PACK = ARP.struct.pack


class ArpRepr(NamedTuple):
    """A decoded Ethernet/IPv4 ARP request or reply."""

    oper: int
    sha: bytes
    spa: bytes
    tha: bytes
    tpa: bytes


def decode(buf: Buffer, offset: int = 0) -> ArpRepr:
    """The ARP packet at ``offset``; only Ethernet/IPv4 requests and replies are accepted."""
    htype, ptype, hlen, plen, oper, sha, spa, tha, tpa = ARP.values_from(buf, offset)
    if htype != HTYPE_ETHERNET or ptype != PTYPE_IPV4 or hlen != 6 or plen != 4:
        raise WireError("arp: not ethernet/ipv4")
    if oper != REQUEST and oper != REPLY:
        raise WireError("arp: unknown operation")
    return ArpRepr(oper, sha, spa, tha, tpa)


def encode(oper: int, sha: bytes, spa: bytes, tha: bytes, tpa: bytes) -> bytes:
    """A 28-byte Ethernet/IPv4 ARP packet."""
    return _PACK(HTYPE_ETHERNET, PTYPE_IPV4, 6, 4, oper, sha, spa, tha, tpa)


def request(sha: bytes, spa: bytes, tpa: bytes) -> bytes:
    """Who has ``tpa``? Tell ``spa`` (RFC 826: tha is ignored in requests; sent as zeros)."""
    return encode(REQUEST, sha, spa, b"\x00" * 6, tpa)


def reply(sha: bytes, spa: bytes, tha: bytes, tpa: bytes) -> bytes:
    """``spa`` is at ``sha``, answered to ``tha``/``tpa``."""
    return encode(REPLY, sha, spa, tha, tpa)
