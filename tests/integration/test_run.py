"""`pyslirp4netns run [OPTION]... -- CMD`: the README's first command, in the rig.

The runner is started inside ``Outer`` (so its daemon and every host socket stay on that
namespace's loopback), as root and as the real unprivileged test user. A host page is served
on Outer's 127.0.0.1 and fetched from inside the new namespace through 10.0.2.2; DNS goes
through the alias 10.0.2.3 to the fake resolver on Outer's 127.0.0.1:53.
"""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.rig import HARDENED, UDP_SERVER, Background, Outer, User, end_process

pytestmark = pytest.mark.timeout(180)

PYSLIRP4NETNS = [sys.executable, "-m", "pyslirp4netns"]  # run is ours: never SLIRP4NETNS_BIN
HARDENING = ["--enable-sandbox", "--enable-seccomp"] if HARDENED else []
RUN_TIMEOUT = 60
USERS = [pytest.param(None, id="root"), pytest.param("unpriv", id="unprivileged")]


@pytest.fixture
def user(request: pytest.FixtureRequest) -> User | None:
    if request.param is None:
        return None
    found: User = request.getfixturevalue(request.param)
    return found


@pytest.fixture
def tmpdir_for() -> Iterator[Callable[[], Path]]:
    """Fresh directories anyone may read (the unprivileged user included), removed after."""
    made: list[Path] = []

    def make() -> Path:
        path = Path(tempfile.mkdtemp(prefix="pyslirp4netns-run-"))
        path.chmod(0o755)
        made.append(path)
        return path

    yield make
    for path in made:
        for child in path.iterdir():
            child.unlink()
        path.rmdir()


@pytest.fixture
def web(outer: Outer, tmpdir_for: Callable[[], Path]) -> Iterator[tuple[int, str]]:
    """An HTTP server on Outer's host loopback: (port, the page it serves)."""
    www = tmpdir_for()
    page = f"hello from the host loopback, pid {os.getpid()}\n"
    (www / "index.html").write_text(page)
    server = Background(
        outer.prefix(),
        [sys.executable, "-u", "-m", "http.server", "--bind", "127.0.0.1", "0", "-d", str(www)],
    )
    try:
        match = re.search(r" port (\d+) ", server.line)
        assert match, server.line
        yield int(match.group(1)), page
    finally:
        server.close()


@pytest.fixture
def dns(outer: Outer) -> Iterator[None]:
    """The fake resolver Outer's resolv.conf names (127.0.0.1:53): every name is 192.0.2.53."""
    server = Background(outer.prefix(), [*UDP_SERVER, "dns", "--port", "53"])
    try:
        yield
    finally:
        server.close()


def run(
    outer: Outer,
    command: list[str],
    options: list[str] | None = None,
    user: User | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    argv = [*PYSLIRP4NETNS, "run", *HARDENING, *(options or []), "--", *command]
    result = outer.run(argv, user=user, timeout=RUN_TIMEOUT, check=False, env=env)
    return subprocess.CompletedProcess(
        result.args, result.returncode, result.stdout.decode(), result.stderr.decode()
    )


def in_netns(link: str) -> list[int]:
    """Every process (ours or not) whose network namespace is ``link`` (net:[INODE])."""
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if os.readlink(f"/proc/{name}/ns/net") == link:
                    found.append(int(name))
            except OSError:
                pass
    return found


def daemons_serving(pid: int) -> list[int]:
    """Processes whose command line ends with ``PID tap0`` (a daemon for that target)."""
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                argv = Path(f"/proc/{name}/cmdline").read_bytes().split(b"\0")[:-1]
            except OSError:
                continue
            if argv[-2:] == [str(pid).encode(), b"tap0"]:
                found.append(int(name))
    return found


def is_alive(pid: int) -> bool:
    try:
        return "\nState:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False


def owned_in_tmp(user: User | None) -> set[str]:
    """Names in /tmp that belong to ``user`` (none for root: others' tests write there too)."""
    names: set[str] = set()
    if user is None:
        return names
    for path in Path("/tmp").iterdir():
        try:
            if path.lstat().st_uid == user.uid:
                names.add(path.name)
        except OSError:
            pass
    return names


def mounts(pid: int) -> list[str]:
    return [line.split()[4] for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines()]


@pytest.mark.parametrize("user", USERS, indirect=True)
def test_readme_command_prints_the_page_served_on_host_loopback(
    outer: Outer, web: tuple[int, str], user: User | None
) -> None:
    port, page = web
    result = run(outer, ["curl", "-sS", "--max-time", "10", f"http://10.0.2.2:{port}/"], user=user)
    assert (result.returncode, result.stdout) == (0, page), result.stderr
    assert result.stderr == ""  # the daemon's start and end lines are not CMD's business


@pytest.mark.parametrize(
    "script, status", [("exit 0", 0), ("exit 3", 3), ("kill -TERM $$", 128 + signal.SIGTERM)]
)
def test_exit_status_is_cmds(outer: Outer, script: str, status: int) -> None:
    result = run(outer, ["sh", "-c", script])
    assert result.returncode == status, result.stderr
    assert result.stderr == ""


def test_cmd_that_cannot_be_found_gives_127(outer: Outer) -> None:
    result = run(outer, ["/nonexistent/cmd"])
    assert result.returncode == 127
    assert result.stderr == "pyslirp4netns run: /nonexistent/cmd: No such file or directory\n"


@pytest.mark.parametrize("user", USERS, indirect=True)
def test_sigterm_to_run_is_passed_to_cmd(outer: Outer, user: User | None) -> None:
    argv = [*PYSLIRP4NETNS, "run", *HARDENING, "--", "sh", "-c", "echo started; exec sleep 60"]
    proc = subprocess.Popen(
        outer.prefix(user) + argv,  # nsenter and setpriv exec: proc.pid is the runner
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], RUN_TIMEOUT)
        assert ready and proc.stdout.readline() == b"started\n"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 128 + signal.SIGTERM
        assert proc.stderr is not None and proc.stderr.read() == b""
    finally:
        end_process(proc)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


@pytest.mark.usefixtures("dns")
def test_dns_inside_goes_through_the_alias(outer: Outer) -> None:
    host_resolv = outer.resolv.read_text()
    lookup = "import socket; print(socket.gethostbyname('www.example.test'))"
    result = run(outer, ["sh", "-c", f'head -n 1 /etc/resolv.conf; {sys.executable} -c "{lookup}"'])
    assert (result.returncode, result.stdout) == (0, "nameserver 10.0.2.3\n192.0.2.53\n"), (
        result.stderr
    )
    assert outer.resolv.read_text() == host_resolv  # only the new namespace saw another file
    assert run(outer, ["cat", "/etc/resolv.conf"], ["--disable-dns"]).stdout == host_resolv


def test_options_reach_the_daemon(outer: Outer, web: tuple[int, str]) -> None:
    """--disable-host-loopback (not a default of run): the host page is out of reach."""
    port, _ = web
    curl = ["curl", "-s", "--max-time", "5", f"http://10.0.2.2:{port}/"]
    result = run(outer, curl, ["--disable-host-loopback"])
    assert result.returncode in (7, 28) and result.stdout == "", result
    link = ["ip", "-o", "link", "show", "tap0"]  # not /sys: that is still the outer's sysfs
    mtu = run(outer, link, ["--mtu=1500"])
    assert " mtu 1500 " in mtu.stdout, mtu.stderr
    assert " mtu 65520 " in run(outer, link).stdout


def test_a_daemon_that_fails_to_start_is_reported_and_cmd_never_runs(outer: Outer) -> None:
    result = run(outer, ["sh", "-c", "echo ran"], ["--api-socket=/nonexistent/dir/api.sock"])
    assert (result.returncode, result.stdout) == (1, "")
    assert "pyslirp4netns run: the daemon failed (status 1)\n" in result.stderr, result.stderr


@pytest.mark.parametrize("user", USERS, indirect=True)
def test_nothing_is_left_behind(
    outer: Outer, user: User | None, tmpdir_for: Callable[[], Path]
) -> None:
    """No daemon, no process in the namespace (a background job of CMD included), no file, no
    mount in the host namespaces."""
    scratch = tmpdir_for()
    if user is not None:
        os.chown(scratch, user.uid, user.gid)
    tmp_before = owned_in_tmp(user)
    mounts_before = mounts(outer.pid)
    script = "echo $$; readlink /proc/self/ns/net; sleep 300 & echo $!"
    result = run(outer, ["sh", "-c", script], user=user, env={**os.environ, "TMPDIR": str(scratch)})
    assert result.returncode == 0, result.stderr
    cmd_pid, netns, background = result.stdout.split()
    assert netns != os.readlink(f"/proc/{outer.pid}/ns/net")
    assert in_netns(netns) == []  # the background sleep too: the namespace is gone
    assert not is_alive(int(background))
    assert daemons_serving(int(cmd_pid)) == []
    assert list(scratch.iterdir()) == []
    assert owned_in_tmp(user) == tmp_before
    assert mounts(outer.pid) == mounts_before
