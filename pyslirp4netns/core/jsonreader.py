"""A resumable JSON reader with parson's notion of JSON, sans-IO: bytes in, a value out.

slirp4netns parses API requests with parson, so this reader accepts and refuses what parson does
(measured against slirp4netns 1.2.0), not what RFC 8259 or Python's ``json`` would:

* the input is a C string: it ends at the first NUL byte; a UTF-8 BOM at the very start is
  skipped; whitespace is C ``isspace`` (``\\v`` and ``\\f`` too); anything after the first
  complete value is ignored (``{...} trailing`` works);
* duplicate keys anywhere are an error; a key containing ``\\u0000`` is an error;
  raw control characters in strings are errors, raw bytes >= 0x80 are taken as they are,
  escaped lone surrogates are errors;
* numbers are what ``strtod`` reads, then parson's checks: ``1.`` and ``-.5`` are numbers,
  ``01``, ``0e5``, ``-00``, hexadecimal, ``-inf``/``-nan`` and overflow (``1e999``) are errors;
  ``-`` alone reads as 0 without consuming anything (so it only works at the top level);
* nesting deeper than parson's 2048 levels is an error.

The parser is iterative (an explicit stack: 100k nested arrays cannot reach the recursion limit)
and resumable: ``Reader.feed`` keeps its place at the last complete token, so input that arrives
a byte at a time costs about the same as input that arrives at once, and the outcome is known
as soon as the bytes make a complete value (or can no longer become one).
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import TypeAlias

MAX_NESTING = 2048  # parson's limit on open arrays and objects

# A parsed JSON value. Strings stay bytes: parson does not check UTF-8, and neither may we.
Json: TypeAlias = "None | bool | float | bytes | list[Json] | dict[bytes, Json]"


@dataclass(frozen=True, slots=True)
class Document:
    """Input that parsed: its top-level value (of any JSON type)."""

    value: Json


class Rejected(enum.Enum):
    """Input that will never parse."""

    NOT_JSON = enum.auto()  # parson refuses it, or it ended before the value was complete
    TOO_LARGE = enum.auto()  # the reader's ``limit`` was reached first


Outcome: TypeAlias = "Document | Rejected"

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
    """One input, fed as it arrives; ``feed``/``finish`` return the outcome (a ``Document``
    or ``Rejected``) as soon as it is decided, else None.

    ``limit``: the size at which input is refused as ``TOO_LARGE`` before it is parsed, as a
    full read buffer is; None for no limit.
    """

    __slots__ = ("_data", "_end", "_final", "_pos", "_state", "_stack", "_outcome", "_limit")

    def __init__(self, limit: int | None = None) -> None:
        self._data = b""
        self._end = 0  # where the C string ends: len(data), or the first NUL
        self._final = False  # no more bytes will count (EOF or a NUL seen)
        self._pos = 0  # start of the first token not yet consumed
        self._state = _START
        self._stack: list[_Frame] = []
        self._outcome: Outcome | None = None
        self._limit = limit

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
            self._outcome = Rejected.TOO_LARGE
            return self._outcome
        nul = chunk.find(b"\0")
        if nul >= 0:
            self._end = before + nul
            self._final = True
        else:
            self._end = len(self._data)
        return self._run()

    def finish(self) -> Outcome:
        """End of input (EOF, or no more time to wait): decide with what is there."""
        if self._outcome is None:
            self._final = True
            self._run()
        return self._outcome if self._outcome is not None else Rejected.NOT_JSON

    def _run(self) -> Outcome | None:
        try:
            value = self._parse()
        except _Incomplete:
            if not self._final:
                return None
            self._outcome = Rejected.NOT_JSON
        except _Invalid:
            self._outcome = Rejected.NOT_JSON
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
            # A value is complete: it belongs to the enclosing container, or it is the input
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
