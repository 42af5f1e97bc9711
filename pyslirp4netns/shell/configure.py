"""``--configure``: bring the tap up and address it, from inside the target netns, via netlink.

The steps, their order and their error lines are slirp4netns's (contract §2.1), so that
``ip -d addr`` and ``ip route`` afterwards read the same:

1. ``lo`` up; 2. tap up, with the flag word *replaced* (slirp4netns's SIOCSIFFLAGS clears
IFF_MULTICAST, so the link shows ``<BROADCAST,UP,LOWER_UP>``); 3. MTU; 4. ``--macaddress``;
5. N+100/prefix with the broadcast address; 6. default route via N+2, ``proto boot``.
Nothing is configured for IPv6: the guest kernel's SLAAC does that from our Router Advertisement.

The messages are pyroute2's rtnetlink classes (``ifinfmsg``, ``ifaddrmsg``, ``rtmsg``); the
socket is a plain ``AF_NETLINK`` one, six requests each answered by an ACK. Not ``IPRoute``: in
pyroute2 0.9 it is built on asyncio, and ``import pyroute2`` loads every API it has, which took
about 100 ms of the 200 ms from spawn to ready byte. This runs in the join child only.
"""

from __future__ import annotations

import errno
import importlib.util
import socket
import struct
import sys
import types
from typing import Any

from pyslirp4netns.config import Config
from pyslirp4netns.shell.errors import StartupError, perror

IFF_UP = 0x1
ALL_FLAGS = 0xFFFFFFFF  # ifi_change: every changeable flag takes the value in ifi_flags
RTPROT_BOOT = 3  # what SIOCADDRT records, and what `ip -d route` shows for slirp4netns
RT_TABLE_MAIN = 254
RT_SCOPE_UNIVERSE = 0
RTN_UNICAST = 1
# <linux/netlink.h>, <linux/rtnetlink.h>
NETLINK_ROUTE = 0
NLMSG_ERROR = 2
NLM_F_REQUEST, NLM_F_ACK, NLM_F_EXCL, NLM_F_CREATE = 0x1, 0x4, 0x200, 0x400
RTM_NEWLINK, RTM_NEWADDR, RTM_NEWROUTE = 16, 20, 24
_NLMSGHDR = struct.Struct("=IHHII")  # length, type, flags, sequence number, port id
_ERROR = struct.Struct("=i")  # struct nlmsgerr's error, right after the header
TIMEOUT = 5.0  # seconds for the kernel's answer to one request


def _messages() -> tuple[Any, Any, Any]:
    """pyroute2's ifinfmsg, ifaddrmsg and rtmsg, loaded without running ``pyroute2/__init__``.

    The package is registered as an empty module over its own directory, so only the message
    modules (and what they import) run; if that layout ever stops working, the package is
    imported the ordinary way, which is slower but the same classes.
    """
    if "pyroute2" not in sys.modules:
        spec = importlib.util.find_spec("pyroute2")
        if spec is not None and spec.submodule_search_locations is not None:
            package = types.ModuleType("pyroute2")
            package.__path__ = list(spec.submodule_search_locations)
            package.__spec__ = spec
            sys.modules["pyroute2"] = package
    try:
        from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
        from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
        from pyroute2.netlink.rtnl.rtmsg import rtmsg
    except (ImportError, AttributeError):
        for name in [m for m in sys.modules if m == "pyroute2" or m.startswith("pyroute2.")]:
            del sys.modules[name]
        import pyroute2  # noqa: F401  # the whole package, then the same classes
        from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
        from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
        from pyroute2.netlink.rtnl.rtmsg import rtmsg
    return ifinfmsg, ifaddrmsg, rtmsg


class _Rtnl:
    """One rtnetlink socket: send a request, wait for its ACK, raise OSError on a NACK."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC)
        self.sock.settimeout(TIMEOUT)
        self.sock.bind((0, 0))
        self.seq = 0

    def request(self, msg: Any, msg_type: int, flags: int = 0) -> None:
        self.seq += 1
        msg["header"]["type"] = msg_type
        msg["header"]["flags"] = NLM_F_REQUEST | NLM_F_ACK | flags
        msg["header"]["sequence_number"] = self.seq
        msg.encode()
        self.sock.send(msg.data)
        while True:
            data = self.sock.recv(65536)
            offset = 0
            while offset + _NLMSGHDR.size <= len(data):
                length, kind, _, seq, _ = _NLMSGHDR.unpack_from(data, offset)
                if kind == NLMSG_ERROR and seq == self.seq:
                    (error,) = _ERROR.unpack_from(data, offset + _NLMSGHDR.size)
                    if error:
                        raise OSError(-error, "netlink")
                    return
                offset += max(length, _NLMSGHDR.size)

    def close(self) -> None:
        self.sock.close()


def _step(what: str, rtnl: _Rtnl, msg: Any, msg_type: int, flags: int = 0) -> None:
    try:
        rtnl.request(msg, msg_type, flags)
    except OSError as e:
        raise perror(what, e.errno or errno.EIO) from None


def _index(name: str) -> int:
    try:
        return socket.if_nametoindex(name)
    except OSError as e:
        raise StartupError(f"cannot create socket: {e}") from None


def configure(config: Config, ifname: str) -> None:
    """Apply -c in the current thread's network namespace; raises StartupError."""
    ifinfmsg, ifaddrmsg, rtmsg = _messages()
    lo, tap = _index("lo"), _index(ifname)

    def link(index: int, **fields: Any) -> Any:
        msg = ifinfmsg()
        msg["index"] = index
        attrs = fields.pop("attrs", [])
        for key, value in fields.items():
            msg[key] = value
        msg["attrs"] = attrs
        return msg

    try:
        rtnl = _Rtnl()
    except OSError as e:
        raise StartupError(f"cannot create socket: {e}") from None
    try:
        _step("cannot set device up", rtnl, link(lo, flags=IFF_UP, change=ALL_FLAGS), RTM_NEWLINK)
        _step("cannot set device up", rtnl, link(tap, flags=IFF_UP, change=ALL_FLAGS), RTM_NEWLINK)
        _step("cannot set MTU", rtnl, link(tap, attrs=[("IFLA_MTU", config.mtu)]), RTM_NEWLINK)
        if config.macaddress is not None:
            mac = ":".join(f"{b:02x}" for b in config.macaddress)
            msg = link(tap, attrs=[("IFLA_ADDRESS", mac)])
            _step("cannot set MAC address", rtnl, msg, RTM_NEWLINK)
        addr = ifaddrmsg()
        addr["family"] = socket.AF_INET
        addr["prefixlen"] = config.cidr.prefixlen
        addr["index"] = tap
        addr["attrs"] = [
            ("IFA_LOCAL", str(config.guest)),
            ("IFA_ADDRESS", str(config.guest)),
            ("IFA_BROADCAST", str(config.cidr.broadcast_address)),
        ]
        new = NLM_F_CREATE | NLM_F_EXCL
        _step("cannot set device address", rtnl, addr, RTM_NEWADDR, new)
        route = rtmsg()
        route["family"] = socket.AF_INET
        route["dst_len"] = 0
        route["table"] = RT_TABLE_MAIN
        route["proto"] = RTPROT_BOOT
        route["scope"] = RT_SCOPE_UNIVERSE
        route["type"] = RTN_UNICAST
        route["attrs"] = [("RTA_GATEWAY", str(config.gateway)), ("RTA_OIF", tap)]
        _step("set route", rtnl, route, RTM_NEWROUTE, new)
    finally:
        rtnl.close()
