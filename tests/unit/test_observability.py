"""The pure parts of --pcap, stats and --debug: the pcap writer, per-protocol counting, the
observing tap port over a socketpair, the get_stats verb, the options, and the core's debug
lines."""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from pyslirp4netns import cli
from pyslirp4netns.config import Config
from pyslirp4netns.core import api, events
from pyslirp4netns.core.datagrams import UDP_TIMEOUT
from pyslirp4netns.core.jsonreader import Reader
from pyslirp4netns.core.stack import Stack
from pyslirp4netns.core.stats import (
    FROM_GUEST,
    TO_GUEST,
    LoggedDrops,
    ProtocolCounts,
    classify,
    flow_line,
    render,
)
from pyslirp4netns.shell.apiserver import ApiServer
from pyslirp4netns.shell.observe import ObservedTapPort
from pyslirp4netns.shell.pcap import GLOBAL_HEADER, RECORD, SNAPLEN, PcapWriter
from pyslirp4netns.shell.tap import READ_BATCH, Tap, TapPort
from pyslirp4netns.wire import icmpv6, vnet
from pyslirp4netns.wire.codec import Buffer
from tests.rig import frames

CONFIG = Config(target="1", pid=1)
REMOTE = socket.inet_aton("198.51.100.10")


def read_pcap(data: bytes) -> list[tuple[float, int, bytes]]:
    """(time, original length, bytes) of each record; asserts the global header."""
    magic, major, minor, zone, sigfigs, snaplen, linktype = struct.unpack_from("<IHHiIII", data)
    assert (magic, major, minor, zone, sigfigs, snaplen, linktype) == (
        0xA1B2C3D4,
        2,
        4,
        0,
        0,
        SNAPLEN,
        1,
    )
    records, offset = [], len(GLOBAL_HEADER)
    while offset < len(data):
        seconds, micros, included, original = RECORD.unpack_from(data, offset)
        offset += RECORD.size
        records.append((seconds + micros / 1e6, original, data[offset : offset + included]))
        assert included == original
        offset += included
    assert offset == len(data)
    return records


# -- the pcap writer ----------------------------------------------------------------------------
def test_pcap_records_are_whole_frames_with_microsecond_times(tmp_path: Path) -> None:
    path = tmp_path / "a.pcap"
    writer = PcapWriter.open(str(path))
    big = bytes(range(256)) * 256  # a 64 KiB GSO super-frame is written whole
    writer.frame([b"head", b"payload"], 1700000000.25)
    writer.frame([big], 1700000001.000001)
    writer.close()
    assert os.stat(path).st_mode & 0o777 == 0o600
    records = read_pcap(path.read_bytes())
    assert [(round(t, 6), n, data) for t, n, data in records] == [
        (1700000000.25, 11, b"headpayload"),
        (1700000001.000001, 65536, big),
    ]


def test_pcap_writes_are_buffered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real_write = os.write

    def counting_write(fd: int, data: Buffer) -> int:
        calls.append(len(data))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", counting_write)
    writer = PcapWriter.open(str(tmp_path / "b.pcap"))
    for i in range(1000):
        writer.frame([bytes(60)], float(i))
    assert calls == []  # 76 KB: still in the buffer
    writer.flush()
    writer.flush()  # nothing left: no empty write
    assert calls == [len(GLOBAL_HEADER) + 1000 * (RECORD.size + 60)]
    writer.close()


def test_pcap_stops_at_the_size_bound(tmp_path: Path) -> None:
    path = tmp_path / "c.pcap"
    lines: list[str] = []
    limit = len(GLOBAL_HEADER) + 3 * (RECORD.size + 100)
    writer = PcapWriter.open(str(path), limit, lines.append)
    for _ in range(5):
        writer.frame([bytes(100)], 1.0)
    writer.close()
    assert len(read_pcap(path.read_bytes())) == 3
    assert path.stat().st_size == limit
    assert lines == [f"pcap: --pcap-max-size of {limit} bytes reached; capture stopped"]
    assert writer.stopped and writer.records == 3


def test_pcap_write_error_stops_the_capture_once() -> None:
    lines: list[str] = []
    r, w = os.pipe()
    os.close(r)  # EPIPE on write (SIGPIPE is ignored by Python)
    writer = PcapWriter(w, log=lines.append)
    writer.frame([bytes(10)], 0.0)
    writer.flush()
    writer.frame([bytes(10)], 0.0)
    writer.close()
    assert lines == ["pcap: write: Broken pipe; capture stopped"]


# -- classification and counts ----------------------------------------------------------------
def test_classify_every_protocol() -> None:
    hop_by_hop = bytes((icmpv6.NEXT_HEADER, 0)) + bytes(6)  # then ICMPv6 (an MLD report)
    cases = {
        frames.arp_request_frame(frames.GATEWAY4): ("arp", None),
        frames.tcp4_frame(REMOTE, 80, 0x02): ("ipv4", "tcp"),
        frames.udp4_frame(REMOTE, 53, b"q"): ("ipv4", "udp"),
        frames.echo4_frame(REMOTE, b"ping"): ("ipv4", "icmp"),
        frames.ipv4_frame(REMOTE, 47, bytes(8)): ("ipv4", "ip-other"),
        frames.udp6_frame(frames.GATEWAY6, 53, b"q"): ("ipv6", "udp"),
        frames.icmp6_frame(frames.ALL_ROUTERS6, 133, bytes(4)): ("ipv6", "icmpv6"),
        frames.ipv6_frame(frames.ALL_ROUTERS6, 0, hop_by_hop + bytes(8)): ("ipv6", "icmpv6"),
        frames.ethernet_frame(0x8100, bytes(50)): ("other", None),
        frames.ethernet_frame(0x0800, bytes(5)): ("ipv4", "ip-other"),  # truncated
    }
    for frame, expected in cases.items():
        assert classify(frame) == expected


def test_protocol_counts_snapshot() -> None:
    counts = ProtocolCounts()
    ping = frames.echo4_frame(REMOTE, bytes(56))
    arp = frames.arp_request_frame(frames.GATEWAY4)
    for _ in range(3):
        counts.count(FROM_GUEST, ping, len(ping))
    counts.count(TO_GUEST, ping[:64], len(ping))  # a head and the whole length
    counts.count(FROM_GUEST, arp, len(arp))
    n = len(ping)
    assert n == 14 + 20 + 8 + 56
    assert counts.snapshot() == {
        "ethernet": {
            "from_guest": {"frames": 4, "bytes": 3 * n + len(arp)},
            "to_guest": {"frames": 1, "bytes": n},
        },
        "arp": {
            "from_guest": {"frames": 1, "bytes": len(arp)},
            "to_guest": {"frames": 0, "bytes": 0},
        },
        "ipv4": {
            "from_guest": {"frames": 3, "bytes": 3 * n},
            "to_guest": {"frames": 1, "bytes": n},
        },
        "icmp": {
            "from_guest": {"frames": 3, "bytes": 3 * n},
            "to_guest": {"frames": 1, "bytes": n},
        },
    }
    assert render({"a": [1, None], "b": "x"}) == '{"a":[1,null],"b":"x"}'


# -- the tap ports, over a SOCK_SEQPACKET pair (one message, one frame) --------------------------
class Sink:
    def __init__(self) -> None:
        self.frames: list[bytes] = []

    def receive_frame(
        self, frame: Buffer, now: float, csum_done: bool = False, gso_size: int = 0
    ) -> None:
        self.frames.append(bytes(frame))


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    a.setblocking(False)
    b.settimeout(5)
    try:
        yield a, b
    finally:
        a.close()
        b.close()


def test_tap_port_counts_totals_without_the_vnet_header(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, guest = pair
    port = TapPort(Tap(ours.fileno(), "t", True, 0))
    ping = frames.echo4_frame(REMOTE, bytes(56))
    for _ in range(2):
        guest.send(vnet.PLAIN + ping)
    sink = Sink()
    assert port.read(sink, 0.0) is None
    assert sink.frames == [ping, ping]
    port.write([[vnet.PLAIN, ping[:20], ping[20:]]])
    assert guest.recv(70000) == vnet.PLAIN + ping
    assert (port.frames_in, port.bytes_in, port.frames_out, port.bytes_out) == (
        2,
        2 * len(ping),
        1,
        len(ping),
    )


def test_tap_port_reads_at_most_a_batch_per_wakeup(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    """A guest sending faster than the daemon handles must not keep one read going for ever:
    after READ_BATCH frames the loop gets its turn (host events, timers, writes)."""
    ours, guest = pair
    guest.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    port = TapPort(Tap(ours.fileno(), "t", False, 0))
    ping = frames.echo4_frame(REMOTE, b"")
    for _ in range(READ_BATCH + 10):
        guest.send(ping)
    sink = Sink()
    assert port.read(sink, 0.0) is None
    assert len(sink.frames) == READ_BATCH
    assert port.read(sink, 0.0) is None
    assert len(sink.frames) == READ_BATCH + 10


class RaisingSink(Sink):
    """A stack with a bug: the frame that starts with b"bad" raises."""

    def receive_frame(
        self, frame: Buffer, now: float, csum_done: bool = False, gso_size: int = 0
    ) -> None:
        if bytes(frame[:3]) == b"bad":
            raise IndexError("a bug")
        super().receive_frame(frame, now, csum_done, gso_size)


def test_a_frame_the_stack_raises_on_is_dropped_and_reported_and_the_rest_go_on(
    pair: tuple[socket.socket, socket.socket], capsys: pytest.CaptureFixture[str]
) -> None:
    """One guest frame that hits a bug must not end the daemon and every other flow with it."""
    ours, guest = pair
    port = TapPort(Tap(ours.fileno(), "t", False, 0))
    for frame in (b"good one" * 8, b"bad frame" * 8, b"good two" * 8):
        guest.send(frame)
    sink = RaisingSink()
    assert port.read(sink, 0.0) is None
    assert sink.frames == [b"good one" * 8, b"good two" * 8]
    assert port.bugs == 1
    assert port.frames_in == 3
    err = capsys.readouterr().err
    assert "BUG: a guest frame made the stack raise; frame dropped:" in err
    assert "IndexError: a bug" in err


def test_observed_port_captures_and_counts_both_ways(
    tmp_path: Path, pair: tuple[socket.socket, socket.socket]
) -> None:
    ours, guest = pair
    path = tmp_path / "d.pcap"
    port = ObservedTapPort(Tap(ours.fileno(), "t", True, 0), pcap=PcapWriter.open(str(path)))
    request = frames.echo4_frame(REMOTE, bytes(56))
    reply = frames.udp4_frame(frames.GUEST4, 5000, b"answer")
    guest.send(vnet.PLAIN + request)
    sink = Sink()
    port.read(sink, 0.0)
    header = vnet.encode(vnet.NEEDS_CSUM, vnet.GSO_NONE, 42, 0, 34, 6)
    port.write([[header, reply[:42], reply[42:]]])
    port.close()
    assert sink.frames == [request]
    assert guest.recv(70000) == header + reply
    assert [data for _, _, data in read_pcap(path.read_bytes())] == [request, reply]
    snapshot = port.counts.snapshot()
    assert snapshot["icmp"]["from_guest"] == {"frames": 1, "bytes": len(request)}
    assert snapshot["udp"]["to_guest"] == {"frames": 1, "bytes": len(reply)}
    assert (port.frames_in, port.frames_out, port.bytes_out) == (1, 1, len(reply))


# -- the get_stats verb -----------------------------------------------------------------------
def execute(request: bytes) -> bytes | api.Command:
    reader = Reader(limit=api.MAX_REQUEST)
    outcome = reader.feed(request) or reader.finish()
    return api.Api(CONFIG).execute(outcome)


def test_get_stats_is_a_command_and_other_unknown_verbs_keep_the_error() -> None:
    assert isinstance(execute(b'{"execute":"get_stats"}'), api.GetStats)
    assert isinstance(execute(b'{"execute":"get_stats","arguments":{"x":1}}'), api.GetStats)
    assert execute(b'{"execute":"get_statistics"}') == api.ERR_UNKNOWN
    assert execute(b'{"execute":"GET_STATS"}') == api.ERR_UNKNOWN


def test_api_server_answers_get_stats_and_counts_requests() -> None:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        asked: list[int] = []

        def stats() -> bytes:
            asked.append(server.requests)
            return b'{"api_requests":%d}' % server.requests

        server = ApiServer(listener, api.Api(CONFIG), lambda *a: None, lambda fd: None, stats=stats)
        reader = Reader(limit=api.MAX_REQUEST)
        list_outcome = reader.feed(b'{"execute":"list_hostfwd"}')
        assert list_outcome is not None
        server.requests += 1
        assert server._execute(list_outcome) == b'{"entries":[]}'
        reader = Reader(limit=api.MAX_REQUEST)
        outcome = reader.feed(b'{"execute":"get_stats"}')
        assert outcome is not None
        server.requests += 1  # as _answer does, before executing: get_stats counts itself
        assert server._execute(outcome) == b'{"return":{"api_requests":2}}'
        assert asked == [2]
    finally:
        listener.close()


# -- options ------------------------------------------------------------------------------------
def test_observability_options_parse() -> None:
    config = cli.parse(["--pcap=/tmp/x.pcap", "--stats", "--debug", "5", "tap0"], "prog")
    assert (config.pcap, config.pcap_max_size, config.stats, config.debug) == (
        "/tmp/x.pcap",
        100 << 20,
        True,
        True,
    )
    for text, size in (("1000", 1000), ("2K", 2048), ("3M", 3 << 20), ("1G", 1 << 30)):
        config = cli.parse(["--pcap", "f", f"--pcap-max-size={text}", "5", "tap0"], "prog")
        assert config.pcap_max_size == size
    default = cli.parse(["5", "tap0"], "prog")
    assert (default.pcap, default.stats, default.debug) == (None, False, False)


@pytest.mark.parametrize("value", ["", "10", "-5", "1.5M", "5T", "1k", "٣"])
def test_bad_pcap_max_size_is_a_usage_error(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        cli.parse([f"--pcap-max-size={value}", "5", "tap0"], "prog")
    assert e.value.code == 1
    captured = capsys.readouterr()
    assert captured.err == "--pcap-max-size must be bytes, or KiB/MiB/GiB as K/M/G\n"
    assert captured.out.startswith("Usage: prog ")


@pytest.mark.parametrize("option", ["--pca=x", "--stat", "--debu", "--pcap-max=5"])
def test_extensions_are_not_abbreviated(option: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.parse([option, "5", "tap0"], "prog")
    assert "unrecognized option" in capsys.readouterr().err


def test_help_does_not_mention_the_extensions() -> None:
    for name in ("pcap", "stats", "debug"):
        assert name not in cli.usage_text("prog")


# -- --debug in the core --------------------------------------------------------------------
def test_logged_drops_count_and_ask_for_a_line() -> None:
    requests: list[events.Request] = []
    dropped = LoggedDrops(requests)
    dropped["udp: bad checksum"] += 1
    dropped["udp: bad checksum"] += 1
    assert dropped == {"udp: bad checksum": 2}
    assert requests == [events.Log("debug: drop: udp: bad checksum")] * 2


def test_flow_lines() -> None:
    guest, remote = (frames.GUEST4, 40000), (REMOTE, 80)
    assert flow_line("tcp", 7, "open", guest, remote) == (
        "debug: tcp flow 7 open 10.0.2.100:40000 -> 198.51.100.10:80"
    )
    six = socket.inet_pton(socket.AF_INET6, "fd00::100")
    assert flow_line("udp", 2, "closed (idle)", (six, 5), (six, 53), 10, 20) == (
        "debug: udp flow 2 closed (idle) [fd00::100]:5 -> [fd00::100]:53, "
        "10 bytes from guest, 20 bytes to guest"
    )


def logs(stack: Stack) -> list[str]:
    return [r.text for r in stack.take_requests() if isinstance(r, events.Log)]


def test_debug_stack_logs_a_udp_flow_life_and_a_drop() -> None:
    stack = Stack(replace(CONFIG, debug=True))
    stack.receive_frame(frames.udp4_frame(REMOTE, 7, b"hello"), 1.0)
    requests = stack.take_requests()
    opened = [r for r in requests if isinstance(r, events.DatagramOpen)]
    assert len(opened) == 1
    flow = opened[0].flow
    assert [r for r in requests if isinstance(r, events.Log)] == [
        events.Log(f"debug: udp flow {flow} open 10.0.2.100:5000 -> 198.51.100.10:7")
    ]
    stack.receive_frame(frames.udp4_frame(REMOTE, 7, b"again"), 1.5)
    stack.datagrams.udp_received(flow, b"answer!", 2.0)
    stack.on_timer(2.0 + UDP_TIMEOUT)
    assert logs(stack) == [
        f"debug: udp flow {flow} closed (idle) 10.0.2.100:5000 -> 198.51.100.10:7, "
        "10 bytes from guest, 7 bytes to guest"
    ]
    bad = bytearray(frames.udp4_frame(REMOTE, 7, b"x"))
    bad[-3] ^= 0xFF  # the UDP checksum
    stack.receive_frame(bytes(bad), 3.0)
    assert logs(stack) == ["debug: drop: udp: bad checksum"]
    assert stack.dropped["udp: bad checksum"] == 1


def test_debug_stack_logs_the_open_line() -> None:
    stack = Stack(replace(CONFIG, debug=True))
    stack.receive_frame(frames.echo4_frame(REMOTE, b"data", ident=9), 1.0)
    assert logs(stack) == ["debug: ping flow 1 open 10.0.2.100:9 -> 198.51.100.10:0"]


def test_without_debug_the_stack_logs_nothing() -> None:
    stack = Stack(CONFIG)
    stack.receive_frame(frames.udp4_frame(REMOTE, 7, b"hello"), 1.0)
    bad = bytearray(frames.udp4_frame(REMOTE, 7, b"x"))
    bad[-3] ^= 0xFF
    stack.receive_frame(bytes(bad), 1.0)
    assert logs(stack) == []
    assert type(stack.dropped).__name__ == "Counter"
