"""Round trips of every wire module on frames captured from a Linux 6.x guest, and robustness.

The frames were read from a tap device without offloads (so the kernel filled in every checksum):
an ARP request, ICMP echo, TCP SYN and UDP over IPv4 and IPv6, an MLDv2 report (hop-by-hop
header), a router solicitation and a DHCPDISCOVER from busybox udhcpc 1.35.0. Their checksums were
computed by the kernel and udhcpc, so encoders that reproduce them byte for byte are checked
independently of our checksum code.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyslirp4netns.wire import (
    arp,
    dhcp,
    ethernet,
    icmpv4,
    icmpv6,
    ipv4,
    ipv6,
    tcp,
    udp,
    vnet,
)
from pyslirp4netns.wire.codec import WireError, ipv4_pseudo_sum, ones_sum, pseudo_sum
from tests.rig.frames import reference_sum

GUEST_MAC = bytes.fromhex("d28ec16a550f")
GATEWAY_MAC = bytes.fromhex("52550a000202")
GUEST4 = bytes((10, 0, 2, 100))
GATEWAY4 = bytes((10, 0, 2, 2))
DNS4 = bytes((10, 0, 2, 3))
GUEST6 = bytes.fromhex("fd000000000000000000000000000100")
GATEWAY6 = bytes.fromhex("fd000000000000000000000000000002")
LINK_LOCAL6 = bytes.fromhex("fe80000000000000d08ec1fffe6a550f")


def frame(*chunks: str) -> bytes:
    return bytes.fromhex("".join(chunks))


ARP_REQUEST = frame(
    "ffffffffffffd28ec16a550f08060001080006040001d28ec16a550f0a0002640000000000000a000203"
)
ICMP_ECHO = frame(
    "52550a000202d28ec16a550f08004500002cb99f4000400168cc0a0002640a0002020800864e7a930000a7d44f490000",
    "00000000000000000000",
)
TCP_SYN = frame(
    "52550a000202d28ec16a550f08004500003c0eab4000400613ac0a0002640a000202e6661f90708598bf00000000a002",
    "faf0cc410000020405b40402080af18567a3000000000103030a",
)
UDP4 = frame(
    "52550a000202d28ec16a550f080045000029603140004011c22d0a0002640a0002028a3814e90015faf168656c6c6f2c",
    "20736c6972700a",
)
UDP6 = frame(
    "52550a000202d28ec16a550f86dd60095319000b1140fd000000000000000000000000000100fd000000000000000000",
    "00000000000281a414e9000bcfdd686936",
)
TCP6_SYN = frame(
    "52550a000202d28ec16a550f86dd600ad0e400280640fd000000000000000000000000000100fd000000000000000000",
    "000000000002e30c1f9070b1f96400000000a002fd20ec940000020405a00402080a1b90db14000000000103030a",
)
ICMP6_ECHO = frame(
    "52550a000202d28ec16a550f86dd6001f45d00103a40fd000000000000000000000000000100fd000000000000000000",
    "0000000000028000ba577ac90000df46704900000000",
)
MLD_REPORT = frame(
    "333300000016d28ec16a550f86dd6000000000380001fe80000000000000d08ec1fffe6a550fff020000000000000000",
    "0000000000163a000502000001008f00326d0000000204000000ff0200000000000000000001ff00010004000000ff02",
    "00000000000000000001ff6a550f",
)
ROUTER_SOLICITATION = frame(
    "333300000002d28ec16a550f86dd6000000000103afffe80000000000000d08ec1fffe6a550fff020000000000000000",
    "0000000000028500ad1c000000000101d28ec16a550f",
)
DHCP_DISCOVER = frame(
    "ffffffffffffd28ec16a550f08004500014800000000401179a600000000ffffffff0044004301348886010106002b5b",
    "93030000000000000000000000000000000000000000d28ec16a550f0000000000000000000000000000000000000000",
    "00" * 144,
    "000000000000000000000000000000000000000000000000000000000000000000000000000063825363350101390202",
    "4037070103060c0f1c2a3c0c756468637020312e33352e303d0701d28ec16a550fff0000000000000000000000000000",
    "000000000000",
)
FRAMES = {
    "arp": ARP_REQUEST,
    "icmp": ICMP_ECHO,
    "tcp_syn": TCP_SYN,
    "udp4": UDP4,
    "udp6": UDP6,
    "tcp6_syn": TCP6_SYN,
    "icmp6": ICMP6_ECHO,
    "mld": MLD_REPORT,
    "rs": ROUTER_SOLICITATION,
    "dhcp": DHCP_DISCOVER,
}


def test_frames_are_the_captured_lengths() -> None:
    lengths = {name: len(f) for name, f in FRAMES.items()}
    assert lengths == {
        "arp": 42,
        "icmp": 58,
        "tcp_syn": 74,
        "udp4": 55,
        "udp6": 65,
        "tcp6_syn": 94,
        "icmp6": 70,
        "mld": 110,
        "rs": 70,
        "dhcp": 342,
    }


# virtio_net_hdr


def test_vnet_decodes_tso_header() -> None:
    # A guest TSO super-frame: NEEDS_CSUM, TCPV4, 66 header bytes, MSS 1448, csum at 34+16.
    raw = bytes.fromhex("01014200a80522001000")
    h = vnet.decode(raw)
    assert h == vnet.VnetRepr(vnet.NEEDS_CSUM, vnet.GSO_TCPV4, 66, 1448, 34, 16)
    assert vnet.encode(*h) == raw
    assert vnet.decode(b"\xff" + raw, 1) == h


def test_vnet_plain_header_is_ten_zero_bytes() -> None:
    assert vnet.PLAIN == bytes(10) and vnet.SIZE == 10
    with pytest.raises(WireError):
        vnet.decode(bytes(9))


def test_vnet_constants() -> None:
    assert (vnet.NEEDS_CSUM, vnet.DATA_VALID) == (1, 2)
    assert (vnet.GSO_NONE, vnet.GSO_TCPV4, vnet.GSO_UDP, vnet.GSO_TCPV6) == (0, 1, 3, 4)
    assert (vnet.GSO_UDP_L4, vnet.GSO_ECN) == (5, 0x80)


# Ethernet


def test_ethernet_decodes_broadcast_arp() -> None:
    eth = ethernet.decode(ARP_REQUEST)
    assert eth == ethernet.EthernetRepr(
        ethernet.BROADCAST, GUEST_MAC, ethernet.ETHERTYPE_ARP, None, 14
    )
    assert ethernet.encode(eth.dst, eth.src, eth.ethertype) == ARP_REQUEST[:14]
    buf = bytearray(16)
    ethernet.encode_into(buf, 2, eth.dst, eth.src, eth.ethertype)
    assert bytes(buf[2:]) == ARP_REQUEST[:14]


@pytest.mark.parametrize("tpid", [ethernet.ETHERTYPE_VLAN, ethernet.ETHERTYPE_QINQ])
def test_ethernet_reports_vlan_tag(tpid: int) -> None:
    tagged = TCP_SYN[:12] + tpid.to_bytes(2, "big") + b"\x20\x64" + TCP_SYN[12:]
    eth = ethernet.decode(tagged)
    assert eth.vlan == 0x2064 and eth.vlan & ethernet.VLAN_VID_MASK == 100
    assert eth.ethertype == ethernet.ETHERTYPE_IPV4
    assert eth.payload_offset == 18
    assert ipv4.decode(tagged, eth.payload_offset).protocol == ipv4.PROTO_TCP
    with pytest.raises(WireError):
        ethernet.decode(tagged[:17])


def test_ethernet_untagged_frames_have_no_vlan() -> None:
    assert ethernet.decode(UDP6).ethertype == ethernet.ETHERTYPE_IPV6
    assert ethernet.decode(UDP6).vlan is None


# ARP


def test_arp_decodes_request() -> None:
    a = arp.decode(ARP_REQUEST, 14)
    assert a == arp.ArpRepr(arp.REQUEST, GUEST_MAC, GUEST4, bytes(6), DNS4)
    assert arp.request(GUEST_MAC, GUEST4, DNS4) == ARP_REQUEST[14:]


def test_arp_reply_layout() -> None:
    dns_mac = bytes.fromhex("52550a000203")
    expected = bytes.fromhex("000108000604000252550a0002030a000203d28ec16a550f0a000264")
    assert arp.reply(dns_mac, DNS4, GUEST_MAC, GUEST4) == expected
    assert arp.decode(expected) == arp.ArpRepr(arp.REPLY, dns_mac, DNS4, GUEST_MAC, GUEST4)


@pytest.mark.parametrize(
    "offset, value",
    [(0, b"\x00\x06"), (2, b"\x86\xdd"), (4, b"\x08"), (5, b"\x10"), (6, b"\x00\x03")],
    ids=["htype", "ptype", "hlen", "plen", "oper"],
)
def test_arp_rejects_anything_but_ethernet_ipv4(offset: int, value: bytes) -> None:
    packet = bytearray(ARP_REQUEST[14:])
    packet[offset : offset + len(value)] = value
    with pytest.raises(WireError):
        arp.decode(packet)


# IPv4


def test_ipv4_decodes_syn_header() -> None:
    ip = ipv4.decode(TCP_SYN, 14)
    assert ip == ipv4.Ipv4Repr(
        src=GUEST4,
        dst=GATEWAY4,
        protocol=ipv4.PROTO_TCP,
        ttl=64,
        identification=0x0EAB,
        tos=0,
        dont_fragment=True,
        more_fragments=False,
        fragment_offset=0,
        header_length=20,
        total_length=60,
        options=b"",
        payload_offset=34,
        payload_length=40,
    )


@pytest.mark.parametrize("name", ["tcp_syn", "udp4", "icmp", "dhcp"])
def test_ipv4_encode_reproduces_kernel_header(name: str) -> None:
    f = FRAMES[name]
    ip = ipv4.decode(memoryview(f), 14)
    header = ipv4.encode(
        ip.src,
        ip.dst,
        ip.protocol,
        ip.payload_length,
        ttl=ip.ttl,
        identification=ip.identification,
        dont_fragment=ip.dont_fragment,
    )
    assert header == f[14:34]


def test_ipv4_ignores_ethernet_padding() -> None:
    ip = ipv4.decode(UDP4 + bytes(5), 14)
    assert ip.payload_offset + ip.payload_length == len(UDP4)


def test_ipv4_fragment_fields_round_trip() -> None:
    header = ipv4.encode(GATEWAY4, GUEST4, 17, 1480, identification=7, more_fragments=True)
    ip = ipv4.decode(header + bytes(1480))
    assert (ip.more_fragments, ip.fragment_offset, ip.dont_fragment) == (True, 0, False)
    header = ipv4.encode(GATEWAY4, GUEST4, 17, 8, identification=7, fragment_offset=2960)
    ip = ipv4.decode(header + bytes(8))
    assert (ip.more_fragments, ip.fragment_offset) == (False, 2960)
    assert reference_sum(header) == 0xFFFF
    with pytest.raises(ValueError):
        ipv4.encode(GATEWAY4, GUEST4, 17, 8, fragment_offset=3)


def test_ipv4_options_are_returned_raw() -> None:
    header = bytearray(b"\x46" + TCP_SYN[15:34] + b"\x83\x03\x04\x00")  # loose source route
    header[2:4] = (24 + 40).to_bytes(2, "big")
    ipv4.set_checksum(header)
    assert reference_sum(header) == 0xFFFF
    ip = ipv4.decode(bytes(header) + TCP_SYN[34:])
    assert ip.options == b"\x83\x03\x04\x00"
    assert (ip.header_length, ip.payload_offset, ip.payload_length) == (24, 24, 40)


def test_ipv4_set_checksum_after_patching_template() -> None:
    template = bytearray(TCP_SYN[14:34])
    template[4:6] = b"\x12\x34"  # new identification
    ipv4.set_checksum(template)
    assert ipv4.decode(bytes(template) + bytes(40)).identification == 0x1234
    assert reference_sum(template) == 0xFFFF


@pytest.mark.parametrize(
    "patch, reason",
    [
        ({0: 0x65}, "version"),
        ({0: 0x44}, "IHL"),
        ({2: 0x00, 3: 0x13}, "total length < header"),
        ({2: 0x00, 3: 0x3D}, "total length > buffer"),
        ({11: 0x00}, "checksum"),
    ],
)
def test_ipv4_rejects_malformed_header(patch: dict[int, int], reason: str) -> None:
    packet = bytearray(TCP_SYN[14:])
    for index, value in patch.items():
        packet[index] = value
    if reason not in ("checksum", "IHL"):
        ipv4.set_checksum(packet)
    with pytest.raises(WireError):
        ipv4.decode(packet)


# IPv6


def test_ipv6_decodes_udp_header() -> None:
    ip = ipv6.decode(UDP6, 14)
    assert ip == ipv6.Ipv6Repr(GUEST6, GATEWAY6, ipv6.NEXT_UDP, 64, 0, 0x95319, 54, 11)
    assert ipv6.walk_extensions(UDP6, ip) == ipv6.Ipv6Upper(ipv6.NEXT_UDP, 54, 11, None)


@pytest.mark.parametrize("name", ["udp6", "tcp6_syn", "icmp6", "mld", "rs"])
def test_ipv6_encode_reproduces_kernel_header(name: str) -> None:
    f = FRAMES[name]
    ip = ipv6.decode(f, 14)
    header = ipv6.encode(
        ip.src,
        ip.dst,
        ip.next_header,
        ip.payload_length,
        hop_limit=ip.hop_limit,
        traffic_class=ip.traffic_class,
        flow_label=ip.flow_label,
    )
    assert header == f[14:54]


def test_ipv6_walks_hop_by_hop_to_mld_report() -> None:
    ip = ipv6.decode(MLD_REPORT, 14)
    assert ip.next_header == ipv6.NEXT_HOP_BY_HOP and ip.hop_limit == 1
    upper = ipv6.walk_extensions(MLD_REPORT, ip)
    assert upper == ipv6.Ipv6Upper(ipv6.NEXT_ICMPV6, 62, 48, None)
    msg = icmpv6.decode(MLD_REPORT, upper.offset, upper.length, ip.src, ip.dst)
    assert msg.type == 143  # MLDv2 report (RFC 3810 §5.2)


def ipv6_packet(next_header: int, payload: bytes) -> bytes:
    return ipv6.encode(GUEST6, GATEWAY6, next_header, len(payload)) + payload


def test_ipv6_fragment_header_fields() -> None:
    # Second fragment at byte 1448 with more to come: offset 181 (8-byte units) << 3 | M.
    fragment = bytes((ipv6.NEXT_UDP, 0)) + ((181 << 3) | 1).to_bytes(2, "big") + b"\xde\xad\xbe\xef"
    options = bytes((ipv6.NEXT_FRAGMENT, 0, 1, 4, 0, 0, 0, 0))  # destination options, PadN
    packet = ipv6_packet(ipv6.NEXT_DEST_OPTS, options + fragment + bytes(16))
    upper = ipv6.walk_extensions(packet, ipv6.decode(packet))
    assert upper == ipv6.Ipv6Upper(ipv6.NEXT_UDP, 56, 16, ipv6.Ipv6Fragment(1448, True, 0xDEADBEEF))


def test_ipv6_extension_walk_is_bounded() -> None:
    options = bytes((ipv6.NEXT_DEST_OPTS, 0, 1, 4, 0, 0, 0, 0))
    packet = ipv6_packet(ipv6.NEXT_DEST_OPTS, options * 7 + bytes((17, 0, 1, 4, 0, 0, 0, 0)))
    assert ipv6.walk_extensions(packet, ipv6.decode(packet)).protocol == 17  # 8 headers: fine
    packet = ipv6_packet(ipv6.NEXT_DEST_OPTS, options * 8 + bytes((17, 0, 1, 4, 0, 0, 0, 0)))
    with pytest.raises(WireError):
        ipv6.walk_extensions(packet, ipv6.decode(packet))


@pytest.mark.parametrize(
    "next_header, payload",
    [
        (ipv6.NEXT_DEST_OPTS, bytes((ipv6.NEXT_HOP_BY_HOP, 0)) + bytes(6) + bytes(8)),
        (ipv6.NEXT_ROUTING, bytes((17, 1)) + bytes(6)),  # claims 16 bytes, has 8
        (ipv6.NEXT_HOP_BY_HOP, b"\x11"),
        (ipv6.NEXT_FRAGMENT, bytes(7)),
    ],
    ids=["hop-by-hop-not-first", "overrun", "truncated", "short-fragment"],
)
def test_ipv6_rejects_malformed_extension_headers(next_header: int, payload: bytes) -> None:
    packet = ipv6_packet(next_header, payload)
    with pytest.raises(WireError):
        ipv6.walk_extensions(packet, ipv6.decode(packet))


def test_ipv6_rejects_bad_version_and_length() -> None:
    with pytest.raises(WireError):
        ipv6.decode(UDP6[:-1], 14)
    with pytest.raises(WireError):
        ipv6.decode(UDP4, 14)


# ICMPv4


def test_icmpv4_decodes_echo_request() -> None:
    ip = ipv4.decode(ICMP_ECHO, 14)
    msg = icmpv4.decode(ICMP_ECHO, ip.payload_offset, ip.payload_length)
    assert (msg.type, msg.code, msg.identifier, msg.sequence) == (icmpv4.ECHO_REQUEST, 0, 0x7A93, 0)
    assert (msg.payload_offset, msg.payload_length) == (42, 16)


def test_icmpv4_echo_reply_checksum_follows_rfc1624() -> None:
    msg = icmpv4.decode(ICMP_ECHO, 34)
    data = ICMP_ECHO[msg.payload_offset :]
    reply = icmpv4.echo_reply(msg.identifier, msg.sequence, data)
    # Type 8 -> 0 lowers the sum by 0x0800, so the checksum rises by 0x0800: 0x864e -> 0x8e4e.
    assert reply == bytes.fromhex("00008e4e7a930000") + data
    assert icmpv4.decode(reply).type == icmpv4.ECHO_REPLY


def test_icmpv4_port_unreachable_quotes_header_and_eight_bytes() -> None:
    original = UDP4[14:]
    msg = icmpv4.dest_unreachable(icmpv4.PORT_UNREACHABLE, original)
    assert msg[:8] == bytes((3, 3)) + msg[2:4] + bytes(4)
    assert msg[8:] == original[:28]
    assert reference_sum(msg) == 0xFFFF
    frag = icmpv4.dest_unreachable(icmpv4.FRAGMENTATION_NEEDED, memoryview(original), 1400)
    assert icmpv4.decode(frag).rest == 1400


def test_icmpv4_rejects_bad_checksum_and_short_message() -> None:
    bad = bytearray(ICMP_ECHO[34:])
    bad[-1] ^= 1
    with pytest.raises(WireError):
        icmpv4.decode(bad)
    with pytest.raises(WireError):
        icmpv4.decode(ICMP_ECHO[34:41])
    with pytest.raises(WireError):
        icmpv4.decode(ICMP_ECHO, 34, 25)  # longer than the buffer


# ICMPv6


def test_icmpv6_echo_reply_checksum_follows_rfc1624() -> None:
    ip = ipv6.decode(ICMP6_ECHO, 14)
    msg = icmpv6.decode(ICMP6_ECHO, ip.payload_offset, ip.payload_length, ip.src, ip.dst)
    assert (msg.type, msg.identifier, msg.sequence) == (icmpv6.ECHO_REQUEST, 0x7AC9, 0)
    data = ICMP6_ECHO[msg.payload_offset :]
    reply = icmpv6.echo_reply(ip.dst, ip.src, msg.identifier, msg.sequence, data)
    # Type 128 -> 129 raises the sum by 0x0100: checksum 0xba57 -> 0xb957.
    assert reply == bytes.fromhex("8100b9577ac90000") + data
    assert icmpv6.decode(reply, 0, len(reply), ip.dst, ip.src).type == icmpv6.ECHO_REPLY


def test_icmpv6_decodes_router_solicitation() -> None:
    ip = ipv6.decode(ROUTER_SOLICITATION, 14)
    assert ip.hop_limit == 255
    msg = icmpv6.decode(ROUTER_SOLICITATION, 54, ip.payload_length, ip.src, ip.dst)
    assert msg.type == icmpv6.ROUTER_SOLICITATION
    assert ROUTER_SOLICITATION[msg.payload_offset :] == b"\x01\x01" + GUEST_MAC


def test_icmpv6_unreachable_fits_minimum_mtu() -> None:
    original = ipv6_packet(ipv6.NEXT_UDP, bytes(2000))
    msg = icmpv6.dest_unreachable(GATEWAY6, GUEST6, icmpv6.PORT_UNREACHABLE, original)
    assert 40 + len(msg) == 1280
    assert msg[8:] == original[:1232]
    decoded = icmpv6.decode(msg, 0, len(msg), GATEWAY6, GUEST6)
    assert (decoded.type, decoded.code) == (icmpv6.DEST_UNREACHABLE, icmpv6.PORT_UNREACHABLE)
    pseudo = GATEWAY6 + GUEST6 + len(msg).to_bytes(4, "big") + bytes((0, 0, 0, 58))
    assert reference_sum(pseudo + msg) == 0xFFFF


def test_icmpv6_rejects_wrong_pseudo_header() -> None:
    with pytest.raises(WireError):
        icmpv6.decode(ICMP6_ECHO, 54, 16, GUEST6, LINK_LOCAL6)
    with pytest.raises(WireError):
        icmpv6.decode(ICMP6_ECHO, 54, 7, GUEST6, GATEWAY6)


# UDP


@pytest.mark.parametrize("name, ip_size", [("udp4", 20), ("udp6", 40)])
def test_udp_decode_and_encode_match_kernel(name: str, ip_size: int) -> None:
    f = FRAMES[name]
    start = 14 + ip_size
    u = udp.decode(f, start)
    src, dst = (GUEST4, GATEWAY4) if ip_size == 20 else (GUEST6, GATEWAY6)
    payload = f[u.payload_offset : u.payload_offset + u.payload_length]
    assert u.dst_port == 5353 and payload in (b"hello, slirp\n", b"hi6")
    assert udp.checksum_ok(f, u, src, dst)
    assert udp.encode(src, dst, u.src_port, u.dst_port, payload) == f[start : start + 8]
    assert not udp.checksum_ok(f, u, dst, dst)


def test_udp_partial_checksum_holds_pseudo_header_sum() -> None:
    header = udp.encode(GATEWAY4, GUEST4, 53, 40000, b"abc", partial=True)
    assert int.from_bytes(header[6:8], "big") == ipv4_pseudo_sum(GATEWAY4, GUEST4, 17, 11)


def test_udp_computed_zero_checksum_is_sent_as_ffff() -> None:
    # Choose a 2-byte payload that makes the one's complement sum 0xffff (checksum 0).
    rest = ones_sum(udp.UDP.pack(1, 2, 10, 0), pseudo_sum(GATEWAY4, GUEST4, 17, 10))
    payload = (0xFFFF - rest).to_bytes(2, "big")
    header = udp.encode(GATEWAY4, GUEST4, 1, 2, payload)
    assert header[6:8] == b"\xff\xff"
    assert udp.checksum_ok(header + payload, udp.decode(header + payload), GATEWAY4, GUEST4)


def test_udp_zero_checksum_means_none_over_ipv4_only() -> None:
    datagram = udp.UDP.pack(1, 2, 9, 0) + b"x"
    u = udp.decode(datagram)
    assert udp.checksum_ok(datagram, u, GUEST4, GATEWAY4)
    assert not udp.checksum_ok(datagram, u, GUEST6, GATEWAY6)  # RFC 8200 §8.1


def test_udp_length_field_is_checked() -> None:
    assert udp.decode(UDP4 + bytes(4), 34).payload_length == 13  # trailing bytes ignored
    with pytest.raises(WireError):
        udp.decode(UDP4, 34, 20)  # UDP length 21 > IP payload 20
    with pytest.raises(WireError):
        udp.decode(udp.UDP.pack(1, 2, 7, 0))
    with pytest.raises(WireError):
        udp.decode(UDP4, 34, 22)  # IP payload longer than the buffer


# TCP


def test_tcp_decodes_linux_syn() -> None:
    seg = tcp.decode(TCP_SYN, 34)
    assert (seg.src_port, seg.dst_port, seg.seq, seg.ack) == (0xE666, 8080, 0x708598BF, 0)
    assert seg.flags == tcp.SYN and seg.window == 64240
    assert (seg.payload_offset, seg.payload_length) == (74, 0)
    assert tcp.checksum_ok(TCP_SYN, 34, 40, GUEST4, GATEWAY4)
    assert tcp.parse_options(seg.options) == tcp.TcpOptions(
        mss=1460, window_scale=10, sack_permitted=True, timestamp=(0xF18567A3, 0)
    )


@pytest.mark.parametrize(
    "name, ip_size, src, dst",
    [("tcp_syn", 20, GUEST4, GATEWAY4), ("tcp6_syn", 40, GUEST6, GATEWAY6)],
)
def test_tcp_encode_reproduces_linux_syn(name: str, ip_size: int, src: bytes, dst: bytes) -> None:
    f = FRAMES[name]
    start = 14 + ip_size
    seg = tcp.decode(f, start)
    opts = tcp.parse_options(seg.options)
    options = tcp.encode_options(
        mss=opts.mss,
        window_scale=opts.window_scale,
        sack_permitted=opts.sack_permitted,
        timestamp=opts.timestamp,
    )
    assert options == seg.options
    header = tcp.encode(
        src,
        dst,
        seg.src_port,
        seg.dst_port,
        seg.seq,
        seg.ack,
        seg.flags,
        seg.window,
        options=options,
    )
    assert header == f[start:]


def test_tcp_segment_with_payload_checksums() -> None:
    payload = b"GET / HTTP/1.0\r\n\r\n"
    header = tcp.encode(
        GATEWAY4, GUEST4, 80, 40000, 1000, 2000, tcp.ACK | tcp.PSH, 65535, memoryview(payload)
    )
    segment = header + payload
    assert tcp.checksum_ok(segment, 0, len(segment), GATEWAY4, GUEST4)
    pseudo = GATEWAY4 + GUEST4 + bytes((0, 6)) + len(segment).to_bytes(2, "big")
    assert reference_sum(pseudo + segment) == 0xFFFF
    seg = tcp.decode(segment)
    assert segment[seg.payload_offset :] == payload and seg.flags == tcp.ACK | tcp.PSH


def test_tcp_partial_checksum_is_finished_like_the_tap_does() -> None:
    payload = bytes(range(256)) * 5
    header = tcp.encode(GATEWAY6, GUEST6, 80, 40000, 1, 2, tcp.ACK, 512, payload, partial=True)
    # virtio NEEDS_CSUM: checksum from csum_start to the end, stored at csum_offset.
    segment = bytearray(header + payload)
    value = 0xFFFF - ones_sum(segment)
    segment[tcp.CHECKSUM_OFFSET : tcp.CHECKSUM_OFFSET + 2] = value.to_bytes(2, "big")
    assert tcp.checksum_ok(segment, 0, len(segment), GATEWAY6, GUEST6)


def test_tcp_options_layouts() -> None:
    assert tcp.encode_options(mss=1460) == bytes.fromhex("020405b4")
    assert tcp.encode_options(sack_permitted=True, window_scale=7) == bytes.fromhex(
        "0103030701010402"
    )
    sack = tcp.encode_options(sack_blocks=((1, 2), (3, 4)))
    assert sack == bytes.fromhex("0101051200000001000000020000000300000004")
    assert tcp.parse_options(sack).sack_blocks == ((1, 2), (3, 4))
    with pytest.raises(ValueError):
        tcp.encode_options(timestamp=(1, 2), sack_blocks=((1, 2),) * 4)


@pytest.mark.parametrize(
    "raw, expected",
    [
        (b"", tcp.TcpOptions()),
        (b"\x1e\x04\xab\xcd\x02\x04\x05\xb4", tcp.TcpOptions(mss=1460)),  # unknown kind skipped
        (b"\x00\x02\x04\x05\xb4", tcp.TcpOptions()),  # EOL ends the list
        (b"\x01\x03\x03\x0f", tcp.TcpOptions(window_scale=14)),  # RFC 7323 §2.3
    ],
)
def test_tcp_parse_options(raw: bytes, expected: tcp.TcpOptions) -> None:
    assert tcp.parse_options(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        b"\x1e\x00",  # zero length
        b"\x1e\x01",  # length shorter than kind + length
        b"\x1e\x06\x00\x00",  # overruns
        b"\x01\x02",  # kind without length
        b"\x02\x03\x05",  # MSS with the wrong length
        b"\x03\x04\x00\x00",
        b"\x04\x03\x00",
        b"\x08\x08" + bytes(6),
        b"\x05\x02",  # SACK without blocks
        b"\x05\x0b" + bytes(9),  # SACK not a whole number of blocks
    ],
)
def test_tcp_parse_options_rejects_bad_lengths(raw: bytes) -> None:
    with pytest.raises(WireError):
        tcp.parse_options(raw)


def test_tcp_rejects_bad_data_offset() -> None:
    segment = bytearray(TCP_SYN[34:])
    segment[12] = 0x40  # 16 bytes < 20
    with pytest.raises(WireError):
        tcp.decode(segment)
    segment[12] = 0xB0  # 44 bytes > 40 available
    with pytest.raises(WireError):
        tcp.decode(segment)
    with pytest.raises(ValueError):
        tcp.encode(GUEST4, GATEWAY4, 1, 2, 3, 4, tcp.SYN, 5, options=b"\x01")


# DHCP


def test_dhcp_decodes_udhcpc_discover() -> None:
    ip = ipv4.decode(DHCP_DISCOVER, 14)
    assert (ip.src, ip.dst) == (bytes(4), b"\xff" * 4)
    u = udp.decode(DHCP_DISCOVER, ip.payload_offset, ip.payload_length)
    assert (u.src_port, u.dst_port) == (dhcp.CLIENT_PORT, dhcp.SERVER_PORT)
    assert udp.checksum_ok(DHCP_DISCOVER, u, ip.src, ip.dst)
    msg = dhcp.decode(DHCP_DISCOVER, u.payload_offset, u.payload_length)
    assert (msg.op, msg.xid, msg.flags, msg.chaddr) == (dhcp.BOOTREQUEST, 0x2B5B9303, 0, GUEST_MAC)
    assert msg.message_type == dhcp.DISCOVER
    assert msg.options == {
        53: b"\x01",
        57: b"\x02\x40",
        55: bytes.fromhex("0103060c0f1c2a"),
        60: b"udhcp 1.35.0",
        61: b"\x01" + GUEST_MAC,
    }


def test_dhcp_offer_round_trip() -> None:
    offer = dhcp.encode_reply(
        xid=0x2B5B9303,
        chaddr=GUEST_MAC,
        message_type=dhcp.OFFER,
        server_id=GATEWAY4,
        yiaddr=bytes((10, 0, 2, 15)),
        siaddr=GATEWAY4,
        lease_time=86400,
        subnet_mask=bytes((255, 255, 255, 0)),
        router=GATEWAY4,
        dns=[DNS4, GATEWAY4],
    )
    assert len(offer) == dhcp.MIN_MESSAGE
    assert offer[236:240] == bytes.fromhex("63825363")
    assert offer[240:245] == bytes.fromhex("3501023604") and offer[28:34] == GUEST_MAC
    msg = dhcp.decode(offer)
    assert (msg.op, msg.xid, msg.yiaddr, msg.siaddr) == (
        dhcp.BOOTREPLY,
        0x2B5B9303,
        bytes((10, 0, 2, 15)),
        GATEWAY4,
    )
    assert msg.message_type == dhcp.OFFER
    assert msg.options == {
        53: b"\x02",
        54: GATEWAY4,
        51: (86400).to_bytes(4, "big"),
        1: b"\xff\xff\xff\x00",
        3: GATEWAY4,
        6: DNS4 + GATEWAY4,
    }


def test_dhcp_nak_carries_only_type_and_server() -> None:
    nak = dhcp.encode_reply(xid=1, chaddr=GUEST_MAC, message_type=dhcp.NAK, server_id=GATEWAY4)
    assert dhcp.decode(nak).options == {53: b"\x06", 54: GATEWAY4}


def test_dhcp_constants() -> None:
    types = [dhcp.DISCOVER, dhcp.OFFER, dhcp.REQUEST, dhcp.DECLINE, dhcp.ACK, dhcp.NAK]
    assert types + [dhcp.RELEASE, dhcp.INFORM] == list(range(1, 9))


@pytest.mark.parametrize(
    "raw, expected",
    [
        (b"\x00\x00\x35\x01\x03\xff\x01\x01", {53: b"\x03"}),  # PAD skipped, END stops
        (b"\x0c\x02ab\x0c\x01c", {12: b"abc"}),  # repeats concatenate (RFC 3396), no END
        (b"\x0c\x00", {12: b""}),
    ],
)
def test_dhcp_parse_options(raw: bytes, expected: dict[int, bytes]) -> None:
    assert dhcp.parse_options(raw) == expected


@pytest.mark.parametrize("raw", [b"\x35", b"\x35\x02\x01", b"\x0c\xff" + bytes(10)])
def test_dhcp_parse_options_rejects_overruns(raw: bytes) -> None:
    with pytest.raises(WireError):
        dhcp.parse_options(raw)


@pytest.mark.parametrize(
    "offset, value",
    [(0, 3), (1, 6), (2, 16), (236, 0), (241, 2)],
    ids=["op", "htype", "hlen", "cookie", "message-type-length"],
)
def test_dhcp_rejects_malformed_message(offset: int, value: int) -> None:
    message = bytearray(DHCP_DISCOVER[42:])
    message[offset] = value
    with pytest.raises(WireError):
        dhcp.decode(message)


# Robustness: nothing but WireError escapes, on truncations, random bytes and mutations.


def decode_frame(f: bytes | memoryview) -> None:
    """Every decoder on the path a frame takes through the stack."""
    eth = ethernet.decode(f)
    at = eth.payload_offset
    if eth.ethertype == ethernet.ETHERTYPE_ARP:
        arp.decode(f, at)
        return
    if eth.ethertype == ethernet.ETHERTYPE_IPV4:
        ip4 = ipv4.decode(f, at)
        proto, src, dst = ip4.protocol, ip4.src, ip4.dst
        at, length = ip4.payload_offset, ip4.payload_length
    elif eth.ethertype == ethernet.ETHERTYPE_IPV6:
        ip6 = ipv6.decode(f, at)
        upper = ipv6.walk_extensions(f, ip6)
        proto, src, dst, at, length = upper.protocol, ip6.src, ip6.dst, upper.offset, upper.length
    else:
        return
    if proto == tcp.PROTOCOL:
        seg = tcp.decode(f, at, length)
        tcp.parse_options(seg.options)
        tcp.checksum_ok(f, at, length, src, dst)
    elif proto == udp.PROTOCOL:
        u = udp.decode(f, at, length)
        udp.checksum_ok(f, u, src, dst)
        if u.dst_port == dhcp.SERVER_PORT:
            dhcp.decode(f, u.payload_offset, u.payload_length)
    elif proto == ipv4.PROTO_ICMP:
        icmpv4.decode(f, at, length)
    elif proto == ipv6.NEXT_ICMPV6:
        icmpv6.decode(f, at, length, src, dst)


@pytest.mark.parametrize("name", FRAMES)
def test_every_frame_decodes_fully(name: str) -> None:
    decode_frame(FRAMES[name])
    decode_frame(memoryview(vnet.PLAIN + FRAMES[name])[vnet.SIZE :])


@pytest.mark.parametrize("name", FRAMES)
def test_every_truncation_raises_wire_error(name: str) -> None:
    f = FRAMES[name]
    for n in range(len(f)):
        with pytest.raises(WireError):
            decode_frame(f[:n])
        with pytest.raises(WireError):
            decode_frame(memoryview(f)[:n])


def only_wire_errors(call: Callable[[], Any]) -> None:
    try:
        call()
    except WireError:
        pass


@given(st.binary(max_size=400))
def test_random_bytes_raise_only_wire_error(raw: bytes) -> None:
    only_wire_errors(lambda: decode_frame(raw))
    only_wire_errors(lambda: vnet.decode(raw))
    only_wire_errors(lambda: arp.decode(raw))
    only_wire_errors(lambda: ipv4.decode(raw))
    only_wire_errors(lambda: tcp.decode(raw))
    only_wire_errors(lambda: tcp.parse_options(raw))
    only_wire_errors(lambda: udp.decode(raw))
    only_wire_errors(lambda: icmpv4.decode(raw))
    only_wire_errors(lambda: icmpv6.decode(raw, 0, len(raw), GUEST6, GATEWAY6))
    only_wire_errors(lambda: dhcp.parse_options(raw))
    only_wire_errors(lambda: dhcp.decode(DHCP_DISCOVER[42:282] + raw))
    fake = ipv6.Ipv6Repr(GUEST6, GATEWAY6, raw[0] if raw else 0, 64, 0, 0, 1, len(raw) - 1)
    only_wire_errors(lambda: ipv6.walk_extensions(raw, fake))


@given(
    st.sampled_from(sorted(FRAMES)),
    st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), min_size=1, max_size=4),
)
def test_mutated_frames_raise_only_wire_error(name: str, edits: list[tuple[int, int]]) -> None:
    f = bytearray(FRAMES[name])
    for index, value in edits:
        f[index % len(f)] = value
    if f[12:14] == b"\x08\x00" and len(f) >= 34 and f[14] & 0x0F >= 5:
        ipv4.set_checksum(f, 14)  # reach past the header checksum
    only_wire_errors(lambda: decode_frame(bytes(f)))
