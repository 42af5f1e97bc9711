"""Differential runtime tests: the same scenario against Debian's slirp4netns and against us.

Each scenario runs both binaries in the rig (a loopback-only outer namespace; fresh guests) and
compares exit status, stdout and stderr, with only what legitimately differs normalised (fd
numbers in log lines; our deliberate ``vnet_hdr on`` offload, listed in the man page).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable

import pytest

from tests.rig import NO_SUCH_PID, REFERENCE, Daemon, Guest, link_details, start_ready

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(not os.path.exists(REFERENCE), reason=f"{REFERENCE} not installed"),
]
OURS = None  # rig default: this checkout's pyslirp4netns
BINARIES = [pytest.param(REFERENCE, id="slirp4netns"), pytest.param(OURS, id="pyslirp4netns")]


def program(which: str | None) -> list[str] | None:
    return [which] if which else None


def outcome(daemon: Daemon, timeout: float = 20) -> tuple[int, str, str]:
    rc = daemon.wait(timeout)
    return rc, daemon.stdout, re.sub(r"tapfd=\d+", "tapfd=N", daemon.stderr)


def run_both(scenario: Callable[[list[str] | None], tuple[int, str, str]]) -> tuple[object, object]:
    return scenario(program(REFERENCE)), scenario(program(OURS))


# --- error rows of contract §1.5 that need a run ------------------------------------------


def test_nonexistent_pid(make_daemon) -> None:
    ref, ours = run_both(lambda p: outcome(make_daemon([NO_SUCH_PID, "tap0"], program=p)))
    assert (
        ours
        == ref
        == (1, "", f"/proc/{NO_SUCH_PID}/ns/net: No such file or directory\nchild failed(1)\n")
    )


def test_path_that_is_not_a_netns(make_daemon) -> None:
    args = ["--netns-type=path", "/etc/passwd", "tap0"]
    ref, ours = run_both(lambda p: outcome(make_daemon(args, program=p)))
    assert ours == ref == (1, "", "setns(CLONE_NEWNET): Invalid argument\nchild failed(1)\n")


def test_tapname_of_a_non_tap_device(make_guest, make_daemon) -> None:
    def scenario(p: list[str] | None) -> tuple[int, str, str]:
        guest = make_guest()
        return outcome(make_daemon([str(guest.pid), "lo"], program=p))

    ref, ours = run_both(scenario)
    assert ours == ref == (1, "", "ioctl(TUNSETIFF): Invalid argument\nchild failed(1)\n")


def test_second_instance_on_a_busy_tap(make_guest, make_daemon) -> None:
    def scenario(p: list[str] | None) -> tuple[int, str, str]:
        guest = make_guest()
        first = start_ready(make_daemon, ["-r", "3", str(guest.pid), "tap0"], program=p)
        result = outcome(make_daemon([str(guest.pid), "tap0"], program=p))
        first.close()
        return result

    ref, ours = run_both(scenario)
    assert ours == ref
    assert ref[2].endswith("ioctl(TUNSETIFF): Device or resource busy\nchild failed(1)\n")


def test_rootless_path_mode_without_userns(make_guest, make_daemon, unpriv) -> None:
    def scenario(p: list[str] | None) -> tuple[int, str, str]:
        guest = make_guest(rootless=True, user=unpriv)
        args = ["--netns-type=path", f"/proc/{guest.pid}/ns/net", "tap0"]
        return outcome(make_daemon(args, program=p, user=unpriv))

    ref, ours = run_both(scenario)
    assert ours == ref == (1, "", "setns(CLONE_NEWNET): Operation not permitted\nchild failed(1)\n")


# --- a normal run: banner, log lines, configuration -----------------------------------------


def configured_run(
    make_guest, make_daemon, pipes, p: list[str] | None, args: list[str], rootless: bool, outer
) -> tuple[tuple[int, str, str], dict[str, str]]:
    guest: Guest = make_guest(rootless=rootless)
    sock = outer.dir / f"cmp-{len(args)}-{rootless}-{bool(p)}.sock"
    exit_r, exit_w = pipes()
    daemon = start_ready(
        make_daemon,
        [*args, "-a", str(sock), "-e", "3", "-r", "4", str(guest.pid), "tap0"],
        ready_fd=4,
        fds={3: exit_r},
        program=p,
    )
    time.sleep(2.5)  # IPv6 DAD settles the link-local address the same way for both
    state = {
        "addr": guest.run(["ip", "-d", "addr"]).stdout.decode(),
        "route": guest.run(["ip", "route"]).stdout.decode(),
        "route -d": guest.run(["ip", "-d", "route"]).stdout.decode(),
        "route6": guest.run(["ip", "-6", "route"]).stdout.decode(),
    }
    os.close(exit_w)
    result = outcome(daemon)
    assert not sock.exists(), "a clean exit removes the API socket"
    # Deliberate difference (man page, COMPATIBILITY): our tap carries a virtio-net header.
    state = {k: link_details(v).replace("vnet_hdr on", "vnet_hdr off") for k, v in state.items()}
    return (result[0], result[1].replace(str(sock), "SOCK"), result[2]), state


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["-c"], id="defaults"),
        pytest.param(
            ["-c", "--cidr=10.5.0.0/16", "--mtu=65520", "--macaddress=0e:d4:18:d9:38:fb"],
            id="cidr16-mtu65520-mac",
        ),
        pytest.param(["-c", "--cidr=10.0.135.128/25", "--disable-host-loopback"], id="cidr25"),
        pytest.param(["--mtu=9000", "--cidr=10.7.0.0/24"], id="no-configure"),
    ],
)
@pytest.mark.parametrize("rootless", [False, True], ids=["root", "rootless"])
def test_configure_and_banner_match(make_guest, make_daemon, pipes, outer, args, rootless) -> None:
    ref = configured_run(make_guest, make_daemon, pipes, program(REFERENCE), args, rootless, outer)
    ours = configured_run(make_guest, make_daemon, pipes, program(OURS), args, rootless, outer)
    assert ours[1] == ref[1]
    assert ours[0] == ref[0]
    assert ref[0][0] == 0


def test_rootless_sandbox_in_path_mode_joins_the_userns_path(make_guest, make_daemon, unpriv):
    """slirp4netns joins no user namespace for the sandbox in path mode, so an unprivileged
    caller's setegid(0) fails; ours joins the one --userns-path names (man page, COMPATIBILITY)."""

    def args(guest: Guest) -> list[str]:
        return [
            "--enable-sandbox",
            "--netns-type=path",
            f"--userns-path=/proc/{guest.pid}/ns/user",
            f"/proc/{guest.pid}/ns/net",
            "tap0",
        ]

    guest = make_guest(rootless=True, user=unpriv)
    rc, _, err = outcome(make_daemon(args(guest), program=program(REFERENCE), user=unpriv))
    assert rc == 1 and err.endswith("setegid(0)\nparent failed\n"), err
    guest = make_guest(rootless=True, user=unpriv)
    daemon = start_ready(make_daemon, ["-r", "3", *args(guest)], user=unpriv)
    assert {"etc", "run"} <= set(os.listdir(f"/proc/{daemon.pid}/root"))
    assert "NoNewPrivs:\t1" in open(f"/proc/{daemon.pid}/status").read()
