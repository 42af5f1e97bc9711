"""Host faults, each with what the guest sees asserted (issue 13): a reset mid-stream, a slow
guest reader, a resolver that refuses, stays silent or cannot be reached, and the host out of
file descriptors. Each runs against slirp4netns too: where it behaves otherwise, its result is
printed (or asserted as known). Elsewhere: refused connections, a reset after the first byte,
half-close both ways and a slow host reader in test_tcp_traffic.py; UDP port unreachable in
test_udp.py; floods in test_floods.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from tests.rig import (
    PROGRAMS,
    TCP_TOOL,
    UDP_CLIENT,
    UDP_SERVER,
    Background,
    end_process,
    fd_count,
    is_reference,
    rss_kib,
    start_ready,
    stream_digest,
    wait_until,
)

pytestmark = pytest.mark.timeout(180)

MiB = 1 << 20


def name(program: list[str] | None) -> str:
    return "slirp4netns" if program is not None and is_reference(program) else "pyslirp4netns"


@pytest.fixture
def serve(outer, background):  # type: ignore[no-untyped-def]
    """serve(MODE, *args): a tests/tools/tcp_tool.py server in Outer; its port is ``.line``."""

    def start(mode: str, *args: str) -> Background:
        server = Background(outer.prefix(), [*TCP_TOOL, "serve", mode, *args])
        background.append(server)
        return server

    return start


# -- TCP ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("program", PROGRAMS)
@pytest.mark.parametrize("reader", ["fast", "slow"])
def test_reset_mid_stream_reaches_the_guest_as_a_reset(slirp, serve, program, reader) -> None:  # type: ignore[no-untyped-def]
    """The host sends 4 MiB, then resets. A guest that reads at full speed gets every byte and
    then ECONNRESET; one that reads 256 KiB/s for 3 s (so the bytes wait in the daemon when the
    RST comes) gets a correct prefix and then ECONNRESET: never a clean EOF, which would pass a
    truncated transfer off as a complete one. (Ours drops what the guest's window had not let
    through yet, as the reset would have on a direct connection; slirp4netns sends it all
    first: the counts are printed.)"""
    size = 4 * MiB
    server = serve("source-reset", "--size", str(size))
    guest, daemon = slirp(program)
    pace = ["--rate", str(256 * 1024), "--seconds", "3"] if reader == "slow" else []
    out = guest.run([*TCP_TOOL, "recvreset", "10.0.2.2", server.line, *pace], timeout=60)
    got, digest, outcome = out.stdout.decode().split()
    print(f"\n{name(program)} ({reader} reader): {got} of {size} bytes, then {outcome}")
    # slirp4netns now and then ends the slow reader's with a FIN (once in six runs: 0.5 MiB,
    # then a clean EOF), the very truncation this test is about: printed, not asserted.
    known = program is not None and reader == "slow" and outcome == "eof"
    assert outcome == "ConnectionResetError" or known, daemon.stderr
    assert digest == stream_digest(int(got))  # what came is the stream's start, unharmed
    if reader == "fast":
        assert int(got) == size
    assert daemon.poll() is None


@pytest.mark.parametrize("program", PROGRAMS)
def test_slow_guest_reader_keeps_memory_bounded_and_loses_nothing(slirp, serve, program) -> None:  # type: ignore[no-untyped-def]
    """The host pushes 64 MiB as fast as it can while the guest reads 1 MiB/s for 8 s: the
    daemon stops reading the host socket when the guest's window is full instead of buffering
    (RSS growth under 16 MiB), and then every byte arrives, SHA-256 checked."""
    size = 64 * MiB
    source = serve("source", "--size", str(size))
    guest, daemon = slirp(program)
    before = rss_kib(daemon.pid) or 0
    reader = subprocess.Popen(
        [*guest.outer.prefix(), *guest.prefix(), *TCP_TOOL, "slowrecv", "10.0.2.2", source.line]
        + ["--rate", str(MiB), "--seconds", "8"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
    )
    try:
        peak, deadline = before, time.monotonic() + 120
        while reader.poll() is None and time.monotonic() < deadline:
            peak = max(peak, rss_kib(daemon.pid) or 0)
            time.sleep(0.2)
            if peak - before > 64 * 1024:
                break  # clearly unbounded: no need to wait for the rest
        out, _ = reader.communicate(timeout=120)
    finally:
        end_process(reader)
    growth = (peak - before) / 1024
    print(f"\n{name(program)}: RSS {before / 1024:.1f} MiB, peak +{growth:.1f} MiB")
    assert growth < 16, f"RSS grew {growth:.1f} MiB"
    assert out.decode().split() == [str(size), stream_digest(size)], daemon.stderr
    assert daemon.poll() is None


# -- the resolver ------------------------------------------------------------------------------

SILENT_RESOLVER = """
import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 53))
print("ready", flush=True)
while True:
    s.recv(65535)  # read, never answer
"""

# resolv.conf as each case has it; what the guest's query (IP_RECVERR on) then gets from ours.
RESOLVERS = {
    "refuses": ("nameserver 127.0.0.1\n", "ECONNREFUSED"),  # nothing listens on 53
    "silent": ("nameserver 127.0.0.1\n", "TimeoutError"),  # SILENT_RESOLVER listens
    "no-route": ("nameserver 198.51.100.53\n", "ENETUNREACH"),  # Outer has no route there
    "none": ("# no nameserver\n", "ENETUNREACH"),
}
# slirp4netns 1.2.0: ICMP errors the host socket gets are dropped (the guest waits); a send
# that fails at once, or no nameserver at all, gives ICMP net unreachable, as ours does.
REFERENCE_SEES = {
    "refuses": "TimeoutError",
    "silent": "TimeoutError",
    "no-route": "ENETUNREACH",
    "none": "ENETUNREACH",
}


@pytest.mark.parametrize("program", PROGRAMS)
@pytest.mark.parametrize("case", list(RESOLVERS))
def test_unreachable_resolver_then_a_working_one(slirp, outer, background, program, case) -> None:  # type: ignore[no-untyped-def]
    """A query to the DNS alias while resolv.conf's server refuses, stays silent, has no route
    or is missing: the guest gets the matching error (ours) or a timeout, never an answer, and
    the daemon lives on. Then resolv.conf names a working resolver: the next query is answered,
    within the second slirp4netns also re-reads it in."""
    text, ours_sees = RESOLVERS[case]
    original = outer.resolv.read_text()
    silent = None
    try:
        outer.resolv.write_text(text)
        if case == "silent":
            silent = Background(outer.prefix(), [sys.executable, "-c", SILENT_RESOLVER])
        guest, daemon = slirp(program)
        query = [*UDP_CLIENT, "dns", "10.0.2.3", "53", "--recverr", "--timeout", "2"]
        started = time.monotonic()
        seen = guest.run(query).stdout.decode().strip()
        took = time.monotonic() - started
        print(f"\n{name(program)}, resolver {case}: {seen} after {took:.1f} s")
        expected = ours_sees if program is None else REFERENCE_SEES[case]
        assert seen == expected
        assert daemon.poll() is None
        if silent is not None:
            silent.close()
        background.append(Background(outer.prefix(), [*UDP_SERVER, "dns", "--port", "53"]))
        outer.resolv.write_text("nameserver 127.0.0.1\n")
        time.sleep(1.5)  # resolv.conf is checked once a second
        assert guest.run(query).stdout.decode().strip() == "192.0.2.53"
    finally:
        if silent is not None:
            silent.close()
        outer.resolv.write_text(original)


# -- out of file descriptors -------------------------------------------------------------------

# Runs in the guest: one UDP socket (IP_RECVERR on) to an echo server, a datagram every 0.25 s
# until one is echoed or 20 s passed; prints the errors seen and when the echo came.
UDP_UNTIL_ECHOED = """
import errno, json, socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IP, 11, 1)  # IP_RECVERR
s.settimeout(0.25)
s.connect(("10.0.2.2", int(sys.argv[1])))
start, errors, echoed = time.monotonic(), {}, None
while time.monotonic() - start < 20:
    try:
        s.send(b"anyone?")
        if s.recv(100) == b"anyone?":
            echoed = round(time.monotonic() - start, 2)
            break
    except OSError as e:
        name = errno.errorcode.get(e.errno, type(e).__name__) if e.errno else type(e).__name__
        errors[name] = errors.get(name, 0) + 1
        time.sleep(0.25 if e.errno else 0)
print(json.dumps({"errors": errors, "echoed": echoed}), flush=True)
"""


@pytest.mark.parametrize("program", PROGRAMS)
def test_host_fd_exhaustion_fails_new_flows_fast_and_spares_the_rest(  # type: ignore[no-untyped-def]
    make_guest, make_daemon, serve, outer, background, program
) -> None:
    """The daemon runs with RLIMIT_NOFILE 1024 soft and hard (it cannot raise it) and the guest
    opens 1,100 connections to a host echo server: those past the limit fail within 1 s (ours
    refuses them: ECONNREFUSED; slirp4netns answers ICMP net unreachable: ENETUNREACH) while every
    one that opened still echoes. A UDP socket the guest uses while no fd is left gets its echo
    within seconds once the connections close: a flow whose host socket could not be opened is
    not kept as a black hole."""
    echo = serve("echo")
    udp_echo = Background(outer.prefix(), [*UDP_SERVER, "echo"])
    background.append(udp_echo)
    guest = make_guest(rootless=True)
    args = ["-c", "-r", "3", str(guest.pid), "tap0"]
    wrap = ["prlimit", "--nofile=1024:1024", "--"]
    daemon = start_ready(make_daemon, args, program=program, wrap=wrap)
    many = Background(
        outer.prefix() + guest.prefix(),
        [*TCP_TOOL, "many", "10.0.2.2", echo.line, "--count", "1100", "--hold", "4"],
        timeout=90,
    )
    background.append(many)
    result = json.loads(many.line)
    udp = Background(
        outer.prefix() + guest.prefix(),
        [sys.executable, "-c", UDP_UNTIL_ECHOED, udp_echo.line],
        timeout=30,
    )
    background.append(udp)
    after = json.loads(udp.line)
    print(f"\n{name(program)}: {result}; UDP during and after: {after}")
    failed = sum(result["failed"].values())
    assert result["tried"] == 1100
    assert result["held"] >= 900, result  # the daemon's own fds come out of the 1,024
    assert failed >= 1100 - 1024, result
    reference = name(program) == "slirp4netns"
    assert set(result["failed"]) == ({"ENETUNREACH"} if reference else {"ECONNREFUSED"}), result
    assert result["slowest_failure_ms"] < 1000, result
    assert result["echoed"] == result["held"], result
    if program is None:
        assert after["echoed"] is not None, after
    wait_until(lambda: many.proc.poll() is not None, 30, "the guest to close its connections")
    wait_until(lambda: (fd_count(daemon.pid) or 0) < 100, 30, "the daemon's fds to come back")
    out = guest.run([*TCP_TOOL, "connect", "10.0.2.2", echo.line, "--timeout", "5"])
    assert out.stdout.decode().split()[0] == "connected"
    assert daemon.poll() is None
