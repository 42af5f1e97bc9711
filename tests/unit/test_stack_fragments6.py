"""Stack units for guest IPv6 fragments (RFC 8200 §4.5, RFC 5722, RFC 6946): reassembled under
the IPv4 bounds, overlaps refused, time exceeded (ICMPv6 type 3 code 1) on timeout."""

from __future__ import annotations

import random
import socket
from dataclasses import replace

from pyslirp4netns.config import Config
from pyslirp4netns.core import events
from pyslirp4netns.core.events import DatagramOpen, DatagramSend
from pyslirp4netns.core.fragments import fragment_ipv6
from pyslirp4netns.core.stack import Stack
from pyslirp4netns.wire import ethernet, icmpv6, ipv6, udp

GUEST_MAC = bytes.fromhex("020000000001")
GUEST6 = socket.inet_pton(socket.AF_INET6, "fd00::100")
GATEWAY6 = socket.inet_pton(socket.AF_INET6, "fd00::2")
LOOPBACK6 = socket.inet_pton(socket.AF_INET6, "::1")
CONFIG = replace(Config(target="1", pid=1), enable_ipv6=True)
ETH = ethernet.encode(b"\x52\x56\x00\x00\x00\x02", GUEST_MAC, ethernet.ETHERTYPE_IPV6)


def fragments(
    payload: bytes, ident: int = 0x1234, mtu: int = 1500, dst: bytes = GATEWAY6, port: int = 9
) -> list[bytes]:
    """A UDP datagram from the guest, fragmented as its kernel does (RFC 8200 §4.5)."""
    whole = udp.encode(GUEST6, dst, 40000, port, payload) + payload
    frames = []
    for offset, more, chunk in fragment_ipv6(whole, mtu):
        header = ipv6.FRAGMENT.struct.pack(ipv6.NEXT_UDP, 0, offset | more, ident)
        fixed = ipv6.encode(GUEST6, dst, ipv6.NEXT_FRAGMENT, len(header) + len(chunk))
        frames.append(ETH + fixed + header + bytes(chunk))
    return frames


def fragment(
    offset: int, more: bool, data: bytes, ident: int = 7, next_header: int = ipv6.NEXT_UDP
) -> bytes:
    header = ipv6.FRAGMENT.struct.pack(next_header, 0, offset | more, ident)
    fixed = ipv6.encode(GUEST6, GATEWAY6, ipv6.NEXT_FRAGMENT, len(header) + len(data))
    return ETH + fixed + header + data


def test_fragments_in_any_order_become_one_send() -> None:
    payload = random.Random(1).randbytes(4000)
    frames = fragments(payload)
    assert len(frames) == 3
    random.Random(2).shuffle(frames)
    stack = Stack(CONFIG)
    for frame in frames:
        stack.receive_frame(frame, now=0.0)
    assert stack.take_requests() == [
        DatagramOpen(1, events.UDP, socket.AF_INET6, LOOPBACK6, 9),
        DatagramSend(1, payload),
    ]
    assert len(stack.reassembler6) == 0 and not stack.dropped


def test_the_largest_datagram_reassembles_and_one_byte_more_is_refused() -> None:
    payload = random.Random(3).randbytes(0xFFFF - 8)  # Payload Length's limit, UDP header in
    stack = Stack(CONFIG)
    for frame in fragments(payload):
        stack.receive_frame(frame, now=0.0)
    assert stack.take_requests()[-1] == DatagramSend(1, payload)
    # A fragment ending past 65535 bytes discards the datagram (RFC 8200 §4.5).
    stack.receive_frame(fragment(0, True, bytes(1448)), now=1.0)
    stack.receive_frame(fragment(0xFFF8 & ~7, False, bytes(16)), now=1.0)
    assert stack.reassembler6.dropped["too big"] == 1
    assert stack.take_requests() == []


def test_atomic_fragment_is_processed_alone() -> None:
    """RFC 6946: offset 0, M=0 is a whole packet; a pending datagram with its id is kept."""
    stack = Stack(CONFIG)
    pending = fragments(random.Random(4).randbytes(3000), ident=7)
    stack.receive_frame(pending[0], now=0.0)
    whole = udp.encode(GUEST6, GATEWAY6, 40000, 9, b"alone") + b"alone"
    stack.receive_frame(fragment(0, False, whole), now=0.0)
    assert stack.take_requests() == [
        DatagramOpen(1, events.UDP, socket.AF_INET6, LOOPBACK6, 9),
        DatagramSend(1, b"alone"),
    ]
    assert len(stack.reassembler6) == 1
    for frame in pending[1:]:
        stack.receive_frame(frame, now=0.0)
    assert [type(r) for r in stack.take_requests()] == [DatagramSend]


def test_overlap_discards_the_whole_datagram() -> None:
    """RFC 5722 §4: an overlapping fragment discards the datagram and all its fragments."""
    payload = random.Random(5).randbytes(4000)
    frames = fragments(payload, ident=9)
    stack = Stack(CONFIG)
    stack.receive_frame(frames[0], now=0.0)
    whole = udp.encode(GUEST6, GATEWAY6, 40000, 9, payload) + payload
    stack.receive_frame(fragment(1448, True, whole[1448 : 1448 + 1456], ident=9), now=0.0)
    stack.receive_frame(fragment(1440, True, whole[1440 : 1440 + 16], ident=9), now=0.0)
    for frame in frames[1:]:
        stack.receive_frame(frame, now=0.0)
    assert stack.take_requests() == []
    assert stack.reassembler6.dropped["overlap"] == 1


def test_timeout_after_the_first_fragment_is_time_exceeded_code_1() -> None:
    payload = random.Random(6).randbytes(4000)
    frames = fragments(payload, ident=11)
    stack = Stack(CONFIG)
    stack.receive_frame(frames[0], now=0.0)
    stack.receive_frame(frames[2], now=0.0)
    assert stack.next_deadline() == 30.0
    stack.take_frames()
    stack.on_timer(30.0)
    out = [b"".join(bytes(p) for p in parts) for parts in stack.take_frames()]
    errors = []
    for frame in out:
        eth = ethernet.decode(frame)
        ip = ipv6.decode(frame, eth.payload_offset)
        if ip.next_header != icmpv6.NEXT_HEADER:
            continue
        message = icmpv6.decode(frame, ip.payload_offset, ip.payload_length, ip.src, ip.dst)
        if message.type == icmpv6.TIME_EXCEEDED:
            errors.append((eth.dst, ip.src, ip.dst, message, frame[message.payload_offset :]))
    assert len(errors) == 1
    mac, src, dst, message, quote = errors[0]
    assert (mac, src, dst, message.code) == (GUEST_MAC, GATEWAY6, GUEST6, 1)
    assert quote == frames[0][ethernet.SIZE :][: 1280 - 48]  # the first fragment, cut to fit
    assert stack.reassembler6.dropped["timeout"] == 1 and len(stack.reassembler6) == 0


def test_timeout_without_the_first_fragment_is_silent() -> None:
    frames = fragments(random.Random(7).randbytes(4000), ident=12)
    stack = Stack(CONFIG)
    stack.receive_frame(frames[1], now=0.0)
    stack.take_frames()
    stack.on_timer(31.0)
    assert stack.take_frames() == []
    assert stack.reassembler6.dropped["timeout"] == 1


def test_first_fragment_without_the_upper_layer_header_is_dropped() -> None:
    """RFC 8200 §4.5 / RFC 7112: the first fragment carries the whole header chain."""
    stack = Stack(CONFIG)
    stack.receive_frame(fragment(0, True, bytes(16), 13, ipv6.NEXT_TCP), now=0.0)  # TCP: 20
    assert stack.dropped["ipv6: first fragment without upper-layer header"] == 1
    assert len(stack.reassembler6) == 0


def test_limits_are_the_ipv4_ones() -> None:
    stack = Stack(CONFIG)
    v4, v6 = stack.reassembler, stack.reassembler6
    assert (v6.max_datagrams, v6.max_bytes, v6.timeout) == (
        v4.max_datagrams,
        v4.max_bytes,
        v4.timeout,
    )
    for ident in range(v6.max_datagrams + 5):  # more datagrams than allowed: oldest evicted
        stack.receive_frame(fragment(0, True, bytes(16), ident=ident), now=0.0)
    assert len(v6) == v6.max_datagrams and v6.dropped["limit"] == 5
