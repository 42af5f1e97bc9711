"""Command line: slirp4netns 1.2.0's options, messages and exit codes, reproduced exactly,
with what slirp4netns 1.3.0 changed in them (``--netns-type=tapfd`` and its two usage lines).

slirp4netns parses its arguments with glibc ``getopt_long`` (short options ``ce:r:m:a:6hv``),
so consumers rely on getopt's behaviour too: unique-prefix abbreviation of long options,
permutation of options and positionals, ``--``, ``POSIXLY_CORRECT`` and getopt's own error
texts. Python's argparse and getopt modules differ in all of these, so ``_getopt_long`` below
re-implements the glibc algorithm. The long-option table keeps slirp4netns's order, because
the ambiguity message lists the candidates in table order.

Validation order (contract §1.2, refined by measurement): per-option checks inside the getopt
loop, then ``--macaddress`` without ``-c``, then the target type (BESS: positional count, then
its conflicts; netns: positional count, then PID or path; anything else: the target-type
error), then, without usage, CIDR, ``--outbound-addr``, ``--outbound-addr6`` and the MAC.
Every failure prints usage on stdout (where slirp4netns does) and exits 1.
"""

from __future__ import annotations

import ctypes
import os
import re
import socket
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from pathlib import Path
from typing import NoReturn, TextIO

from pyslirp4netns import __version__
from pyslirp4netns.config import IPV6_NETWORK, Config

SHORT_OPTIONS = "ce:r:m:a:6hv"


@dataclass(frozen=True, slots=True)
class LongOption:
    """One row of getopt_long's table; ``key`` is the short letter or the long name itself."""

    name: str
    has_arg: bool
    key: str


def _long(name: str, has_arg: bool, short: str | None = None) -> LongOption:
    return LongOption(name, has_arg, short or name)


# slirp4netns 1.2.0's table order, measured with the real binary: `--=x` prefix-matches every
# entry and the ambiguity message lists them all in this order. Adding an entry would change
# which abbreviations are unique, so this table must stay exactly slirp4netns's.
LONG_OPTIONS: tuple[LongOption, ...] = (
    _long("configure", False, "c"),
    _long("exit-fd", True, "e"),
    _long("ready-fd", True, "r"),
    _long("mtu", True, "m"),
    _long("cidr", True),
    _long("disable-host-loopback", False),
    _long("no-host-loopback", False),  # deprecated alias, absent from --help
    _long("netns-type", True),
    _long("userns-path", True),
    _long("api-socket", True, "a"),
    _long("enable-ipv6", False, "6"),
    _long("enable-sandbox", False),
    _long("create-sandbox", False),  # deprecated alias, absent from --help
    _long("enable-seccomp", False),
    _long("help", False, "h"),
    _long("version", False, "v"),
    _long("outbound-addr", True),
    _long("outbound-addr6", True),
    _long("disable-dns", False),
    _long("macaddress", True),
    _long("target-type", True),
)

# Our extensions, outside slirp4netns's table: matched by their full name only, so that every
# abbreviation and ambiguity message stays slirp4netns's; absent from --help (which must stay
# byte-identical) and documented in the man page.
EXTENSION_OPTIONS: tuple[LongOption, ...] = (
    _long("port-forward-mode", True),
    _long("ipv6-prefix", True),
    _long("pcap", True),
    _long("pcap-max-size", True),
    _long("stats", False),
    _long("debug", False),
)
PORT_FORWARD_MODES = ("tap", "splice")

DEPRECATED_ALIASES = {
    "no-host-loopback": "disable-host-loopback",
    "create-sandbox": "enable-sandbox",
}

# Byte-identical to slirp4netns 1.3.x's --help, including the two TABs; only the program
# name is substituted. podman and rootlesskit grep this text for feature detection. 1.3.0
# changed two lines of 1.2.0's: PID|PATH became PID|PATH|FD and [path|pid] became
# [path|pid|tapfd]; every other byte is 1.2.0's (and 1.3.2's).
USAGE = """\
Usage: {prog} [OPTION]... PID|PATH|FD [TAPNAME]
User-mode networking for unprivileged network namespaces.

-c, --configure          bring up the interface
-e, --exit-fd=FD         specify the FD for terminating slirp4netns
-r, --ready-fd=FD        specify the FD to write to when the network is configured
-m, --mtu=MTU            specify MTU (default=1500, max=65521)
-6, --enable-ipv6        enable IPv6 (experimental)
-a, --api-socket=PATH    specify API socket path
--cidr=CIDR              specify network address CIDR (default=10.0.2.0/24)
--disable-host-loopback  prohibit connecting to 127.0.0.1:* on the host namespace
--netns-type=TYPE \t specify network namespace type ([path|pid|tapfd], default=pid)
--userns-path=PATH\t specify user namespace path
--enable-sandbox         create a new mount namespace (and drop all caps except \
CAP_NET_BIND_SERVICE if running as the root)
--enable-seccomp         enable seccomp to limit syscalls (experimental)
--outbound-addr=IPv4     sets outbound ipv4 address to bound to (experimental)
--outbound-addr6=IPv6    sets outbound ipv6 address to bound to (experimental)
--disable-dns            disables 10.0.2.3 (or configured internal ip) to host dns redirect \
(experimental)
--macaddress=MAC         specify the MAC address of the TAP (only valid with -c)
--target-type=TYPE       specify the target type ([netns|bess], default=netns)
-h, --help               show this help and exit
-v, --version            show version and exit
"""

SLIRP_CONFIG_VERSION_MAX = 4  # the feature level we implement; upstream tests need >= 3
MTU_MAX = 65521  # the tap's maxmtu
CIDR_PREFIX_MIN, CIDR_PREFIX_MAX = 1, 25

# The regex slirp4netns applies before inet_pton; [0-9] rather than \d keeps it ASCII-only.
_CIDR_RE = re.compile(r"([0-9]{1,3}\.){3}[0-9]{1,3}/[0-9]{1,2}")
_C_SPACE = " \t\n\v\f\r"  # isspace() in the C locale
_STRTOL_RE = re.compile(f"[{_C_SPACE}]*([+-]?[0-9]+)")
# sscanf("%x"): whitespace, sign, an optional "0x" (the "0" counts as a digit), hex digits.
_SCANF_HEX_RE = re.compile(f"[{_C_SPACE}]*([+-]?)(?:(0)[xX]?)?([0-9a-fA-F]*)")
_LONG_MAX = 2**63 - 1
_ULONG_MAX = 2**64 - 1

_MAC_HINT = (
    "macaddress has to be a valid MAC address (hex string, 6 bytes, each byte separated by a ':')."
)


# stdout bytes held back the way C stdio holds them: a piped stdout is fully buffered and
# written at exit, while stderr is unbuffered. With `2>&1` (podman logs both streams to one
# file) the lines then interleave as slirp4netns's do, whatever PYTHONUNBUFFERED says.
_pending_stdout: list[bytes] = []


def _out(text: str) -> None:
    _pending_stdout.append(os.fsencode(text))  # argv bytes that are not UTF-8 pass through
    if sys.stdout is not None and sys.stdout.isatty():  # C line-buffers a terminal
        _flush_stdout()


def _flush_stdout() -> None:
    data = b"".join(_pending_stdout)
    _pending_stdout.clear()
    _write_bytes(sys.stdout, data)


def _err(text: str) -> None:
    _write_bytes(sys.stderr, os.fsencode(text))


def _write_bytes(stream: TextIO | None, data: bytes) -> None:
    if stream is None:  # started with the fd closed: C's stdio would fail silently too
        return
    buffer = getattr(stream, "buffer", None)
    if buffer is None:  # a text-only replacement stream, e.g. io.StringIO in a caller's test
        stream.write(os.fsdecode(data))
    else:
        buffer.write(data)
    stream.flush()


def usage_text(prog: str) -> str:
    """The --help text with ``prog`` (argv[0] as invoked) substituted."""
    return USAGE.format(prog=prog)


def _exit(code: int) -> NoReturn:
    _flush_stdout()
    raise SystemExit(code)


def _fail_with_usage(prog: str, message: str | None = None) -> NoReturn:
    if message is not None:
        _err(message + "\n")
    _out(usage_text(prog))
    _exit(1)


def _fail(message: str) -> NoReturn:
    """Post-parse failures: slirp4netns prints no usage for these."""
    _err(message)
    _exit(1)


def _git_commit() -> str:
    """The checkout's commit when running from a git tree (read directly: no subprocess)."""
    git = Path(__file__).resolve().parent.parent / ".git"
    try:
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref: "):
            return head
        ref = head.removeprefix("ref: ")
        ref_file = git / ref
        if ref_file.is_file():
            return ref_file.read_text().strip()
        for line in (git / "packed-refs").read_text().splitlines():
            if line.endswith(" " + ref):
                return line.split()[0]
    except OSError:
        pass
    return "unknown"


class _ScmpVersion(ctypes.Structure):
    _fields_ = [("major", ctypes.c_uint), ("minor", ctypes.c_uint), ("micro", ctypes.c_uint)]


def _libseccomp_version() -> str:
    """The system libseccomp's version if it can be loaded, else "none"."""
    from ctypes.util import find_library  # here: it brings subprocess (about 1 MiB)

    name = find_library("seccomp")
    if name is None:
        return "none"
    try:
        seccomp_version = ctypes.CDLL(name).seccomp_version
    except (OSError, AttributeError):
        return "none"
    seccomp_version.restype = ctypes.POINTER(_ScmpVersion)
    v = seccomp_version().contents
    return f"{v.major}.{v.minor}.{v.micro}"


def version_text() -> str:
    """``-v``: slirp4netns's five-line shape; line 4 is what upstream tests parse."""
    return (
        f"pyslirp4netns version {__version__}\n"
        f"commit: {_git_commit()}\n"
        "libslirp: none (pure-Python stack)\n"
        f"SLIRP_CONFIG_VERSION_MAX: {SLIRP_CONFIG_VERSION_MAX}\n"
        f"libseccomp: {_libseccomp_version()}\n"
    )


def _getopt_long(
    args: Sequence[str],
    prog: str,
    positionals: list[str],
    posixly_correct: bool,
    rest: list[str] | None = None,
    err: Callable[[str], None] = _err,
) -> Iterator[tuple[str, str | None]]:
    """glibc getopt_long: yield (key, optarg) in command-line order; ("?", None) after an error.

    Non-options are appended to ``positionals`` in their original order (glibc's permutation
    moves them behind the options). With POSIXLY_CORRECT the first non-option ends the options.
    What follows ``--`` goes to ``rest`` when given (``run``'s CMD), else to ``positionals``;
    ``err`` prints getopt's messages.
    """
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg == "--":
            (positionals if rest is None else rest).extend(args[i:])
            return
        if not arg.startswith("-") or arg == "-":
            if posixly_correct:
                positionals.extend(args[i - 1 :])
                return
            positionals.append(arg)
            continue
        if arg.startswith("--"):
            nextchar = arg[2:]
            name, eq, value = nextchar.partition("=")
            exact = [o for o in LONG_OPTIONS + EXTENSION_OPTIONS if o.name == name]
            # Every entry has a distinct key, so any two prefix matches are ambiguous.
            matches = exact or [o for o in LONG_OPTIONS if o.name.startswith(name)]
            if not matches:
                err(f"{prog}: unrecognized option '--{nextchar}'\n")
                yield "?", None
                continue
            if len(matches) > 1:
                names = " ".join(f"'--{o.name}'" for o in matches)
                err(f"{prog}: option '--{nextchar}' is ambiguous; possibilities: {names}\n")
                yield "?", None
                continue
            option = matches[0]
            if not option.has_arg:
                if eq:
                    err(f"{prog}: option '--{option.name}' doesn't allow an argument\n")
                    yield "?", None
                else:
                    yield option.key, None
            elif eq:
                yield option.key, value
            elif i < len(args):
                i += 1
                yield option.key, args[i - 1]
            else:
                err(f"{prog}: option '--{option.name}' requires an argument\n")
                yield "?", None
            continue
        # A cluster of short options: "-cv", "-m1500", "-m 1500".
        for pos in range(1, len(arg)):
            letter = arg[pos]
            spec = SHORT_OPTIONS.find(letter)
            if spec < 0 or letter in ":;":
                err(f"{prog}: invalid option -- '{letter}'\n")
                yield "?", None
                continue
            if not SHORT_OPTIONS.startswith(":", spec + 1):
                yield letter, None
                continue
            if pos + 1 < len(arg):
                yield letter, arg[pos + 1 :]
            elif i < len(args):
                i += 1
                yield letter, args[i - 1]
            else:
                err(f"{prog}: option requires an argument -- '{letter}'\n")
                yield "?", None
            break


def strtol_int(text: str) -> int | None:
    """C ``strtol(text, &end, 10)`` stored in an ``int``; None unless the whole string is used.

    As in C: leading whitespace and a sign are accepted, "" gives 0 (end is already at the
    NUL), out-of-long-range values fail (ERANGE), and longs beyond INT_MAX wrap, so
    ``99999999999`` becomes 1215752191.
    """
    if text == "":
        return 0
    match = _STRTOL_RE.match(text)
    if match is None or match.end() != len(text):
        return None
    value = int(match.group(1))
    if not -_LONG_MAX - 1 <= value <= _LONG_MAX:
        return None
    return (value + 2**31) % 2**32 - 2**31


def _scanf_hex_int(text: str) -> int | None:
    """glibc ``sscanf(text, "%x", &int)``: the stored int, or None when nothing converts."""
    match = _SCANF_HEX_RE.match(text)
    assert match is not None  # every group is optional
    sign, zero, digits = match.groups()
    digits = (zero or "") + digits
    if not digits:
        return None
    value = int(digits, 16)
    if value > _ULONG_MAX:
        value = _ULONG_MAX  # strtoul's ERANGE result, whatever the sign
    elif sign == "-":
        value = -value % 2**64
    value &= 0xFFFFFFFF  # stored through an unsigned int into an int
    return value - 2**32 if value >= 2**31 else value


def parse_mac(text: str) -> bytes | None:
    """slirp4netns's lax MAC parser: ':'-separated ``%x`` fields, at most 6, each 0..255.

    Missing fields stay 0 and parsing of a field stops at its first non-hex character, so
    ``aa:bb:cc:dd:ee`` is aa:bb:cc:dd:ee:00 and ``aa-bb-cc-dd-ee-ff`` is aa:00:00:00:00:00.
    Prints slirp4netns's first error line and returns None on failure.
    """
    mac = bytearray(6)
    for index, field in enumerate(text.split(":")):
        if index >= len(mac):
            _err(f'"{text}" is an invalid MAC address.  Is it too long?\n')
            return None
        value = _scanf_hex_int(field)
        if value is None or not 0 <= value <= 255:
            _err(f'"{text}" is an invalid MAC address.\n')
            return None
        mac[index] = value
    return bytes(mac)


def _parse_cidr(text: str) -> IPv4Network:
    if not _CIDR_RE.fullmatch(text):
        _fail(f"invalid CIDR: {text}\n")
    address, _, prefix_text = text.partition("/")
    try:
        socket.inet_pton(socket.AF_INET, address)  # glibc's rules, e.g. no leading zeros
    except OSError:
        _fail(f"invalid network address: {address}\n")
    prefix = int(prefix_text)  # "08" is 8, as with strtol
    if not CIDR_PREFIX_MIN <= prefix <= CIDR_PREFIX_MAX:
        _fail(f"prefix length needs to be {CIDR_PREFIX_MIN}-{CIDR_PREFIX_MAX}\n")
    try:
        return IPv4Network(f"{address}/{prefix}")
    except ValueError:
        _fail("CIDR needs to be a network address like 10.0.2.0/24, not like 10.0.2.100/24\n")


def _interface_address(ifname: str, family: socket.AddressFamily) -> str | None:
    """The first address of ``family`` on interface ``ifname`` (getifaddrs order).

    For IPv6 a global address comes before a link-local one: a socket can't be bound to a
    link-local source without a scope, so outbound traffic from it would fail.
    """
    import psutil  # here, not at the top: only --outbound-addr IFNAME needs it (27 ms, 2 MiB)

    found = [
        str(address.address).split("%")[0]  # psutil appends "%ifname" to link-locals
        for address in psutil.net_if_addrs().get(ifname, [])
        if address.family == family
    ]
    found.sort(key=lambda text: text.lower().startswith("fe80:"))
    return found[0] if found else None


def _is_literal(family: socket.AddressFamily, text: str) -> bool:
    try:
        socket.inet_pton(family, text)
    except (OSError, ValueError):  # ValueError: text not encodable (non-UTF-8 argv)
        return False
    return True


def _parse_outbound_addr(text: str) -> IPv4Address:
    if _is_literal(socket.AF_INET, text):
        return IPv4Address(text)
    address = _interface_address(text, socket.AF_INET)
    if address is None:
        _fail("outbound-addr has to be valid ipv4 address or interface name.")
    return IPv4Address(address)


def _parse_outbound_addr6(text: str) -> IPv6Address:
    if _is_literal(socket.AF_INET6, text):
        return IPv6Address(text)
    # Deliberate fix: slirp4netns 1.2.0 looks up the --outbound-addr value here instead.
    address = _interface_address(text, socket.AF_INET6)
    if address is None:
        # The typo and the missing newline are slirp4netns's.
        _fail("outbound-addr has to be valid ipv4 address or iterface name.")
    return IPv6Address(address)


def _parse_ipv6_prefix(text: str) -> IPv6Network:
    """--ipv6-prefix (our extension): a unicast /64 without host bits (SLAAC needs /64,
    RFC 4862 §5.5.3 with RFC 2464 §4), e.g. fd00:1234::/64. Checked after parsing, like --cidr."""
    try:
        network = IPv6Network(text)
    except ValueError:
        network = None
    if (
        network is None
        or network.prefixlen != 64
        or network.is_multicast
        or network.is_link_local
        or network.is_loopback
        or network.network_address.ipv4_mapped is not None
        or network.network_address == IPv6Address("::")
    ):
        _fail(f"invalid IPv6 prefix: {text} (a /64 network like fd00:1234::/64)\n")
    return network


@dataclass(slots=True)
class _Raw:
    """Values as collected by the getopt loop, before the post-parse checks."""

    configure: bool = False
    exit_fd: int = -1
    ready_fd: int = -1
    mtu: int = 1500
    enable_ipv6: bool = False
    api_socket: str | None = None
    cidr: str | None = None
    disable_host_loopback: bool = False
    netns_type: str | None = None
    userns_path: str | None = None
    enable_sandbox: bool = False
    enable_seccomp: bool = False
    outbound_addr: str | None = None
    outbound_addr6: str | None = None
    disable_dns: bool = False
    macaddress: str | None = None
    target_type: str | None = None
    port_forward_mode: str = "tap"
    ipv6_prefix: str | None = None
    pcap: str | None = None
    pcap_max_size: int = 100 << 20
    stats: bool = False
    debug: bool = False


def _parse_size(text: str) -> int | None:
    """--pcap-max-size: bytes, or with a K, M or G suffix (powers of 1024); more than 24."""
    multiplier = 1
    if text[-1:] in ("K", "M", "G"):
        multiplier = 1 << (10 * ("KMG".index(text[-1]) + 1))
        text = text[:-1]
    if not (text.isascii() and text.isdigit()):
        return None
    size = int(text) * multiplier
    return size if size > 24 else None  # room for the pcap file header and a record


def _parse_fd(text: str, prog: str, what: str) -> int:
    fd = strtol_int(text)
    if fd is None or fd < 0:
        _fail_with_usage(prog, f"{what} must be a non-negative integer")
    return fd


def _apply(raw: _Raw, key: str, optarg: str | None, prog: str) -> None:
    """Carry out one option, in command-line order, with its in-loop checks and warnings."""
    value = optarg or ""
    match key:
        case "c":
            raw.configure = True
        case "e":
            raw.exit_fd = _parse_fd(value, prog, "exit-fd")
        case "r":
            raw.ready_fd = _parse_fd(value, prog, "ready-fd")
        case "m":
            mtu = strtol_int(value)
            if mtu is None or not 1 <= mtu <= MTU_MAX:
                _fail_with_usage(prog, "MTU must be a positive integer (< 65522)")
            raw.mtu = mtu
        case "6":
            raw.enable_ipv6 = True
            _out("WARNING: Support for IPv6 is experimental\n")
        case "a":
            raw.api_socket = value
        case "cidr":
            raw.cidr = value
        case "disable-host-loopback" | "no-host-loopback":
            raw.disable_host_loopback = True
        case "netns-type":
            raw.netns_type = value
        case "userns-path":
            if not os.path.exists(value):
                _fail_with_usage(prog, f"userns path doesn't exist: {value}")
            raw.userns_path = value
        case "enable-sandbox" | "create-sandbox":
            raw.enable_sandbox = True
        case "enable-seccomp":
            raw.enable_seccomp = True
            _out("WARNING: Support for seccomp is experimental\n")
        case "outbound-addr":
            raw.outbound_addr = value
            _out("WARNING: Support for --outbound-addr is experimental\n")
        case "outbound-addr6":
            raw.outbound_addr6 = value
            _out("WARNING: Support for --outbound-addr6 is experimental\n")
        case "disable-dns":
            raw.disable_dns = True
        case "macaddress":
            raw.macaddress = value
        case "target-type":
            raw.target_type = value
        case "port-forward-mode":
            if value not in PORT_FORWARD_MODES:
                _fail_with_usage(prog, '--port-forward-mode must be either "tap" or "splice"')
            raw.port_forward_mode = value
        case "ipv6-prefix":
            raw.ipv6_prefix = value
        case "pcap":
            if not value:
                _fail_with_usage(prog, "--pcap needs a file name")
            raw.pcap = value
        case "pcap-max-size":
            size = _parse_size(value)
            if size is None:
                _fail_with_usage(prog, "--pcap-max-size must be bytes, or KiB/MiB/GiB as K/M/G")
            raw.pcap_max_size = size
        case "stats":
            raw.stats = True
        case "debug":
            raw.debug = True
        case "h":
            _out(usage_text(prog))
            _exit(0)
        case "v":
            _out(version_text())
            _exit(0)
        case _:  # "?": getopt already printed its message
            _fail_with_usage(prog)
    if key in DEPRECATED_ALIASES:
        _out(
            f"WARNING: --{key} is deprecated and will be removed in future releases, "
            f"please use --{DEPRECATED_ALIASES[key]} instead.\n"
        )


def _check_path(path: str) -> str | None:
    """access(path, F_OK) as perror would report it: None if it exists, else strerror."""
    try:
        os.stat(path)
    except OSError as e:
        return os.strerror(e.errno) if e.errno else str(e)
    return None


def _parse_target(
    raw: _Raw, positionals: list[str], prog: str
) -> tuple[str, str | None, int | None]:
    """The positional checks for the target type; returns (target, tapname, PID or tap fd)."""
    if raw.target_type == "bess":
        if not positionals:
            _fail_with_usage(prog)
        if len(positionals) > 1:
            _fail_with_usage(prog, "too many arguments")
        for given, option in (
            (raw.configure, "--configure"),
            (raw.netns_type is not None, "--netns-type"),
            (raw.userns_path is not None, "--userns-path"),
        ):
            if given:
                _fail_with_usage(prog, f"{option} conflicts with --target-type=bess")
        _out("WARNING: BESS mode is experimental\n")
        return positionals[0], None, None
    if raw.target_type not in (None, "netns"):
        _fail_with_usage(prog, '--target-type must be either "netns" or "bess"')
    if raw.netns_type == "tapfd":
        # slirp4netns 1.3.0: the target is an inherited tap fd; TAPNAME is optional and unused.
        if not positionals:
            _fail_with_usage(prog)
        if len(positionals) > 1:
            _out("WARNING: too many arguments\n")
        fd = strtol_int(positionals[0])
        if fd is None or fd < 0:
            _fail_with_usage(prog, "TAPFD must a file descriptor")  # sic, as 1.3.0
        return positionals[0], None, fd
    if len(positionals) < 2:  # TAPNAME is required in 1.2.0 despite the help text
        _fail_with_usage(prog)
    if len(positionals) > 2:
        _out("WARNING: too many arguments\n")
    target, tapname = positionals[0], positionals[1]
    if raw.netns_type in (None, "pid"):
        pid = strtol_int(target)
        if pid is None or pid <= 0:
            _fail_with_usage(prog, "PID must be a positive integer")
        return target, tapname, pid
    # Any other --netns-type word means path mode, as in slirp4netns.
    error = _check_path(target)
    if error is not None:
        _fail_with_usage(prog, f"existing path expected when --netns-type=path: {error}")
    return target, tapname, None


def parse(args: Sequence[str], prog: str) -> Config:
    """Parse ``args`` (argv without argv[0]) exactly as slirp4netns 1.2.0 would.

    ``prog`` is argv[0] as invoked, used in the usage line and getopt's messages. Every error
    prints slirp4netns's text on slirp4netns's stream and raises SystemExit(1); -h and -v
    raise SystemExit(0). stdout is flushed before returning because a fork follows.
    """
    raw = _Raw()
    positionals: list[str] = []
    posixly_correct = "POSIXLY_CORRECT" in os.environ
    for key, optarg in _getopt_long(args, prog, positionals, posixly_correct):
        _apply(raw, key, optarg, prog)
    if raw.macaddress is not None and not raw.configure:
        _fail_with_usage(
            prog, "--macaddr cannot be specified when --configure or -c is not specified"
        )
    target, tapname, number = _parse_target(raw, positionals, prog)
    if raw.port_forward_mode == "splice":  # no namespace to create the guest's sockets in
        if raw.target_type == "bess":
            _fail_with_usage(prog, "--port-forward-mode=splice conflicts with --target-type=bess")
        if raw.netns_type == "tapfd":
            _fail_with_usage(prog, "--port-forward-mode=splice conflicts with --netns-type=tapfd")
    tapfd = number if raw.netns_type == "tapfd" else None
    pid = None if raw.netns_type == "tapfd" else number
    # slirp4netns 1.3.0 accepts -c with tapfd and silently does nothing with it: the tap is
    # the caller's. (--macaddress still needs -c, checked above, and is only reported.)
    configure = raw.configure and tapfd is None
    cidr = IPv4Network("10.0.2.0/24") if raw.cidr is None else _parse_cidr(raw.cidr)
    ipv6_prefix = IPV6_NETWORK if raw.ipv6_prefix is None else _parse_ipv6_prefix(raw.ipv6_prefix)
    outbound_addr = None if raw.outbound_addr is None else _parse_outbound_addr(raw.outbound_addr)
    outbound_addr6 = (
        None if raw.outbound_addr6 is None else _parse_outbound_addr6(raw.outbound_addr6)
    )
    macaddress = None
    if raw.macaddress is not None:
        macaddress = parse_mac(raw.macaddress)
        if macaddress is None:
            _fail(_MAC_HINT)
    _flush_stdout()  # before the fork that follows, so no output is duplicated
    config = Config(
        target=target,
        pid=pid,
        tapfd=tapfd,
        configure=configure,
        exit_fd=raw.exit_fd,
        ready_fd=raw.ready_fd,
        mtu=raw.mtu,
        enable_ipv6=raw.enable_ipv6,
        api_socket=raw.api_socket,
        cidr=cidr,
        disable_host_loopback=raw.disable_host_loopback,
        netns_type="pid" if raw.netns_type is None else raw.netns_type,  # "" is path mode
        userns_path=raw.userns_path,
        enable_sandbox=raw.enable_sandbox,
        enable_seccomp=raw.enable_seccomp,
        outbound_addr=outbound_addr,
        outbound_addr6=outbound_addr6,
        disable_dns=raw.disable_dns,
        macaddress=macaddress,
        target_type="netns" if raw.target_type is None else raw.target_type,
        port_forward_mode=raw.port_forward_mode,
        ipv6_prefix=ipv6_prefix,
        pcap=raw.pcap,
        pcap_max_size=raw.pcap_max_size,
        stats=raw.stats,
        debug=raw.debug,
    )
    # TAPNAME only exists in netns/pid and path modes; "" is valid there (the kernel picks tapN).
    return config if tapname is None else replace(config, tapname=tapname)


# Only with these could slirp4netns take a first positional "run" as its target (a netns path
# or a BESS socket): without them "run" is an invalid PID, so `run` is free for our subcommand.
_TARGET_OPTIONS = frozenset({"netns-type", "target-type"})


def is_run(args: Sequence[str]) -> bool:
    """``args`` (argv without argv[0]) ask for ``pyslirp4netns run``: their first word is
    ``run`` and getopt (silently, up to ``--``) finds no --netns-type or --target-type."""
    if not args or args[0] != "run":
        return False
    posixly_correct = "POSIXLY_CORRECT" in os.environ
    keys = {key for key, _ in _getopt_long(args, "", [], posixly_correct, [], lambda _: None)}
    return not keys & _TARGET_OPTIONS


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point: parse, then hand the Config to the daemon."""
    if argv is None:
        argv = sys.argv
    if is_run(argv[1:]):
        from pyslirp4netns.shell import run as run_command  # `pyslirp4netns run ... -- CMD`

        return run_command.main(argv)
    try:
        config = parse(argv[1:], argv[0] if argv else "pyslirp4netns")
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 1
    from pyslirp4netns.shell.startup import run  # the runtime, only once parsing succeeded

    return run(config)
