"""Lifecycle: ready fd, exit fd (every case of contract §4.3), signals, target death, SIGKILL."""

from __future__ import annotations

import os
import signal
import socket
import time

import psutil
import pytest

from tests.rig import Daemon, start_ready

pytestmark = pytest.mark.timeout(120)

STAYS_UP = 1.0  # how long "keeps running" is watched


def started(make_guest, make_daemon, extra: list[str], fds: dict[int, int], **kw) -> Daemon:  # type: ignore[no-untyped-def]
    guest = make_guest()
    args = [*extra, "-r", "9", str(guest.pid), "tap0"]
    daemon = start_ready(make_daemon, args, ready_fd=9, fds=fds, **kw)
    daemon.guest = guest  # type: ignore[attr-defined]
    return daemon


def assert_runs_on(daemon: Daemon) -> None:
    time.sleep(STAYS_UP)
    assert daemon.poll() is None, daemon.stderr


def assert_clean_exit(daemon: Daemon, reason: str) -> None:
    assert daemon.wait(5) == 0, daemon.stderr
    assert daemon.stderr.endswith(f"{reason}\ndo_slirp is exiting\n"), daemon.stderr
    assert daemon.leftovers() == []


def test_exit_fd_pipe_writer_closes(make_guest, make_daemon, pipes) -> None:
    r, w = pipes()
    daemon = started(make_guest, make_daemon, ["-e", "3"], {3: r})
    os.write(w, b"data does not end the run")
    assert_runs_on(daemon)
    os.close(w)
    assert_clean_exit(daemon, "exitfd event")


def test_exit_fd_socketpair(make_guest, make_daemon) -> None:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        daemon = started(make_guest, make_daemon, ["-e", "3"], {3: theirs.fileno()})
        theirs.close()
        ours.shutdown(socket.SHUT_WR)  # half-close: slirp4netns keeps running
        assert_runs_on(daemon)
        ours.close()
        assert_clean_exit(daemon, "exitfd event")


def test_exit_fd_not_open_exits_at_once(make_guest, make_daemon) -> None:
    """POLLNVAL: an exit fd that is not open ends the run right after ready."""
    daemon = started(make_guest, make_daemon, ["-e", "7"], {})
    assert_clean_exit(daemon, "exitfd event")


def test_exit_fd_devnull_never_fires(make_guest, make_daemon) -> None:
    null = os.open(os.devnull, os.O_RDONLY)
    try:
        daemon = started(make_guest, make_daemon, ["-e", "3"], {3: null})
    finally:
        os.close(null)
    assert_runs_on(daemon)
    daemon.signal(signal.SIGTERM)
    assert_clean_exit(daemon, "SIGTERM received")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
def test_signal_exits_cleanly_and_removes_api_socket(
    make_guest, make_daemon, outer, signum: int
) -> None:
    sock = outer.dir / f"sig-{os.getpid()}-{signum}.sock"
    daemon = started(make_guest, make_daemon, ["-a", str(sock)], {})
    assert sock.exists()
    daemon.signal(signum)
    assert_clean_exit(daemon, f"{signal.Signals(signum).name} received")
    assert not sock.exists()


@pytest.mark.parametrize("rootless", [False, True], ids=["root-guest", "rootless-guest"])
def test_target_death_ends_the_run(make_guest, make_daemon, rootless: bool) -> None:
    """Better than slirp4netns (which idles forever): exit 0 within 2 s, one log line."""
    guest = make_guest(rootless=rootless)
    daemon = start_ready(make_daemon, ["-c", "-r", "3", str(guest.pid), "tap0"])
    guest.close()
    started_at = time.monotonic()
    assert daemon.wait(2) == 0, daemon.stderr
    assert time.monotonic() - started_at < 2
    assert daemon.stderr.endswith(f"target process {guest.pid} exited\ndo_slirp is exiting\n"), (
        daemon.stderr
    )


def test_sigkill_leaves_nothing_behind(make_guest, make_daemon, unpriv) -> None:
    guest = make_guest(rootless=True, user=unpriv)
    daemon = start_ready(make_daemon, ["-c", "-r", "3", str(guest.pid), "tap0"], user=unpriv)
    daemon.remember_descendants()
    daemon.signal(signal.SIGKILL)
    assert daemon.wait(5) == -signal.SIGKILL
    assert daemon.leftovers() == []
    # the non-persistent tap went away with its only fd
    assert "tap0" not in guest.run(["ip", "-o", "link"]).stdout.decode()


def test_idle_cpu_is_near_zero(make_guest, make_daemon) -> None:
    daemon = started(make_guest, make_daemon, ["-c"], {})
    proc = psutil.Process(daemon.pid)
    before = proc.cpu_times()
    time.sleep(2)
    after = proc.cpu_times()
    used = (after.user + after.system) - (before.user + before.system)
    assert used < 0.05, f"{used:.3f} s of CPU in 2 s idle"


def test_ready_fd_is_not_written_on_failure(make_guest, make_daemon, outer) -> None:
    """An API path of 108 bytes fails after the tap exists: EOF on the ready fd, never b"1"."""
    guest = make_guest()
    long_path = str(outer.dir / ("x" * (108 - len(str(outer.dir)) - 1)))
    assert len(long_path) == 108
    args = ["-a", long_path, "-r", "3", str(guest.pid), "tap0"]
    daemon = start_ready(make_daemon, args, expect=b"")
    assert daemon.wait(10) == 1
    assert daemon.stderr.endswith(
        "the specified API socket path is too long (>= 108)\n"
        "do_slirp is exiting\ndo_slirp failed\nparent failed\n"
    ), daemon.stderr


def test_ready_comes_after_the_api_socket_listens(make_guest, make_daemon, outer) -> None:
    sock = outer.dir / f"order-{os.getpid()}.sock"
    daemon = started(make_guest, make_daemon, ["-a", str(sock)], {})
    client = socket.socket(socket.AF_UNIX)
    with client:
        client.settimeout(5)
        client.connect(str(sock))  # no retry: it must already be listening
    assert daemon.poll() is None
