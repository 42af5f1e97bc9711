"""What the running daemon calls once its seccomp filter is loaded: the evidence for ALLOWED.

    python3 tests/tools/syscalls.py run DIR [PYTEST ARGS...]
        runs the suite (default: tests/integration and compat) with --enable-sandbox
        --enable-seccomp on every daemon (RIG_HARDENED=1) and, once each is ready and filtered,
        ``strace -f -p PID -o DIR/t.PID`` attached to it (RIG_STRACE_DIR=DIR), then reports;
    python3 tests/tools/syscalls.py report DIR
        reports on traces already there.

Every traced call happened under the filter. The report counts them, marks any that
``pyslirp4netns.shell.seccomp`` does not allow, and names every process the filter killed
with the syscall that did it (the test-only trigger in tests/integration/test_sandbox.py makes
six such kills on purpose: execve, ptrace and mount, twice). Exit status 1 if anything is listed
as not allowed or killed. Tests may fail under strace (it is slow); only the syscalls matter here.
"""

from __future__ import annotations

import collections
import os
import re
import subprocess
import sys
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(CHECKOUT))  # a script by path: the package from this checkout

from pyslirp4netns.shell.seccomp import ALLOWED, NARROWED  # noqa: E402

CALL = re.compile(r"^([a-z_0-9]+)\(")
RESUMED = re.compile(r"^<\.\.\. ([a-z_0-9]+) resumed>")
KILLED = re.compile(r"si_code=SYS_SECCOMP.*si_syscall=__NR_([a-z_0-9]+)")
# SECCOMP_RET_KILL_PROCESS delivers no signal-stop: strace sees the unfinished call, then this.
KILLED_BY_SIGSYS = "+++ killed by SIGSYS"


def scan(path: Path) -> tuple[collections.Counter[str], str | None]:
    """(the calls, the syscall that got the process killed or None)."""
    calls: collections.Counter[str] = collections.Counter()
    killer = last = None
    with path.open(errors="replace") as f:
        for line in f:
            line = line.split(" ", 1)[1] if line[:1].isdigit() else line  # -f: "PID call(..."
            if m := KILLED.search(line):
                killer = m.group(1)
            elif line.startswith(KILLED_BY_SIGSYS):
                killer = killer or last
            elif m := CALL.match(line) or RESUMED.match(line):
                last = m.group(1)
                calls[last] += 1
    return calls, killer


def report(directory: Path) -> int:
    total: collections.Counter[str] = collections.Counter()
    killed: list[tuple[str, str]] = []
    processes = 0
    for path in sorted(directory.glob("t.*")):
        processes += 1
        calls, killer = scan(path)
        total.update(calls)
        if killer is not None:
            killed.append((path.name, killer))
    allowed = set(ALLOWED) | set(NARROWED)
    print(f"{processes} filtered daemon processes, {sum(total.values())} syscalls under the filter")
    for name, count in sorted(total.items(), key=lambda kv: -kv[1]):
        print(f"  {name:24} {count:>10}{'' if name in allowed else '   NOT ALLOWED'}")
    unused = sorted(allowed - set(total))
    print(f"allowed but not seen ({len(unused)}): {' '.join(unused)}")
    for name, killer in killed:
        print(f"KILLED {name}: {killer}")
    missing = set(total) - allowed
    return 1 if missing or killed else 0


def run(directory: Path, pytest_args: list[str]) -> int:
    directory.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "RIG_STRACE_DIR": str(directory), "RIG_HARDENED": "1"}
    args = pytest_args or ["tests/integration", "compat"]
    subprocess.run([sys.executable, "-m", "pytest", "-q", *args], cwd=CHECKOUT, env=env)
    return report(directory)


def main() -> int:
    if len(sys.argv) >= 3 and sys.argv[1] == "run":
        return run(Path(sys.argv[2]), sys.argv[3:])
    if len(sys.argv) == 3 and sys.argv[1] == "report":
        return report(Path(sys.argv[2]))
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
