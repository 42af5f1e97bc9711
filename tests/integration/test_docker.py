"""End to end with rootless Docker: Debian's docker.io 20.10.24 started by its own
``dockerd-rootless.sh``, which runs rootlesskit 1.1.0 with the slirp4netns network driver and
so starts the network process under test: ours or slirp4netns 1.2.0 (the reference), whichever
is ``slirp4netns`` first on PATH (a directory holding one symlink, as a user would install us).

Everything runs as the unprivileged test user in a fresh PID namespace (``clients.Sandbox``)
inside the rig's loopback-only ``Outer``: dockerd, containerd, the shims, rootlesskit and the
network process can reach nothing but that loopback, and ending the sandbox's init ends whatever
a failing test left. No registry is used: the image is ``docker import``ed from a busybox-static
root built here (plus tests/tools/tcp_tool.py, run by the host's /usr/bin/python3 mounted
read-only into the container). tests/clients_setup.sh installs docker.io and keeps the system's
docker daemon from starting.

What is checked, for each binary:
* the container reaches a host loopback service through 10.0.2.2 (rootlesskit told
  ``--disable-host-loopback=false``; Docker's default disables it, and then 10.0.2.2 is
  unreachable) and resolves a name through the DNS alias 10.0.2.3 (the rig's fake resolver on the
  outer 127.0.0.1), bytes checked by size and SHA-256 both ways;
* ``docker run -p`` with rootlesskit's builtin port driver and with the slirp4netns one (where
  the network process itself listens on the host port), echoed bytes checked byte for byte,
  with and without a half-close;
* ``docker stop`` removes the forward and leaves the daemon's one network process; stopping the
  daemon (SIGTERM to rootlesskit, as systemd's unit does) leaves no process at all.
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import tarfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import psutil
import pytest

from tests.rig import (
    HARDENED,
    REFERENCE,
    TCP_TOOL,
    TOOLS,
    UDP_SERVER,
    Background,
    Outer,
    User,
    ns_id,
    wait_until,
)
from tests.rig.clients import (
    CLEAN_PATH,
    Sandbox,
    chown_tree,
    free_port,
    is_network_process,
    make_wrapper,
    workdir,
)

pytestmark = pytest.mark.timeout(120)

OURS = "pyslirp4netns"
# Where Debian ships it (not on PATH); other installs have it as a command.
DEBIAN_SCRIPT = "/usr/share/docker.io/contrib/dockerd-rootless.sh"
DOCKERD_ROOTLESS = (
    DEBIAN_SCRIPT
    if os.path.exists(DEBIAN_SCRIPT)
    else shutil.which("dockerd-rootless.sh") or DEBIAN_SCRIPT
)
REQUIRED = ["docker", "dockerd", "containerd", "containerd-shim-runc-v2", "runc", "docker-init"]
REQUIRED += ["rootlesskit", "rootlesskit-docker-proxy", "newuidmap", "busybox"]
PROGRAMS = [
    pytest.param(
        REFERENCE,
        id="slirp4netns",
        marks=pytest.mark.skipif(not os.path.exists(REFERENCE), reason="no reference"),
    ),
    pytest.param(OURS, id="pyslirp4netns"),
]
IMAGE = "p4n-busybox:latest"
NAME = "docker-dns.test"  # what the container looks up; the fake resolver answers every name
ANSWER = "192.0.2.53"
UP = 30.0  # the daemon's start-up (about 1 s here)
DOWN = 30.0  # its shutdown, rootlesskit and the network process included
GONE = 10.0  # anything the daemon started, once it is gone
# tcp_tool's echo client: at most its 1 MiB block per connection, ECHO_COUNT connections at once.
ECHO_SIZE, ECHO_COUNT = 1 << 20, 4
BULK = 4 << 20  # bytes each way through 10.0.2.2, and half-closed through a published port


# -- the daemon ------------------------------------------------------------------------------


class RootlessDocker:
    """``dockerd-rootless.sh`` as ``user`` in ``sandbox``, with every path of its own under
    ``directory`` (HOME, the data root; the runtime dir is short, like /run/user/UID, for the
    sockets' 108-byte sun_path). ``bin_dir`` goes first on PATH: it holds ``slirp4netns``.

    ``env`` adds DOCKERD_ROOTLESS_* settings. RIG_HARDENED=1 asks for the network process's
    sandbox and seccomp filter outright; otherwise they are Docker's default "auto" (rootlesskit
    probes ``slirp4netns --help``; both binaries get both here, as the tests check).
    """

    def __init__(
        self,
        sandbox: Sandbox,
        user: User,
        bin_dir: Path,
        directory: Path,
        env: dict[str, str],
    ) -> None:
        self.sandbox = sandbox
        self.user = user
        self.dir = directory
        self.runtime_dir = workdir("p4d-", owner=user)
        self.runtime_dir.chmod(0o700)
        # TMPDIR: rootlesskit's state dir (removed only on a clean exit) and containerd's
        # stack dumps would otherwise land in /tmp; in here they go with the runtime dir.
        self.tmp = self.runtime_dir / "tmp"
        self.tmp.mkdir()
        os.chown(self.tmp, user.uid, user.gid)
        self.log_path = directory / "dockerd.log"
        for sub in ("home", "config"):
            (directory / sub).mkdir(parents=True, exist_ok=True)
        chown_tree(directory, user)
        self.client_env = [
            "env",
            "-i",
            CLEAN_PATH,
            f"HOME={directory / 'home'}",
            f"DOCKER_CONFIG={directory / 'config'}",
            f"DOCKER_HOST=unix://{self.runtime_dir / 'docker.sock'}",
        ]
        hardening = "true" if HARDENED else "auto"
        settings = {
            "DOCKERD_ROOTLESS_ROOTLESSKIT_SLIRP4NETNS_SANDBOX": hardening,
            "DOCKERD_ROOTLESS_ROOTLESSKIT_SLIRP4NETNS_SECCOMP": hardening,
            **env,
        }
        argv = [
            "env",
            "-i",
            f"PATH={bin_dir}:{CLEAN_PATH.removeprefix('PATH=')}",
            f"HOME={directory / 'home'}",
            f"XDG_RUNTIME_DIR={self.runtime_dir}",
            f"TMPDIR={self.tmp}",
            *(f"{key}={value}" for key, value in settings.items()),
            DOCKERD_ROOTLESS,
            # vfs: no overlay mounts, and the image is a few MB. No cgroup limits are set
            # (rootless on cgroup v1), no userland-proxy change: Docker's defaults otherwise.
            "--storage-driver=vfs",
            f"--data-root={directory / 'data'}",
        ]
        log = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            self.proc = subprocess.Popen(
                sandbox.prefix(user) + argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        finally:
            os.close(log)
        try:
            self.wait_up()
        except BaseException:
            print(self.log[-6000:])
            self.close()
            raise

    @property
    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_up(self) -> None:
        """Until the API answers (or the script has exited: fail at once)."""

        def answers() -> bool:
            if not self.alive():
                raise AssertionError(f"dockerd-rootless.sh exited {self.proc.returncode}")
            version = self.docker("version", "--format", "{{.Server.Version}}", check=False)
            return version.returncode == 0

        wait_until(answers, UP, "the rootless docker daemon", interval=0.2)

    def docker(
        self, *args: str, timeout: float = 60, check: bool = True, stdin: bytes = b""
    ) -> subprocess.CompletedProcess[bytes]:
        """The docker client, as the same user, in the sandbox (it needs only the socket)."""
        result = subprocess.run(
            self.sandbox.prefix(self.user) + self.client_env + ["docker", *args],
            capture_output=True,
            timeout=timeout,
            check=False,
            input=stdin,
        )
        if check and result.returncode:
            raise AssertionError(
                f"docker {' '.join(args)} exited {result.returncode}:\n"
                + result.stderr.decode(errors="replace")
            )
        return result

    def rootlesskit_pid(self) -> int:
        """rootlesskit's parent process: nsenter's child (the script execs it)."""
        found: list[int] = []

        def look() -> bool:
            try:
                kids = psutil.Process(self.proc.pid).children()
            except psutil.NoSuchProcess:
                return False
            found[:] = [k.pid for k in kids if k.name() == "rootlesskit"]
            return bool(found)

        wait_until(look, 10, "the rootlesskit process")
        return found[0]

    def stop(self) -> float:
        """SIGTERM to rootlesskit (systemd's rootless unit does that): it passes the signal on
        to dockerd and ends the network process when dockerd is gone. Seconds taken."""
        start = time.monotonic()
        os.kill(self.rootlesskit_pid(), signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=DOWN)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"the daemon did not stop in {DOWN}s:\n{self.sandbox.describe()}"
            ) from None
        assert code == 0, f"dockerd-rootless.sh exited {code}\n{self.log[-4000:]}"
        return time.monotonic() - start

    def close(self) -> None:
        # nsenter only, by PID; what it started is ended with the sandbox, then files go.
        if self.alive():
            self.proc.kill()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        shutil.rmtree(self.runtime_dir, ignore_errors=True)


def image_tar() -> bytes:
    """A container root as a tar stream (owned by root): busybox-static and its applets sh,
    nslookup and cat; tcp_tool.py; /usr as a mount point (``-v /usr:/usr:ro`` gives it the
    host's python3, whose libraries the /lib symlinks reach: Debian's /lib lives in /usr)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:

        def add(name: str, kind: bytes, mode: int, data: bytes = b"", target: str = "") -> None:
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.linkname = kind, mode, target
            info.size = len(data)
            info.mtime = int(time.time())
            tar.addfile(info, io.BytesIO(data) if data else None)

        for directory in ("bin", "etc", "usr", "tmp"):
            add(directory, tarfile.DIRTYPE, 0o1777 if directory == "tmp" else 0o755)
        add("bin/busybox", tarfile.REGTYPE, 0o755, Path("/bin/busybox").read_bytes())
        for applet in ("sh", "nslookup", "cat"):
            add(f"bin/{applet}", tarfile.SYMTYPE, 0o777, target="busybox")
        add("lib", tarfile.SYMTYPE, 0o777, target="usr/lib")
        add("lib64", tarfile.SYMTYPE, 0o777, target="usr/lib64")
        add("tcp_tool.py", tarfile.REGTYPE, 0o644, (TOOLS / "tcp_tool.py").read_bytes())
    return buffer.getvalue()


# -- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def docker_installed() -> None:
    missing = [tool for tool in REQUIRED if shutil.which(tool) is None]
    if not os.access(DOCKERD_ROOTLESS, os.X_OK):
        missing.append("dockerd-rootless.sh")
    if missing:
        message = f"missing {missing}: run tests/clients_setup.sh as root"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="module")
def image() -> bytes:
    """The image's tar stream (``docker import -`` reads it from stdin)."""
    return image_tar()


@pytest.fixture
def bin_dir(program: str) -> Iterator[Path]:
    """A directory with ``slirp4netns`` in it: a symlink to the binary under test (for ours,
    to the wrapper script that runs this checkout's ``python -m pyslirp4netns``)."""
    directory = workdir("pyslirp4netns-docker-bin-")
    try:
        target = make_wrapper(directory) if program == OURS else Path(program)
        (directory / "slirp4netns").symlink_to(target)
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def tmpdir_for(unpriv: User) -> Iterator[Path]:
    """A scratch dir owned by the test user; removed (as root) whatever the test did."""
    directory = workdir("pyslirp4netns-docker-", owner=unpriv)
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def sandbox(outer: Outer, docker_installed: None, tmpdir_for: Path) -> Iterator[Sandbox]:
    """Requests tmpdir_for so that it is torn down first: no process outlives the rmtree."""
    box = Sandbox(outer)
    try:
        yield box
    finally:
        box.close()


@pytest.fixture
def resolver(outer: Outer) -> Iterator[Background]:
    """The fake DNS server on the outer 127.0.0.1:53 (Outer's resolv.conf names it)."""
    server = Background(outer.prefix(), [*UDP_SERVER, "dns", "--port", "53", "--answer", ANSWER])
    try:
        yield server
    finally:
        server.close()


StartDocker = Callable[[dict[str, str]], RootlessDocker]


@pytest.fixture
def start_docker(
    sandbox: Sandbox, unpriv: User, bin_dir: Path, tmpdir_for: Path, image: bytes
) -> Iterator[StartDocker]:
    """start(env) -> a running daemon with the image imported; closed at teardown."""
    started: list[RootlessDocker] = []

    def start(env: dict[str, str]) -> RootlessDocker:
        daemon = RootlessDocker(sandbox, unpriv, bin_dir, tmpdir_for / str(len(started)), env)
        started.append(daemon)
        began = time.monotonic()
        daemon.docker("import", "-", IMAGE, stdin=image)
        print(f"docker import took {time.monotonic() - began:.2f}s")
        return daemon

    try:
        yield start
    finally:
        for daemon in started:
            daemon.close()


# -- checks ----------------------------------------------------------------------------------


def the_network_process(sandbox: Sandbox, program: str) -> psutil.Process:
    """The daemon's one network process: the binary under test, sandboxed and filtered."""
    procs = sandbox.network_processes()
    assert len(procs) == 1, sandbox.describe()
    proc = procs[0]
    argv = proc.cmdline()
    if program == OURS:
        assert "pyslirp4netns" in argv[:3], argv
    else:
        assert proc.name() == "slirp4netns" and "pyslirp4netns" not in " ".join(argv), argv
    # Docker's "auto" (or RIG_HARDENED's "true"): rootlesskit found both flags in --help.
    assert "--enable-sandbox" in argv and "--enable-seccomp" in argv, argv
    return proc


def listeners(sandbox: Sandbox, outer: Outer, port: int) -> list[psutil.Process]:
    """The sandbox's processes holding a TCP socket that listens on 127.0.0.1:port in Outer.

    From /proc/PID/net/tcp (that process's network namespace; psutil would read the test's own)
    and the socket inodes among its fds."""
    outer_net = ns_id(outer.pid, "net")
    wanted = f"0100007F:{port:04X}"
    found = []
    for proc in sandbox.processes():
        try:
            if ns_id(proc.pid, "net") != outer_net:
                continue
            rows = Path(f"/proc/{proc.pid}/net/tcp").read_text().splitlines()[1:]
            inodes = {
                f"socket:[{r.split()[9]}]" for r in rows if r.split()[1:4:2] == [wanted, "0A"]
            }
            fds = os.listdir(f"/proc/{proc.pid}/fd")
            if any(os.readlink(f"/proc/{proc.pid}/fd/{fd}") in inodes for fd in fds):
                found.append(proc)
        except OSError:
            pass
    return found


def in_container(daemon: RootlessDocker, script: str, timeout: float = 60) -> tuple[str, float]:
    """``docker run --rm`` of a shell script; (its stdout, seconds the run took)."""
    start = time.monotonic()
    result = daemon.docker(
        *("run", "--rm", "-v", "/usr:/usr:ro", IMAGE, "/bin/sh", "-c", script), timeout=timeout
    )
    return result.stdout.decode(errors="replace"), time.monotonic() - start


def digest(size: int) -> str:
    """SHA-256 of tcp_tool's first ``size`` bytes of stream."""
    result = subprocess.run(
        [*TCP_TOOL, "digest", "x", "--size", str(size)], capture_output=True, check=True, timeout=30
    )
    return result.stdout.decode().strip()


def resolves(out: str) -> bool:
    """busybox nslookup's output: the fake resolver's answer, asked through 10.0.2.3."""
    return "Server:\t\t10.0.2.3" in out and f"Name:\t{NAME}\nAddress: {ANSWER}" in out


def tool(outer: Outer, args: Sequence[str], timeout: float = 60, check: bool = True) -> str:
    """tcp_tool.py as a client in Outer; its output ("" if it failed and not ``check``)."""
    result = outer.run([*TCP_TOOL, *args], timeout=timeout, check=False)
    if result.returncode and not check:
        return ""
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    return result.stdout.decode().strip()


def pids(sandbox: Sandbox) -> set[int]:
    return {proc.pid for proc in sandbox.processes()}


def wait_pids(sandbox: Sandbox, expected: set[int], what: str) -> float:
    """Until the sandbox's processes are exactly ``expected``; seconds taken."""
    start = time.monotonic()
    try:
        wait_until(lambda: pids(sandbox) == expected, GONE, what)
    except TimeoutError as e:
        raise AssertionError(f"{e}; running:\n{sandbox.describe()}") from None
    return time.monotonic() - start


def stop_daemon(daemon: RootlessDocker, sandbox: Sandbox) -> None:
    """The daemon stops cleanly, and nothing it started is left: no network process, no
    containerd, no shim, nothing."""
    print(f"daemon stopped in {daemon.stop():.2f}s")
    print(f"sandbox empty {wait_pids(sandbox, set(), 'every process to exit'):.2f}s later")


# -- the tests -------------------------------------------------------------------------------


@pytest.mark.parametrize("program", PROGRAMS)
def test_container_reaches_host_loopback_and_dns(
    outer: Outer, sandbox: Sandbox, resolver: Background, start_docker: StartDocker, program: str
) -> None:
    """With host loopback allowed (rootlesskit ``--disable-host-loopback=false``, through the
    script's DOCKERD_ROOTLESS_ROOTLESSKIT_FLAGS, which come after its own flag): a container
    sends to and receives from services on the outer 127.0.0.1 through 10.0.2.2, checked by
    size and SHA-256, and resolves a name through 10.0.2.3."""
    servers: list[Background] = []
    try:
        servers.append(sink := Background(outer.prefix(), [*TCP_TOOL, "serve", "sink"]))
        serve_source = [*TCP_TOOL, "serve", "source", "--size", str(BULK)]
        servers.append(source := Background(outer.prefix(), serve_source))
        flags = {"DOCKERD_ROOTLESS_ROOTLESSKIT_FLAGS": "--disable-host-loopback=false"}
        daemon = start_docker(flags)
        proc = the_network_process(sandbox, program)
        assert "--disable-host-loopback" not in proc.cmdline(), proc.cmdline()
        own = pids(sandbox)  # the daemon's processes, before any container
        script = (
            "cat /etc/resolv.conf; echo ---; "
            f"nslookup {NAME}; echo ---; "
            f"/usr/bin/python3 /tcp_tool.py send 10.0.2.2 {sink.line} --size {BULK}; "
            f"/usr/bin/python3 /tcp_tool.py recv 10.0.2.2 {source.line}"
        )
        out, took = in_container(daemon, script)
        print(f"docker run took {took:.2f}s:\n{out}")
        resolv, lookup, transfers = out.split("---\n")
        assert resolv.split() == ["nameserver", "10.0.2.3"], resolv
        assert resolves(lookup), lookup
        expected = f"{BULK} {digest(BULK)}"
        assert transfers.splitlines() == [expected, expected], transfers
        print(f"container gone {wait_pids(sandbox, own, 'the container to be gone'):.2f}s later")
        stop_daemon(daemon, sandbox)
    except BaseException:
        print(sandbox.describe())
        raise
    finally:
        for server in servers:
            server.close()


# Docker's default port driver, and the one that hands the forwards to the network process.
PORT_DRIVERS = [
    pytest.param("builtin", id="builtin-ports"),
    pytest.param("slirp4netns", id="slirp4netns-ports"),
]


@pytest.mark.parametrize("port_driver", PORT_DRIVERS)
@pytest.mark.parametrize("program", PROGRAMS)
def test_published_port_stop_and_daemon_stop(
    outer: Outer,
    sandbox: Sandbox,
    resolver: Background,
    start_docker: StartDocker,
    program: str,
    port_driver: str,
) -> None:
    """Docker's default network setup (host loopback disabled) with each port driver: DNS
    through 10.0.2.3 works, 10.0.2.2 is unreachable; ``docker run -d -p`` serves a TCP echo on
    the outer 127.0.0.1, byte for byte (parallel connections, and one half-closed); ``docker
    stop`` (--rm) removes the forward and leaves only the daemon's network process; stopping the
    daemon leaves nothing."""
    slirp_ports = port_driver == "slirp4netns"
    port, closed = free_port(outer), free_port(outer)
    daemon = start_docker({"DOCKERD_ROOTLESS_ROOTLESSKIT_PORT_DRIVER": port_driver})
    try:
        proc = the_network_process(sandbox, program)
        assert "--disable-host-loopback" in proc.cmdline(), proc.cmdline()
        # The slirp4netns port driver needs the network process's API socket.
        assert any(a in proc.cmdline() for a in ("-a", "--api-socket")) == slirp_ports
        own = pids(sandbox)  # the daemon's processes, before any container

        probe = (
            f'nslookup {NAME}; echo ---; /usr/bin/python3 -c "import errno, socket; '
            f"s = socket.socket(); s.settimeout(5); "
            f"print(errno.errorcode.get(s.connect_ex(('10.0.2.2', {closed})), 'connected'))\""
        )
        out, took = in_container(daemon, probe)
        print(f"docker run took {took:.2f}s:\n{out}")
        lookup, loopback = out.split("---\n")
        assert resolves(lookup), lookup
        assert loopback.strip() == "ENETUNREACH", loopback  # both binaries, measured here

        began = time.monotonic()
        daemon.docker(
            *("run", "-d", "--rm", "--init", "--name", "echo"),
            *("-p", f"127.0.0.1:{port}:8080", "-v", "/usr:/usr:ro", IMAGE),
            *("/usr/bin/python3", "/tcp_tool.py", "serve", "echo", "8080", "--bind", "0.0.0.0"),
        )
        print(f"docker run -d -p took {time.monotonic() - began:.2f}s")
        # Who listens on the host port: the network process itself with the slirp4netns
        # driver, rootlesskit (its builtin driver's parent side) otherwise.
        holders = listeners(sandbox, outer, port)
        assert len(holders) == 1, sandbox.describe()
        assert is_network_process(holders[0]) == slirp_ports, holders[0].cmdline()

        # The server inside may still be starting: a first small echo, retried.
        first = ["echo", "127.0.0.1", str(port), "--size", "1000", "--timeout", "2"]
        wait_until(
            lambda: tool(outer, first, check=False) == "ok 1",
            20,
            "a first echo through the published port",
            interval=0.2,
        )
        began = time.monotonic()
        args = ["echo", "127.0.0.1", str(port), "--size", str(ECHO_SIZE)]
        assert tool(outer, [*args, "--count", str(ECHO_COUNT)]) == f"ok {ECHO_COUNT}"
        print(f"{ECHO_COUNT} x {ECHO_SIZE} B echoed in {time.monotonic() - began:.2f}s")
        half = tool(outer, ["halfsend", "127.0.0.1", str(port), "--size", str(BULK)])
        assert half == f"{BULK} {digest(BULK)}"

        began = time.monotonic()
        daemon.docker("stop", "-t", "5", "echo", timeout=30)
        print(f"docker stop took {time.monotonic() - began:.2f}s")
        wait_until(
            lambda: daemon.docker("ps", "-aq").stdout.strip() == b"", 15, "--rm to remove it"
        )
        wait_until(lambda: not listeners(sandbox, outer, port), 10, "the forward to be removed")
        refused = tool(outer, ["connect", "127.0.0.1", str(port), "--timeout", "5"])
        assert refused.split()[0] == "ConnectionRefusedError", refused
        # Nothing of either container is left (shims, docker-proxy, rootlesskit-docker-proxy,
        # tini), and the daemon's own processes are the same: its network process among them.
        print(f"containers gone {wait_pids(sandbox, own, 'the daemon alone'):.2f}s after stop")
        assert the_network_process(sandbox, program).pid == proc.pid
        stop_daemon(daemon, sandbox)
    except BaseException:
        print(sandbox.describe())
        print(daemon.log[-6000:])
        raise
