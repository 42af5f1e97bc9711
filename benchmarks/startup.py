"""Start-up time, spawn to ready byte, plain and hardened, against slirp4netns.

Each run gets a fresh root-style guest (``unshare -n``) in the test rig's ``Outer`` and one
daemon started with ``-r 3 PID tap0`` (``--configure`` too), with and without
``--enable-sandbox --enable-seccomp``; the figure is the time from ``posix_spawn`` until the
ready pipe gives EOF after ``1``. Variants alternate (A B C D A B C D ...) ``--repeat`` times.
Prints the median and the best of each. Needs root. Run from the checkout root as
``python3 -m benchmarks.startup --repeat 10``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence

from tests.rig import REFERENCE, Guest, Outer, start_ready

HARDENING = ["--enable-sandbox", "--enable-seccomp"]


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


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python3 -m benchmarks.startup", description=__doc__)
    p.add_argument("--repeat", type=int, default=10, help="runs per variant")
    args = p.parse_args(argv)
    variants = [
        ("pyslirp4netns", None, []),
        ("pyslirp4netns hardened", None, HARDENING),
        ("slirp4netns", [REFERENCE], []),
        ("slirp4netns hardened", [REFERENCE], HARDENING),
    ]
    times: dict[str, list[float]] = {name: [] for name, _, _ in variants}
    outer = Outer()
    try:
        for _ in range(args.repeat):
            for name, program, flags in variants:
                times[name].append(one_run(outer, program, flags))
    finally:
        outer.close()
    print(f"{'variant':24} {'median':>10} {'best':>10}  (argv to ready byte, {args.repeat} runs)")
    for name, runs in times.items():
        print(f"{name:24} {statistics.median(runs) * 1000:8.1f}ms {min(runs) * 1000:8.1f}ms")


if __name__ == "__main__":
    main()
