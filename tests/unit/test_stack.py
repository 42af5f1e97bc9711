"""Stack units: frames in, frames out, explicit ``now``; nothing else may come out."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import pytest

from pyslirp4netns.config import Config
from pyslirp4netns.core.stack import Stack
from pyslirp4netns.wire import arp, ethernet, icmpv4, ipv4
from pyslirp4netns.wire.codec import Buffer

GUEST_MAC = bytes.fromhex("020000000001")
GUEST = bytes([10, 0, 2, 100])
GATEWAY = bytes([10, 0, 2, 2])
DNS = bytes([10, 0, 2, 3])
CONFIG = Config(target="1", pid=1)


def arp_request(target: bytes) -> bytes:
    return ethernet.encode(ethernet.BROADCAST, GUEST_MAC, ethernet.ETHERTYPE_ARP) + arp.request(
        GUEST_MAC, GUEST, target
    )


def echo_request(dst: bytes, data: bytes = b"ping!" * 10, ident: int = 0x1234) -> bytes:
    message = icmpv4.encode(icmpv4.ECHO_REQUEST, 0, ident << 16 | 7, data)
    header = ipv4.encode(GUEST, dst, ipv4.PROTO_ICMP, len(message), ttl=64)
    return ethernet.encode(b"\x52\x55" + dst, GUEST_MAC, ethernet.ETHERTYPE_IPV4) + header + message


def joined(parts: Sequence[Buffer]) -> bytes:
    return b"".join(bytes(p) for p in parts)


def only_output(stack: Stack) -> bytes:
    frames = stack.take_frames()
    assert len(frames) == 1, frames
    return joined(frames[0])


@pytest.mark.parametrize("target", [GATEWAY, DNS])
def test_arp_for_an_alias_is_answered_with_52_55_mac(target: bytes) -> None:
    stack = Stack(CONFIG)
    stack.receive_frame(arp_request(target), now=0.0)
    frame = only_output(stack)
    eth = ethernet.decode(frame)
    assert (eth.dst, eth.src) == (GUEST_MAC, b"\x52\x55" + target)
    answer = arp.decode(frame, eth.payload_offset)
    assert answer == arp.ArpRepr(arp.REPLY, b"\x52\x55" + target, target, GUEST_MAC, GUEST)
    assert stack.egress.neighbours.v4 == {GUEST: GUEST_MAC}


@pytest.mark.parametrize("target", ["10.0.2.5", "10.0.2.100", "192.0.2.1"])
def test_arp_for_anything_else_is_silent(target: str) -> None:
    stack = Stack(CONFIG)
    stack.receive_frame(arp_request(bytes(map(int, target.split(".")))), now=0.0)
    assert stack.take_frames() == []


@pytest.mark.parametrize("disabled", [False, True])
@pytest.mark.parametrize("target", [GATEWAY, DNS])
def test_echo_to_an_alias_is_answered_by_us(target: bytes, disabled: bool) -> None:
    stack = Stack(replace(CONFIG, disable_host_loopback=disabled, disable_dns=disabled))
    data = bytes(range(256)) * 4
    stack.receive_frame(echo_request(target, data), now=0.0)
    frame = only_output(stack)
    eth = ethernet.decode(frame)
    ip = ipv4.decode(frame, eth.payload_offset)
    assert (ip.src, ip.dst, ip.ttl, ip.protocol) == (target, GUEST, 255, ipv4.PROTO_ICMP)
    message = icmpv4.decode(frame, ip.payload_offset, ip.payload_length)
    assert (message.type, message.identifier, message.sequence) == (icmpv4.ECHO_REPLY, 0x1234, 7)
    start = message.payload_offset
    assert frame[start : start + message.payload_length] == data


def test_every_truncation_is_counted_and_dropped() -> None:
    stack = Stack(CONFIG)
    for frame in (arp_request(GATEWAY), echo_request(GATEWAY)):
        for cut in range(len(frame)):
            stack.receive_frame(frame[:cut], now=0.0)
    assert stack.take_frames() == []
    assert sum(stack.dropped.values()) > 0
    stack.receive_frame(echo_request(GATEWAY), now=1.0)  # still serving
    assert len(stack.take_frames()) == 1


def test_vlan_tagged_and_unknown_ethertypes_are_dropped() -> None:
    stack = Stack(CONFIG)
    tagged = bytes(12) + b"\x81\x00\x00\x05\x08\x06" + arp.request(GUEST_MAC, GUEST, GATEWAY)
    stack.receive_frame(tagged, now=0.0)
    stack.receive_frame(ethernet.encode(ethernet.BROADCAST, GUEST_MAC, 0x88CC) + bytes(50), 0.0)
    assert stack.take_frames() == []
    assert stack.dropped["ethernet: vlan tagged"] == 1


def test_frames_for_an_unknown_guest_wait_for_its_arp_answer() -> None:
    stack = Stack(CONFIG)
    other = bytes([10, 0, 2, 50])
    header = ipv4.encode(GATEWAY, other, ipv4.PROTO_UDP, 7)
    frame = [b"\x00" * 6 + b"\x52\x55\x0a\x00\x02\x02\x08\x00" + header + b"payload"]
    stack.egress.emit(list(frame))  # built for an unknown MAC
    stack.egress.now = 0.5
    stack.egress.emit(list(frame))  # asked already: held, no second request
    request = only_output(stack)
    eth = ethernet.decode(request)
    asked = arp.decode(request, eth.payload_offset)
    assert (eth.dst, asked.oper, asked.spa, asked.tpa) == (
        ethernet.BROADCAST,
        arp.REQUEST,
        GATEWAY,
        other,
    )
    answer = ethernet.encode(b"\x52\x55" + GATEWAY, GUEST_MAC, ethernet.ETHERTYPE_ARP)
    answer += arp.reply(GUEST_MAC, other, b"\x52\x55" + GATEWAY, GATEWAY)
    stack.receive_frame(answer, now=0.6)
    released = [joined(parts) for parts in stack.take_frames()]
    assert released == [GUEST_MAC + frame[0][6:]] * 2
    stack.egress.emit(list(frame))  # known now: straight out
    assert only_output(stack) == GUEST_MAC + frame[0][6:]
