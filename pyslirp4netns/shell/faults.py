"""A test-only fault injector at the tap boundary: drop, corrupt and reorder frames.

``tc netem`` is not available on this kernel, so loss/corruption/reordering tests switch this on
with ``PYSLIRP4NETNS_FAULTS="drop=0.05,corrupt=0.05,reorder=0.1,seed=1"`` (probabilities per
frame, both directions). It is never active unless that variable is set; the daemon logs one line
when it is, so a run with faults can't be mistaken for a clean one.
"""

from __future__ import annotations

import ctypes
import os
import random
from collections.abc import Iterator

ENV = "PYSLIRP4NETNS_FAULTS"
# Header bytes are spared by corruption: a corrupted length field only tests the decoder, which
# the malformed-frame corpus does; payload corruption tests checksums and retransmission.
SPARE = 14 + 20


class FaultInjector:
    """Decides, per frame, to pass, drop, corrupt (one flipped payload bit) or hold back."""

    def __init__(
        self, drop: float = 0.0, corrupt: float = 0.0, reorder: float = 0.0, seed: int = 0
    ):
        for name, p in (("drop", drop), ("corrupt", corrupt), ("reorder", reorder)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{ENV}: {name} must be a probability, not {p}")
        self.drop, self.corrupt, self.reorder = drop, corrupt, reorder
        self.random = random.Random(seed)
        self.held: tuple[bytes, bool] | None = None  # held back: swaps places with the next
        self.counts = {"drop": 0, "corrupt": 0, "reorder": 0}

    @classmethod
    def from_spec(cls, spec: str) -> FaultInjector:
        """Parse ``drop=0.05,corrupt=0.05,reorder=0.1,seed=1``; raises ValueError."""
        values: dict[str, float] = {}
        for item in filter(None, (part.strip() for part in spec.split(","))):
            key, sep, value = item.partition("=")
            if not sep or key not in ("drop", "corrupt", "reorder", "seed"):
                raise ValueError(f"{ENV}: cannot parse {item!r}")
            values[key] = float(value)
        seed = int(values.pop("seed", 0))
        return cls(seed=seed, **values)

    def __str__(self) -> str:
        return f"drop={self.drop} corrupt={self.corrupt} reorder={self.reorder}"

    def apply(self, frame: bytes, verifiable: bool = True) -> Iterator[tuple[bytes, bool]]:
        """The frames to deliver now, in order, in place of ``frame``, with their flags.

        ``verifiable``: the frame carries a complete checksum, so a flipped bit is something
        the receiver can catch. A frame whose checksum the tap fills in later (virtio
        NEEDS_CSUM) can't be corrupted in transit in any way a receiver would see: on a
        real link the damage would come after the checksum, and the frame would be discarded.
        So "corrupt" drops such a frame instead of handing over undetectable garbage.
        """
        roll = self.random.random()
        if roll < self.drop:
            self.counts["drop"] += 1
            return
        if roll < self.drop + self.corrupt and len(frame) > SPARE:
            self.counts["corrupt"] += 1
            if not verifiable:
                return
            damaged = bytearray(frame)
            bit = self.random.randrange((len(frame) - SPARE) * 8)
            damaged[SPARE + bit // 8] ^= 1 << (bit % 8)
            frame = bytes(damaged)
        elif roll < self.drop + self.corrupt + self.reorder and self.held is None:
            self.counts["reorder"] += 1
            self.held = (frame, verifiable)
            return
        yield frame, verifiable
        if self.held is not None:
            held, self.held = self.held, None
            yield held

    def flush(self) -> Iterator[tuple[bytes, bool]]:
        """A held frame is never lost to reordering: the end of a batch releases it."""
        if self.held is not None:
            held, self.held = self.held, None
            yield held


# Test-only: with this set, SIGUSR2 makes the daemon call what the sandbox and the seccomp filter
# must stop (execve, ptrace or mount), so a test can see the kernel kill it with SIGSYS.
TEST_SYSCALL_ENV = "PYSLIRP4NETNS_TEST_SYSCALL"


def forbidden_call(name: str) -> None:
    """Make the syscall ``name`` the way an exploit would; return only if it failed."""
    libc = ctypes.CDLL(None, use_errno=True)
    try:
        if name == "execve":
            os.execv("/bin/true", ["true"])
        elif name == "ptrace":
            libc.ptrace(0, 0, None, None)  # PTRACE_TRACEME
        elif name == "mount":
            libc.mount(b"none", b"/", b"tmpfs", ctypes.c_ulong(0), None)
    except OSError:
        pass
