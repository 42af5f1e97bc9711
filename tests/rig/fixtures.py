"""pytest fixtures over the rig; imported by tests/conftest.py and compat/conftest.py."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from .namespaces import Background, Daemon, Guest, Outer, User, start_ready


@pytest.fixture(scope="session")
def outer() -> Iterator[Outer]:
    """One loopback-only "host" namespace for the session; guests are per test."""
    if os.geteuid() != 0:
        pytest.skip("namespace tests need root")
    ns = Outer()
    try:
        yield ns
    finally:
        ns.close()


@pytest.fixture(scope="session")
def unpriv() -> User:
    """The real unprivileged user tests/setup.sh creates; on CI its absence is a failure."""
    user = User.lookup()
    if user is None:
        if os.environ.get("CI"):
            pytest.fail("CI must create the unprivileged test user (see tests/setup.sh)")
        pytest.skip("no unprivileged test user (run tests/setup.sh as root)")
    return user


@pytest.fixture
def make_guest(outer: Outer) -> Iterator[Callable[..., Guest]]:
    guests: list[Guest] = []

    def make(rootless: bool = True, user: User | None = None) -> Guest:
        guest = Guest(outer, rootless=rootless, user=user)
        guests.append(guest)
        return guest

    try:
        yield make
    finally:
        for guest in guests:
            guest.close()


@pytest.fixture
def make_daemon(outer: Outer) -> Iterator[Callable[..., Daemon]]:
    daemons: list[Daemon] = []

    def make(args: list[str], **kwargs: Any) -> Daemon:
        daemon = Daemon(outer, args, **kwargs)
        daemons.append(daemon)
        return daemon

    try:
        yield make
    finally:
        for daemon in daemons:
            daemon.close()


@pytest.fixture
def pipes() -> Iterator[Callable[[], tuple[int, int]]]:
    """os.pipe() pairs closed at teardown whatever the test did with them."""
    made: list[int] = []

    def make() -> tuple[int, int]:
        r, w = os.pipe()
        made.extend((r, w))
        return r, w

    try:
        yield make
    finally:
        for fd in made:
            try:
                os.close(fd)
            except OSError:
                pass


@pytest.fixture
def slirp(
    make_guest: Callable[..., Guest], make_daemon: Callable[..., Daemon]
) -> Callable[..., tuple[Guest, Daemon]]:
    """start(program=None, extra=(), rootless=True, user=None, env=None): a guest with a
    configured tap0 (``-c``) behind a daemon that has written its ready byte."""

    def start(
        program: list[str] | None = None,
        extra: tuple[str, ...] | list[str] = (),
        rootless: bool = True,
        user: User | None = None,
        env: dict[str, str] | None = None,
    ) -> tuple[Guest, Daemon]:
        guest = make_guest(rootless=rootless, user=user)
        args = [*extra, "-c", "-r", "3", str(guest.pid), "tap0"]
        daemon = start_ready(make_daemon, args, program=program, user=user, env=env)
        return guest, daemon

    return start


@pytest.fixture
def api_dir() -> Iterator[Path]:
    """A short directory for API sockets (sun_path holds 107 bytes), readable in Outer."""
    path = Path(tempfile.mkdtemp(prefix="api-", dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def api_path(api_dir: Path) -> str:
    """The API socket's path (``-a``) inside ``api_dir``."""
    return str(api_dir / "api.sock")


@pytest.fixture
def background() -> Iterator[list[Background]]:
    """Processes a test starts and leaves running: each closed (ended by PID) afterwards."""
    started: list[Background] = []
    yield started
    for process in started:
        process.close()
