"""Stateless DHCPv6 (issue 14; RFC 8415 §6.1, §16.12, §18.3.6; RFC 3646): the wire format, the
server's rules and the Reply frame the stack sends."""

from __future__ import annotations

import socket
from dataclasses import replace

import pytest

from pyslirp4netns.config import Config
from pyslirp4netns.core import dhcpv6 as server
from pyslirp4netns.core.dhcpv6 import Dhcpv6Server
from pyslirp4netns.core.stack import Stack
from pyslirp4netns.wire import dhcpv6, ethernet, icmpv6, ipv6, udp
from pyslirp4netns.wire.codec import WireError

GUEST_MAC = bytes.fromhex("020000000001")
LINK_GUEST6 = socket.inet_pton(socket.AF_INET6, "fe80::100")
CONFIG6 = replace(Config(target="1", pid=1), enable_ipv6=True)
DUID = bytes.fromhex("00030001525600000002")  # DUID-LL, Ethernet, 52:56:00:00:00:02
CLIENT_ID = bytes.fromhex("000100012c3d4e5f020000000001")  # a DUID-LLT
FD00_3 = socket.inet_pton(socket.AF_INET6, "fd00::3")


def v6(text: str) -> bytes:
    return socket.inet_pton(socket.AF_INET6, text)


def info_request(*options: tuple[int, bytes], xid: int = 0xABCDEF) -> bytes:
    return dhcpv6.encode(dhcpv6.INFORMATION_REQUEST, xid, options)


ORO_DNS = (dhcpv6.OPTION_ORO, (23).to_bytes(2, "big") + (24).to_bytes(2, "big"))


# -- wire ---------------------------------------------------------------------------------------
def test_message_round_trip_on_literal_bytes() -> None:
    raw = bytes.fromhex("0babcdef0001000e000100012c3d4e5f020000000001000600020017")
    message = dhcpv6.decode(raw)
    assert message.msg_type == dhcpv6.INFORMATION_REQUEST and message.xid == 0xABCDEF
    assert message.options == [(1, CLIENT_ID), (6, b"\x00\x17")]
    assert dhcpv6.encode(11, 0xABCDEF, message.options) == raw
    assert message.option(dhcpv6.OPTION_SERVERID) is None
    assert dhcpv6.requested(b"\x00\x17\x00\x18") == [23, 24]


@pytest.mark.parametrize(
    "raw",
    [b"", b"\x0b\x00\x00", b"\x0b\x00\x00\x01\x00\x01", b"\x0b\x00\x00\x01\x00\x01\x00\x05abcd"],
    ids=["empty", "short", "option-header-cut", "option-overruns"],
)
def test_malformed_messages_raise_wire_error(raw: bytes) -> None:
    with pytest.raises(WireError):
        dhcpv6.decode(raw)


def test_odd_option_request_is_malformed() -> None:
    with pytest.raises(WireError):
        dhcpv6.requested(b"\x00\x17\x00")


# -- the server ---------------------------------------------------------------------------------
def test_information_request_gets_client_id_server_id_and_dns() -> None:
    reply = Dhcpv6Server(FD00_3, bytes.fromhex("525600000002")).handle(
        dhcpv6.decode(info_request((dhcpv6.OPTION_CLIENTID, CLIENT_ID), ORO_DNS))
    )
    assert isinstance(reply, bytes)
    message = dhcpv6.decode(reply)
    assert (message.msg_type, message.xid) == (dhcpv6.REPLY, 0xABCDEF)
    assert message.options == [(1, CLIENT_ID), (2, DUID), (23, FD00_3)]


def test_dns_only_when_asked_and_client_id_only_when_sent() -> None:
    reply = Dhcpv6Server(FD00_3, bytes.fromhex("525600000002")).handle(
        dhcpv6.decode(info_request())
    )
    assert isinstance(reply, bytes)
    assert dhcpv6.decode(reply).options == [(2, DUID)]


@pytest.mark.parametrize(
    ("request_", "reason"),
    [
        (dhcpv6.encode(dhcpv6.SOLICIT, 1, [ORO_DNS]), server.NOT_SERVED),
        (dhcpv6.encode(dhcpv6.REQUEST, 1, [ORO_DNS]), server.NOT_SERVED),
        (info_request((dhcpv6.OPTION_IA_NA, bytes(12)), ORO_DNS), server.DISCARD_IA),
        (info_request((dhcpv6.OPTION_IA_PD, bytes(12))), server.DISCARD_IA),
        (
            info_request((dhcpv6.OPTION_SERVERID, b"\x00\x03\x00\x01" + bytes(6))),
            server.DISCARD_SERVER,
        ),
    ],
    ids=["solicit", "request", "ia-na", "ia-pd", "other-server"],
)
def test_what_a_stateless_server_does_not_answer(request_: bytes, reason: str) -> None:
    answer = Dhcpv6Server(FD00_3, bytes.fromhex("525600000002")).handle(dhcpv6.decode(request_))
    assert answer == reason


def test_our_own_server_id_is_answered() -> None:
    answer = Dhcpv6Server(FD00_3, bytes.fromhex("525600000002")).handle(
        dhcpv6.decode(info_request((dhcpv6.OPTION_SERVERID, DUID), ORO_DNS))
    )
    assert isinstance(answer, bytes)


# -- through the stack --------------------------------------------------------------------------
def dhcpv6_frame(payload: bytes, dst: bytes = dhcpv6.ALL_SERVERS) -> bytes:
    header = udp.encode(LINK_GUEST6, dst, 546, 547, payload)
    ip = ipv6.encode(LINK_GUEST6, dst, ipv6.NEXT_UDP, len(header) + len(payload), hop_limit=1)
    eth = ethernet.encode(b"\x33\x33\x00\x01\x00\x02", GUEST_MAC, ethernet.ETHERTYPE_IPV6)
    return eth + ip + header + payload


@pytest.mark.parametrize("dst", ["ff02::1:2", "fe80::2", "fd00::2"])
def test_stack_answers_from_fe80_2_to_the_client_port(dst: str) -> None:
    stack = Stack(CONFIG6)
    stack.receive_frame(dhcpv6_frame(info_request(ORO_DNS), v6(dst)), now=0.0)
    frames = [b"".join(bytes(p) for p in parts) for parts in stack.take_frames()]
    assert stack.take_requests() == [] and len(frames) == 1
    frame = frames[0]
    eth = ethernet.decode(frame)
    assert (eth.dst, eth.src) == (GUEST_MAC, bytes.fromhex("525600000002"))
    ip = ipv6.decode(frame, eth.payload_offset)
    assert (ip.src, ip.dst, ip.next_header) == (v6("fe80::2"), LINK_GUEST6, ipv6.NEXT_UDP)
    datagram = udp.decode(frame, ip.payload_offset, ip.payload_length)
    assert (datagram.src_port, datagram.dst_port) == (547, 546)
    assert udp.checksum_ok(frame, datagram, ip.src, ip.dst)
    reply = dhcpv6.decode(frame, datagram.payload_offset, datagram.payload_length)
    assert reply.option(dhcpv6.OPTION_DNS_SERVERS) == FD00_3


def test_stack_counts_what_it_does_not_answer_and_opens_no_flow() -> None:
    stack = Stack(CONFIG6)
    stack.receive_frame(dhcpv6_frame(dhcpv6.encode(dhcpv6.SOLICIT, 5, [ORO_DNS])), now=0.0)
    stack.receive_frame(dhcpv6_frame(b"\x0b\x00"), now=0.0)
    assert stack.take_frames() == [] and stack.take_requests() == []
    assert stack.dropped[server.NOT_SERVED] == 1 and stack.dropped["dhcpv6: truncated"] == 1


def test_router_advertisement_sets_other_configuration_only() -> None:
    stack = Stack(CONFIG6)
    message = icmpv6.encode(LINK_GUEST6, v6("ff02::2"), icmpv6.ROUTER_SOLICITATION, 0, 0, b"")
    ip = ipv6.encode(LINK_GUEST6, v6("ff02::2"), icmpv6.NEXT_HEADER, len(message), hop_limit=255)
    eth = ethernet.encode(b"\x33\x33\x00\x00\x00\x02", GUEST_MAC, ethernet.ETHERTYPE_IPV6)
    stack.receive_frame(eth + ip + message, now=0.0)
    (parts,) = stack.take_frames()
    frame = b"".join(bytes(p) for p in parts)
    ra_ip = ipv6.decode(frame, ethernet.SIZE)
    ra = icmpv6.decode(frame, ra_ip.payload_offset, ra_ip.payload_length, ra_ip.src, ra_ip.dst)
    flags = (ra.rest >> 16) & 0xFF
    assert flags == 0x40  # O=1 (RFC 4861 §4.2), M=0: addresses stay SLAAC's
