"""TCP through the daemon, from a real guest kernel to real host sockets.

Transfers are checked by SHA-256 of what arrived; each scenario that slirp4netns serves runs
against it too.
"""

from __future__ import annotations

import subprocess
import time

import pytest

from tests.rig import (
    PROGRAMS,
    SLAAC_WAIT,
    TCP_TOOL,
    Background,
    is_reference,
    rss_kib,
)
from tests.rig import stream_digest as digest

pytestmark = pytest.mark.timeout(900)

TOOL = TCP_TOOL
MiB = 1 << 20


@pytest.fixture
def tcp_server(outer):  # type: ignore[no-untyped-def]
    started: list[Background] = []

    def start(mode: str, *args: str, prefix: list[str] | None = None) -> Background:
        server = Background(prefix or outer.prefix(), [*TOOL, "serve", mode, *args])
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()


def name(program: list[str] | None) -> str:
    return "slirp4netns" if program is not None and is_reference(program) else "pyslirp4netns"


@pytest.mark.parametrize("program", PROGRAMS)
def test_guest_to_host_and_back_small(slirp, tcp_server, program) -> None:
    size = 8 * MiB
    sink = tcp_server("sink")
    source = tcp_server("source", "--size", str(size))
    guest, daemon = slirp(program)
    sent = guest.run([*TOOL, "send", "10.0.2.2", sink.line, "--size", str(size)], timeout=120)
    assert sent.stdout.decode().split() == [str(size), digest(size)], daemon.stderr
    got = guest.run([*TOOL, "recv", "10.0.2.2", source.line], timeout=120)
    assert got.stdout.decode().split() == [str(size), digest(size)], daemon.stderr


@pytest.mark.parametrize("offload", ["1", "0"], ids=["offload", "plain"])
@pytest.mark.parametrize("mtu", [1500, 65520])
def test_one_gib_each_way(slirp, tcp_server, mtu, offload) -> None:
    """1 GiB guest->host and 1 GiB host->guest via 10.0.2.2, SHA-256 verified."""
    size = 1024 * MiB
    sink = tcp_server("sink")
    source = tcp_server("source", "--size", str(size))
    env = {"PYSLIRP4NETNS_OFFLOAD": offload}
    guest, daemon = slirp(None, extra=["--mtu", str(mtu)], env=env)
    want = [str(size), digest(size)]
    start = time.monotonic()
    sent = guest.run([*TOOL, "send", "10.0.2.2", sink.line, "--size", str(size)], timeout=400)
    middle = time.monotonic()
    got = guest.run([*TOOL, "recv", "10.0.2.2", source.line], timeout=400)
    end = time.monotonic()
    g2h, h2g = size * 8 / (middle - start) / 1e9, size * 8 / (end - middle) / 1e9
    rates = f"g2h {g2h:.2f} Gbit/s, h2g {h2g:.2f} Gbit/s"
    print(f"\nMTU {mtu} offload={offload}: {rates}")
    assert sent.stdout.decode().split() == want, daemon.stderr
    assert got.stdout.decode().split() == want, daemon.stderr


@pytest.mark.parametrize("program", PROGRAMS)
def test_half_close_both_ways_carries_100_kb_after_the_fin(slirp, tcp_server, program) -> None:
    size = 100 * 1000
    guest, daemon = slirp(program)
    # guest FIN first: the host keeps sending 100 KB after it
    late = tcp_server("halfsrc", "--size", str(size))
    out = guest.run([*TOOL, "halfsend", "10.0.2.2", late.line, "--size", str(size)])
    assert out.stdout.decode().split() == [str(size), digest(size)], daemon.stderr
    # host FIN first: the guest keeps sending 100 KB after it (the source reads to EOF)
    early = tcp_server("source", "--size", str(size))
    out = guest.run([*TOOL, "halfsend", "10.0.2.2", early.line, "--size", str(size)])
    assert out.stdout.decode().split() == [str(size), digest(size)], daemon.stderr


@pytest.mark.parametrize("program", PROGRAMS)
def test_refused_port_is_refused_quickly(slirp, program) -> None:
    guest, _ = slirp(program)
    outcome = guest.run([*TOOL, "connect", "10.0.2.2", "9"]).stdout.decode().split()
    print(f"\n{name(program)}: {outcome}")
    assert outcome[0] == "ConnectionRefusedError"
    assert float(outcome[1]) < 100


@pytest.mark.parametrize("program", PROGRAMS)
def test_peer_reset_reaches_the_guest(slirp, tcp_server, program) -> None:
    resetter = tcp_server("late-reset")
    guest, _ = slirp(program)
    outcome = guest.run([*TOOL, "readreset", "10.0.2.2", resetter.line]).stdout.decode().strip()
    assert outcome in ("ConnectionResetError", "BrokenPipeError"), outcome


@pytest.mark.parametrize("program", PROGRAMS)
def test_denied_destination_is_network_unreachable(slirp, tcp_server, program) -> None:
    tcp_server("sink", "18080")
    guest, _ = slirp(program, extra=["--disable-host-loopback"])
    outcome = guest.run([*TOOL, "connect", "10.0.2.2", "18080", "--timeout", "5"])
    assert outcome.stdout.decode().split()[0] == "OSError"  # ENETUNREACH


@pytest.mark.parametrize("program", PROGRAMS)
def test_1000_concurrent_connections_each_echo_64_kb(slirp, tcp_server, program) -> None:
    echo = tcp_server("echo")
    guest, daemon = slirp(program)
    args = ["--count", "1000", "--size", str(64 * 1024), "--timeout", "30"]
    out = guest.run([*TOOL, "echo", "10.0.2.2", echo.line, *args], timeout=600)
    if program is not None and is_reference(program):
        # slirp4netns loses a few now and then on this 2-CPU VM (996 of 1000 seen): printed.
        print(f"\nslirp4netns: {out.stdout.decode().strip()}")
        return
    assert out.stdout.decode().split() == ["ok", "1000"], out.stderr.decode() + daemon.stderr


def test_lossy_link_still_delivers_100_mib_both_ways(slirp, tcp_server) -> None:
    """The fault injector at the tap: 5 % dropped, 5 % corrupted, 10 % reordered frames."""
    size = 100 * MiB
    sink = tcp_server("sink")
    source = tcp_server("source", "--size", str(size))
    env = {"PYSLIRP4NETNS_FAULTS": "drop=0.05,corrupt=0.05,reorder=0.10,seed=1"}
    guest, daemon = slirp(None, env=env)
    want = [str(size), digest(size)]
    sent = guest.run([*TOOL, "send", "10.0.2.2", sink.line, "--size", str(size)], timeout=400)
    assert sent.stdout.decode().split() == want, daemon.stderr
    got = guest.run([*TOOL, "recv", "10.0.2.2", source.line], timeout=400)
    assert got.stdout.decode().split() == want, daemon.stderr


def test_slow_host_reader_keeps_memory_bounded(slirp, tcp_server) -> None:
    """The host reads 1 MiB/s while the guest tries to push 256 MiB: our windows close
    instead of our memory growing (RSS growth under 16 MiB over 15 s)."""
    slow = tcp_server("slow", "--rate", str(MiB))
    guest, daemon = slirp(None)
    before = rss_kib(daemon.pid) or 0
    sender = subprocess.Popen(
        [
            *guest.outer.prefix(),
            *guest.prefix(),
            *TOOL,
            "send",
            "10.0.2.2",
            slow.line,
            "--size",
            str(256 * MiB),
            "--timeout",
            "60",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        peak = before
        for _ in range(30):
            time.sleep(0.5)
            peak = max(peak, rss_kib(daemon.pid) or 0)
        growth = (peak - before) / 1024
        print(f"\nRSS before {before / 1024:.1f} MiB, peak {peak / 1024:.1f} MiB")
        assert growth < 16, f"RSS grew {growth:.1f} MiB"
        assert daemon.poll() is None
    finally:
        sender.kill()
        sender.wait(10)


@pytest.mark.parametrize("program", PROGRAMS)
@pytest.mark.parametrize("mtu", [1500, 65520])
def test_iperf3_both_directions(slirp, outer, program, mtu) -> None:
    server = Background(
        outer.prefix(), ["sh", "-c", "echo up; exec iperf3 -s -B 127.0.0.1 -p 15201"]
    )
    try:
        time.sleep(0.5)
        guest, daemon = slirp(program, extra=["--mtu", str(mtu)])
        for flags in ([], ["-R"]):
            run = guest.run(
                ["iperf3", "-c", "10.0.2.2", "-p", "15201", "-t", "2", *flags], timeout=60
            )
            assert b"receiver" in run.stdout, run.stdout.decode() + daemon.stderr
    finally:
        server.close()


def test_ipv6_guest_reaches_host_ipv6_loopback(slirp, tcp_server) -> None:
    """fd00::2 maps to the host's ::1 (contract §3.4), both directions, SHA-256 verified."""
    size = 32 * MiB
    sink = tcp_server("sink", "--bind", "::1")
    source = tcp_server("source", "--bind", "::1", "--size", str(size))
    guest, daemon = slirp(None, extra=["--enable-ipv6"])
    guest.sh(SLAAC_WAIT)
    want = [str(size), digest(size)]
    sent = guest.run([*TOOL, "send", "fd00::2", sink.line, "--size", str(size)], timeout=120)
    assert sent.stdout.decode().split() == want, daemon.stderr
    got = guest.run([*TOOL, "recv", "fd00::2", source.line], timeout=120)
    assert got.stdout.decode().split() == want, daemon.stderr


@pytest.mark.parametrize("program", PROGRAMS)
def test_tcp_to_the_dns_alias_reaches_the_resolver(slirp, tcp_server, program) -> None:
    """TCP port 53 of 10.0.2.3 goes to resolv.conf's server (127.0.0.1 in the rig), like UDP."""
    tcp_server("sink", "53")
    guest, daemon = slirp(program)
    out = guest.run([*TOOL, "send", "10.0.2.3", "53", "--size", "1000"])
    assert out.stdout.decode().split() == ["1000", digest(1000)], daemon.stderr


@pytest.mark.parametrize("program", PROGRAMS)
def test_unroutable_destination_is_network_unreachable_at_once(slirp, program) -> None:
    """The host connect fails (the outer namespace has no route): ICMP from the gateway, so the
    guest's connect fails at once instead of timing out (contract §3.4)."""
    guest, _ = slirp(program)
    outcome = guest.run([*TOOL, "connect", "198.51.100.99", "80", "--timeout", "10"])
    name, ms = outcome.stdout.decode().split()
    assert name == "OSError" and float(ms) < 2000, outcome.stdout
