"""The frozen Config: every setting of one run, parsed once by ``cli.parse``.

Field names mirror slirp4netns's flags (``--disable-host-loopback`` -> ``disable_host_loopback``).
The virtual network's addresses are derived from ``--cidr`` exactly as slirp4netns does
(contract §3.1): gateway N+2, DNS N+3, DHCP N+15..N+30, recommended guest address N+100.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

DEFAULT_CIDR = IPv4Network("10.0.2.0/24")
DEFAULT_MTU = 1500
# IPv6 is not affected by --cidr: libslirp's fixed fd00::/64 plan (our --ipv6-prefix moves it).
IPV6_NETWORK = IPv6Network("fd00::/64")


@dataclass(frozen=True, slots=True)
class Config:
    """Everything one run needs; built by ``cli.parse`` and never changed afterwards."""

    # Positional arguments. ``target`` is the PID (pid mode), the netns path (path mode), the
    # inherited tap fd number (tapfd mode, 1.3.0) or the socket path (bess target type).
    target: str
    tapname: str = "tap0"
    pid: int | None = None  # set in pid mode only
    tapfd: int | None = None  # set in tapfd mode only: the inherited tap fd's number
    configure: bool = False  # -c: bring the tap up and address it inside the target
    exit_fd: int = -1  # -e: exit 0 on any poll event on this fd; -1 = off
    ready_fd: int = -1  # -r: write b"1" and close once everything is up; -1 = off
    mtu: int = DEFAULT_MTU  # -m: 1..65521
    enable_ipv6: bool = False  # -6
    api_socket: str | None = None  # -a: unix socket path of the JSON API
    cidr: IPv4Network = DEFAULT_CIDR  # --cidr: the guest-side IPv4 network
    disable_host_loopback: bool = False
    netns_type: str = "pid"  # "pid", "tapfd", or anything else = path mode (as slirp4netns)
    userns_path: str | None = None
    enable_sandbox: bool = False
    enable_seccomp: bool = False
    outbound_addr: IPv4Address | None = None  # resolved from an IPv4 literal or an ifname
    outbound_addr6: IPv6Address | None = None  # resolved from an IPv6 literal or an ifname
    disable_dns: bool = False
    macaddress: bytes | None = None  # 6 bytes; only with -c
    target_type: str = "netns"  # "netns" or "bess"
    # Our extension --ipv6-prefix (a /64): the IPv6 network; gateway ::2 and DNS ::3 of it.
    ipv6_prefix: IPv6Network = IPV6_NETWORK
    # Our extension, not slirp4netns's: "tap" (API TCP forwards go through the stack) or
    # "splice" (joined to a socket inside the target by splice(2); shell/splice.py).
    port_forward_mode: str = "tap"
    # Our extensions for looking inside (man page OPTIONS): --pcap FILE and its --pcap-max-size
    # (bytes; the capture stops there), --stats (per-protocol counters), --debug (flow and
    # drop log lines on stderr).
    pcap: str | None = None
    pcap_max_size: int = 100 << 20
    stats: bool = False
    debug: bool = False

    @property
    def path_mode(self) -> bool:
        """True when the target is a namespace path (any --netns-type but pid/tapfd)."""
        return self.target_type == "netns" and self.netns_type not in ("pid", "tapfd")

    @property
    def network(self) -> IPv4Address:
        return self.cidr.network_address

    @property
    def netmask(self) -> IPv4Address:
        return self.cidr.netmask

    @property
    def gateway(self) -> IPv4Address:
        """N+2: the host as the guest sees it."""
        return self.cidr.network_address + 2

    @property
    def dns(self) -> IPv4Address:
        """N+3: the DNS forwarder alias."""
        return self.cidr.network_address + 3

    @property
    def dhcp_start(self) -> IPv4Address:
        return self.cidr.network_address + 15

    @property
    def dhcp_end(self) -> IPv4Address:
        """DHCP begin + 15: a pool of 16 leases."""
        return self.cidr.network_address + 30

    @property
    def guest(self) -> IPv4Address:
        """N+100: the address -c assigns and the API's default guest_addr."""
        return self.cidr.network_address + 100

    @property
    def gateway6(self) -> IPv6Address:
        """::2 of the IPv6 prefix (fd00::2): the host as the guest sees it over IPv6."""
        return self.ipv6_prefix.network_address + 2

    @property
    def dns6(self) -> IPv6Address:
        """::3 of the IPv6 prefix (fd00::3): the DNS forwarder alias over IPv6."""
        return self.ipv6_prefix.network_address + 3
