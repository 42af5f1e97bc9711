"""Start-up time, spawn to ready byte, plain and hardened, against slirp4netns.

Each run gets a fresh root-style guest (``unshare -n``) in the test rig's ``Outer`` and one
daemon started with ``-r 3 PID tap0`` (``--configure`` too), with and without
``--enable-sandbox --enable-seccomp``; the figure is the time from ``posix_spawn`` until the
ready pipe gives EOF after ``1``. Variants alternate (A B C D A B C D ...) ``--repeat`` times.
Prints the median and the best of each, and the target for ours (start to ready <= 0.15 s,
issue 11); ``--json FILE`` writes every run for benchmarks/report.py. Needs root. Run from the
checkout root as ``python3 -m benchmarks.startup --repeat 10``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Sequence

from benchmarks.common import Session, write_document
from tests.rig import REFERENCE, Guest, Outer, start_ready

HARDENING = ["--enable-sandbox", "--enable-seccomp"]
TARGET = 0.15  # seconds, spawn to ready byte, for ours (plain and hardened)


def one_run(outer: Outer, program: list[str] | None, flags: list[str]) -> float:
    guest = Guest(outer, rootless=False)
    try:
        start = time.monotonic()
        daemon = start_ready(
            outer, [*flags, "-c", "-r", "3", str(guest.pid), "tap0"], program=program
        )
        elapsed = time.monotonic() - start
        daemon.close()
        return elapsed
    finally:
        guest.close()


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m benchmarks.startup", description=__doc__)
    p.add_argument("--repeat", type=int, default=10, help="runs per variant")
    p.add_argument("--json", metavar="FILE", help="also write every run to FILE (for report.py)")
    args = p.parse_args(argv)
    variants = [
        ("pyslirp4netns", None, []),
        ("pyslirp4netns hardened", None, HARDENING),
        ("slirp4netns", [REFERENCE], []),
        ("slirp4netns hardened", [REFERENCE], HARDENING),
    ]
    times: dict[str, list[float]] = {name: [] for name, _, _ in variants}
    with Session() as session:
        for _ in range(args.repeat):
            for name, program, flags in variants:
                times[name].append(one_run(session.outer, program, flags))
    print(f"{'variant':24} {'median':>10} {'best':>10}  (argv to ready byte, {args.repeat} runs)")
    summary = []
    for name, runs in times.items():
        median = statistics.median(runs)
        reference = name.startswith("slirp4netns")
        ref_runs = times.get(name.replace("pyslirp4netns", "slirp4netns"), [])
        ref = statistics.median(ref_runs) if ref_runs and not reference else None
        versus = f"  {median / ref:5.2f}x slirp4netns" if ref else ""
        goal = ""
        if not reference:
            goal = f"  target <= {TARGET * 1000:.0f}ms " + ("met" if median <= TARGET else "MISSED")
        print(f"{name:24} {median * 1000:8.1f}ms {min(runs) * 1000:8.1f}ms{versus}{goal}")
        summary.append(
            {
                "variant": name,
                "reference": reference,
                "median_s": median,
                "best_s": min(runs),
                "reference_median_s": ref,
                "ratio": median / ref if ref else None,
                "target_s": None if reference else TARGET,
                "met": None if reference else median <= TARGET,
            }
        )
    if args.json:
        every: list[dict[str, object]] = [
            {"variant": name, "seconds": t} for name, runs in times.items() for t in runs
        ]
        write_document(
            args.json, "startup", session.elapsed(), {"repeat": args.repeat}, every, summary
        )
        print(f"# runs written to {args.json}")
    return session.status


if __name__ == "__main__":
    sys.exit(main())
