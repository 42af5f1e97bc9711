"""SYN floods from the guest (issue 13): the half-open state is capped, the daemon stays
healthy, and a normal connection works afterwards. Frames come from tests/tools/flood.py on an
AF_PACKET socket in a root-style guest; the host side lives in Outer. Figures at full scale
(100,000 SYNs in 10 s, RSS, ping latency) come from ``python3 -m benchmarks.floods``."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from pyslirp4netns.core.datagrams import FLOW_LIMIT
from pyslirp4netns.core.streams import HALF_OPEN_LIMIT
from tests.rig import (
    PROGRAMS,
    TOOLS,
    UDP_SERVER,
    Background,
    api_request,
    end_process,
    fd_count,
    is_reference,
    rss_kib,
    wait_until,
)

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
    return fd_count(pid) or 0


def name(program: list[str] | None) -> str:
    return "slirp4netns" if program is not None and is_reference(program) else "pyslirp4netns"


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


# -- UDP flows, fragments, a port scan (scaled down; full scale in benchmarks/floods.py) --------

# Runs in the guest: one UDP socket that keeps talking to a "peer" server (which answers with
# the address and port it saw) every 0.1 s; prints the host ports seen and the answers lost.
KEEPER = """
import json, socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(1)
s.connect(("10.0.2.2", int(sys.argv[1])))
print("ready", flush=True)
ports, lost, end = set(), 0, time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:
    s.send(b"still here")
    try:
        ports.add(s.recv(100).decode().split()[1])
    except OSError:
        lost += 1
    time.sleep(0.1)
print(json.dumps({"ports": sorted(ports), "lost": lost}), flush=True)
"""


def flood_sampling(guest, daemon, argv: list[str], timeout: float = 60):  # type: ignore[no-untyped-def]
    """Run tests/tools/flood.py ARGV in the guest while sampling the daemon: (its JSON line,
    peak fds, peak RSS growth in KiB)."""
    base_rss = rss_kib(daemon.pid) or 0
    peak_fds, peak_rss = 0, base_rss
    proc = subprocess.Popen(
        [*guest.outer.prefix(), *guest.prefix(), *FLOOD, *argv],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + timeout
        while proc.poll() is None and time.monotonic() < deadline:
            peak_fds = max(peak_fds, fds(daemon.pid))
            peak_rss = max(peak_rss, rss_kib(daemon.pid) or 0)
            time.sleep(0.1)
        out, _ = proc.communicate(timeout=5)
    finally:
        end_process(proc)
    return json.loads(out.decode().splitlines()[-1]), peak_fds, peak_rss - base_rss


def udp_flows(path: str) -> int:
    flows = stats(path)["flows"]
    assert isinstance(flows, dict)
    return int(flows["udp"])


def test_udp_flow_flood_is_capped_and_evicts_the_least_recently_used(  # type: ignore[no-untyped-def]
    slirp, outer, api_path, background
) -> None:
    """3 x FLOW_LIMIT flows (one datagram from each of 12,288 source ports, 4 s): the table
    stays at FLOW_LIMIT, fds with it, and a flow the guest keeps using is never the one evicted
    (its host port stays the same)."""
    peer = Background(outer.prefix(), [*UDP_SERVER, "peer"])
    background.append(peer)
    guest, daemon = slirp(extra=["-a", api_path], rootless=False)
    keeper = Background(
        outer.prefix() + guest.prefix(), [sys.executable, "-c", KEEPER, peer.line, "10"]
    )
    background.append(keeper)
    count = FLOW_LIMIT * 3
    argv = ["udp", "10.0.2.2", "9", "--count", str(count), "--seconds", "4"]
    result, peak_fds, growth = flood_sampling(guest, daemon, argv)
    print(f"\nUDP flow flood: {result}, peak fds {peak_fds}, RSS +{growth / 1024:.1f} MiB")
    assert result["sent"] == count
    assert udp_flows(api_path) <= FLOW_LIMIT
    assert peak_fds <= FLOW_LIMIT + 64
    drops = stats(api_path)["drops"]
    assert isinstance(drops, dict)
    assert drops.get("flow: evicted (table full)", 0) >= count - FLOW_LIMIT - 64, drops
    kept = json.loads(keeper.output(timeout=30).splitlines()[-1])
    assert len(kept["ports"]) == 1, kept  # one host socket throughout: never evicted
    still_serves(outer, guest)
    assert daemon.poll() is None


# Runs in the guest: counts the ICMP time exceeded (reassembly, code 1) messages that arrive in
# the given seconds, and when the last one came (seconds after start).
TIME_EXCEEDED = """
import json, socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
start = time.monotonic()
end = start + float(sys.argv[1])
print("ready", flush=True)
count, last = 0, None
while time.monotonic() < end:
    s.settimeout(max(0.01, end - time.monotonic()))
    try:
        packet = s.recv(2048)
    except OSError:
        break
    icmp = packet[(packet[0] & 0x0F) * 4 :]
    if icmp[:2] == bytes((11, 1)):
        count, last = count + 1, time.monotonic() - start
print(json.dumps({"count": count, "last": last}), flush=True)
"""


@pytest.mark.parametrize("program", PROGRAMS)
def test_fragment_flood_is_bounded_and_expires_within_30_s(  # type: ignore[no-untyped-def]
    slirp, outer, background, program
) -> None:
    """2,000 incomplete fragment sets in 2 s: ours keeps at most 64 datagrams in reassembly
    (2 MiB at most) and abandons each 30 s after its first fragment came, with an ICMP time
    exceeded (reassembly) to the guest for each one it held; so at most 64 arrive, the last
    within 30 s of the flood's end. slirp4netns sends none: printed."""
    guest, daemon = slirp(program, rootless=False)
    listener = Background(
        outer.prefix() + guest.prefix(), [sys.executable, "-c", TIME_EXCEEDED, "40"]
    )
    background.append(listener)
    argv = ["frags", "10.0.2.2", "--count", "2000", "--seconds", "2"]
    started = time.monotonic()
    result, _, growth = flood_sampling(guest, daemon, argv)
    flooded = time.monotonic() - started
    expired = json.loads(listener.output(timeout=60).splitlines()[-1])
    print(f"\n{name(program)}: {result}, RSS +{growth / 1024:.1f} MiB, time exceeded {expired}")
    assert result["sent"] == 2000
    assert growth < 8 * 1024
    if program is None:
        assert 0 < expired["count"] <= 64, expired
        assert expired["last"] <= flooded + 31, expired
    still_serves(outer, guest)
    assert daemon.poll() is None


@pytest.mark.parametrize("program", PROGRAMS)
def test_port_scan_gets_an_answer_for_every_port(slirp, outer, program) -> None:  # type: ignore[no-untyped-def]
    """A connect to each of ports 1-8,000 of 10.0.2.2, 4,000 in flight: every one refused
    (nothing listens there in Outer) within the 10 s the scanner waits, none left behind."""
    guest, daemon = slirp(program, rootless=False)
    before = fds(daemon.pid)
    argv = ["ports", "10.0.2.2", "--last", "8000", "--inflight", "4000", "--seconds", "50"]
    result, peak_fds, growth = flood_sampling(guest, daemon, argv)
    print(f"\n{name(program)}: {result}, peak fds {peak_fds}, RSS +{growth / 1024:.1f} MiB")
    assert result["unfinished"] == 0
    assert result["outcomes"].get("ECONNREFUSED", 0) >= 8000 - 10, result
    assert "timeout" not in result["outcomes"], result
    if program is None:
        wait_until(lambda: fds(daemon.pid) <= before + 1, 10, "the daemon's fds to come back")
    still_serves(outer, guest)
    assert daemon.poll() is None
