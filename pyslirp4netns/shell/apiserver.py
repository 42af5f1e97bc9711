"""Part of the shell: the API socket's connections, served from the daemon's epoll loop.

slirp4netns serves its API synchronously: one connected client that sends nothing stops every
packet. Here nothing ever blocks. Each connection is one request (contract §5.1), read as it
arrives into a ``jsonreader.Reader``; it is answered as soon as the request is decided:

* at EOF (podman and rootlesskit half-close after writing),
* as soon as the bytes read so far make a complete JSON value, or can no longer become one
  (slirp4netns also answers clients that never half-close),
* at 4096 bytes ("too large message").

The reply goes out in one non-blocking send (a client whose socket cannot take it is dropped),
then ``shutdown(SHUT_RDWR)`` and close. A client gets ``IDLE_TIMEOUT`` seconds from its accept
(not from its last byte: one byte a second must not hold a slot forever); then it gets the
"cannot parse JSON" reply slirp4netns would have sent for what it had, and is closed. At most
``MAX_CLIENTS`` connections are open; more are accepted and closed at once. Unlike slirp4netns,
nothing is logged per request (``apifd event``, ``api_handler: got request: ...``).

``add_hostfwd`` binds the host listener here, so that the reply tells the truth about the port
(in use, added twice, EACCES, EADDRNOTAVAIL all give "slirp_add_hostfwd failed"), and so
that a ``host_port`` of 0 (our extension) is answered and listed with the port the kernel
chose. The server alone owns the listeners: it keeps each rule's socket under the rule's id,
as a ``Forward``, and hands that to a ``Forwarding`` (the data path); ``remove_hostfwd`` and
shutdown call ``unlisten`` before the socket is closed.
"""

from __future__ import annotations

import errno
import functools
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from pyslirp4netns.config import Config
from pyslirp4netns.core.api import (
    ADD_FAILED,
    EPHEMERAL,
    MAX_REQUEST,
    AddHostfwd,
    Api,
    GetStats,
    RemoveHostfwd,
    Rule,
)
from pyslirp4netns.core.jsonreader import Outcome, Reader
from pyslirp4netns.shell.errors import do_slirp_failed, log
from pyslirp4netns.shell.reactor import EPOLLIN, Watch
from pyslirp4netns.shell.sockfile import SocketFile

IDLE_TIMEOUT = 5.0  # seconds from accept to reply, at most
MAX_CLIENTS = 1024  # open API connections; more are closed on accept
ACCEPTS_PER_WAKEUP = 256  # the rest wait for the next (level-triggered) wake-up
UNIX_PATH_MAX = 108  # sun_path
LISTEN_BACKLOG = 128  # forwards' TCP listeners; libslirp's 1 leaves a burst to SYN retries
RETRY_ACCEPT = 0.1  # seconds to stop accepting after EMFILE and the like
# accept() errors that mean "out of resources", not "this one connection failed": retrying at
# once would spin, since the listener stays readable.
_OUT_OF_RESOURCES = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}


@dataclass(frozen=True, slots=True, eq=False)
class Forward:
    """A rule of the table with its host socket: bound and, for TCP, listening."""

    rule: Rule
    sock: socket.socket

    @property
    def proto(self) -> str:
        return self.rule.proto

    @property
    def guest_addr(self) -> str:
        return self.rule.guest_addr

    @property
    def guest_port(self) -> int:
        return self.rule.guest_port


class Forwarding(Protocol):
    """The data path of the forwards: it watches ``forward.sock`` between listen and unlisten."""

    def listen(self, forward: Forward) -> None: ...

    def unlisten(self, forward: Forward) -> None: ...


class NoForwarding:
    """Forwards are recorded and bound, nothing is carried: the API alone, complete."""

    def listen(self, forward: Forward) -> None:
        pass

    def unlisten(self, forward: Forward) -> None:
        pass


def bind_listener(command: AddHostfwd) -> socket.socket:
    """The host side of a forward (contract §3.7): TCP with SO_REUSEADDR and listening, UDP
    without SO_REUSEADDR; IPv6 only for an IPv6 address. Raises OSError as bind/listen do."""
    kind = socket.SOCK_STREAM if command.proto == "tcp" else socket.SOCK_DGRAM
    family = socket.AF_INET6 if command.version == 6 else socket.AF_INET
    sock = socket.socket(family, kind | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
    try:
        if family == socket.AF_INET6:
            # "::" means IPv6 only; 0.0.0.0 is a separate rule, as in the list.
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if kind == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((command.host_addr, command.host_port))
        if kind == socket.SOCK_STREAM:
            sock.listen(LISTEN_BACKLOG)
    except BaseException:
        sock.close()
        raise
    return sock


class _Client:
    """One API connection waiting for its request to be decided."""

    __slots__ = ("sock", "fd", "reader", "deadline", "watched")

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.reader = Reader(limit=MAX_REQUEST)
        self.deadline = deadline
        self.watched = False


class ApiServer:
    """Serves ``listener`` (a listening, non-blocking AF_UNIX socket) through the daemon's loop.

    The daemon calls ``start()`` once, then ``next_deadline()``/``on_timer(now)`` with its other
    timers, and ``close()`` at exit (forwards are stopped and closed; the listener is not).
    """

    def __init__(
        self,
        listener: socket.socket,
        api: Api,
        watch: Watch,
        unwatch: Callable[[int], None],
        forwarding: Forwarding | None = None,
        clock: Callable[[], float] = time.monotonic,
        idle_timeout: float = IDLE_TIMEOUT,
        max_clients: int = MAX_CLIENTS,
        bind: Callable[[AddHostfwd], socket.socket] = bind_listener,
        stats: Callable[[], bytes] | None = None,
    ) -> None:
        self.listener = listener
        self.api = api
        self.watch = watch
        self.unwatch = unwatch
        self.forwarding: Forwarding = forwarding if forwarding is not None else NoForwarding()
        self.clock = clock
        self.idle_timeout = idle_timeout
        self.max_clients = max_clients
        self.bind = bind  # tests swap in a model of the host's ports
        self.stats = stats  # get_stats: the daemon's counters as a JSON object
        self.requests = 0  # requests answered (get_stats counts itself)
        # Insertion order is accept order, hence deadline order: the first is the next due.
        self.clients: dict[int, _Client] = {}
        self.forwards: dict[int, Forward] = {}  # rule id -> its socket, from bind to release
        self._paused_until: float | None = None

    # -- the daemon's interface ------------------------------------------------------------
    def start(self) -> None:
        self.watch(self.listener.fileno(), EPOLLIN, self.on_listener)

    def next_deadline(self) -> float | None:
        deadlines = [] if self._paused_until is None else [self._paused_until]
        if self.clients:
            deadlines.append(next(iter(self.clients.values())).deadline)
        return min(deadlines, default=None)

    def on_timer(self, now: float) -> None:
        while self.clients:
            client = next(iter(self.clients.values()))
            if client.deadline > now:
                break
            # Time is up: the reply slirp4netns would have given to what arrived (a request
            # still cut short: "cannot parse JSON").
            self._answer(client, client.reader.finish())
        if self._paused_until is not None and now >= self._paused_until:
            self._resume_accepting()

    def close(self) -> None:
        """Drop every client, stop and close every forward; the listener stays to its owner."""
        if self._paused_until is None:
            self.unwatch(self.listener.fileno())
        self._paused_until = None  # and closing clients below must not resume accepting
        for client in list(self.clients.values()):
            self._close(client)
        for rule in self.api.take_all():
            self._release(rule)

    # -- connections -------------------------------------------------------------------------
    def on_listener(self, events: int) -> None:
        for _ in range(ACCEPTS_PER_WAKEUP):
            try:
                sock, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                if e.errno in _OUT_OF_RESOURCES:
                    self._pause_accepting()
                    return
                continue  # e.g. ECONNABORTED: that client gave up; the next one may not have
            if len(self.clients) >= self.max_clients:
                sock.close()
                continue
            try:
                sock.setblocking(False)
            except OSError:
                sock.close()
                continue
            client = _Client(sock, self.clock() + self.idle_timeout)
            self.clients[client.fd] = client
            # The request is often there already (clients write right after connect).
            if self._read(client):
                self.watch(client.fd, EPOLLIN, functools.partial(self._on_client, client))
                client.watched = True

    def _on_client(self, client: _Client, events: int) -> None:
        if self.clients.get(client.fd) is client:
            self._read(client)

    def _read(self, client: _Client) -> bool:
        """Read what is there; answer once decided. True while the client is still waiting."""
        reader = client.reader
        while True:
            try:
                chunk = client.sock.recv(MAX_REQUEST - reader.size)
            except (BlockingIOError, InterruptedError):
                return True
            except OSError:
                self._close(client)  # e.g. ECONNRESET: nobody to answer
                return False
            outcome = reader.feed(chunk) if chunk else reader.finish()
            if outcome is not None:
                self._answer(client, outcome)
                return False

    def _answer(self, client: _Client, outcome: Outcome) -> None:
        self.requests += 1
        self._reply(client, self._execute(outcome))

    def _reply(self, client: _Client, reply: bytes) -> None:
        try:
            # One send; a client whose socket cannot take the reply whole is not waited for.
            client.sock.send(reply, socket.MSG_NOSIGNAL | socket.MSG_DONTWAIT)
        except OSError:
            pass
        self._close(client)

    def _close(self, client: _Client) -> None:
        del self.clients[client.fd]
        if client.watched:
            self.unwatch(client.fd)
        try:
            client.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        client.sock.close()
        if self._paused_until is not None:
            self._resume_accepting()  # an fd is free again

    def _pause_accepting(self) -> None:
        self.unwatch(self.listener.fileno())
        self._paused_until = self.clock() + RETRY_ACCEPT

    def _resume_accepting(self) -> None:
        self._paused_until = None
        self.start()

    # -- commands ----------------------------------------------------------------------------
    def _execute(self, outcome: Outcome) -> bytes:
        result = self.api.execute(outcome)
        if isinstance(result, bytes):
            return result
        if isinstance(result, RemoveHostfwd):
            self._release(result.rule)
            return result.reply
        if isinstance(result, GetStats):
            if self.stats is None:
                return b'{"return":{"api_requests":%d}}' % self.requests
            return b'{"return":' + self.stats() + b"}"
        return self._add(result)

    def _add(self, command: AddHostfwd) -> bytes:
        try:
            sock = self.bind(command)
        except OSError:
            return ADD_FAILED
        ephemeral = command.host_port == EPHEMERAL  # our extension: the kernel picks the port
        rule = self.api.rule(command, int(sock.getsockname()[1]) if ephemeral else None)
        forward = self.forwards[rule.id] = Forward(rule, sock)
        try:
            self.forwarding.listen(forward)
        except Exception as e:  # the data path's failure must not take the API down
            log(f"api: forwarding {command.proto} port {command.host_port} failed: {e!r}")
            self._release(rule)
            return ADD_FAILED
        return self.api.added(rule, ephemeral)

    def _release(self, rule: Rule) -> None:
        """Stop the forward's data path, then close its socket (new clients are refused)."""
        forward = self.forwards.pop(rule.id)
        try:
            self.forwarding.unlisten(forward)
        except Exception as e:
            log(f"api: stopping {rule.proto} port {rule.host_port} failed: {e!r}")
        forward.sock.close()


class ApiSocket:
    """The listening unix socket at --api-socket; the file is ours to remove at exit."""

    # A deep backlog: a client whose connect() finds it full gets EAGAIN (Go's dialer gives up
    # on that), and bursts of clients are what the server is built for.
    BACKLOG = 1024

    def __init__(self, path: str) -> None:
        if len(path.encode()) >= UNIX_PATH_MAX:
            raise do_slirp_failed(f"the specified API socket path is too long (>= {UNIX_PATH_MAX})")
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            os.unlink(path)  # slirp4netns replaces whatever is there
        except FileNotFoundError:
            pass
        except OSError:
            pass  # bind reports the real problem
        try:
            self.sock.bind(path)
            self.sock.listen(self.BACKLOG)
        except OSError as e:
            self.sock.close()
            raise do_slirp_failed(
                f"api_bindlisten: bind: {os.strerror(e.errno or errno.EIO)}"
            ) from None
        self.sock.setblocking(False)
        self.file = SocketFile(path)
        self.server: ApiServer | None = None

    def serve(
        self,
        config: Config,
        watch: Watch,
        unwatch: Callable[[int], None],
        forwarding: Forwarding | None = None,
        stats: Callable[[], bytes] | None = None,
    ) -> ApiServer:
        """Answer requests from the daemon's loop (apiserver.py); forwards go to ``forwarding``,
        get_stats to ``stats``."""
        self.server = ApiServer(self.sock, Api(config), watch, unwatch, forwarding, stats=stats)
        self.server.start()
        return self.server

    def close(self) -> None:
        """Stop the server and its forwards, then close and remove the file, unless someone
        else has since put their own at the path."""
        if self.server is not None:
            self.server.close()
            self.server = None
        self.sock.close()
        self.file.remove()
