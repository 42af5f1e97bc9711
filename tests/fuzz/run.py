"""Run the atheris targets of ``tests/fuzz/harnesses.py`` under libFuzzer, one after another.

    python3 -m tests.fuzz.run --target frames --runs 1000000
    python3 -m tests.fuzz.run --seconds 600            # every target, 10 minutes each

Each target runs in a child process (libFuzzer ends the process when it is done), seeded by
``tests/fuzz/seeds.py`` into ``--corpus DIR/<target>`` (a temporary folder unless given; the
corpus grows there and a later run starts from it). Per target one line: executions, exec/s,
coverage (libFuzzer's ``cov``: instrumented edges reached, ``ft``: features) and the corpus
size, then any finding: the exception and the crash file libFuzzer wrote (``--artifacts``).
Exit status 1 if any target found something.

This module imports nothing from the package at the top: the child must import it inside
``atheris.instrument_imports`` for the package's code to report coverage.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

TARGET_NAMES = ("frames", "api", "dhcp", "ndp", "fragments")
# Longest input libFuzzer makes per target: the API's limit is 4096 bytes (a longer request
# must be seen to be refused); frames and fragments hold several records.
MAX_LEN = {"frames": 8192, "api": 6000, "dhcp": 4096, "ndp": 4096, "fragments": 8192}
INSTRUMENTED = ["pyslirp4netns", "tests.fuzz.harnesses"]
_STATS = re.compile(
    r"^#(\d+)\s+(\w+)\s+cov: (\d+) ft: (\d+) corp: (\d+)/\S+.*?exec/s: (\d+)", re.MULTILINE
)
_DONE = re.compile(r"^Done (\d+) runs in (\d+) second", re.MULTILINE)
_ARTIFACT = re.compile(r"Test unit written to (\S+)")
_EXCEPTION = re.compile(r"=== Uncaught Python exception: ===\n(.+)")


@dataclass
class Result:
    target: str
    returncode: int
    executions: int = 0
    seconds: float = 0.0
    cov: int = 0
    ft: int = 0
    corpus: int = 0
    findings: list[str] = field(default_factory=list)
    artifacts: list[str] = field(default_factory=list)

    @property
    def exec_per_s(self) -> float:
        return self.executions / self.seconds if self.seconds else 0.0

    def line(self) -> str:
        return (
            f"{self.target}: {self.executions} executions in {self.seconds:.1f} s "
            f"({self.exec_per_s:.0f} exec/s), cov {self.cov} ft {self.ft}, "
            f"corpus {self.corpus}, findings {len(self.findings)}"
        )


def child(target: str, libfuzzer_args: list[str]) -> None:
    """In the child: instrument the package, then hand the target to libFuzzer (never returns)."""
    import atheris

    with atheris.instrument_imports(include=INSTRUMENTED):
        from tests.fuzz import harnesses
    atheris.Setup([sys.argv[0], *libfuzzer_args], harnesses.TARGETS[target])
    atheris.Fuzz()


def run_target(
    target: str,
    *,
    runs: int | None,
    seconds: int | None,
    corpus: Path,
    artifacts: Path,
    seed: int | None = None,
    quiet: bool = True,
) -> Result:
    """One target in a child process; its libFuzzer log goes to ``artifacts/<target>.log``."""
    from tests.fuzz import seeds  # the parent may import the package: it is not fuzzed

    folder = seeds.write(corpus, target)
    artifacts.mkdir(parents=True, exist_ok=True)
    args = [
        f"-max_len={MAX_LEN[target]}",
        f"-artifact_prefix={artifacts}/{target}-",
        "-timeout=20",
        "-rss_limit_mb=4096",
        "-print_final_stats=1",
    ]
    if runs is not None:
        args.append(f"-runs={runs}")
    if seconds is not None:
        args.append(f"-max_total_time={seconds}")
    if seed is not None:
        args.append(f"-seed={seed}")
    command = [sys.executable, "-m", "tests.fuzz.run", "--child", target, "--", *args, str(folder)]
    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, PYTHONPATH=str(root) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    log = artifacts / f"{target}.log"
    started = time.monotonic()
    with log.open("w") as out:
        process = subprocess.run(command, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT)
    elapsed = time.monotonic() - started
    text = log.read_text(errors="replace")
    result = Result(target, process.returncode, seconds=elapsed)
    stats = _STATS.findall(text)
    if stats:
        executions, _, cov, ft, corp, _ = stats[-1]
        result.executions, result.cov, result.ft = int(executions), int(cov), int(ft)
        result.corpus = int(corp)
    done = _DONE.search(text)
    if done:
        result.executions = int(done.group(1))
    result.findings = _EXCEPTION.findall(text)
    result.artifacts = _ARTIFACT.findall(text)
    if process.returncode and not result.findings:
        result.findings = [f"libFuzzer exited {process.returncode}: see {log}"]
    if not quiet:
        print(text[-4000:] if result.findings else "", end="", file=sys.stderr)
    return result


def replay(targets: list[str], path: Path) -> int:
    """Inputs through one target in process, no atheris: a crash file's traceback, or a
    corpus under ``python3 -m coverage run``. A folder named after a target (the corpus
    layout) picks that target."""
    from tests.fuzz import harnesses

    if path.is_dir() and path.name in harnesses.TARGETS:
        targets = [path.name]
    if len(targets) != 1:
        raise SystemExit("--replay needs one --target")
    files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    for file in files:
        harnesses.TARGETS[targets[0]](file.read_bytes())
    print(f"{targets[0]}: {len(files)} inputs replayed clean")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        target, rest = argv[1], argv[2:]
        child(target, rest[1:] if rest[:1] == ["--"] else rest)
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", choices=TARGET_NAMES, action="append", help="default: all")
    parser.add_argument("--runs", type=int, help="executions per target")
    parser.add_argument(
        "--seconds", type=int, help="time per target (with --runs: what ends first)"
    )
    parser.add_argument("--corpus", type=Path, help="corpus folders live here (kept)")
    parser.add_argument("--artifacts", type=Path, default=Path("fuzz-artifacts"))
    parser.add_argument("--seed", type=int, help="libFuzzer's random seed")
    parser.add_argument(
        "--replay", type=Path, help="run these inputs (a file or a folder) in process and stop"
    )
    args = parser.parse_args(argv)
    if args.replay is not None:
        return replay(args.target or list(TARGET_NAMES), args.replay)
    if args.runs is None and args.seconds is None:
        args.runs = 10000
    failed = False
    with tempfile.TemporaryDirectory(prefix="pyslirp4netns-fuzz-") as scratch:
        corpus = args.corpus or Path(scratch)
        for target in args.target or TARGET_NAMES:
            result = run_target(
                target,
                runs=args.runs,
                seconds=args.seconds,
                corpus=corpus,
                artifacts=args.artifacts.resolve(),
                seed=args.seed,
                quiet=False,
            )
            print(result.line(), flush=True)
            for finding, artifact in zip(
                result.findings, result.artifacts + [""] * 9, strict=False
            ):
                print(f"  finding: {finding}" + (f" ({artifact})" if artifact else ""))
            failed = failed or bool(result.findings)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
