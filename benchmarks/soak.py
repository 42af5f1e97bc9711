"""Soak: mixed TCP, UDP, DNS and ICMP through one daemon for minutes, with its RSS slope, fd count
and tracebacks (issue 13; RELIABILITY.md).

One root-style guest and one daemon (``--configure --mtu 1500 -a SOCK -r 3 PID tap0``) inside the
loopback-only rig; on the host side (the Outer namespace) a TCP echo server, a UDP echo server,
the fake resolver on 127.0.0.1:53 that the rig's resolv.conf names, and a "remote" host
198.51.100.10 (a veth-joined namespace) to ping. The guest runs tests/tools/soak_client.py:
short TCP connections (20/s, 1 B-64 KiB echoed), one long-lived TCP connection (10 round trips/s),
UDP echo (50/s, 1-8,000 bytes, a new flow every 50), DNS queries to 10.0.2.3 (20/s, a new flow
each) and pings to the gateway and the remote host (10/s).

Every --sample seconds: the daemon's VmRSS, its open fds and (ours) get_stats's live flows. At
the end: the RSS slope in MiB/hour by least squares over the samples after --warmup seconds
(and over all of them), fds at start and end, the client's successes and errors, and every
Python traceback on the daemon's stderr.

    python3 -m benchmarks.soak --minutes 10
    python3 -m benchmarks.soak --minutes 2 --variants ours slirp4netns --json /tmp/soak.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.common import Session, machine, quietly_close, signals_deferred, write_document
from benchmarks.floods import get_stats, live_flows
from benchmarks.memory import Lines, rss_kib
from tests.rig import (
    REFERENCE,
    TCP_TOOL,
    TOOLS,
    UDP_SERVER,
    Background,
    Daemon,
    Guest,
    Outer,
    Remote,
    end_process,
    fd_count,
    start_ready,
)

CLIENT = [sys.executable, str(TOOLS / "soak_client.py")]


@dataclass
class Soak:
    variant: str
    seconds: float = 0.0
    samples: list[tuple[float, int, int, int | None]] = field(default_factory=list)  # t, KiB, fds
    slope_mib_per_hour: float | None = None  # after the warm-up
    slope_all_mib_per_hour: float | None = None
    rss_start_kib: int | None = None
    rss_end_kib: int | None = None
    rss_peak_kib: int | None = None
    fds_start: int | None = None
    fds_end: int | None = None
    fds_peak: int | None = None
    flows_end: int | None = None
    client: dict[str, object] = field(default_factory=dict)
    tracebacks: list[str] = field(default_factory=list)
    stderr_lines: int = 0
    drops: dict[str, object] = field(default_factory=dict)
    alive: bool = False
    error: str = ""


def slope_per_hour(points: Sequence[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, MiB) points, in MiB per hour."""
    if len(points) < 2:
        return None
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    if var == 0:
        return None
    cov = sum((t - mean_t) * (y - mean_y) for t, y in points)
    return cov / var * 3600


def tracebacks(stderr: str) -> list[str]:
    """Each "Traceback (most recent call last):" block of the daemon's stderr."""
    found: list[str] = []
    lines = stderr.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("Traceback (most recent call last):"):
            block = [line]
            for more in lines[i + 1 :]:
                block.append(more)
                if not more.startswith((" ", "\t")):  # the exception line ends the block
                    break
            found.append("\n".join(block))
    return found


def one_soak(outer: Outer, reference: bool, args: argparse.Namespace, api_dir: Path) -> Soak:
    label = "slirp4netns" if reference else "pyslirp4netns"
    result = Soak(label)
    api = str(api_dir / f"soak-{label}.sock")
    things: list[object] = []
    client: subprocess.Popen[bytes] | None = None
    daemon: Daemon | None = None
    started = time.monotonic()
    try:
        remote = Remote(outer)
        things.append(remote)
        tcp = Background(outer.prefix(), [*TCP_TOOL, "serve", "echo"])
        things.append(tcp)
        udp = Background(outer.prefix(), [*UDP_SERVER, "echo"])
        things.append(udp)
        things.append(Background(outer.prefix(), [*UDP_SERVER, "dns", "--port", "53"]))
        guest = Guest(outer, rootless=False)
        things.append(guest)
        argv = ["-c", "--mtu", str(args.mtu), "-a", api, "-r", "3", str(guest.pid), "tap0"]
        daemon = start_ready(outer, argv, program=[args.reference] if reference else None)
        pid = daemon.pid
        time.sleep(1.0)
        seconds = args.minutes * 60
        client = subprocess.Popen(
            outer.prefix()
            + guest.prefix()
            + [*CLIENT, "--tcp-port", tcp.line, "--udp-port", udp.line]
            + ["--seconds", f"{seconds:g}", "--report", "60"]
            + ["--ping", "10.0.2.2", Remote.REMOTE4],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
        )
        lines = Lines(client)
        begin = time.monotonic()
        next_sample = begin
        final: dict[str, object] = {}
        while time.monotonic() < begin + seconds + 60 and not final:
            now = time.monotonic()
            if now >= next_sample:
                next_sample += args.sample
                rss, fds = rss_kib(pid), fd_count(pid)
                if rss is None or fds is None:
                    break  # the daemon is gone
                flows = None if reference else live_flows(api)
                result.samples.append((round(now - begin, 1), rss, fds, flows))
            line = lines.next(max(0.0, min(next_sample - time.monotonic(), 1.0)))
            if line:
                report = json.loads(line)
                print(f"  {label} {line}", file=sys.stderr, flush=True)
                if report.get("final"):
                    final = report
        result.client = final
        result.alive = daemon.poll() is None
        if result.alive and not reference:
            drops = get_stats(api).get("drops")
            result.drops = drops if isinstance(drops, dict) else {}
            result.flows_end = live_flows(api)
        stderr = daemon.stderr
        result.tracebacks = tracebacks(stderr)
        result.stderr_lines = len(stderr.splitlines())
        summarize(result, args.warmup)
    except Exception as e:
        result.error = f"{type(e).__name__}: {e}"
    finally:
        result.seconds = round(time.monotonic() - started, 1)
        with signals_deferred():
            end_process(client)
            for thing in [daemon, *reversed(things)]:
                if thing is not None:
                    quietly_close(thing)
    return result


def summarize(result: Soak, warmup: float) -> None:
    samples = result.samples
    if not samples:
        return
    result.rss_start_kib, result.fds_start = samples[0][1], samples[0][2]
    result.rss_end_kib, result.fds_end = samples[-1][1], samples[-1][2]
    result.rss_peak_kib = max(s[1] for s in samples)
    result.fds_peak = max(s[2] for s in samples)
    every = [(t, kib / 1024) for t, kib, _, _ in samples]
    result.slope_all_mib_per_hour = slope_per_hour(every)
    result.slope_mib_per_hour = slope_per_hour([p for p in every if p[0] >= warmup])


def mib(kib: int | None) -> str:
    return "-" if kib is None else f"{kib / 1024:.1f}"


def rate(value: float | None) -> str:
    return "-" if value is None else f"{value:+.2f}"


def report(results: Sequence[Soak], warmup: float) -> str:
    lines = [
        f"{'variant':14} {'RSS start/peak/end MiB':>23} {'slope MiB/h':>12} {'(all)':>7} "
        f"{'fds start/peak/end':>19} {'tracebacks':>10} alive"
    ]
    for r in results:
        rss = f"{mib(r.rss_start_kib)}/{mib(r.rss_peak_kib)}/{mib(r.rss_end_kib)}"
        fds = f"{r.fds_start}/{r.fds_peak}/{r.fds_end}"
        lines.append(
            f"{r.variant:14} {rss:>23} {rate(r.slope_mib_per_hour):>12} "
            f"{rate(r.slope_all_mib_per_hour):>7} {fds:>19} {len(r.tracebacks):>10} "
            f"{'yes' if r.alive else 'NO'}" + (f"  {r.error}" if r.error else "")
        )
        lines.append(f"{'':15}client: ok {json.dumps(r.client.get('ok', {}))}")
        lines.append(f"{'':15}client: errors {json.dumps(r.client.get('errors', {}))}")
        if r.flows_end is not None:
            lines.append(f"{'':15}live flows at the end {r.flows_end}; drops {json.dumps(r.drops)}")
        for block in r.tracebacks[:3]:
            lines.append("\n".join(f"{'':15}| {x}" for x in block.splitlines()))
    lines.append(f"# slope: least squares over the samples after {warmup:g} s (and over all)")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python3 -m benchmarks.soak",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--minutes", type=float, default=10.0, help="how long (default 10)")
    p.add_argument("--sample", type=float, default=5.0, help="seconds between samples (5)")
    p.add_argument("--warmup", type=float, default=60.0, help="seconds left out of the slope (60)")
    p.add_argument("--mtu", type=int, default=1500)
    p.add_argument("--variants", nargs="+", choices=["ours", "slirp4netns"], default=["ours"])
    p.add_argument("--reference", default=REFERENCE, help="slirp4netns binary")
    p.add_argument("--json", metavar="FILE")
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        print("soak.py: needs root (namespaces and taps)", file=sys.stderr)
        return 2
    print(f"# {machine()}; {args.minutes:g} min, sample every {args.sample:g} s", flush=True)
    results: list[Soak] = []
    api_dir = Path("/tmp/soak-api")
    api_dir.mkdir(exist_ok=True)
    with Session() as session:
        for variant in args.variants:
            results.append(one_soak(session.outer, variant == "slirp4netns", args, api_dir))
    print(report(results, args.warmup))
    if args.json:
        parameters: dict[str, object] = {"minutes": args.minutes, "mtu": args.mtu}
        runs: list[dict[str, object]] = [vars(r) for r in results]
        write_document(args.json, "soak", session.elapsed(), parameters, runs, [])
        print(f"# written to {args.json}")
    bad = any(r.error or r.tracebacks or not r.alive for r in results)
    return session.status or (1 if bad else 0)


if __name__ == "__main__":
    sys.exit(main())
