"""What every benchmark script shares: the run's frame, not its measurements.

A ``Session`` owns the loopback-only outer namespace for the whole run, turns SIGTERM/SIGHUP
into Ctrl-C's unwinding (so every ``finally`` runs and partial figures are still printed), and
tears down with signals held; ``write_document`` gives report.py the same JSON envelope from
each script."""

from __future__ import annotations

import json
import os
import platform
import shlex
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType, TracebackType

from tests.rig import Outer


class Stop(KeyboardInterrupt):
    """SIGTERM/SIGHUP turned into the same unwinding as Ctrl-C, so every ``finally`` runs."""


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise Stop(signal.Signals(signum).name)


@contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold SIGINT/SIGTERM while tearing down, so a second Ctrl-C cannot leave a process behind;
    a signal that arrived meanwhile is delivered (and raises) right after."""
    held = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def quietly_close(closer: object) -> None:
    """Call ``closer.close()``; a failure to clean one thing must not stop cleaning the rest."""
    try:
        closer.close()  # type: ignore[attr-defined]
    except Exception as e:
        print(f"cleanup: {type(closer).__name__}.close(): {e}", file=sys.stderr)


def machine() -> str:
    return (
        f"{platform.node()} {platform.release()}, {os.cpu_count()} CPUs, "
        f"{platform.processor() or platform.machine()}"
    )


class Session:
    """``with Session() as s:`` the run's rounds, inside ``s.outer``.

    Ctrl-C, SIGTERM or SIGHUP ends the rounds early: the block is left, ``s.interrupted`` is
    set and the caller prints what it has (exit status 130)."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.interrupted = False
        self._outer: Outer | None = None

    @property
    def outer(self) -> Outer:
        assert self._outer is not None, "Session.outer outside its with block"
        return self._outer

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def __enter__(self) -> Session:
        signal.signal(signal.SIGTERM, _raise_stop)
        signal.signal(signal.SIGHUP, _raise_stop)
        self._outer = Outer()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool:
        if self._outer is not None:
            with signals_deferred():
                quietly_close(self._outer)
        if kind is not None and issubclass(kind, KeyboardInterrupt):
            self.interrupted = True
            print(f"interrupted ({str(error) or 'SIGINT'}): partial results", file=sys.stderr)
            return True
        return False

    @property
    def status(self) -> int:
        return 130 if self.interrupted else 0


def write_document(
    path: str,
    script: str,
    seconds: float,
    parameters: dict[str, object],
    runs: list[dict[str, object]],
    summary: list[dict[str, object]],
) -> None:
    """--json FILE: the envelope report.py reads, the same for every script."""
    document = {
        "script": script,
        "command": shlex.join(["python3", "-m", f"benchmarks.{script}", *sys.argv[1:]]),
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "seconds": round(seconds, 1),
        "parameters": parameters,
        "runs": runs,
        "summary": summary,
    }
    Path(path).write_text(json.dumps(document, indent=1) + "\n")
