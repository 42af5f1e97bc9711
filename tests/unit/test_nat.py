"""The address policy: one decision per new flow, before any host socket exists."""

from __future__ import annotations

import socket
from dataclasses import replace
from ipaddress import IPv4Network, ip_address

import pytest

from pyslirp4netns.config import Config
from pyslirp4netns.core.nat import (
    Deny,
    Forward,
    Nameservers,
    Policy,
    parse_resolv_conf,
    seen_by_guest,
)
from pyslirp4netns.wire.numbers import IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP

BASE = Config(target="1", pid=1, enable_ipv6=True)
NS = Nameservers(v4=ip_address("127.0.0.53").packed, v6=ip_address("2001:db8::53").packed)


def decide(config: Config, proto: int, dst: str, port: int = 80) -> Forward | Deny:
    return Policy(config, NS).resolve(proto, ip_address(dst).packed, port)


def fwd(dst: str, port: int = 80) -> Forward:
    family = socket.AF_INET if ip_address(dst).version == 4 else socket.AF_INET6
    return Forward(family, ip_address(dst).packed, port)


@pytest.mark.parametrize(
    ("dst", "port", "expected"),
    [
        ("10.0.2.2", 80, fwd("127.0.0.1")),
        ("255.255.255.255", 80, fwd("127.0.0.1")),
        ("10.0.2.3", 53, fwd("127.0.0.53", 53)),
        ("10.0.2.5", 80, fwd("10.0.2.5")),  # in-CIDR: the same address on the host network
        ("198.51.100.10", 80, fwd("198.51.100.10")),
        ("127.0.0.1", 80, fwd("127.0.0.1")),  # host loopback is reachable anyway via 10.0.2.2
        ("fd00::2", 80, fwd("::1")),
        ("fd00::1234", 80, fwd("::1")),  # all of fd00::/64, as libslirp
        ("ff02::1", 80, fwd("::1")),
        ("fd00::3", 53, fwd("2001:db8::53", 53)),
        ("2001:db8::10", 80, fwd("2001:db8::10")),
    ],
)
def test_default_map(dst: str, port: int, expected: Forward) -> None:
    assert decide(BASE, IPPROTO_TCP, dst, port) == expected


@pytest.mark.parametrize("dst", ["10.0.2.3", "fd00::3"])
def test_dns_alias_refuses_other_ports(dst: str) -> None:
    assert isinstance(decide(BASE, IPPROTO_TCP, dst, 80), Deny)
    assert isinstance(decide(BASE, IPPROTO_ICMP, dst, 0), Deny)


def test_dns_alias_without_a_nameserver_of_that_family() -> None:
    policy = Policy(BASE, Nameservers(v4=NS.v4))
    assert isinstance(policy.resolve(IPPROTO_UDP, ip_address("fd00::3").packed, 53), Deny)


def test_disable_dns_makes_the_alias_an_ordinary_address() -> None:
    config = replace(BASE, disable_dns=True)
    assert decide(config, IPPROTO_UDP, "10.0.2.3", 53) == fwd("10.0.2.3", 53)
    assert decide(config, IPPROTO_UDP, "fd00::3", 53) == fwd("::1", 53)


# Every path to host loopback, for TCP, UDP and ICMP alike: nothing reaches host loopback.
LEAKS = [
    "10.0.2.2",
    "10.0.2.3",
    "127.0.0.1",
    "127.0.0.2",
    "127.255.255.254",
    "0.0.0.0",
    "0.1.2.3",
    "255.255.255.255",
    "10.0.2.255",
    "224.0.0.1",
    "169.254.1.1",
    "::1",
    "::",
    "::127.0.0.1",
    "::ffff:127.0.0.1",
    "::ffff:0.0.0.0",
    "::ffff:10.0.2.2",
    "::ffff:255.255.255.255",
    "fd00::2",
    "fd00::1",
    "ff02::1",
    "fe80::1",
    "ff02::2",
]


@pytest.mark.parametrize("proto", [IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMP])
@pytest.mark.parametrize("dst", LEAKS)
def test_disable_host_loopback_is_airtight(proto: int, dst: str) -> None:
    config = replace(BASE, disable_host_loopback=True)
    port = 0 if proto == IPPROTO_ICMP else 8080
    assert isinstance(decide(config, proto, dst, port), Deny)


def test_disable_host_loopback_keeps_the_dns_forwarder_and_the_world() -> None:
    config = replace(BASE, disable_host_loopback=True)
    assert decide(config, IPPROTO_UDP, "10.0.2.3", 53) == fwd("127.0.0.53", 53)
    assert decide(config, IPPROTO_TCP, "198.51.100.10") == fwd("198.51.100.10")
    assert decide(config, IPPROTO_TCP, "::ffff:198.51.100.10") == fwd("::ffff:198.51.100.10")


def test_ipv6_needs_enable_ipv6() -> None:
    assert isinstance(decide(replace(BASE, enable_ipv6=False), IPPROTO_TCP, "2001:db8::1"), Deny)


def test_custom_cidr_moves_the_aliases() -> None:
    config = replace(BASE, cidr=IPv4Network("10.5.0.0/16"), disable_host_loopback=True)
    assert isinstance(decide(config, IPPROTO_TCP, "10.5.0.2"), Deny)
    assert isinstance(decide(config, IPPROTO_TCP, "10.5.255.255"), Deny)
    assert decide(config, IPPROTO_TCP, "10.0.2.2") == fwd("10.0.2.2")


def test_parse_resolv_conf() -> None:
    text = (
        "# comment\nsearch example\nnameserver 127.0.0.53\nnameserver fe80::1%eth0\n"
        "nameserver bogus\nnameserver 192.0.2.1 trailing\noptions edns0\n"
    )
    assert parse_resolv_conf(text) == (["127.0.0.53", "192.0.2.1"], ["fe80::1%eth0"])


@pytest.mark.parametrize(
    ("client", "guest", "seen"),
    [
        ("127.0.0.1", "10.0.2.100", "10.0.2.2"),
        ("127.5.5.5", "10.0.2.100", "10.0.2.2"),
        ("0.0.0.0", "10.0.2.100", "10.0.2.2"),
        ("::ffff:127.0.0.1", "10.0.2.100", "10.0.2.2"),
        ("198.51.100.10", "10.0.2.100", "198.51.100.10"),
        ("2001:db8::10", "10.0.2.100", "10.0.2.2"),
        ("::1", "fd00::100", "fd00::2"),
        ("127.0.0.1", "fd00::100", "fd00::2"),
        ("2001:db8::10", "fd00::100", "2001:db8::10"),
        ("198.51.100.10", "fd00::100", "::ffff:198.51.100.10"),
        ("fe80::1%eth0", "fd00::100", "fe80::1"),
    ],
)
def test_forward_client_as_the_guest_sees_it(client: str, guest: str, seen: str) -> None:
    gateway = ip_address("10.0.2.2").packed
    got = seen_by_guest(client, ip_address(guest).packed, gateway)
    assert got == ip_address(seen).packed
