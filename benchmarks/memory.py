"""Resident memory of the daemon: idle, holding N TCP connections, and after they are closed.

Everything runs inside the test rig (the package tests.rig, shared/TESTING.md): one
loopback-only ``Outer`` namespace holds the server and the daemons, and every cell gets a fresh
root-style guest and a fresh daemon (``--configure --mtu M -r 3 PID tap0``). For each binary,
alternated (ours, slirp4netns, ours, slirp4netns ...) ``--repeat`` times:

  idle   VmRSS of the daemon 2 s after its ready byte, no traffic yet
  held   the guest opens ``--connections`` N TCP connections to 10.0.2.2 (a server on the
         Outer's 127.0.0.1 that accepts and holds them); VmRSS once the server holds all N
  after  the guest closes them all; VmRSS ``--settle`` S seconds later

VmRSS is read from /proc/PID/status (the daemon plus any live descendant: none in the default
port-forward mode). Client and server raise their RLIMIT_NOFILE to the hard limit; the daemons
inherit this script's limits (``--daemon-nofile SOFT`` lowers the soft limit they start with,
e.g. 1024 as under a systemd login), and the table shows the limit each one ran with, so a
daemon that cannot hold N is visible as ``held K/N``. Targets: idle <= 18 MiB, held <= 64 MiB,
after within 8 MiB of idle (ours). Needs root. Run from the checkout root as
``python3 -m benchmarks.memory``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import select
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from benchmarks.common import Session, machine, quietly_close, signals_deferred, write_document
from benchmarks.throughput import (
    GATEWAY,
    LISTEN_TIMEOUT,
    CellFailed,
    daemon_pid,
    is_listening,
    last_line,
)
from tests.rig import (
    CHECKOUT,
    REFERENCE,
    Daemon,
    Guest,
    NotReady,
    Outer,
    binary,
    end_process,
    start_ready,
    status_kib,
    wait_until,
)

HOLD_PORT = 7779
IDLE_WAIT = 2.0  # seconds after the ready byte for the idle figure
IN_FLIGHT = 256  # connects the client has outstanding at once (the listen backlog is 4096)
CONNECT_TIMEOUT = 10.0  # one connect: a daemon out of fds may never answer a SYN
MiB = 1024.0

# Targets (MiB) for ours: idle and held absolute, after-close relative to the same run's idle.
TARGETS = {"idle": 18.0, "held": 64.0, "after": 8.0}

# Runs in Outer: accept every connection and hold it; close a connection when its client does.
# Prints "open K" whenever the number of held connections changed (at most every 50 ms).
HOLD_SERVER = """
import resource, selectors, socket, sys, time
port, idle = int(sys.argv[1]), float(sys.argv[2])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", port))
srv.listen(4096)
srv.setblocking(False)
sel = selectors.DefaultSelector()
sel.register(srv, selectors.EVENT_READ)
held, shown, last, told = 0, -1, time.monotonic(), 0.0
while time.monotonic() - last < idle:
    for key, _ in sel.select(0.05):
        last = time.monotonic()
        sock = key.fileobj
        if sock is srv:
            while True:
                try:
                    conn, _ = srv.accept()
                except BlockingIOError:
                    break
                except OSError as e:  # EMFILE: say so and go on
                    print(f"accept: {e}", file=sys.stderr, flush=True)
                    break
                conn.setblocking(False)
                sel.register(conn, selectors.EVENT_READ)
                held += 1
            continue
        try:
            data = sock.recv(4096)
        except OSError:
            data = b""
        if not data:
            sel.unregister(sock)
            sock.close()
            held -= 1
    now = time.monotonic()
    if held != shown and now - told >= 0.05:
        print(f"open {held}", flush=True)
        shown, told = held, now
"""

# Runs in the guest: open N connections with at most IN_FLIGHT connects outstanding, print a
# JSON line, hold them until a line arrives on stdin, close them all, print a second JSON line.
HOLD_CLIENT = """
import errno, json, os, resource, selectors, socket, sys, time
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
in_flight, connect_timeout, deadline = int(sys.argv[4]), float(sys.argv[5]), float(sys.argv[6])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
sel = selectors.DefaultSelector()
held, pending, errors = [], {}, {}
started, tried = time.monotonic(), 0
end = started + deadline
def fail(sock, why):
    errors[why] = errors.get(why, 0) + 1
    sock.close()
while (tried < n or pending) and time.monotonic() < end:
    while tried < n and len(pending) < in_flight:
        s = socket.socket()
        s.setblocking(False)
        tried += 1
        code = s.connect_ex((host, port))
        if code not in (0, errno.EINPROGRESS):
            fail(s, errno.errorcode.get(code, str(code)))
            continue
        sel.register(s, selectors.EVENT_WRITE)
        pending[s] = time.monotonic()
    for key, _ in sel.select(0.1):
        s = key.fileobj
        sel.unregister(s)
        del pending[s]
        code = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            fail(s, errno.errorcode.get(code, str(code)))
        else:
            held.append(s)
    now = time.monotonic()
    for s, since in list(pending.items()):
        if now - since > connect_timeout:
            sel.unregister(s)
            del pending[s]
            fail(s, "connect timeout")
for s in pending:
    fail(s, "deadline")
print(json.dumps({"held": len(held), "tried": tried, "errors": errors,
                  "seconds": time.monotonic() - started, "nofile": hard}), flush=True)
sys.stdin.readline()
for s in held:
    s.close()
print(json.dumps({"closed": len(held)}), flush=True)
sys.stdin.readline()
"""


@dataclass(frozen=True)
class Variant:
    label: str
    program: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()
    reference: bool = False


@dataclass
class Cell:
    """One round of one binary; sizes in KiB."""

    idle: int | None = None
    held: int | None = None
    after: int | None = None
    peak: int | None = None  # VmHWM at the end of the round
    connected: int | None = None  # connections the server held when `held` was read
    wanted: int = 0
    nofile: str = ""  # the daemon's RLIMIT_NOFILE (soft/hard) while it ran
    connect_seconds: float | None = None
    errors: dict[str, int] = field(default_factory=dict)
    reason: str = ""


def rss_kib(pid: int) -> int | None:
    """VmRSS of the process and its live descendants, in KiB."""
    try:
        procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return None
    total, found = 0, False
    for proc in procs:
        try:
            for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
                    found = found or proc.pid == pid
        except OSError:
            pass
    return total if found else None  # a zombie has no VmRSS: no figure, not 0


def vm_hwm(pid: int) -> int | None:
    return status_kib(pid, "VmHWM")


def nofile_of(pid: int) -> str:
    """The process's "Max open files" as soft/hard."""
    try:
        for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
            if line.startswith("Max open files"):
                soft, hard = line.split()[3:5]
                return f"{soft}/{hard}"
    except OSError:
        pass
    return "?"


class Lines:
    """Line-wise reading of a child's stdout with a timeout."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        self.proc = proc
        self.fd = proc.stdout.fileno()
        self.buffer = b""

    def next(self, timeout: float) -> str | None:
        """The next line, or None at EOF or when none came within ``timeout``."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([self.fd], [], [], left)
            if not ready:
                continue
            chunk = os.read(self.fd, 65536)
            if not chunk:
                return None
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line.decode(errors="replace")


class HoldServer:
    """HOLD_SERVER in Outer; ``held`` follows its "open K" lines."""

    def __init__(self, outer: Outer, idle: float) -> None:
        wait_until(lambda: not is_listening(outer, HOLD_PORT), LISTEN_TIMEOUT, "port to be free")
        self.proc = subprocess.Popen(
            outer.prefix() + [sys.executable, "-c", HOLD_SERVER, str(HOLD_PORT), f"{idle:g}"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.lines = Lines(self.proc)
        self.held = 0
        try:
            wait_until(
                lambda: self.proc.poll() is not None or is_listening(outer, HOLD_PORT),
                LISTEN_TIMEOUT,
                "the hold server",
                interval=0.05,
            )
            if self.proc.poll() is not None:
                raise CellFailed(f"hold server exited {self.proc.returncode}")
        except BaseException:
            self.close()
            raise

    def wait_for(self, check: Callable[[int], bool], timeout: float) -> bool:
        """Follow "open K" until ``check(K)`` or ``timeout``; True when it held."""
        deadline = time.monotonic() + timeout
        while not check(self.held):
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            line = self.lines.next(min(left, 0.5))
            if line and line.startswith("open "):
                self.held = int(line.split()[1])
            elif line is None and self.proc.poll() is not None:
                return False
        return True

    def close(self) -> None:
        end_process(self.proc)


def one_cell(outer: Outer, variant: Variant, args: argparse.Namespace) -> Cell:
    cell = Cell(wanted=args.connections)
    guest: Guest | None = None
    daemon: Daemon | None = None
    server: HoldServer | None = None
    client: subprocess.Popen[bytes] | None = None
    try:
        guest = Guest(outer, rootless=False)
        argv = ["--configure", "--mtu", str(args.mtu), "-r", "3", str(guest.pid), "tap0"]
        wrap: list[str] = []
        if args.daemon_nofile:
            hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
            wrap = ["prlimit", f"--nofile={args.daemon_nofile}:{hard}", "--"]
        try:
            daemon = start_ready(
                outer, argv, env=dict(variant.env), program=variant.program, wrap=wrap
            )
        except NotReady as e:
            raise CellFailed(f"not ready: {last_line(e.stderr)}") from None
        pid = daemon_pid(daemon)
        server = HoldServer(outer, idle=args.settle + 600)
        time.sleep(IDLE_WAIT)
        cell.idle = rss_kib(pid)
        cell.nofile = nofile_of(pid)

        client = subprocess.Popen(
            outer.prefix()
            + guest.prefix()
            + [sys.executable, "-c", HOLD_CLIENT, GATEWAY, str(HOLD_PORT), str(args.connections)]
            + [str(IN_FLIGHT), f"{CONNECT_TIMEOUT:g}", f"{args.connect_deadline:g}"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        lines = Lines(client)
        line = lines.next(args.connect_deadline + 2 * CONNECT_TIMEOUT + 10)
        if line is None:
            raise CellFailed(f"client gave no report (exit {client.poll()})")
        report = json.loads(line)
        cell.connect_seconds = float(report["seconds"])
        cell.errors = dict(report["errors"])
        opened = int(report["held"])
        # The server's accept lags the guest's connect by a moment: wait for all it will see.
        server.wait_for(lambda k: k >= opened, 30)
        time.sleep(0.5)  # and for the daemon to finish whatever the last connects started
        cell.connected = server.held
        cell.held = rss_kib(pid)
        if daemon.poll() is not None:
            raise CellFailed(f"daemon exited {daemon.returncode}: {last_line(daemon.stderr)}")

        assert client.stdin is not None
        closed_at = time.monotonic()
        client.stdin.write(b"close\n")
        client.stdin.flush()
        if lines.next(60) is None:
            raise CellFailed("client did not close its connections")
        server.wait_for(lambda k: k == 0, args.settle)
        time.sleep(max(0.0, closed_at + args.settle - time.monotonic()))
        cell.after = rss_kib(pid)
        cell.peak = vm_hwm(pid)
        if server.held:
            cell.reason = f"{server.held} connections still open at the server after close"
        if daemon.poll() is not None:
            raise CellFailed(f"daemon exited {daemon.returncode}: {last_line(daemon.stderr)}")
    except CellFailed as e:
        cell.reason = str(e)
    except (TimeoutError, subprocess.TimeoutExpired) as e:
        cell.reason = f"timeout: {e}"
    except (OSError, RuntimeError, ValueError, KeyError) as e:
        cell.reason = f"{type(e).__name__}: {e}"
    finally:
        with signals_deferred():
            if client is not None:
                end_process(client)
            if server is not None:
                quietly_close(server)
            if daemon is not None:
                quietly_close(daemon)
            if guest is not None:
                quietly_close(guest)
    return cell


# -- the table -----------------------------------------------------------------------------------


def median(values: Sequence[int | float | None]) -> float | None:
    got = [v for v in values if v is not None]
    return statistics.median(got) if got else None


def mib(kib: float | None) -> str:
    return f"{kib / MiB:.1f} MiB" if kib is not None else "-"


def summarize(cells: dict[str, list[Cell]], variants: Sequence[Variant]) -> list[dict[str, object]]:
    """One entry per figure and binary: median KiB, ratio to slirp4netns, target, met."""
    reference = next((v for v in variants if v.reference), None)
    out: list[dict[str, object]] = []
    for figure in ("idle", "held", "after"):
        for variant in variants:
            runs = cells[variant.label]
            value = median([getattr(c, figure) for c in runs])
            ref = (
                median([getattr(c, figure) for c in cells[reference.label]]) if reference else None
            )
            target = TARGETS[figure]
            limit = None
            if not variant.reference:
                if figure == "after":
                    idle = median([c.idle for c in runs])
                    limit = idle + target * MiB if idle is not None else None
                else:
                    limit = target * MiB
            out.append(
                {
                    "figure": figure,
                    "variant": variant.label,
                    "reference": variant.reference,
                    "median_kib": value,
                    "reference_median_kib": None if variant.reference else ref,
                    "ratio": value / ref
                    if value is not None and ref and not variant.reference
                    else None,
                    "target_mib": None if variant.reference else target,
                    "limit_kib": limit,
                    "met": None if limit is None or value is None else value <= limit,
                    "connected": median([c.connected for c in runs]) if figure == "held" else None,
                }
            )
    return out


def table(summary: list[dict[str, object]], cells: dict[str, list[Cell]], wanted: int) -> str:
    header = ("figure", "binary", "median", "ratio", "target", "runs")
    rows: list[tuple[str, ...]] = []
    names = {"idle": "idle", "held": f"held {wanted}", "after": "after close"}
    for entry in summary:
        figure, label = str(entry["figure"]), str(entry["variant"])
        value = entry["median_kib"]
        ratio = entry["ratio"]
        target = ""
        if entry["target_mib"] is not None:
            goal = (
                f"<=idle+{entry['target_mib']:g} MiB"
                if figure == "after"
                else f"<={entry['target_mib']:g} MiB"
            )
            met = entry["met"]
            target = f"{goal} " + ("-" if met is None else "met" if met else "MISSED")
        runs = []
        for c in cells[label]:
            kib = getattr(c, figure)
            text = mib(kib).replace(" MiB", "") if kib is not None else "fail"
            if figure == "held" and c.connected is not None and c.connected != c.wanted:
                text += f" (held {c.connected}/{c.wanted})"
            runs.append(text)
        rows.append(
            (
                names[figure],
                label,
                mib(value if isinstance(value, (int, float)) else None),
                f"{ratio:.2f}x" if isinstance(ratio, float) else "",
                target,
                " ".join(runs),
            )
        )
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header) - 1)]

    def render(cells_: tuple[str, ...]) -> str:
        padded = [c.ljust(w) for c, w in zip(cells_[:-1], widths, strict=True)]
        return "  ".join([*padded, cells_[-1]]).rstrip()

    out = [render(header), render(tuple("-" * len(h) for h in header))]
    previous = ""
    for r in rows:
        if previous and r[0] != previous:
            out.append("")
        previous = r[0]
        out.append(render(r))
    return "\n".join(out)


def details(cells: dict[str, list[Cell]]) -> str:
    lines = []
    for label, runs in cells.items():
        for i, c in enumerate(runs, 1):
            errors = ", ".join(f"{k} x{v}" for k, v in sorted(c.errors.items()))
            secs = f"{c.connect_seconds:.1f}s" if c.connect_seconds is not None else "-"
            lines.append(
                f"# {label} #{i}: RLIMIT_NOFILE {c.nofile or '?'}, {c.connected}/{c.wanted} held "
                f"(connects took {secs}{'; errors: ' + errors if errors else ''}), "
                f"VmHWM {mib(c.peak)}" + (f"; {c.reason}" if c.reason else "")
            )
    return "\n".join(lines)


# -- main ----------------------------------------------------------------------------------------


def variants_for(args: argparse.Namespace) -> list[Variant]:
    ours = tuple(shlex.split(args.binary)) if args.binary else tuple(binary())
    path = os.pathsep.join(p for p in (str(CHECKOUT), os.environ.get("PYTHONPATH", "")) if p)
    available = {
        "ours": Variant("pyslirp4netns", ours, (("PYTHONPATH", path),)),
        "slirp4netns": Variant("slirp4netns", (args.reference,), reference=True),
    }
    return [available[name] for name in args.variants]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python3 -m benchmarks.memory",
        description="The daemon's VmRSS idle, holding N guest TCP connections and after closing "
        "them: pyslirp4netns against slirp4netns inside the loopback-only test rig (root).",
    )
    p.add_argument("--repeat", type=int, default=3, metavar="R", help="rounds (default 3)")
    p.add_argument(
        "--connections", type=int, default=10000, metavar="N", help="held connections (10000)"
    )
    p.add_argument(
        "--settle", type=float, default=30.0, metavar="S", help="seconds after close (30)"
    )
    p.add_argument("--mtu", type=int, default=65520, help="the daemon's --mtu (65520)")
    p.add_argument(
        "--connect-deadline",
        type=float,
        default=120.0,
        metavar="T",
        help="seconds the guest may take to open all N (120)",
    )
    p.add_argument(
        "--daemon-nofile",
        type=int,
        metavar="SOFT",
        help="start the daemons with this soft RLIMIT_NOFILE (default: this process's)",
    )
    p.add_argument("--binary", help="our daemon's command (default: python3 -m pyslirp4netns)")
    p.add_argument("--reference", default=REFERENCE, help="slirp4netns binary")
    p.add_argument(
        "--variants",
        nargs="+",
        choices=["ours", "slirp4netns"],
        default=["ours", "slirp4netns"],
        help="which binaries to run",
    )
    p.add_argument("--json", metavar="FILE", help="also write every figure to FILE (report.py)")
    args = p.parse_args(argv)
    if args.repeat < 1 or args.connections < 1 or args.settle < 0:
        p.error("--repeat and --connections must be >= 1, --settle >= 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("memory.py: needs root (namespaces and taps)", file=sys.stderr)
        return 2
    variants = variants_for(args)
    if any(v.reference for v in variants) and not os.access(args.reference, os.X_OK):
        print(f"memory.py: {args.reference} missing: no reference rows", file=sys.stderr)
        variants = [v for v in variants if not v.reference]
    # This process keeps its limit: the daemons inherit it (or --daemon-nofile's soft one), as
    # they would inherit podman's; ours raises its own soft limit to the hard one at start-up.
    # The guest client and the host server raise theirs to the hard limit themselves.
    inherited = resource.getrlimit(resource.RLIMIT_NOFILE)
    if inherited[1] < args.connections + 100:
        print(
            f"memory.py: RLIMIT_NOFILE hard limit {inherited[1]} < {args.connections} + 100: the "
            "client, the server and the daemons cannot hold them all",
            file=sys.stderr,
        )
    print(
        f"# {machine()}; {args.connections} connections, settle {args.settle:g}s, mtu {args.mtu}, "
        f"{args.repeat} rounds; RLIMIT_NOFILE here {inherited[0]}/{inherited[1]}"
        + (f", daemons started with soft {args.daemon_nofile}" if args.daemon_nofile else ""),
        flush=True,
    )
    for v in variants:
        print(f"# {v.label}: {shlex.join(v.program)}", flush=True)
    cells: dict[str, list[Cell]] = {v.label: [] for v in variants}
    with Session() as session:
        for round_ in range(args.repeat):
            for variant in variants:
                cell = one_cell(session.outer, variant, args)
                cells[variant.label].append(cell)
                held = f"{mib(cell.held)} ({cell.connected}/{cell.wanted})"
                print(
                    f"[{round_ + 1}/{args.repeat}] {variant.label}: idle {mib(cell.idle)}, "
                    f"held {held}, after {mib(cell.after)}"
                    + (f"; {cell.reason}" if cell.reason else ""),
                    file=sys.stderr,
                    flush=True,
                )
    summary = summarize(cells, variants)
    print()
    print(table(summary, cells, args.connections))
    print(details(cells))
    elapsed = session.elapsed()
    print(f"\n# {elapsed:.0f}s; ratio = median(ours) / median(slirp4netns); VmRSS in MiB")
    if args.json:
        parameters: dict[str, object] = {
            "connections": args.connections,
            "settle": args.settle,
            "mtu": args.mtu,
            "repeat": args.repeat,
            "daemon_nofile": args.daemon_nofile,
            "nofile_here": f"{inherited[0]}/{inherited[1]}",
        }
        runs: list[dict[str, object]] = [
            {"variant": label, "round": i + 1, **vars(c)}
            for label, rounds in cells.items()
            for i, c in enumerate(rounds)
        ]
        write_document(args.json, "memory", elapsed, parameters, runs, summary)
        print(f"# figures written to {args.json}")
    return session.status


if __name__ == "__main__":
    sys.exit(main())
