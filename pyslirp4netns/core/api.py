"""The JSON API of ``--api-socket`` (contract §5), sans-IO: requests in, replies out.

slirp4netns answers each request with fixed strings, and consumers (podman, rootlesskit) compare
those bytes, so the replies here are slirp4netns 1.2.0's, byte for byte. The request is parsed
by ``jsonreader`` (parson's JSON); its arguments are read as slirp4netns's parson getters and C
casts read them.

Deliberate fixes (the man page's COMPATIBILITY section): a missing or non-string ``proto`` or
``arguments`` gets the proto error where slirp4netns dies of SIGSEGV; ports outside 1..65535
after the cast get the port errors where slirp4netns binds the port modulo 65536; IPv6 literals
are accepted for ``host_addr`` and, with ``--enable-ipv6``, for ``guest_addr``.

Extension (slirp4netns refuses it with the host_port error): ``"host_port":0`` (exactly zero;
``0.5`` is still refused) binds an ephemeral port; the rule is listed with the port the kernel
chose, and the reply reports it: ``{"return":{"id":N,"host_port":P}}``. podman and rootlesskit
decode the reply into a struct holding ``id`` only, so the extra key is invisible to them.

Extension: ``get_stats`` answers ``GetStats``; the shell replies with its counters (the man
page's STATISTICS). Every other unknown execute still gets slirp4netns's error.

Adding a forward needs a socket, which this module never opens: ``Api.execute`` answers
``AddHostfwd`` instead of bytes; the shell binds, takes ``Api.rule`` for the id and keeps the
socket under it, starts the listener, then calls ``Api.added`` (the id is taken only then, so ids
count successful adds as slirp4netns's do) or answers ``ADD_FAILED``. ``RemoveHostfwd`` carries
the rule already taken out of the table: the shell stops its listener, closes its socket, then
sends ``OK``.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import TypeAlias

from pyslirp4netns.config import Config
from pyslirp4netns.core.jsonreader import Json, Outcome, Reader, Rejected

MAX_REQUEST = 4096  # slirp4netns's read buffer: a request this long is refused

# -- replies (contract §5.3), exact bytes, no trailing newline -------------------------------
OK = b'{"return":{}}'
ERR_PARSE = b'{"error":{"desc":"bad request: cannot parse JSON"}}'
ERR_NOT_OBJECT = b'{"error":{"desc":"bad request: json_object() failed"}}'
ERR_NO_EXECUTE = b'{"error":{"desc":"bad request: no execute found"}}'
ERR_UNKNOWN = b'{"error":{"desc":"bad request: unknown execute"}}'
ERR_PROTO = b'{"error":{"desc":"bad request: add_hostfwd: bad arguments.proto"}}'
ERR_HOST_ADDR = b'{"error":{"desc":"bad request: add_hostfwd: bad arguments.host_addr"}}'
ERR_HOST_PORT = b'{"error":{"desc":"bad request: add_hostfwd: bad arguments.host_port"}}'
ERR_GUEST_ADDR = b'{"error":{"desc":"bad request: add_hostfwd: bad arguments.guest_addr"}}'
ERR_GUEST_PORT = b'{"error":{"desc":"bad request: add_hostfwd: bad arguments.guest_port"}}'
ADD_FAILED = b'{"error":{"desc":"bad request: add_hostfwd: slirp_add_hostfwd failed"}}'
ERR_ID = b'{"error":{"desc":"bad request: remove_hostfwd: bad arguments.id"}}'
ERR_TOO_LARGE = b'{"error":{"desc":"bad request: too large message"}}'
ERROR_PREFIX = b'{"error":{"desc":"bad request: '

_REJECTED = {Rejected.NOT_JSON: ERR_PARSE, Rejected.TOO_LARGE: ERR_TOO_LARGE}

EPHEMERAL = 0  # AddHostfwd.host_port asking the kernel for a port (our extension)

INT_MIN = -(2**31)
INT_MAX = 2**31 - 1


@dataclass(frozen=True, slots=True)
class Rule:
    """One forward in the table, as listed."""

    id: int
    proto: str  # "tcp" or "udp"
    host_addr: str  # canonical text
    host_port: int
    guest_addr: str  # canonical text ("0.0.0.0" stays "0.0.0.0")
    guest_port: int


@dataclass(frozen=True, slots=True)
class AddHostfwd:
    """add_hostfwd passed every check: bind it, then ``Api.rule``/``Api.added`` or ADD_FAILED."""

    proto: str
    host_addr: str
    host_port: int
    guest_addr: str
    guest_port: int
    version: int  # of host_addr: 4 or 6


@dataclass(frozen=True, slots=True)
class RemoveHostfwd:
    """remove_hostfwd found ``rule`` and took it out of the table: stop it, close it, send OK."""

    rule: Rule
    reply: bytes = OK


@dataclass(frozen=True, slots=True)
class GetStats:
    """get_stats (our extension): the shell answers ``{"return":{...counters...}}``."""


Command: TypeAlias = "AddHostfwd | RemoveHostfwd | GetStats"


class Api:
    """The forwarding table and the three commands of slirp4netns's API."""

    def __init__(self, config: Config) -> None:
        self.default_guest = str(config.guest)  # N+100 (contract §3.1)
        self.enable_ipv6 = config.enable_ipv6
        self.rules: dict[int, Rule] = {}  # insertion order = id order = list order
        self.next_id = 1  # ids start at 1, one per successful add, never reused

    def handle(self, request: bytes) -> bytes | Command:
        """A whole request (everything the client sent) -> reply, or what the shell must do."""
        reader = Reader(limit=MAX_REQUEST)
        outcome = reader.feed(request)
        return self.execute(outcome if outcome is not None else reader.finish())

    def execute(self, outcome: Outcome) -> bytes | Command:
        """A request as the reader decided it -> reply, or what the shell must do."""
        if isinstance(outcome, Rejected):
            return _REJECTED[outcome]
        top = outcome.value
        if not isinstance(top, dict):
            return ERR_NOT_OBJECT
        execute = top.get(b"execute")
        if not isinstance(execute, bytes):  # missing, or not a string (42, null, ...)
            return ERR_NO_EXECUTE
        name = _c_string(execute)
        if name == b"add_hostfwd":
            return self._add(_arguments(top))
        if name == b"list_hostfwd":  # arguments are ignored
            return self.list_reply()
        if name == b"remove_hostfwd":
            return self._remove(_arguments(top))
        if name == b"get_stats":  # our extension; arguments are ignored
            return GetStats()
        return ERR_UNKNOWN

    # -- add_hostfwd: checks in slirp4netns's order, so the first bad field names the error --
    def _add(self, args: dict[bytes, Json]) -> bytes | Command:
        proto = args.get(b"proto")
        # Deliberate fix: slirp4netns strcmp()s a NULL here (missing/non-string) and crashes.
        if not isinstance(proto, bytes) or _c_string(proto) not in (b"tcp", b"udp"):
            return ERR_PROTO
        host = _address(_text(args.get(b"host_addr")) or "0.0.0.0", allow_ipv6=True)
        if host is None:
            return ERR_HOST_ADDR
        host_port = _host_port(args.get(b"host_port"))
        if host_port is None:
            return ERR_HOST_PORT
        guest = _address(
            _text(args.get(b"guest_addr")) or self.default_guest, allow_ipv6=self.enable_ipv6
        )
        if guest is None:
            return ERR_GUEST_ADDR
        guest_port = _port(args.get(b"guest_port"))
        if guest_port is None:
            return ERR_GUEST_PORT
        return AddHostfwd(
            proto=_c_string(proto).decode(),
            host_addr=host[1],
            host_port=host_port,
            guest_addr=guest[1],
            guest_port=guest_port,
            version=host[0],
        )

    def rule(self, command: AddHostfwd, bound_port: int | None = None) -> Rule:
        """The rule ``command`` becomes, with the next id; not in the table until added.
        ``bound_port``: the port the kernel chose when ``command`` asked for port 0."""
        return Rule(
            id=self.next_id,
            proto=command.proto,
            host_addr=command.host_addr,
            host_port=bound_port
            if command.host_port == EPHEMERAL and bound_port
            else command.host_port,
            guest_addr=command.guest_addr,
            guest_port=command.guest_port,
        )

    def added(self, rule: Rule, ephemeral: bool = False) -> bytes:
        """The shell has the listener running: take the id and answer it; ``ephemeral``
        (the request asked for port 0): the reply also names the port bound (extension)."""
        if rule.id != self.next_id or rule.id in self.rules:
            raise ValueError(f"rule {rule.id} was not the next one ({self.next_id})")
        self.rules[rule.id] = rule
        self.next_id += 1
        if ephemeral:
            return b'{"return":{"id":%d,"host_port":%d}}' % (rule.id, rule.host_port)
        return b'{"return":{"id":%d}}' % rule.id

    # -- list_hostfwd / remove_hostfwd -------------------------------------------------------
    def list_reply(self) -> bytes:
        """``{"entries":[...]}``: no "return" wrapper, whatever the man page says (§5.2)."""
        entries = ",".join(
            f'{{"id":{r.id},"proto":"{r.proto}","host_addr":"{r.host_addr}",'
            f'"host_port":{r.host_port},"guest_addr":"{r.guest_addr}",'
            f'"guest_port":{r.guest_port}}}'
            for r in self.rules.values()
        )
        return f'{{"entries":[{entries}]}}'.encode()

    def _remove(self, args: dict[bytes, Json]) -> bytes | Command:
        rule = self.rules.pop(_c_int(args.get(b"id")), None)  # missing/non-number -> 0: no rule
        if rule is None:
            return ERR_ID
        return RemoveHostfwd(rule)

    def take_all(self) -> list[Rule]:
        """Empty the table (shutdown): the shell stops and closes every rule returned."""
        rules = list(self.rules.values())
        self.rules.clear()
        return rules


# -- argument conversions, as slirp4netns's parson getters and C casts behave --------------
# String arguments are compared as C strings ("tcp\u0000x" is tcp); numbers are cast to C int;
# a non-number reads as 0 and a non-string as missing ("host_addr": 5 means 0.0.0.0).
def _arguments(top: dict[bytes, Json]) -> dict[bytes, Json]:
    """``arguments`` when it is an object; parson's dotget finds nothing in anything else."""
    args = top.get(b"arguments")
    return args if isinstance(args, dict) else {}


def _c_string(value: bytes) -> bytes:
    """What C sees of a JSON string: everything before the first NUL."""
    nul = value.find(b"\0")
    return value if nul < 0 else value[:nul]


def _text(value: Json) -> str | None:
    """A string argument as C sees it; non-strings read as missing (parson returns NULL)."""
    if not isinstance(value, bytes):
        return None
    try:
        return _c_string(value).decode("ascii")
    except UnicodeDecodeError:
        return "\x7f"  # not empty (so not defaulted) and never an address


def _c_int(value: Json) -> int:
    """``(int)json_object_dotget_number(...)``: 0 for a non-number, truncation toward zero,
    and what x86-64's cvttsd2si gives for a double outside int's range: INT_MIN."""
    if type(value) is not float:
        return 0
    if INT_MIN - 1 < value < INT_MAX + 1:
        return int(value)
    return INT_MIN


def _port(value: Json) -> int | None:
    # Deliberate fix: slirp4netns checks only != 0 and binds the value modulo 65536.
    port = _c_int(value)
    return port if 1 <= port <= 65535 else None


def _host_port(value: Json) -> int | None:
    """Extension: a host_port of exactly 0 asks for an ephemeral port (``EPHEMERAL``); anything
    else as slirp4netns (after the cast; 0.5 and -0.5 stay the host_port error)."""
    if type(value) is float and value == 0.0:
        return EPHEMERAL
    return _port(value)


def _address(text: str, allow_ipv6: bool) -> tuple[int, str] | None:
    """(version, canonical text) of an IPv4 literal or, as our extension, an IPv6 literal;
    None when it is neither. Accepted and written as glibc's inet_pton/inet_ntop do."""
    try:
        return 4, str(ipaddress.IPv4Address(text))  # strict dotted quad, like inet_pton
    except ValueError:
        pass
    if not allow_ipv6 or "%" in text:  # inet_pton knows no scope ids
        return None
    try:
        address = ipaddress.IPv6Address(text)
    except ValueError:
        return None
    # inet_ntop writes the last 32 bits as a dotted quad for ::ffff:a.b.c.d, and for
    # ::a.b.c.d when the quad's first half is not zero; ipaddress writes hex there.
    packed = address.packed
    if address.ipv4_mapped is not None:
        return 6, f"::ffff:{address.ipv4_mapped}"
    if packed[:12] == bytes(12) and packed[12:14] != bytes(2):
        return 6, f"::{ipaddress.IPv4Address(packed[12:])}"
    return 6, str(address)
