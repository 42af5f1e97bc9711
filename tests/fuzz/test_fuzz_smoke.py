"""The fuzz targets in the ordinary test run: every seed replays clean in-process, and each
target runs briefly under libFuzzer (5,000 executions from the seeds, fixed libFuzzer seed).
The long run is tests/fuzz/README.md's."""

from __future__ import annotations

from pathlib import Path

import pytest

from pyslirp4netns.core.stack import Stack
from tests.fuzz import harnesses, seeds
from tests.fuzz.run import TARGET_NAMES, run_target

SMOKE_RUNS = 5000


def test_every_target_has_seeds() -> None:
    assert set(harnesses.TARGETS) == set(TARGET_NAMES) == set(seeds.SEEDS)


@pytest.mark.parametrize("target", TARGET_NAMES)
def test_seeds_replay_clean(target: str) -> None:
    for seed in seeds.SEEDS[target]():
        harnesses.TARGETS[target](seed)


def test_frames_seeds_reach_the_host_side() -> None:
    """The seeds are real traffic: the TCP session is carried to its end, not dropped."""
    shells = [harnesses.run_frames(seed) for seed in seeds.frames_seeds()]
    assert all(
        shell is not None and not shell.stack.dropped["tcp: bad checksum"] for shell in shells
    )
    shutdowns = sum(shell.seen["StreamShutdown"] for shell in shells if shell is not None)
    assert shutdowns >= 4  # every whole session: the guest's FIN reached the host socket
    assert sum(shell.seen["DatagramOpen"] for shell in shells if shell is not None) >= 5


def test_checksum_fixing_lets_a_spoiled_frame_through() -> None:
    frame = bytearray(seeds.segment(0x02, 1000, options=seeds.SYN_OPTIONS))
    frame[50] ^= 0xFF  # the TCP checksum no longer matches
    frame[24] ^= 0xFF  # nor the IPv4 header checksum
    harnesses.fix_checksums(frame)
    stack = Stack(harnesses.CONFIG)
    stack.receive_frame(bytes(frame), 0.0)
    assert not stack.dropped and len(stack.streams.flows) == 1


@pytest.mark.parametrize("target", TARGET_NAMES)
def test_short_fuzz_run(target: str, tmp_path: Path) -> None:
    pytest.importorskip("atheris")
    result = run_target(
        target,
        runs=SMOKE_RUNS,
        seconds=None,
        corpus=tmp_path / "corpus",
        artifacts=tmp_path / "artifacts",
        seed=1,
    )
    log = (tmp_path / "artifacts" / f"{target}.log").read_text(errors="replace")
    assert not result.findings, log[-6000:]
    assert result.returncode == 0, log[-6000:]
    assert result.executions >= SMOKE_RUNS and result.cov > 0, result.line()
