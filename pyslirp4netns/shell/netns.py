"""Join the target's namespaces, open (or attach to) the tap there, and hand its fd back.

slirp4netns forks a child that enters the target and passes the tap fd back over a socketpair
(contract §4.1). We keep that shape where it matters and stay lighter where it does not:

* A user namespace must be joined (PID mode with a foreign userns, or ``--userns-path``):
  ``setns(CLONE_NEWUSER)`` refuses multi-threaded callers, and joining would change the
  credentials of the whole process, so a short-lived forked child does it, exactly like
  slirp4netns, and sends the fd back with SCM_RIGHTS.
* Only a network namespace must be joined (path mode, e.g. podman; or a PID whose userns is ours):
  a dedicated thread joins it (setns(CLONE_NEWNET) is per thread), opens the tap and exits.

Either way the main thread never leaves its own namespaces, so every host socket it opens later
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
import threading

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


def join_target(config: Config, want_offload: bool) -> tuple[Tap, str | None]:
    """Open the target's tap from inside the target; the caller's namespaces are unchanged.

    Returns the tap (an fd of this process) and an optional one-line note for the log.
    Raises StartupError carrying the final line (``child failed(1)``) after any detail line has
    already been printed, as slirp4netns does.
    """
    if needs_userns_join(config):
        return _join_in_child(config, want_offload)
    return _join_in_thread(config, want_offload)


def _join_in_thread(config: Config, want_offload: bool) -> tuple[Tap, str | None]:
    result: list[tuple[Tap, str | None]] = []
    failure: list[BaseException] = []

    def work() -> None:
        try:
            result.append(_enter_and_open(config, want_offload, with_userns=False))
        except BaseException as e:  # reported by the caller; the thread must not die silently
            failure.append(e)

    # This thread's netns changes and is thrown away with the thread: the main thread never moves.
    thread = threading.Thread(target=work, name="netns-join", daemon=True)
    thread.start()
    thread.join()
    if failure:
        exc = failure[0]
        if isinstance(exc, StartupError):
            log(str(exc))
            raise _child_failed(1)
        raise exc
    tap, note = result[0]
    log(f"sent tapfd={tap.fd} for {config.tapname}")
    log(f"received tapfd={tap.fd}")
    return tap, note


def _join_in_child(config: Config, want_offload: bool) -> tuple[Tap, str | None]:
    parent_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # child: single-threaded, so setns(CLONE_NEWUSER) is allowed
        status = 1
        try:
            parent_sock.close()
            _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            tap, note = _enter_and_open(config, want_offload, with_userns=True)
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
    try:
        message, fds, _, _ = socket.recv_fds(parent_sock, 4096, 1)
    except OSError as e:
        message, fds = b"", []
        recv_error: int | None = e.errno
    else:
        recv_error = None
    finally:
        parent_sock.close()
    _, wstatus = os.waitpid(pid, 0)
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
