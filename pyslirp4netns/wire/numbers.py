"""Numbers every layer shares: IANA protocol numbers, well-known ports and addresses.

Addresses are ``bytes`` (4 or 16 octets), the form flow keys and headers use.
"""

from __future__ import annotations

from ipaddress import IPv6Address

# IANA "Assigned Internet Protocol Numbers": IPv4's protocol field and IPv6's next header.
IPPROTO_HOPOPTS = 0
IPPROTO_ICMP = 1
IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPPROTO_ROUTING = 43
IPPROTO_FRAGMENT = 44
IPPROTO_ICMPV6 = 58
IPPROTO_NONE = 59
IPPROTO_DSTOPTS = 60

DNS_PORT = 53

BROADCAST4 = b"\xff\xff\xff\xff"  # the limited broadcast address (RFC 919)
LOOPBACK4 = bytes((127, 0, 0, 1))
UNSPECIFIED6 = bytes(16)
LOOPBACK6 = IPv6Address("::1").packed
ALL_NODES6 = IPv6Address("ff02::1").packed
ALL_NODES_MAC = b"\x33\x33\x00\x00\x00\x01"  # RFC 2464 §7: 33:33 + low 32 bits of ff02::1

# slirp4netns's IPv6 network (contract §3.2): fixed, whatever --cidr says.
PREFIX6 = IPv6Address("fd00::").packed
GATEWAY6 = IPv6Address("fd00::2").packed
DNS6 = IPv6Address("fd00::3").packed
LINK_GATEWAY6 = IPv6Address("fe80::2").packed
LINK_DNS6 = IPv6Address("fe80::3").packed
