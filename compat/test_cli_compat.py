"""Differential command-line tests: pyslirp4netns against the real slirp4netns 1.2.0.

Each row runs both programs on the same argv and compares stdout, stderr and the exit code
byte for byte. Both get the same argv[0] ("slirp4netns"). One documented rewrite: we print the
usage text of slirp4netns 1.3.x, whose first line and --netns-type line differ from 1.2.0's
(``as_1_3`` below), so the reference's usage text is brought to 1.3's before comparing.

SAFETY. An argv that parses successfully makes the real slirp4netns join the target's network
namespace and create a tap there. So every row here must fail while parsing (a wrong row is
caught by ``_assert_failed_before_runtime``), targets are PIDs that cannot exist (2147483647)
or paths that do not exist, and every process runs inside throw-away network, mount and PID
namespaces: inside a fresh PID namespace even a stray PID can only name the process itself.
Runtime rows (non-existent PID, busy tap, ...) belong to the integration suite.

The reference binary comes from ``SLIRP4NETNS_REF`` (default /usr/bin/slirp4netns).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest

REF = os.environ.get("SLIRP4NETNS_REF", "/usr/bin/slirp4netns")
REPO = Path(__file__).resolve().parent.parent
ARGV0 = "slirp4netns"
NOPID = "2147483647"  # INT_MAX: parses as a PID, but no process can have it
TIMEOUT = 10

# Throw-away namespaces for every subprocess; --kill-child ties the namespace's init to us.
_ISOLATE = ["--net", "--mount", "--propagation", "private", "--pid", "--fork", "--kill-child"]
_ISOLATE += ["--mount-proc"]
if os.geteuid() != 0:
    _ISOLATE = ["--user", "--map-root-user", *_ISOLATE]

# Ours, with argv[0] controlled: main() receives the full argv, including ARGV0.
_OURS = "import sys; from pyslirp4netns.cli import main; sys.exit(main(sys.argv[1:]))"


class Result(NamedTuple):
    stdout: bytes
    stderr: bytes
    rc: int


# The two lines of the usage text (--help, and stdout after every usage error) that slirp4netns
# 1.3.0 changed, 1.2.0's then 1.3's; every other byte is the same in 1.2.0 and 1.3.2.
USAGE_LINE_1_2 = b" [OPTION]... PID|PATH [TAPNAME]\n"
USAGE_LINE_1_3 = b" [OPTION]... PID|PATH|FD [TAPNAME]\n"
NETNS_TYPE_LINE_1_2 = (
    b"--netns-type=TYPE \t specify network namespace type ([path|pid], default=pid)\n"
)
NETNS_TYPE_LINE_1_3 = (
    b"--netns-type=TYPE \t specify network namespace type ([path|pid|tapfd], default=pid)\n"
)


def as_1_3(result: Result) -> Result:
    """The reference's output as slirp4netns 1.3.x prints it: its usage text's two 1.3 lines."""
    stdout = result.stdout.replace(USAGE_LINE_1_2, USAGE_LINE_1_3)
    stdout = stdout.replace(b"\n" + NETNS_TYPE_LINE_1_2, b"\n" + NETNS_TYPE_LINE_1_3)
    return result._replace(stdout=stdout)


def _isolated(cmd: list[str], env: dict[str, str] | None, merged: bool, lo_up: bool) -> Result:
    """Run ``cmd`` in throw-away namespaces; ``merged`` sends stderr into the stdout pipe;
    ``lo_up`` brings the namespace's loopback up first (127.0.0.1 and ::1 then exist)."""
    if lo_up:
        cmd = ["bash", "-c", 'ip link set lo up && exec "$@"', "bash", *cmd]
    full_env = {k: v for k, v in os.environ.items() if k != "POSIXLY_CORRECT"}
    full_env.update(env or {})
    proc = subprocess.run(
        ["unshare", *_ISOLATE, *cmd],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT if merged else subprocess.PIPE,
        timeout=TIMEOUT,
        env=full_env,
        check=False,
    )
    return Result(proc.stdout, proc.stderr or b"", proc.returncode)


def run_ref(
    args: list[str],
    env: dict[str, str] | None = None,
    argv0: str = ARGV0,
    merged: bool = False,
    lo_up: bool = False,
) -> Result:
    # bash's `exec -a` sets argv[0] of the real binary.
    cmd = ["bash", "-c", 'exec -a "$0" "$1" "${@:2}"', argv0, REF, *args]
    return _isolated(cmd, env, merged, lo_up)


def run_ours(
    args: list[str],
    env: dict[str, str] | None = None,
    argv0: str = ARGV0,
    merged: bool = False,
    lo_up: bool = False,
) -> Result:
    python_path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    env = {"PYTHONPATH": python_path, **(env or {})}
    return _isolated([sys.executable, "-c", _OURS, argv0, *args], env, merged, lo_up)


def _usable() -> str | None:
    """Why the differential suite cannot run here, or None."""
    if not os.access(REF, os.X_OK):
        return f"reference slirp4netns not found at {REF} (set SLIRP4NETNS_REF)"
    if not all(shutil.which(tool) for tool in ("unshare", "bash", "ip")):
        return "unshare(1), bash and ip(8) are needed to isolate the subprocesses"
    probe = subprocess.run(
        ["unshare", *_ISOLATE, "ip", "link", "set", "lo", "up"],
        capture_output=True,
        timeout=TIMEOUT,
        check=False,
    )
    if probe.returncode != 0:
        return f"cannot create throw-away namespaces: {probe.stderr.decode(errors='replace')}"
    return None


_SKIP_REASON = _usable()
pytestmark = pytest.mark.skipif(_SKIP_REASON is not None, reason=_SKIP_REASON or "")

MAC_HINT = (
    b"macaddress has to be a valid MAC address (hex string, 6 bytes, each byte separated by a ':')."
)
_RUNTIME_MARKERS = (b"child failed", b"/ns/net", b"sent tapfd", b"Starting slirp", b"child_bess")


def _assert_failed_before_runtime(result: Result) -> None:
    """A guard on the table itself: a row that reached the runtime is a dangerous row."""
    assert not any(m in result.stderr + result.stdout for m in _RUNTIME_MARKERS), result


class Row(NamedTuple):
    id: str
    args: list[str]
    env: dict[str, str] | None = None


def _rows(*rows: tuple[str, list[str]] | tuple[str, list[str], dict[str, str]]) -> list[Row]:
    return [Row(*row) for row in rows]


# Contract §1.5, the rows that fail while parsing.
ERROR_MATRIX = _rows(
    ("no-args", []),
    ("mtu-70000", ["--mtu=70000", NOPID, "tap0"]),
    ("cidr-garbage", ["--cidr=garbage", NOPID, "tap0"]),
    ("netns-type-foo-missing-path", ["--netns-type=foo", "/nonexistent", "tap0"]),
    ("no-tapname", [NOPID]),
    ("pid-abc", ["abc", "tap0"]),
    ("pid-0", ["0", "tap0"]),
    ("pid-negative-after-dashdash", ["--", "-5", "tap0"]),
    ("macaddress-without-c", ["--macaddress=aa:bb:cc:dd:ee:ff", NOPID, "tap0"]),
    ("exit-fd-negative", ["-e", "-1", NOPID, "tap0"]),
    ("ready-fd-trailing-junk", ["-r", "1x", NOPID, "tap0"]),
    ("userns-path-missing", ["--userns-path=/nonexistent", NOPID, "tap0"]),
    ("target-type-foo", ["--target-type=foo", NOPID, "tap0"]),
)

GETOPT = _rows(
    ("unrecognized-long", ["--bogus"]),
    ("unrecognized-long-with-value", ["--bogus=1"]),
    ("unrecognized-triple-dash", ["---mtu=5"]),
    ("invalid-short", ["-x"]),
    ("invalid-short-in-group-after", ["-cx"]),
    ("invalid-short-in-group-before", ["-xc"]),
    ("invalid-short-digit-in-group", ["-c5"]),
    ("invalid-short-dash-in-group", ["-c-"]),
    ("short-requires-argument-m", ["-m"]),
    ("short-requires-argument-a", ["-a"]),
    ("short-requires-argument-in-group", ["-cm"]),
    ("long-requires-argument", ["--mtu"]),
    ("abbrev-requires-argument", ["--mt"]),
    ("long-requires-argument-outbound-addr", ["--outbound-addr"]),
    ("no-argument-allowed", ["--configure=x"]),
    ("no-argument-allowed-abbrev", ["--conf=x"]),
    ("no-argument-allowed-help", ["--help=x"]),
    ("no-argument-allowed-enable-ipv6", ["--enable-ipv6=1"]),
    ("ambiguous-e", ["--e"]),
    ("ambiguous-d", ["--d"]),
    ("ambiguous-c", ["--c"]),
    ("ambiguous-n", ["--n"]),
    ("ambiguous-m", ["--m"]),
    ("ambiguous-out", ["--out"]),
    ("ambiguous-outbound", ["--outbound"]),
    ("ambiguous-en", ["--en"]),
    ("ambiguous-enable-s", ["--enable-s"]),
    ("ambiguous-with-value", ["--dis=x"]),
    ("ambiguous-e-with-value", ["--e=1"]),
    ("ambiguous-empty-name-lists-whole-table", ["--=x"]),
    ("lone-dash-is-positional", ["-"]),
    ("lone-dash-as-pid", ["-", "tap0"]),
    ("dashdash-only", ["--"]),
    ("dashdash-then-help-is-positional", ["--", "-h"]),
    ("dashdash-between-positionals", ["abc", "--", "-h", "tap0"]),
    ("permutation-option-after-positionals", ["abc", "tap0", "-c"]),
    ("permutation-mtu-after-positional", ["abc", "--mtu", "0", "tap0"]),
    ("option-argument-may-start-with-dash", ["--mtu", "-5", NOPID, "tap0"]),
    ("option-argument-may-be-dashdash", ["-m", "--", NOPID, "tap0"]),
    ("short-attached-argument", ["-m0", NOPID, "tap0"]),
    ("long-separate-argument", ["--mtu", "0", NOPID, "tap0"]),
    ("first-error-wins-bogus-then-version", ["--bogus", "--version"]),
    ("first-error-wins-mtu-then-help", ["-m", "0", "-h"]),
    ("posixly-correct-stops-at-positional", ["abc", "-v"], {"POSIXLY_CORRECT": "1"}),
    ("posixly-correct-extra-args", ["abc", "tap0", "-x"], {"POSIXLY_CORRECT": "1"}),
    ("posixly-correct-invalid-option", ["-x"], {"POSIXLY_CORRECT": "1"}),
    ("deprecated-no-host-loopback-abbrev", ["--no"]),
    ("deprecated-create-sandbox-abbrev", ["--cr"]),
    ("abbrev-netns-type", ["--ne"]),
    ("abbrev-userns-path", ["--u"]),
    ("abbrev-target-type", ["--t"]),
    ("abbrev-api-socket", ["--a"]),
    ("abbrev-ready-fd", ["--r"]),
    ("abbrev-macaddress", ["--ma"]),
    ("abbrev-mac-without-c", ["--mac=x", NOPID, "tap0"]),
    ("abbrev-cidr", ["--cid=garbage", NOPID, "tap0"]),
    ("abbrev-userns-path-value", ["--user=/nonexistent", NOPID, "tap0"]),
    ("abbrev-target-type-value", ["--targ=foo", NOPID, "tap0"]),
    ("exact-outbound-addr-beats-prefix", ["--outbound-addr=bogus0", NOPID, "tap0"]),
)

NUMBERS = _rows(
    ("mtu-0", ["-m", "0", NOPID, "tap0"]),
    ("mtu-negative", ["-m", "-5", NOPID, "tap0"]),
    ("mtu-abc", ["-m", "abc", NOPID, "tap0"]),
    ("mtu-hex", ["-m", "0x100", NOPID, "tap0"]),
    ("mtu-65522", ["-m", "65522", NOPID, "tap0"]),
    ("mtu-empty", ["--mtu=", NOPID, "tap0"]),
    ("mtu-trailing-space", ["-m", "5 ", NOPID, "tap0"]),
    ("mtu-exponent", ["-m", "1e3", NOPID, "tap0"]),
    ("mtu-double-sign", ["-m", "+-7", NOPID, "tap0"]),
    ("mtu-minus-zero", ["-m", "-0", NOPID, "tap0"]),
    ("mtu-99999999999-wraps-too-big", ["-m", "99999999999", NOPID, "tap0"]),
    ("mtu-erange", ["-m", "99999999999999999999", NOPID, "tap0"]),
    ("mtu-65521-ok", ["-m", "65521", "abc", "tap0"]),
    ("mtu-leading-space-ok", ["-m", " 5", "abc", "tap0"]),
    ("mtu-plus-ok", ["-m", "+5", "abc", "tap0"]),
    ("mtu-wraps-to-1500-ok", ["-m", "4294968796", "abc", "tap0"]),
    ("exit-fd-empty-is-0-ok", ["-e", "", "abc", "tap0"]),
    ("exit-fd-space", ["-e", " ", NOPID, "tap0"]),
    ("exit-fd-plus-only", ["-e", "+", NOPID, "tap0"]),
    ("exit-fd-minus-zero-ok", ["-e", "-0", "abc", "tap0"]),
    ("exit-fd-99999999999-wraps-ok", ["-e", "99999999999", "abc", "tap0"]),
    ("exit-fd-4294967295-wraps-negative", ["-e", "4294967295", NOPID, "tap0"]),
    ("exit-fd-4294967296-wraps-to-0-ok", ["-e", "4294967296", "abc", "tap0"]),
    ("exit-fd-2147483648", ["-e", "2147483648", NOPID, "tap0"]),
    ("exit-fd-erange-negative", ["-e", "-99999999999999999999", NOPID, "tap0"]),
    ("exit-fd-erange-positive", ["--exit-fd=99999999999999999999", NOPID, "tap0"]),
    ("ready-fd-empty-is-0-ok", ["--ready-fd=", "abc", "tap0"]),
    ("ready-fd-2147483648", ["--ready-fd=2147483648", NOPID, "tap0"]),
    ("ready-fd-space", ["--ready-fd= ", NOPID, "tap0"]),
    ("pid-plus-zero", ["+0", "tap0"]),
    ("pid-space-zero", [" 0", "tap0"]),
    ("pid-empty", ["", "tap0"]),
    ("pid-hex", ["0x10", "tap0"]),
    ("pid-fraction", ["1.5", "tap0"]),
    ("pid-trailing-space", ["5 ", "tap0"]),
    ("pid-2147483648-wraps-negative", ["2147483648", "tap0"]),
    ("pid-erange", ["99999999999999999999", "tap0"]),
    ("pid-minus-zero-is-an-option", ["-0", "tap0"]),
    ("too-many-arguments-then-bad-pid", ["abc", "tap0", "extra"]),
)

TARGETS = _rows(
    ("netns-type-path-missing", ["--netns-type=path", "/nonexistent", "tap0"]),
    ("netns-type-empty-is-path-mode", ["--netns-type=", "/nonexistent", "tap0"]),
    ("netns-type-path-not-a-directory", ["--netns-type=path", "/etc/passwd/x", "tap0"]),
    ("netns-type-path-lone-dash", ["--netns-type=path", "-", "tap0"]),
    ("netns-type-path-no-tapname", ["--netns-type=path", "/nonexistent"]),
    ("netns-type-pid-explicit", ["--netns-type=pid", "/nonexistent", "tap0"]),
    ("userns-path-checked-when-reached", ["--userns-path=/nonexistent", "--bogus"]),
    ("getopt-error-before-userns-path", ["--bogus", "--userns-path=/nonexistent"]),
    ("userns-path-empty", ["--userns-path=", NOPID, "tap0"]),
    ("userns-path-exists-then-bad-pid", ["--userns-path=/etc", "abc", "tap0"]),
    ("target-type-case-sensitive", ["--target-type=BESS", NOPID, "tap0"]),
    ("target-type-foo-no-positionals", ["--target-type=foo"]),
    ("target-type-netns-explicit", ["--target-type=netns", "abc", "tap0"]),
    ("target-type-last-wins", ["--target-type=bess", "--target-type=foo"]),
    ("macaddress-check-before-target-type", ["--target-type=foo", "--macaddress=x", "abc"]),
    ("macaddress-check-after-loop-checks", ["--macaddress=x", "-m", "0", NOPID, "tap0"]),
    ("bess-no-positional", ["--target-type=bess"]),
    ("bess-no-positional-before-conflict", ["--target-type=bess", "-c"]),
    ("bess-too-many-arguments", ["--target-type=bess", "a", "b"]),
    ("bess-too-many-before-conflict", ["--target-type=bess", "-c", "a", "b", "c"]),
    ("bess-conflicts-configure", ["--target-type=bess", "-c", "/nonexistent/s.sock"]),
    ("bess-conflicts-netns-type", ["--target-type=bess", "--netns-type=pid", "/nonexistent/s"]),
    ("bess-conflicts-userns-path", ["--target-type=bess", "--userns-path=/", "/nonexistent/s"]),
    ("bess-configure-before-netns-type", ["--target-type=bess", "--netns-type=x", "-c", "/n/s"]),
    ("bess-macaddress-check-first", ["--target-type=bess", "--macaddress=1", "/nonexistent/s"]),
    ("bess-warning-then-cidr-error", ["--target-type=bess", "-6", "--cidr=x", "/nonexistent/s"]),
)

CIDRS = [
    "garbage",
    "1.2.3.4",
    "10.0.2.0/024",
    " 10.0.2.0/24",
    "10.0.2.0/24 ",
    "10.0.2.0/24\n",
    "fd00::/64",
    "",
    "1.2.3.0/1x",
    "1111.2.3.0/24",
    "300.0.2.0/24",
    "300.0.2.0/99",
    "01.2.3.0/24",
    "010.0.2.0/24",
    "10.0.2.0/0",
    "10.0.2.0/26",
    "10.0.2.0/99",
    "1.2.3.4/32",
    "10.0.2.0/1",
    "10.0.2.100/24",
    "10.0.2.0/08",
    "255.255.255.255/25",
]
CIDR_ROWS = [Row(f"cidr-{c!r}", [f"--cidr={c}", NOPID, "tap0"]) for c in CIDRS]
CIDR_ROWS += _rows(("cidr-error-has-no-usage-but-warnings", ["-6", "--cidr=x", NOPID, "tap0"]))

BAD_MACS = [
    "",
    ":::",
    ":1:2:3:4:5:6",
    "1::2:3:4:5:6",
    "1:2:3:4:5:6:",
    "1:2:3:4:5:6::",
    "1:2:3:4:5:6:7",
    "1:2:3:4:5:6:x",
    "1:2:3:4:5:6:7:8",
    "x",
    "g",
    "100",
    "-1",
    "+",
    "-",
    "1:2:3:4:5:g",
    "ffffffffffffffffffffff",
    "aa:bb:cc:dd:ee:100",
]
MAC_ROWS = [Row(f"mac-{m!r}", ["-c", f"--macaddress={m}", NOPID, "tap0"]) for m in BAD_MACS]

OUTBOUND = _rows(
    ("outbound-addr-unknown-ifname", ["--outbound-addr=bogus0", NOPID, "tap0"]),
    ("outbound-addr-lo-without-address", ["--outbound-addr=lo", NOPID, "tap0"]),
    ("outbound-addr-ipv6-literal", ["--outbound-addr=::1", NOPID, "tap0"]),
    ("outbound-addr-leading-zero", ["--outbound-addr=01.2.3.4", NOPID, "tap0"]),
    ("outbound-addr-empty", ["--outbound-addr=", NOPID, "tap0"]),
    ("outbound-addr6-unknown-ifname", ["--outbound-addr6=bogus0", NOPID, "tap0"]),
    ("outbound-addr6-lo-without-address", ["--outbound-addr6=lo", NOPID, "tap0"]),
    ("outbound-addr6-ipv4-literal", ["--outbound-addr6=1.2.3.4", NOPID, "tap0"]),
    (
        "outbound-addr-checked-before-addr6",
        ["--outbound-addr6=::1", "--outbound-addr=x", NOPID, "t"],
    ),
    ("cidr-checked-before-outbound", ["--outbound-addr6=x", "--cidr=y", NOPID, "tap0"]),
    ("outbound-checked-before-mac", ["--outbound-addr=x", "--macaddress=zz", "-c", NOPID, "t"]),
    ("outbound-error-after-positional-check", ["--outbound-addr=x", "abc", "tap0"]),
    (
        "all-warnings-in-order",
        [
            "--outbound-addr=x",
            "--outbound-addr6=y",
            "-6",
            "--enable-seccomp",
            "--no-host-loopback",
            "--create-sandbox",
            "abc",
            "tap0",
            "extra",
        ],
    ),
    ("repeated-warnings", ["-66", "--enable-seccomp", "--enable-seccomp", "-m0"]),
)

HELP = _rows(
    ("help-long", ["--help"]),
    ("help-short", ["-h"]),
    ("help-abbrev", ["--h"]),
    ("help-after-warnings", ["-6", "-6", "-h"]),
    ("help-in-group", ["-ch"]),
    ("help-after-positionals", ["abc", "-h"]),
)

DIFFERENTIAL = ERROR_MATRIX + GETOPT + NUMBERS + TARGETS + CIDR_ROWS + MAC_ROWS + OUTBOUND + HELP


@pytest.mark.parametrize("row", DIFFERENTIAL, ids=[r.id for r in DIFFERENTIAL])
def test_same_output_as_slirp4netns(row: Row) -> None:
    ref = run_ref(row.args, row.env)
    if ref.rc != 0:
        _assert_failed_before_runtime(ref)
    ours = run_ours(row.args, row.env)
    assert ours == as_1_3(ref)


MERGED = [
    row
    for row in DIFFERENTIAL
    if row.id
    in {
        "mtu-70000",
        "permutation-mtu-after-positional",
        "all-warnings-in-order",
        "cidr-error-has-no-usage-but-warnings",
        "bess-warning-then-cidr-error",
        "outbound-checked-before-mac",
        "unrecognized-long",
    }
]


@pytest.mark.parametrize("row", MERGED, ids=[r.id for r in MERGED])
def test_same_interleaving_with_stderr_into_stdout(row: Row) -> None:
    """C stdio holds piped stdout until exit while stderr is immediate; podman logs both
    streams to one file, so the interleaving is observable and must match."""
    ref = run_ref(row.args, row.env, merged=True)
    _assert_failed_before_runtime(ref)
    assert run_ours(row.args, row.env, merged=True) == as_1_3(ref)


def test_help_is_byte_identical_but_the_1_3_lines_with_a_path_argv0() -> None:
    ref = run_ref(["--help"], argv0="/usr/bin/slirp4netns")
    ours = run_ours(["--help"], argv0="/usr/bin/slirp4netns")
    assert ref.stdout.startswith(b"Usage: /usr/bin/slirp4netns [OPTION]... PID|PATH [TAPNAME]\n")
    assert ours.stdout.startswith(
        b"Usage: /usr/bin/slirp4netns [OPTION]... PID|PATH|FD [TAPNAME]\n"
    )
    assert ours == as_1_3(ref)


@pytest.mark.parametrize("args", [["--help"], ["--bogus"], ["-m", "0"], []], ids=str)
def test_deliberate_difference_usage_text_is_1_3s(args: list[str]) -> None:
    """slirp4netns 1.3.0 changed the usage line to PID|PATH|FD and the --netns-type line to
    [path|pid|tapfd]; we print those two lines as 1.3.x does, and every other line as 1.2.0
    (and 1.3.x) does."""
    ref = run_ref(args)
    ours = run_ours(args)
    ref_lines = ref.stdout.splitlines(keepends=True)
    our_lines = ours.stdout.splitlines(keepends=True)
    assert len(our_lines) == len(ref_lines) == 22
    differing = [(r, o) for r, o in zip(ref_lines, our_lines, strict=True) if r != o]
    assert differing == [
        (b"Usage: slirp4netns" + USAGE_LINE_1_2, b"Usage: slirp4netns" + USAGE_LINE_1_3),
        (NETNS_TYPE_LINE_1_2, NETNS_TYPE_LINE_1_3),
    ]
    assert (ours.stderr, ours.rc) == (ref.stderr, ref.rc)


def test_usage_names_argv0_as_invoked() -> None:
    ref = run_ref(["--bogus"], argv0="./s4n")
    assert ref.stderr == b"./s4n: unrecognized option '--bogus'\n"
    assert run_ours(["--bogus"], argv0="./s4n") == as_1_3(ref)


VERSION_ROWS = _rows(
    ("version-short", ["-v"]),
    ("version-long", ["--version"]),
    ("version-abbrev", ["--ve"]),
    ("version-before-bogus", ["--version", "--bogus"]),
    ("version-after-positional", ["abc", "-v"]),
    ("version-in-group", ["-cv"]),
)


@pytest.mark.parametrize("row", VERSION_ROWS, ids=[r.id for r in VERSION_ROWS])
def test_version_has_the_same_shape(row: Row) -> None:
    """-v differs on purpose (our own name and components); the shape and line 4 are kept."""
    ref = run_ref(row.args, row.env)
    ours = run_ours(row.args, row.env)
    assert (ours.rc, ours.stderr) == (ref.rc, ref.stderr) == (0, b"")
    ref_lines = ref.stdout.decode().splitlines()
    our_lines = ours.stdout.decode().splitlines()
    assert len(our_lines) == len(ref_lines) == 5
    assert our_lines[3] == ref_lines[3] == "SLIRP_CONFIG_VERSION_MAX: 4"
    for ref_line, our_line in zip(ref_lines, our_lines, strict=True):
        assert our_line.split(" ")[0] == ref_line.split(" ")[0].replace(
            "slirp4netns", "pyslirp4netns"
        )


def test_deliberate_difference_outbound_addr6_looks_up_its_own_interface() -> None:
    """slirp4netns 1.2.0 looks up --outbound-addr's value for --outbound-addr6=IFNAME; we look
    up IFNAME itself. The MAC error that follows keeps both runs inside the parser."""
    args = ["-c", "--macaddress=zz", "--outbound-addr6=lo", NOPID, "tap0"]
    warning = b"WARNING: Support for --outbound-addr6 is experimental\n"
    ref = run_ref(args, lo_up=True)
    assert ref == Result(
        warning, b"outbound-addr has to be valid ipv4 address or iterface name.", 1
    )
    ours = run_ours(args, lo_up=True)
    mac_error = b'"zz" is an invalid MAC address.\n' + MAC_HINT
    assert ours == Result(warning, mac_error, 1)


def test_deliberate_difference_netns_type_tapfd_is_1_3_0s() -> None:
    """1.2.0 treats `tapfd` as a path; we accept slirp4netns 1.3.0's inherited-tap-fd mode."""
    args = ["--netns-type=tapfd", "--", "-1", "tap0"]
    ref = run_ref(args)
    assert ref.stdout.startswith(b"Usage: slirp4netns ")
    path_error = b"existing path expected when --netns-type=path: No such file or directory\n"
    assert ref == Result(ref.stdout, path_error, 1)
    usage = as_1_3(ref).stdout
    tapname_ignored = b"WARNING: too many arguments\n"  # as 1.3.0: TAPNAME is not used
    assert run_ours(args) == Result(tapname_ignored + usage, b"TAPFD must a file descriptor\n", 1)
