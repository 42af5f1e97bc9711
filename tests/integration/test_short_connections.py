"""10,000 short TCP connections leave nothing behind in the daemon (issue 14: slirp4netns's
FIN_WAIT2/TIME_WAIT pile-up), counted black-box: the daemon's open fds return to where they
were, and no socket of the daemon sits in FIN-WAIT-2, TIME-WAIT or CLOSE-WAIT in Outer. Half of
the connections are closed by the guest first (echo), half by the host server (whoami)."""

from __future__ import annotations

import os
import sys
import time

import pytest

from tests.rig import TCP_TOOL, Background, wait_until

pytestmark = pytest.mark.timeout(600)

COUNT = 10_000

# In the guest: COUNT/2 echo connections (guest closes first: SHUT_WR, then read to EOF) and
# COUNT/2 whoami ones (the server closes first), alternating; prints how many went right.
GUEST_CLIENT = r"""
import socket, sys
echo, whoami, count = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
ok = 0
for i in range(count):
    port = echo if i % 2 == 0 else whoami
    with socket.create_connection(("10.0.2.2", port), timeout=10) as sock:
        if port == echo:
            sock.sendall(b"x")
            sock.shutdown(socket.SHUT_WR)
        data = b""
        while True:
            chunk = sock.recv(100)
            if not chunk:
                break
            data += chunk
        ok += data == (b"x" if port == echo else b"127.0.0.1")  # as the server sees us
print(ok)
"""


def daemon_sockets(outer, pid: int, states: str) -> list[str]:  # type: ignore[no-untyped-def]
    """Outer's TCP sockets in ``states`` (ss state filter) that belong to process ``pid``."""
    filters = [word for state in states.split() for word in ("state", state)]
    out = outer.run(["ss", "-Htanp", *filters]).stdout.decode()
    return [line for line in out.splitlines() if f"pid={pid}," in line]


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_10000_short_connections_leave_no_fin_wait_2_or_time_wait(slirp, outer) -> None:
    echo = Background(outer.prefix(), [*TCP_TOOL, "serve", "echo", "0"])
    whoami = Background(outer.prefix(), [*TCP_TOOL, "serve", "whoami", "0"])
    try:
        guest, daemon = slirp()
        baseline = fd_count(daemon.pid)
        started = time.monotonic()
        argv = [sys.executable, "-c", GUEST_CLIENT, echo.line, whoami.line, str(COUNT)]
        out = guest.run(argv, timeout=500).stdout.decode()
        took = time.monotonic() - started
        assert out.strip() == str(COUNT), out
        right_after = fd_count(daemon.pid)
        lingering = "fin-wait-2 time-wait close-wait last-ack closing fin-wait-1"
        at_end = len(daemon_sockets(outer, daemon.pid, lingering))
        # FIN-WAIT-2 and TIME-WAIT timers in the core are 60 s and 30 s: all gone within 70 s.
        wait_until(
            lambda: (
                fd_count(daemon.pid) <= baseline + 2
                and not daemon_sockets(outer, daemon.pid, lingering)
            ),
            70,
            "the daemon's sockets to close",
            interval=1.0,
        )
        kernel_tw = len(outer.run(["ss", "-Htan", "state", "time-wait"]).stdout.splitlines())
        print(
            f"\n{COUNT} connections in {took:.1f} s; daemon fds {baseline} -> {right_after} "
            f"right after -> {fd_count(daemon.pid)}; daemon sockets lingering at the end: "
            f"{at_end}; kernel TIME-WAIT entries in Outer (no fd, kernel-bounded): {kernel_tw}"
        )
        assert daemon.poll() is None
    finally:
        echo.close()
        whoami.close()


# A host server that reads to EOF and then keeps the connection open (never closes).
HOLDING_SERVER = r"""
import socket, threading
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen(512)
print(listener.getsockname()[1], flush=True)
held = []
def drain(conn):
    while conn.recv(4096):
        pass
    held.append(conn)  # EOF seen; the connection is kept, never closed
while True:
    conn, _ = listener.accept()
    threading.Thread(target=drain, args=(conn,), daemon=True).start()
"""

GUEST_CLOSER = r"""
import socket, sys
port, count = int(sys.argv[1]), int(sys.argv[2])
for _ in range(count):
    sock = socket.create_connection(("10.0.2.2", port), timeout=10)
    sock.sendall(b"bye")
    sock.close()  # FIN; the guest kernel forgets the orphan after tcp_fin_timeout
print("done")
"""


def test_guest_closed_connections_to_a_holding_server_are_not_kept(slirp, outer) -> None:
    """The guest closes, the host server never does: once the guest kernel has dropped its
    orphans, the daemon's keep-alive probe (after 60 s of CLOSE-WAIT silence) gets RST and the
    host sockets go. slirp4netns keeps them (FIN-WAIT-2) for ever."""
    server = Background(outer.prefix(), [sys.executable, "-c", HOLDING_SERVER])
    try:
        guest, daemon = slirp()
        guest.run(["sysctl", "-qw", "net.ipv4.tcp_fin_timeout=2"])  # the guest's netns only
        baseline = fd_count(daemon.pid)
        out = guest.run([sys.executable, "-c", GUEST_CLOSER, server.line, "200"], timeout=120)
        assert out.stdout.decode().strip() == "done"
        time.sleep(5)  # the guest's orphans are gone by now
        wait_until(
            lambda: fd_count(daemon.pid) <= baseline + 2,
            100,
            "the daemon to let go of connections the guest has forgotten",
            interval=1.0,
        )
    finally:
        server.close()
