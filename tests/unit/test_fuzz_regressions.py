"""What the atheris targets of tests/fuzz found, kept: each finding as the exact input the fuzzer
wrote (replayed through its target) and as the smallest direct reproduction, so that the test
still says what broke once the harness changes. tests/fuzz/README.md says how to add one."""

from __future__ import annotations

import base64
import socket

import pytest

from pyslirp4netns.config import Config
from pyslirp4netns.core.stack import Stack
from pyslirp4netns.wire import ethernet, ipv4
from tests.fuzz import harnesses
from tests.rig import frames as rig

CONFIG = Config(target="1", pid=1)
ZERO_MAC = bytes(6)

# (target, the crash file libFuzzer wrote, base64)
FINDINGS = [
    pytest.param(
        "frames",
        "BgBXAFJWAAAAAgAAAAAAAIbdYAAAAAAgOv/+gAAAAAAAAAABAAAAAAAB/wIAAAAAAAAAAAAB/wAAAocAfBdAAAAA"
        "/QAAAAAAAAAAAAAAAAAAAgEBAgAAAAABAEsAUu8AAQAKAAEAAQIAAAAAAQAGAAQAFwAYAAIB/wACAf8=",
        id="zero-mac-recursion",  # crash-cfe6a03523194584f6f4d860a594519164fa0305
    ),
]


def from_zero_mac(frame: bytes) -> bytes:
    return frame[:6] + ZERO_MAC + frame[12:]


def test_a_guest_with_the_all_zero_mac_is_not_learned_and_gets_no_recursion() -> None:
    """Found by the frames target: a frame from 00:00:00:00:00:00 made the guest's MAC the
    "unknown" sentinel, and the answer went back to neighbour resolution forever
    (RecursionError out of receive_frame). Now the address is resolved by ARP instead."""
    stack = Stack(CONFIG)
    stack.receive_frame(from_zero_mac(rig.echo4_frame(rig.GATEWAY4, b"x")), 0.0)
    assert stack.egress.neighbours.v4 == {}
    (request,) = [b"".join(bytes(p) for p in parts) for parts in stack.take_frames()]
    assert ethernet.decode(request).ethertype == ethernet.ETHERTYPE_ARP  # who has 10.0.2.100?
    stack.receive_frame(rig.arp_request_frame(rig.GATEWAY4), 0.1)  # the real MAC, at last
    frames = [b"".join(bytes(p) for p in parts) for parts in stack.take_frames()]
    replies = [f for f in frames if ethernet.decode(f).ethertype == ethernet.ETHERTYPE_IPV4]
    assert len(replies) == 1 and replies[0][:6] == rig.GUEST_MAC
    assert ipv4.decode(replies[0], ethernet.SIZE).protocol == ipv4.PROTO_ICMP


def test_an_ipv6_guest_with_the_all_zero_mac_is_not_learned() -> None:
    stack = Stack(Config(target="1", pid=1, enable_ipv6=True))
    guest = socket.inet_pton(socket.AF_INET6, "fd00::100")
    echo = rig.icmp6_frame(rig.GATEWAY6, 128, b"ping", rest=0x00010001, src=guest)
    stack.receive_frame(from_zero_mac(echo), 0.0)
    assert stack.egress.neighbours.v6 == {}
    assert len(stack.take_frames()) == 1  # a neighbour solicitation for fd00::100


@pytest.mark.parametrize(("target", "data"), FINDINGS)
def test_fuzzer_input_replays_clean(target: str, data: str) -> None:
    harnesses.TARGETS[target](base64.b64decode(data))
