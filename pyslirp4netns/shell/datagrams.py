"""The host sockets behind the core's datagram flows (UDP and ICMP echo): ``core/datagrams.py``
seen from the shell.

The core asks (``events.DatagramOpen``/``Send``/``Close``); this carries it out with
non-blocking connected sockets and reports back (``udp_received``, ``ping_received``,
``host_error``, ``host_failed``). Connected sockets are the point: the kernel filters
replies to the flow's peer, and with ``IP_RECVERR`` the ICMP errors about our datagrams arrive on
the error queue, so the guest can get "port unreachable" where slirp4netns says nothing.

ICMP echo uses an unprivileged ping socket when ``net.ipv4.ping_group_range`` admits our gid,
else a raw socket when we hold CAP_NET_RAW; with neither, one log line per family says why
pings to other hosts go unanswered (contract §3.5).
"""

from __future__ import annotations

import errno
import functools
import os
import socket
import struct
import time

from pyslirp4netns.config import Config
from pyslirp4netns.core import events
from pyslirp4netns.core.datagrams import Datagrams
from pyslirp4netns.shell.errors import log
from pyslirp4netns.shell.reactor import EPOLLERR, EPOLLIN, Reactor
from pyslirp4netns.wire.numbers import IPPROTO_ICMPV6

IP_RECVERR = getattr(socket, "IP_RECVERR", 11)
IPV6_RECVERR = getattr(socket, "IPV6_RECVERR", 25)
SOL_UDP = getattr(socket, "SOL_UDP", 17)
UDP_SEGMENT = getattr(socket, "UDP_SEGMENT", 103)

SOCK_FLAGS = socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC
EXTENDED_ERR = struct.Struct("=IBBBBII")  # struct sock_extended_err (linux/errqueue.h)
READS_PER_WAKEUP = 64  # then back to the loop, so one busy flow can't starve the others
MAX_DATAGRAM = 65535
PING_RANGE = "/proc/sys/net/ipv4/ping_group_range"


class _Host:
    """One flow's socket; a port forward's flows share the listener and name their peer."""

    __slots__ = ("flow", "sock", "kind", "raw", "strip_ip_header", "peer")

    def __init__(
        self,
        flow: int,
        sock: socket.socket,
        kind: int,
        raw: bool,
        v4: bool,
        peer: tuple[object, ...] | None = None,
    ) -> None:
        self.flow = flow
        self.sock = sock
        self.kind = kind
        self.raw = raw
        self.strip_ip_header = raw and v4  # raw IPv4 sockets hand us the IP header too
        self.peer = peer  # set: the listener of a forward, not ours to watch or close


class HostDatagrams:
    """Flow id -> connected host socket, watched by the daemon's epoll."""

    def __init__(self, core: Datagrams, config: Config, reactor: Reactor) -> None:
        self.core = core
        self.reactor = reactor
        self.outbound4 = str(config.outbound_addr) if config.outbound_addr else None
        self.outbound6 = str(config.outbound_addr6) if config.outbound_addr6 else None
        self.hosts: dict[int, _Host] = {}
        self._ping_warned: set[int] = set()
        self._ping_range = _ping_range()  # read now: --enable-sandbox hides /proc later
        self._open_failing = 0  # the errno of the last failed socket(), until one opens

    # -- requests ------------------------------------------------------------------------
    def open(self, request: events.DatagramOpen) -> None:
        v4 = request.family == socket.AF_INET
        try:
            if request.kind == events.UDP:
                sock, raw = socket.socket(request.family, socket.SOCK_DGRAM | SOCK_FLAGS), False
            else:
                opened = self._ping_socket(request.family)
                if opened is None:
                    return  # logged once; pings to other hosts go unanswered, as in slirp4netns
                sock, raw = opened
        except OSError as e:
            # Out of fds (EMFILE) or memory: said once until a socket opens again, and the flow
            # is forgotten (ICMP net unreachable, as for a failed connect), so the guest's next
            # datagram tries again instead of vanishing into a flow without a socket.
            code = e.errno or errno.EIO
            if code != self._open_failing:
                self._open_failing = code
                log(f"WARNING: cannot open a host socket: {os.strerror(code)}")
            self.core.host_failed(request.flow, False, b"")
            return
        self._open_failing = 0
        try:
            if v4:
                sock.setsockopt(socket.SOL_IP, IP_RECVERR, 1)
            else:
                sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVERR, 1)
            outbound = self.outbound4 if v4 else self.outbound6
            if outbound is not None:
                sock.bind((outbound, 0))
            address = socket.inet_ntop(request.family, request.addr)
            if v4:
                sock.connect((address, request.port))
            else:
                sock.connect((address, request.port, 0, request.scope))
        except OSError as e:
            sock.close()
            unreachable = e.errno == errno.EHOSTUNREACH
            self.core.host_failed(request.flow, unreachable, b"")
            return
        host = _Host(request.flow, sock, request.kind, raw, v4)
        self.hosts[request.flow] = host
        self.reactor.watch(sock.fileno(), EPOLLIN, functools.partial(self._on_readable, host))

    def _ping_socket(self, family: int) -> tuple[socket.socket, bool] | None:
        proto = socket.IPPROTO_ICMP if family == socket.AF_INET else IPPROTO_ICMPV6
        try:
            return socket.socket(family, socket.SOCK_DGRAM | SOCK_FLAGS, proto), False
        except PermissionError:
            pass
        try:
            return socket.socket(family, socket.SOCK_RAW | SOCK_FLAGS, proto), True
        except PermissionError:
            pass
        if family not in self._ping_warned:
            self._ping_warned.add(family)
            name = "ICMP" if family == socket.AF_INET else "ICMPv6"
            log(
                f"WARNING: {name} echo to hosts other than the gateway is not forwarded: "
                f"gid {os.getgid()} is outside net.ipv4.ping_group_range ({self._ping_range}) "
                "and raw sockets need CAP_NET_RAW"
            )
        return None

    def adopt(self, flow: int, listener: socket.socket, peer: tuple[object, ...]) -> None:
        """A UDP forward's client: the guest's replies on ``flow`` go to ``peer`` through the
        forward's listening socket (which the forward, not this table, watches and closes)."""
        if flow not in self.hosts:
            v4 = listener.family == socket.AF_INET
            self.hosts[flow] = _Host(flow, listener, events.UDP, False, v4, peer)

    def send(self, request: events.DatagramSend) -> None:
        host = self.hosts.get(request.flow)
        if host is None:
            return
        if host.peer is not None:
            try:
                host.sock.sendto(request.payload, host.peer)
            except OSError:
                pass  # the client is gone or its buffer is full: a datagram lost
            return
        try:
            if request.segment and len(request.payload) > request.segment:
                # One UDP GSO send for the guest's whole super-frame.
                ancillary = [(SOL_UDP, UDP_SEGMENT, struct.pack("=H", request.segment))]
                host.sock.sendmsg([request.payload], ancillary)
            else:
                host.sock.send(request.payload)
        except (BlockingIOError, InterruptedError):
            pass  # the host socket's buffer is full: dropped, as a congested link would
        except OSError as e:
            if e.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EACCES, errno.EPERM):
                self._forget(host)
                self.core.host_failed(request.flow, e.errno == errno.EHOSTUNREACH, request.payload)
            else:
                # ECONNREFUSED and friends: the error queue has the details for the guest.
                self._drain_errors(host, time.monotonic())

    def close_flow(self, flow: int) -> None:
        host = self.hosts.get(flow)
        if host is not None:
            self._forget(host)

    def _forget(self, host: _Host) -> None:
        self.hosts.pop(host.flow, None)
        if host.peer is None:
            self.reactor.unwatch(host.sock.fileno())
            host.sock.close()

    # -- events --------------------------------------------------------------------------
    def _on_readable(self, host: _Host, ev: int) -> str | None:
        now = time.monotonic()
        if ev & EPOLLERR:
            self._drain_errors(host, now)
        core, sock = self.core, host.sock
        for _ in range(READS_PER_WAKEUP):
            try:
                data = sock.recv(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return None
            except OSError:
                self._drain_errors(host, now)
                continue
            if host.kind == events.UDP:
                core.udp_received(host.flow, data, now)
            else:
                if host.strip_ip_header:
                    if not data:
                        continue
                    data = data[(data[0] & 0x0F) * 4 :]
                core.ping_received(host.flow, data, now, host.raw)
            if host.flow not in self.hosts:
                return None  # the stack closed the flow meanwhile
        return None

    def _drain_errors(self, host: _Host, now: float) -> None:
        for _ in range(READS_PER_WAKEUP):
            try:
                payload, ancillary, _, _ = host.sock.recvmsg(MAX_DATAGRAM, 512, socket.MSG_ERRQUEUE)
            except OSError:
                return
            for level, kind, data in ancillary:
                if (level, kind) in _RECVERR:
                    if len(data) < EXTENDED_ERR.size:
                        continue
                    _, origin, type_, code, _, _, _ = EXTENDED_ERR.unpack_from(data)
                    self.core.host_error(host.flow, origin, type_, code, payload, now)

    def close(self) -> None:
        for host in list(self.hosts.values()):
            self._forget(host)


_RECVERR = ((socket.SOL_IP, IP_RECVERR), (socket.IPPROTO_IPV6, IPV6_RECVERR))


def _ping_range() -> str:
    try:
        with open(PING_RANGE) as f:
            return " ".join(f.read().split())
    except OSError:
        return "unknown"
