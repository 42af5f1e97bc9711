"""--enable-sandbox, --enable-seccomp and --target-type=bess, each observed from outside.

The rest of the suite runs again with both hardening flags on (RIG_HARDENED=1 in .ci/run), so
every path after the pivot (DNS, DHCP, forwards added over the API, IPv6, ICMP errors, the
resolv.conf watcher, the exit paths) is exercised there; these tests check what the sandbox
and the filter themselves promise.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.rig import (
    CHECKOUT,
    HARDENED,
    TCP_TOOL,
    UDP_CLIENT,
    UDP_SERVER,
    Background,
    Daemon,
    Guest,
    Outer,
    User,
    api_request,
    start_ready,
)
from tests.rig.clients import free_port

pytestmark = pytest.mark.timeout(180)

BESS_RELAY = [sys.executable, str(CHECKOUT / "tests" / "tools" / "bess_relay.py")]
NET_BIND_SERVICE = 0x400
GATEWAY_MAC = bytes.fromhex("52550a000202")
GUEST_MAC = bytes.fromhex("020000000001")


def status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {k: v.strip() for k, _, v in (line.partition(":") for line in lines)}


def udp_round_trip(outer: Outer, guest: Guest, payload: str = "through") -> str:
    echo = Background(outer.prefix(), [*UDP_SERVER, "echo"])
    try:
        argv = [*UDP_CLIENT, "once", "10.0.2.2", echo.line, "--payload", payload]
        return guest.run(argv, timeout=20).stdout.decode().strip()
    finally:
        echo.close()


@pytest.fixture
def shared_submount(outer: Outer) -> str:
    """An rshared mount under the caller's /run, as systemd and podman leave them."""
    point = f"/run/pyslirp4netns-shared-{os.getpid()}"
    outer.run(["mkdir", "-p", point])
    outer.run(["mount", "-t", "tmpfs", "-o", "size=16k", "shared-probe", point])
    outer.run(["mount", "--make-rshared", point])
    yield point
    outer.run(["umount", point], check=False)
    outer.run(["rmdir", point], check=False)


@pytest.mark.parametrize("rootless", [False, True], ids=["root", "rootless"])
def test_sandbox_keeps_etc_run_and_one_capability(
    outer, make_guest, make_daemon, unpriv, api_dir, shared_submount, rootless
) -> None:
    user: User | None = unpriv if rootless else None
    if user is not None:
        os.chown(api_dir, user.uid, user.gid)
    guest = make_guest(rootless=rootless, user=user)
    sock = api_dir / "api.sock"
    args = ["--enable-sandbox", "-c", "-a", str(sock), "-r", "3", str(guest.pid), "tap0"]
    daemon = start_ready(make_daemon, args, user=user)

    root = set(os.listdir(f"/proc/{daemon.pid}/root"))
    assert {"etc", "run"} <= root and not {"home", "root", "var", "usr", "tmp"} & root, root
    caps = subprocess.run(["getpcaps", str(daemon.pid)], capture_output=True, text=True)
    named = (caps.stdout + caps.stderr).split(":", 1)[-1].strip()
    assert named == "cap_net_bind_service=eip", named
    st = status(daemon.pid)
    assert st["NoNewPrivs"] == "1"
    for field in ("CapEff", "CapPrm", "CapInh", "CapBnd"):
        assert int(st[field], 16) == NET_BIND_SERVICE, (field, st[field])
    assert int(st["CapAmb"], 16) == 0
    assert "tap0" in guest.sh("ip -a netconf show dev tap0")

    # After the pivot: traffic, and the API adds a forward (a new listening socket).
    assert udp_round_trip(outer, guest) == "through"
    port = free_port(outer)
    rule = {"proto": "tcp", "host_addr": "127.0.0.1", "host_port": port, "guest_port": 80}
    reply = json.loads(api_request(str(sock), {"execute": "add_hostfwd", "arguments": rule}))
    assert "id" in reply.get("return", {}), reply
    connected = outer.run([*TCP_TOOL, "connect", "127.0.0.1", str(port)]).stdout.decode()
    # The new listener accepts (a missing one would refuse). Nothing listens on the guest's
    # port 80, so the guest's reset can overtake connect() on a busy machine: fine too.
    assert connected.split()[0] in ("connected", "ConnectionResetError"), connected

    daemon.signal(signal.SIGTERM)
    assert daemon.wait(10) == 0, daemon.stderr
    assert not sock.exists(), "the API socket is removed at exit, even from inside the sandbox"
    assert outer.run(["findmnt", shared_submount], check=False).returncode == 0


def test_sandbox_binds_a_resolv_conf_that_lives_outside_etc(outer, make_guest, make_daemon) -> None:
    """slirp4netns 1.2.1+: /etc/resolv.conf -> a file elsewhere is bound at its own path, so
    DNS still works from inside the sandbox. The daemon gets a mount namespace of its own in
    which /etc holds only that symlink."""
    dns = Background(outer.prefix(), [*UDP_SERVER, "dns", "--port", "53", "--answer", "192.0.2.77"])
    target = "/var/tmp/pyslirp4netns-resolv/resolv.conf"
    script = (
        f"mkdir -p {os.path.dirname(target)} && echo 'nameserver 127.0.0.1' > {target}"
        f' && mount -t tmpfs etc /etc && ln -s {target} /etc/resolv.conf && exec "$@"'
    )
    wrap = ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh"]
    guest = make_guest(rootless=False)
    try:
        args = ["--enable-sandbox", "-c", "-r", "3", str(guest.pid), "tap0"]
        daemon = start_ready(make_daemon, args, wrap=wrap)
        assert f"sandbox: /etc/resolv.conf (-> {target}) seems a symlink to a file outside" in (
            daemon.stderr
        )
        assert Path(f"/proc/{daemon.pid}/root{target}").read_text() == "nameserver 127.0.0.1\n"
        answer = guest.run([*UDP_CLIENT, "dns", "10.0.2.3", "53"]).stdout.decode().strip()
        assert answer == "192.0.2.77"
    finally:
        dns.close()
        outer.run(["rm", "-rf", os.path.dirname(target)], check=False)


@pytest.fixture
def seccomp_daemon(outer, make_guest, make_daemon, api_dir):  # type: ignore[no-untyped-def]
    def start(call: str, *flags: str) -> tuple[Guest, Daemon, Path]:
        guest = make_guest(rootless=False)
        sock = api_dir / f"{call}.sock"
        args = [*flags, "-c", "-a", str(sock), "-r", "3", str(guest.pid), "tap0"]
        env = {"PYSLIRP4NETNS_TEST_SYSCALL": call}
        return guest, start_ready(make_daemon, args, env=env), sock

    return start


@pytest.mark.parametrize("call", ["execve", "ptrace", "mount"])
@pytest.mark.parametrize("flags", [["--enable-seccomp"], ["--enable-seccomp", "--enable-sandbox"]])
def test_seccomp_kills_the_daemon_on_a_forbidden_syscall(
    outer, seccomp_daemon, call, flags
) -> None:
    guest, daemon, sock = seccomp_daemon(call, *flags)
    st = status(daemon.pid)
    assert st["Seccomp"] == "2" and st["NoNewPrivs"] == "1", st
    blocked = "seccomp: The following syscalls are blocked: execve lookup_dcookie"
    assert blocked in daemon.stdout
    assert udp_round_trip(outer, guest) == "through"
    assert json.loads(api_request(str(sock), {"execute": "list_hostfwd"})) == {"entries": []}
    daemon.signal(signal.SIGUSR2)
    assert daemon.wait(10) == -signal.SIGSYS, daemon.stderr


@pytest.mark.skipif(HARDENED, reason="the control needs a daemon without the filter")
def test_without_seccomp_the_trigger_really_calls_execve(seccomp_daemon) -> None:
    """The control: the same trigger without the filter execs /bin/true, which exits 0."""
    _, daemon, _ = seccomp_daemon("execve")
    daemon.signal(signal.SIGUSR2)
    assert daemon.wait(10) == 0


def test_sandbox_and_seccomp_cost_little_start_up_time(outer, make_guest, make_daemon) -> None:
    """Printed, not asserted (timings belong to benchmarks/): argv to ready byte."""
    for flags in ([], ["--enable-sandbox", "--enable-seccomp"]):
        times = []
        for _ in range(3):
            guest = make_guest(rootless=False)
            start = time.monotonic()
            daemon = start_ready(make_daemon, [*flags, "-r", "3", str(guest.pid), "tap0"])
            times.append(time.monotonic() - start)
            daemon.close()
        print(f"\nstart-up {' '.join(flags) or 'plain'}: {min(times) * 1000:.0f} ms best of 3")


# -- BESS ----------------------------------------------------------------------------------------
def arp_request() -> bytes:
    ip = socket.inet_aton
    return (
        b"\xff" * 6
        + GUEST_MAC
        + b"\x08\x06"
        + bytes.fromhex("0001080006040001")
        + GUEST_MAC
        + ip("10.0.2.100")
        + b"\0" * 6
        + ip("10.0.2.2")
    )


def test_bess_serves_one_client_after_another(outer, make_guest, make_daemon, api_dir) -> None:
    path = api_dir / "bess.sock"
    r, w = os.pipe()
    try:
        daemon = make_daemon(["--target-type=bess", "-r", "3", str(path)], fds={3: w})
    finally:
        os.close(w)
    with os.fdopen(r, "rb") as ready:
        deadline = time.monotonic() + 10
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        # Start-up waits for the first client: no ready byte before it connects.
        assert select.select([ready], [], [], 0.5)[0] == []
        assert "Waiting for connection to " + str(path) in daemon.stderr
        first = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        first.settimeout(5)
        first.connect(str(path))
        assert select.select([ready], [], [], 10)[0] and ready.read() == b"1"

    # First client, by hand: a malformed message is dropped, the ARP after it answered.
    with first:
        first.send(b"\x01\x02 not a frame")
        first.send(arp_request())
        reply = first.recv(65536)
        assert reply[:6] == GUEST_MAC and reply[6:12] == GATEWAY_MAC and reply[12:14] == b"\x08\x06"
        assert reply[28:32] == socket.inet_aton("10.0.2.2")
    assert 'sent "tapfd"=' in daemon.stderr and "(not really TAP) for" in daemon.stderr

    # Second client: a kernel interface behind a relay, as User Mode Linux is. ARP, ping and
    # TCP through to a host loopback server.
    guest = make_guest(rootless=False)
    relay = Background(outer.prefix() + guest.prefix(), [*BESS_RELAY, str(path)])
    server = Background(outer.prefix(), [*TCP_TOOL, "serve", "echo"])
    try:
        ping = guest.run(["busybox", "ping", "-c", "2", "-W", "3", "10.0.2.2"], check=False)
        assert ping.returncode == 0, ping.stdout + ping.stderr
        echoed = guest.run([*TCP_TOOL, "echo", "10.0.2.2", server.line, "--size", "200000"])
        assert echoed.stdout.decode().strip() == "ok 1"
        assert "52:55:0a:00:02:02" in guest.sh("ip neigh show dev bess0")
    finally:
        server.close()
        relay.close()
    daemon.signal(signal.SIGTERM)
    assert daemon.wait(10) == 0, daemon.stderr
    assert daemon.stderr.count("BESS client connected") == 1
    assert not path.exists()
