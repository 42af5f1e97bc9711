"""Join the target's namespaces, open (or attach to) the tap there, and hand its fd back.

slirp4netns forks a child that enters the target and passes the tap fd back over a socketpair
(contract §4.1). We keep that shape: a short-lived forked child joins the user namespace where
one must be joined (PID mode with a foreign userns, or ``--userns-path``), then the network
namespace, opens the tap, runs ``--configure`` there and sends the fd back with SCM_RIGHTS.
The child is forked early and the parent imports its data plane meanwhile (start-up time is
the wait for the slower of the two).

The main process never leaves its own namespaces, so every host socket it opens later
is an ordinary host socket, and the log lines are slirp4netns's (``sent tapfd=N for TAP``,
``received tapfd=N``). Errors are slirp4netns's perror-style lines followed by ``child failed(1)``.
"""

from __future__ import annotations

import ctypes
import errno
import os
import signal
import socket
import struct
import sys

from pyslirp4netns.config import Config
from pyslirp4netns.shell.errors import StartupError, log, perror
from pyslirp4netns.shell.tap import Tap, open_tap

CLONE_NEWNET = 0x40000000
CLONE_NEWUSER = 0x10000000
PR_SET_PDEATHSIG = 1

_libc = ctypes.CDLL(None, use_errno=True)
# The child's one message beside the fd: vnet_hdr flag, offload flags, then an optional note.
_MODE = struct.Struct("!?I16s")


def setns(fd: int, nstype: int) -> None:
    if _libc.setns(fd, nstype) != 0:
        raise OSError(ctypes.get_errno(), "setns")


def _join(path: str, nstype: int, what: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise perror(path, e.errno or errno.EIO) from None
    try:
        setns(fd, nstype)
    except OSError as e:
        raise perror(what, e.errno or errno.EIO) from None
    finally:
        os.close(fd)


def join_userns(path: str, nstype: int) -> None:
    """Best-effort userns join, as slirp4netns: a failure is ignored and the next step decides."""
    try:
        _join(path, nstype, "setns(CLONE_NEWUSER)")
    except StartupError:
        pass


def netns_path(config: Config) -> str:
    return config.target if config.path_mode else f"/proc/{config.pid}/ns/net"


def userns_path(config: Config) -> str | None:
    """The user namespace to join, or None (slirp4netns: path mode joins one only if given)."""
    if config.userns_path is not None:
        return config.userns_path
    if config.path_mode:
        return None
    return f"/proc/{config.pid}/ns/user"


def needs_userns_join(config: Config) -> bool:
    """Joining our own userns is an EINVAL no-op; only a foreign one needs the forked child."""
    path = userns_path(config)
    if path is None:
        return False
    try:
        theirs = os.stat(path)
    except OSError:
        return False  # the netns step reports the missing target with slirp4netns's message
    ours = os.stat("/proc/self/ns/user")
    return (theirs.st_dev, theirs.st_ino) != (ours.st_dev, ours.st_ino)


def _enter_and_open(
    config: Config, want_offload: bool, with_userns: bool
) -> tuple[Tap, str | None]:
    """Everything that happens inside the target: join, open the tap, run -c."""
    if with_userns:
        path = userns_path(config)
        assert path is not None
        join_userns(path, CLONE_NEWUSER)
    _join(netns_path(config), CLONE_NEWNET, "setns(CLONE_NEWNET)")
    tap, note = open_tap(config.tapname, want_offload)
    if config.configure:
        # Here, not at the top: pyroute2 is loaded only by runs that ask for -c.
        from pyslirp4netns.shell.configure import configure

        try:
            configure(config, tap.name)
        except StartupError:
            os.close(tap.fd)
            raise
    return tap, note


def _child_failed(status: int) -> StartupError:
    return StartupError(f"child failed({status})")


class Join:
    """The forked child that enters the target, opens the tap (and runs ``-c``) and sends the
    tap's fd back. ``start_join`` forks it as early as start-up allows, so that the parent's
    own imports (the data plane) run on the other CPU while the child imports pyroute2 and
    talks netlink; ``finish`` then waits for the fd."""

    def __init__(self, pid: int, sock: socket.socket) -> None:
        self.pid = pid
        self.sock = sock

    def abandon(self) -> None:
        """Start-up failed in the parent: end the child (by its PID) and reap it."""
        self.sock.close()
        try:
            os.kill(self.pid, signal.SIGKILL)
        except OSError:
            pass
        os.waitpid(self.pid, 0)

    def finish(self) -> tuple[Tap, str | None]:
        """The tap (an fd of this process) and an optional note for the log; StartupError
        carrying the final line (``child failed(1)``) after the child printed its detail."""
        try:
            message, fds, _, _ = socket.recv_fds(self.sock, 4096, 1)
        except OSError as e:
            message, fds = b"", []
            recv_error: int | None = e.errno
        else:
            recv_error = None
        finally:
            self.sock.close()
        _, wstatus = os.waitpid(self.pid, 0)
        if not os.WIFEXITED(wstatus):
            raise StartupError(f"child failed(wstatus={wstatus}, !WIFEXITED)")
        code = os.WEXITSTATUS(wstatus)
        if code != 0:
            raise _child_failed(code)
        if recv_error is not None:
            raise perror("recvmsg", recv_error)
        if len(message) < _MODE.size:
            raise StartupError("the message is empty")
        if not fds:
            raise StartupError("the message does not contain fd")
        fd = fds[0]
        log(f"received tapfd={fd}")
        vnet_hdr, offload, name = _MODE.unpack_from(message)
        note = message[_MODE.size :].decode() or None
        return Tap(fd, name.rstrip(b"\0").decode(), bool(vnet_hdr), offload), note


def join_target(config: Config, want_offload: bool) -> tuple[Tap, str | None]:
    """Open the target's tap from inside the target; the caller's namespaces are unchanged."""
    return start_join(config, want_offload).finish()


def start_join(config: Config, want_offload: bool) -> Join:
    """Fork the child that joins the target (as slirp4netns does, contract §4.1).

    A child, not a thread: ``setns(CLONE_NEWUSER)`` refuses multi-threaded callers and would
    change the credentials of the whole process, and a child keeps pyroute2 (about 20 MiB and
    100 ms of imports) out of the long-lived daemon. Call it before any thread exists.
    """
    with_userns = needs_userns_join(config)
    parent_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # child: single-threaded, so setns(CLONE_NEWUSER) is allowed
        status = 1
        try:
            parent_sock.close()
            _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            tap, note = _enter_and_open(config, want_offload, with_userns)
            message = _MODE.pack(tap.vnet_hdr, tap.offload, tap.name.encode())
            message += (note or "").encode()
            socket.send_fds(child_sock, [message], [tap.fd])
            log(f"sent tapfd={tap.fd} for {config.tapname}")
            status = 0
        except StartupError as e:
            log(str(e))
        except BaseException as e:  # any surprise still ends the child with a clear line
            log(f"child: {e!r}")
        finally:
            os._exit(status)
    child_sock.close()
    return Join(pid, parent_sock)
