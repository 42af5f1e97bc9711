"""--port-forward-mode=splice (our extension): API TCP forwards joined by splice(2) to a socket
created inside the guest's network namespace and connected there to the rule's guest address.

What is checked from outside: bytes arrive unchanged both ways, the guest sees its own address
as the peer, FIN goes each way on its own, refusals and resets reach the other side promptly,
50 connections at once work and leave no fd behind, rootless and hardened daemons work, and
the namespace helper goes away with the daemon.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import psutil
import pytest

from tests.rig import (
    TCP_TOOL,
    UDP_CLIENT,
    UDP_SERVER,
    Background,
    Daemon,
    Guest,
    Outer,
    User,
    add_hostfwd,
    start_ready,
    wait_until,
)

pytestmark = pytest.mark.timeout(180)

SPLICE = "--port-forward-mode=splice"

# Host side: N bytes of os.urandom sent while the echo comes back, then SHUT_WR; prints
# "<sent sha256> <received bytes> <received sha256>".
ROUND_TRIP = """\
import hashlib, os, socket, sys, threading
host, port, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
data = os.urandom(size)
s = socket.create_connection((host, port), timeout=30)
def send():
    s.sendall(data)
    s.shutdown(socket.SHUT_WR)
t = threading.Thread(target=send)
t.start()
got = bytearray()
while chunk := s.recv(1 << 20):
    got += chunk
t.join(30)
print(hashlib.sha256(data).hexdigest(), len(got), hashlib.sha256(got).hexdigest())
"""

# Guest side, one connection: send N random bytes, SHUT_WR, then read to EOF; prints
# "<sent sha256> <received bytes> <received sha256>" and exits.
SEND_THEN_READ = """\
import hashlib, os, socket, sys
port, size = int(sys.argv[1]), int(sys.argv[2])
family = socket.AF_INET6 if len(sys.argv) > 3 else socket.AF_INET
l = socket.socket(family)
l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", port))
l.listen(1)
print(port, flush=True)
c, _ = l.accept()
data = os.urandom(size)
c.sendall(data)
c.shutdown(socket.SHUT_WR)
got = bytearray()
while chunk := c.recv(1 << 20):
    got += chunk
print(hashlib.sha256(data).hexdigest(), len(got), hashlib.sha256(got).hexdigest(), flush=True)
"""

# Host side of SEND_THEN_READ: read to EOF, then send N random bytes and SHUT_WR, then wait
# for the guest's close; prints "<received bytes> <received sha256> <sent sha256> <end>".
READ_THEN_SEND = """\
import hashlib, os, socket, sys
host, port, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = socket.create_connection((host, port), timeout=30)
got = bytearray()
while chunk := s.recv(1 << 20):
    got += chunk
data = os.urandom(size)
s.sendall(data)
s.shutdown(socket.SHUT_WR)
try:
    end = "eof" if s.recv(1) == b"" else "data"
except ConnectionResetError:
    end = "reset"
print(len(got), hashlib.sha256(got).hexdigest(), hashlib.sha256(data).hexdigest(), end)
"""

# Host side: connect, then wait for the first byte; prints what happened and how long it took
# (on loopback the reset may even beat connect() back to the client).
OUTCOME = """\
import socket, sys, time
start = time.monotonic()
try:
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
    outcome = "eof" if s.recv(1) == b"" else "data"
except OSError as e:
    outcome = type(e).__name__
print(outcome, round(time.monotonic() - start, 3))
"""

# Guest side, one connection: read until EOF or an error; prints "eof" or the error's name.
REPORT = """\
import socket, sys
l = socket.socket()
l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind(("0.0.0.0", int(sys.argv[1])))
l.listen(1)
print(sys.argv[1], flush=True)
c, _ = l.accept()
try:
    while c.recv(65536):
        pass
    print("eof", flush=True)
except OSError as e:
    print(type(e).__name__, flush=True)
"""

# Host side: connect, send a byte, then close with RST.
RESET = """\
import socket, struct, sys, time
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
s.sendall(b"x")
time.sleep(0.5)
s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
s.close()
"""


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def helpers(daemon: Daemon) -> list[psutil.Process]:
    return psutil.Process(daemon.pid).children()


def in_guest(
    outer: Outer, guest: Guest, argv: list[str], background: list[Background]
) -> Background:
    process = Background(outer.prefix(guest.user) + guest.prefix(), argv)
    background.append(process)
    return process


def script(text: str, *args: object) -> list[str]:
    return [sys.executable, "-c", text, *(str(a) for a in args)]


@pytest.mark.parametrize("rootless", [True, False], ids=["unshare-Urn", "unshare-n"])
def test_four_megabytes_each_way_arrive_unchanged(
    slirp, outer, api_path, background, rootless
) -> None:
    guest, daemon = slirp(None, extra=[SPLICE, "-a", api_path], rootless=rootless)
    in_guest(outer, guest, [*TCP_TOOL, "serve", "echo", "7007", "--bind", "0.0.0.0"], background)
    add_hostfwd(api_path, "tcp", "127.0.0.1", 17007, "", 7007)
    size = 4 << 20
    out = outer.run(script(ROUND_TRIP, "127.0.0.1", 17007, size), timeout=60).stdout.split()
    sent, count, got = out[0].decode(), int(out[1]), out[2].decode()
    assert (count, got) == (size, sent), daemon.stderr
    assert len(helpers(daemon)) == 1  # the namespace helper


def test_guest_sees_its_own_address_as_the_peer(slirp, outer, api_path, background) -> None:
    guest, daemon = slirp(None, extra=[SPLICE, "-a", api_path, "--enable-ipv6"])
    guest.run(["ip", "-6", "addr", "add", "fd00::100/64", "dev", "tap0", "nodad"])
    in_guest(outer, guest, [*TCP_TOOL, "serve", "whoami", "8080", "--bind", "::"], background)
    add_hostfwd(api_path, "tcp", "127.0.0.1", 18080, "", 8080)  # "" = 10.0.2.100
    add_hostfwd(api_path, "tcp", "::1", 18086, "fd00::100", 8080)
    seen = outer.run([*TCP_TOOL, "read", "127.0.0.1", "18080"]).stdout.decode().strip()
    assert seen in ("10.0.2.100", "::ffff:10.0.2.100"), daemon.stderr
    seen6 = outer.run([*TCP_TOOL, "read", "::1", "18086"]).stdout.decode().strip()
    assert seen6 == "fd00::100", daemon.stderr


def test_host_half_close_then_guest_data(slirp, outer, api_path, background) -> None:
    """The host client's FIN reaches the guest, which then still sends (tcp_tool halfsrc)."""
    guest, daemon = slirp(None, extra=[SPLICE, "-a", api_path])
    size = 3 << 20
    in_guest(
        outer,
        guest,
        [*TCP_TOOL, "serve", "halfsrc", "9000", "--bind", "0.0.0.0", "--size", str(size)],
        background,
    )
    add_hostfwd(api_path, "tcp", "127.0.0.1", 19000, "", 9000)
    digest = outer.run([*TCP_TOOL, "digest", "-", "--size", str(size)]).stdout.decode().strip()
    out = outer.run([*TCP_TOOL, "halfsend", "127.0.0.1", "19000", "--size", str(1 << 20)])
    assert out.stdout.decode().split() == [str(size), digest], daemon.stderr


def test_guest_half_close_then_host_data(slirp, outer, api_path, background) -> None:
    """The guest's FIN reaches the host client, which then still sends; both ends close."""
    guest, daemon = slirp(None, extra=[SPLICE, "-a", api_path])
    size = 2 << 20
    server = in_guest(outer, guest, script(SEND_THEN_READ, 9100, size), background)
    add_hostfwd(api_path, "tcp", "127.0.0.1", 19100, "", 9100)
    host = outer.run(script(READ_THEN_SEND, "127.0.0.1", 19100, size), timeout=60)
    got, got_digest, sent_digest, end = host.stdout.decode().split()
    guest_sent, guest_count, guest_got = server.output(timeout=30).split()
    assert (int(got), got_digest) == (size, guest_sent), daemon.stderr
    assert (int(guest_count), guest_got) == (size, sent_digest), daemon.stderr
    assert end == "eof"


def test_refused_guest_port_resets_the_client_promptly(slirp, outer, api_path) -> None:
    guest, daemon = slirp(None, extra=[SPLICE, "-a", api_path])
    add_hostfwd(api_path, "tcp", "127.0.0.1", 19001, "", 9001)  # nothing listens there
    outcome, seconds = outer.run(script(OUTCOME, "127.0.0.1", 19001)).stdout.decode().split()
    assert outcome == "ConnectionResetError", daemon.stderr
    assert float(seconds) < 2


def test_guest_reset_resets_the_client(slirp, outer, api_path, background) -> None:
    guest, daemon = slirp(None, extra=[SPLICE, "-a", api_path])
    in_guest(outer, guest, [*TCP_TOOL, "serve", "reset", "9002", "--bind", "0.0.0.0"], background)
    add_hostfwd(api_path, "tcp", "127.0.0.1", 19002, "", 9002)
    outcome, seconds = outer.run(script(OUTCOME, "127.0.0.1", 19002)).stdout.decode().split()
    assert outcome == "ConnectionResetError", daemon.stderr
    assert float(seconds) < 2


def test_client_reset_resets_the_guest(slirp, outer, api_path, background) -> None:
    guest, daemon = slirp(None, extra=[SPLICE, "-a", api_path])
    server = in_guest(outer, guest, script(REPORT, 9003), background)
    add_hostfwd(api_path, "tcp", "127.0.0.1", 19003, "", 9003)
    outer.run(script(RESET, "127.0.0.1", 19003))
    assert server.output(timeout=10).strip() == "ConnectionResetError", daemon.stderr


def test_fifty_connections_at_once_and_no_fd_left(slirp, outer, api_path, background) -> None:
    guest, daemon = slirp(None, extra=[SPLICE, "-a", api_path])
    in_guest(outer, guest, [*TCP_TOOL, "serve", "echo", "7008", "--bind", "0.0.0.0"], background)
    add_hostfwd(api_path, "tcp", "127.0.0.1", 17008, "", 7008)
    echo = [*TCP_TOOL, "echo", "127.0.0.1", "17008", "--size", str(256 << 10)]
    assert outer.run([*echo, "--count", "1"]).stdout.decode().split() == ["ok", "1"]
    before = fd_count(daemon.pid)
    out = outer.run([*echo, "--count", "50"], timeout=120).stdout.decode().split()
    assert out == ["ok", "50"], daemon.stderr
    wait_until(lambda: fd_count(daemon.pid) <= before, 10, "the daemon's fds to go back")
    assert fd_count(daemon.pid) == before


def test_rootless_daemon_as_an_unprivileged_user(
    slirp, outer, api_dir, background, unpriv: User
) -> None:
    os.chown(api_dir, unpriv.uid, unpriv.gid)
    api_path = str(api_dir / "api.sock")
    guest, daemon = slirp(None, extra=[SPLICE, "-a", api_path], user=unpriv)
    in_guest(outer, guest, [*TCP_TOOL, "serve", "echo", "7009", "--bind", "0.0.0.0"], background)
    add_hostfwd(api_path, "tcp", "127.0.0.1", 17009, "", 7009)
    size = 4 << 20
    out = outer.run(script(ROUND_TRIP, "127.0.0.1", 17009, size), timeout=60).stdout.split()
    assert (int(out[1]), out[2]) == (size, out[0]), daemon.stderr
    helper = helpers(daemon)[0]
    assert helper.uids().effective == unpriv.uid


@pytest.mark.parametrize("rootless", [True, False], ids=["unshare-Urn", "unshare-n"])
def test_path_mode_as_podman_starts_it(
    outer, make_guest, make_daemon, api_path, background, rootless
) -> None:
    guest = make_guest(rootless=rootless)
    userns = ["--userns-path", f"/proc/{guest.pid}/ns/user"] if rootless else []
    args = [SPLICE, "-a", api_path, *userns, "--netns-type=path", "-c", "-r", "3"]
    daemon = start_ready(make_daemon, [*args, f"/proc/{guest.pid}/ns/net", "tap0"])
    in_guest(outer, guest, [*TCP_TOOL, "serve", "echo", "7012", "--bind", "0.0.0.0"], background)
    add_hostfwd(api_path, "tcp", "127.0.0.1", 17012, "", 7012)
    size = 1 << 20
    out = outer.run(script(ROUND_TRIP, "127.0.0.1", 17012, size), timeout=60).stdout.split()
    assert (int(out[1]), out[2]) == (size, out[0]), daemon.stderr


@pytest.mark.parametrize("rootless", [True, False], ids=["unshare-Urn", "unshare-n"])
def test_sandbox_and_seccomp(slirp, outer, api_path, background, rootless) -> None:
    hardening = ["--enable-sandbox", "--enable-seccomp"]
    guest, daemon = slirp(None, extra=[*hardening, SPLICE, "-a", api_path], rootless=rootless)
    assert "Seccomp:\t2" in Path(f"/proc/{daemon.pid}/status").read_text()
    in_guest(outer, guest, [*TCP_TOOL, "serve", "echo", "7010", "--bind", "0.0.0.0"], background)
    add_hostfwd(api_path, "tcp", "127.0.0.1", 17010, "", 7010)
    add_hostfwd(api_path, "tcp", "127.0.0.1", 17011, "", 7011)  # refused
    size = 4 << 20
    out = outer.run(script(ROUND_TRIP, "127.0.0.1", 17010, size), timeout=60).stdout.split()
    assert (int(out[1]), out[2]) == (size, out[0]), daemon.stderr
    echo = [*TCP_TOOL, "echo", "127.0.0.1", "17010", "--size", str(64 << 10), "--count", "20"]
    assert outer.run(echo, timeout=60).stdout.decode().split() == ["ok", "20"]
    refused = outer.run(script(OUTCOME, "127.0.0.1", 17011), check=False)
    assert daemon.poll() is None, daemon.stderr
    assert refused.stdout.decode().split()[:1] == ["ConnectionResetError"], refused.stderr


def test_udp_forwards_are_unchanged(slirp, outer, api_path, background) -> None:
    guest, daemon = slirp(None, extra=[SPLICE, "-a", api_path])
    in_guest(outer, guest, [*UDP_SERVER, "echo", "--bind", "0.0.0.0", "--port", "5353"], background)
    add_hostfwd(api_path, "udp", "127.0.0.1", 15353, "", 5353)
    out = outer.run([*UDP_CLIENT, "once", "127.0.0.1", "15353", "--payload", "hi"])
    assert out.stdout.decode().strip() == "hi", daemon.stderr


@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM"])
def test_helper_ends_with_the_daemon(slirp, api_path, how: str) -> None:
    guest, daemon = slirp(None, extra=[SPLICE, "-a", api_path])
    (helper,) = helpers(daemon)
    daemon.signal(signal.Signals[how])
    assert daemon.wait(10) == (-9 if how == "SIGKILL" else 0)

    def gone() -> bool:
        try:
            return helper.status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    wait_until(gone, 10, "the namespace helper to exit")


def test_no_helper_in_the_default_mode(slirp, api_path) -> None:
    guest, daemon = slirp(None, extra=["-a", api_path])
    assert helpers(daemon) == []
