"""Helpers for the end-to-end tests with the real clients (tests/integration/test_clients.py).

rootlesskit and rootless podman start the network process themselves, detach helpers (podman's
pause process, conmon) and reparent them, so following them by parentage is unreliable. Each test
therefore runs the clients in a ``Sandbox``: a fresh PID namespace (and mount namespace, for its
/proc) inside the rig's loopback-only ``Outer``, whose init is a small reaper. Whatever the
clients start lives in that PID namespace: it can be listed exactly, and ending its init (by PID)
makes the kernel end everything else in it, whatever the test did.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import psutil

from .namespaces import HARDENED, Outer, User, end_process, ns_id, wait_until
from .programs import CHECKOUT, TOOLS, UDP_CLIENT

# The clients run as the test user with a clean environment: no root PATH, no PYTHONPATH.
CLEAN_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# pid 1 of the sandbox: reaps every orphan (so "exited" is visible at once rather than as a
# zombie), and says when it is up. SIGTERM/SIGINT are ignored by a PID-namespace init anyway.
REAPER = (
    "import os, time\n"
    "print('ready', flush=True)\n"
    "while True:\n"
    "    try:\n"
    "        os.wait()\n"
    "    except ChildProcessError:\n"
    "        time.sleep(0.05)\n"
)


def workdir(prefix: str, owner: User | None = None) -> Path:
    """A temp dir others may traverse (the clients run as the test user), optionally theirs."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    if owner is not None:
        os.chown(path, owner.uid, owner.gid)
    return path


def chown_tree(root: Path, owner: User) -> None:
    for dirpath, dirnames, filenames in os.walk(root):
        for name in (*dirnames, *filenames):
            os.lchown(os.path.join(dirpath, name), owner.uid, owner.gid)
    os.lchown(root, owner.uid, owner.gid)


def make_wrapper(directory: Path) -> Path:
    """pyslirp4netns as one executable path, which is all rootlesskit and podman accept.

    Named ``pyslirp4netns`` so the process is recognisable before and after the exec; it uses
    this checkout (PYTHONPATH), not whatever is installed, and the interpreter running the tests.
    """
    python = os.path.realpath(sys.executable)
    path = directory / "pyslirp4netns"
    path.write_text(
        "#!/bin/sh\n"
        f"PYTHONPATH='{CHECKOUT}'${{PYTHONPATH:+:$PYTHONPATH}}\n"
        "export PYTHONPATH\n"
        f"exec '{python}' -m pyslirp4netns \"$@\"\n"
    )
    path.chmod(0o755)
    return path


def is_network_process(proc: psutil.Process) -> bool:
    """slirp4netns (comm survives its pivot_root sandbox) or ours (wrapper or ``-m`` module)."""
    try:
        if proc.name() == "slirp4netns":
            return True
        # The wrapper script, or "python -m pyslirp4netns": the program, never an option
        # naming it (rootlesskit's --slirp4netns-binary=...).
        head = proc.cmdline()[:3]
        return any(os.path.basename(arg) == "pyslirp4netns" and arg[:1] != "-" for arg in head)
    except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
        return False


class Sandbox:
    """A PID + mount namespace inside ``Outer`` with a reaping init; see the module docstring."""

    def __init__(self, outer: Outer) -> None:
        self.outer = outer
        self.proc = subprocess.Popen(
            outer.prefix()
            + ["unshare", "--pid", "--fork", "--kill-child", "--mount-proc", "--"]
            + [sys.executable, "-c", REAPER],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
        )
        try:
            assert self.proc.stdout is not None
            ready, _, _ = select.select([self.proc.stdout], [], [], 10)
            if not ready or self.proc.stdout.readline().strip() != b"ready":
                raise RuntimeError("the sandbox PID namespace did not come up")
            children = psutil.Process(self.proc.pid).children()
            assert len(children) == 1, children
            self.init_pid = children[0].pid
            self.pidns = ns_id(self.init_pid, "pid")
            assert self.pidns != ns_id(os.getpid(), "pid")
        except BaseException:
            self.close()
            raise

    def prefix(self, user: User | None = None) -> list[str]:
        """Run a command in here (``nsenter -p`` forks: the command is nsenter's child)."""
        cmd = ["nsenter", "-t", str(self.init_pid), "-p", "-m", "-n", "--"]
        return cmd + (user.prefix() if user else [])

    def processes(self) -> list[psutil.Process]:
        """Every live process in the sandbox but its init."""
        found = []
        for proc in psutil.process_iter():
            if proc.pid == self.init_pid:
                continue
            try:
                if os.readlink(f"/proc/{proc.pid}/ns/pid") != self.pidns:
                    continue
                if proc.status() == psutil.STATUS_ZOMBIE:
                    continue
            except (OSError, psutil.NoSuchProcess):
                continue
            found.append(proc)
        return found

    def network_processes(self) -> list[psutil.Process]:
        return [p for p in self.processes() if is_network_process(p)]

    def describe(self) -> str:
        lines = []
        for proc in self.processes():
            try:
                lines.append(f"{proc.pid} {' '.join(proc.cmdline())[:200]}")
            except psutil.Error:
                pass
        return "\n".join(lines)

    def close(self) -> None:
        # By PID: each process in here, then the init (whose death ends anything left).
        for proc in self.processes():
            try:
                proc.kill()
            except psutil.Error:
                pass
        if self.proc.poll() is None:
            try:
                os.kill(getattr(self, "init_pid", self.proc.pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
        end_process(self.proc)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def free_port(outer: Outer, kind: str = "tcp") -> int:
    """A port nothing in ``Outer`` uses now (the kernel's pick, for TCP and UDP at once)."""
    script = (
        "import socket\n"
        "while True:\n"
        "    t = socket.socket(); t.bind(('127.0.0.1', 0)); port = t.getsockname()[1]\n"
        "    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        "    try:\n"
        "        u.bind(('127.0.0.1', port)); break\n"
        "    except OSError:\n"
        "        t.close()\n"
        "print(port)\n"
    )
    return int(outer.run([sys.executable, "-c", script], timeout=10).stdout)


def http_get(outer: Outer, port: int, timeout: float = 3) -> tuple[int, str]:
    """curl from ``Outer`` to 127.0.0.1:port: (curl's exit code, body or error text)."""
    result = outer.run(
        ["curl", "-sS", "--max-time", str(timeout), f"http://127.0.0.1:{port}/"],
        timeout=timeout + 10,
        check=False,
    )
    if result.returncode:
        return result.returncode, result.stderr.decode(errors="replace").strip()
    return 0, result.stdout.decode(errors="replace")


def udp_once(prefix: Sequence[str], host: str, port: int, payload: str, timeout: float = 2) -> str:
    """One datagram to host:port from the namespace ``prefix`` enters; the reply or the error's
    name (e.g. TimeoutError)."""
    argv = [*UDP_CLIENT, "once", host, str(port)]
    argv += ["--payload", payload, "--timeout", str(timeout)]
    result = subprocess.run([*prefix, *argv], capture_output=True, timeout=timeout + 10, check=True)
    return result.stdout.decode(errors="replace").strip()


def udp_echo(prefix: Sequence[str], host: str, port: int, count: int) -> dict[str, float]:
    """``count`` datagrams of sizes 1..65507, each checked byte for byte (udp_client.py)."""
    argv = [*UDP_CLIENT, "echo", host, str(port)]
    argv += ["--count", str(count)]
    result = subprocess.run([*prefix, *argv], capture_output=True, timeout=60, check=True)
    summary: dict[str, float] = json.loads(result.stdout)
    return summary


def busybox_rootfs(directory: Path, page: str, owner: User) -> Path:
    """A container root: busybox-static (httpd, sh) and a page, plus the UDP echo server.

    busybox has no UDP server, so the echo is tests/tools/udp_server.py run by the host's
    /usr/bin/python3; the container gets the host's /usr read-only (``-v /usr:/usr:ro``) for
    that, which the lib symlinks below make usable (Debian's /lib and /lib64 live in /usr).
    """
    root = directory / "rootfs"
    for sub in ("bin", "www", "usr", "etc", "tmp"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    shutil.copy("/bin/busybox", root / "bin" / "busybox")
    (root / "bin" / "sh").symlink_to("busybox")
    (root / "lib").symlink_to("usr/lib")
    (root / "lib64").symlink_to("usr/lib64")
    shutil.copy(TOOLS / "udp_server.py", root / "udp_server.py")
    (root / "www" / "index.html").write_text(page)
    (root / "tmp").chmod(0o1777)
    chown_tree(root, owner)
    return root


class RootlessKit:
    """One ``rootlesskit --net=slirp4netns`` run as ``user`` in ``sandbox``, with a state dir.

    The argv is the one rootless Docker uses (contract §5.4): slirp4netns networking, the
    slirp4netns port driver, host loopback disabled; ``-p`` adds port forwards at start.
    """

    def __init__(
        self,
        sandbox: Sandbox,
        user: User,
        network_cmd: str,
        directory: Path,
        command: Sequence[str],
        publish: Sequence[str] = (),
        disable_host_loopback: bool = True,
    ) -> None:
        self.sandbox = sandbox
        self.user = user
        self.state = directory / "state"
        self.log_path = directory / "rootlesskit.log"
        argv = [
            "env",
            "-i",
            CLEAN_PATH,
            f"HOME={directory}",
            f"XDG_RUNTIME_DIR={directory}",
            "rootlesskit",
            f"--state-dir={self.state}",
            "--net=slirp4netns",
            f"--slirp4netns-binary={network_cmd}",
            "--port-driver=slirp4netns",
        ]
        if disable_host_loopback:
            argv.append("--disable-host-loopback")
        if HARDENED:
            argv += ["--slirp4netns-sandbox=true", "--slirp4netns-seccomp=true"]
        for spec in publish:
            argv += ["-p", spec]
        log = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            self.proc = subprocess.Popen(
                sandbox.prefix(user) + argv + list(command),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        finally:
            os.close(log)

    @property
    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.proc.poll() is None

    def rootlesskit_pid(self, timeout: float = 10) -> int:
        """rootlesskit itself: nsenter's child (``nsenter -p`` forks, then waits)."""
        found: list[int] = []

        def look() -> bool:
            try:
                kids = psutil.Process(self.proc.pid).children()
            except psutil.NoSuchProcess:
                return False
            found[:] = [k.pid for k in kids if k.name() == "rootlesskit"]
            return bool(found)

        wait_until(look, timeout, "the rootlesskit process")
        return found[0]

    def ctl(self, *args: str, timeout: float = 15) -> subprocess.CompletedProcess[bytes]:
        """rootlessctl against this instance's API socket, as the same user, in the sandbox."""
        argv = ["rootlessctl", f"--socket={self.state / 'api.sock'}", *args]
        return subprocess.run(
            self.sandbox.prefix(self.user) + ["env", "-i", CLEAN_PATH, *argv],
            capture_output=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
        )

    def ports(self) -> dict[int, tuple[str, str, int, int]]:
        """``rootlessctl list-ports --json``: id -> (proto, parent ip, parent port, child port)."""
        result = self.ctl("list-ports", "--json")
        assert result.returncode == 0, result.stderr.decode()
        table = {}
        for line in result.stdout.decode().splitlines():
            if line.strip():
                entry = json.loads(line)
                spec = entry["spec"]
                table[int(entry["id"])] = (
                    spec["proto"],
                    spec["parentIP"],
                    int(spec["parentPort"]),
                    int(spec["childPort"]),
                )
        return table

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout=timeout)

    def close(self) -> None:
        # nsenter only; what it started is ended with the sandbox.
        end_process(self.proc)


class Podman:
    """Rootless podman as ``user`` in ``sandbox``, with every path of its own under ``directory``.

    containers.conf: runc (crun fails on this VM's cgroup setup), cgroupfs, file events (no
    journald), and ``network_cmd_path`` = the network process under test. Storage: vfs, so no
    fuse-overlayfs and no mounts outside the sandbox. Images are never pulled: ``--rootfs``.
    """

    def __init__(self, sandbox: Sandbox, user: User, network_cmd: str, directory: Path) -> None:
        self.sandbox = sandbox
        self.user = user
        self.dir = directory
        for sub in ("home", "config", "data"):
            (directory / sub).mkdir(parents=True, exist_ok=True)
        # XDG_RUNTIME_DIR: private (podman insists) and short, as /run/user/UID is: podman puts
        # the API socket at $XDG_RUNTIME_DIR/libpod/tmp/<64 hex>.net, and sun_path has 108 bytes.
        self.runtime_dir = workdir("p4r-", owner=user)
        self.runtime_dir.chmod(0o700)
        (directory / "containers.conf").write_text(
            "[engine]\n"
            'runtime = "runc"\n'
            'cgroup_manager = "cgroupfs"\n'
            'events_logger = "file"\n'
            f'network_cmd_path = "{network_cmd}"\n'
        )
        (directory / "storage.conf").write_text('[storage]\ndriver = "vfs"\n')
        chown_tree(directory, user)
        self.env = [
            "env",
            "-i",
            CLEAN_PATH,
            f"HOME={directory / 'home'}",
            f"XDG_RUNTIME_DIR={self.runtime_dir}",
            f"XDG_CONFIG_HOME={directory / 'config'}",
            f"XDG_DATA_HOME={directory / 'data'}",
            f"CONTAINERS_CONF={directory / 'containers.conf'}",
            f"CONTAINERS_STORAGE_CONF={directory / 'storage.conf'}",
        ]

    def run(
        self, *args: str, timeout: float = 60, check: bool = True
    ) -> subprocess.CompletedProcess[bytes]:
        result = subprocess.run(
            self.sandbox.prefix(self.user) + self.env + ["podman", *args],
            capture_output=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
        )
        if check and result.returncode:
            raise AssertionError(
                f"podman {' '.join(args)} exited {result.returncode}:\n"
                + result.stderr.decode(errors="replace")
            )
        return result

    def close(self) -> None:
        """Best effort, bounded: remove containers so storage is released before the rmtree."""
        try:
            self.run("rm", "--all", "--force", "--time", "0", timeout=30, check=False)
        except subprocess.TimeoutExpired:
            pass
        shutil.rmtree(self.runtime_dir, ignore_errors=True)
