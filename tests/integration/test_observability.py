"""--pcap, get_stats, SIGUSR1 and --debug (our extensions) on a real guest kernel.

A TCP + UDP + DNS + ICMP session captured with --pcap opens in tshark with the expected
conversations and no malformed packet; get_stats and SIGUSR1 report exact counts for a known
pattern (N pings of known size, one crafted frame dropped for a known reason); --debug logs a
flow's opening and its end with the bytes each way.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from pyslirp4netns.wire import ipv4
from tests.rig import TCP_TOOL, UDP_CLIENT, UDP_SERVER, Background, api_request, wait_until
from tests.rig.frames import GATEWAY4, GATEWAY_MAC, ipv4_frame, udp_datagram

pytestmark = pytest.mark.timeout(180)

PINGS = 5
PING_FRAME = 14 + 20 + 8 + 56  # busybox ping's default 56 data bytes, in an Ethernet frame
SIZE = 300_000  # guest -> host TCP bytes (several GSO super-frames at MTU 1500)
STRANGER = bytes([10, 0, 2, 99])  # a crafted frame's source: the real guest's MAC stays learned

# One UDP datagram to the gateway with a wrong checksum, sent from inside the guest.
SEND_BAD_CHECKSUM = """
import socket, sys
frame = bytearray(bytes.fromhex(sys.argv[1]))
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("tap0", 0))
print(s.send(bytes(frame)))
"""


def bad_checksum_frame() -> bytes:
    datagram = bytearray(udp_datagram(STRANGER, GATEWAY4, 5000, 5009, b"bad"))
    datagram[6] ^= 0xFF  # the UDP checksum
    frame = ipv4_frame(GATEWAY4, ipv4.PROTO_UDP, bytes(datagram), src=STRANGER)
    assert frame[:6] == GATEWAY_MAC
    return frame


@pytest.fixture
def background(outer):  # type: ignore[no-untyped-def]
    started: list[Background] = []

    def start(*argv: str) -> Background:
        server = Background(outer.prefix(), list(argv))
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()


@pytest.fixture
def tshark() -> str:
    path = shutil.which("tshark")
    if path is None:
        pytest.skip("tshark is not installed (Debian package tshark)")
    return path


def pings(guest) -> str:  # type: ignore[no-untyped-def]
    out = guest.run(["busybox", "ping", "-c", str(PINGS), "-W", "2", "10.0.2.2"], check=False)
    return out.stdout.decode() + out.stderr.decode()


def get_stats(api: Path) -> dict:  # type: ignore[type-arg]
    reply = json.loads(api_request(str(api), {"execute": "get_stats"}))
    return reply["return"]  # type: ignore[no-any-return]


def fields(tshark: str, pcap: Path, *names: str, display: str = "") -> list[list[str]]:
    argv = [
        tshark,
        "-n",
        "-r",
        str(pcap),
        "-T",
        "fields",
        "-E",
        "separator=,",
        "-E",
        "aggregator=+",
    ]
    for name in names:
        argv += ["-e", name]
    if display:
        argv += ["-Y", display]
    out = subprocess.run(argv, capture_output=True, timeout=60, check=True).stdout.decode()
    return [line.split(",") for line in out.splitlines()]


def test_pcap_of_a_tcp_udp_dns_icmp_session_reads_cleanly_in_tshark(
    slirp, background, api_dir, tshark
) -> None:
    pcap = api_dir / "session.pcap"
    sink = background(*TCP_TOOL, "serve", "sink")
    echo = background(*UDP_SERVER, "echo")
    background(*UDP_SERVER, "dns", "--port", "53", "--answer", "192.0.2.53")
    guest, daemon = slirp(None, extra=["--pcap", str(pcap)])
    sent = guest.run([*TCP_TOOL, "send", "10.0.2.2", sink.line, "--size", str(SIZE)], timeout=60)
    assert sent.stdout.decode().split()[0] == str(SIZE), daemon.stderr
    answer = guest.run([*UDP_CLIENT, "once", "10.0.2.2", echo.line, "--payload", "hi"])
    assert answer.stdout.decode().strip() == "hi"
    dns = guest.run([*UDP_CLIENT, "dns", "10.0.2.3", "53"])
    assert dns.stdout.decode().strip() == "192.0.2.53"
    assert f"{PINGS} packets received" in pings(guest), daemon.stderr
    daemon.signal(signal.SIGTERM)  # the rest of the buffer goes to the file at exit
    assert daemon.wait(10) == 0, daemon.stderr

    malformed = subprocess.run(
        [tshark, "-n", "-r", str(pcap), "-Y", "_ws.malformed"], capture_output=True, timeout=60
    )
    assert malformed.returncode == 0, malformed.stderr.decode()
    assert malformed.stdout.decode() == ""
    names = ("ip.src", "ip.dst", "tcp.dstport", "tcp.seq", "tcp.len")
    tcp = fields(tshark, pcap, *names, display="tcp")
    to_sink = [
        row for row in tcp if row[:3] == ["10.0.2.100", "10.0.2.2", sink.line] and row[4] != "0"
    ]
    # Every byte is there (relative sequence numbers: the first data byte is 1), counted once.
    assert max(int(row[3]) + int(row[4]) for row in to_sink) == 1 + SIZE
    assert sum(int(row[4]) for row in {tuple(row) for row in to_sink}) == SIZE
    assert any(row[:2] == ["10.0.2.2", "10.0.2.100"] for row in tcp)
    udp = fields(tshark, pcap, "ip.src", "ip.dst", "udp.srcport", "udp.dstport", display="udp")
    assert ["10.0.2.2", "10.0.2.100", echo.line] == next(
        row[:3] for row in udp if row[2] == echo.line
    )
    assert any(row[1] == "10.0.2.2" and row[3] == echo.line for row in udp)
    answers = fields(tshark, pcap, "ip.src", "dns.a", display="dns.flags.response == 1")
    assert answers == [["10.0.2.3", "192.0.2.53"]]
    icmp = fields(tshark, pcap, "ip.src", "icmp.type", display="icmp")
    assert icmp.count(["10.0.2.100", "8"]) == PINGS
    assert icmp.count(["10.0.2.2", "0"]) == PINGS
    assert fields(tshark, pcap, "arp.opcode", display="arp")  # the guest asked for the gateway
    lengths = [int(row[0]) for row in fields(tshark, pcap, "frame.len")]
    print(f"\n{len(lengths)} frames, largest {max(lengths)} bytes")


def test_get_stats_and_sigusr1_count_a_known_pattern_exactly(slirp, api_dir) -> None:
    api = api_dir / "api.sock"
    guest, daemon = slirp(None, extra=["--stats", "-a", str(api)])
    assert f"{PINGS} packets received" in pings(guest), daemon.stderr
    crafted = bad_checksum_frame()
    sent = guest.run([sys.executable, "-c", SEND_BAD_CHECKSUM, crafted.hex()])
    assert int(sent.stdout) == len(crafted)
    wait_until(
        lambda: "udp: bad checksum" in get_stats(api)["drops"], 10, "the crafted frame's drop"
    )
    stats = get_stats(api)
    both = {"frames": PINGS, "bytes": PINGS * PING_FRAME}
    assert stats["protocols"]["icmp"] == {"from_guest": both, "to_guest": both}
    assert stats["protocols"]["udp"]["from_guest"] == {"frames": 1, "bytes": len(crafted)}
    assert stats["drops"]["udp: bad checksum"] == 1
    assert stats["api_requests"] >= 2  # the wait's requests, and this one
    assert stats["flows"] == {"tcp": 0, "udp": 0, "ping": 0}  # the gateway answers pings itself
    assert stats["frames"]["from_guest"]["frames"] >= PINGS + 1
    assert stats["peak_rss_kib"] > 1000
    requests = stats["api_requests"]
    assert get_stats(api)["api_requests"] == requests + 1

    daemon.signal(signal.SIGUSR1)
    wait_until(lambda: '{"frames":' in daemon.stderr, 10, "the SIGUSR1 line")
    line = next(text for text in daemon.stderr.splitlines() if text.startswith('{"frames":'))
    reported = json.loads(line)
    assert reported["protocols"]["icmp"] == {"from_guest": both, "to_guest": both}
    assert reported["drops"]["udp: bad checksum"] == 1
    assert reported["api_requests"] == requests + 1
    assert daemon.poll() is None  # SIGUSR1 reports; it does not end the daemon


def test_get_stats_without_stats_counts_totals_only(slirp, api_dir) -> None:
    api = api_dir / "api.sock"
    guest, daemon = slirp(None, extra=["-a", str(api)])
    assert f"{PINGS} packets received" in pings(guest), daemon.stderr
    stats = get_stats(api)
    assert stats["protocols"] is None
    assert stats["frames"]["from_guest"]["frames"] >= PINGS
    assert stats["frames"]["to_guest"]["bytes"] >= PINGS * PING_FRAME
    unknown = api_request(str(api), {"execute": "get_stat"})
    assert unknown == b'{"error":{"desc":"bad request: unknown execute"}}'


def test_debug_logs_a_tcp_and_a_udp_flow_life_and_a_drop(slirp, background) -> None:
    sink = background(*TCP_TOOL, "serve", "sink")
    echo = background(*UDP_SERVER, "echo")
    guest, daemon = slirp(None, extra=["--debug"])
    size = 5000
    guest.run([*TCP_TOOL, "send", "10.0.2.2", sink.line, "--size", str(size)], timeout=60)
    reply = len(f"{size} ") + 64  # the sink's answer: the size and a SHA-256 in hex
    wait_until(lambda: " closed 10.0.2.100:" in daemon.stderr, 10, "the TCP flow's end")
    lines = [line for line in daemon.stderr.splitlines() if line.startswith("debug: tcp")]
    assert len(lines) == 2, daemon.stderr
    opened, closed = lines
    assert " open 10.0.2.100:" in opened and opened.endswith(f" -> 10.0.2.2:{sink.line}")
    assert " closed 10.0.2.100:" in closed, closed
    assert closed.endswith(f", {size} bytes from guest, {reply} bytes to guest"), closed

    guest.run([*UDP_CLIENT, "once", "10.0.2.2", echo.line, "--payload", "hello"])
    wait_until(lambda: "debug: udp flow" in daemon.stderr, 10, "the UDP flow's line")
    assert any(
        line.startswith("debug: udp flow ") and line.endswith(f" -> 10.0.2.2:{echo.line}")
        for line in daemon.stderr.splitlines()
    )
    crafted = bad_checksum_frame()
    guest.run([sys.executable, "-c", SEND_BAD_CHECKSUM, crafted.hex()])
    wait_until(lambda: "debug: drop: udp: bad checksum" in daemon.stderr, 10, "the drop line")
