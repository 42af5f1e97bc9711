"""Start-up for real: each consumer's exact argv against a real namespace reaches ready.

Every daemon runs inside the loopback-only outer namespace of the rig (tests/rig/).
"""

from __future__ import annotations

import os
import shlex
import signal
import stat
import threading
from pathlib import Path

import pytest

from pyslirp4netns.shell import netns
from tests.rig import Guest, Outer, User, binary, start_ready, wait_until

pytestmark = pytest.mark.timeout(120)


def tap_details(guest: Guest, name: str = "tap0") -> str:
    return guest.run(["ip", "-d", "link", "show", name]).stdout.decode()


def assert_configured(guest: Guest, mtu: int, vnet_hdr: str = "on") -> None:
    link = tap_details(guest)
    assert "<BROADCAST,UP,LOWER_UP>" in link, link
    assert f"mtu {mtu} " in link, link
    assert f"vnet_hdr {vnet_hdr}" in link, link
    addr = guest.run(["ip", "-4", "addr", "show", "tap0"]).stdout.decode()
    assert "inet 10.0.2.100/24 brd 10.0.2.255 scope global tap0" in addr, addr
    route = guest.run(["ip", "route"]).stdout.decode()
    assert "default via 10.0.2.2 dev tap0" in route, route


@pytest.mark.parametrize("rootless", [False, True], ids=["root-guest", "rootless-guest"])
def test_configure_pid_mode_as_root(make_guest, make_daemon, rootless: bool) -> None:
    guest = make_guest(rootless=rootless)
    daemon = start_ready(make_daemon, ["-c", "-r", "3", str(guest.pid), "tap0"])
    assert_configured(guest, 1500)
    assert "sent tapfd=" in daemon.stderr and "received tapfd=" in daemon.stderr
    # (RIG_HARDENED=1: --enable-seccomp's warning comes first, as in slirp4netns)
    banner = daemon.stdout.removeprefix("WARNING: Support for seccomp is experimental\n")
    assert banner.startswith("Starting slirp\n* MTU:             1500\n"), daemon.stdout
    assert daemon.poll() is None


def test_rootlesskit_argv_as_unprivileged_user(
    make_guest, make_daemon, unpriv: User, outer: Outer
) -> None:
    """rootlesskit 1.1.0: pre-created persistent tap0, up, no -c; we must join the userns."""
    guest = make_guest(rootless=True, user=unpriv)
    guest.run(["ip", "tuntap", "add", "name", "tap0", "mode", "tap"])
    guest.run(["ip", "link", "set", "tap0", "up"])
    sock_dir = outer.dir / f"rlk-{os.getpid()}"
    sock_dir.mkdir(mode=0o700)
    os.chown(sock_dir, unpriv.uid, unpriv.gid)
    sock = sock_dir / ".s4nn.sock"
    args = ["--mtu", "65520", "-r", "3", "--disable-host-loopback", "--api-socket", str(sock)]
    daemon = start_ready(make_daemon, [*args, str(guest.pid), "tap0"], user=unpriv)
    # ready means the API socket is already listening (rootlesskit connects right away)
    assert stat.S_ISSOCK(os.stat(sock).st_mode)
    assert "vnet_hdr on" in tap_details(guest), "the pre-created tap must take the offload flags"
    assert os.stat(f"/proc/{daemon.pid}").st_uid == unpriv.uid
    # rootlesskit stops us with SIGKILL: nothing of ours may survive it
    daemon.remember_descendants()
    daemon.signal(signal.SIGKILL)
    daemon.wait(10)
    assert daemon.leftovers() == []


PODMAN_ARGS = (
    "--disable-host-loopback --mtu=65520 --enable-sandbox --enable-seccomp --enable-ipv6 "
    "-c -e 3 -r 4 --netns-type=path"
)


def test_podman_argv_as_root_of_a_user_namespace(
    make_daemon, pipes, unpriv: User, outer: Outer
) -> None:
    """podman 4.3.1: uid 0 in its rootless userns, a bind-mounted netns path, -e 3 -r 4."""
    work = outer.dir / f"podman-{os.getpid()}"
    work.mkdir(mode=0o755)
    os.chown(work, unpriv.uid, unpriv.gid)
    nspath = work / "netns"
    holder = work / "holder.pid"
    # Inside `unshare -Urm` (as the unprivileged user): make the netns file like podman does,
    # keep a process in that netns for the test to inspect with, then exec the daemon with the
    # inherited fds 3 and 4 (the shell keeps them open across exec).
    program = " ".join(shlex.quote(p) for p in binary())
    script = (
        f"touch {nspath} && unshare --net={nspath} true && "
        f"(nsenter --net={nspath} sleep 600 3<&- 4<&- & echo $! > {holder}) && "
        f"exec {program} {PODMAN_ARGS} {nspath} tap0"
    )
    exit_r, exit_w = pipes()
    daemon = start_ready(
        make_daemon,
        [],
        ready_fd=4,  # -r 4 is in the script's PODMAN_ARGS
        fds={3: exit_r},
        user=unpriv,
        program=["unshare", "-Urm", "--propagation", "private", "sh", "-c", script],
    )
    wait_until(holder.exists, 10, "the holder pid file")
    sleeper = int(holder.read_text())
    # The daemon is uid 0 of the user namespace `unshare -Ur` made; the tap lives in the netns.
    guest_view = ["nsenter", "-t", str(sleeper), "-U", "--preserve-credentials", "-n"]
    link = outer.run([*guest_view, "ip", "-d", "link", "show", "tap0"]).stdout.decode()
    assert "vnet_hdr on" in link and "mtu 65520" in link, link
    route = outer.run([*guest_view, "ip", "route"]).stdout.decode()
    assert "default via 10.0.2.2 dev tap0" in route, route
    # podman ends us through the exit fd: conmon's writer end closes.
    os.close(exit_w)
    assert daemon.wait(10) == 0, daemon.stderr
    assert "exitfd event" in daemon.stderr
    os.kill(sleeper, signal.SIGKILL)


def test_offload_can_be_turned_off(make_guest, make_daemon) -> None:
    guest = make_guest()
    env = {"PYSLIRP4NETNS_OFFLOAD": "0"}
    start_ready(make_daemon, ["-c", "-r", "3", str(guest.pid), "tap0"], env=env)
    assert_configured(guest, 1500, vnet_hdr="off")


def open_tap_in(guest: Guest, name: str) -> netns.Tap:
    """Open a tap inside the guest from a thread of this process (as tapfd callers do)."""
    result: list[netns.Tap] = []

    def work() -> None:
        netns._join(f"/proc/{guest.pid}/ns/net", netns.CLONE_NEWNET, "setns")
        result.append(netns.open_tap(name, want_offload=True)[0])

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(10)
    return result[0]


def test_tapfd_mode_uses_the_inherited_tap(make_guest, make_daemon) -> None:
    """slirp4netns 1.3.0's --netns-type=tapfd: no namespace join, no sent/received lines."""
    guest = make_guest(rootless=False)
    tap = open_tap_in(guest, "tapx")
    try:
        daemon = start_ready(make_daemon, ["--netns-type=tapfd", "-r", "3", "5"], fds={5: tap.fd})
    finally:
        os.close(tap.fd)
    assert "tapfd=" not in daemon.stderr
    # The tap is still attached (to the daemon): a second attach is refused as busy.
    assert "vnet_hdr on" in tap_details(guest, "tapx")
    daemon.signal(signal.SIGTERM)
    assert daemon.wait(10) == 0


def test_tapfd_mode_accepts_configure_and_ignores_it(make_guest, make_daemon) -> None:
    """slirp4netns 1.3.0: -c with --netns-type=tapfd is silently without effect."""
    guest = make_guest(rootless=False)
    tap = open_tap_in(guest, "tapx")
    try:
        args = ["-c", "--netns-type=tapfd", "-r", "3", "5"]
        daemon = start_ready(make_daemon, args, fds={5: tap.fd})
    finally:
        os.close(tap.fd)
    assert "tapfd=" not in daemon.stderr and "cannot" not in daemon.stderr, daemon.stderr
    link = tap_details(guest, "tapx")
    assert "UP" not in link.split(">")[0] and "mtu 1500 " in link, link  # left as it was
    assert "inet " not in guest.run(["ip", "-4", "addr", "show", "tapx"]).stdout.decode()
    assert "10.0.2.2" not in guest.run(["ip", "route"]).stdout.decode()
    assert "UP" not in tap_details(guest, "lo").split(">")[0]  # -c would bring lo up too
    assert daemon.poll() is None
    daemon.signal(signal.SIGTERM)
    assert daemon.wait(10) == 0


def test_unix_socket_api_path_removed_and_replaced(make_guest, make_daemon, outer) -> None:
    """An existing file at --api-socket is replaced; a clean exit removes the socket."""
    guest = make_guest()
    sock = outer.dir / f"api-{os.getpid()}.sock"
    Path(sock).write_text("stale")
    daemon = start_ready(make_daemon, ["-a", str(sock), "-r", "3", str(guest.pid), "tap0"])
    assert stat.S_ISSOCK(os.stat(sock).st_mode)
    assert f"* API Socket:      {sock}\n" in daemon.stdout
    daemon.signal(signal.SIGTERM)
    assert daemon.wait(10) == 0
    assert not sock.exists()
