"""The test-only fault injector: exact rates, bounded effects, never a lost reordered frame."""

from __future__ import annotations

import pytest

from pyslirp4netns.shell.faults import SPARE, FaultInjector

FRAMES = [bytes([i % 256]) * 200 + i.to_bytes(4, "big") for i in range(10_000)]


def run(injector: FaultInjector) -> list[bytes]:
    out: list[bytes] = []
    for frame in FRAMES:
        out.extend(f for f, _ in injector.apply(frame))
    out.extend(f for f, _ in injector.flush())
    return out


def test_corrupting_a_frame_without_its_checksum_drops_it() -> None:
    injector = FaultInjector(corrupt=0.5, seed=4)
    out = [f for frame in FRAMES for f, _ in injector.apply(frame, verifiable=False)]
    assert set(out) <= set(FRAMES)
    assert len(out) == len(FRAMES) - injector.counts["corrupt"]


def test_off_by_default_is_the_identity() -> None:
    assert run(FaultInjector()) == FRAMES


def test_drop_rate_and_nothing_else() -> None:
    out = run(FaultInjector(drop=0.05, seed=1))
    assert set(out) <= set(FRAMES)
    assert 0.04 < 1 - len(out) / len(FRAMES) < 0.06


def test_corruption_flips_one_payload_bit() -> None:
    injector = FaultInjector(corrupt=0.05, seed=2)
    out = run(injector)
    assert len(out) == len(FRAMES)
    damaged = [(a, b) for a, b in zip(FRAMES, out, strict=True) if a != b]
    assert len(damaged) == injector.counts["corrupt"]
    assert 0.04 < len(damaged) / len(FRAMES) < 0.06
    for a, b in damaged:
        diff = [i for i in range(len(a)) if a[i] != b[i]]
        assert len(diff) == 1 and diff[0] >= SPARE
        assert bin(a[diff[0]] ^ b[diff[0]]).count("1") == 1


def test_reorder_swaps_neighbours_and_loses_nothing() -> None:
    injector = FaultInjector(reorder=0.1, seed=3)
    out = run(injector)
    assert sorted(out) == sorted(FRAMES)
    assert out != FRAMES
    assert 0.07 < injector.counts["reorder"] / len(FRAMES) < 0.11


def test_spec_parsing() -> None:
    injector = FaultInjector.from_spec("drop=0.05, corrupt=0.05,reorder=0.1,seed=7")
    assert (injector.drop, injector.corrupt, injector.reorder) == (0.05, 0.05, 0.1)
    for bad in ["drop", "loss=0.1", "drop=2", "drop=x"]:
        with pytest.raises(ValueError):
            FaultInjector.from_spec(bad)
