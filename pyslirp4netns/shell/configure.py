"""``--configure``: bring the tap up and address it, from inside the target netns, via netlink.

The steps, their order and their error lines are slirp4netns's (contract §2.1), so that
``ip -d addr`` and ``ip route`` afterwards read the same:

1. ``lo`` up; 2. tap up, with the flag word *replaced* (slirp4netns's SIOCSIFFLAGS clears
IFF_MULTICAST, so the link shows ``<BROADCAST,UP,LOWER_UP>``); 3. MTU; 4. ``--macaddress``;
5. N+100/prefix with the broadcast address; 6. default route via N+2, ``proto boot``.
Nothing is configured for IPv6: the guest kernel's SLAAC does that from our Router Advertisement.
"""

from __future__ import annotations

import errno

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from pyslirp4netns.config import Config
from pyslirp4netns.shell.errors import StartupError, perror

IFF_UP = 0x1
ALL_FLAGS = 0xFFFFFFFF  # ifi_change: every changeable flag takes the value in ifi_flags
RTPROT_BOOT = 3  # what SIOCADDRT records, and what `ip -d route` shows for slirp4netns


def _step(what: str, call: object, *args: object, **kwargs: object) -> None:
    try:
        call(*args, **kwargs)  # type: ignore[operator]
    except NetlinkError as e:
        raise perror(what, e.code or errno.EIO) from None
    except OSError as e:
        raise perror(what, e.errno or errno.EIO) from None


def configure(config: Config, ifname: str) -> None:
    """Apply -c in the current thread's network namespace; raises StartupError."""
    with IPRoute() as ipr:
        try:
            (lo,) = ipr.link_lookup(ifname="lo")
            (tap,) = ipr.link_lookup(ifname=ifname)
        except (ValueError, NetlinkError) as e:
            raise StartupError(f"cannot create socket: {e}") from None
        _step("cannot set device up", ipr.link, "set", index=lo, flags=IFF_UP, change=ALL_FLAGS)
        _step("cannot set device up", ipr.link, "set", index=tap, flags=IFF_UP, change=ALL_FLAGS)
        _step("cannot set MTU", ipr.link, "set", index=tap, mtu=config.mtu)
        if config.macaddress is not None:
            mac = ":".join(f"{b:02x}" for b in config.macaddress)
            _step("cannot set MAC address", ipr.link, "set", index=tap, address=mac)
        _step(
            "cannot set device address",
            ipr.addr,
            "add",
            index=tap,
            address=str(config.guest),
            prefixlen=config.cidr.prefixlen,
            broadcast=str(config.cidr.broadcast_address),
        )
        _step(
            "set route",
            ipr.route,
            "add",
            dst="0.0.0.0/0",
            gateway=str(config.gateway),
            oif=tap,
            proto=RTPROT_BOOT,
        )
