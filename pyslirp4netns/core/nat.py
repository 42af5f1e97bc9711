"""Address policy: where a guest's new flow may go on the host, decided before any socket exists.

Theory of operation
-------------------
Every new guest flow (a TCP SYN, the first datagram of a UDP flow, an ICMP echo) passes through
``Policy.resolve(proto, dst, port)`` exactly once. The answer is either ``Forward`` (the host-side
destination of the socket the shell will open) or ``Deny`` (the stack answers the guest with an
ICMP unreachable, the way slirp4netns answers its internal EPERM). Nothing else in the program
chooses a host destination, so this file is the whole of the NAT's reach.

The map is slirp4netns's (contract §3.4):

* gateway N+2 -> host 127.0.0.1 (same port); fd00::/64 (but fd00::3) and ff02::1 -> host ::1
  (with our ``--ipv6-prefix``, that prefix and its ::3 instead);
* DNS alias N+3 (fd00::3) port 53 -> the resolver from resolv.conf; any other port is refused;
  with ``--disable-dns`` the alias has no meaning and is treated like any other address;
* 255.255.255.255 -> host 127.0.0.1 (libslirp's behaviour);
* everything else -> unchanged, through the host's routing.

``--disable-host-loopback`` is airtight here, unlike slirp4netns (which it lets a guest bypass by
addressing 127.0.0.0/8, 0.0.0.0, ::1 or ::ffff:127.0.0.1 directly): with it, every path to host
loopback or unspecified addresses is refused: 127.0.0.0/8, 0.0.0.0/8, ::1, ::, the IPv4-compatible
::/96, ::ffff:0:0/96 whose inner address is refused, link-local, broadcast, multicast and our own
aliases. The one deliberate exception is the DNS forwarder's own target, which the user
configured in resolv.conf (slirp4netns and its man page behave the same).

Multicast and link-local destinations are refused in every mode: they have no meaning through a
NAT (link-local needs a scope the guest cannot name on our side).
"""

from __future__ import annotations

import ipaddress
import socket
from collections import OrderedDict
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address

from pyslirp4netns.config import Config
from pyslirp4netns.wire.numbers import (
    ALL_NODES6,
    BROADCAST4,
    DNS_PORT,
    GATEWAY6,
    IPPROTO_TCP,
    IPPROTO_UDP,
    LOOPBACK4,
    LOOPBACK6,
)


@dataclass(frozen=True, slots=True)
class Forward:
    """Open the host socket toward ``addr`` (4 or 16 bytes) and ``port``."""

    family: int
    addr: bytes
    port: int


@dataclass(frozen=True, slots=True)
class Deny:
    """Refuse: the guest gets ICMP net unreachable from the gateway (slirp4netns's EPERM path)."""

    reason: str


Decision = Forward | Deny


@dataclass(frozen=True, slots=True)
class Nameservers:
    """The first resolver of each family from resolv.conf (contract §3.6); None if absent."""

    v4: bytes | None = None
    v6: bytes | None = None
    v6_scope: int = 0  # from "fe80::1%eth0"; resolved to an ifindex by the shell


class Policy:
    """``resolve()`` for one Config; the shell swaps ``nameservers`` when resolv.conf changes."""

    def __init__(self, config: Config, nameservers: Nameservers | None = None) -> None:
        self.disable_host_loopback = config.disable_host_loopback
        self.disable_dns = config.disable_dns
        self.enable_ipv6 = config.enable_ipv6
        self.gateway = config.gateway.packed
        self.dns = config.dns.packed
        self.cidr = config.cidr
        self.dns6 = config.dns6.packed
        self.prefix6 = config.ipv6_prefix
        self.nameservers = nameservers or Nameservers()

    def resolve(self, proto: int, dst: bytes, port: int) -> Decision:
        """Where a new guest flow to ``dst``:``port`` goes (``port`` is 0 for ICMP)."""
        if len(dst) == 4:
            return self._resolve4(proto, dst, port)
        if len(dst) == 16 and self.enable_ipv6:
            return self._resolve6(proto, dst, port)
        return Deny("address family not served")

    # -- IPv4 ----------------------------------------------------------------------------
    def _resolve4(self, proto: int, dst: bytes, port: int) -> Decision:
        if dst == self.dns and not self.disable_dns:
            return self._dns(proto, port, socket.AF_INET, self.nameservers.v4)
        if dst in (self.gateway, BROADCAST4):
            if self.disable_host_loopback:
                return Deny("host loopback is disabled")
            return Forward(socket.AF_INET, LOOPBACK4, port)
        why = self._refused4(IPv4Address(dst))
        if why:
            return Deny(why)
        return Forward(socket.AF_INET, dst, port)

    def _refused4(self, addr: IPv4Address) -> str | None:
        """Why an IPv4 destination (other than our aliases' mapped ones) is refused, if it is."""
        if addr.is_multicast or addr.is_link_local:
            return "multicast or link-local destination"
        if not self.disable_host_loopback:
            return None
        if addr.is_loopback or addr in _ZERO_NET or addr.is_reserved:
            return "host loopback is disabled"
        if addr.packed in (self.gateway, self.dns) or addr == self.cidr.broadcast_address:
            return "host loopback is disabled"
        return None

    # -- IPv6 ----------------------------------------------------------------------------
    def _resolve6(self, proto: int, dst: bytes, port: int) -> Decision:
        if dst == self.dns6 and not self.disable_dns:
            return self._dns(proto, port, socket.AF_INET6, self.nameservers.v6)
        addr = IPv6Address(dst)
        if addr in self.prefix6 or dst == ALL_NODES6:
            if self.disable_host_loopback:
                return Deny("host loopback is disabled")
            return Forward(socket.AF_INET6, LOOPBACK6, port)
        if addr.ipv4_mapped is not None:
            inner = addr.ipv4_mapped
            why = self._refused4(inner)
            if why is None and inner.packed in (self.gateway, self.dns, BROADCAST4):
                # Our aliases have no meaning on the host side; never a path around the map.
                why = "alias addressed as IPv4-mapped IPv6"
            return Deny(why) if why else Forward(socket.AF_INET6, dst, port)
        if addr.is_multicast or addr.is_link_local:
            return Deny("multicast or link-local destination")
        if self.disable_host_loopback and (
            addr.is_loopback or addr.is_unspecified or addr in _V4_COMPATIBLE
        ):
            return Deny("host loopback is disabled")
        return Forward(socket.AF_INET6, dst, port)

    # -- the DNS alias -------------------------------------------------------------------
    def _dns(self, proto: int, port: int, family: int, server: bytes | None) -> Decision:
        if proto not in (IPPROTO_UDP, IPPROTO_TCP) or port != DNS_PORT:
            return Deny("the DNS alias serves port 53 only")
        if server is None:
            return Deny("no nameserver of this family in resolv.conf")
        return Forward(family, server, DNS_PORT)


@dataclass(slots=True)
class Flow:
    """One guest datagram flow (UDP, or ICMP echo keyed by its identifier) and its host socket.

    ``remote`` is the destination as the guest addressed it: replies appear to come from there,
    whatever ``Policy`` mapped it to on the host side.
    """

    id: int
    kind: int  # events.UDP or events.PING
    guest_mac: bytes
    guest: bytes  # 4 or 16 bytes
    guest_port: int  # the ICMP identifier for ping flows
    remote: bytes
    remote_port: int
    last: float  # last activity; the flow expires ``timeout`` later
    sent: int = 0  # payload bytes from the guest (UDP payload, or whole ICMP messages)
    received: int = 0  # payload bytes toward the guest


class FlowTable:
    """Flows of one idle timeout, least recently used first, at most ``limit`` of them.

    One timeout per table keeps the oldest flow first, so the next expiry is O(1) to find.
    """

    def __init__(self, timeout: float, limit: int) -> None:
        self.timeout = timeout
        self.limit = limit
        self._flows: OrderedDict[tuple[object, ...], Flow] = OrderedDict()
        self._keys: dict[int, tuple[object, ...]] = {}

    def __len__(self) -> int:
        return len(self._flows)

    def get(self, key: tuple[object, ...]) -> Flow | None:
        return self._flows.get(key)

    def add(self, key: tuple[object, ...], flow: Flow) -> Flow | None:
        """Insert ``flow``; returns the least recently used flow evicted to make room, if any."""
        evicted = None
        if len(self._flows) >= self.limit:
            _, evicted = self._flows.popitem(last=False)
            del self._keys[evicted.id]
        self._flows[key] = flow
        self._keys[flow.id] = key
        return evicted

    def touch(self, flow: Flow, now: float) -> None:
        flow.last = now
        self._flows.move_to_end(self._keys[flow.id])

    def remove(self, flow: Flow) -> None:
        key = self._keys.pop(flow.id, None)
        if key is not None:
            del self._flows[key]

    def next_deadline(self) -> float | None:
        for flow in self._flows.values():
            return flow.last + self.timeout
        return None

    def expire(self, now: float) -> list[Flow]:
        """Remove and return every flow idle for ``timeout`` or longer."""
        gone = []
        while self._flows:
            flow = next(iter(self._flows.values()))
            if flow.last + self.timeout > now:
                break
            self._flows.popitem(last=False)
            del self._keys[flow.id]
            gone.append(flow)
        return gone


_ZERO_NET = ipaddress.IPv4Network("0.0.0.0/8")
_V4_COMPATIBLE = ipaddress.IPv6Network("::/96")


def parse_resolv_conf(text: str) -> tuple[list[str], list[str]]:
    """The ``nameserver`` addresses of each family, in file order (IPv6 may carry ``%scope``)."""
    v4: list[str] = []
    v6: list[str] = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 2 or fields[0] != "nameserver":
            continue
        value = fields[1]
        address = value.split("%", 1)[0]
        try:
            parsed = ipaddress.ip_address(address)
        except ValueError:
            continue
        (v4 if parsed.version == 4 else v6).append(value)
    return v4, v6


def seen_by_guest(client: str, guest: bytes, gateway: bytes, gateway6: bytes = GATEWAY6) -> bytes:
    """The address a port forward's host ``client`` has in the guest's eyes (contract §3.7).

    A client on host loopback (or 0.0.0.0) appears as the gateway: N+2, or fd00::2 for an
    IPv6 guest address. Any other client keeps its address (IPv4 inside ::ffff:0:0/96 for an
    IPv6 guest; an IPv6 client of an IPv4 guest can only appear as the gateway).
    """
    address = ipaddress.ip_address(client.split("%", 1)[0])
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    local = address.is_loopback or address.is_unspecified
    if len(guest) == 4:
        return gateway if local or address.version != 4 else address.packed
    if local:
        return gateway6
    if address.version == 4:
        return IPv6Address(f"::ffff:{address}").packed
    return address.packed
