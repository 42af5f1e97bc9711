"""Stack units for UDP, ICMP echo to other hosts, fragments and IPv6: frames in, frames and
requests out, explicit ``now``."""

from __future__ import annotations

import random
import socket
from collections.abc import Sequence
from dataclasses import replace

import pytest

from pyslirp4netns.config import Config
from pyslirp4netns.core import events
from pyslirp4netns.core.datagrams import DNS_TIMEOUT, UDP_TIMEOUT
from pyslirp4netns.core.events import DatagramClose, DatagramOpen, DatagramSend, Log
from pyslirp4netns.core.fragments import Reassembler, fragment_ipv4
from pyslirp4netns.core.nat import Nameservers
from pyslirp4netns.core.stack import Stack
from pyslirp4netns.wire import ethernet, icmpv4, icmpv6, ipv4, ipv6, udp, vnet
from pyslirp4netns.wire.codec import Buffer, pseudo_sum
from pyslirp4netns.wire.numbers import ALL_NODES6

GUEST_MAC = bytes.fromhex("020000000001")
GUEST = bytes([10, 0, 2, 100])
GATEWAY = bytes([10, 0, 2, 2])
DNS = bytes([10, 0, 2, 3])
REMOTE = socket.inet_aton("198.51.100.10")
LOOPBACK = socket.inet_aton("127.0.0.1")
CONFIG = Config(target="1", pid=1)
GUEST6 = socket.inet_pton(socket.AF_INET6, "fd00::100")
LINK_GUEST6 = socket.inet_pton(socket.AF_INET6, "fe80::100")


def v6(text: str) -> bytes:
    return socket.inet_pton(socket.AF_INET6, text)


def joined(parts: Sequence[Buffer]) -> bytes:
    return b"".join(bytes(p) for p in parts)


def udp_frame(
    dst: bytes, dport: int, payload: bytes, sport: int = 40000, src: bytes = GUEST
) -> bytes:
    header = udp.encode(src, dst, sport, dport, payload)
    ip = ipv4.encode(src, dst, ipv4.PROTO_UDP, len(header) + len(payload), identification=9)
    eth = ethernet.encode(b"\x52\x55" + GATEWAY, GUEST_MAC, ethernet.ETHERTYPE_IPV4)
    return eth + ip + header + payload


def udp6_frame(dst: bytes, dport: int, payload: bytes, sport: int = 40000) -> bytes:
    header = udp.encode(GUEST6, dst, sport, dport, payload)
    ip = ipv6.encode(GUEST6, dst, ipv6.NEXT_UDP, len(header) + len(payload))
    eth = ethernet.encode(b"\x52\x56\x00\x00\x00\x02", GUEST_MAC, ethernet.ETHERTYPE_IPV6)
    return eth + ip + header + payload


def icmp6_frame(dst: bytes, message: bytes, src: bytes = LINK_GUEST6, hops: int = 255) -> bytes:
    ip = ipv6.encode(src, dst, icmpv6.NEXT_HEADER, len(message), hop_limit=hops)
    return ethernet.encode(ethernet.BROADCAST, GUEST_MAC, ethernet.ETHERTYPE_IPV6) + ip + message


def echo_frame(dst: bytes, data: bytes = b"abcdefgh", ident: int = 0x4242, seq: int = 5) -> bytes:
    message = icmpv4.encode(icmpv4.ECHO_REQUEST, 0, ident << 16 | seq, data)
    ip = ipv4.encode(GUEST, dst, ipv4.PROTO_ICMP, len(message))
    return ethernet.encode(b"\x52\x55" + GATEWAY, GUEST_MAC, ethernet.ETHERTYPE_IPV4) + ip + message


def take(stack: Stack) -> tuple[list[bytes], list[events.Request]]:
    frames = [joined(parts) for parts in stack.take_frames()]
    return frames, stack.take_requests()


def decode_udp4(frame: bytes) -> tuple[ipv4.Ipv4Repr, udp.UdpRepr, bytes]:
    eth = ethernet.decode(frame)
    ip = ipv4.decode(frame, eth.payload_offset)
    datagram = udp.decode(frame, ip.payload_offset, ip.payload_length)
    assert udp.checksum_ok(frame, datagram, ip.src, ip.dst)
    start = datagram.payload_offset
    return ip, datagram, frame[start : start + datagram.payload_length]


# -- UDP ----------------------------------------------------------------------------------
def test_udp_to_the_gateway_opens_one_flow_to_host_loopback() -> None:
    stack = Stack(CONFIG)
    stack.receive_frame(udp_frame(GATEWAY, 7777, b"one"), now=1.0)
    stack.receive_frame(udp_frame(GATEWAY, 7777, b"two"), now=2.0)
    frames, requests = take(stack)
    assert frames == []
    assert requests == [
        DatagramOpen(1, events.UDP, socket.AF_INET, LOOPBACK, 7777),
        DatagramSend(1, b"one"),
        DatagramSend(1, b"two"),
    ]


def test_host_reply_reaches_the_guest_from_the_address_it_used() -> None:
    stack = Stack(CONFIG)
    stack.receive_frame(udp_frame(GATEWAY, 7777, b"q"), now=0.0)
    take(stack)
    stack.datagrams.udp_received(1, b"answer", now=0.5)
    frames, requests = take(stack)
    assert requests == [] and len(frames) == 1
    ip, datagram, payload = decode_udp4(frames[0])
    assert (ip.src, ip.dst, datagram.src_port, datagram.dst_port) == (GATEWAY, GUEST, 7777, 40000)
    assert payload == b"answer"
    assert ethernet.decode(frames[0]).dst == GUEST_MAC


@pytest.mark.parametrize("mtu", [1500, 65520])
def test_largest_reply_is_fragmented_to_the_mtu_and_reassembles(mtu: int) -> None:
    stack = Stack(replace(CONFIG, mtu=mtu))
    stack.receive_frame(udp_frame(GATEWAY, 7777, b"q"), now=0.0)
    take(stack)
    data = random.Random(1).randbytes(65507)
    stack.datagrams.udp_received(1, data, now=0.0)
    frames, _ = take(stack)
    assert all(len(f) <= mtu + ethernet.SIZE for f in frames)
    assert len(frames) == (2 if mtu == 65520 else 45)  # 65535 bytes never fit either
    reassembler: Reassembler[bytes] = Reassembler()
    done: tuple[bytes, bytes] | None = None
    for frame in frames:
        ip = ipv4.decode(frame, ethernet.SIZE)
        chunk = frame[ip.payload_offset : ip.payload_offset + ip.payload_length]
        if not ip.more_fragments and not ip.fragment_offset:
            done = (b"", chunk)
        else:
            first = b"" if not ip.fragment_offset else None
            fragment = (1, ip.fragment_offset, ip.more_fragments, chunk, 0.0, first)
            done = reassembler.add(*fragment) or done
    assert done is not None
    whole = done[1]
    datagram = udp.decode(whole)
    from pyslirp4netns.wire.codec import checksum

    assert checksum(whole, pseudo_sum(GATEWAY, GUEST, udp.PROTOCOL, len(whole))) == 0
    assert whole[datagram.payload_offset :] == data


def test_offloaded_reply_carries_a_partial_checksum_for_the_tap() -> None:
    stack = Stack(CONFIG, vnet_hdr=True)
    stack.receive_frame(udp_frame(GATEWAY, 7777, b"q"), now=0.0)
    take(stack)
    stack.datagrams.udp_received(1, b"x" * 100, now=0.0)
    (frame,) = take(stack)[0]
    header = vnet.decode(frame)
    assert header == vnet.VnetRepr(vnet.NEEDS_CSUM, vnet.GSO_NONE, 0, 0, 34, 6)
    body = frame[vnet.SIZE :]
    datagram = udp.decode(body, 34)
    assert datagram.checksum == pseudo_sum(GATEWAY, GUEST, udp.PROTOCOL, 108)


def test_bad_checksum_is_dropped_unless_the_tap_says_it_is_not_filled_in() -> None:
    stack = Stack(CONFIG)
    frame = bytearray(udp_frame(GATEWAY, 7777, b"payload"))
    frame[40] ^= 0xFF  # inside the UDP checksum
    stack.receive_frame(bytes(frame), now=0.0)
    assert take(stack) == ([], [])
    assert stack.dropped["udp: bad checksum"] == 1
    stack.receive_frame(bytes(frame), now=0.0, csum_done=True)
    assert take(stack)[1][1] == DatagramSend(1, b"payload")


def test_udp_gso_super_frame_keeps_its_segment_size() -> None:
    stack = Stack(CONFIG)
    stack.receive_frame(udp_frame(GATEWAY, 7777, b"a" * 3000), 0.0, csum_done=True, gso_size=1000)
    assert take(stack)[1][1] == DatagramSend(1, b"a" * 3000, 1000)


def test_guest_fragments_are_reassembled_into_one_send() -> None:
    payload = random.Random(2).randbytes(20000)
    whole = udp.encode(GUEST, GATEWAY, 40000, 9, payload) + payload
    frames = []
    for offset, more, chunk in fragment_ipv4(whole, 1500):
        ip = ipv4.encode(
            GUEST,
            GATEWAY,
            ipv4.PROTO_UDP,
            len(chunk),
            identification=77,
            more_fragments=more,
            fragment_offset=offset,
        )
        eth = ethernet.encode(b"\x52\x55" + GATEWAY, GUEST_MAC, ethernet.ETHERTYPE_IPV4)
        frames.append(eth + ip + bytes(chunk))
    random.Random(3).shuffle(frames)
    stack = Stack(CONFIG)
    for frame in frames:
        stack.receive_frame(frame, now=0.0)
    _, requests = take(stack)
    assert requests == [
        DatagramOpen(1, events.UDP, socket.AF_INET, LOOPBACK, 9),
        DatagramSend(1, payload),
    ]


def test_denied_destination_gets_net_unreachable_from_the_gateway() -> None:
    stack = Stack(replace(CONFIG, disable_host_loopback=True))
    sent = udp_frame(LOOPBACK, 7777, b"secret")
    stack.receive_frame(sent, now=0.0)
    frames, requests = take(stack)
    assert requests == [] and len(frames) == 1
    ip = ipv4.decode(frames[0], ethernet.SIZE)
    assert (ip.src, ip.dst) == (GATEWAY, GUEST)
    message = icmpv4.decode(frames[0], ip.payload_offset, ip.payload_length)
    assert (message.type, message.code) == (icmpv4.DEST_UNREACHABLE, icmpv4.NET_UNREACHABLE)
    quoted = frames[0][message.payload_offset :]
    assert quoted == sent[ethernet.SIZE : ethernet.SIZE + 28]


@pytest.mark.parametrize("dst", ["255.255.255.255", "10.0.2.255", "224.0.0.251"])
def test_no_icmp_error_about_broadcast_or_multicast(dst: str) -> None:
    stack = Stack(replace(CONFIG, disable_host_loopback=True))
    stack.receive_frame(udp_frame(socket.inet_aton(dst), 5353, b"x"), now=0.0)
    assert take(stack) == ([], [])


def test_dns_alias_goes_to_the_resolver_and_expires_after_10_s() -> None:
    stack = Stack(CONFIG)
    stack.set_nameservers(Nameservers(v4=socket.inet_aton("127.0.0.9")))
    stack.receive_frame(udp_frame(DNS, 53, b"query"), now=100.0)
    stack.receive_frame(udp_frame(GATEWAY, 5000, b"other"), now=100.0)
    _, requests = take(stack)
    assert requests[0] == DatagramOpen(
        1, events.UDP, socket.AF_INET, socket.inet_aton("127.0.0.9"), 53
    )
    assert stack.next_deadline() == 100.0 + DNS_TIMEOUT
    stack.on_timer(100.0 + DNS_TIMEOUT)
    assert take(stack)[1] == [DatagramClose(1)]
    assert stack.next_deadline() == 100.0 + UDP_TIMEOUT
    stack.datagrams.udp_received(1, b"late", now=111.0)  # a closed flow: nothing
    assert take(stack) == ([], [])


def test_dns_alias_other_port_is_refused() -> None:
    stack = Stack(CONFIG)
    stack.receive_frame(udp_frame(DNS, 80, b"x"), now=0.0)
    frames, requests = take(stack)
    assert requests == [] and len(frames) == 1


def test_activity_postpones_expiry() -> None:
    stack = Stack(CONFIG)
    stack.receive_frame(udp_frame(GATEWAY, 7, b"x"), now=0.0)
    stack.datagrams.udp_received(1, b"y", now=200.0)
    take(stack)
    stack.on_timer(UDP_TIMEOUT)
    assert take(stack)[1] == []
    stack.on_timer(200.0 + UDP_TIMEOUT)
    assert take(stack)[1] == [DatagramClose(1)]


def test_full_table_evicts_the_least_recently_used_flow() -> None:
    stack = Stack(CONFIG)
    stack.datagrams.udp_flows.limit = 3
    for port in (1, 2, 3):
        stack.receive_frame(udp_frame(GATEWAY, port, b"x"), now=float(port))
    stack.receive_frame(udp_frame(GATEWAY, 1, b"again"), now=4.0)  # flow 1 is fresh now
    take(stack)
    stack.receive_frame(udp_frame(GATEWAY, 4, b"x"), now=5.0)
    _, requests = take(stack)
    assert requests[0] == DatagramClose(2)
    assert len(stack.datagrams.udp_flows) == 3 and 2 not in stack.datagrams.flows


def test_port_unreachable_from_the_host_reaches_the_guest() -> None:
    stack = Stack(CONFIG)
    stack.receive_frame(udp_frame(GATEWAY, 9999, b"hello"), now=0.0)
    take(stack)
    stack.datagrams.host_error(
        1, 2, icmpv4.DEST_UNREACHABLE, icmpv4.PORT_UNREACHABLE, b"hello", 0.0
    )
    (frame,) = take(stack)[0]
    ip = ipv4.decode(frame, ethernet.SIZE)
    assert (ip.src, ip.dst) == (GATEWAY, GUEST)
    message = icmpv4.decode(frame, ip.payload_offset, ip.payload_length)
    assert (message.type, message.code) == (icmpv4.DEST_UNREACHABLE, icmpv4.PORT_UNREACHABLE)
    quoted = frame[message.payload_offset :]
    assert len(quoted) == 28  # RFC 792: the IP header and the first 8 bytes of the datagram
    assert (quoted[9], quoted[12:16], quoted[16:20]) == (ipv4.PROTO_UDP, GUEST, GATEWAY)
    assert quoted[20:24] == (40000).to_bytes(2, "big") + (9999).to_bytes(2, "big")


def test_failed_flow_gets_net_unreachable_and_is_forgotten() -> None:
    stack = Stack(CONFIG)
    stack.receive_frame(udp_frame(REMOTE, 53, b"q"), now=0.0)
    take(stack)
    stack.datagrams.host_failed(1, False, b"q")
    frames, requests = take(stack)
    assert requests == [DatagramClose(1)]
    message = icmpv4.decode(frames[0], 34)
    assert (message.type, message.code) == (icmpv4.DEST_UNREACHABLE, icmpv4.NET_UNREACHABLE)
    assert 1 not in stack.datagrams.flows
    stack.receive_frame(udp_frame(REMOTE, 53, b"q"), now=1.0)  # a new flow next time
    assert isinstance(take(stack)[1][0], DatagramOpen)


def test_tftp_is_refused_with_access_violation() -> None:
    stack = Stack(CONFIG)
    stack.receive_frame(udp_frame(GATEWAY, 69, b"\x00\x01file\x00octet\x00"), now=0.0)
    frames, requests = take(stack)
    assert requests == []
    ip, datagram, payload = decode_udp4(frames[0])
    assert datagram.src_port == 69 and payload == b"\x00\x05\x00\x02Access violation\x00"


# -- ICMP echo to other hosts ---------------------------------------------------------------
def test_echo_to_a_remote_host_goes_through_a_ping_flow() -> None:
    stack = Stack(CONFIG)
    stack.receive_frame(echo_frame(REMOTE, seq=5), now=0.0)
    stack.receive_frame(echo_frame(REMOTE, seq=6), now=1.0)
    _, requests = take(stack)
    assert requests[0] == DatagramOpen(1, events.PING, socket.AF_INET, REMOTE, 0)
    assert [type(r) for r in requests] == [DatagramOpen, DatagramSend, DatagramSend]
    sent = requests[1]
    assert isinstance(sent, DatagramSend)
    assert icmpv4.decode(sent.payload).identifier == 0x4242
    # a ping socket answers with its own identifier: the guest gets its own back
    stack.datagrams.ping_received(
        1, icmpv4.encode(icmpv4.ECHO_REPLY, 0, 0x0101 << 16 | 5, b"abcdefgh"), 2.0, False
    )
    (frame,) = take(stack)[0]
    ip = ipv4.decode(frame, ethernet.SIZE)
    reply = icmpv4.decode(frame, ip.payload_offset, ip.payload_length)
    assert (ip.src, ip.dst) == (REMOTE, GUEST)
    assert (reply.type, reply.identifier, reply.sequence) == (icmpv4.ECHO_REPLY, 0x4242, 5)
    # a raw socket sees everyone's replies: only ours pass
    stack.datagrams.ping_received(
        1, icmpv4.encode(icmpv4.ECHO_REPLY, 0, 0x0101 << 16 | 5, b"x"), 2.0, True
    )
    assert take(stack) == ([], [])


# -- IPv6 ---------------------------------------------------------------------------------
CONFIG6 = replace(CONFIG, enable_ipv6=True)


@pytest.mark.parametrize("target", ["fd00::2", "fd00::3", "fe80::2", "fe80::3"])
def test_neighbor_solicitation_for_an_alias_is_answered(target: str) -> None:
    stack = Stack(CONFIG6)
    body = bytes(4) + v6(target) + bytes((1, 1)) + GUEST_MAC
    message = icmpv6.encode(LINK_GUEST6, v6(target), icmpv6.NEIGHBOR_SOLICITATION, 0, 0, body[4:])
    stack.receive_frame(icmp6_frame(v6(target), message), now=0.0)
    (frame,) = take(stack)[0]
    ip = ipv6.decode(frame, ethernet.SIZE)
    assert (ip.src, ip.dst, ip.hop_limit) == (v6(target), LINK_GUEST6, 255)
    answer = icmpv6.decode(frame, ip.payload_offset, ip.payload_length, ip.src, ip.dst)
    assert answer.type == icmpv6.NEIGHBOR_ADVERTISEMENT
    mac = b"\x52\x56" + v6(target)[12:]
    assert frame[answer.payload_offset :] == v6(target) + b"\x02\x01" + mac
    assert ethernet.decode(frame).src == mac


def test_neighbor_solicitation_for_others_is_silent() -> None:
    stack = Stack(CONFIG6)
    message = icmpv6.encode(
        LINK_GUEST6, v6("fd00::5"), icmpv6.NEIGHBOR_SOLICITATION, 0, 0, v6("fd00::5")
    )
    stack.receive_frame(icmp6_frame(v6("fd00::5"), message), now=0.0)
    assert take(stack) == ([], [])


def test_router_solicitation_gets_the_advertisement_of_the_contract() -> None:
    stack = Stack(CONFIG6)
    stack.set_nameservers(Nameservers(v6=v6("2001:db8::53")))
    message = icmpv6.encode(LINK_GUEST6, v6("ff02::2"), icmpv6.ROUTER_SOLICITATION, 0, 0, b"")
    stack.receive_frame(icmp6_frame(v6("ff02::2"), message), now=0.0)
    (frame,) = take(stack)[0]
    ip = ipv6.decode(frame, ethernet.SIZE)
    assert (ip.src, ip.dst, ip.hop_limit) == (v6("fe80::2"), v6("ff02::1"), 255)
    ra = icmpv6.decode(frame, ip.payload_offset, ip.payload_length, ip.src, ip.dst)
    assert ra.type == icmpv6.ROUTER_ADVERTISEMENT
    assert ra.rest == 64 << 24 | 0x40 << 16 | 1800  # hop limit 64, M=0 O=1 (ours), lifetime 1800
    body = frame[ra.payload_offset :]
    assert body[:8] == bytes(8)  # reachable 0, retrans 0
    assert body[8:16] == b"\x01\x01\x52\x56\x00\x00\x00\x02"
    assert body[16:48] == (
        b"\x03\x04\x40\xc0"
        + (86400).to_bytes(4, "big")
        + (14400).to_bytes(4, "big")
        + bytes(4)
        + v6("fd00::")
    )
    assert body[48:] == b"\x19\x03\x00\x00" + (1200000).to_bytes(4, "big") + v6("fd00::3")


def test_unsolicited_advertisement_every_200_to_600_s_without_rdnss_when_no_v6_resolver() -> None:
    stack = Stack(CONFIG6, rng=lambda: 0.25, now=10.0)
    assert stack.next_deadline() == 10.0 + 300.0
    stack.on_timer(310.0)
    (frame,) = take(stack)[0]
    assert len(frame) == ethernet.SIZE + ipv6.SIZE + 8 + 8 + 8 + 32
    assert stack.next_deadline() == 610.0


def test_guest_router_advertisement_is_logged_once() -> None:
    stack = Stack(CONFIG6)
    message = icmpv6.encode(LINK_GUEST6, ALL_NODES6, icmpv6.ROUTER_ADVERTISEMENT, 0, 0, bytes(8))
    stack.receive_frame(icmp6_frame(ALL_NODES6, message), now=0.0)
    stack.receive_frame(icmp6_frame(ALL_NODES6, message), now=0.0)
    assert take(stack) == ([], [Log("libslirp: Warning: guest sent NDP RA, but shouldn't")])


@pytest.mark.parametrize("target", ["fd00::2", "fd00::3"])
def test_echo6_to_an_alias_is_answered_with_hop_limit_255(target: str) -> None:
    stack = Stack(CONFIG6)
    message = icmpv6.encode(GUEST6, v6(target), icmpv6.ECHO_REQUEST, 0, 0x11 << 16 | 3, b"data")
    stack.receive_frame(icmp6_frame(v6(target), message, src=GUEST6, hops=64), now=0.0)
    (frame,) = take(stack)[0]
    ip = ipv6.decode(frame, ethernet.SIZE)
    reply = icmpv6.decode(frame, ip.payload_offset, ip.payload_length, ip.src, ip.dst)
    assert (ip.src, ip.hop_limit, reply.type, reply.identifier, reply.sequence) == (
        v6(target),
        255,
        icmpv6.ECHO_REPLY,
        0x11,
        3,
    )


def test_udp6_to_the_prefix_goes_to_host_ipv6_loopback_and_back() -> None:
    stack = Stack(CONFIG6)
    stack.receive_frame(udp6_frame(v6("fd00::2"), 8080, b"six"), now=0.0)
    _, requests = take(stack)
    assert requests == [
        DatagramOpen(1, events.UDP, socket.AF_INET6, v6("::1"), 8080),
        DatagramSend(1, b"six"),
    ]
    stack.datagrams.udp_received(1, b"back", 0.0)
    (frame,) = take(stack)[0]
    ip = ipv6.decode(frame, ethernet.SIZE)
    datagram = udp.decode(frame, ip.payload_offset, ip.payload_length)
    assert udp.checksum_ok(frame, datagram, ip.src, ip.dst)
    assert (ip.src, ip.dst, frame[datagram.payload_offset :]) == (v6("fd00::2"), GUEST6, b"back")


def test_ipv6_is_ignored_without_enable_ipv6() -> None:
    stack = Stack(CONFIG)
    stack.receive_frame(udp6_frame(v6("fd00::2"), 8080, b"six"), now=0.0)
    assert take(stack) == ([], [])
    assert stack.next_deadline() is None
