"""The JSON API of ``--api-socket`` (contract §5), sans-IO: request bytes in, reply bytes out.

Theory of operation
-------------------
slirp4netns reads one request per connection, parses it with parson and answers with fixed
strings. Consumers (podman, rootlesskit) compare those bytes, so this module reproduces them
exactly, including parson's own notion of JSON (measured against slirp4netns 1.2.0):

* the request is a C string: it ends at the first NUL byte; a UTF-8 BOM at the very start is
  skipped; whitespace is C ``isspace`` (``\\v`` and ``\\f`` too); anything after the first
  complete value is ignored (``{...} trailing`` works);
* duplicate keys anywhere are a parse error; a key containing ``\\u0000`` is a parse error;
  raw control characters in strings are errors, raw bytes >= 0x80 are taken as they are,
  escaped lone surrogates are errors;
* numbers are what ``strtod`` reads, then parson's checks: ``1.`` and ``-.5`` are numbers,
  ``01``, ``0e5``, ``-00``, hexadecimal, ``-inf``/``-nan`` and overflow (``1e999``) are errors;
  ``-`` alone reads as 0 without consuming anything (so it only works at the top level);
* string arguments are compared as C strings (``"tcp\\u0000x"`` is ``tcp``), numbers are cast
  to C ``int`` (``8088.9`` -> 8088, out of range -> ``INT_MIN`` as on x86-64); a non-number
  reads as 0 and a non-string as missing (``"host_addr": 5`` means ``0.0.0.0``).

Deliberate fixes (the man page's COMPATIBILITY section): a missing or non-string ``proto`` or
``arguments`` gets the proto error where slirp4netns dies of SIGSEGV; ports outside 1..65535
after the cast get the port errors where slirp4netns binds the port modulo 65536; IPv6 literals
are accepted for ``host_addr`` and, with ``--enable-ipv6``, for ``guest_addr``.

The parser is iterative (an explicit stack: 100k nested arrays cannot reach the recursion limit)
and resumable: ``Reader.feed`` keeps its place at the last complete token, so a request that
arrives a byte at a time costs about the same as one that arrives at once, and a connection is
answered as soon as its bytes make a complete value (or can no longer become one).

Adding a forward needs a socket, which this module never opens: ``Api.handle`` answers
``AddHostfwd`` instead of bytes; the shell binds, then calls ``Api.rule`` and ``Api.added`` (the
id is taken only then, so ids count successful adds as slirp4netns's do) or answers
``ADD_FAILED``. ``RemoveHostfwd`` carries the rule already taken out of the table: the shell stops
its listener and closes the socket, then sends ``OK``.
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass
from typing import TypeAlias

from pyslirp4netns.config import Config

MAX_REQUEST = 4096  # slirp4netns's read buffer: a request this long is refused
MAX_NESTING = 2048  # parson's limit (a 4095-byte request cannot reach it; kept for the parser)

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

INT_MIN = -(2**31)
INT_MAX = 2**31 - 1

# A parsed JSON value. Strings stay bytes: parson does not check UTF-8, and neither may we.
Json: TypeAlias = "None | bool | float | bytes | list[Json] | dict[bytes, Json]"


@dataclass(frozen=True, slots=True)
class Document:
    """A request that parsed: its top-level value (not yet known to be an object)."""

    value: Json


Outcome: TypeAlias = "Document | bytes"  # bytes: the error reply already decided


@dataclass(eq=False, slots=True)
class Rule:
    """One forward in the table; ``sock`` is its bound (and, for TCP, listening) socket."""

    id: int
    proto: str  # "tcp" or "udp"
    host_addr: str  # canonical text, as listed
    host_port: int
    guest_addr: str  # canonical text, as listed ("0.0.0.0" stays "0.0.0.0")
    guest_port: int
    family: int  # of the host side: AF_INET or AF_INET6
    sock: socket.socket


@dataclass(frozen=True, slots=True)
class AddHostfwd:
    """add_hostfwd passed every check: bind it, then ``Api.rule``/``Api.added`` or ADD_FAILED."""

    proto: str
    host_addr: str
    host_port: int
    guest_addr: str
    guest_port: int
    family: int


@dataclass(frozen=True, slots=True)
class RemoveHostfwd:
    """remove_hostfwd found ``rule`` and took it out of the table: stop it, close it, send OK."""

    rule: Rule
    reply: bytes = OK


Command: TypeAlias = "AddHostfwd | RemoveHostfwd"


class Api:
    """The forwarding table and the three commands of slirp4netns's API."""

    def __init__(self, config: Config) -> None:
        self.default_guest = str(config.guest)  # N+100 (contract §3.1)
        self.enable_ipv6 = config.enable_ipv6
        self.rules: dict[int, Rule] = {}  # insertion order = id order = list order
        self.next_id = 1  # ids start at 1, one per successful add, never reused

    def handle(self, request: bytes) -> bytes | Command:
        """A whole request (everything the client sent) -> reply, or what the shell must do."""
        reader = Reader()
        outcome = reader.feed(request)
        if outcome is None:
            outcome = reader.finish()
        return outcome if isinstance(outcome, bytes) else self.execute(outcome)

    def execute(self, document: Document) -> bytes | Command:
        top = document.value
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
        host_port = _port(args.get(b"host_port"))
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
            family=host[0],
        )

    def rule(self, command: AddHostfwd, sock: socket.socket) -> Rule:
        """The rule ``command`` becomes with its bound socket; not in the table until added."""
        return Rule(
            id=self.next_id,
            proto=command.proto,
            host_addr=command.host_addr,
            host_port=command.host_port,
            guest_addr=command.guest_addr,
            guest_port=command.guest_port,
            family=command.family,
            sock=sock,
        )

    def added(self, rule: Rule) -> bytes:
        """The shell has the listener running: take the id and answer it."""
        if rule.id != self.next_id or rule.id in self.rules:
            raise ValueError(f"rule {rule.id} was not the next one ({self.next_id})")
        self.rules[rule.id] = rule
        self.next_id += 1
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


def _address(text: str, allow_ipv6: bool) -> tuple[int, str] | None:
    """(family, canonical text) of an IPv4 literal (inet_pton, as slirp4netns) or, as our
    extension, an IPv6 literal; None when it is neither."""
    try:
        return socket.AF_INET, socket.inet_ntop(
            socket.AF_INET, socket.inet_pton(socket.AF_INET, text)
        )
    except (OSError, ValueError):
        pass
    if not allow_ipv6:
        return None
    try:
        return socket.AF_INET6, socket.inet_ntop(
            socket.AF_INET6, socket.inet_pton(socket.AF_INET6, text)
        )
    except (OSError, ValueError):
        return None


# -- the parser ---------------------------------------------------------------------------
_BOM = b"\xef\xbb\xbf"
_WS = re.compile(rb"[ \t\n\v\f\r]*")  # C isspace in the C locale
# A whole string token: no raw control characters, only JSON's escapes (RFC 8259 §7).
_STRING = re.compile(rb'"((?:[^"\\\x00-\x1f]++|\\["\\/bfnrt]|\\u[0-9A-Fa-f]{4})*+)"')
_STRING_START = re.compile(rb'"(?:[^"\\\x00-\x1f]++|\\["\\/bfnrt]|\\u[0-9A-Fa-f]{4})*+')
_ESCAPE_START = re.compile(rb"\\(?:u[0-9A-Fa-f]{0,3})?")  # an escape cut short by the end
# What strtod reads as a decimal number (RFC 8259 §6 is stricter; parson is what counts).
_NUMBER = re.compile(rb"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_HEX = re.compile(rb"-?0[xX]\.?[0-9A-Fa-f]")  # strtod reads hex floats; parson rejects them
_INF_NAN = re.compile(rb"-(?:[iI][nN][fF]|[nN][aA][nN])")  # strtod reads them; parson rejects
_NUMBERISH = re.compile(rb"[0-9A-Za-z.+\-()]*")  # bytes that could still extend a number
_SIMPLE_ESCAPES = {
    ord('"'): b'"',
    ord("\\"): b"\\",
    ord("/"): b"/",
    ord("b"): b"\b",
    ord("f"): b"\f",
    ord("n"): b"\n",
    ord("r"): b"\r",
    ord("t"): b"\t",
}
_LITERALS: dict[int, tuple[bytes, Json]] = {
    ord("t"): (b"true", True),
    ord("f"): (b"false", False),
    ord("n"): (b"null", None),
}

# Parser states: what the next token must be.
_START, _VALUE, _ARRAY_FIRST, _OBJECT_FIRST, _KEY, _COLON, _NEXT = range(7)


class _Incomplete(Exception):
    """The bytes so far end inside a token or before the value is complete."""


class _Invalid(Exception):
    """No continuation can make these bytes parse."""


class _Frame:
    """An open object or array and, for an object, the key waiting for its value."""

    __slots__ = ("container", "key")

    def __init__(self, container: list[Json] | dict[bytes, Json]) -> None:
        self.container = container
        self.key = b""


class Reader:
    """One connection's request, fed as it arrives; ``feed``/``finish`` return the outcome
    (a ``Document`` or an error reply) as soon as it is decided, else None."""

    __slots__ = ("_data", "_end", "_final", "_pos", "_state", "_stack", "_outcome", "_limit")

    def __init__(self, limit: int | None = MAX_REQUEST) -> None:
        self._data = b""
        self._end = 0  # where the C string ends: len(data), or the first NUL
        self._final = False  # no more bytes will count (EOF or a NUL seen)
        self._pos = 0  # start of the first token not yet consumed
        self._state = _START
        self._stack: list[_Frame] = []
        self._outcome: Outcome | None = None
        self._limit = limit  # None: no size limit (tests of the parser alone)

    @property
    def size(self) -> int:
        """Bytes received so far."""
        return len(self._data)

    def feed(self, chunk: bytes) -> Outcome | None:
        if self._outcome is not None:
            return self._outcome
        before = len(self._data)
        self._data += chunk
        if self._limit is not None and len(self._data) >= self._limit:
            self._outcome = ERR_TOO_LARGE  # slirp4netns: a full 4096-byte read
            return self._outcome
        nul = chunk.find(b"\0")
        if nul >= 0:
            self._end = before + nul
            self._final = True
        else:
            self._end = len(self._data)
        return self._run()

    def finish(self) -> Outcome:
        """End of input (EOF, or the client's time is up): decide with what is there."""
        if self._outcome is None:
            self._final = True
            self._run()
        return self._outcome if self._outcome is not None else ERR_PARSE

    def _run(self) -> Outcome | None:
        try:
            value = self._parse()
        except _Incomplete:
            if not self._final:
                return None
            self._outcome = ERR_PARSE
        except _Invalid:
            self._outcome = ERR_PARSE
        else:
            self._outcome = Document(value)
        return self._outcome

    def _parse(self) -> Json:
        """Advance from the last complete token; return the top-level value once complete."""
        data, end, stack = self._data, self._end, self._stack
        pos, state = self._pos, self._state
        if state == _START:
            if data.startswith(_BOM, 0, end):  # parson skips a BOM at the very start only
                pos = 3
            elif 0 < end < 3 and _BOM.startswith(data[:end]):
                raise _Incomplete
            state = _VALUE
        while True:
            # Every pass starts at a token boundary with the stack matching the state: a
            # later feed resumes from here when this one runs out of bytes.
            self._pos, self._state = pos, state
            pos = _WS.match(data, pos, end).end()  # type: ignore[union-attr]
            if pos >= end:
                raise _Incomplete
            c = data[pos]
            value: Json
            if state == _VALUE or state == _ARRAY_FIRST:
                if state == _ARRAY_FIRST and c == 0x5D:  # ']': empty array (RFC 8259 §5)
                    value, pos = stack.pop().container, pos + 1
                elif c == 0x7B or c == 0x5B:  # '{' or '['
                    if len(stack) >= MAX_NESTING:
                        raise _Invalid
                    stack.append(_Frame({} if c == 0x7B else []))
                    state = _OBJECT_FIRST if c == 0x7B else _ARRAY_FIRST
                    pos += 1
                    continue
                elif c == 0x22:  # '"'
                    value, pos = _string(data, pos, end)
                elif c == 0x2D or 0x30 <= c <= 0x39:  # '-' or a digit
                    value, pos = _number(data, pos, end, self._final)
                elif c in _LITERALS:
                    value, pos = _literal(data, pos, end)
                else:
                    raise _Invalid
            elif state == _OBJECT_FIRST or state == _KEY:
                if state == _OBJECT_FIRST and c == 0x7D:  # '}': empty object (RFC 8259 §4)
                    value, pos = stack.pop().container, pos + 1
                elif c == 0x22:
                    key, pos = _string(data, pos, end)
                    frame = stack[-1]
                    # parson refuses a key with an embedded NUL, and duplicate keys.
                    if b"\0" in key or key in frame.container:
                        raise _Invalid
                    frame.key = key
                    state = _COLON
                    continue
                else:
                    raise _Invalid
            elif state == _COLON:
                if c != 0x3A:  # ':'
                    raise _Invalid
                pos += 1
                state = _VALUE
                continue
            else:  # _NEXT: after a value inside a container
                container = stack[-1].container
                if c == 0x2C:  # ','
                    pos += 1
                    state = _VALUE if isinstance(container, list) else _KEY
                    continue
                if c != (0x5D if isinstance(container, list) else 0x7D):
                    raise _Invalid
                value, pos = stack.pop().container, pos + 1
            # A value is complete: it belongs to the enclosing container, or it is the request
            # (whatever follows it is ignored, as parson does).
            if not stack:
                return value
            frame = stack[-1]
            if isinstance(frame.container, list):
                frame.container.append(value)
            else:
                frame.container[frame.key] = value
            state = _NEXT


def _string(data: bytes, pos: int, end: int) -> tuple[bytes, int]:
    m = _STRING.match(data, pos, end)
    if m is not None:
        return _unescape(m.group(1)), m.end()
    stop = _STRING_START.match(data, pos, end).end()  # type: ignore[union-attr]
    if stop == end or _ESCAPE_START.fullmatch(data, stop, end):
        raise _Incomplete
    raise _Invalid  # a raw control character or a bad escape


def _unescape(raw: bytes) -> bytes:
    """The string's bytes: escapes decoded to UTF-8, everything else as it came."""
    if b"\\" not in raw:
        return raw
    out = bytearray()
    i = 0
    while True:
        j = raw.find(b"\\", i)
        if j < 0:
            out += raw[i:]
            return bytes(out)
        out += raw[i:j]
        if raw[j + 1] != 0x75:  # not 'u'
            out += _SIMPLE_ESCAPES[raw[j + 1]]
            i = j + 2
            continue
        cp = int(raw[j + 2 : j + 6], 16)
        i = j + 6
        if 0xD800 <= cp <= 0xDBFF:  # a high surrogate needs its low half next (RFC 8259 §7)
            if raw[i : i + 2] != b"\\u":
                raise _Invalid
            low = int(raw[i + 2 : i + 6], 16)
            if not 0xDC00 <= low <= 0xDFFF:
                raise _Invalid
            cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00)
            i += 6
        elif 0xDC00 <= cp <= 0xDFFF:
            raise _Invalid
        out += chr(cp).encode()


def _number(data: bytes, pos: int, end: int, final: bool) -> tuple[float, int]:
    # A number cut off by the end of the bytes may still grow ("1" -> "10", "1e" -> "1e5",
    # "0" -> "0x10"), so it waits for more unless there will be none.
    if not final and _NUMBERISH.match(data, pos, end).end() == end:  # type: ignore[union-attr]
        raise _Incomplete
    if _HEX.match(data, pos, end) or _INF_NAN.match(data, pos, end):
        raise _Invalid
    m = _NUMBER.match(data, pos, end)
    if m is None:
        return 0.0, pos  # strtod converted nothing: parson takes 0 and does not advance
    text = m.group()
    # parson's is_decimal: no leading zeros ("01", "-01", and also "0e5").
    if len(text) > 1 and text[0] == 0x30 and text[1] != 0x2E:
        raise _Invalid
    if len(text) > 2 and text.startswith(b"-0") and text[2] != 0x2E:
        raise _Invalid
    value = float(text)
    if value in (float("inf"), float("-inf")):  # strtod overflow (ERANGE, HUGE_VAL)
        raise _Invalid
    return value, m.end()


def _literal(data: bytes, pos: int, end: int) -> tuple[Json, int]:
    """true, false or null (RFC 8259 §3), compared as parson does: the word, then anything."""
    word, value = _LITERALS[data[pos]]
    stop = pos + len(word)
    if stop <= end and data.startswith(word, pos):
        return value, stop
    if end < stop and word.startswith(data[pos:end]):
        raise _Incomplete
    raise _Invalid
