"""An IPv4 TCP frame's three headers as one codec, for the ESTABLISHED fast path both ways.

Ethernet + IPv4 without options + TCP without options: 54 bytes, the shape of nearly every frame
of an established IPv4 connection (we never negotiate timestamps). The layout is the three
construct-backed codecs one after the other (``ethernet.ETHERNET``, ``ipv4.IPV4``, ``tcp.TCP``),
so one ``struct`` call reads or writes what three decoders and three encoders did.

``Template`` holds what never changes in one direction of one connection (MACs, addresses,
ports and the partial checksums over them); ``Template.frame`` packs a segment's 54 bytes.
"""

from __future__ import annotations

import struct

from pyslirp4netns.wire import ethernet, ipv4, tcp, vnet
from pyslirp4netns.wire.codec import ones_sum

# The three headers' formats concatenated (each starts with ">").
FRAME = struct.Struct(
    ">"
    + ethernet.ETHERNET.struct.format[1:]
    + ipv4.IPV4.struct.format[1:]
    + tcp.TCP.struct.format[1:]
)
SIZE = FRAME.size  # 54
IP_OFFSET = ethernet.SIZE
TCP_OFFSET = ethernet.SIZE + ipv4.SIZE
# What the receive path needs, by offset into the frame: IPv4 total length and flags/fragment,
# then TCP seq, ack, data offset, flags and window (tests check the offsets against FRAME).
RECEIVE = struct.Struct(">16xH2xH16xIIBBH")
KEY = slice(IP_OFFSET + 12, TCP_OFFSET + 4)  # src, dst, src port, dst port: a flow's key bytes

VERSION_IHL = 0x45  # IPv4, 20-byte header
DONT_FRAGMENT = 0x4000
TTL = 64
DATA_OFFSET = (tcp.SIZE // 4) << 4
ETHERTYPE_IPV4_BYTES = (ethernet.ETHERTYPE_IPV4 >> 8, ethernet.ETHERTYPE_IPV4 & 0xFF)
# virtio-net header of a segment the tap checksums (and, with GSO_TCPV4, cuts at gso_size).
CSUM_ONLY = vnet.encode(vnet.NEEDS_CSUM, vnet.GSO_NONE, SIZE, 0, TCP_OFFSET, tcp.CHECKSUM_OFFSET)


def key(src: bytes, src_port: int, dst: bytes, dst_port: int) -> bytes:
    """The bytes at ``KEY`` of a frame from ``src``:``src_port`` to ``dst``:``dst_port``."""
    return src + dst + src_port.to_bytes(2, "big") + dst_port.to_bytes(2, "big")


def _fold(value: int) -> int:
    value = (value & 0xFFFF) + (value >> 16)
    return (value & 0xFFFF) + (value >> 16)


class Template:
    """One direction of one IPv4 connection, from ``src``:``src_port`` to ``dst``:``dst_port``."""

    __slots__ = ("dst_mac", "src_mac", "src", "dst", "src_port", "dst_port", "_ip_sum", "_pseudo")

    def __init__(
        self, dst_mac: bytes, src_mac: bytes, src: bytes, dst: bytes, src_port: int, dst_port: int
    ) -> None:
        self.dst_mac, self.src_mac = dst_mac, src_mac
        self.src, self.dst, self.src_port, self.dst_port = src, dst, src_port, dst_port
        # RFC 1071: the sums of everything fixed; per segment only lengths and the id are added.
        fixed = ipv4.IPV4.struct.pack(
            VERSION_IHL, 0, 0, 0, DONT_FRAGMENT, TTL, tcp.PROTOCOL, 0, src, dst
        )
        self._ip_sum = ones_sum(fixed)
        self._pseudo = ones_sum(src + dst, tcp.PROTOCOL)

    def frame(self, ident: int, seq: int, ack: int, flags: int, window: int, length: int) -> bytes:
        """The 54 header bytes of a segment with ``length`` payload bytes. The TCP checksum
        field holds the pseudo-header sum only: the tap finishes it (virtio NEEDS_CSUM)."""
        total = ipv4.SIZE + tcp.SIZE + length
        ip_check = 0xFFFF - _fold(self._ip_sum + total + ident)
        return FRAME.pack(
            self.dst_mac,
            self.src_mac,
            ethernet.ETHERTYPE_IPV4,
            VERSION_IHL,
            0,
            total,
            ident,
            DONT_FRAGMENT,
            TTL,
            tcp.PROTOCOL,
            ip_check,
            self.src,
            self.dst,
            self.src_port,
            self.dst_port,
            seq,
            ack,
            DATA_OFFSET,
            flags,
            window,
            _fold(self._pseudo + tcp.SIZE + length),
            0,
        )
