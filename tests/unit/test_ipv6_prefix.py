"""--ipv6-prefix (issue 14, our extension): the IPv6 network moves, the gateway and DNS aliases
are ::2 and ::3 of it, the RA advertises it; fd00::/64 stays the default."""

from __future__ import annotations

import io
import socket
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import replace
from ipaddress import IPv6Network

import pytest

from pyslirp4netns import cli
from pyslirp4netns.config import Config
from pyslirp4netns.core import events
from pyslirp4netns.core.events import DatagramOpen
from pyslirp4netns.core.nat import Forward, Nameservers, Policy, seen_by_guest
from pyslirp4netns.core.stack import Stack
from pyslirp4netns.wire import dhcpv6, ethernet, icmpv6, ipv6, udp

GUEST_MAC = bytes.fromhex("020000000001")
PREFIX = IPv6Network("fd00:1234::/64")
CONFIG = replace(Config(target="1", pid=1), enable_ipv6=True, ipv6_prefix=PREFIX)


def v6(text: str) -> bytes:
    return socket.inet_pton(socket.AF_INET6, text)


GUEST6 = v6("fd00:1234::100")
LINK_GUEST6 = v6("fe80::100")


def parse(*args: str) -> tuple[int, str, str, Config | None]:
    out, err = io.StringIO(), io.StringIO()
    config = None
    code = 0
    with redirect_stdout(out), redirect_stderr(err):
        try:
            config = cli.parse(list(args), "pyslirp4netns")
        except SystemExit as e:
            code = int(e.code or 0)
    return code, out.getvalue(), err.getvalue(), config


# -- the option ---------------------------------------------------------------------------------
def test_default_is_fd00_64_and_the_option_moves_it() -> None:
    assert Config(target="1").ipv6_prefix == IPv6Network("fd00::/64")
    assert str(Config(target="1").gateway6) == "fd00::2"
    code, _, _, config = parse("-6", "--ipv6-prefix=fd00:1234::/64", "1", "tap0")
    assert code == 0 and config is not None
    assert config.ipv6_prefix == PREFIX
    assert (str(config.gateway6), str(config.dns6)) == ("fd00:1234::2", "fd00:1234::3")
    code, _, _, config = parse("--ipv6-prefix", "2001:db8:1:2::/64", "1", "tap0")
    assert code == 0 and config is not None and str(config.dns6) == "2001:db8:1:2::3"


@pytest.mark.parametrize(
    "value",
    [
        "fd00:1234::/48",
        "fd00:1234::5/64",
        "fd00:1234::",
        "garbage",
        "",
        "10.0.2.0/24",
        "fe80::/64",
        "ff02::/64",
        "::/64",
        "::ffff:0:0/64",
    ],
)
def test_bad_prefixes_fail_after_parsing_without_usage(value: str) -> None:
    code, out, err, _ = parse(f"--ipv6-prefix={value}", "1", "tap0")
    assert code == 1 and "Usage" not in out
    assert err == f"invalid IPv6 prefix: {value} (a /64 network like fd00:1234::/64)\n"


def test_full_name_only_and_absent_from_help() -> None:
    code, _, err, _ = parse("--ipv6-pre=fd00:1234::/64", "1", "tap0")
    assert code == 1 and "unrecognized option '--ipv6-pre=fd00:1234::/64'" in err
    code, out, _, _ = parse("--help")
    assert code == 0 and "ipv6-prefix" not in out


# -- the stack ----------------------------------------------------------------------------------
def frames(stack: Stack) -> list[bytes]:
    return [b"".join(bytes(p) for p in parts) for parts in stack.take_frames()]


def icmp6(dst: bytes, message: bytes, src: bytes = LINK_GUEST6) -> bytes:
    ip = ipv6.encode(src, dst, icmpv6.NEXT_HEADER, len(message), hop_limit=255)
    return ethernet.encode(b"\x33\x33\x00\x00\x00\x02", GUEST_MAC, ethernet.ETHERTYPE_IPV6) + (
        ip + message
    )


def test_ra_advertises_the_prefix_and_rdnss_its_dns_alias() -> None:
    stack = Stack(CONFIG)
    stack.set_nameservers(Nameservers(v6=v6("2001:db8::53")))
    rs = icmpv6.encode(LINK_GUEST6, v6("ff02::2"), icmpv6.ROUTER_SOLICITATION, 0, 0, b"")
    stack.receive_frame(icmp6(v6("ff02::2"), rs), now=0.0)
    (frame,) = frames(stack)
    ip = ipv6.decode(frame, ethernet.SIZE)
    ra = icmpv6.decode(frame, ip.payload_offset, ip.payload_length, ip.src, ip.dst)
    body = frame[ra.payload_offset :]
    assert body[16:20] == b"\x03\x04\x40\xc0" and body[32:48] == v6("fd00:1234::")
    assert body[48:56] == b"\x19\x03\x00\x00" + (1200000).to_bytes(4, "big")
    assert body[56:] == v6("fd00:1234::3")


@pytest.mark.parametrize(
    ("target", "answered"),
    [("fd00:1234::2", True), ("fd00:1234::3", True), ("fe80::2", True), ("fd00::2", False)],
)
def test_neighbour_solicitations_for_the_prefix_aliases(target: str, answered: bool) -> None:
    stack = Stack(CONFIG)
    ns = icmpv6.encode(LINK_GUEST6, v6(target), icmpv6.NEIGHBOR_SOLICITATION, 0, 0, v6(target))
    stack.receive_frame(icmp6(v6(target), ns), now=0.0)
    out = frames(stack)
    assert len(out) == (1 if answered else 0)
    if answered:
        ip = ipv6.decode(out[0], ethernet.SIZE)
        assert ip.src == v6(target)


def test_udp_to_the_gateway_goes_to_host_loopback_and_dns_to_the_resolver() -> None:
    policy = Policy(CONFIG, Nameservers(v6=v6("2001:db8::53")))
    assert policy.resolve(17, v6("fd00:1234::2"), 7) == Forward(socket.AF_INET6, v6("::1"), 7)
    assert policy.resolve(17, v6("fd00:1234::99"), 7) == Forward(socket.AF_INET6, v6("::1"), 7)
    assert policy.resolve(17, v6("fd00:1234::3"), 53) == Forward(
        socket.AF_INET6, v6("2001:db8::53"), 53
    )
    # fd00::/64 is now an address like any other outside.
    assert policy.resolve(17, v6("fd00::2"), 7) == Forward(socket.AF_INET6, v6("fd00::2"), 7)
    assert seen_by_guest("::1", GUEST6, b"\x0a\x00\x02\x02", v6("fd00:1234::2")) == v6(
        "fd00:1234::2"
    )


def test_echo_to_the_gateway_is_answered_from_it_and_udp_flows_from_the_prefix() -> None:
    stack = Stack(CONFIG)
    echo = icmpv6.encode(GUEST6, v6("fd00:1234::2"), icmpv6.ECHO_REQUEST, 0, 1 << 16 | 1, b"hi")
    stack.receive_frame(icmp6(v6("fd00:1234::2"), echo, src=GUEST6), now=0.0)
    (frame,) = frames(stack)
    ip = ipv6.decode(frame, ethernet.SIZE)
    assert (ip.src, ip.dst) == (v6("fd00:1234::2"), GUEST6)
    payload = b"q"
    header = udp.encode(GUEST6, v6("fd00:1234::2"), 40000, 7777, payload)
    ip6 = ipv6.encode(GUEST6, v6("fd00:1234::2"), ipv6.NEXT_UDP, len(header) + len(payload))
    eth = ethernet.encode(b"\x52\x56\x00\x00\x00\x02", GUEST_MAC, ethernet.ETHERTYPE_IPV6)
    stack.receive_frame(eth + ip6 + header + payload, now=0.0)
    assert stack.take_requests()[0] == DatagramOpen(1, events.UDP, socket.AF_INET6, v6("::1"), 7777)


def test_dhcpv6_names_the_prefix_dns_alias() -> None:
    stack = Stack(CONFIG)
    request = dhcpv6.encode(dhcpv6.INFORMATION_REQUEST, 1, [(dhcpv6.OPTION_ORO, b"\x00\x17")])
    header = udp.encode(LINK_GUEST6, dhcpv6.ALL_SERVERS, 546, 547, request)
    ip = ipv6.encode(LINK_GUEST6, dhcpv6.ALL_SERVERS, ipv6.NEXT_UDP, len(header) + len(request))
    eth = ethernet.encode(b"\x33\x33\x00\x01\x00\x02", GUEST_MAC, ethernet.ETHERTYPE_IPV6)
    stack.receive_frame(eth + ip + header + request, now=0.0)
    (frame,) = frames(stack)
    reply_ip = ipv6.decode(frame, ethernet.SIZE)
    datagram = udp.decode(frame, reply_ip.payload_offset, reply_ip.payload_length)
    reply = dhcpv6.decode(frame, datagram.payload_offset, datagram.payload_length)
    assert reply.option(dhcpv6.OPTION_DNS_SERVERS) == v6("fd00:1234::3")
