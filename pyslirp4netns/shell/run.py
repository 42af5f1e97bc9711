"""``pyslirp4netns run [OPTION]... -- CMD [ARG]...``: CMD in a namespace of its own, served.

Three processes, each with one job:

* this one, the *runner*, stays in the caller's namespaces: it starts the other two, passes
  signals on, forwards what the daemon has to say on stderr, and returns CMD's status;
* the *namespace child*, forked first: ``unshare(CLONE_NEWUSER | CLONE_NEWNET | CLONE_NEWNS)``
  with the caller's uid and gid mapped to 0 (``unshare -Urnm``, so no privilege is needed),
  a resolv.conf naming the DNS alias bind-mounted over /etc/resolv.conf, then it waits; once
  the network is up it execs CMD, keeping its PID;
* the *daemon*: ``python3 -m pyslirp4netns --configure --mtu=65520 [OPTION]... -r R -e E PID
  tap0``, the unchanged slirp4netns-compatible start-up (sandbox and seccomp included) in a
  session of its own, out of reach of the terminal's signals. Its ready fd says when CMD may
  start; closing its exit fd ends it.

A fork rather than util-linux ``unshare``: the child must wait between making the namespace
and exec'ing CMD (the daemon needs its PID first, CMD needs the network), and bind the
resolv.conf in between, which a plain ``unshare`` can't do. The resolv.conf lives on a small
tmpfs mounted on /tmp in the new mount namespace only and detached again once it is bound, so
nothing is written to any disk and nothing is left to remove, however the run ends.

When CMD exits the runner closes the exit fd, waits for the daemon, kills (SIGKILL) whatever CMD
left in the namespace, and returns CMD's exit status (128+N when signal N ended it). SIGTERM
and SIGHUP are passed to CMD; SIGINT and SIGQUIT too, unless a terminal already sends them to
CMD (we share its foreground process group); SIGUSR1 goes to the daemon, if it catches it.
Our own failures exit 1; a CMD that can't be run gives 126, or 127 when it isn't found.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import io
import os
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from pyslirp4netns import cli
from pyslirp4netns.config import Config

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
MS_NOSUID, MS_NODEV, MS_NOEXEC = 0x2, 0x4, 0x8
MS_BIND, MS_REC, MS_PRIVATE = 0x1000, 0x4000, 0x40000
MNT_DETACH = 2
PR_SET_PDEATHSIG = 1

DEFAULTS = ("--configure", "--mtu=65520")
TAPNAME = "tap0"
# Options that name or watch a target: run makes and watches its own.
NOT_FOR_RUN = {"e": "--exit-fd", "r": "--ready-fd", "userns-path": "--userns-path"}
NAMESPACE_TIMEOUT = 10.0  # the namespace child's unshare, maps and mounts
READY_TIMEOUT = 30.0  # the daemon, up to its ready byte
EXIT_TIMEOUT = 10.0  # the daemon, after its exit fd closed
DRAIN_TIMEOUT = 2.0  # the daemon's last stderr lines
SCRATCH = "/tmp"  # a tmpfs goes here for a moment, in the new mount namespace only
RESOLV_CONF = "/etc/resolv.conf"
# Start and end lines of the daemon that mean nothing to someone running a command.
QUIET = re.compile(
    rb"sent tapfd=\d+ for .*|received tapfd=\d+|exitfd event|target process \d+ exited"
    rb"|do_slirp is exiting"
)
FORWARDED = (signal.SIGTERM, signal.SIGHUP)
FROM_TERMINAL = (signal.SIGINT, signal.SIGQUIT)
CAUGHT = (*FORWARDED, *FROM_TERMINAL, signal.SIGUSR1)

USAGE = """\
Usage: {prog} run [OPTION]... -- CMD [ARG]...
Run CMD in a new user, network and mount namespace with user-mode networking.

Inside, tap0 is 10.0.2.100/24 with a default route via 10.0.2.2 (the host, whose 127.0.0.1
it reaches unless --disable-host-loopback) and /etc/resolv.conf names 10.0.2.3 (the DNS
alias; other addresses with --cidr). OPTIONs are those of `{prog} --help` but -e, -r,
--netns-type, --userns-path and --target-type; --configure --mtu=65520 come first.
The exit status is CMD's (128+N if signal N ended it; 1 if run itself failed).
"""

_libc = ctypes.CDLL(None, use_errno=True)


@dataclass(frozen=True)
class Request:
    """A parsed ``run``: the daemon's options as given, CMD, and the Config they make."""

    options: tuple[str, ...]
    command: tuple[str, ...]
    config: Config


def _usage_error(prog: str, message: str | None = None) -> NoReturn:
    if message is not None:
        cli._err(f"{prog} run: {message}\n")
    cli._err(f"Usage: {prog} run [OPTION]... -- CMD [ARG]...\n")
    raise SystemExit(1)


def parse(args: Sequence[str], prog: str) -> Request:
    """``args``: argv without argv[0], starting with ``run``. Usage errors exit 1."""
    words = list(args[1:])
    positionals: list[str] = []
    rest: list[str] = []
    posixly_correct = "POSIXLY_CORRECT" in os.environ
    for key, _ in cli._getopt_long(words, prog, positionals, posixly_correct, rest):
        if key == "?":  # getopt said why
            _usage_error(prog)
        if key == "h":
            cli._out(USAGE.format(prog=prog))
            cli._exit(0)
        if key == "v":
            cli._out(cli.version_text())
            cli._exit(0)
        if key in NOT_FOR_RUN:
            _usage_error(prog, f"{NOT_FOR_RUN[key]} is not for run: it serves its own namespace")
    if positionals:
        _usage_error(prog, f"CMD goes after --: {positionals[0]!r}")
    if not rest:
        _usage_error(prog, "no CMD after --")
    options = words[: len(words) - len(rest) - 1]
    # The daemon's own parser checks the options now (its usage text, which names PID|PATH,
    # and its warnings are the daemon's stdout, which run discards: so are they here).
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            config = cli.parse([*DEFAULTS, *options, "1", TAPNAME], prog)
        except SystemExit as e:
            if e.code == 0:  # not reached: -h and -v were handled above
                raise
            _usage_error(prog)
    return Request(tuple(options), tuple(rest), config)


def main(argv: Sequence[str]) -> int:
    prog = argv[0] if argv else "pyslirp4netns"
    try:
        request = parse(argv[1:], prog)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 1
    return Runner(request, prog).run()


def daemon_argv(request: Request, pid: int, ready_fd: int, exit_fd: int) -> list[str]:
    """The daemon's command line: slirp4netns's, with run's defaults before the user's options."""
    return [
        sys.executable,
        "-m",
        "pyslirp4netns",
        *DEFAULTS,
        *request.options,
        "-r",
        str(ready_fd),
        "-e",
        str(exit_fd),
        str(pid),
        TAPNAME,
    ]


# -- the namespace child ----------------------------------------------------------------------
def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(source: str, target: str, fstype: str | None, flags: int, data: str | None) -> None:
    encode = os.fsencode
    result = _libc.mount(
        encode(source),
        encode(target),
        None if fstype is None else encode(fstype),
        ctypes.c_ulong(flags),
        None if data is None else encode(data),
    )
    _check(result, f"mount {target}")


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def resolv_text(config: Config, host_resolv: str = RESOLV_CONF) -> str:
    """The namespace's resolv.conf: the DNS alias, with the host's search domains and options."""
    lines = [f"nameserver {config.dns}"]
    try:
        with open(host_resolv, encoding="utf-8", errors="replace") as f:
            host = f.read().splitlines()
    except OSError:
        host = []
    lines += [line for line in host if line.split()[:1] in (["search"], ["domain"], ["options"])]
    return "\n".join(lines) + "\n"


def _make_namespace(uid: int, gid: int, resolv: str | None) -> None:
    """In the child: a user namespace where we are root, a network and a mount namespace."""
    _check(_libc.unshare(CLONE_NEWUSER | CLONE_NEWNET | CLONE_NEWNS), "unshare")
    with contextlib.suppress(FileNotFoundError):  # kernels before 3.19 have no setgroups file
        _write("/proc/self/setgroups", "deny")
    _write("/proc/self/uid_map", f"0 {uid} 1\n")
    _write("/proc/self/gid_map", f"0 {gid} 1\n")
    _mount("none", "/", None, MS_REC | MS_PRIVATE, None)  # nothing propagates back to the host
    if resolv is None:
        return
    _mount("tmpfs", SCRATCH, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=16k,mode=755")
    try:
        scratch = os.path.join(SCRATCH, "resolv.conf")
        _write(scratch, resolv)
        os.chmod(scratch, 0o644)
        try:
            _mount(scratch, RESOLV_CONF, None, MS_BIND, None)
        except OSError as e:  # no /etc/resolv.conf to bind over: CMD resolves as it can
            _say(f"warning: {e.strerror}; DNS inside is not set up")
    finally:
        _check(_libc.umount2(os.fsencode(SCRATCH), MNT_DETACH), f"umount {SCRATCH}")


def _say(text: str, prog: str = "pyslirp4netns") -> None:
    with contextlib.suppress(OSError):
        os.write(2, f"{prog} run: {text}\n".encode(errors="replace"))


def _child(
    runner: Runner,
    status_w: int,
    go_r: int,
    dispositions: dict[signal.Signals, Any],
    parent: int,
    mask: Iterable[int],
) -> NoReturn:
    """The namespace child's whole life: make the namespace, report, wait for go, exec CMD."""
    command = runner.request.command
    code = 1
    try:
        signal.set_wakeup_fd(-1)
        for signum, old in dispositions.items():  # the caller's: an ignored signal stays so
            signal.signal(signum, signal.SIG_IGN if old is signal.SIG_IGN else signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        for fd in (runner.wake_r, runner.wake_w):
            os.close(fd)
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # the runner gone: so are we
        if os.getppid() != parent:
            os._exit(1)
        config = runner.request.config
        resolv = None if config.disable_dns else resolv_text(config)
        try:
            _make_namespace(runner.uid, runner.gid, resolv)
        except OSError as e:
            os.write(status_w, (e.strerror or str(e)).encode(errors="replace"))
            os._exit(1)
        os.write(status_w, b"1")
        os.close(status_w)
        if os.read(go_r, 1) != b"1":  # the runner gave up (or died): no CMD
            os._exit(1)
        os.close(go_r)
        for signum in (signal.SIGPIPE, signal.SIGXFSZ):  # as subprocess restores them
            signal.signal(signum, signal.SIG_DFL)
        try:
            os.execvp(command[0], command)
        except OSError as e:
            _say(f"{command[0]}: {e.strerror}", runner.prog)
            code = 127 if e.errno == errno.ENOENT else 126
    except BaseException as e:  # nothing may escape into a copy of the runner
        _say(f"namespace child: {e!r}", runner.prog)
    os._exit(code)


# -- the runner -----------------------------------------------------------------------------
def _exit_code(wait_status: int) -> int:
    code = os.waitstatus_to_exitcode(wait_status)
    return 128 - code if code < 0 else code


def _catches(pid: int, signum: int) -> bool:
    """Whether process ``pid`` has a handler for ``signum`` (SigCgt in /proc/PID/status)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("SigCgt:"):
                    return bool(int(line.split()[1], 16) >> (signum - 1) & 1)
    except (OSError, ValueError):
        pass
    return False


def _terminal_sends_to_us() -> bool:
    """A controlling terminal whose foreground process group is ours (so CMD's too)."""
    try:
        fd = os.open("/dev/tty", os.O_RDONLY | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        return os.tcgetpgrp(fd) == os.getpgrp()
    except OSError:
        return False
    finally:
        os.close(fd)


def _readable(fd: int) -> bool:
    return bool(select.select([fd], [], [], 0)[0])


def _netns_of(pid: int) -> tuple[int, int] | None:
    try:
        st = os.stat(f"/proc/{pid}/ns/net")
    except OSError:
        return None
    return st.st_dev, st.st_ino


def kill_namespace(netns: tuple[int, int], rounds: int = 20) -> int:
    """SIGKILL every process still in network namespace ``netns``; how many were killed."""
    killed = 0
    for _ in range(rounds):
        found = 0
        for name in os.listdir("/proc"):
            if not name.isdigit() or _netns_of(int(name)) != netns:
                continue
            try:
                pidfd = os.pidfd_open(int(name))
            except OSError:
                continue
            try:
                if _netns_of(int(name)) == netns:  # still it, now that the pidfd holds it
                    signal.pidfd_send_signal(pidfd, signal.SIGKILL)
                    found += 1
            except OSError:
                pass
            finally:
                os.close(pidfd)
        killed += found
        if not found:
            break
        time.sleep(0.05)
    return killed


def _note_signal(signum: int, frame: object) -> None:
    """The wake-up fd carries the number to the loop."""


class Runner:
    """One ``run``: the namespace child, the daemon, and the loop between them."""

    def __init__(self, request: Request, prog: str) -> None:
        self.request = request
        self.prog = prog
        self.uid, self.gid = os.geteuid(), os.getegid()
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.child: int | None = None  # the namespace child, then CMD (same PID)
        self.child_pidfd: int | None = None
        self.child_status: int | None = None
        self.netns: tuple[int, int] | None = None
        self.go_w: int | None = None
        self.daemon: subprocess.Popen[bytes] | None = None
        self.daemon_pidfd: int | None = None
        self.exit_w: int | None = None  # the daemon's exit fd, our end
        self.err_r: int | None = None  # the daemon's stderr
        self.partial = b""
        self.started = False  # CMD exec'd
        self.aborted: int | None = None  # a signal before CMD: end the run with it

    def say(self, text: str) -> None:
        _say(text, self.prog)

    # -- the whole run -------------------------------------------------------------------
    def run(self) -> int:
        dispositions = {signum: signal.getsignal(signum) for signum in CAUGHT}
        for signum, old in dispositions.items():
            if old is not signal.SIG_IGN:  # a caller's "ignore" stands
                signal.signal(signum, _note_signal)
        old_wakeup = signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)
        try:
            return self._run(dispositions)
        except OSError as e:
            self.say(str(e))
            return 1
        finally:
            self._cleanup()
            signal.set_wakeup_fd(old_wakeup)
            for signum, old in dispositions.items():
                signal.signal(signum, old)
            os.close(self.wake_r)
            os.close(self.wake_w)

    def _run(self, dispositions: dict[signal.Signals, Any]) -> int:
        if not self._start_namespace(dispositions):
            return self._failed()
        if not self._start_daemon():
            return self._failed()
        assert self.go_w is not None and self.child_pidfd is not None
        os.write(self.go_w, b"1")
        os.close(self.go_w)
        self.go_w = None
        self.started = True
        while self.child_status is None:
            watched = [self.child_pidfd]
            if self.daemon_pidfd is not None:
                watched.append(self.daemon_pidfd)
            ready = self._pump(watched, None)
            if self.child_pidfd in ready:
                _, status = os.waitpid(self._pid(), 0)
                self.child_status = status
            if self.daemon_pidfd is not None and self.daemon_pidfd in ready:
                how = self._reap_daemon()
                if not _readable(self.child_pidfd):  # not its "target process exited"
                    self.say(f"the daemon exited ({how}); CMD goes on without network")
        self._stop_daemon()
        return _exit_code(self.child_status)

    def _failed(self) -> int:
        return 128 + self.aborted if self.aborted is not None else 1

    def _pid(self) -> int:
        assert self.child is not None
        return self.child

    # -- start-up ------------------------------------------------------------------------
    def _start_namespace(self, dispositions: dict[signal.Signals, Any]) -> bool:
        status_r, status_w = os.pipe()
        go_r, self.go_w = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        parent = os.getpid()
        # Blocked across the fork, so that no signal runs our handler in the child.
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, CAUGHT)
        try:
            pid = os.fork()
            if pid == 0:
                os.close(status_r)
                os.close(self.go_w)
                _child(self, status_w, go_r, dispositions, parent, mask)  # never returns
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        self.child = pid
        os.close(status_w)
        os.close(go_r)
        try:
            self.child_pidfd = os.pidfd_open(pid)
            data, _ = self._read_to_eof(status_r, NAMESPACE_TIMEOUT, stop_at=b"1")
        finally:
            os.close(status_r)
        if data == b"1":
            netns = _netns_of(pid)
            if netns is None or netns == _netns_of(os.getpid()):  # never kill_namespace ours
                self.say("the namespace child is not in a namespace of its own")
                return False
            self.netns = netns
            return True
        if self.aborted is None:
            reason = data.decode(errors="replace") if data else "no answer"
            self.say(f"cannot make the namespace: {reason}")
        return False

    def _start_daemon(self) -> bool:
        ready_r, ready_w = os.pipe()
        exit_r, self.exit_w = os.pipe()
        self.err_r, err_w = os.pipe()
        os.set_blocking(self.err_r, False)
        argv = daemon_argv(self.request, self._pid(), ready_w, exit_r)
        try:
            self.daemon = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,  # the banner and warnings: slirp4netns's, not ours
                stderr=err_w,
                pass_fds=(ready_w, exit_r),
                start_new_session=True,  # the terminal's ^C is for CMD
            )
        finally:
            for fd in (ready_w, exit_r, err_w):
                os.close(fd)
        try:
            self.daemon_pidfd = os.pidfd_open(self.daemon.pid)
            ready, ended = self._read_to_eof(ready_r, READY_TIMEOUT)
        finally:
            os.close(ready_r)
        if ready == b"1":
            return True
        if self.aborted is not None:
            return False
        if not ended:
            self.say(f"the network did not come up within {READY_TIMEOUT:g} s")
        elif self._pump([self.daemon_pidfd], EXIT_TIMEOUT):  # its ready fd closed: exiting
            self.say(f"the daemon failed ({self._reap_daemon()})")
        else:
            self.say("the daemon closed its ready fd without a word")
        return False

    def _read_to_eof(
        self, fd: int, timeout: float, stop_at: bytes | None = None
    ) -> tuple[bytes, bool]:
        """What ``fd`` gives until EOF (or ``stop_at``), a signal that aborts, or the timeout;
        and whether it ended by itself (EOF or ``stop_at``) rather than by the timeout."""
        data = b""
        deadline = time.monotonic() + timeout
        while self.aborted is None and data != stop_at:
            left = deadline - time.monotonic()
            if left <= 0 or not self._pump([fd], left):
                return data, False
            chunk = os.read(fd, 64)
            if not chunk:
                break
            data += chunk
        return data, True

    # -- the loop ------------------------------------------------------------------------
    def _pump(self, wanted: list[int], timeout: float | None) -> list[int]:
        """Wait until one of ``wanted`` is readable (returned) or a signal aborts the run or
        the time is up ([]); meanwhile pass signals on and forward the daemon's stderr."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            poller = select.poll()
            for fd in (self.wake_r, *wanted, self.err_r):
                if fd is not None:
                    poller.register(fd, select.POLLIN)
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                events = poller.poll(None if left is None else left * 1000)
            except InterruptedError:
                events = []
            ready = {fd for fd, _ in events}
            if self.wake_r in ready:
                self._on_signals()
            if self.err_r is not None and self.err_r in ready:
                self._on_stderr()
            hits = [fd for fd in wanted if fd in ready]
            if hits or self.aborted is not None or not wanted and self.err_r is None:
                return hits
            if deadline is not None and time.monotonic() >= deadline:
                return []

    def _on_signals(self) -> None:
        try:
            data = os.read(self.wake_r, 64)
        except BlockingIOError:
            return
        for signum in data:
            if signum == signal.SIGUSR1:
                if self.daemon is not None and self.daemon.poll() is None:
                    if _catches(self.daemon.pid, signum):
                        os.kill(self.daemon.pid, signum)
            elif not self.started:
                self.aborted = signum
            elif signum in FORWARDED or not _terminal_sends_to_us():
                self._signal_child(signum)

    def _signal_child(self, signum: int) -> None:
        if self.child_pidfd is not None and self.child_status is None:
            with contextlib.suppress(OSError):
                signal.pidfd_send_signal(self.child_pidfd, signum)

    def _on_stderr(self) -> None:
        assert self.err_r is not None
        try:
            data = os.read(self.err_r, 65536)
        except BlockingIOError:
            return
        lines = (self.partial + data).split(b"\n")
        self.partial = lines.pop() if data else b""
        if not data and lines[-1:] == [b""]:
            lines.pop()
        shown = b"".join(line + b"\n" for line in lines if not QUIET.fullmatch(line))
        if shown:
            with contextlib.suppress(OSError):
                os.write(2, shown)
        if not data:  # EOF: every writer (the daemon and its children) is gone
            os.close(self.err_r)
            self.err_r = None

    # -- the end -------------------------------------------------------------------------
    def _reap_daemon(self) -> str:
        assert self.daemon is not None
        code = self.daemon.wait()
        if self.daemon_pidfd is not None:
            os.close(self.daemon_pidfd)
            self.daemon_pidfd = None
        return f"signal {-code}" if code < 0 else f"status {code}"

    def _stop_daemon(self) -> None:
        """Close the exit fd (the daemon's cue), wait for it, then for its last lines."""
        if self.exit_w is not None:
            os.close(self.exit_w)
            self.exit_w = None
        if self.daemon is not None and self.daemon_pidfd is not None:
            if not self._pump([self.daemon_pidfd], EXIT_TIMEOUT):
                self.say(f"the daemon did not exit within {EXIT_TIMEOUT:g} s: killed")
                self.daemon.kill()
            how = self._reap_daemon()
            if how != "status 0":
                self.say(f"the daemon exited ({how})")
        deadline = time.monotonic() + DRAIN_TIMEOUT
        while self.err_r is not None and time.monotonic() < deadline:
            self._pump([], deadline - time.monotonic())

    def _cleanup(self) -> None:
        """Whatever happened: no daemon, no child, nothing left in the namespace, no fd."""
        if self.go_w is not None:
            os.close(self.go_w)  # the child reads EOF and exits without CMD
            self.go_w = None
        if self.child is not None and self.child_status is None:
            with contextlib.suppress(OSError):
                if self.child_pidfd is not None:
                    signal.pidfd_send_signal(self.child_pidfd, signal.SIGKILL)
            _, self.child_status = os.waitpid(self.child, 0)
        if self.daemon is not None and self.daemon.returncode is None:
            if self.exit_w is not None:
                os.close(self.exit_w)
                self.exit_w = None
            try:
                self.daemon.wait(EXIT_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.daemon.kill()
                self.daemon.wait()
        if self.netns is not None:
            kill_namespace(self.netns)
        for fd in (self.child_pidfd, self.daemon_pidfd, self.exit_w, self.err_r):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.child_pidfd = self.daemon_pidfd = self.exit_w = self.err_r = None
