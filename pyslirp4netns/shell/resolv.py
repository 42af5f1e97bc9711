"""The DNS alias's upstream: resolv.conf's first nameserver of each family (contract §3.6).

Like slirp4netns, the file is checked at most once per second and re-read when its device,
inode, size or mtime changed, so an edit takes effect within about a second. Like podman, a
systemd-resolved stub (127.0.0.53, only reachable in the host's own namespace) is replaced by
the upstream servers resolved lists in /run/systemd/resolve/resolv.conf.
"""

from __future__ import annotations

import ipaddress
import os
import socket

from pyslirp4netns.core.nat import Nameservers, parse_resolv_conf

RESOLV_CONF = "/etc/resolv.conf"
RESOLVED_UPSTREAM = "/run/systemd/resolve/resolv.conf"
RESOLVED_STUB = "127.0.0.53"
CHECK_INTERVAL = 1.0


def _read(path: str) -> tuple[list[str], list[str]]:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return parse_resolv_conf(f.read())
    except OSError:
        return [], []


def nameservers_from(path: str, upstream: str = RESOLVED_UPSTREAM) -> Nameservers:
    v4, v6 = _read(path)
    if v4[:1] == [RESOLVED_STUB]:
        up4, up6 = _read(upstream)
        if up4 or up6:
            v4, v6 = up4, up6
    v6_addr, scope = None, 0
    if v6:
        text, _, ifname = v6[0].partition("%")
        v6_addr = ipaddress.IPv6Address(text).packed
        if ifname:
            try:
                scope = socket.if_nametoindex(ifname)
            except OSError:
                scope = 0
    return Nameservers(
        v4=ipaddress.IPv4Address(v4[0]).packed if v4 else None, v6=v6_addr, v6_scope=scope
    )


class ResolvConf:
    """``current(now)``: the nameservers, re-read only when the file changed."""

    def __init__(self, path: str = RESOLV_CONF, upstream: str = RESOLVED_UPSTREAM) -> None:
        self.path = path
        self.upstream = upstream
        self._checked = float("-inf")
        self._identity: tuple[int, ...] | None = None
        self._servers = Nameservers()

    def _stamp(self) -> tuple[int, ...] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)

    def current(self, now: float) -> Nameservers:
        if now - self._checked >= CHECK_INTERVAL:
            self._checked = now
            identity = self._stamp()
            if identity != self._identity:
                self._identity = identity
                self._servers = nameservers_from(self.path, self.upstream)
        return self._servers
