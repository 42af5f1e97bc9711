"""The host sockets behind the core's TCP connections: ``core/streams.py`` seen from the shell.

The core asks (``StreamConnect``, ``StreamWrite``, ``StreamShutdown``, ``StreamPause``,
``StreamResume``, ``StreamClose``); this carries it out on non-blocking sockets and reports back
facts (``host_connected``, ``host_refused``, ``host_failed``, ``host_data``, ``host_written``,
``host_writable``, ``host_eof``, ``host_reset``). Reading stops while the core says pause, so a
fast host sender feels TCP backpressure; what the socket does not take of a write waits in the
core until EPOLLOUT says there is room.
"""

from __future__ import annotations

import errno
import functools
import socket
import struct
import time

from pyslirp4netns.config import Config
from pyslirp4netns.core import events
from pyslirp4netns.core.streams import Streams
from pyslirp4netns.shell.reactor import EPOLLERR, EPOLLHUP, EPOLLIN, EPOLLOUT, Handler, Reactor

SOCK_FLAGS = socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC
OUT_OF_SOCKETS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
STREAM_READ = 1 << 18  # bytes per recv: a few GSO bursts toward the guest
SOCKET_BUFFER = 1 << 20  # host socket buffers, beside the connection's own window
_WATCHED = EPOLLIN | EPOLLOUT


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

    def __init__(self, flow: int, sock: socket.socket, handler: Handler | None = None) -> None:
        self.flow = flow
        self.sock = sock
        self.fd = sock.fileno()
        self.connected = False
        self.events = EPOLLOUT  # the connect's completion first
        self.eof = False  # the host sent FIN (or the socket failed)
        self.shut = False  # SHUT_WR done
        self.paused = True  # not reading until the core says resume
        self.handler = handler
        self.registered = False  # in the epoll set (taken out while a hung-up socket waits)


class HostStreams:
    """Flow id -> the non-blocking host socket of one guest TCP connection."""

    def __init__(self, core: Streams, config: Config, reactor: Reactor) -> None:
        self.core = core
        self.reactor = reactor
        self.outbound4 = str(config.outbound_addr) if config.outbound_addr else None
        self.outbound6 = str(config.outbound_addr6) if config.outbound_addr6 else None
        self.streams: dict[int, _Stream] = {}
        self._peak = 0  # most streams at once since the table was last rebuilt

    # -- requests ------------------------------------------------------------------------
    def write(self, request: events.StreamWrite) -> None:
        stream = self.streams.get(request.flow)
        if stream is None or not stream.connected:
            return
        data = request.data
        try:
            n = stream.sock.sendmsg(data)
        except (BlockingIOError, InterruptedError):
            n = 0
        except OSError:
            self._host_reset(stream, time.monotonic())
            return
        if n < sum(map(len, data)):
            # EPOLLOUT stays asked for until a write goes through whole, like the queue it
            # stands for: re-arming it on every short write would cost two epoll_ctl a cycle.
            self._set_events(stream, stream.events | EPOLLOUT)
        elif stream.events & EPOLLOUT:
            self._set_events(stream, stream.events & ~EPOLLOUT)
        self.core.host_written(stream.flow, n, n == 0, time.monotonic())

    def shutdown(self, request: events.StreamShutdown) -> None:
        stream = self.streams.get(request.flow)
        if stream is None:
            return
        try:
            stream.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        stream.shut = True
        self._maybe_done(stream)

    def pause(self, request: events.StreamPause) -> None:
        stream = self.streams.get(request.flow)
        if stream is not None and not stream.paused:
            stream.paused = True
            self._set_events(stream, stream.events & ~EPOLLIN)

    def resume(self, request: events.StreamResume) -> None:
        stream = self.streams.get(request.flow)
        if stream is None or not stream.paused:
            return
        stream.paused = False
        if not stream.connected or stream.eof:
            return  # the connect's completion, or nothing more to read
        wanted = stream.events | EPOLLIN
        if not stream.registered and stream.handler is not None:
            # A hung-up socket left the set while paused: back for its last bytes.
            stream.events = wanted
            self.reactor.watch(stream.fd, wanted & _WATCHED, stream.handler)
            stream.registered = True
        else:
            self._set_events(stream, wanted)

    def close_flow(self, request: events.StreamClose) -> None:
        stream = self.streams.get(request.flow)
        if stream is not None:
            self._forget(stream, abort=request.abort)

    # -- connect -------------------------------------------------------------------------
    def connect(self, request: events.StreamConnect) -> None:
        v4 = request.family == socket.AF_INET
        try:
            sock = socket.socket(request.family, socket.SOCK_STREAM | SOCK_FLAGS)
        except OSError as e:
            if e.errno in OUT_OF_SOCKETS:
                # No fd (or memory) for one more: refused at once, as a full host would, rather
                # than "network unreachable" (slirp4netns's answer), which names no real cause.
                self.core.host_refused(request.flow, time.monotonic())
            else:
                self.core.host_failed(request.flow, False, time.monotonic())
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
        self._add(request.flow, sock)

    def adopt(self, flow: int, sock: socket.socket) -> None:
        """An accepted client of a TCP forward: connected already, read at once (its bytes
        queue in the connection until the guest answers)."""
        sock.setblocking(False)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        stream = self._add(flow, sock, EPOLLIN)
        stream.connected = True
        stream.paused = False

    def _add(self, flow: int, sock: socket.socket, events_: int = EPOLLOUT) -> _Stream:
        stream = _Stream(flow, sock)
        stream.handler = functools.partial(self._on_event, stream)
        stream.events = events_
        self.streams[flow] = stream
        if len(self.streams) > self._peak:
            self._peak = len(self.streams)
        self.reactor.watch(stream.fd, events_, stream.handler)
        stream.registered = True
        return stream

    def _connect_failed(self, flow: int, code: int) -> None:
        now = time.monotonic()
        if code == errno.ECONNREFUSED:
            self.core.host_refused(flow, now)
        else:
            self.core.host_failed(flow, code == errno.EHOSTUNREACH, now)

    # -- events --------------------------------------------------------------------------
    def _on_event(self, stream: _Stream, ev: int) -> str | None:
        now = time.monotonic()
        if not stream.connected:
            code = stream.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if code:
                self._forget(stream, abort=False)
                self._connect_failed(stream.flow, code)
                return None
            if not ev & EPOLLOUT:
                return None
            stream.connected = True
            # Reading starts when the core says resume (after its SYN|ACK is on its way).
            self._set_events(stream, EPOLLIN if not stream.paused else 0)
            self.core.host_connected(stream.flow, now)
            return None
        if ev & EPOLLERR and stream.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
            self._host_reset(stream, now)  # e.g. ECONNRESET: the guest gets an RST
            return None
        if ev & EPOLLOUT:
            self.core.host_writable(stream.flow, now)
        if ev & EPOLLIN or (ev & EPOLLHUP and not stream.paused and not stream.eof):
            self._read(stream, now)
        elif ev & EPOLLHUP:
            # Hung up both ways: epoll reports that whatever we ask, so a finished socket goes,
            # and a paused one leaves the set until there is room to read its last bytes.
            if stream.eof:
                self._forget(stream, abort=False)
            elif stream.registered:
                self.reactor.unwatch(stream.fd)
                stream.registered = False
        return None

    def _read(self, stream: _Stream, now: float) -> None:
        if stream.eof or stream.paused:
            return
        try:
            data = stream.sock.recv(STREAM_READ)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._host_reset(stream, now)
            return
        if data:
            self.core.host_data(stream.flow, data, now)
            return
        stream.eof = True
        self._set_events(stream, stream.events & ~EPOLLIN)
        self.core.host_eof(stream.flow, now)
        self._maybe_done(stream)

    def _maybe_done(self, stream: _Stream) -> None:
        """Both directions finished: the socket has nothing left to do (the connection may
        still linger in TIME-WAIT toward the guest, which needs no socket)."""
        if stream.eof and stream.shut:
            self._forget(stream, abort=False)

    def _host_reset(self, stream: _Stream, now: float) -> None:
        flow = stream.flow
        self._forget(stream, abort=False)
        self.core.host_reset(flow, now)

    def _set_events(self, stream: _Stream, wanted: int) -> None:
        mask = wanted & _WATCHED
        if stream.registered and mask != stream.events & _WATCHED:
            self.reactor.modify(stream.fd, mask)
        stream.events = wanted

    def _forget(self, stream: _Stream, abort: bool) -> None:
        if self.streams.pop(stream.flow, None) is None:
            return
        if self._peak > 4 * len(self.streams) + 256:
            self.streams = dict(self.streams)  # dicts never shrink: a right-sized copy
            self._peak = len(self.streams)
        if stream.registered:
            self.reactor.unwatch(stream.fd)
        if abort:
            # The guest reset its connection: the host peer gets a reset too.
            try:
                stream.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
        stream.sock.close()
        stream.handler = None  # the handler holds the stream: no cycle left for the collector

    def close(self) -> None:
        for stream in list(self.streams.values()):
            self._forget(stream, abort=False)
