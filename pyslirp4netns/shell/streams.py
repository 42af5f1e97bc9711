"""Part of the shell: the host sockets behind the stack's datagram flows (UDP and ICMP echo).

The stack asks (``events.DatagramOpen``/``Send``/``Close``); this carries it out with
non-blocking connected sockets and reports back (``udp_received``, ``ping_received``,
``datagram_error``, ``datagram_failed``). Connected sockets are the point: the kernel filters
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
from collections.abc import Callable

from pyslirp4netns.config import Config
from pyslirp4netns.core import events
from pyslirp4netns.core.stack import Stack
from pyslirp4netns.shell.errors import log

IP_RECVERR = getattr(socket, "IP_RECVERR", 11)
IPV6_RECVERR = getattr(socket, "IPV6_RECVERR", 25)
SOL_UDP = getattr(socket, "SOL_UDP", 17)
UDP_SEGMENT = getattr(socket, "UDP_SEGMENT", 103)
IPPROTO_ICMPV6 = getattr(socket, "IPPROTO_ICMPV6", 58)
SOCK_FLAGS = socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC
EXTENDED_ERR = struct.Struct("=IBBBBII")  # struct sock_extended_err (linux/errqueue.h)
READS_PER_WAKEUP = 64  # then back to the loop, so one busy flow can't starve the others
MAX_DATAGRAM = 65535
PING_RANGE = "/proc/sys/net/ipv4/ping_group_range"

Watch = Callable[[int, int, Callable[[int], str | None]], None]


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

    def __init__(
        self, stack: Stack, config: Config, watch: Watch, unwatch: Callable[[int], None]
    ) -> None:
        self.stack = stack
        self.watch = watch
        self.unwatch = unwatch
        self.outbound4 = str(config.outbound_addr) if config.outbound_addr else None
        self.outbound6 = str(config.outbound_addr6) if config.outbound_addr6 else None
        self.hosts: dict[int, _Host] = {}
        self._ping_warned: set[int] = set()

    # -- requests ------------------------------------------------------------------------
    def carry_out(self, request: events.Request) -> None:
        if isinstance(request, events.DatagramSend):
            self._send(request)
        elif isinstance(request, events.DatagramOpen):
            self._open(request)
        elif isinstance(request, events.DatagramClose):
            self._close(request.flow)

    def _open(self, request: events.DatagramOpen) -> None:
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
            log(f"WARNING: cannot open a host socket: {os.strerror(e.errno or errno.EIO)}")
            return
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
            self.stack.datagram_failed(request.flow, unreachable, b"")
            return
        host = _Host(request.flow, sock, request.kind, raw, v4)
        self.hosts[request.flow] = host
        self.watch(sock.fileno(), _EPOLLIN, functools.partial(self._on_readable, host))

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
                f"gid {os.getgid()} is outside net.ipv4.ping_group_range ({_ping_range()}) "
                "and raw sockets need CAP_NET_RAW"
            )
        return None

    def adopt(self, flow: int, listener: socket.socket, peer: tuple[object, ...]) -> None:
        """A UDP forward's client: the guest's replies on ``flow`` go to ``peer`` through the
        forward's listening socket (which the forward, not this table, watches and closes)."""
        if flow not in self.hosts:
            v4 = listener.family == socket.AF_INET
            self.hosts[flow] = _Host(flow, listener, events.UDP, False, v4, peer)

    def _send(self, request: events.DatagramSend) -> None:
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
                self.stack.datagram_failed(
                    request.flow, e.errno == errno.EHOSTUNREACH, request.payload
                )
            else:
                # ECONNREFUSED and friends: the error queue has the details for the guest.
                self._drain_errors(host, time.monotonic())

    def _close(self, flow: int) -> None:
        host = self.hosts.get(flow)
        if host is not None:
            self._forget(host)

    def _forget(self, host: _Host) -> None:
        self.hosts.pop(host.flow, None)
        if host.peer is None:
            self.unwatch(host.sock.fileno())
            host.sock.close()

    # -- events --------------------------------------------------------------------------
    def _on_readable(self, host: _Host, ev: int) -> str | None:
        now = time.monotonic()
        if ev & _EPOLLERR:
            self._drain_errors(host, now)
        stack, sock = self.stack, host.sock
        for _ in range(READS_PER_WAKEUP):
            try:
                data = sock.recv(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return None
            except OSError:
                self._drain_errors(host, now)
                continue
            if host.kind == events.UDP:
                stack.udp_received(host.flow, data, now)
            else:
                if host.strip_ip_header:
                    if not data:
                        continue
                    data = data[(data[0] & 0x0F) * 4 :]
                stack.ping_received(host.flow, data, now, host.raw)
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
                if (level, kind) in (
                    (socket.SOL_IP, IP_RECVERR),
                    (socket.IPPROTO_IPV6, IPV6_RECVERR),
                ):
                    if len(data) < EXTENDED_ERR.size:
                        continue
                    _, origin, type_, code, _, _, _ = EXTENDED_ERR.unpack_from(data)
                    self.stack.datagram_error(host.flow, origin, type_, code, payload, now)

    def close(self) -> None:
        for host in list(self.hosts.values()):
            self._forget(host)


_RECVERR = ((socket.SOL_IP, IP_RECVERR), (socket.IPPROTO_IPV6, IPV6_RECVERR))
_EPOLLIN = 0x001
_EPOLLERR = 0x008


def _ping_range() -> str:
    try:
        with open(PING_RANGE) as f:
            return " ".join(f.read().split())
    except OSError:
        return "unknown"


class _Stream:
    """One guest TCP connection's host socket and what the loop waits for on it."""

    __slots__ = (
        "flow",
        "sock",
        "fd",
        "connected",
        "events",
        "eof",
        "shut",
        "paused",
        "handler",
        "registered",
    )

    def __init__(self, flow: int, sock: socket.socket) -> None:
        self.flow = flow
        self.sock = sock
        self.fd = sock.fileno()
        self.connected = False
        self.events = _EPOLLOUT  # the connect's completion first
        self.eof = False  # the host sent FIN (or the socket failed)
        self.shut = False  # SHUT_WR done (or pending until to_host drains)
        self.paused = False  # reading stopped: the connection's send buffer is full
        self.handler: Callable[[int], str | None] | None = None
        self.registered = False  # in the epoll set (taken out while a hung-up socket waits)


STREAM_READ = 1 << 18  # bytes per recv: a few GSO bursts toward the guest
SOCKET_BUFFER = 1 << 20  # host socket buffers, beside the connection's own window


class HostStreams:
    """Flow id -> the non-blocking host socket of one guest TCP connection.

    Reading follows the connection's room (``send_space``): when it is full we stop asking
    epoll for EPOLLIN, so the host sender feels TCP backpressure instead of us buffering.
    Writing takes ``to_host`` as far as the socket accepts; the rest waits for EPOLLOUT.
    """

    def __init__(
        self,
        stack: Stack,
        config: Config,
        watch: Watch,
        modify: Callable[[int, int], None],
        unwatch: Callable[[int], None],
    ) -> None:
        self.stack = stack
        self.watch = watch
        self.modify = modify
        self.unwatch = unwatch
        self.outbound4 = str(config.outbound_addr) if config.outbound_addr else None
        self.outbound6 = str(config.outbound_addr6) if config.outbound_addr6 else None
        self.streams: dict[int, _Stream] = {}
        self.paused: set[_Stream] = set()

    def carry_out(self, request: events.Request) -> None:
        if isinstance(request, events.StreamWrite):
            stream = self.streams.get(request.flow)
            if stream is not None and stream.connected:
                self._write(stream, time.monotonic())
        elif isinstance(request, events.StreamConnect):
            self._connect(request)
        elif isinstance(request, events.StreamShutdown):
            stream = self.streams.get(request.flow)
            if stream is not None:
                stream.shut = True
                self._write(stream, time.monotonic())
        elif isinstance(request, events.StreamClose):
            stream = self.streams.get(request.flow)
            if stream is not None:
                self._forget(stream, abort=request.abort)

    # -- connect -------------------------------------------------------------------------
    def _connect(self, request: events.StreamConnect) -> None:
        v4 = request.family == socket.AF_INET
        try:
            sock = socket.socket(request.family, socket.SOCK_STREAM | SOCK_FLAGS)
        except OSError:
            self.stack.tcp_failed(request.flow, False, time.monotonic())
            return
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as slirp4netns
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)
            outbound = self.outbound4 if v4 else self.outbound6
            if outbound is not None:
                sock.bind((outbound, 0))
            address = socket.inet_ntop(request.family, request.addr)
            target = (address, request.port) if v4 else (address, request.port, 0, request.scope)
            code = sock.connect_ex(target)
        except OSError as e:
            code = e.errno or errno.EIO
        if code not in (0, errno.EINPROGRESS):
            sock.close()
            self._connect_failed(request.flow, code)
            return
        stream = _Stream(request.flow, sock)
        self.streams[request.flow] = stream
        stream.handler = functools.partial(self._on_event, stream)
        self.watch(stream.fd, _EPOLLOUT, stream.handler)
        stream.registered = True

    def adopt(self, flow: int, sock: socket.socket) -> None:
        """An accepted client of a TCP forward: connected already, read as soon as the
        connection toward the guest can hold its data (it queues until the guest answers)."""
        sock.setblocking(False)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        stream = _Stream(flow, sock)
        stream.connected = True
        stream.events = _EPOLLIN
        self.streams[flow] = stream
        stream.handler = functools.partial(self._on_event, stream)
        self.watch(stream.fd, _EPOLLIN, stream.handler)
        stream.registered = True

    def _connect_failed(self, flow: int, code: int) -> None:
        now = time.monotonic()
        if code == errno.ECONNREFUSED:
            self.stack.tcp_refused(flow, now)
        else:
            self.stack.tcp_failed(flow, code == errno.EHOSTUNREACH, now)

    # -- events --------------------------------------------------------------------------
    def _on_event(self, stream: _Stream, ev: int) -> str | None:
        now = time.monotonic()
        if not stream.connected:
            code = stream.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if code:
                self._forget(stream, abort=False)
                self._connect_failed(stream.flow, code)
                return None
            if not ev & _EPOLLOUT:
                return None
            stream.connected = True
            self.stack.tcp_connected(stream.flow, now)
            self._set_events(stream, _EPOLLIN)
            return None
        if ev & _EPOLLERR and stream.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
            self._host_reset(stream, now)  # e.g. ECONNRESET: the guest gets an RST
            return None
        if ev & _EPOLLOUT:
            self._write(stream, now)
            if stream.flow not in self.streams:
                return None
        if ev & _EPOLLIN or (ev & _EPOLLHUP and not stream.paused and not stream.eof):
            self._read(stream, now)
        elif ev & _EPOLLHUP:
            # Hung up both ways: epoll reports that whatever we ask, so a finished socket goes,
            # and a paused one leaves the set until there is room to read its last bytes.
            if stream.eof:
                self._forget(stream, abort=False)
            else:
                self.unwatch(stream.fd)
                stream.registered = False
        return None

    def _read(self, stream: _Stream, now: float) -> None:
        if stream.eof:
            return
        conn = self.stack.tcp_connection(stream.flow)
        if conn is None:
            return
        room = conn.send_space()
        if room <= 0:
            self._pause(stream)
            return
        try:
            data = stream.sock.recv(min(room, STREAM_READ))
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._host_reset(stream, now)
            return
        if data:
            self.stack.tcp_host_data(stream.flow, data, now)
            return
        stream.eof = True
        self._set_events(stream, stream.events & ~_EPOLLIN)
        self.stack.tcp_host_eof(stream.flow, now)
        self._maybe_done(stream)

    def _write(self, stream: _Stream, now: float) -> None:
        conn = self.stack.tcp_connection(stream.flow)
        if conn is None:
            return
        queue = conn.to_host
        sent = 0
        while queue:
            chunks = list(queue) if len(queue) <= 64 else [queue[i] for i in range(64)]
            try:
                n = stream.sock.sendmsg(chunks)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                if sent:
                    self.stack.tcp_host_written(stream.flow, sent, now)
                self._host_reset(stream, now)
                return
            sent += n
            while n:
                head = queue[0]
                if n >= len(head):
                    queue.popleft()
                    n -= len(head)
                else:
                    queue[0] = head[n:]
                    n = 0
        if sent:
            self.stack.tcp_host_written(stream.flow, sent, now)
        if queue:
            self._set_events(stream, stream.events | _EPOLLOUT)
            return
        self._set_events(stream, stream.events & ~_EPOLLOUT)
        if stream.shut:
            try:
                stream.sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            stream.shut = False  # done
            self._maybe_done(stream, shut_done=True)

    def _maybe_done(self, stream: _Stream, shut_done: bool = False) -> None:
        """Both directions finished: the socket has nothing left to do (the connection may
        still linger in TIME-WAIT toward the guest, which needs no socket)."""
        if shut_done:
            stream.events |= _SHUT_DONE
        if stream.eof and stream.events & _SHUT_DONE:
            self._forget(stream, abort=False)

    def _host_reset(self, stream: _Stream, now: float) -> None:
        flow = stream.flow
        self._forget(stream, abort=False)
        self.stack.tcp_host_reset(flow, now)

    def _pause(self, stream: _Stream) -> None:
        if not stream.paused:
            stream.paused = True
            self.paused.add(stream)
            self._set_events(stream, stream.events & ~_EPOLLIN)

    def resume_reads(self) -> None:
        """After the stack's flush: connections whose send buffer has room read again."""
        if not self.paused:
            return
        for stream in list(self.paused):
            conn = self.stack.tcp_connection(stream.flow)
            if conn is None or stream.flow not in self.streams:
                self.paused.discard(stream)
            elif conn.send_space() > 0:
                stream.paused = False
                self.paused.discard(stream)
                wanted = stream.events if stream.eof else stream.events | _EPOLLIN
                if not stream.registered and stream.handler is not None:
                    stream.events = wanted
                    self.watch(stream.fd, wanted & (_EPOLLIN | _EPOLLOUT), stream.handler)
                    stream.registered = True
                else:
                    self._set_events(stream, wanted)

    def _set_events(self, stream: _Stream, wanted: int) -> None:
        mask = wanted & (_EPOLLIN | _EPOLLOUT)
        if stream.registered and mask != stream.events & (_EPOLLIN | _EPOLLOUT):
            self.modify(stream.fd, mask)
        stream.events = wanted

    def _forget(self, stream: _Stream, abort: bool) -> None:
        if self.streams.pop(stream.flow, None) is None:
            return
        self.paused.discard(stream)
        if stream.registered:
            self.unwatch(stream.fd)
        if abort:
            # The guest reset its connection: the host peer gets a reset too.
            try:
                stream.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
        stream.sock.close()

    def close(self) -> None:
        for stream in list(self.streams.values()):
            self._forget(stream, abort=False)


_EPOLLOUT = 0x004
_EPOLLHUP = 0x010
_SHUT_DONE = 0x10000  # our own bit in _Stream.events: SHUT_WR has been done
