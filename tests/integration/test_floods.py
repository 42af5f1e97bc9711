"""SYN floods from the guest (issue 13): the half-open state is capped, the daemon stays
healthy, and a normal connection works afterwards. Frames come from tests/tools/flood.py on an
AF_PACKET socket in a root-style guest; the host side lives in Outer. Figures at full scale
(100,000 SYNs in 10 s, RSS, ping latency) come from ``python3 -m benchmarks.floods``."""

from __future__ import annotations

import json
import os
import sys

import pytest

from pyslirp4netns.core.streams import HALF_OPEN_LIMIT
from tests.rig import TOOLS, Background, api_request, wait_until

pytestmark = pytest.mark.timeout(180)

FLOOD = [sys.executable, str(TOOLS / "flood.py")]
HELD_PORT = 18999
# Listens and never accepts: the kernel completes a backlog's worth of handshakes and drops
# further SYNs, so the daemon's connects stay pending.
HOLDER = f"""
import socket, time
l = socket.socket()
l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind(("127.0.0.1", {HELD_PORT}))
l.listen(8)
print("ready", flush=True)
time.sleep(600)
"""
ECHO_ONCE = """
import socket
l = socket.socket()
l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind(("127.0.0.1", 18998))
l.listen(1)
print("ready", flush=True)
c, _ = l.accept()
c.sendall(c.recv(100))
"""
CLIENT = """
import socket
s = socket.create_connection(("10.0.2.2", 18998), timeout=10)
s.sendall(b"after the flood")
print(s.recv(100).decode())
"""


def stats(path: str) -> dict[str, object]:
    reply: dict[str, object] = json.loads(api_request(path, {"execute": "get_stats"}))
    result = reply["return"]
    assert isinstance(result, dict)
    return result


def tcp_flows(path: str) -> int:
    flows = stats(path)["flows"]
    assert isinstance(flows, dict)
    return int(flows["tcp"])


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def still_serves(outer, guest) -> None:  # type: ignore[no-untyped-def]
    server = Background(outer.prefix(), [sys.executable, "-c", ECHO_ONCE])
    try:
        out = guest.run([sys.executable, "-c", CLIENT], timeout=30)
        assert out.stdout.decode().strip() == "after the flood"
    finally:
        server.close()


def test_syn_flood_to_a_port_that_never_accepts_is_capped(slirp, outer, api_path, background):  # type: ignore[no-untyped-def]
    background.append(Background(outer.prefix(), [sys.executable, "-c", HOLDER]))
    guest, daemon = slirp(extra=["-a", api_path], rootless=False)
    count = HALF_OPEN_LIMIT * 3
    # Paced: a burst faster than the daemon reads overflows the tap's queue (1,000 frames).
    argv = ["syn", "10.0.2.2", str(HELD_PORT), "--count", str(count), "--seconds", "4"]
    out = guest.run([*FLOOD, *argv], timeout=60)
    assert json.loads(out.stdout)["sent"] == count
    wait_until(lambda: tcp_flows(api_path) <= HALF_OPEN_LIMIT + 1, 10, "the cap to hold")
    drops = stats(api_path)["drops"]
    assert isinstance(drops, dict)
    # Every SYN beyond the cap reset an older half-open connection, none was refused for a
    # full table.
    assert drops.get("tcp: half-open connection reset", 0) >= count - HALF_OPEN_LIMIT - 64, drops
    assert "tcp: too many connections" not in drops, drops
    assert fds(daemon.pid) <= HALF_OPEN_LIMIT + 64
    still_serves(outer, guest)
    assert daemon.poll() is None


def test_syn_flood_to_a_closed_port_leaves_nothing(slirp, outer, api_path) -> None:  # type: ignore[no-untyped-def]
    guest, daemon = slirp(extra=["-a", api_path], rootless=False)
    before = fds(daemon.pid)
    argv = ["syn", "10.0.2.2", "1", "--count", "20000", "--seconds", "4"]
    out = guest.run([*FLOOD, *argv], timeout=60)
    assert json.loads(out.stdout)["sent"] == 20000
    wait_until(lambda: tcp_flows(api_path) == 0, 10, "every refused flow to go")
    # + 1: the UDP flow of the flooder's first datagram (it learns the gateway's MAC).
    wait_until(lambda: fds(daemon.pid) <= before + 1, 10, "the daemon's fds back where they were")
    still_serves(outer, guest)
    assert daemon.poll() is None
