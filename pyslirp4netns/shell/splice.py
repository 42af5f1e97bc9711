"""``--port-forward-mode=splice`` (our extension): API TCP forwards joined in the kernel.

In the default mode (``tap``) an accepted host client becomes an active open toward the guest
through the user-space stack, as in slirp4netns. In splice mode, as pasta does, the client is
joined instead to a socket that lives *inside the target's network namespace* and is connected
there to the rule's guest address and port (``guest_addr`` as the tap mode reads it: "" is
10.0.2.100, "0.0.0.0" the first DHCP address). That address is local to the namespace, so the
connection runs over the namespace's loopback device and the guest server sees its own address
(e.g. 10.0.2.100, or fd00::100) as the peer, not 10.0.2.2 or the real client. A service that
listens on the guest's 127.0.0.1 only stays unreachable, as in the tap mode.

Bytes move with ``splice(2)`` through one pipe per direction (SPLICE_F_MOVE|SPLICE_F_NONBLOCK),
driven by the daemon's one epoll loop: read from a socket into the pipe while the pipe is empty,
write the pipe out to the other socket, wait for EPOLLOUT when that socket is full. EOF on one
side, once its pipe is drained, is ``shutdown(SHUT_WR)`` on the other; a reset or an error on
either side resets the other (SO_LINGER 0); a refused connect resets the client.

Sockets in the namespace come from ``NamespaceHelper``: a small process forked at start-up
(before the sandbox and the seccomp filter), which joins the target's user namespace where one
must be joined and then its network namespace, drops every capability, and from then on only
answers "N sockets of family F" over a SOCK_SEQPACKET socketpair with SCM_RIGHTS. A socket
belongs to the namespace it was created in, so the daemon itself then connects it
(non-blocking, like every other connect of the loop). The helper dies with the daemon
(PR_SET_PDEATHSIG, and it exits on the socketpair's EOF). UDP forwards are unchanged.
"""

from __future__ import annotations

import collections
import ctypes
import errno
import fcntl
import functools
import os
import signal
import socket
import struct
import sys
from collections.abc import Callable

from pyslirp4netns.config import Config
from pyslirp4netns.shell.errors import StartupError, log
from pyslirp4netns.shell.netns import (
    CLONE_NEWNET,
    CLONE_NEWUSER,
    join_userns,
    needs_userns_join,
    netns_path,
    setns,
    userns_path,
)
from pyslirp4netns.shell.reactor import EPOLLERR, EPOLLHUP, EPOLLIN, EPOLLOUT, Reactor

# What the seccomp allow-list needs beyond the default mode's (F_SETPIPE_SZ is an fcntl).
SYSCALLS = ("splice", "pipe2")

FLAGS = os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK
PIPE_SIZE = 1 << 18  # asked per pipe; the kernel's default (64 KiB) stays if refused
ROUNDS = 8  # read/write rounds per direction per wake-up, so that one stream can't starve others
ACCEPTS_PER_WAKEUP = 64
MAX_FDS = 250  # per reply (the kernel's SCM_MAX_FD is 253)
SYN_RETRIES = 2  # TCP_SYNCNT: a guest address that is not local gives up in ~7 s, not 2 min
HELPER_TIMEOUT = 10.0  # start-up: the helper's "joined" line
PR_SET_PDEATHSIG = 1
PR_SET_NO_NEW_PRIVS = 38
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
_REQUEST = struct.Struct("!BH")  # family (4 or 6), how many sockets
_REPLY = struct.Struct("!BHi")  # family, how many were asked, errno of the first failure
_LINGER_RST = struct.pack("ii", 1, 0)
_FAMILIES = {4: socket.AF_INET, 6: socket.AF_INET6}

Waiter = Callable[[socket.socket | None], None]


class NamespaceHelper:
    """The daemon's side of the helper: asks for sockets, hands each to the next waiter."""

    def __init__(self, config: Config, reactor: Reactor) -> None:
        self.reactor = reactor
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        userns = userns_path(config) if needs_userns_join(config) else None
        parent = os.getpid()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child never returns
            _helper_main(theirs.detach(), parent, userns, netns_path(config))
        theirs.close()
        self.pid = pid
        self.sock = ours
        self.fd = ours.fileno()
        ours.settimeout(HELPER_TIMEOUT)
        try:
            hello = ours.recv(256)
        except OSError as e:
            hello = f"no answer ({e})".encode()
        if hello != b"ok":
            ours.close()
            what = hello.decode(errors="replace") or "it exited"
            raise StartupError(f"splice: the namespace helper failed: {what}")
        ours.setblocking(False)
        self.alive = True
        self.waiters: dict[int, collections.deque[Waiter]] = {
            4: collections.deque(),
            6: collections.deque(),
        }
        self.asked = {4: 0, 6: 0}  # sockets asked for and not yet answered
        self.unsent: list[bytes] = []  # requests the socketpair could not take yet
        self.want_out = False
        reactor.watch(self.fd, EPOLLIN, self._on_event)

    def get(self, version: int, waiter: Waiter) -> None:
        """Call ``waiter`` with a fresh socket of the namespace (None if none can be had)."""
        if not self.alive:
            waiter(None)
            return
        self.waiters[version].append(waiter)

    def flush(self) -> None:
        """Ask for what the waiters queued since the last call need (one message a family)."""
        for version, waiters in self.waiters.items():
            need = len(waiters) - self.asked[version]
            while need > 0:
                count = min(need, MAX_FDS)
                self.unsent.append(_REQUEST.pack(version, count))
                self.asked[version] += count
                need -= count
        self._send()

    def _send(self) -> None:
        while self.unsent:
            try:
                self.sock.send(self.unsent[0])
            except (BlockingIOError, InterruptedError):
                if not self.want_out:
                    self.want_out = True
                    self.reactor.modify(self.fd, EPOLLIN | EPOLLOUT)
                return
            except OSError:
                self._gone()
                return
            self.unsent.pop(0)
        if self.want_out:
            self.want_out = False
            self.reactor.modify(self.fd, EPOLLIN)

    def _on_event(self, events: int) -> str | None:
        if events & EPOLLOUT:
            self._send()
        while self.alive:
            try:
                message, fds, _, _ = socket.recv_fds(
                    self.sock, 64, MAX_FDS, socket.MSG_CMSG_CLOEXEC
                )
            except (BlockingIOError, InterruptedError):
                return None
            except OSError:
                message, fds = b"", []
            if len(message) < _REPLY.size:
                for fd in fds:
                    os.close(fd)
                self._gone()
                return None
            version, count, error = _REPLY.unpack_from(message)
            self.asked[version] -= count
            waiters = self.waiters[version]
            for i in range(count):
                sock = socket.socket(fileno=fds[i]) if i < len(fds) else None
                if waiters:
                    waiters.popleft()(sock)
                elif sock is not None:
                    sock.close()
            if error:
                log(f"splice: no socket in the namespace: {os.strerror(error)}")
        return None

    def _gone(self) -> None:
        """The helper exited (it never should before us): forwards reset their clients."""
        if not self.alive:
            return
        log("splice: the namespace helper exited")
        self.alive = False
        self.reactor.unwatch(self.fd)
        for waiters in self.waiters.values():
            while waiters:
                waiters.popleft()(None)

    def close(self) -> None:
        if self.alive:
            self.reactor.unwatch(self.fd)
            self.alive = False
        self.sock.close()  # the helper reads EOF and exits


def _drop_capabilities() -> None:
    """The helper needs none to create sockets; no exec can give any back either."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    header = (ctypes.c_uint32 * 2)(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (ctypes.c_uint32 * 6)()
    if libc.capset(header, data) != 0:
        raise OSError(ctypes.get_errno(), "capset")


def _helper_main(fd: int, parent: int, userns: str | None, netns: str) -> None:
    """The forked helper: join, say "ok", then serve socket requests until EOF."""
    status = 0
    try:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR2):
            signal.signal(signum, signal.SIG_DFL)
        signal.set_wakeup_fd(-1)
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, 0)
        os.dup2(devnull, 1)
        # Nothing of the daemon's stays open here: the ready fd, the tap, the listeners.
        os.closerange(3, fd)
        os.closerange(fd + 1, 1 << 20)
        sock = socket.socket(fileno=fd)
        sock.setblocking(True)
        try:
            if userns is not None:
                join_userns(userns, CLONE_NEWUSER)
            ns = os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
            try:
                setns(ns, CLONE_NEWNET)
            finally:
                os.close(ns)
            _drop_capabilities()
        except OSError as e:
            sock.send(f"setns: {os.strerror(e.errno or errno.EIO)}".encode())
            raise
        # Set after the joins (a credential change clears it), then check the parent is still ours.
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:
            return
        sock.send(b"ok")
        while message := sock.recv(64):
            version, count = _REQUEST.unpack_from(message)
            made: list[socket.socket] = []
            error = 0
            for _ in range(min(count, MAX_FDS)):
                try:
                    made.append(
                        socket.socket(
                            _FAMILIES[version],
                            socket.SOCK_STREAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC,
                        )
                    )
                except OSError as e:
                    error = e.errno or errno.EIO
                    break
            reply = _REPLY.pack(version, count, error)
            socket.send_fds(sock, [reply], [s.fileno() for s in made])
            for s in made:
                s.close()
    except BaseException:
        status = 1
    finally:
        os._exit(status)


class _Half:
    """One direction: ``src`` -> pipe -> ``dst``."""

    __slots__ = ("src", "dst", "r", "w", "pending", "eof", "shut")

    def __init__(self, src: socket.socket, dst: socket.socket) -> None:
        self.src = src
        self.dst = dst
        self.r = self.w = -1
        self.pending = 0  # bytes in the pipe
        self.eof = False  # src said EOF
        self.shut = False  # dst got shutdown(SHUT_WR)

    def open_pipe(self) -> None:
        self.r, self.w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            fcntl.fcntl(self.w, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
        except OSError:
            pass  # e.g. over the user's pipe-user-pages-soft: the default size works too

    def pump(self) -> None:
        """Move what can be moved now; OSError means the connection is broken."""
        src, dst, r, w = self.src.fileno(), self.dst.fileno(), self.r, self.w
        for _ in range(ROUNDS):
            if self.pending:
                try:
                    n = os.splice(r, dst, self.pending, flags=FLAGS)
                except (BlockingIOError, InterruptedError):
                    return
                self.pending -= n
                if self.pending:
                    return  # dst is full: EPOLLOUT
                continue
            if self.eof:
                if not self.shut:
                    self.shut = True
                    self.dst.shutdown(socket.SHUT_WR)
                return
            try:
                n = os.splice(src, w, PIPE_SIZE, flags=FLAGS)
            except (BlockingIOError, InterruptedError):
                return
            if n == 0:
                self.eof = True
            else:
                self.pending = n

    @property
    def wants_input(self) -> bool:
        return not self.eof and not self.pending

    def close_pipe(self) -> None:
        for fd in (self.r, self.w):
            if fd >= 0:
                os.close(fd)
        self.r = self.w = -1


class _Splice:
    """One forwarded connection: the host client and its socket in the namespace."""

    def __init__(self, owner: Splicer, client: socket.socket) -> None:
        self.owner = owner
        self.client = client
        self.inner: socket.socket | None = None
        self.up: _Half | None = None  # client -> guest
        self.down: _Half | None = None  # guest -> client
        self.masks: dict[int, int] = {}  # fd -> the mask it is watched with
        self.parked: set[int] = set()  # HUP'd sockets left unwatched (see _on_event)
        self.closed = False

    # -- connecting ----------------------------------------------------------------------
    def connect(self, inner: socket.socket | None, address: tuple[str, int]) -> None:
        if self.closed:
            if inner is not None:
                inner.close()
            return
        if inner is None:
            self.abort()
            return
        self.inner = inner
        try:
            inner.setblocking(False)
            inner.setsockopt(socket.IPPROTO_TCP, socket.TCP_SYNCNT, SYN_RETRIES)
            inner.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            code = inner.connect_ex(address)
        except OSError as e:
            code = e.errno or errno.EIO
        if code == 0:
            self._established()
        elif code in (errno.EINPROGRESS, errno.EALREADY, errno.EAGAIN):
            self._watch(inner.fileno(), EPOLLOUT, self._on_connect)
        else:
            self.abort()

    def _on_connect(self, events: int, fd: int) -> str | None:
        assert self.inner is not None
        if self.closed:
            return None
        if self.inner.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
            self.abort()  # refused (or unreachable): the client gets a reset, as in tap mode
        else:
            self._established()
        return None

    def _established(self) -> None:
        inner = self.inner
        assert inner is not None
        self.up, self.down = _Half(self.client, inner), _Half(inner, self.client)
        try:
            self.up.open_pipe()
            self.down.open_pipe()
        except OSError:
            self.abort()
            return
        self._watch(self.client.fileno(), EPOLLIN, self._on_event)
        self._watch(inner.fileno(), EPOLLIN, self._on_event)
        self._on_event(0)

    # -- data ----------------------------------------------------------------------------
    def _on_event(self, events: int, fd: int = -1) -> str | None:
        up, down = self.up, self.down
        if self.closed or up is None or down is None:
            return None
        try:
            if events & EPOLLERR:
                for sock in (self.client, self.inner):
                    assert sock is not None
                    error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if error:
                        raise OSError(error, os.strerror(error))
            up.pump()
            down.pump()
        except OSError:
            self.abort()
            return None
        if up.shut and down.shut:
            self.finish()
            return None
        if events & EPOLLHUP:
            # Both halves of this socket are shut, but what it still holds waits for the other
            # socket to drain the pipe: level-triggered HUP would spin, so unwatch it till then.
            for half in (up, down):
                if half.pending and fd == half.src.fileno() and fd in self.masks:
                    del self.masks[fd]
                    self.owner.reactor.unwatch(fd)
                    self.parked.add(fd)
        self._rearm()
        return None

    def _rearm(self) -> None:
        """Watch each socket for what its two halves wait for, when that changed."""
        up, down = self.up, self.down
        assert up is not None and down is not None
        for half, other in ((up, down), (down, up)):
            fd = half.src.fileno()  # also ``other.dst``
            if fd in self.parked:
                if half.pending:
                    continue  # the other socket's EPOLLOUT brings us back
                self.parked.discard(fd)
            mask = (EPOLLIN if half.wants_input else 0) | (EPOLLOUT if other.pending else 0)
            current = self.masks.get(fd)
            if current is None:
                self._watch(fd, mask, self._on_event)
            elif current != mask:
                self.masks[fd] = mask
                self.owner.reactor.modify(fd, mask)

    def _watch(self, fd: int, mask: int, handler: Callable[[int, int], str | None]) -> None:
        reactor = self.owner.reactor
        if fd in self.masks:
            reactor.unwatch(fd)
        self.masks[fd] = mask
        reactor.watch(fd, mask, lambda events: handler(events, fd))

    # -- the end -------------------------------------------------------------------------
    def abort(self) -> None:
        """A reset, an error or a refusal: reset both sockets (the broken one is gone anyway)."""
        for sock in (self.client, self.inner):
            if sock is not None:
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
                except OSError:
                    pass
        self.finish()

    def finish(self) -> None:
        if self.closed:
            return
        self.closed = True
        for fd in self.masks:
            self.owner.reactor.unwatch(fd)
        self.masks.clear()
        self.parked.clear()
        for half in (self.up, self.down):
            if half is not None:
                half.close_pipe()
        for sock in (self.client, self.inner):
            if sock is not None:
                sock.close()
        self.owner.connections.discard(self)


class Splicer:
    """Accepts a TCP forward's clients and splices each to the guest inside the namespace."""

    def __init__(self, config: Config, reactor: Reactor) -> None:
        self.reactor = reactor
        self.helper = NamespaceHelper(config, reactor)
        self.connections: set[_Splice] = set()

    def accept(self, listener: socket.socket, guest: bytes, port: int) -> None:
        """Accept what the listener holds (up to a batch); ``guest`` is 4 or 16 bytes."""
        if len(guest) == 4:
            version, address = 4, (socket.inet_ntop(socket.AF_INET, guest), port)
        else:
            version, address = 6, (socket.inet_ntop(socket.AF_INET6, guest), port)
        for _ in range(ACCEPTS_PER_WAKEUP):
            try:
                client, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                break  # e.g. EMFILE: the client waits in the backlog
            client.setblocking(False)
            try:
                client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
            connection = _Splice(self, client)
            self.connections.add(connection)
            self.helper.get(version, functools.partial(connection.connect, address=address))
        self.helper.flush()

    def close(self) -> None:
        for connection in list(self.connections):
            connection.finish()
        self.helper.close()
