"""The namespaces of the test rig (shared/TESTING.md): nothing a daemon under test does can leave
the machine.

* ``Outer``: a loopback-only network namespace with a private mount namespace in which
  /etc/resolv.conf is a bind-mounted file naming a resolver on 127.0.0.1 (a fake one, when a test
  starts it). Every daemon and every host-side listener runs in there.
* ``Guest``: a network namespace made by ``unshare -n`` (root style) or ``unshare -Urn``
  (rootless style, optionally as a real unprivileged user), held open by a ``sleep``.
* ``Daemon``: the binary under test (ours by default; ``SLIRP4NETNS_BIN`` picks another, e.g.
  ``/usr/bin/slirp4netns`` for the same scenario against the reference), spawned inside ``Outer``
  with chosen fd numbers (podman passes ``-e 3 -r 4``), stdout/stderr captured to files;
  ``start_ready`` spawns one and waits for its ready fd.
* ``Remote``: a "remote" host (198.51.100.10, 2001:db8::10) joined to ``Outer`` by a veth pair.

Every wait has a timeout; every process is ended by PID in ``close()``, which fixtures call in
their teardown whatever the test did.
"""

from __future__ import annotations

import functools
import os
import pwd
import select
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

TEST_USER = "pyslirp4netns-test"  # created by tests/setup.sh
REFERENCE = "/usr/bin/slirp4netns"
NO_SUCH_PID = "2147483647"  # above any pid_max: can never name a live process
READY_TIMEOUT = 30.0  # a daemon's start-up, up to its ready fd (the reference needs well under 1 s)


def wait_until(
    predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.02
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def ns_id(pid: int, ns: str) -> str:
    return os.readlink(f"/proc/{pid}/ns/{ns}")


def end_process(proc: subprocess.Popen[bytes] | None, timeout: float = 5.0) -> None:
    """SIGKILL by PID and reap; never by name."""
    if proc is None or proc.poll() is not None:
        return
    try:
        proc.kill()
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pass


@dataclass(frozen=True)
class User:
    name: str
    uid: int
    gid: int

    @classmethod
    def lookup(cls, name: str = TEST_USER) -> User | None:
        try:
            pw = pwd.getpwnam(name)
        except KeyError:
            return None
        return cls(name, pw.pw_uid, pw.pw_gid)

    def prefix(self) -> list[str]:
        return [
            "setpriv",
            f"--reuid={self.uid}",
            f"--regid={self.gid}",
            "--clear-groups",
            "--inh-caps=-all",
            "--",
        ]


class Outer:
    """A loopback-only network namespace plus a private mount namespace (the "host")."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="pyslirp4netns-outer-"))
        self.dir.chmod(0o755)
        self.resolv = self.dir / "resolv.conf"
        self.resolv.write_text("nameserver 127.0.0.1\n")
        self.resolv.chmod(0o644)
        script = (
            "set -e; ip link set lo up; "
            f"mount --bind {shlex.quote(str(self.resolv))} /etc/resolv.conf; "
            "echo ready; exec sleep 86400"
        )
        self.proc = subprocess.Popen(
            ["unshare", "--net", "--mount", "--propagation", "private", "--", "sh", "-c", script],
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
        )
        try:
            assert self.proc.stdout is not None
            ready, _, _ = select.select([self.proc.stdout], [], [], 10)
            if not ready or self.proc.stdout.readline().strip() != b"ready":
                raise RuntimeError("the outer namespace did not come up")
        except BaseException:
            self.close()
            raise
        self.pid = self.proc.pid
        # The safety net itself is tested: nothing but lo may exist in here.
        links = self.run(["ip", "-o", "link", "show"]).stdout.decode()
        assert [line.split(":")[1].strip() for line in links.splitlines()] == ["lo"], links

    def prefix(self, user: User | None = None) -> list[str]:
        cmd = ["nsenter", "-t", str(self.pid), "-n", "-m", "--"]
        return cmd + (user.prefix() if user else [])

    def run(
        self,
        argv: Sequence[str],
        user: User | None = None,
        timeout: float = 30,
        check: bool = True,
        **kwargs: object,
    ) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(  # type: ignore[call-overload, no-any-return]
            self.prefix(user) + list(argv),
            capture_output=True,
            timeout=timeout,
            check=check,
            stdin=subprocess.DEVNULL,
            **kwargs,
        )

    def close(self) -> None:
        end_process(self.proc)
        shutil.rmtree(self.dir, ignore_errors=True)


class Guest:
    """A guest network namespace held by ``sleep``; ``rootless`` adds a user namespace."""

    def __init__(self, outer: Outer, rootless: bool, user: User | None = None) -> None:
        self.outer = outer
        self.rootless = rootless
        self.user = user
        unshare = ["unshare", "-Urn"] if rootless else ["unshare", "-n"]
        self.proc = subprocess.Popen(
            outer.prefix(user) + unshare + ["sleep", "86400"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
        )
        self.pid = self.proc.pid  # nsenter, setpriv and unshare all exec: this is the sleep
        outer_net = ns_id(outer.pid, "net")
        try:
            wait_until(
                lambda: self._comm() == "sleep" and ns_id(self.pid, "net") != outer_net,
                10,
                "the guest namespace",
            )
        except BaseException:
            self.close()
            raise

    def _comm(self) -> str:
        try:
            return Path(f"/proc/{self.pid}/comm").read_text().strip()
        except OSError:
            return ""

    def prefix(self) -> list[str]:
        if self.rootless:
            return ["nsenter", "-t", str(self.pid), "-U", "--preserve-credentials", "-n", "--"]
        return ["nsenter", "-t", str(self.pid), "-n", "--"]

    def run(
        self, argv: Sequence[str], timeout: float = 30, check: bool = True
    ) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            self.outer.prefix(self.user) + self.prefix() + list(argv),
            capture_output=True,
            timeout=timeout,
            check=check,
            stdin=subprocess.DEVNULL,
        )

    def sh(self, script: str, timeout: float = 30, check: bool = True) -> str:
        return self.run(["sh", "-c", script], timeout=timeout, check=check).stdout.decode()

    def close(self) -> None:
        end_process(self.proc)


def binary() -> list[str]:
    """The daemon under test: ours unless SLIRP4NETNS_BIN names another (e.g. the reference)."""
    env = os.environ.get("SLIRP4NETNS_BIN")
    return shlex.split(env) if env else [sys.executable, "-m", "pyslirp4netns"]


# RIG_HARDENED=1: every daemon the rig starts runs with --enable-sandbox --enable-seccomp (and
# rootlesskit is told to pass them), so the whole suite runs once more as podman runs us.
HARDENED = os.environ.get("RIG_HARDENED") == "1"
HARDENING = ("--enable-sandbox", "--enable-seccomp")


def hardened(args: Sequence[str]) -> list[str]:
    """``args`` with the hardening flags first when RIG_HARDENED=1 (BESS excepted: no sandbox
    applies to a socket target in slirp4netns either)."""
    if not HARDENED or any(a.startswith("--target-type") for a in args):
        return list(args)
    return [*HARDENING, *args]


def is_reference(argv0: Sequence[str]) -> bool:
    return os.path.basename(argv0[0]) == "slirp4netns"


class Daemon:
    """One run of the binary inside ``Outer``, with inherited fds at fixed numbers."""

    def __init__(
        self,
        outer: Outer,
        args: Sequence[str],
        user: User | None = None,
        fds: Mapping[int, int] | None = None,
        env: Mapping[str, str] | None = None,
        program: Sequence[str] | None = None,
        wrap: Sequence[str] = (),
    ) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="pyslirp4netns-daemon-"))
        self.workdir.chmod(0o755)
        self.stdout_path = self.workdir / "stdout"
        self.stderr_path = self.workdir / "stderr"
        self.program = list(program) if program is not None else binary()
        self.argv = outer.prefix(user) + list(wrap) + self.program + hardened(args)
        out = os.open(self.stdout_path, os.O_WRONLY | os.O_CREAT, 0o644)
        err = os.open(self.stderr_path, os.O_WRONLY | os.O_CREAT, 0o644)
        devnull = os.open(os.devnull, os.O_RDONLY)
        actions: list[tuple[int, int, int]] = [
            (os.POSIX_SPAWN_DUP2, devnull, 0),
            (os.POSIX_SPAWN_DUP2, out, 1),
            (os.POSIX_SPAWN_DUP2, err, 2),
        ]
        # dup2 onto the exact numbers the caller asked for (podman: -e 3 -r 4); the sources are
        # close-on-exec, the targets are not.
        for target, source in (fds or {}).items():
            actions.append((os.POSIX_SPAWN_DUP2, source, target))
        full_env = dict(os.environ)
        full_env.update(env or {})
        try:
            self.pid = os.posix_spawnp(
                self.argv[0], self.argv, full_env, file_actions=actions, setsigdef=(signal.SIGINT,)
            )
        finally:
            for fd in (out, err, devnull):
                os.close(fd)
        self.returncode: int | None = None
        self.descendants: list[psutil.Process] = []
        self.tracer: subprocess.Popen[bytes] | None = None  # see trace_if_asked

    # -- observing -----------------------------------------------------------------------
    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float) -> int:
        wait_until(lambda: self.poll() is not None, timeout, f"daemon {self.pid} to exit")
        assert self.returncode is not None
        return self.returncode

    def remember_descendants(self) -> None:
        try:
            self.descendants = psutil.Process(self.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            self.descendants = []

    def leftovers(self) -> list[int]:
        """Our process and any it started that are still alive (zombies of ours are reaped)."""
        alive = []
        for proc in [*self.descendants]:
            try:
                if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                    alive.append(proc.pid)
            except psutil.NoSuchProcess:
                pass
        if self.poll() is None:
            alive.append(self.pid)
        return alive

    def signal(self, signum: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, signum)

    def close(self) -> None:
        if self.poll() is None:
            self.remember_descendants()
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.wait(10)
        if self.tracer is not None:
            end_process(self.tracer)
        for proc in self.descendants:
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        shutil.rmtree(self.workdir, ignore_errors=True)


def trace_if_asked(daemon: Daemon) -> None:
    """RIG_STRACE_DIR=DIR (tests/tools/syscalls.py): attach ``strace -f`` to a ready daemon of
    ours that runs under its seccomp filter, so DIR collects what the filtered daemon calls.
    Attached after the ready byte: a tracer forked before it would hold the ready pipe open."""
    directory = os.environ.get("RIG_STRACE_DIR")
    if not directory or is_reference(daemon.program):
        return
    try:
        if "Seccomp:\t2" not in Path(f"/proc/{daemon.pid}/status").read_text():
            return
    except OSError:
        return
    out = f"{directory}/t.{daemon.pid}"
    daemon.tracer = subprocess.Popen(
        ["strace", "-qq", "-f", "-o", out, "-p", str(daemon.pid)], stdin=subprocess.DEVNULL
    )

    def attached() -> bool:
        try:
            status = Path(f"/proc/{daemon.pid}/status").read_text()
        except OSError:
            return True  # gone already: nothing to wait for
        return "TracerPid:\t0\n" not in status

    wait_until(attached, 10, "strace to attach")


def read_ready(fd: int, timeout: float) -> bytes:
    """Everything written to a ready pipe until EOF (slirp4netns writes b"1" and closes)."""
    data = b""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"ready fd: no EOF within {timeout}s (got {data!r})")
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            continue
        chunk = os.read(fd, 64)
        if not chunk:
            return data
        data += chunk


class NotReady(AssertionError):
    """A daemon did not answer on its ready fd as expected (it has been ended by PID)."""

    def __init__(self, daemon: Daemon, ready: bytes | None, reason: str) -> None:
        self.ready = ready  # what the ready fd gave (None: it timed out)
        self.stderr = daemon.stderr
        self.returncode = daemon.poll()
        super().__init__(f"daemon {shlex.join(daemon.argv)}: {reason}\n{self.stderr}")


def start_ready(
    spawn: Outer | Callable[..., Daemon],
    args: Sequence[str],
    *,
    ready_fd: int = 3,
    fds: Mapping[int, int] | None = None,
    timeout: float = READY_TIMEOUT,
    expect: bytes = b"1",
    **kwargs: Any,
) -> Daemon:
    """Spawn a daemon with a ready pipe at ``ready_fd`` and wait for EOF on it.

    ``spawn``: an ``Outer`` (the caller closes the daemon) or a factory taking ``(args, fds=...,
    **kwargs)`` such as the ``make_daemon`` fixture (which closes it at teardown). ``args`` must
    name the fd (``-r 3``, podman's ``-r 4``...): they are passed as they are, so each consumer's
    exact argv stays visible in the test. ``fds`` are further inherited fds (an exit fd), and
    ``kwargs`` go to ``Daemon`` (``program``, ``user``, ``env``, ``wrap``).

    Returns the daemon once the ready fd gave ``expect`` (slirp4netns writes b"1" and closes;
    ``expect=b""`` for a start-up meant to fail). Anything else, or no EOF within ``timeout``,
    ends the daemon and raises ``NotReady`` with its stderr.
    """
    make = functools.partial(Daemon, spawn) if isinstance(spawn, Outer) else spawn
    r, w = os.pipe()
    try:
        try:
            daemon = make(args, fds={**(fds or {}), ready_fd: w}, **kwargs)
        finally:
            os.close(w)  # the daemon holds the only writer: its exit is an EOF too
        ready: bytes | None
        try:
            ready = read_ready(r, timeout)
        except TimeoutError as e:
            ready, reason = None, str(e)
        except BaseException:  # e.g. Ctrl-C in a benchmark: nothing may be left running
            daemon.close()
            raise
        else:
            if ready == expect:
                trace_if_asked(daemon)
                return daemon
            reason = f"ready fd gave {ready!r}, not {expect!r}"
    finally:
        os.close(r)
    error = NotReady(daemon, ready, reason)  # reads stderr before close() removes it
    daemon.close()
    raise error


def link_details(text: str) -> str:
    """``ip -d addr``/``ip route`` output with what legitimately varies run to run masked."""
    import re

    text = re.sub(r"link/ether \S+", "link/ether MAC", text)
    text = re.sub(r"inet6 fe80::\S+", "inet6 fe80::LL", text)
    text = re.sub(r"^\d+: ", "N: ", text, flags=re.M)
    text = re.sub(r"valid_lft \S+ preferred_lft \S+", "valid_lft L preferred_lft L", text)
    return text


class Background:
    """A helper process (a test server) started with ``prefix``; it prints one line when ready.

    ``line`` is that first line (servers print what they bound, e.g. a port). Ended by PID.
    """

    def __init__(self, prefix: Sequence[str], argv: Sequence[str], timeout: float = 10) -> None:
        self.proc = subprocess.Popen(
            [*prefix, *argv],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            assert self.proc.stdout is not None
            ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
            self.line = self.proc.stdout.readline().decode().strip() if ready else ""
            if not self.line:
                raise RuntimeError(f"{argv!r} did not come up: {self.errors()}")
        except BaseException:
            self.close()
            raise

    def errors(self) -> str:
        if self.proc.poll() is None or self.proc.stderr is None:
            return ""
        return self.proc.stderr.read().decode(errors="replace")

    def output(self, timeout: float = 10) -> str:
        """The rest of stdout once the process ends by itself (bounded by ``timeout``)."""
        out, _ = self.proc.communicate(timeout=timeout)
        return out.decode()

    def close(self) -> None:
        end_process(self.proc)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


class Remote:
    """A "remote" host: a network namespace inside ``outer`` joined to it by a veth pair.

    Outer side ``veth-r`` has 198.51.100.1/24 and 2001:db8::1/64; the remote has .10 and ::10.
    Ending the remote's ``sleep`` destroys its namespace and with it the veth pair.
    """

    HOST4, REMOTE4 = "198.51.100.1", "198.51.100.10"
    HOST6, REMOTE6 = "2001:db8::1", "2001:db8::10"

    def __init__(self, outer: Outer, extra4: Sequence[str] = ()) -> None:
        self.outer = outer
        self.proc = subprocess.Popen(
            outer.prefix() + ["unshare", "-n", "sleep", "86400"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
        )
        self.pid = self.proc.pid
        try:
            outer_net = ns_id(outer.pid, "net")
            wait_until(lambda: ns_id(self.pid, "net") != outer_net, 10, "the remote namespace")
            outer.run(["ip", "link", "add", "veth-r", "type", "veth", "peer", "name", "eth0"])
            outer.run(["ip", "link", "set", "eth0", "netns", str(self.pid)])
            setup = [
                f"ip addr add {self.HOST4}/24 dev veth-r",
                f"ip -6 addr add {self.HOST6}/64 dev veth-r nodad",
                *(f"ip addr add {a}/24 dev veth-r" for a in extra4),
                "ip link set veth-r up",
            ]
            outer.run(["sh", "-c", "set -e; " + "; ".join(setup)])
            self.run(
                [
                    "sh",
                    "-c",
                    "set -e; ip link set lo up; "
                    f"ip addr add {self.REMOTE4}/24 dev eth0; "
                    f"ip -6 addr add {self.REMOTE6}/64 dev eth0 nodad; ip link set eth0 up",
                ]
            )
        except BaseException:
            self.close()
            raise

    def prefix(self) -> list[str]:
        return self.outer.prefix() + ["nsenter", "-t", str(self.pid), "-n", "--"]

    def run(self, argv: Sequence[str], timeout: float = 30) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            self.prefix() + list(argv),
            capture_output=True,
            timeout=timeout,
            check=True,
            stdin=subprocess.DEVNULL,
        )

    def close(self) -> None:
        end_process(self.proc)
        # The veth pair goes with the namespace; make sure the outer end is gone too.
        self.outer.run(["ip", "link", "del", "veth-r"], check=False)
