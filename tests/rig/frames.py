"""Guest frames built by hand, for tests that feed a daemon crafted input, and an independent
Internet checksum to check frames with.

The builders use the package's own wire encoders (so checksums are right unless a test spoils
them on purpose); their defaults are the guest as ``--configure`` sets it up: 10.0.2.100 (MAC
02:00:00:00:00:01, link-local fe80::1) talking to the gateway 10.0.2.2 / fd00::2 at the MACs
libslirp gives its aliases (52:55 + the IPv4 address; 52:56:00:00:00:02 for IPv6).
``scapy_tools`` crafts its probes with scapy instead, an encoder independent of ours.
"""

from __future__ import annotations

import socket
import struct

from pyslirp4netns.wire import arp, ethernet, icmpv4, icmpv6, ipv4, ipv6, tcp, udp

GUEST_MAC = bytes.fromhex("020000000001")
GATEWAY_MAC = bytes.fromhex("52550a000202")  # libslirp: 52:55 + the gateway's IPv4 address
GATEWAY6_MAC = bytes.fromhex("525600000002")  # libslirp's answer to NDP for its IPv6 aliases
GUEST4 = bytes([10, 0, 2, 100])
GATEWAY4 = bytes([10, 0, 2, 2])
DNS4 = bytes([10, 0, 2, 3])
BROADCAST4 = b"\xff" * 4
GUEST6 = socket.inet_pton(socket.AF_INET6, "fe80::1")
GATEWAY6 = socket.inet_pton(socket.AF_INET6, "fd00::2")
ALL_ROUTERS6 = socket.inet_pton(socket.AF_INET6, "ff02::2")


def ethernet_frame(
    ethertype: int, payload: bytes, dst: bytes = GATEWAY_MAC, src: bytes = GUEST_MAC
) -> bytes:
    return ethernet.encode(dst, src, ethertype) + payload


def arp_request_frame(target: bytes, sender: bytes = GUEST4, mac: bytes = GUEST_MAC) -> bytes:
    """Who has ``target``? Broadcast by ``sender`` at ``mac``."""
    request = arp.request(mac, sender, target)
    return ethernet_frame(ethernet.ETHERTYPE_ARP, request, ethernet.BROADCAST, mac)


def ipv4_frame(
    dst: bytes,
    protocol: int,
    payload: bytes,
    *,
    src: bytes = GUEST4,
    dst_mac: bytes = GATEWAY_MAC,
    ttl: int = 64,
    identification: int = 0,
    more_fragments: bool = False,
    fragment_offset: int = 0,
) -> bytes:
    """``payload`` in one IPv4 packet (``fragment_offset`` in bytes, a multiple of 8)."""
    header = ipv4.encode(
        src,
        dst,
        protocol,
        len(payload),
        ttl=ttl,
        identification=identification,
        more_fragments=more_fragments,
        fragment_offset=fragment_offset,
    )
    return ethernet_frame(ethernet.ETHERTYPE_IPV4, header + payload, dst_mac)


def ipv6_frame(
    dst: bytes,
    next_header: int,
    payload: bytes,
    *,
    src: bytes = GUEST6,
    dst_mac: bytes = GATEWAY6_MAC,
    hop_limit: int = 64,
) -> bytes:
    packet = ipv6.encode(src, dst, next_header, len(payload), hop_limit=hop_limit) + payload
    return ethernet_frame(ethernet.ETHERTYPE_IPV6, packet, dst_mac)


def udp_datagram(src: bytes, dst: bytes, sport: int, dport: int, payload: bytes) -> bytes:
    """UDP header and payload, checksummed for ``src`` -> ``dst`` (4 or 16 bytes each)."""
    return udp.encode(src, dst, sport, dport, payload) + payload


def udp4_frame(
    dst: bytes,
    dport: int,
    payload: bytes,
    *,
    sport: int = 5000,
    src: bytes = GUEST4,
) -> bytes:
    datagram = udp_datagram(src, dst, sport, dport, payload)
    return ipv4_frame(dst, ipv4.PROTO_UDP, datagram, src=src)


def udp6_frame(
    dst: bytes, dport: int, payload: bytes, *, sport: int = 5000, src: bytes = GUEST6
) -> bytes:
    datagram = udp_datagram(src, dst, sport, dport, payload)
    return ipv6_frame(dst, ipv6.NEXT_UDP, datagram, src=src)


def tcp4_frame(
    dst: bytes,
    dport: int,
    flags: int,
    *,
    sport: int = 40000,
    seq: int = 1,
    ack: int = 0,
    window: int = 65535,
    payload: bytes = b"",
    src: bytes = GUEST4,
) -> bytes:
    segment = tcp.encode(src, dst, sport, dport, seq, ack, flags, window, payload) + payload
    return ipv4_frame(dst, ipv4.PROTO_TCP, segment, src=src)


def echo4_frame(
    dst: bytes, data: bytes, *, ident: int = 1, seq: int = 1, src: bytes = GUEST4
) -> bytes:
    """An ICMP echo request (identifier and sequence number as the kernel's ping sets them)."""
    message = icmpv4.encode(icmpv4.ECHO_REQUEST, 0, ident << 16 | seq, data)
    return ipv4_frame(dst, ipv4.PROTO_ICMP, message, src=src)


def icmp6_frame(
    dst: bytes,
    type_: int,
    body: bytes,
    *,
    code: int = 0,
    rest: int = 0,
    src: bytes = GUEST6,
    hop_limit: int = 255,
) -> bytes:
    """An ICMPv6 message; hop limit 255 by default, as NDP requires (RFC 4861 §6.1.1, §7.1.1)."""
    message = icmpv6.encode(src, dst, type_, code, rest, body)
    return ipv6_frame(dst, icmpv6.NEXT_HEADER, message, src=src, hop_limit=hop_limit)


def reference_sum(data: bytes | bytearray, initial: int = 0) -> int:
    """The Internet checksum's one's-complement sum, as RFC 1071 §4.1's sample code computes it
    (16-bit words, carries folded back in): written independently of the package's."""
    if len(data) % 2:
        data = bytes(data) + b"\x00"  # a copy: never pad the caller's bytearray
    total = initial
    for (word,) in struct.iter_unpack("!H", data):
        total += word
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total
