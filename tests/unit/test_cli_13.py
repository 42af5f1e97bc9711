"""What slirp4netns 1.2.1 to 1.3.2 changed in the command line, and we follow.

slirp4netns 1.3.0 (``--netns-type=tapfd``) changed two lines of ``--help``, and so of the usage
text printed after every usage error: the first line names ``PID|PATH|FD`` and the
``--netns-type`` line lists ``tapfd``. Every other line is 1.2.0's, unchanged through 1.3.2.
It also accepts ``-c`` together with ``--netns-type=tapfd`` and silently does nothing with it.
Only 1.2.0 is installable here, so the 1.3 texts are written out in full below from the
upstream sources (see the man page's COMPATIBILITY section); compat/test_cli_compat.py checks
every other byte against the installed 1.2.0.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from pyslirp4netns import cli

from . import test_cli
from .test_cli import Outcome, ok

# test_cli's fixtures: `run` parses as slirp4netns would, never under POSIXLY_CORRECT.
run = test_cli.run
_no_posixly_correct = test_cli._no_posixly_correct

USAGE_LINE_1_3 = "Usage: {prog} [OPTION]... PID|PATH|FD [TAPNAME]\n"
NETNS_TYPE_LINE_1_3 = (
    "--netns-type=TYPE \t specify network namespace type ([path|pid|tapfd], default=pid)\n"
)

# slirp4netns 1.3.2's --help, with argv[0] as {prog}: two TABs, 22 lines.
HELP_1_3 = (
    USAGE_LINE_1_3 + "User-mode networking for unprivileged network namespaces.\n"
    "\n"
    "-c, --configure          bring up the interface\n"
    "-e, --exit-fd=FD         specify the FD for terminating slirp4netns\n"
    "-r, --ready-fd=FD        specify the FD to write to when the network is configured\n"
    "-m, --mtu=MTU            specify MTU (default=1500, max=65521)\n"
    "-6, --enable-ipv6        enable IPv6 (experimental)\n"
    "-a, --api-socket=PATH    specify API socket path\n"
    "--cidr=CIDR              specify network address CIDR (default=10.0.2.0/24)\n"
    "--disable-host-loopback  prohibit connecting to 127.0.0.1:* on the host namespace\n"
    + NETNS_TYPE_LINE_1_3
    + "--userns-path=PATH\t specify user namespace path\n"
    "--enable-sandbox         create a new mount namespace (and drop all caps except "
    "CAP_NET_BIND_SERVICE if running as the root)\n"
    "--enable-seccomp         enable seccomp to limit syscalls (experimental)\n"
    "--outbound-addr=IPv4     sets outbound ipv4 address to bound to (experimental)\n"
    "--outbound-addr6=IPv6    sets outbound ipv6 address to bound to (experimental)\n"
    "--disable-dns            disables 10.0.2.3 (or configured internal ip) to host dns "
    "redirect (experimental)\n"
    "--macaddress=MAC         specify the MAC address of the TAP (only valid with -c)\n"
    "--target-type=TYPE       specify the target type ([netns|bess], default=netns)\n"
    "-h, --help               show this help and exit\n"
    "-v, --version            show version and exit\n"
)


@pytest.mark.parametrize("prog", ["slirp4netns", "/usr/bin/slirp4netns", "./pyslirp4netns"])
def test_help_is_slirp4netns_1_3_byte_for_byte(run: Callable[..., Outcome], prog: str) -> None:
    assert run("--help", prog=prog) == Outcome(0, HELP_1_3.format(prog=prog), "", None)
    assert cli.usage_text(prog) == HELP_1_3.format(prog=prog)
    assert len(HELP_1_3.format(prog="slirp4netns").encode()) == 1474 + len("|FD|tapfd")


def test_help_usage_line_is_1_3s(run: Callable[..., Outcome]) -> None:
    lines = run("-h").out.splitlines(keepends=True)
    assert lines[0] == "Usage: slirp4netns [OPTION]... PID|PATH|FD [TAPNAME]\n"


def test_help_netns_type_line_names_tapfd(run: Callable[..., Outcome]) -> None:
    tab_lines = [line for line in run("-h").out.splitlines(keepends=True) if "\t" in line]
    assert tab_lines == [NETNS_TYPE_LINE_1_3, "--userns-path=PATH\t specify user namespace path\n"]


# Every usage error prints the same text on stdout, so it carries the 1.3 lines too.
USAGE_ERRORS = [
    ([], ""),
    (["--bogus"], "slirp4netns: unrecognized option '--bogus'\n"),
    (["-m", "0", "5", "tap0"], "MTU must be a positive integer (< 65522)\n"),
    (["5"], ""),  # TAPNAME is still required in PID mode
    (["abc", "tap0"], "PID must be a positive integer\n"),
    (["--netns-type=path", "/nonexistent", "tap0"], None),
    (["--netns-type=tapfd"], ""),
    (["--netns-type=tapfd", "--", "-1"], "TAPFD must a file descriptor\n"),
    (["--target-type=bess"], ""),
    (["--target-type=foo", "5", "tap0"], '--target-type must be either "netns" or "bess"\n'),
    (["--macaddress=aa:bb:cc:dd:ee:ff", "5", "tap0"], None),
]


@pytest.mark.parametrize(("args", "err"), USAGE_ERRORS, ids=[" ".join(a) for a, _ in USAGE_ERRORS])
def test_usage_errors_print_the_1_3_usage(
    run: Callable[..., Outcome], args: list[str], err: str | None
) -> None:
    outcome = run(*args)
    assert (outcome.code, outcome.out) == (1, HELP_1_3.format(prog="slirp4netns"))
    if err is not None:
        assert outcome.err == err


def test_version_is_unchanged_by_1_3() -> None:
    """1.3.x prints the same five-line --version shape as 1.2.0; ours keeps its own names."""
    lines = cli.version_text().splitlines()
    assert [line.split(" ")[0] for line in lines] == [
        "pyslirp4netns",
        "commit:",
        "libslirp:",
        "SLIRP_CONFIG_VERSION_MAX:",
        "libseccomp:",
    ]


# --- -c with --netns-type=tapfd: accepted, silently without effect (1.3.0) ----------------


@pytest.mark.parametrize(
    "args",
    [
        ["-c", "--netns-type=tapfd", "3"],
        ["--netns-type=tapfd", "3", "--configure"],
        ["--conf", "--netns-type=tapfd", "--", "3"],
    ],
)
def test_tapfd_with_configure_is_silently_ignored(
    run: Callable[..., Outcome], args: list[str]
) -> None:
    config = ok(run(*args))  # no message on either stream
    assert (config.tapfd, config.pid, config.netns_type) == (3, None, "tapfd")
    assert config.configure is False  # nothing to configure: the tap is the caller's


def test_tapfd_with_configure_and_macaddress_is_accepted(run: Callable[..., Outcome]) -> None:
    """--macaddress still needs -c (1.2.0's check, kept by 1.3); the MAC is only reported."""
    config = ok(run("-c", "--macaddress=02:00:00:00:00:01", "--netns-type=tapfd", "3"))
    assert (config.configure, config.macaddress) == (False, bytes.fromhex("020000000001"))


def test_configure_still_applies_in_pid_and_path_modes(run: Callable[..., Outcome]) -> None:
    assert ok(run("-c", "5", "tap0")).configure is True
    assert ok(run("-c", "--netns-type=path", "/", "tap0")).configure is True
