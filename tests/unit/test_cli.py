"""In-process tests of ``cli.parse``: every option, message and getopt rule of slirp4netns 1.2.0
(the two usage lines slirp4netns 1.3.0 changed are 1.3's: tests/unit/test_cli_13.py).

Expected texts are the real binary's (contract §1 and measurements recorded in
compat/test_cli_compat.py, which compares against the binary itself).
"""

from __future__ import annotations

import socket
import sys
import types
from collections.abc import Callable
from ipaddress import IPv4Address, IPv4Network, IPv6Address
from pathlib import Path
from typing import Any, NamedTuple

import pytest

import pyslirp4netns
from pyslirp4netns import cli
from pyslirp4netns.config import Config

PROG = "slirp4netns"
USAGE = cli.usage_text(PROG)


class Outcome(NamedTuple):
    code: int  # 0 for a Config or -h/-v, else the SystemExit code
    out: str
    err: str
    config: Config | None


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str]) -> Callable[..., Outcome]:
    def _run(*args: str, prog: str = PROG) -> Outcome:
        try:
            config = cli.parse(list(args), prog)
        except SystemExit as e:
            captured = capsys.readouterr()
            assert isinstance(e.code, int)
            return Outcome(e.code, captured.out, captured.err, None)
        captured = capsys.readouterr()
        return Outcome(0, captured.out, captured.err, config)

    return _run


@pytest.fixture(autouse=True)
def _no_posixly_correct(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("POSIXLY_CORRECT", raising=False)


def ok(outcome: Outcome, out: str = "") -> Config:
    assert (outcome.code, outcome.out, outcome.err) == (0, out, "")
    assert outcome.config is not None
    return outcome.config


def usage_error(outcome: Outcome, message: str | None, before_usage: str = "") -> None:
    expected_err = "" if message is None else message + "\n"
    assert (outcome.code, outcome.out, outcome.err) == (1, before_usage + USAGE, expected_err)


def plain_error(outcome: Outcome, message: str, out: str = "") -> None:
    assert (outcome.code, outcome.out, outcome.err) == (1, out, message)


# --- defaults and every option's effect -------------------------------------------------


def test_defaults(run: Callable[..., Outcome]) -> None:
    config = ok(run("5", "tap0"))
    assert config == Config(target="5", pid=5, tapname="tap0")
    assert config.cidr == IPv4Network("10.0.2.0/24")
    assert (config.mtu, config.exit_fd, config.ready_fd) == (1500, -1, -1)
    assert (config.netns_type, config.target_type) == ("pid", "netns")


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["-c"], {"configure": True}),
        (["--configure"], {"configure": True}),
        (["--conf"], {"configure": True}),
        (["-e", "3"], {"exit_fd": 3}),
        (["-e3"], {"exit_fd": 3}),
        (["--exit-fd=3"], {"exit_fd": 3}),
        (["--exit-fd", "3"], {"exit_fd": 3}),
        (["--ex=0"], {"exit_fd": 0}),
        (["-r", "4"], {"ready_fd": 4}),
        (["--ready-fd=4"], {"ready_fd": 4}),
        (["--r", "4"], {"ready_fd": 4}),
        (["-m", "65520"], {"mtu": 65520}),
        (["-m65520"], {"mtu": 65520}),
        (["--mtu=1"], {"mtu": 1}),
        (["--mt", "65521"], {"mtu": 65521}),
        (["-a", "/tmp/api.sock"], {"api_socket": "/tmp/api.sock"}),
        (["--api-socket=/tmp/x"], {"api_socket": "/tmp/x"}),
        (["--a", ""], {"api_socket": ""}),
        (["--cidr=10.5.0.0/16"], {"cidr": IPv4Network("10.5.0.0/16")}),
        (["--ci", "0.0.0.0/1"], {"cidr": IPv4Network("0.0.0.0/1")}),
        (["--disable-host-loopback"], {"disable_host_loopback": True}),
        (["--disable-h"], {"disable_host_loopback": True}),
        (["--enable-sandbox"], {"enable_sandbox": True}),
        (["--enable-sa"], {"enable_sandbox": True}),
        (["--disable-dns"], {"disable_dns": True}),
        (["--disable-d"], {"disable_dns": True}),
        (["--netns-type=pid"], {"netns_type": "pid"}),
        (["-c", "--macaddress=0e:d4:18:d9:38:fb"], {"macaddress": bytes.fromhex("0ed418d938fb")}),
        (["--target-type=netns"], {"target_type": "netns"}),
        (["--outbound-addr=127.0.0.1"], {"outbound_addr": IPv4Address("127.0.0.1")}),
        (["--outbound-addr6=::1"], {"outbound_addr6": IPv6Address("::1")}),
        (["-m", "9000", "-m", "1280"], {"mtu": 1280}),  # the last one wins
        (["--cidr=garbage", "--cidr=10.0.0.0/8"], {"cidr": IPv4Network("10.0.0.0/8")}),
    ],
)
def test_option_sets_its_field(
    run: Callable[..., Outcome], args: list[str], expected: dict[str, Any]
) -> None:
    outcome = run(*args, "7", "tap1")
    assert (outcome.code, outcome.err) == (0, "")
    assert outcome.config is not None
    for field, value in expected.items():
        assert getattr(outcome.config, field) == value
    assert (outcome.config.pid, outcome.config.tapname) == (7, "tap1")


def test_every_flag_at_once_in_podman_style(run: Callable[..., Outcome], tmp_path: Path) -> None:
    netns = tmp_path / "netns"
    netns.touch()
    config = ok(
        run(
            "--disable-host-loopback",
            "--mtu=65520",
            "--enable-sandbox",
            "--enable-seccomp",
            "--enable-ipv6",
            "-c",
            "-e",
            "3",
            "-r",
            "4",
            "--netns-type=path",
            str(netns),
            "tap0",
        ),
        out="WARNING: Support for seccomp is experimental\n"
        "WARNING: Support for IPv6 is experimental\n",
    )
    assert config.path_mode and config.pid is None and config.target == str(netns)
    assert config.enable_sandbox and config.enable_seccomp and config.enable_ipv6
    assert (config.exit_fd, config.ready_fd, config.mtu) == (3, 4, 65520)


@pytest.mark.parametrize(
    ("cidr", "gateway", "dns", "dhcp_start", "dhcp_end", "guest"),
    [
        ("10.0.2.0/24", "10.0.2.2", "10.0.2.3", "10.0.2.15", "10.0.2.30", "10.0.2.100"),
        (
            "10.0.135.128/25",
            "10.0.135.130",
            "10.0.135.131",
            "10.0.135.143",
            "10.0.135.158",
            "10.0.135.228",
        ),
        ("10.0.0.0/8", "10.0.0.2", "10.0.0.3", "10.0.0.15", "10.0.0.30", "10.0.0.100"),
        (
            "192.168.100.128/25",
            "192.168.100.130",
            "192.168.100.131",
            "192.168.100.143",
            "192.168.100.158",
            "192.168.100.228",
        ),
    ],
)
def test_derived_addresses(
    run: Callable[..., Outcome],
    cidr: str,
    gateway: str,
    dns: str,
    dhcp_start: str,
    dhcp_end: str,
    guest: str,
) -> None:
    config = ok(run(f"--cidr={cidr}", "5", "tap0"))
    assert str(config.network) == cidr.split("/")[0]
    assert config.netmask == IPv4Network(cidr).netmask
    assert [str(config.gateway), str(config.dns)] == [gateway, dns]
    assert [str(config.dhcp_start), str(config.dhcp_end), str(config.guest)] == [
        dhcp_start,
        dhcp_end,
        guest,
    ]


# --- -h and -v --------------------------------------------------------------------------


def test_help_text_is_slirp4netns_1_3(run: Callable[..., Outcome]) -> None:
    """1.2.0's text but for the two lines 1.3.0 changed (tests/unit/test_cli_13.py)."""
    outcome = run("--help", prog="/usr/bin/slirp4netns")
    assert (outcome.code, outcome.err) == (0, "")
    lines = outcome.out.split("\n")
    assert lines[0] == "Usage: /usr/bin/slirp4netns [OPTION]... PID|PATH|FD [TAPNAME]"
    assert lines[1] == "User-mode networking for unprivileged network namespaces."
    assert lines[2] == ""
    tab_lines = [line for line in lines if "\t" in line]
    assert tab_lines == [
        "--netns-type=TYPE \t specify network namespace type ([path|pid|tapfd], default=pid)",
        "--userns-path=PATH\t specify user namespace path",
    ]
    assert len(lines) == 23 and lines[-1] == ""
    # 1474 measured on the real 1.2.0 binary, plus "|FD" and "|tapfd"
    assert len(cli.usage_text("slirp4netns").encode()) == 1474 + 3 + 6


def test_help_has_what_podman_and_rootlesskit_grep_for() -> None:
    for flag in (
        "--disable-host-loopback",
        "--mtu",
        "--enable-sandbox",
        "--enable-seccomp",
        "--cidr",
        "--outbound-addr",
        "--enable-ipv6",
        "--netns-type",
        "--api-socket",
    ):
        assert flag in USAGE


@pytest.mark.parametrize("args", [["-h"], ["--help"], ["--he"], ["--h"], ["-ch"], ["x", "-h"]])
def test_help_exits_0(run: Callable[..., Outcome], args: list[str]) -> None:
    assert run(*args) == Outcome(0, USAGE, "", None)


def test_help_after_warnings(run: Callable[..., Outcome]) -> None:
    warning = "WARNING: Support for IPv6 is experimental\n"
    assert run("-6", "-6", "-h") == Outcome(0, warning * 2 + USAGE, "", None)


@pytest.mark.parametrize("args", [["-v"], ["--version"], ["--ver"], ["--v"], ["-cv"], ["a", "-v"]])
def test_version_block(run: Callable[..., Outcome], args: list[str]) -> None:
    outcome = run(*args)
    assert (outcome.code, outcome.err) == (0, "")
    lines = outcome.out.splitlines()
    assert len(lines) == 5 and outcome.out.endswith("\n")
    assert lines[0] == f"pyslirp4netns version {pyslirp4netns.__version__}"
    assert lines[1].startswith("commit: ") and len(lines[1]) > len("commit: ")
    assert lines[2] == "libslirp: none (pure-Python stack)"
    assert lines[3] == "SLIRP_CONFIG_VERSION_MAX: 4"
    assert lines[4].startswith("libseccomp: ")


def test_options_take_effect_in_order(run: Callable[..., Outcome]) -> None:
    assert run("--version", "--bogus").code == 0
    usage_error(run("--bogus", "--version"), "slirp4netns: unrecognized option '--bogus'")
    usage_error(run("-m", "0", "-h"), "MTU must be a positive integer (< 65522)")
    assert run("-h", "-m", "0").out == USAGE


# --- getopt_long emulation -------------------------------------------------------------

GETOPT_ERRORS = [
    (["--bogus"], "slirp4netns: unrecognized option '--bogus'"),
    (["--bogus=1"], "slirp4netns: unrecognized option '--bogus=1'"),
    (["---mtu=5"], "slirp4netns: unrecognized option '---mtu=5'"),
    (["--mtux"], "slirp4netns: unrecognized option '--mtux'"),
    (["-x"], "slirp4netns: invalid option -- 'x'"),
    (["-cx"], "slirp4netns: invalid option -- 'x'"),
    (["-xc"], "slirp4netns: invalid option -- 'x'"),
    (["-c5"], "slirp4netns: invalid option -- '5'"),
    (["-c-"], "slirp4netns: invalid option -- '-'"),
    (["-:"], "slirp4netns: invalid option -- ':'"),
    (["-m"], "slirp4netns: option requires an argument -- 'm'"),
    (["-cm"], "slirp4netns: option requires an argument -- 'm'"),
    (["-e"], "slirp4netns: option requires an argument -- 'e'"),
    (["-r"], "slirp4netns: option requires an argument -- 'r'"),
    (["-a"], "slirp4netns: option requires an argument -- 'a'"),
    (["--mtu"], "slirp4netns: option '--mtu' requires an argument"),
    (["--mt"], "slirp4netns: option '--mtu' requires an argument"),
    (["--outbound-addr"], "slirp4netns: option '--outbound-addr' requires an argument"),
    (["--ne"], "slirp4netns: option '--netns-type' requires an argument"),
    (["--u"], "slirp4netns: option '--userns-path' requires an argument"),
    (["--t"], "slirp4netns: option '--target-type' requires an argument"),
    (["--ma"], "slirp4netns: option '--macaddress' requires an argument"),
    (["--configure=x"], "slirp4netns: option '--configure' doesn't allow an argument"),
    (["--conf=x"], "slirp4netns: option '--configure' doesn't allow an argument"),
    (["--help="], "slirp4netns: option '--help' doesn't allow an argument"),
    (["--enable-ipv6=1"], "slirp4netns: option '--enable-ipv6' doesn't allow an argument"),
]


@pytest.mark.parametrize(("args", "message"), GETOPT_ERRORS, ids=[a[0] for a, _ in GETOPT_ERRORS])
def test_getopt_errors(run: Callable[..., Outcome], args: list[str], message: str) -> None:
    usage_error(run(*args), message)


AMBIGUOUS = [
    ("--e", "'--exit-fd' '--enable-ipv6' '--enable-sandbox' '--enable-seccomp'"),
    ("--e=1", "'--exit-fd' '--enable-ipv6' '--enable-sandbox' '--enable-seccomp'"),
    ("--en", "'--enable-ipv6' '--enable-sandbox' '--enable-seccomp'"),
    ("--enable-s", "'--enable-sandbox' '--enable-seccomp'"),
    ("--d", "'--disable-host-loopback' '--disable-dns'"),
    ("--disable", "'--disable-host-loopback' '--disable-dns'"),
    ("--dis=x", "'--disable-host-loopback' '--disable-dns'"),
    ("--c", "'--configure' '--cidr' '--create-sandbox'"),
    ("--n", "'--no-host-loopback' '--netns-type'"),
    ("--m", "'--mtu' '--macaddress'"),
    ("--out", "'--outbound-addr' '--outbound-addr6'"),
    ("--outbound", "'--outbound-addr' '--outbound-addr6'"),
]


@pytest.mark.parametrize(("arg", "possibilities"), AMBIGUOUS, ids=[a for a, _ in AMBIGUOUS])
def test_ambiguous_prefix(run: Callable[..., Outcome], arg: str, possibilities: str) -> None:
    message = f"slirp4netns: option '{arg}' is ambiguous; possibilities: {possibilities}"
    usage_error(run(arg, "5", "tap0"), message)


def test_empty_long_name_is_ambiguous_with_the_whole_table(run: Callable[..., Outcome]) -> None:
    table = " ".join(f"'--{option.name}'" for option in cli.LONG_OPTIONS)
    usage_error(run("--=x"), f"slirp4netns: option '--=x' is ambiguous; possibilities: {table}")
    # The order was measured with the real binary; pin the ends of it here.
    assert table.startswith("'--configure' '--exit-fd' '--ready-fd' '--mtu' '--cidr'")
    assert table.endswith("'--disable-dns' '--macaddress' '--target-type'")


def test_exact_match_beats_longer_option(run: Callable[..., Outcome]) -> None:
    config = ok(run("--outbound-addr=10.1.2.3", "5", "tap0"), out=_warn_outbound)
    assert config.outbound_addr == IPv4Address("10.1.2.3") and config.outbound_addr6 is None


def test_getopt_message_uses_prog_as_invoked(run: Callable[..., Outcome]) -> None:
    outcome = run("--bogus", prog="/usr/bin/pyslirp4netns")
    assert outcome.err == "/usr/bin/pyslirp4netns: unrecognized option '--bogus'\n"
    assert outcome.out.startswith(
        "Usage: /usr/bin/pyslirp4netns [OPTION]... PID|PATH|FD [TAPNAME]\n"
    )


def test_permutation_options_after_positionals(run: Callable[..., Outcome]) -> None:
    config = ok(run("5", "-c", "tap9", "--mtu", "9000"))
    assert (config.pid, config.tapname, config.configure, config.mtu) == (5, "tap9", True, 9000)


def test_upstream_test_style_interleaving(run: Callable[..., Outcome]) -> None:
    config = ok(run("-c", "11", "--cidr", "10.0.135.128/25", "tap11"))
    assert (config.pid, config.tapname, str(config.cidr)) == (11, "tap11", "10.0.135.128/25")


def test_grouped_short_flags(run: Callable[..., Outcome]) -> None:
    config = ok(run("-c6m1500", "5", "tap0"), out="WARNING: Support for IPv6 is experimental\n")
    assert config.configure and config.enable_ipv6 and config.mtu == 1500


def test_option_argument_is_taken_even_if_it_looks_like_an_option(
    run: Callable[..., Outcome],
) -> None:
    assert ok(run("-a", "--", "5", "tap0")).api_socket == "--"
    assert ok(run("--api-socket", "-c", "5", "tap0")).api_socket == "-c"


def test_double_dash_ends_options(run: Callable[..., Outcome]) -> None:
    usage_error(run("--", "-5", "tap0"), "PID must be a positive integer")
    usage_error(run("--", "-h"), None)
    config = ok(run("5", "--", "-c"))
    assert (config.tapname, config.configure) == ("-c", False)


def test_lone_dash_is_a_positional(run: Callable[..., Outcome]) -> None:
    usage_error(run("-"), None)
    usage_error(run("-", "tap0"), "PID must be a positive integer")
    assert ok(run("5", "-")).tapname == "-"


def test_posixly_correct_stops_at_the_first_positional(
    run: Callable[..., Outcome], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POSIXLY_CORRECT", "1")
    usage_error(run("abc", "-v"), "PID must be a positive integer")
    config = ok(run("-c", "5", "-m", "0"), out="WARNING: too many arguments\n")
    assert (config.configure, config.mtu, config.tapname) == (True, 1500, "-m")


# --- numbers: strtol semantics ----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("5", 5),
        ("+5", 5),
        (" 5", 5),
        ("\t\n 5", 5),
        ("-5", -5),
        ("-0", 0),
        ("", 0),  # strtol's end pointer is already at the NUL
        ("99999999999", 1215752191),  # long stored in an int
        ("4294967296", 0),
        ("4294967295", -1),
        ("2147483648", -2147483648),
        ("6442450943", 2147483647),
        ("9223372036854775807", -1),
        ("5 ", None),
        (" ", None),
        ("+", None),
        ("+-5", None),
        ("0x10", None),
        ("1e3", None),
        ("1_000", None),
        ("٣", None),  # a non-ASCII digit
        ("9223372036854775808", None),  # ERANGE
        ("-99999999999999999999", None),
    ],
)
def test_strtol_int(text: str, value: int | None) -> None:
    assert cli.strtol_int(text) == value


@pytest.mark.parametrize(
    ("text", "pid"), [("5", 5), ("+5", 5), (" 5", 5), ("6442450943", 2147483647)]
)
def test_pid_accepted(run: Callable[..., Outcome], text: str, pid: int) -> None:
    config = ok(run(text, "tap0"))
    assert (config.pid, config.target) == (pid, text)


@pytest.mark.parametrize(
    "text",
    [
        "abc",
        "0",
        "-0",
        "+0",
        " 0",
        "",
        "0x10",
        "1.5",
        "5 ",
        "2147483648",
        "4294967296",
        "99999999999999999999",
    ],
)
def test_pid_rejected(run: Callable[..., Outcome], text: str) -> None:
    usage_error(run("--", text, "tap0"), "PID must be a positive integer")


@pytest.mark.parametrize(
    ("text", "mtu"),
    [("1", 1), ("65521", 65521), (" 68", 68), ("+1500", 1500), ("4294968796", 1500)],
)
def test_mtu_accepted(run: Callable[..., Outcome], text: str, mtu: int) -> None:
    assert ok(run("-m", text, "5", "tap0")).mtu == mtu


@pytest.mark.parametrize(
    "text",
    [
        "0",
        "-5",
        "abc",
        "0x100",
        "65522",
        "70000",
        "",
        "5 ",
        "1e3",
        "99999999999",
        "99999999999999999999",
    ],
)
def test_mtu_rejected(run: Callable[..., Outcome], text: str) -> None:
    usage_error(run(f"--mtu={text}", "5", "tap0"), "MTU must be a positive integer (< 65522)")


@pytest.mark.parametrize(
    ("text", "fd"),
    [
        ("0", 0),
        ("", 0),
        ("-0", 0),
        (" 7", 7),
        ("+7", 7),
        ("99999999999", 1215752191),
        ("4294967296", 0),
    ],
)
@pytest.mark.parametrize(("flag", "field"), [("-e", "exit_fd"), ("-r", "ready_fd")])
def test_fd_accepted(
    run: Callable[..., Outcome], flag: str, field: str, text: str, fd: int
) -> None:
    assert getattr(ok(run(flag, text, "5", "tap0")), field) == fd


@pytest.mark.parametrize(
    "text",
    [
        "-1",
        "1x",
        " ",
        "+",
        "4294967295",
        "2147483648",
        "-99999999999999999999",
        "99999999999999999999",
    ],
)
@pytest.mark.parametrize(("flag", "name"), [("--exit-fd", "exit-fd"), ("--ready-fd", "ready-fd")])
def test_fd_rejected(run: Callable[..., Outcome], flag: str, name: str, text: str) -> None:
    usage_error(run(flag, text, "5", "tap0"), f"{name} must be a non-negative integer")


# --- positionals, netns type, userns path -----------------------------------------------


def test_missing_positionals_print_usage_only(run: Callable[..., Outcome]) -> None:
    usage_error(run(), None)
    usage_error(run("5"), None)  # TAPNAME is required in 1.2.0


def test_too_many_arguments_is_a_warning(run: Callable[..., Outcome]) -> None:
    config = ok(run("5", "tap0", "extra", "more"), out="WARNING: too many arguments\n")
    assert (config.pid, config.tapname) == (5, "tap0")


def test_too_many_arguments_then_bad_pid(run: Callable[..., Outcome]) -> None:
    usage_error(
        run("abc", "tap0", "x"),
        "PID must be a positive integer",
        before_usage="WARNING: too many arguments\n",
    )


def test_empty_tapname_is_kept(run: Callable[..., Outcome]) -> None:
    assert ok(run("5", "")).tapname == ""


@pytest.mark.parametrize("netns_type", ["path", "foo", "", "PID"])
def test_any_netns_type_but_pid_is_path_mode(
    run: Callable[..., Outcome], tmp_path: Path, netns_type: str
) -> None:
    config = ok(run(f"--netns-type={netns_type}", str(tmp_path), "tap0"))
    assert config.path_mode and config.pid is None
    assert (config.target, config.netns_type) == (str(tmp_path), netns_type)


@pytest.mark.parametrize(
    ("path", "error"),
    [
        ("/nonexistent", "No such file or directory"),
        ("", "No such file or directory"),
        ("/etc/passwd/x", "Not a directory"),
        ("-", "No such file or directory"),
    ],
)
def test_path_mode_needs_an_existing_path(
    run: Callable[..., Outcome], path: str, error: str
) -> None:
    message = f"existing path expected when --netns-type=path: {error}"
    usage_error(run("--netns-type=path", "--", path, "tap0"), message)


def test_netns_type_pid_explicitly(run: Callable[..., Outcome]) -> None:
    usage_error(run("--netns-type=pid", "/nonexistent", "tap0"), "PID must be a positive integer")


def test_userns_path(run: Callable[..., Outcome], tmp_path: Path) -> None:
    assert ok(run(f"--userns-path={tmp_path}", "5", "tap0")).userns_path == str(tmp_path)
    usage_error(
        run("--userns-path=/nonexistent", "5", "tap0"), "userns path doesn't exist: /nonexistent"
    )
    usage_error(run("--userns-path=", "5", "tap0"), "userns path doesn't exist: ")


def test_userns_path_is_checked_inside_the_loop(run: Callable[..., Outcome]) -> None:
    # Checked when reached: before a later getopt error, after an earlier one.
    usage_error(
        run("--userns-path=/nonexistent", "--bogus"), "userns path doesn't exist: /nonexistent"
    )
    usage_error(
        run("--bogus", "--userns-path=/nonexistent"), "slirp4netns: unrecognized option '--bogus'"
    )


# --- tapfd (slirp4netns 1.3.0) ----------------------------------------------------------


def test_tapfd_mode(run: Callable[..., Outcome]) -> None:
    config = ok(run("--netns-type=tapfd", "3"))
    assert (config.target, config.netns_type, config.pid, config.path_mode) == (
        "3",
        "tapfd",
        None,
        False,
    )
    assert cli.strtol_int(config.target) == 3


def test_tapfd_mode_ignores_tapname(run: Callable[..., Outcome]) -> None:
    config = ok(run("--netns-type=tapfd", "0", "tap0"), out="WARNING: too many arguments\n")
    assert config.target == "0"


@pytest.mark.parametrize("fd", ["-1", "x", "1x", "4294967295"])
def test_tapfd_must_be_a_non_negative_number(run: Callable[..., Outcome], fd: str) -> None:
    usage_error(run("--netns-type=tapfd", "--", fd), "TAPFD must a file descriptor")


def test_tapfd_needs_a_positional(run: Callable[..., Outcome]) -> None:
    usage_error(run("--netns-type=tapfd"), None)


# --- --macaddress -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "mac"),
    [
        ("aa:bb:cc:dd:ee:ff", "aabbccddeeff"),
        ("AA:BB:CC:DD:EE:FF", "aabbccddeeff"),
        ("aa:bb:cc:dd:ee", "aabbccddee00"),
        ("aa-bb-cc-dd-ee-ff", "aa0000000000"),
        ("a:b:c:d:e:f", "0a0b0c0d0e0f"),
        ("ff", "ff0000000000"),
        ("0x1f:0X2", "1f0200000000"),
        ("0x:0xg", "000000000000"),
        ("-0:+5: 5:5 ", "000505050000"),
        ("100000000ff", "ff0000000000"),  # strtoul's long is cut to an unsigned int
        ("-ffffff01", "ff0000000000"),
    ],
)
def test_lax_mac_parsing(text: str, mac: str) -> None:
    assert cli.parse_mac(text) == bytes.fromhex(mac)


MAC_HINT = (
    "macaddress has to be a valid MAC address (hex string, 6 bytes, each byte separated by a ':')."
)


@pytest.mark.parametrize(
    "text",
    [
        "",
        ":::",
        ":1:2:3:4:5:6",
        "1::2:3:4:5:6",
        "x",
        "g",
        "100",
        "-1",
        "+",
        "-",
        "1:2:3:4:5:g",
        "ffffffffffffffffffffff",
        "aa:bb:cc:dd:ee:100",
    ],
)
def test_invalid_mac(run: Callable[..., Outcome], text: str) -> None:
    outcome = run("-c", f"--macaddress={text}", "5", "tap0")
    plain_error(outcome, f'"{text}" is an invalid MAC address.\n{MAC_HINT}')


@pytest.mark.parametrize(
    "text", ["1:2:3:4:5:6:", "1:2:3:4:5:6::", "1:2:3:4:5:6:7", "1:2:3:4:5:6:x"]
)
def test_too_long_mac(run: Callable[..., Outcome], text: str) -> None:
    outcome = run("--macaddress", text, "-c", "5", "tap0")
    plain_error(outcome, f'"{text}" is an invalid MAC address.  Is it too long?\n{MAC_HINT}')


def test_macaddress_needs_configure_wherever_it_is(run: Callable[..., Outcome]) -> None:
    message = "--macaddr cannot be specified when --configure or -c is not specified"
    usage_error(run("--macaddress=aa:bb:cc:dd:ee:ff", "5", "tap0"), message)
    usage_error(run("--mac=x"), message)  # checked before the positional count
    assert ok(run("--macaddress=2:0:0:0:0:1", "5", "tap0", "-c")).macaddress == bytes.fromhex(
        "020000000001"
    )


# --- --target-type and BESS -------------------------------------------------------------


def test_bess_mode(run: Callable[..., Outcome]) -> None:
    config = ok(
        run("--target-type=bess", "/tmp/bess.sock"), out="WARNING: BESS mode is experimental\n"
    )
    assert (config.target_type, config.target, config.pid) == ("bess", "/tmp/bess.sock", None)
    assert not config.path_mode


def test_bess_positional_count(run: Callable[..., Outcome]) -> None:
    usage_error(run("--target-type=bess"), None)
    usage_error(run("--target-type=bess", "-c"), None)  # the count comes before the conflicts
    usage_error(run("--target-type=bess", "a", "b"), "too many arguments")
    usage_error(run("--target-type=bess", "-c", "a", "b"), "too many arguments")


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["-c"], "--configure"),
        (["--netns-type=pid"], "--netns-type"),
        (["--netns-type=x", "-c"], "--configure"),
        (["--userns-path=/"], "--userns-path"),
        (["--userns-path=/", "--netns-type=pid"], "--netns-type"),
    ],
)
def test_bess_conflicts(run: Callable[..., Outcome], args: list[str], option: str) -> None:
    outcome = run("--target-type=bess", *args, "/tmp/bess.sock")
    usage_error(outcome, f"{option} conflicts with --target-type=bess")


def test_bess_warning_comes_before_post_parse_errors(run: Callable[..., Outcome]) -> None:
    plain_error(
        run("--target-type=bess", "-6", "--cidr=x", "/tmp/s"),
        "invalid CIDR: x\n",
        out="WARNING: Support for IPv6 is experimental\nWARNING: BESS mode is experimental\n",
    )


@pytest.mark.parametrize("value", ["foo", "BESS", "", "pid"])
def test_target_type_must_be_netns_or_bess(run: Callable[..., Outcome], value: str) -> None:
    message = '--target-type must be either "netns" or "bess"'
    usage_error(run(f"--target-type={value}", "5", "tap0"), message)
    usage_error(run(f"--target-type={value}"), message)  # before the positional count


def test_validation_order(run: Callable[..., Outcome]) -> None:
    mac = "--macaddr cannot be specified when --configure or -c is not specified"
    usage_error(run("--target-type=foo", "--macaddress=x", "abc"), mac)
    usage_error(run("--target-type=bess", "--macaddress=1", "a", "b"), mac)
    usage_error(
        run("--macaddress=x", "-m", "0", "5", "tap0"), "MTU must be a positive integer (< 65522)"
    )
    # Positionals before CIDR; CIDR before outbound addresses; those before the MAC.
    usage_error(run("--cidr=x", "abc", "tap0"), "PID must be a positive integer")
    plain_error(
        run("--outbound-addr6=x", "--cidr=y", "5", "tap0"), "invalid CIDR: y\n", out=_warn_outbound6
    )
    plain_error(
        run("--outbound-addr6=::1", "--outbound-addr=x", "5", "t"),
        _outbound_error,
        out=_warn_outbound6 + _warn_outbound,
    )
    plain_error(
        run("-c", "--macaddress=zz", "--outbound-addr=x", "5", "t"),
        _outbound_error,
        out=_warn_outbound,
    )


# --- --cidr -----------------------------------------------------------------------------

CIDR_ERRORS = [
    ("garbage", "invalid CIDR: garbage"),
    ("1.2.3.4", "invalid CIDR: 1.2.3.4"),
    ("10.0.2.0/024", "invalid CIDR: 10.0.2.0/024"),
    (" 10.0.2.0/24", "invalid CIDR:  10.0.2.0/24"),
    ("10.0.2.0/24\n", "invalid CIDR: 10.0.2.0/24\n"),
    ("fd00::/64", "invalid CIDR: fd00::/64"),
    ("", "invalid CIDR: "),
    ("1111.2.3.0/24", "invalid CIDR: 1111.2.3.0/24"),
    ("١٠.0.2.0/24", "invalid CIDR: ١٠.0.2.0/24"),
    ("300.0.2.0/24", "invalid network address: 300.0.2.0"),
    ("300.0.2.0/99", "invalid network address: 300.0.2.0"),
    ("01.2.3.0/24", "invalid network address: 01.2.3.0"),
    ("10.0.2.0/0", "prefix length needs to be 1-25"),
    ("10.0.2.0/26", "prefix length needs to be 1-25"),
    ("1.2.3.4/32", "prefix length needs to be 1-25"),
]
_HOST_BITS = "CIDR needs to be a network address like 10.0.2.0/24, not like 10.0.2.100/24"
CIDR_ERRORS += [(c, _HOST_BITS) for c in ("10.0.2.100/24", "10.0.2.0/1", "10.0.2.0/08")]


@pytest.mark.parametrize(("cidr", "message"), CIDR_ERRORS, ids=[repr(c) for c, _ in CIDR_ERRORS])
def test_cidr_errors_have_no_usage(run: Callable[..., Outcome], cidr: str, message: str) -> None:
    plain_error(run(f"--cidr={cidr}", "5", "tap0"), message + "\n")


@pytest.mark.parametrize(
    "cidr", ["0.0.0.0/1", "10.0.0.0/8", "10.0.135.128/25", "0.0.0.0/25", "10.0.2.0/24"]
)
def test_cidr_accepted(run: Callable[..., Outcome], cidr: str) -> None:
    assert ok(run("--cidr", cidr, "5", "tap0")).cidr == IPv4Network(cidr)


# --- --outbound-addr / --outbound-addr6 -------------------------------------------------

_warn_outbound = "WARNING: Support for --outbound-addr is experimental\n"
_warn_outbound6 = "WARNING: Support for --outbound-addr6 is experimental\n"
_outbound_error = "outbound-addr has to be valid ipv4 address or interface name."
_outbound6_error = "outbound-addr has to be valid ipv4 address or iterface name."


class _Addr(NamedTuple):
    family: int
    address: str


@pytest.fixture
def interfaces(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake interfaces, in getifaddrs order, for the ifname lookups."""
    table = {
        "lo": [_Addr(socket.AF_INET, "127.0.0.1"), _Addr(socket.AF_INET6, "::1")],
        "eth9": [
            _Addr(17, "02:00:00:00:00:01"),  # AF_PACKET first, as Linux lists it
            _Addr(socket.AF_INET, "198.51.100.7"),
            _Addr(socket.AF_INET, "198.51.100.8"),
            _Addr(socket.AF_INET6, "fe80::1%eth9"),
            _Addr(socket.AF_INET6, "2001:db8::7"),
        ],
        "v6only": [_Addr(socket.AF_INET6, "2001:db8::9")],
    }
    monkeypatch.setattr("psutil.net_if_addrs", lambda: table)


@pytest.mark.usefixtures("interfaces")
@pytest.mark.parametrize(
    ("value", "address"),
    [("10.1.2.3", "10.1.2.3"), ("lo", "127.0.0.1"), ("eth9", "198.51.100.7")],
)
def test_outbound_addr(run: Callable[..., Outcome], value: str, address: str) -> None:
    config = ok(run(f"--outbound-addr={value}", "5", "tap0"), out=_warn_outbound)
    assert config.outbound_addr == IPv4Address(address)


@pytest.mark.usefixtures("interfaces")
@pytest.mark.parametrize("value", ["bogus0", "v6only", "::1", "01.2.3.4", "", "1.2.3.4 "])
def test_outbound_addr_errors(run: Callable[..., Outcome], value: str) -> None:
    plain_error(run(f"--outbound-addr={value}", "5", "tap0"), _outbound_error, out=_warn_outbound)


@pytest.mark.usefixtures("interfaces")
@pytest.mark.parametrize(
    ("value", "address"),
    # eth9: the global address, though listed after the link-local one (unbindable unscoped).
    [("fd00::1", "fd00::1"), ("lo", "::1"), ("eth9", "2001:db8::7"), ("v6only", "2001:db8::9")],
)
def test_outbound_addr6_looks_up_its_own_ifname(
    run: Callable[..., Outcome], value: str, address: str
) -> None:
    # slirp4netns 1.2.0 would look up --outbound-addr's value here (a bug we fix on purpose).
    config = ok(run(f"--outbound-addr6={value}", "5", "tap0"), out=_warn_outbound6)
    assert config.outbound_addr6 == IPv6Address(address)


@pytest.mark.usefixtures("interfaces")
def test_outbound_addr6_fix_with_both_options(run: Callable[..., Outcome]) -> None:
    config = ok(
        run("--outbound-addr=eth9", "--outbound-addr6=lo", "5", "tap0"),
        out=_warn_outbound + _warn_outbound6,
    )
    assert (config.outbound_addr, config.outbound_addr6) == (
        IPv4Address("198.51.100.7"),
        IPv6Address("::1"),
    )


@pytest.mark.usefixtures("interfaces")
@pytest.mark.parametrize("value", ["bogus0", "1.2.3.4", "", "fe80::1%eth9"])
def test_outbound_addr6_errors_keep_the_typo(run: Callable[..., Outcome], value: str) -> None:
    outcome = run(f"--outbound-addr6={value}", "5", "tap0")
    plain_error(outcome, _outbound6_error, out=_warn_outbound6)


# --- parse-time warnings ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "warning", "field"),
    [
        (["-6"], "WARNING: Support for IPv6 is experimental", "enable_ipv6"),
        (["--enable-ipv6"], "WARNING: Support for IPv6 is experimental", "enable_ipv6"),
        (["--enable-seccomp"], "WARNING: Support for seccomp is experimental", "enable_seccomp"),
        (
            ["--no-host-loopback"],
            "WARNING: --no-host-loopback is deprecated and will be removed in future releases, "
            "please use --disable-host-loopback instead.",
            "disable_host_loopback",
        ),
        (
            ["--no"],
            "WARNING: --no-host-loopback is deprecated and will be removed in future releases, "
            "please use --disable-host-loopback instead.",
            "disable_host_loopback",
        ),
        (
            ["--create-sandbox"],
            "WARNING: --create-sandbox is deprecated and will be removed in future releases, "
            "please use --enable-sandbox instead.",
            "enable_sandbox",
        ),
        (
            ["--cr"],
            "WARNING: --create-sandbox is deprecated and will be removed in future releases, "
            "please use --enable-sandbox instead.",
            "enable_sandbox",
        ),
    ],
)
def test_warnings_go_to_stdout(
    run: Callable[..., Outcome], args: list[str], warning: str, field: str
) -> None:
    config = ok(run(*args, "5", "tap0"), out=warning + "\n")
    assert getattr(config, field) is True


def test_warnings_print_once_per_occurrence_and_survive_errors(
    run: Callable[..., Outcome],
) -> None:
    ipv6 = "WARNING: Support for IPv6 is experimental\n"
    seccomp = "WARNING: Support for seccomp is experimental\n"
    outcome = run("-66", "--enable-seccomp", "--enable-seccomp", "-m0")
    usage_error(outcome, "MTU must be a positive integer (< 65522)", ipv6 * 2 + seccomp * 2)


# --- bytes, streams and main() ----------------------------------------------------------


def test_non_utf8_argv_is_echoed_as_bytes(capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    arg = "--bogus\udcff"  # how Python decodes the argv byte 0xff
    with pytest.raises(SystemExit) as excinfo:
        cli.parse([arg], "s4n\udcfe")
    assert excinfo.value.code == 1
    captured = capsysbinary.readouterr()
    assert captured.err == b"s4n\xfe: unrecognized option '--bogus\xff'\n"
    assert captured.out.startswith(b"Usage: s4n\xfe [OPTION]... PID|PATH|FD [TAPNAME]\n")


def test_stdout_is_flushed_before_parse_returns(run: Callable[..., Outcome]) -> None:
    ok(run("-6", "5", "tap0"), out="WARNING: Support for IPv6 is experimental\n")
    assert cli._pending_stdout == []


@pytest.fixture
def fake_daemon(monkeypatch: pytest.MonkeyPatch) -> list[Config]:
    seen: list[Config] = []
    module = types.ModuleType("pyslirp4netns.shell.startup")

    def run(config: Config) -> int:
        seen.append(config)
        return 42

    module.run = run  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pyslirp4netns.shell.startup", module)
    return seen


def test_main_runs_the_daemon_with_the_config(fake_daemon: list[Config]) -> None:
    assert cli.main(["pyslirp4netns", "-c", "5", "tap0"]) == 42
    assert fake_daemon == [Config(target="5", pid=5, configure=True)]


def test_main_returns_the_parse_exit_code(
    fake_daemon: list[Config], capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["pyslirp4netns", "--bogus"]) == 1
    assert cli.main(["pyslirp4netns", "-h"]) == 0
    assert cli.main(["pyslirp4netns"]) == 1
    assert fake_daemon == []
    assert capsys.readouterr().err == "pyslirp4netns: unrecognized option '--bogus'\n"


def test_main_defaults_to_sys_argv(
    fake_daemon: list[Config], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "argv", ["/x/pyslirp4netns", "7", "tap7"])
    assert cli.main() == 42
    assert fake_daemon[0].tapname == "tap7"


def test_long_option_table_matches_slirp4netns() -> None:
    names = [option.name for option in cli.LONG_OPTIONS]
    assert len(names) == len(set(names)) == 21
    shorts = {option.key for option in cli.LONG_OPTIONS if len(option.key) == 1}
    assert shorts == set(cli.SHORT_OPTIONS.replace(":", ""))
    for option in cli.LONG_OPTIONS:
        if len(option.key) == 1:
            takes_arg = cli.SHORT_OPTIONS[cli.SHORT_OPTIONS.index(option.key) + 1 :][:1] == ":"
            assert option.has_arg == takes_arg


@pytest.mark.parametrize("text", ["5", " 5", "+5"])
def test_tapfd_mode_parses_the_fd_number(text: str) -> None:
    config = cli.parse(["--netns-type=tapfd", text], "pyslirp4netns")
    assert (config.tapfd, config.pid) == (5, None)


# --- --port-forward-mode (our extension) ----------------------------------------------


def test_port_forward_mode_defaults_to_tap(run: Callable[..., Outcome]) -> None:
    assert ok(run("5", "tap0")).port_forward_mode == "tap"


@pytest.mark.parametrize(
    "args, mode",
    [
        (["--port-forward-mode=splice"], "splice"),
        (["--port-forward-mode", "splice"], "splice"),
        (["--port-forward-mode=tap"], "tap"),
        (["--port-forward-mode=splice", "--port-forward-mode=tap"], "tap"),  # the last one wins
    ],
)
def test_port_forward_mode_sets_its_field(
    run: Callable[..., Outcome], args: list[str], mode: str
) -> None:
    assert ok(run(*args, "5", "tap0")).port_forward_mode == mode


@pytest.mark.parametrize("value", ["", "Splice", "pasta", "tap,splice"])
def test_port_forward_mode_rejects_other_values(run: Callable[..., Outcome], value: str) -> None:
    message = '--port-forward-mode must be either "tap" or "splice"'
    usage_error(run(f"--port-forward-mode={value}", "5", "tap0"), message)
    usage_error(run(f"--port-forward-mode={value}"), message)  # inside the getopt loop


def test_port_forward_mode_needs_its_argument(run: Callable[..., Outcome]) -> None:
    outcome = run("5", "tap0", "--port-forward-mode")
    assert (outcome.code, outcome.out) == (1, USAGE)
    assert outcome.err == f"{PROG}: option '--port-forward-mode' requires an argument\n"


def test_port_forward_mode_is_never_abbreviated(run: Callable[..., Outcome]) -> None:
    """Outside slirp4netns's table: its prefixes stay unknown, its ambiguity lists unchanged."""
    outcome = run("--port=splice", "5", "tap0")
    assert (outcome.code, outcome.out) == (1, USAGE)
    assert outcome.err == f"{PROG}: unrecognized option '--port=splice'\n"
    table = " ".join(f"'--{option.name}'" for option in cli.LONG_OPTIONS)
    assert table in run("--=x", "5", "tap0").err
    assert "port-forward-mode" not in run("--=x", "5", "tap0").err
    assert "port-forward-mode" not in cli.usage_text(PROG)


@pytest.mark.parametrize(
    "args, conflict",
    [
        (["--target-type=bess", "/tmp/s"], "--target-type=bess"),
        (["--netns-type=tapfd", "5"], "--netns-type=tapfd"),
    ],
)
def test_splice_needs_a_namespace(
    run: Callable[..., Outcome], args: list[str], conflict: str
) -> None:
    outcome = run("--port-forward-mode=splice", *args)
    assert outcome.code == 1
    assert outcome.err == f"--port-forward-mode=splice conflicts with {conflict}\n"
    assert ok(run("--port-forward-mode=tap", *args), out=outcome.out.replace(USAGE, ""))


# --- `pyslirp4netns run [OPTION]... -- CMD` (pyslirp4netns/shell/run.py) ----------------------


@pytest.fixture
def fake_runner(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Requests that reached the runner, which reports 42 instead of starting anything."""
    from pyslirp4netns.shell import run as run_command

    seen: list[Any] = []

    class Runner:
        def __init__(self, request: run_command.Request, prog: str) -> None:
            seen.append(request)

        def run(self) -> int:
            return 42

    monkeypatch.setattr(run_command, "Runner", Runner)
    return seen


RUN_USAGE = "Usage: pyslirp4netns run [OPTION]... -- CMD [ARG]...\n"


def test_run_hands_cmd_and_options_to_the_runner(fake_runner: list[Any]) -> None:
    argv = ["pyslirp4netns", "run", "--mtu=1500", "-6", "--", "curl", "-s", "--mtu", "-r"]
    assert cli.main(argv) == 42
    (request,) = fake_runner
    assert request.options == ("--mtu=1500", "-6")
    assert request.command == ("curl", "-s", "--mtu", "-r")  # after --: CMD's own
    assert (request.config.mtu, request.config.configure, request.config.enable_ipv6) == (
        1500,
        True,
        True,
    )


def test_run_defaults_are_configure_and_mtu_65520(fake_runner: list[Any]) -> None:
    assert cli.main(["pyslirp4netns", "run", "--", "true"]) == 42
    config = fake_runner[0].config
    assert (config.configure, config.mtu, config.disable_host_loopback) == (True, 65520, False)
    assert fake_runner[0].options == ()


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "no CMD after --"),
        (["--"], "no CMD after --"),
        (["-c", "--mtu=1500"], "no CMD after --"),
        (["curl", "http://10.0.2.2/"], "CMD goes after --: 'curl'"),
        (["-c", "curl", "--", "x"], "CMD goes after --: 'curl'"),
        (["--cidr", "--", "curl"], "CMD goes after --: 'curl'"),  # "--" was --cidr's value
        (["-r", "3", "--", "true"], "--ready-fd is not for run: it serves its own namespace"),
        (["--exit-fd=3", "--", "true"], "--exit-fd is not for run: it serves its own namespace"),
        (["--userns-path=/proc/self/ns/user", "--", "true"], "--userns-path is not for run"),
    ],
)
def test_run_usage_errors_exit_1(
    fake_runner: list[Any], capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    assert cli.main(["pyslirp4netns", "run", *args]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"pyslirp4netns run: {message}") and err.endswith("\n" + RUN_USAGE)
    assert fake_runner == []


@pytest.mark.parametrize(
    "option, message",
    [
        ("--bogus", "pyslirp4netns: unrecognized option '--bogus'\n"),
        ("--mtu=0", "MTU must be a positive integer (< 65522)\n"),
        ("--cidr=10.0.2.1/24", "CIDR needs to be a network address like 10.0.2.0/24"),
        ("--port-forward-mode=x", '--port-forward-mode must be either "tap" or "splice"\n'),
    ],
)
def test_run_options_get_the_daemons_checks_first(
    fake_runner: list[Any], capsys: pytest.CaptureFixture[str], option: str, message: str
) -> None:
    """Checked before any namespace exists; slirp4netns's usage (PID|PATH) is not shown."""
    assert cli.main(["pyslirp4netns", "run", option, "--", "true"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(message) and err.endswith(RUN_USAGE)
    assert fake_runner == []


def test_run_help_and_version(fake_runner: list[Any], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["pyslirp4netns", "run", "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(RUN_USAGE) and "--configure --mtu=65520" in out
    assert cli.main(["pyslirp4netns", "run", "-v", "--", "true"]) == 0
    assert capsys.readouterr().out.startswith("pyslirp4netns version ")
    assert fake_runner == []


def test_run_warnings_stay_off_stdout(
    fake_runner: list[Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """-6's warning is the daemon's stdout, which run discards: stdout is CMD's alone."""
    assert cli.main(["pyslirp4netns", "run", "-6", "--", "true"]) == 42
    assert capsys.readouterr() == ("", "")


@pytest.mark.parametrize(
    "args, expected",
    [
        (["run"], True),
        (["run", "--", "curl"], True),
        (["run", "tap0"], True),  # slirp4netns: "PID must be a positive integer", exit 1
        (["run", "--", "x", "--netns-type=path"], True),  # CMD's argument, not ours
        (["-c", "run", "tap0"], False),
        (["5", "run"], False),
        (["running"], False),
        (["run", "tap0", "--netns-type=path"], False),  # a netns file named "run"
        (["run", "tap0", "--netns=path"], False),  # the abbreviation too
        (["run", "--target-type=bess"], False),  # a BESS socket named "run"
        ([], False),
    ],
)
def test_run_is_argv1_unless_run_could_be_slirp4netns_target(
    args: list[str], expected: bool
) -> None:
    assert cli.is_run(args) is expected


def test_run_as_a_netns_path_or_bess_socket_stays_slirp4netns(
    fake_daemon: list[Config], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "run").touch()
    assert cli.main(["pyslirp4netns", "run", "tap0", "--netns-type=path", "-c"]) == 42
    assert cli.main(["pyslirp4netns", "run", "--target-type=bess"]) == 42
    path, bess = fake_daemon
    assert (path.target, path.tapname, path.path_mode) == ("run", "tap0", True)
    assert (bess.target, bess.target_type) == ("run", "bess")


def test_slirp4netns_argv_never_reaches_the_runner(
    fake_daemon: list[Config], fake_runner: list[Any]
) -> None:
    for argv in (["-c", "5", "tap0"], ["5", "run"], ["--", "5", "tap0"], ["-r", "3", "5", "run"]):
        assert cli.main(["pyslirp4netns", *argv]) == 42
    assert [c.tapname for c in fake_daemon] == ["tap0", "run", "tap0", "run"]
    assert fake_runner == []


def test_double_dash_still_feeds_slirp4netns_positionals(run: Callable[..., Outcome]) -> None:
    assert ok(run("-c", "--", "5", "run")).tapname == "run"


def test_run_daemon_argv_is_slirp4netns_argv_with_run_defaults_first(
    fake_runner: list[Any],
) -> None:
    from pyslirp4netns.shell import run as run_command

    cli.main(["pyslirp4netns", "run", "--mtu=9000", "--disable-host-loopback", "--", "true"])
    request = fake_runner[0]
    argv = run_command.daemon_argv(request, 4242, 7, 8)
    assert argv[:3] == [sys.executable, "-m", "pyslirp4netns"]
    assert argv[3:] == [
        "--configure",
        "--mtu=65520",
        "--mtu=9000",
        "--disable-host-loopback",
        "-r",
        "7",
        "-e",
        "8",
        "4242",
        "tap0",
    ]
    config = cli.parse(argv[3:], "pyslirp4netns")
    assert config == Config(
        target="4242",
        pid=4242,
        configure=True,
        mtu=9000,
        disable_host_loopback=True,
        ready_fd=7,
        exit_fd=8,
    )


def test_run_resolv_conf_names_the_dns_alias_and_keeps_search_domains(tmp_path: Path) -> None:
    from pyslirp4netns.shell import run as run_command

    host = tmp_path / "resolv.conf"
    host.write_text("# comment\nnameserver 127.0.0.53\nsearch example.org\noptions edns0\n\n")
    config = Config(target="1", cidr=IPv4Network("10.9.0.0/24"))
    text = run_command.resolv_text(config, str(host))
    assert text == "nameserver 10.9.0.3\nsearch example.org\noptions edns0\n"
    assert run_command.resolv_text(Config(target="1"), str(tmp_path / "none")) == (
        "nameserver 10.0.2.3\n"
    )
