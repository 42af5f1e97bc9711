"""Throughput, 1-byte request/response rate and peak RSS: pyslirp4netns against slirp4netns.

Everything runs inside the test rig (the package tests.rig, shared/TESTING.md): one loopback-only
``Outer`` namespace holds the servers and the daemons, and every measurement ("cell") gets a fresh
guest namespace and a fresh daemon started with ``--configure --mtu M -r 3 PID tap0``, so the
daemon's ``VmHWM`` is the peak RSS of that one run. Guest traffic to 10.0.2.2 reaches the servers
on the Outer's 127.0.0.1, and nothing can leave the machine.

Scenarios, each at every ``--mtu``:
  g2h   ``iperf3 -c 10.0.2.2 -t T -J`` in the guest, ``iperf3 -s`` on 127.0.0.1; Gbit/s received
  h2g   the same with ``-R``
  rr    sequential 1-byte round trips on one connection for T seconds; round trips per second
  fwd   host->guest through an API port forward: ``iperf3 -c 127.0.0.1`` in Outer, ``iperf3 -s``
        in the guest; Gbit/s
  fwdsplice  fwd with ours started with ``--port-forward-mode=splice`` (our extension): ours
        only, its ratio is against slirp4netns's fwd row at the same MTU (target >= 3x)
  idle  g2h with 100 idle API clients connected and the gateway pinged every 50 ms; Gbit/s and
        the ping's p99, compared with g2h of the same binary (not run against slirp4netns, whose
        network stops while an API client is idle)
  conns short connections per second: ``--conn-clients`` (4) guest processes each loop on
        connect to 10.0.2.2, send 1 byte, read the echo and the server's EOF, close

Every run also records the daemon's CPU time (utime + stime from /proc/PID/stat, read before and
after the measurement) per GB received, per round trip or per connection, and rr's per-run p50
and p99 round-trip latency; ``--json FILE`` writes every run for benchmarks/report.py.

Binaries alternate (A B C A B C ...) ``--repeat`` times per scenario so that drift of the machine
hits all of them alike; the table gives medians, ours/slirp4netns beside the targets, and with
``--baseline DIR`` ours/baseline, where "baseline" is ``python3 -m pyslirp4netns`` from another
checkout (DIR, e.g. the tree before a change). A cell that fails prints ``fail (reason)`` and the
run goes on. Needs root. Run from the checkout root as
``python3 -m benchmarks.throughput --duration 5 --repeat 3``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.common import Session, machine, quietly_close, signals_deferred, write_document
from tests.rig import (
    CHECKOUT,
    REFERENCE,
    Daemon,
    Guest,
    NotReady,
    Outer,
    api_request,
    binary,
    end_process,
    start_ready,
    status_kib,
    wait_until,
)

GATEWAY = "10.0.2.2"  # the host's loopback as the guest sees it
IPERF_PORT = 5201
ECHO_PORT = 7777
LISTEN_TIMEOUT = 10.0  # a server in Outer to start listening
CONNECT_TIMEOUT = 5.0  # the guest's connect: ours without TCP must fail fast, not in minutes
SLACK = 30.0  # beyond --duration for a client to finish before it is killed

# Targets for ours/slirp4netns (none at other MTUs), issue 11.
TARGETS: dict[tuple[str, int | None], float] = {
    ("g2h", 65520): 4.0,
    ("g2h", 1500): 8.0,
    ("h2g", 65520): 1.5,
    ("h2g", 1500): 3.0,
    ("rr", None): 0.9,
    ("fwd", 65520): 2.0,
    ("fwd", 1500): 2.5,
    ("conns", None): 1.2,
}

# fwd: host->guest through an API port forward (iperf3 client on the host's 127.0.0.1).
# idle: g2h with 100 idle API clients connected and a ping to the gateway running; compared
# with g2h of the same binary (targets: >= 90 %, ping p99 < 20 ms), not with slirp4netns, whose
# network stops while any API client is idle.
KINDS: tuple[str, ...] = ("g2h", "h2g", "rr", "fwd", "idle", "conns")
# fwdsplice: fwd with --port-forward-mode=splice; slirp4netns has no such mode, so the ratio is
# against its plain fwd row (Scenario.compared_with).
KINDS = (*KINDS, "fwdsplice")
TARGETS[("fwdsplice", None)] = 3.0
SPLICE_FLAG = "--port-forward-mode=splice"
IDLE_CLIENTS = 100
FORWARD_PORT = 15201

# Runs in Outer: echo every byte back on one accepted connection. NODELAY so that a 1-byte answer
# is never held back by Nagle waiting for the ACK of the previous one.
ECHO_SERVER = """
import socket, sys
port, timeout = int(sys.argv[1]), float(sys.argv[2])
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", port))
srv.listen(1)
srv.settimeout(timeout)
conn, _ = srv.accept()
conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
conn.settimeout(timeout)
while True:
    data = conn.recv(65536)
    if not data:
        break
    conn.sendall(data)
"""

# Runs in the guest: strictly sequential round trips, so the rate is 1 / (round-trip latency).
# Each round trip's latency is the difference of two consecutive clock readings (one reading per
# round trip, as before latencies were kept); the client reports their p50 and p99 in µs.
ECHO_CLIENT = """
import json, socket, sys, time
host, port = sys.argv[1], int(sys.argv[2])
duration, connect_timeout = float(sys.argv[3]), float(sys.argv[4])
step = "connect"
try:
    s = socket.create_connection((host, port), timeout=connect_timeout)
    step = "round trip"
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.settimeout(5)
    clock = time.perf_counter_ns
    latencies = []
    keep = latencies.append
    start = clock()
    end = start + int(duration * 1e9)
    now = start
    while now < end:
        s.sendall(b"x")
        if s.recv(1) != b"x":
            raise RuntimeError("echo lost or changed a byte")
        then, now = now, clock()
        keep(now - then)
    latencies.sort()
    def pick(q):
        n = len(latencies)
        return latencies[min(n - 1, int(n * q))] / 1000 if n else None
    print(json.dumps({"round_trips": len(latencies), "seconds": (now - start) / 1e9,
                      "p50_us": pick(0.50), "p99_us": pick(0.99)}))
except Exception as e:
    print(json.dumps({"error": f"{step}: {type(e).__name__}: {e}"}))
    sys.exit(1)
"""


class CellFailed(Exception):
    """One measurement could not be made; the reason is printed in its cell."""


@dataclass(frozen=True)
class Variant:
    label: str
    program: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()
    reference: bool = False  # slirp4netns: what the ratio column divides by
    baseline: bool = False  # another checkout of ours: what the ours/baseline column divides by
    note: str = ""  # for the header line


@dataclass(frozen=True)
class Scenario:
    kind: str
    mtu: int

    @property
    def name(self) -> str:
        return f"{self.kind}@{self.mtu}"

    @property
    def unit(self) -> str:
        return {"rr": "rt/s", "conns": "conn/s"}.get(self.kind, "Gbit/s")

    def target(self) -> float | None:
        return TARGETS.get((self.kind, self.mtu), TARGETS.get((self.kind, None)))

    def compared_with(self) -> Scenario:
        """The scenario whose slirp4netns row the ratio divides by."""
        return Scenario("fwd", self.mtu) if self.kind == "fwdsplice" else self


@dataclass
class Run:
    value: float | None  # Gbit/s or round trips/s; None when the cell failed
    rss_kib: int | None  # the daemon's VmHWM at the end of the run
    reason: str = ""
    ping_p99_ms: float | None = None  # idle runs: the gateway ping's 99th percentile
    # issue 11: the daemon's CPU time (utime + stime) per unit moved, and rr's latencies
    cpu: float | None = None  # s/GB (iperf3 kinds), µs/rt (rr), µs/conn (conns)
    cpu_unit: str = ""
    p50_us: float | None = None
    p99_us: float | None = None


@dataclass
class Row:
    scenario: Scenario
    variant: Variant
    runs: list[Run] = field(default_factory=list)

    def values(self) -> list[float]:
        return [r.value for r in self.runs if r.value is not None]

    def median(self) -> float | None:
        values = self.values()
        return statistics.median(values) if values else None

    def rss_median_kib(self) -> float | None:
        rss = [r.rss_kib for r in self.runs if r.rss_kib is not None]
        return statistics.median(rss) if rss else None


# -- one cell ------------------------------------------------------------------------------------


def last_line(text: str, limit: int = 120) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    line = lines[-1] if lines else "no output"
    return line if len(line) <= limit else line[: limit - 3] + "..."


def daemon_pid(daemon: Daemon) -> int:
    """The process that runs the daemon: nsenter execs it, so normally ``daemon.pid`` itself."""
    pid = int(daemon.pid)
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return pid
    if comm == "nsenter":  # an nsenter that forked (it would with -p): the child is the daemon
        import psutil

        children = psutil.Process(pid).children()
        if children:
            return int(children[0].pid)
    return pid


def vm_hwm_kib(pid: int) -> int | None:
    """Peak resident set size of a live process (``VmHWM`` in /proc/PID/status), in KiB."""
    return status_kib(pid, "VmHWM")


class PeakRss:
    """Samples VmHWM while a run lasts: a daemon that dies mid-run (a zombie has no VmHWM) still
    leaves its last peak behind."""

    def __init__(self, pid: int, interval: float = 0.25) -> None:
        self.pid = pid
        self.kib = vm_hwm_kib(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, args=(interval,), daemon=True)
        self._thread.start()

    def _sample(self, interval: float) -> None:
        while not self._stop.wait(interval):
            self._take()

    def _take(self) -> None:
        kib = vm_hwm_kib(self.pid)
        if kib is not None:
            self.kib = max(kib, self.kib or 0)

    def stop(self) -> int | None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._take()
        return self.kib


def is_listening(outer: Outer, port: int) -> bool:
    out = outer.run(["ss", "-Hltn", f"sport = :{port}"], timeout=10, check=False).stdout
    return f"127.0.0.1:{port}".encode() in out


def start_server(outer: Outer, argv: Sequence[str], port: int) -> subprocess.Popen[bytes]:
    """A server inside Outer, returned once it listens on 127.0.0.1:port."""
    wait_until(lambda: not is_listening(outer, port), LISTEN_TIMEOUT, f"port {port} to be free")
    proc = subprocess.Popen(
        outer.prefix() + list(argv),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:

        def up() -> bool:
            if proc.poll() is not None:
                assert proc.stderr is not None
                err = proc.stderr.read().decode(errors="replace")
                raise CellFailed(f"server exited {proc.returncode}: {last_line(err)}")
            return is_listening(outer, port)

        wait_until(up, LISTEN_TIMEOUT, f"a server on 127.0.0.1:{port}", interval=0.05)
    except BaseException:
        end_process(proc)
        raise
    return proc


def measure_iperf(
    outer: Outer, guest: Guest, scenario: Scenario, duration: float, extra: Extra | None = None
) -> float:
    server = start_server(
        outer, ["iperf3", "-s", "-B", "127.0.0.1", "-p", str(IPERF_PORT), "-1"], IPERF_PORT
    )
    try:
        argv = ["iperf3", "-c", GATEWAY, "-p", str(IPERF_PORT), "-t", f"{duration:g}", "-J"]
        argv += ["--connect-timeout", str(int(CONNECT_TIMEOUT * 1000))]
        if scenario.kind == "h2g":
            argv.append("-R")
        done = guest.run(argv, timeout=duration + SLACK, check=False)
    finally:
        end_process(server)
    try:
        report = json.loads(done.stdout)
    except ValueError:
        raise CellFailed(
            f"iperf3 exited {done.returncode}: {last_line(done.stderr.decode(errors='replace'))}"
        ) from None
    if "error" in report:
        raise CellFailed(f"iperf3: {report['error']}")
    try:
        received = report["end"]["sum_received"]
        if extra is not None:
            extra.bytes = int(received["bytes"])
        return float(received["bits_per_second"]) / 1e9
    except (KeyError, TypeError, ValueError):
        raise CellFailed("iperf3: no end.sum_received in its JSON") from None


def measure_rr(outer: Outer, guest: Guest, duration: float, extra: Extra | None = None) -> float:
    idle = f"{duration + SLACK:g}"  # the server gives up by itself too if nobody comes
    server = start_server(
        outer, [sys.executable, "-c", ECHO_SERVER, str(ECHO_PORT), idle], ECHO_PORT
    )
    try:
        argv = [sys.executable, "-c", ECHO_CLIENT, GATEWAY, str(ECHO_PORT)]
        argv += [f"{duration:g}", f"{CONNECT_TIMEOUT:g}"]
        done = guest.run(argv, timeout=duration + SLACK, check=False)
    finally:
        end_process(server)
    try:
        report = json.loads(done.stdout)
    except ValueError:
        raise CellFailed(
            f"client exited {done.returncode}: {last_line(done.stderr.decode(errors='replace'))}"
        ) from None
    if "error" in report:
        raise CellFailed(f"client: {report['error']}")
    if extra is not None:
        extra.count = int(report["round_trips"])
        extra.p50_us, extra.p99_us = report.get("p50_us"), report.get("p99_us")
    return float(report["round_trips"]) / float(report["seconds"])


def measure_forward(
    outer: Outer, guest: Guest, api: str, duration: float, extra: Extra | None = None
) -> float:
    """iperf3 from the host's 127.0.0.1 through a forward to a server in the guest."""
    server = subprocess.Popen(
        outer.prefix() + guest.prefix() + ["iperf3", "-s", "-p", str(IPERF_PORT), "-1"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        listening = ["ss", "-Hltn", f"sport = :{IPERF_PORT}"]
        wait_until(
            lambda: str(IPERF_PORT).encode() in guest.run(listening, check=False).stdout,
            LISTEN_TIMEOUT,
            "iperf3 in the guest",
        )
        rule = {
            "proto": "tcp",
            "host_addr": "127.0.0.1",
            "host_port": FORWARD_PORT,
            "guest_addr": "",
            "guest_port": IPERF_PORT,
        }
        reply = api_request(api, {"execute": "add_hostfwd", "arguments": rule})
        if b'"return"' not in reply:
            raise CellFailed(f"add_hostfwd: {reply.decode(errors='replace')}")
        argv = ["iperf3", "-c", "127.0.0.1", "-p", str(FORWARD_PORT), "-t", f"{duration:g}", "-J"]
        done = outer.run(argv, timeout=duration + SLACK, check=False)
    finally:
        end_process(server)
    try:
        report = json.loads(done.stdout)
        received = report["end"]["sum_received"]
        if extra is not None:
            extra.bytes = int(received["bytes"])
        return float(received["bits_per_second"]) / 1e9
    except (ValueError, KeyError, TypeError):
        raise CellFailed(f"iperf3 exited {done.returncode}") from None


def measure_idle(
    outer: Outer, guest: Guest, scenario: Scenario, api: str, duration: float
) -> tuple[float, float | None]:
    """g2h with IDLE_CLIENTS API connections open and silent, and the gateway pinged."""
    clients = []
    ping = None
    try:
        for _ in range(IDLE_CLIENTS):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            clients.append(sock)
            sock.settimeout(1)  # slirp4netns's full backlog would block this connect forever
            try:
                sock.connect(api)
            except OSError:
                break
        count = max(1, int(duration / 0.05))
        ping = subprocess.Popen(
            outer.prefix()
            + guest.prefix()
            + ["busybox", "ping", "-i", "0.05", "-c", str(count), "-W", "1", GATEWAY],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        value = measure_iperf(outer, guest, Scenario("g2h", scenario.mtu), duration)
        out, _ = ping.communicate(timeout=duration + SLACK)
        times = sorted(float(t) for t in re.findall(rb"time=([0-9.]+)", out))
        p99 = times[min(len(times) - 1, int(len(times) * 0.99))] if times else None
        return value, p99
    finally:
        if ping is not None and ping.poll() is None:
            ping.kill()
            ping.wait(5)
        for sock in clients:
            sock.close()


# -- issue 11: conns, the daemon's CPU time, and what a measurement moved -----------------------

CONN_PORT = 7778
CONN_CLIENTS = 4  # concurrent client processes in the guest for `conns` (see benchmarks/README)

# Runs in Outer: accept, read the byte, echo it, close (the server closes first, so TIME_WAIT
# lands on this listener's side, not on the guest's or the daemon's ephemeral ports). One
# thread, non-blocking, so the server is never what limits the rate.
CONN_SERVER = """
import selectors, socket, sys, time
port, idle = int(sys.argv[1]), float(sys.argv[2])
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", port))
srv.listen(1024)
srv.setblocking(False)
sel = selectors.DefaultSelector()
sel.register(srv, selectors.EVENT_READ)
last = time.monotonic()
while time.monotonic() - last < idle:
    for key, _ in sel.select(1.0):
        sock = key.fileobj
        if sock is srv:
            while True:
                try:
                    conn, _ = srv.accept()
                except BlockingIOError:
                    break
                conn.setblocking(False)
                sel.register(conn, selectors.EVENT_READ)
            last = time.monotonic()
            continue
        try:
            data = sock.recv(1)
            if data:
                sock.send(data)
        except OSError:
            pass
        sel.unregister(sock)
        sock.close()
"""

# Runs in the guest: W processes, each a sequential loop of connect, send 1 byte, read the echo,
# read the server's EOF, close; prints the connections per second of all of them together.
CONN_CLIENT = """
import json, os, socket, sys, time
host, port = sys.argv[1], int(sys.argv[2])
duration, connect_timeout, workers = float(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
start = time.monotonic()
end = start + duration
def work(out):
    count, error = 0, None
    try:
        while time.monotonic() < end:
            s = socket.socket()
            try:
                s.settimeout(connect_timeout)
                s.connect((host, port))
                s.settimeout(5)
                s.sendall(b"x")
                if s.recv(1) != b"x":
                    raise RuntimeError("echo lost or changed a byte")
                if s.recv(1) != b"":
                    raise RuntimeError("more than the echo")
            finally:
                s.close()
            count += 1
    except Exception as e:
        error = f"{type(e).__name__}: {e}"
    os.write(out, json.dumps({"count": count, "error": error}).encode())
pids = []
reads = []
for _ in range(workers):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        work(w)
        os._exit(0)
    os.close(w)
    pids.append(pid)
    reads.append(r)
results = []
for r in reads:
    data = b""
    while chunk := os.read(r, 4096):
        data += chunk
    results.append(json.loads(data) if data else {"count": 0, "error": "worker died"})
for pid in pids:
    os.waitpid(pid, 0)
seconds = time.monotonic() - start
errors = [x["error"] for x in results if x["error"]]
if errors:
    print(json.dumps({"error": errors[0]}))
    sys.exit(1)
print(json.dumps({"connections": sum(x["count"] for x in results), "seconds": seconds}))
"""


@dataclass
class Extra:
    """What a measurement moved, filled in by the measure_* functions for the CPU column."""

    bytes: int | None = None  # iperf3's end.sum_received.bytes
    count: int | None = None  # round trips (rr) or connections (conns)
    p50_us: float | None = None
    p99_us: float | None = None


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of a live process (all its threads), from /proc/PID/stat, in seconds."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) ": field 3 is fields[0]
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def cpu_per_unit(kind: str, cpu: float, extra: Extra) -> tuple[float | None, str]:
    """CPU seconds per GB moved (iperf3 kinds), µs per round trip (rr) or per connection."""
    if kind in ("rr", "conns"):
        unit = "µs/rt" if kind == "rr" else "µs/conn"
        return (cpu * 1e6 / extra.count if extra.count else None), unit
    return (cpu / (extra.bytes / 1e9) if extra.bytes else None), "s/GB"


def measure_conns(
    outer: Outer,
    guest: Guest,
    duration: float,
    extra: Extra | None = None,
    workers: int = CONN_CLIENTS,
) -> float:
    """Short connections per second: ``workers`` guest processes against CONN_SERVER."""
    idle = f"{duration + SLACK:g}"
    server = start_server(
        outer, [sys.executable, "-c", CONN_SERVER, str(CONN_PORT), idle], CONN_PORT
    )
    try:
        argv = [sys.executable, "-c", CONN_CLIENT, GATEWAY, str(CONN_PORT)]
        argv += [f"{duration:g}", f"{CONNECT_TIMEOUT:g}", str(workers)]
        done = guest.run(argv, timeout=duration + SLACK, check=False)
    finally:
        end_process(server)
    try:
        report = json.loads(done.stdout)
    except ValueError:
        raise CellFailed(
            f"client exited {done.returncode}: {last_line(done.stderr.decode(errors='replace'))}"
        ) from None
    if "error" in report:
        raise CellFailed(f"client: {report['error']}")
    if extra is not None:
        extra.count = int(report["connections"])
    return float(report["connections"]) / float(report["seconds"])


def run_json(scenario: Scenario, variant: Variant, run: Run) -> dict[str, object]:
    """One run as --json writes it (benchmarks/report.py reads these)."""
    return {
        "scenario": scenario.name,
        "kind": scenario.kind,
        "mtu": scenario.mtu,
        "variant": variant.label,
        "reference": variant.reference,
        "value": run.value,
        "unit": scenario.unit,
        "rss_kib": run.rss_kib,
        "cpu": run.cpu,
        "cpu_unit": run.cpu_unit,
        "p50_us": run.p50_us,
        "p99_us": run.p99_us,
        "ping_p99_ms": run.ping_p99_ms,
        "error": run.reason or None,
    }


def write_json(path: str, rows: Sequence[Row], args: argparse.Namespace, seconds: float) -> None:
    """--json FILE: every run, the medians and the targets, for benchmarks/report.py."""
    reference = {r.scenario: r for r in rows if r.variant.reference}
    summary = []
    for row in rows:
        ref = reference.get(row.scenario.compared_with())
        median, ref_median = row.median(), ref.median() if ref else None
        cpus = [r.cpu for r in row.runs if r.cpu is not None]
        p50s = [r.p50_us for r in row.runs if r.p50_us is not None]
        p99s = [r.p99_us for r in row.runs if r.p99_us is not None]
        summary.append(
            {
                "scenario": row.scenario.name,
                "variant": row.variant.label,
                "reference": row.variant.reference,
                "median": median,
                "unit": row.scenario.unit,
                "reference_median": None if row.variant.reference else ref_median,
                "ratio": median / ref_median
                if median is not None and ref_median and not row.variant.reference
                else None,
                "target": None if row.variant.reference else row.scenario.target(),
                "rss_kib": row.rss_median_kib(),
                "cpu": statistics.median(cpus) if cpus else None,
                "cpu_unit": next((r.cpu_unit for r in row.runs if r.cpu_unit), ""),
                "p50_us": statistics.median(p50s) if p50s else None,
                "p99_us": statistics.median(p99s) if p99s else None,
                "runs": len(row.runs),
                "failed": sum(1 for r in row.runs if r.value is None),
            }
        )
    parameters: dict[str, object] = {
        "duration": args.duration,
        "repeat": args.repeat,
        "mtu": args.mtu,
        "rootless": args.rootless,
        "conn_clients": args.conn_clients,
    }
    runs = [run_json(row.scenario, row.variant, run) for row in rows for run in row.runs]
    write_document(path, "throughput", seconds, parameters, runs, summary)


def latency_summary(rows: Sequence[Row]) -> str:
    """rr: the median over runs of each run's p50 and p99 round-trip latency."""
    lines = []
    for row in rows:
        p50s = [r.p50_us for r in row.runs if r.p50_us is not None]
        p99s = [r.p99_us for r in row.runs if r.p99_us is not None]
        if row.scenario.kind != "rr" or not p50s:
            continue
        lines.append(
            f"# {row.scenario.name} {row.variant.label}: round trip p50 "
            f"{statistics.median(p50s):.0f} µs, p99 {statistics.median(p99s):.0f} µs "
            f"(median over {len(p50s)} runs)"
        )
    return "\n".join(lines)


def attach(
    template: str | None, pid: int, variant: Variant, scenario: Scenario
) -> subprocess.Popen[bytes] | None:
    """--attach: a profiler on the ready daemon, for the measurement only ({pid}, {label} and
    {scenario} filled in), e.g. "strace -c -f -p {pid} -o /tmp/{label}-{scenario}.strace"."""
    if not template:
        return None
    words = [
        w.format(pid=pid, label=variant.label, scenario=scenario.name.replace("@", "-"))
        for w in shlex.split(template)
    ]
    proc = subprocess.Popen(words, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)  # strace and py-spy need a moment to attach
    return proc


def detach(proc: subprocess.Popen[bytes] | None) -> None:
    """SIGINT makes strace -c print its table and py-spy write its profile."""
    if proc is None:
        return
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def run_cell(outer: Outer, variant: Variant, scenario: Scenario, args: argparse.Namespace) -> Run:
    guest: Guest | None = None
    daemon: Daemon | None = None
    rss: int | None = None
    try:
        guest = Guest(outer, rootless=args.rootless)
        argv = ["--configure", "--mtu", str(scenario.mtu), "-r", "3", str(guest.pid), "tap0"]
        api = os.path.join(outer.dir, f"api-{os.getpid()}.sock")
        if scenario.kind in ("fwd", "idle", "fwdsplice"):
            argv = ["-a", api, *argv]
        if scenario.kind == "fwdsplice":
            argv = [SPLICE_FLAG, *argv]
        try:
            daemon = start_ready(outer, argv, env=dict(variant.env), program=variant.program)
        except NotReady as e:  # the daemon is ended already
            got = "no EOF" if e.ready is None else repr(e.ready)
            raise CellFailed(f"not ready ({got}): {last_line(e.stderr)}") from None
        peak = PeakRss(daemon_pid(daemon))
        profiler = attach(args.attach, daemon_pid(daemon), variant, scenario)
        extra = Extra()  # issue 11: what the measurement moved, for the CPU column
        cpu_start = cpu_seconds(daemon_pid(daemon))
        try:
            p99 = None
            if scenario.kind == "rr":
                value = measure_rr(outer, guest, args.duration, extra=extra)
            elif scenario.kind == "conns":
                value = measure_conns(
                    outer, guest, args.duration, extra=extra, workers=args.conn_clients
                )
            elif scenario.kind in ("fwd", "fwdsplice"):
                value = measure_forward(outer, guest, api, args.duration, extra=extra)
            elif scenario.kind == "idle":
                value, p99 = measure_idle(outer, guest, scenario, api, args.duration)
            else:
                value = measure_iperf(outer, guest, scenario, args.duration, extra=extra)
        except CellFailed as e:
            # A daemon that died explains the failure better than the client's timeout does.
            if daemon.poll() is not None:
                raise CellFailed(
                    f"daemon exited {daemon.returncode}: {last_line(daemon.stderr)}; then {e}"
                ) from None
            raise
        finally:
            rss = peak.stop()  # before the daemon is ended: the peak of this run
            cpu_end = cpu_seconds(daemon_pid(daemon))
            detach(profiler)
        if daemon.poll() is not None:
            raise CellFailed(f"daemon exited {daemon.returncode}: {last_line(daemon.stderr)}")
        cpu, cpu_unit = None, ""
        if cpu_start is not None and cpu_end is not None:
            cpu, cpu_unit = cpu_per_unit(scenario.kind, cpu_end - cpu_start, extra)
        return Run(
            value,
            rss,
            ping_p99_ms=p99,
            cpu=cpu,
            cpu_unit=cpu_unit if cpu is not None else "",
            p50_us=extra.p50_us,
            p99_us=extra.p99_us,
        )
    except CellFailed as e:
        return Run(None, rss, str(e))
    except (TimeoutError, subprocess.TimeoutExpired) as e:
        return Run(None, rss, f"timeout: {e}")
    except (OSError, RuntimeError, ValueError) as e:
        return Run(None, rss, f"{type(e).__name__}: {e}")
    finally:
        with signals_deferred():
            if daemon is not None:
                quietly_close(daemon)
            if guest is not None:
                quietly_close(guest)


# -- the table -----------------------------------------------------------------------------------


def fmt_value(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    return f"{value:.0f}" if unit in ("rt/s", "conn/s") else f"{value:.2f}"


def fmt_runs(row: Row) -> str:
    """Every run's figure, then the failures with the first reason (the cell's "fail (reason)")."""
    text = " ".join(fmt_value(v, row.scenario.unit) for v in row.values())
    failed = [r for r in row.runs if r.value is None]
    if failed:
        times = f" x{len(failed)}" if len(failed) > 1 else ""
        text += f" fail{times} ({failed[0].reason})"
    return text.strip()


def fmt_cpu(row: Row) -> str:
    """The daemon's median CPU time per unit moved (issue 11)."""
    cpus = [r.cpu for r in row.runs if r.cpu is not None]
    if not cpus:
        return "-"
    unit = next(r.cpu_unit for r in row.runs if r.cpu is not None)
    median = statistics.median(cpus)
    return f"{median:.2f} {unit}" if unit == "s/GB" else f"{median:.0f} {unit}"


def table(rows: Sequence[Row], reference: Variant | None, baseline: Variant | None) -> str:
    """One line per scenario and binary; ``ratio`` is against slirp4netns (the targets' measure),
    ``ours/baseline`` (with --baseline) against the other checkout."""
    header: tuple[str, ...] = (
        "scenario",
        "binary",
        "median",
        "ratio",
        "target",
        "peak RSS",
        "CPU",
        "runs",
    )
    if baseline is not None:
        header = (*header[:4], "ours/baseline", *header[4:])
    lines: list[tuple[str, ...]] = []
    by_scenario: dict[Scenario, dict[str, Row]] = {}
    for row in rows:
        by_scenario.setdefault(row.scenario, {})[row.variant.label] = row

    def median_of(variants: dict[str, Row], which: Variant | None) -> float | None:
        row = variants.get(which.label) if which else None
        return row.median() if row else None

    for scenario, variants in by_scenario.items():
        ref_median = median_of(by_scenario.get(scenario.compared_with(), {}), reference)
        base_median = median_of(variants, baseline)
        for row in variants.values():
            median = row.median()
            ratio = target = versus = ""
            if not row.variant.reference:
                wanted = scenario.target()
                if median is not None and ref_median:
                    r = median / ref_median
                    ratio = f"{r:.2f}x"
                    if wanted is not None:
                        target = f">={wanted:g}x " + ("met" if r >= wanted else "MISSED")
                else:
                    ratio = "-"
                    target = f">={wanted:g}x" if wanted is not None else ""
                if not row.variant.baseline:
                    versus = f"{median / base_median:.2f}x" if median and base_median else "-"
            rss = row.rss_median_kib()
            cells: tuple[str, ...] = (
                scenario.name,
                row.variant.label,
                f"{fmt_value(median, scenario.unit)} {scenario.unit}"
                if median is not None
                else "fail",
                ratio,
                target,
                f"{rss / 1024:.1f} MiB" if rss is not None else "-",
                fmt_cpu(row),
                fmt_runs(row),
            )
            if baseline is not None:
                cells = (*cells[:4], versus, *cells[4:])
            lines.append(cells)
    widths = [max(len(x[i]) for x in [header, *lines]) for i in range(len(header) - 1)]

    def render(cells: tuple[str, ...]) -> str:
        padded = [c.ljust(w) for c, w in zip(cells[:-1], widths, strict=True)]
        return "  ".join([*padded, cells[-1]]).rstrip()

    out = [render(header), render(tuple("-" * len(h) for h in header))]
    previous = ""
    for cells in lines:
        if cells[0] != previous and previous:
            out.append("")
        previous = cells[0]
        out.append(render(cells))
    return "\n".join(out)


def idle_summary(rows: Sequence[Row]) -> str:
    """g2h with idle API clients against g2h without, and the gateway ping's p99."""
    lines = []
    for row in rows:
        if row.scenario.kind != "idle" or not row.runs:
            continue
        plain = next(
            (
                r
                for r in rows
                if r.variant == row.variant
                and r.scenario.kind == "g2h"
                and r.scenario.mtu == row.scenario.mtu
            ),
            None,
        )
        idle, base = row.median(), plain.median() if plain else None
        p99s = sorted(r.ping_p99_ms for r in row.runs if r.ping_p99_ms is not None)
        share = f"{idle / base:.0%} of g2h" if idle and base else "g2h not measured"
        ping = f"ping p99 {p99s[len(p99s) // 2]:.2f} ms" if p99s else "no ping answered"
        lines.append(
            f"# {row.variant.label} @{row.scenario.mtu}: {IDLE_CLIENTS} idle API clients: "
            f"{fmt_value(idle, 'Gbit/s')} Gbit/s = {share} (target >= 90 %), {ping} "
            "(target < 20 ms)"
        )
    return "\n".join(lines)


# -- main ----------------------------------------------------------------------------------------


def package_dir(env: dict[str, str]) -> str:
    """Where ``python3 -m pyslirp4netns`` under ``env`` (in this cwd) takes the package from."""
    probe = [sys.executable, "-c", "import pyslirp4netns; print(pyslirp4netns.__path__[0])"]
    done = subprocess.run(
        probe, env={**os.environ, **env}, capture_output=True, timeout=30, check=False
    )
    if done.returncode:
        raise SystemExit(f"throughput.py: {last_line(done.stderr.decode(errors='replace'))}")
    return os.path.realpath(done.stdout.decode().strip())


def baseline_variant(directory: str) -> Variant:
    """``python3 -m pyslirp4netns`` from another checkout: PYTHONPATH=DIR, and PYTHONSAFEPATH so
    that ``-m`` does not put the cwd (this checkout, when run from its root) first on sys.path."""
    root = os.path.realpath(directory)
    env = {"PYTHONPATH": root, "PYTHONSAFEPATH": "1"}
    found = package_dir(env)
    if os.path.dirname(found) != root:
        raise SystemExit(f"throughput.py: --baseline {directory}: pyslirp4netns comes from {found}")
    program = (sys.executable, "-m", "pyslirp4netns")
    return Variant("baseline", program, tuple(env.items()), baseline=True, note=f"from {found}")


def variants_for(args: argparse.Namespace) -> list[Variant]:
    ours = tuple(shlex.split(args.binary)) if args.binary else tuple(binary())
    # The daemon must be this checkout's package whatever the cwd or an editable install says.
    path = os.pathsep.join(p for p in (str(CHECKOUT), os.environ.get("PYTHONPATH", "")) if p)
    available = {
        "ours": Variant("pyslirp4netns", ours, (("PYTHONPATH", path),)),
        "ours-nooffload": Variant(
            "pyslirp4netns offload=0",
            ours,
            (("PYTHONPATH", path), ("PYSLIRP4NETNS_OFFLOAD", "0")),
        ),
        "slirp4netns": Variant("slirp4netns", (args.reference,), reference=True),
    }
    variants = [available[name] for name in args.variants]
    if args.baseline:
        # Beside ours, before the reference: A baseline B C A baseline B C ...
        at = next((i for i, v in enumerate(variants) if v.reference), len(variants))
        variants.insert(at, baseline_variant(args.baseline))
    return variants


def scenarios_for(args: argparse.Namespace) -> list[Scenario]:
    every = [Scenario(kind, mtu) for mtu in args.mtu for kind in KINDS]
    if not args.only:
        return every
    wanted = {token for item in args.only for token in item.split(",") if token}
    return [s for s in every if s.kind in wanted or s.name in wanted]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python3 -m benchmarks.throughput",
        description="iperf3 both ways, 1-byte request/response and peak RSS: "
        "pyslirp4netns against slirp4netns inside the loopback-only test rig (root).",
    )
    p.add_argument("--duration", type=float, default=5.0, metavar="T", help="seconds per run")
    p.add_argument("--repeat", type=int, default=3, metavar="R", help="runs per binary/scenario")
    p.add_argument(
        "--mtu", type=int, nargs="+", default=[1500, 65520], metavar="M", help="MTUs to test"
    )
    p.add_argument(
        "--only",
        action="append",
        metavar="S",
        help="scenarios: g2h, h2g, rr, fwd, idle, conns or KIND@MTU (comma-separated or repeated)",
    )
    p.add_argument("--binary", help="our daemon's command (default: python3 -m pyslirp4netns)")
    p.add_argument("--reference", default=REFERENCE, help="slirp4netns binary")
    p.add_argument(
        "--variants",
        nargs="+",
        choices=["ours", "ours-nooffload", "slirp4netns"],
        default=["ours", "ours-nooffload", "slirp4netns"],
        help="which binaries to run",
    )
    p.add_argument(
        "--baseline",
        metavar="DIR",
        help="also run python3 -m pyslirp4netns with PYTHONPATH=DIR (another checkout, e.g. "
        "before a change) as the variant 'baseline', and give ours/baseline",
    )
    p.add_argument(
        "--attach",
        metavar="CMD",
        help="run CMD beside every measurement, SIGINT after it ({pid}: the daemon's PID; "
        "{label}, {scenario}), e.g. 'py-spy record -p {pid} -f raw -o /tmp/{label}.txt'",
    )
    p.add_argument(
        "--rootless", action="store_true", help="guests made by unshare -Urn (default: unshare -n)"
    )
    p.add_argument(
        "--json", metavar="FILE", help="also write every run's figures to FILE (for report.py)"
    )
    p.add_argument(
        "--conn-clients",
        type=int,
        default=CONN_CLIENTS,
        metavar="W",
        help=f"conns: concurrent client processes in the guest (default {CONN_CLIENTS})",
    )
    args = p.parse_args(argv)
    if args.duration <= 0 or args.repeat < 1:
        p.error("--duration must be > 0 and --repeat >= 1")
    if any(not 68 <= m <= 65521 for m in args.mtu):
        p.error("--mtu must be within 68..65521")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("throughput.py: needs root (namespaces and taps)", file=sys.stderr)
        return 2
    variants = variants_for(args)
    scenarios = scenarios_for(args)
    if not scenarios:
        print("throughput.py: --only selected no scenario", file=sys.stderr)
        return 2
    reference = next((v for v in variants if v.reference), None)
    if reference and not os.access(reference.program[0], os.X_OK):
        print(f"throughput.py: {reference.program[0]} missing: no reference rows", file=sys.stderr)
        variants.remove(reference)
        reference = None
    # idle is compared with the same binary's g2h; slirp4netns's network stops while an API
    # client is idle (contract §5.1), so its idle cells would only time out.
    rows = [
        Row(s, v)
        for s in scenarios
        for v in variants
        if not (s.kind in ("idle", "fwdsplice") and v.reference)  # fwdsplice: ours only
    ]
    total = len(rows) * args.repeat
    print(
        f"# {machine()}; "
        f"{args.duration:g}s x {args.repeat} per cell, "
        f"{'rootless' if args.rootless else 'root'}-style guests",
        flush=True,
    )
    for v in variants:
        shown = [f"{k}={val}" for k, val in v.env if v.baseline or k != "PYTHONPATH"]
        line = " ".join([*shown, shlex.join(v.program), *([v.note] if v.note else [])])
        print(f"# {v.label}: {line}", flush=True)

    with Session() as session:
        done = 0
        for scenario in scenarios:
            for repeat in range(args.repeat):
                # A B C A B C: a slow spell of the machine lands on every binary, not one.
                for row in (r for r in rows if r.scenario == scenario):
                    run = run_cell(session.outer, row.variant, scenario, args)
                    row.runs.append(run)
                    done += 1
                    result = (
                        f"{fmt_value(run.value, scenario.unit)} {scenario.unit}"
                        if run.value is not None
                        else f"fail ({run.reason})"
                    )
                    rss = f", VmHWM {run.rss_kib} KiB" if run.rss_kib is not None else ""
                    print(
                        f"[{done}/{total}] {scenario.name} {row.variant.label} "
                        f"#{repeat + 1}: {result}{rss}",
                        file=sys.stderr,
                        flush=True,
                    )
    print()
    baseline = next((v for v in variants if v.baseline), None)
    print(table([r for r in rows if r.runs], reference, baseline))
    print(idle_summary(rows))
    print(latency_summary(rows))
    legend = "ratio = median(ours) / median(slirp4netns)"
    if baseline is not None:
        legend += "; ours/baseline = median(ours) / median(baseline)"
    legend += "; CPU = the daemon's utime+stime per GB received, round trip or connection"
    print(f"\n# {session.elapsed():.0f}s; {legend}")
    if args.json:
        write_json(args.json, [r for r in rows if r.runs], args, session.elapsed())
        print(f"# runs written to {args.json}")
    return session.status


if __name__ == "__main__":
    sys.exit(main())
