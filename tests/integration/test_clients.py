"""End to end with the real clients: rootlesskit 1.1.0 and rootless podman
4.3.1 start the network process under test themselves, as the unprivileged test user, and serve
a page and UDP echoes from their container to the host through its port forwards.

Everything runs in a fresh PID namespace (``clients.Sandbox``) inside the rig's loopback-only
``Outer``: the network process, its host sockets and the clients' helpers can reach nothing but
that loopback, and ending the sandbox's init ends whatever a failing test left. No image is
pulled: podman gets a busybox-static root through ``--rootfs``. tests/clients_setup.sh installs
the clients and gives the test user its subordinate ids.

Each scenario runs against slirp4netns 1.2.0 (the reference) and ours, given to the clients as
one executable path (a wrapper script around ``python -m pyslirp4netns``).
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import pytest

from tests.rig import REFERENCE, Outer, Remote, User, wait_until
from tests.rig.clients import (
    Podman,
    RootlessKit,
    Sandbox,
    busybox_rootfs,
    free_port,
    http_get,
    make_wrapper,
    udp_echo,
    udp_once,
    workdir,
)

pytestmark = pytest.mark.timeout(120)

OURS = "pyslirp4netns"
TOOL_DIR = Path(__file__).resolve().parents[1] / "tools"
TOOLS = ("rootlesskit", "rootlessctl", "podman", "runc", "conmon", "curl", "busybox")
REFERENCE_PARAM = pytest.param(
    REFERENCE,
    id="slirp4netns",
    marks=pytest.mark.skipif(not os.path.exists(REFERENCE), reason="no reference"),
)
# Scenarios that need the API and port forwards.
WITH_PORTS = [REFERENCE_PARAM, pytest.param(OURS, id="pyslirp4netns")]
# Scenarios without port forwards: start, serve the guest, exit when the client is done.
WITHOUT_PORTS = [REFERENCE_PARAM, pytest.param(OURS, id="pyslirp4netns")]


class NoReplyToLoopback(AssertionError):
    """The one failure expected of slirp4netns in test_udp_forward_answers_a_loopback_client."""


# slirp4netns 1.2.0 drops a guest's UDP reply to 10.0.2.2 under --disable-host-loopback, so a
# loopback client of a UDP forward never hears back (measured here; ours answers it).
LOOPBACK_UDP = [
    pytest.param(
        REFERENCE,
        id="slirp4netns",
        marks=[
            pytest.mark.skipif(not os.path.exists(REFERENCE), reason="no reference"),
            pytest.mark.xfail(
                strict=True,
                raises=NoReplyToLoopback,
                reason="slirp4netns drops replies to 10.0.2.2 (host loopback off)",
            ),
        ],
    ),
    pytest.param(OURS, id="pyslirp4netns"),
]
UDP_DATAGRAMS = 200
GONE = 10.0  # how long the network process may take to exit once its client is done


@pytest.fixture(scope="module")
def clients_installed() -> None:
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        message = f"missing {missing}: run tests/clients_setup.sh as root"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="module")
def wrapper_dir() -> Iterator[Path]:
    directory = workdir("pyslirp4netns-wrapper-")
    make_wrapper(directory)
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def network_cmd(request: pytest.FixtureRequest, wrapper_dir: Path) -> str:
    program: str = request.param
    return str(wrapper_dir / OURS) if program == OURS else program


@pytest.fixture
def sandbox(outer: Outer, clients_installed: None, tmpdir_for: Path) -> Iterator[Sandbox]:
    """Requests tmpdir_for so that it is torn down first: no process outlives the rmtree."""
    box = Sandbox(outer)
    try:
        yield box
    finally:
        box.close()


@pytest.fixture
def remote(outer: Outer) -> Iterator[Remote]:
    """A "remote" host on a veth from Outer: UDP from it is not loopback (see LOOPBACK_UDP)."""
    host = Remote(outer)
    try:
        yield host
    finally:
        host.close()


@pytest.fixture
def tmpdir_for(unpriv: User) -> Iterator[Path]:
    """A scratch dir owned by the test user; removed (as root) whatever the test did."""
    directory = workdir("pyslirp4netns-clients-", owner=unpriv)
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def wait_page(
    outer: Outer, port: int, page: str, alive: Callable[[], bool] | None, timeout: float = 10
) -> float:
    """Poll the forward until it serves ``page``; fail fast if the client died. Seconds taken."""
    start = time.monotonic()
    last: list[tuple[int, str]] = []

    def served() -> bool:
        if alive is not None and not alive():
            raise AssertionError(f"the client exited early; last reply {last}")
        last[:] = [http_get(outer, port)]
        return last[0] == (0, page)

    try:
        wait_until(served, timeout, f"the page on 127.0.0.1:{port}", interval=0.2)
    except TimeoutError as e:
        raise AssertionError(f"{e}; last reply {last}") from None
    return time.monotonic() - start


def check_udp(prefix: list[str], host: str, port: int) -> dict[str, float]:
    """First one echo (the server inside may still be starting), then many, byte for byte."""
    replies: list[str] = []

    def answered() -> bool:
        replies[:] = [udp_once(prefix, host, port, "ping", timeout=1)]
        return replies[0] == "ping"

    try:
        wait_until(answered, 15, f"a UDP echo through {host}:{port}", interval=0.2)
    except TimeoutError as e:
        raise AssertionError(f"{e}; last {replies}") from None
    summary = udp_echo(prefix, host, port, UDP_DATAGRAMS)
    assert summary["ok"] == UDP_DATAGRAMS and summary["lost"] == 0, summary
    return summary


def wait_network_gone(sandbox: Sandbox, timeout: float = GONE) -> float:
    """Until no network process is left in the sandbox; seconds taken."""
    start = time.monotonic()
    try:
        wait_until(lambda: not sandbox.network_processes(), timeout, "the network process to exit")
    except TimeoutError as e:
        raise AssertionError(f"{e}; still running:\n{sandbox.describe()}") from None
    return time.monotonic() - start


def serve_with_rootlesskit(
    sandbox: Sandbox, user: User, network_cmd: str, directory: Path, publish: list[str]
) -> tuple[RootlessKit, str]:
    """rootlesskit running busybox httpd on :80 and a UDP echo on :5353; (it, its page)."""
    www = directory / "www"
    www.mkdir()
    page = f"rootlesskit via {os.path.basename(network_cmd)}\n"
    (www / "index.html").write_text(page)
    os.chown(www, user.uid, user.gid)
    inside = (
        f"'{os.path.realpath(sys.executable)}' '{TOOL_DIR / 'udp_server.py'}' echo "
        f"--bind 0.0.0.0 --port 5353 & busybox httpd -f -p 80 -h '{www}' & wait"
    )
    kit = RootlessKit(sandbox, user, network_cmd, directory, ["sh", "-c", inside], publish)
    return kit, page


def serve_with_podman(
    sandbox: Sandbox, user: User, network_cmd: str, directory: Path, publish: list[str]
) -> tuple[Podman, str]:
    """A detached container "web": busybox httpd on :80 (pid 1) and a UDP echo on :5353."""
    page = f"podman via {os.path.basename(network_cmd)}\n"
    rootfs = busybox_rootfs(directory, page, user)
    podman = Podman(sandbox, user, network_cmd, directory / "podman")
    inside = (
        "/usr/bin/python3 /udp_server.py echo --bind 0.0.0.0 --port 5353 & "
        "exec /bin/busybox httpd -f -p 80 -h /www"
    )
    publish_args = [arg for spec in publish for arg in ("-p", spec)]
    try:
        start = time.monotonic()
        podman.run(
            *("run", "--rm", "-d", "--name", "web"),
            *("--network", "slirp4netns:port_handler=slirp4netns", *publish_args),
            *("-v", "/usr:/usr:ro", "--rootfs", str(rootfs)),
            *("/bin/sh", "-c", inside),
        )
        print(f"podman run -d took {time.monotonic() - start:.2f}s")
    except BaseException:
        podman.close()
        raise
    return podman, page


# -- rootlesskit -----------------------------------------------------------------------------


@pytest.mark.parametrize("network_cmd", WITH_PORTS, indirect=True)
def test_rootlesskit_port_forwards(
    outer: Outer,
    remote: Remote,
    sandbox: Sandbox,
    unpriv: User,
    tmpdir_for: Path,
    network_cmd: str,
) -> None:
    """-p TCP and UDP at start, rootlessctl add-ports/list-ports/remove-ports, then SIGKILL."""
    tcp, udp, added = free_port(outer), free_port(outer), free_port(outer)
    publish = [f"127.0.0.1:{tcp}:80/tcp", f"0.0.0.0:{udp}:5353/udp"]
    kit, page = serve_with_rootlesskit(sandbox, unpriv, network_cmd, tmpdir_for, publish)
    try:
        print(f"first page after {wait_page(outer, tcp, page, kit.alive):.2f}s")
        print("udp", check_udp(remote.prefix(), Remote.HOST4, udp))
        assert len(sandbox.network_processes()) == 1, sandbox.describe()

        # A forward added and removed at run time through rootlesskit's own API.
        add = kit.ctl("add-ports", f"127.0.0.1:{added}:80/tcp")
        assert add.returncode == 0, add.stderr.decode()
        port_id = int(add.stdout.decode().strip())
        wait_page(outer, added, page, kit.alive, timeout=10)
        at_start = {("tcp", "127.0.0.1", tcp, 80), ("udp", "0.0.0.0", udp, 5353)}
        listed = kit.ports()
        assert set(listed.values()) == at_start | {("tcp", "127.0.0.1", added, 80)}, listed
        assert listed[port_id] == ("tcp", "127.0.0.1", added, 80)
        remove = kit.ctl("remove-ports", str(port_id))
        assert remove.returncode == 0, remove.stderr.decode()
        wait_until(lambda: http_get(outer, added)[0] == 7, 10, "the removed forward to refuse")
        assert http_get(outer, tcp) == (0, page)  # the others stay
        assert set(kit.ports().values()) == at_start

        # rootlesskit killed outright. It passes no exit fd: its network process dies with it
        # (a parent-death signal; gone within ~0.02 s here) and nothing is left.
        os.kill(kit.rootlesskit_pid(), signal.SIGKILL)
        print(f"network process gone {wait_network_gone(sandbox):.2f}s after SIGKILL")
    except BaseException:
        print(kit.log)
        raise
    finally:
        kit.close()


@pytest.mark.parametrize("network_cmd", WITHOUT_PORTS, indirect=True)
def test_rootlesskit_exit_and_sigkill(
    sandbox: Sandbox, unpriv: User, tmpdir_for: Path, network_cmd: str
) -> None:
    """The guest reaches the gateway and DNS aliases; the network process ends with its client,
    whether the command inside exits (rootlesskit's clean exit) or rootlesskit is SIGKILLed."""
    probe = "busybox ping -c 1 -W 5 10.0.2.2 && busybox ping -c 1 -W 5 10.0.2.3"
    first = tmpdir_for / "first"
    first.mkdir()
    os.chown(first, unpriv.uid, unpriv.gid)
    kit = RootlessKit(sandbox, unpriv, network_cmd, first, ["sh", "-c", probe])
    try:
        assert kit.wait(30) == 0, kit.log
        print(f"network process gone {wait_network_gone(sandbox):.2f}s after a clean exit")
    finally:
        kit.close()

    second = tmpdir_for / "second"
    second.mkdir()
    os.chown(second, unpriv.uid, unpriv.gid)
    kit = RootlessKit(sandbox, unpriv, network_cmd, second, ["sleep", "60"])
    try:
        # child_pid is written once the child's network is configured, i.e. the slirp is up.
        wait_until(
            lambda: (second / "state" / "child_pid").exists() or not kit.alive(),
            20,
            "the rootlesskit child",
        )
        assert kit.alive() and sandbox.network_processes(), kit.log
        os.kill(kit.rootlesskit_pid(), signal.SIGKILL)
        print(f"network process gone {wait_network_gone(sandbox):.2f}s after SIGKILL")
    finally:
        kit.close()


# -- rootless podman -------------------------------------------------------------------------


def network_log(sandbox: Sandbox) -> BinaryIO:
    """The one network process's stderr, opened through /proc while it runs: podman deletes
    the log file, and this handle still reads it after the process is gone."""
    procs = sandbox.network_processes()
    assert len(procs) == 1, sandbox.describe()
    return open(f"/proc/{procs[0].pid}/fd/2", "rb")


def assert_exit_fd_ended_it(log: BinaryIO) -> None:
    """podman passes ``-e 3``, the read end of a pipe whose writer conmon holds: when the
    container is gone conmon exits, and the network process exits cleanly (contract §4.3),
    rather than being killed by a signal (which would print nothing)."""
    text = log.read().decode(errors="replace")
    assert "exitfd event\ndo_slirp is exiting\n" in text, text[-2000:]


@pytest.mark.parametrize("network_cmd", WITH_PORTS, indirect=True)
def test_podman_port_forwards(
    outer: Outer,
    remote: Remote,
    sandbox: Sandbox,
    unpriv: User,
    tmpdir_for: Path,
    network_cmd: str,
) -> None:
    """`podman run --rm -d -p` through port_handler=slirp4netns: a page and UDP echoes; then
    `podman stop` ends the network process through its exit fd and --rm removes the container."""
    tcp, udp = free_port(outer), free_port(outer)
    publish = [f"127.0.0.1:{tcp}:80", f"0.0.0.0:{udp}:5353/udp"]
    podman, page = serve_with_podman(sandbox, unpriv, network_cmd, tmpdir_for, publish)
    try:
        with network_log(sandbox) as log:
            print(f"first page after {wait_page(outer, tcp, page, None):.2f}s")
            print("udp", check_udp(remote.prefix(), Remote.HOST4, udp))

            # httpd as the container's pid 1 ignores SIGTERM: -t 1 has it SIGKILLed after 1 s.
            podman.run("stop", "-t", "1", "web", timeout=30)
            print(f"network process gone {wait_network_gone(sandbox):.2f}s after podman stop")
            assert_exit_fd_ended_it(log)
        wait_until(lambda: podman.run("ps", "-aq").stdout.strip() == b"", 15, "--rm to remove it")
    finally:
        podman.close()


@pytest.mark.parametrize("network_cmd", WITHOUT_PORTS, indirect=True)
def test_podman_without_ports(
    sandbox: Sandbox, unpriv: User, tmpdir_for: Path, network_cmd: str
) -> None:
    """A container pings the gateway and DNS aliases; `podman stop` ends the network process
    through its exit fd, `podman rm` leaves nothing."""
    rootfs = busybox_rootfs(tmpdir_for, "unused\n", unpriv)
    podman = Podman(sandbox, unpriv, network_cmd, tmpdir_for / "podman")
    probe = (
        "busybox ping -c 1 -W 5 10.0.2.2 && busybox ping -c 1 -W 5 10.0.2.3 && "
        "echo pinged && exec busybox sleep 60"
    )
    try:
        podman.run(
            *("run", "-d", "--name", "pinger", "--network", "slirp4netns"),
            *("--rootfs", str(rootfs), "/bin/sh", "-c", probe),
        )
        with network_log(sandbox) as log:
            logs: list[bytes] = []

            def pinged() -> bool:
                logs[:] = [podman.run("logs", "pinger", check=False).stdout]
                return b"pinged" in logs[0]

            wait_until(pinged, 15, "both pings", interval=0.2)
            assert logs[0].count(b"1 packets received") == 2, logs[0].decode()
            podman.run("stop", "-t", "0", "pinger", timeout=30)
            print(f"network process gone {wait_network_gone(sandbox):.2f}s after podman stop")
            assert_exit_fd_ended_it(log)
        podman.run("rm", "pinger")
        assert podman.run("ps", "-aq").stdout.strip() == b""
        assert not sandbox.network_processes()
    finally:
        podman.close()


# -- UDP replies to a loopback client --------------------------------------------------------


@pytest.mark.parametrize("client", ["rootlesskit", "podman"])
@pytest.mark.parametrize("network_cmd", LOOPBACK_UDP, indirect=True)
def test_udp_forward_answers_a_loopback_client(
    outer: Outer,
    remote: Remote,
    sandbox: Sandbox,
    unpriv: User,
    tmpdir_for: Path,
    network_cmd: str,
    client: str,
) -> None:
    """Both clients pass --disable-host-loopback. A loopback client of a UDP forward appears to
    the guest as 10.0.2.2; its replies must still come back (slirp4netns drops
    them). The forward is first proven to work from a "remote" client."""
    udp = free_port(outer)
    publish = [f"0.0.0.0:{udp}:5353/udp"]
    started: RootlessKit | Podman
    if client == "rootlesskit":
        started, _ = serve_with_rootlesskit(sandbox, unpriv, network_cmd, tmpdir_for, publish)
    else:
        started, _ = serve_with_podman(sandbox, unpriv, network_cmd, tmpdir_for, publish)
    try:
        check_udp(remote.prefix(), Remote.HOST4, udp)
        replies = [udp_once(outer.prefix(), "127.0.0.1", udp, f"try {i}", 1.5) for i in range(2)]
        if replies != [f"try {i}" for i in range(2)]:
            raise NoReplyToLoopback(replies)
    finally:
        started.close()
