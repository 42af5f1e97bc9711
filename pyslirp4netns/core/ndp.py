"""IPv6 neighbour discovery as slirp4netns answers it with ``--enable-ipv6`` (contract §3.2).

We answer Neighbor Solicitations for fd00::2, fd00::3, fe80::2 and fe80::3 only, with MAC
``52:56`` + the address's low 32 bits, and a Router Solicitation with a Router Advertisement
(also sent unsolicited every 200-600 s). Builders only: the stack decides when.

One deliberate difference: our RA sets the O flag (RFC 4861 §4.2, "other configuration"), so
that clients ask our stateless DHCPv6 server (``dhcpv6``) for the DNS server; libslirp
answers Information-requests too, but its RA says O=0, so clients never ask.
"""

from __future__ import annotations

import socket
import struct

from pyslirp4netns.wire import icmpv6
from pyslirp4netns.wire.numbers import (
    ALL_NODES6,
    DNS6,
    GATEWAY6,
    LINK_DNS6,
    LINK_GATEWAY6,
    PREFIX6,
)

PREFIX_LENGTH = 64

REDIRECT = 137
NDP_HOP_LIMIT = 255  # RFC 4861 §7.1.2/§6.1.2: receivers drop NDP with any other hop limit

# Option types (RFC 4861 §4.6, RFC 8106 §5.1).
OPT_SOURCE_LLA = 1
OPT_TARGET_LLA = 2
OPT_PREFIX_INFO = 3
OPT_RDNSS = 25

# RA field values as captured from slirp4netns (contract §3.2).
RA_CUR_HOP_LIMIT = 64
RA_ROUTER_LIFETIME = 1800
PREFIX_VALID = 86400
PREFIX_PREFERRED = 14400
RDNSS_LIFETIME = 1200000  # libslirp's unit slip (ms used as s), kept: clients see the same value
RA_INTERVAL = (200.0, 600.0)  # unsolicited RAs at a random point of this range, in seconds
RA_MANAGED = 0x80  # RFC 4861 §4.2 M flag: addresses by DHCPv6 (never: SLAAC only)
RA_OTHER = 0x40  # RFC 4861 §4.2 O flag: other configuration by DHCPv6 (ours: set)

# NA flags (RFC 4861 §4.4): router, solicited, override; libslirp sets all three.
NA_ROUTER = 0x80000000
NA_SOLICITED = 0x40000000
NA_OVERRIDE = 0x20000000

ALIASES6 = (GATEWAY6, DNS6, LINK_GATEWAY6, LINK_DNS6)


def alias_mac6(address: bytes) -> bytes:
    """libslirp's MAC for an IPv6 alias: 52:56 + the address's low 32 bits."""
    return b"\x52\x56" + address[12:]


def neighbor_advertisement(target: bytes, dst: bytes) -> bytes:
    """The NA for one of our aliases, from the alias itself to ``dst`` (RFC 4861 §4.4, §7.2.4)."""
    option = bytes((OPT_TARGET_LLA, 1)) + alias_mac6(target)
    flags = NA_ROUTER | NA_OVERRIDE | (0 if dst == ALL_NODES6 else NA_SOLICITED)
    return icmpv6.encode(target, dst, icmpv6.NEIGHBOR_ADVERTISEMENT, 0, flags, target + option)


def solicited_target(data: bytes) -> bytes | None:
    """The target address of an NS message body (after the 4 reserved bytes), if well formed."""
    return data[:16] if len(data) >= 16 else None


def aliases6(gateway6: bytes, dns6: bytes) -> tuple[bytes, ...]:
    """Our IPv6 addresses: ::2 and ::3 of the prefix (``ALIASES6`` for fd00::/64), fe80::2/3."""
    return (gateway6, dns6, LINK_GATEWAY6, LINK_DNS6)


def router_advertisement(
    dns6: bytes | None, prefix: bytes = PREFIX6, dns_alias: bytes = DNS6
) -> bytes:
    """The RA libslirp sends from fe80::2 to ff02::1 (RFC 4861 §4.2; RDNSS per RFC 8106).

    RDNSS names the DNS alias (fd00::3) only when resolv.conf has an IPv6 nameserver (``dns6``)
    right now. ``prefix``: the /64 advertised (fd00::, or our --ipv6-prefix).
    """
    # rest = cur hop limit | M=0 O=1 | router lifetime; then reachable time, retrans timer.
    rest = RA_CUR_HOP_LIMIT << 24 | RA_OTHER << 16 | RA_ROUTER_LIFETIME
    body = struct.pack("!II", 0, 0)
    body += bytes((OPT_SOURCE_LLA, 1)) + alias_mac6(GATEWAY6)
    body += struct.pack(
        "!BBBBIII16s",
        OPT_PREFIX_INFO,
        4,
        PREFIX_LENGTH,
        0xC0,  # L (on-link) and A (autonomous address configuration)
        PREFIX_VALID,
        PREFIX_PREFERRED,
        0,
        prefix,
    )
    if dns6 is not None:
        body += struct.pack("!BBHI16s", OPT_RDNSS, 3, 0, RDNSS_LIFETIME, dns_alias)
    return icmpv6.encode(LINK_GATEWAY6, ALL_NODES6, icmpv6.ROUTER_ADVERTISEMENT, 0, rest, body)


def solicited_node(address: bytes) -> bytes:
    """ff02::1:ffXX:XXXX for ``address`` (RFC 4291 §2.7.1)."""
    return socket.inet_pton(socket.AF_INET6, "ff02::1:ff00:0")[:13] + address[13:]


def neighbor_solicitation(src: bytes, dst: bytes, target: bytes) -> bytes:
    """An NS for ``target`` with our source link-layer address (RFC 4861 §4.3)."""
    option = bytes((OPT_SOURCE_LLA, 1)) + alias_mac6(GATEWAY6)
    return icmpv6.encode(src, dst, icmpv6.NEIGHBOR_SOLICITATION, 0, 0, target + option)
