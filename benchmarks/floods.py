"""Floods against the daemon, with figures (issue 13; RELIABILITY.md).

Each flood runs against a fresh root-style guest and daemon (``--configure --mtu 1500 -r 3 -a
SOCK PID tap0``) inside the loopback-only rig, while the guest pings the gateway every 0.1 s.
Sampled every 0.2 s: the daemon's VmRSS, open fds and, for ours, ``get_stats``'s live flows.
After the flood and a settle time (sampling /proc only: an API request would keep the daemon
from trimming its heap), the same figures again, and one TCP connection through the daemon must
still work.

  syn-closed   100,000 SYNs in 10 s to 10.0.2.2:1 (nothing listens: refused)
  syn-held     100,000 SYNs in 10 s to a host port that listens and never accepts
  udp-flows    65,535 UDP flows (one datagram from each source port) to 10.0.2.2:9
  frags        10,000 incomplete IPv4 fragment sets (first fragment only)
  scan         a connect to every port of 10.0.2.2, at most 10,000 in flight

    python3 -m benchmarks.floods                       # every flood, both binaries (~15 min)
    python3 -m benchmarks.floods --only syn-held --variants ours
    python3 -m benchmarks.floods --json benchmarks/results/floods.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.common import Session, machine, quietly_close, write_document
from benchmarks.memory import rss_kib
from tests.rig import (
    CHECKOUT,
    REFERENCE,
    Background,
    Daemon,
    Guest,
    Outer,
    api_request,
    fd_count,
    start_ready,
)
from tests.rig.namespaces import end_process

FLOOD = str(CHECKOUT / "tests" / "tools" / "flood.py")
HELD_PORT = 18999

# A host listener that never accepts: the kernel completes a backlog's worth of handshakes and
# drops further SYNs, so the daemon's connects stay pending (half-open from the guest's view).
HOLDER = f"""
import socket, sys, time
l = socket.socket()
l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind(("127.0.0.1", {HELD_PORT}))
l.listen(8)
print("ready", flush=True)
time.sleep(3600)  # ended by PID
"""


@dataclass(frozen=True)
class Flood:
    name: str
    argv: list[str]  # after flood.py
    settle: float  # seconds after the flood before the "after" figures


FLOODS = [
    Flood("syn-closed", ["syn", "10.0.2.2", "1", "--count", "100000", "--seconds", "10"], 5),
    Flood(
        "syn-held",
        ["syn", "10.0.2.2", str(HELD_PORT), "--count", "100000", "--seconds", "10"],
        85,  # the 75 s connect timer reaps what is left
    ),
    # 250 s: UDP flows idle out after 240 s
    Flood("udp-flows", ["udp", "10.0.2.2", "9", "--count", "65535", "--seconds", "10"], 250),
    Flood("frags", ["frags", "10.0.2.2", "--count", "10000", "--seconds", "5"], 35),
    Flood("scan", ["ports", "10.0.2.2", "--inflight", "10000", "--seconds", "120"], 5),
]


@dataclass
class Result:
    flood: str
    variant: str
    baseline_rss_kib: int | None = None
    peak_rss_kib: int | None = None
    after_rss_kib: int | None = None
    baseline_fds: int | None = None
    peak_fds: int | None = None
    after_fds: int | None = None
    peak_flows: int | None = None
    after_flows: int | None = None
    ping: dict[str, object] = field(default_factory=dict)
    flood_output: dict[str, object] = field(default_factory=dict)
    drops: dict[str, object] = field(default_factory=dict)
    alive: bool = False
    works_after: bool = False
    seconds: float = 0.0
    error: str = ""


def get_stats(api: str) -> dict[str, object]:
    try:
        reply = json.loads(api_request(api, {"execute": "get_stats"}))
    except (OSError, ValueError):
        return {}
    stats = reply.get("return", {})
    return stats if isinstance(stats, dict) else {}


def live_flows(api: str) -> int | None:
    flows = get_stats(api).get("flows")
    if isinstance(flows, dict):
        return sum(int(v) for v in flows.values() if isinstance(v, int))
    return int(flows) if isinstance(flows, int) else None


def one_flood(outer: Outer, flood: Flood, reference: bool, api_dir: Path) -> Result:
    label = "slirp4netns" if reference else "pyslirp4netns"
    result = Result(flood.name, label)
    api = str(api_dir / f"{label}-{flood.name}.sock")
    guest = Guest(outer, rootless=False)
    daemon: Daemon | None = None
    holder: Background | None = None
    started = time.monotonic()
    try:
        program = [REFERENCE] if reference else None
        args = ["-c", "--mtu", "1500", "-a", api, "-r", "3", str(guest.pid), "tap0"]
        daemon = start_ready(outer, args, program=program)
        pid = daemon.pid
        if os.environ.get("FLOODS_DEBUG"):
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
            print(f"# daemon {pid}: {cmd!r} cwd {os.readlink(f'/proc/{pid}/cwd')}", file=sys.stderr)
        if flood.name == "syn-held":
            holder = Background(outer.prefix(), [sys.executable, "-c", HOLDER])
        time.sleep(1.0)
        result.baseline_rss_kib, result.baseline_fds = rss_kib(pid), fd_count(pid)
        peaks: dict[str, int] = {}

        def sample(flows: bool = True) -> None:
            for key, value in (
                ("rss", rss_kib(pid)),
                ("fds", fd_count(pid)),
                ("flows", live_flows(api) if flows and not reference else None),
            ):
                if value is not None:
                    peaks[key] = max(peaks.get(key, 0), value)

        ping_out: list[str] = []
        flood_seconds = float(flood.argv[flood.argv.index("--seconds") + 1])
        pinger = threading.Thread(
            target=lambda: ping_out.append(
                guest.run(
                    [
                        sys.executable,
                        FLOOD,
                        "ping",
                        "10.0.2.2",
                        "--seconds",
                        str(flood_seconds + 2),
                    ],
                    timeout=flood_seconds + 30,
                ).stdout.decode()
            ),
            daemon=True,
        )
        pinger.start()
        proc = subprocess.Popen(
            outer.prefix() + guest.prefix() + [sys.executable, FLOOD, *flood.argv],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + flood_seconds + 180
            while proc.poll() is None and time.monotonic() < deadline:
                sample()
                time.sleep(0.2)
            sample()
        finally:
            end_process(proc)
        assert proc.stdout is not None
        output = proc.stdout.read().decode(errors="replace")
        proc.stdout.close()
        try:
            result.flood_output = json.loads(output.strip().splitlines()[-1])
        except (ValueError, IndexError):
            result.flood_output = {"output": output[-300:]}
        pinger.join(timeout=flood_seconds + 40)
        if ping_out:
            result.ping = json.loads(ping_out[0].strip().splitlines()[-1])
        # Settling: /proc only. An API request is an event for the daemon's loop, which gives
        # its free memory back only after a second without any (shell/heap.py).
        settle_end = time.monotonic() + flood.settle
        while time.monotonic() < settle_end:
            sample(flows=False)
            time.sleep(0.5)
        result.peak_rss_kib, result.peak_fds = peaks.get("rss"), peaks.get("fds")
        result.peak_flows = peaks.get("flows")
        result.after_rss_kib, result.after_fds = rss_kib(pid), fd_count(pid)
        result.after_flows = None if reference else live_flows(api)
        if not reference:
            drops = get_stats(api).get("drops")
            result.drops = drops if isinstance(drops, dict) else {}
        result.alive = daemon.poll() is None
        if holder is not None:
            quietly_close(holder)
            holder = None
        result.works_after = connection_works(outer, guest)
    except Exception as e:
        result.error = f"{type(e).__name__}: {e}"
    finally:
        result.seconds = round(time.monotonic() - started, 1)
        for thing in (holder, daemon, guest):
            if thing is not None:
                quietly_close(thing)
    return result


def connection_works(outer: Outer, guest: Guest) -> bool:
    """One TCP round trip guest -> host loopback through the daemon, after the flood."""
    server = Background(
        outer.prefix(),
        [
            sys.executable,
            "-c",
            "import socket;l=socket.socket();l.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);"
            "l.bind(('127.0.0.1',18998));l.listen(1);"
            "print('ready',flush=True);c,_=l.accept();c.sendall(c.recv(100));c.close()",
        ],
    )
    try:
        out = guest.run(
            [
                sys.executable,
                "-c",
                "import socket;s=socket.create_connection(('10.0.2.2',18998),timeout=10);"
                "s.sendall(b'after');print(s.recv(100).decode())",
            ],
            timeout=30,
            check=False,
        )
        return out.stdout.decode().strip() == "after"
    finally:
        quietly_close(server)


def mib(kib: int | None) -> str:
    return "-" if kib is None else f"{kib / 1024:.1f}"


def table(results: Sequence[Result]) -> str:
    head = (
        f"{'flood':11} {'variant':14} {'RSS base/peak/after MiB':>24} {'fds base/peak/after':>20} "
        f"{'flows peak/after':>17} {'ping worst/lost':>16} alive works"
    )
    lines = [head]
    for r in results:
        rss = f"{mib(r.baseline_rss_kib)}/{mib(r.peak_rss_kib)}/{mib(r.after_rss_kib)}"
        fds = f"{r.baseline_fds}/{r.peak_fds}/{r.after_fds}"
        flows = f"{r.peak_flows}/{r.after_flows}" if r.peak_flows is not None else "-"
        ping = f"{r.ping.get('worst_ms', '-')}ms/{r.ping.get('lost', '-')}" if r.ping else "-"
        lines.append(
            f"{r.flood:11} {r.variant:14} {rss:>24} {fds:>20} {flows:>17} {ping:>16} "
            f"{'yes' if r.alive else 'NO':5} {'yes' if r.works_after else 'NO'}"
            + (f"  {r.error}" if r.error else "")
        )
        lines.append(f"{'':27}flood: {json.dumps(r.flood_output)}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m benchmarks.floods", description=__doc__)
    p.add_argument("--only", nargs="*", choices=[f.name for f in FLOODS])
    p.add_argument("--variants", nargs="*", choices=["ours", "slirp4netns"])
    p.add_argument("--json", metavar="FILE")
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        print("floods.py: needs root (namespaces and taps)", file=sys.stderr)
        return 2
    floods = [f for f in FLOODS if not args.only or f.name in args.only]
    variants = args.variants or ["ours", "slirp4netns"]
    print(f"# {machine()}", flush=True)
    results: list[Result] = []
    api_dir = Path("/tmp/floods-api")
    api_dir.mkdir(exist_ok=True)
    with Session() as session:
        for flood in floods:
            for variant in variants:
                result = one_flood(session.outer, flood, variant == "slirp4netns", api_dir)
                results.append(result)
                print(f"{flood.name} {variant}: {result}", file=sys.stderr, flush=True)
    print(table(results))
    if args.json:
        runs: list[dict[str, object]] = [vars(r) for r in results]
        write_document(args.json, "floods", session.elapsed(), {}, runs, [])
        print(f"# written to {args.json}")
    return session.status


if __name__ == "__main__":
    sys.exit(main())
