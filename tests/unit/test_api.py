"""The JSON API: slirp4netns 1.2.0's exact bytes (contract §5), the parser, and the server.

Expected replies in the tables below were measured against /usr/bin/slirp4netns 1.2.0 (the
compat suite, compat/test_api_compat.py, sends the same kind of rows to both binaries); rows
where we deliberately differ are marked and listed in the man page's COMPATIBILITY section.
"""

from __future__ import annotations

import ast
import errno
import json
import math
import random
import re
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from ipaddress import IPv4Network
from pathlib import Path
from typing import Any, cast

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pyslirp4netns.core
from pyslirp4netns.config import Config
from pyslirp4netns.core.api import (
    ADD_FAILED,
    ERR_GUEST_ADDR,
    ERR_GUEST_PORT,
    ERR_HOST_ADDR,
    ERR_HOST_PORT,
    ERR_ID,
    ERR_NO_EXECUTE,
    ERR_NOT_OBJECT,
    ERR_PARSE,
    ERR_PROTO,
    ERR_TOO_LARGE,
    ERR_UNKNOWN,
    ERROR_PREFIX,
    MAX_REQUEST,
    OK,
    AddHostfwd,
    Api,
    RemoveHostfwd,
)
from pyslirp4netns.core.jsonreader import Outcome, Reader, Rejected
from pyslirp4netns.shell.apiserver import ApiServer, Forward, bind_listener

CONFIG = Config(target="1")
CONFIG6 = Config(target="1", enable_ipv6=True)

# -- what real clients send (contract §5.4) ------------------------------------------------
PODMAN_ADD = (
    b'{"execute":"add_hostfwd","arguments":{"proto":"tcp","host_addr":"0.0.0.0",'
    b'"host_port":8080,"guest_addr":"","guest_port":80}}\n'
)
ROOTLESSKIT_ADD = (  # Go's json.Encoder: struct field order, compact, one newline
    b'{"execute":"add_hostfwd","arguments":{"proto":"tcp","host_addr":"127.0.0.1",'
    b'"host_port":8081,"guest_addr":"10.0.2.100","guest_port":80}}\n'
)
ROOTLESSKIT_ADD_UDP = (
    b'{"execute":"add_hostfwd","arguments":{"proto":"udp","host_addr":"",'
    b'"host_port":5353,"guest_addr":"","guest_port":5353}}\n'
)
ROOTLESSKIT_REMOVE_1 = b'{"execute":"remove_hostfwd","arguments":{"id":1}}\n'
LIST = b'{"execute":"list_hostfwd"}'


def add(proto: str = "tcp", port: object = 8080, **fields: Any) -> bytes:
    args: dict[str, Any] = {"proto": proto, "host_port": port, "guest_port": 80}
    args.update(fields)
    return json.dumps({"execute": "add_hostfwd", "arguments": args}).encode()


def raw_add(arguments: bytes) -> bytes:
    return b'{"execute":"add_hostfwd","arguments":{' + arguments + b"}}"


def remove(rule_id: object) -> bytes:
    return json.dumps({"execute": "remove_hostfwd", "arguments": {"id": rule_id}}).encode()


def entry(
    rule_id: int,
    proto: str = "tcp",
    host: str = "0.0.0.0",
    port: int = 8080,
    guest: str = "10.0.2.100",
    guest_port: int = 80,
) -> str:
    return (
        f'{{"id":{rule_id},"proto":"{proto}","host_addr":"{host}","host_port":{port},'
        f'"guest_addr":"{guest}","guest_port":{guest_port}}}'
    )


def entries(*items: str) -> bytes:
    return f'{{"entries":[{",".join(items)}]}}'.encode()


# -- a model of the host's ports, standing in for the kernel -------------------------------
class FakeSock:
    """What bind_listener would return; closing it frees the port in the Kernel."""

    def __init__(self, kernel: Kernel, key: tuple[str, int]) -> None:
        self.kernel = kernel
        self.key = key
        self.closed = False

    def fileno(self) -> int:
        return -1 if self.closed else 1000

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.kernel.bound.discard(self.key)


class Kernel:
    """One (proto, port) binds once, whatever the address; some ports are taken already."""

    def __init__(self, taken: tuple[tuple[str, int], ...] = ()) -> None:
        self.bound: set[tuple[str, int]] = set(taken)
        self.binds = 0

    def bind(self, command: AddHostfwd) -> socket.socket:
        key = (command.proto, command.host_port)
        if key in self.bound:
            raise OSError(errno.EADDRINUSE, "Address already in use")
        self.bound.add(key)
        self.binds += 1
        return cast(socket.socket, FakeSock(self, key))


class Shell:
    """The pure API plus the shell's part (bind, keep the socket by rule id, close), as
    apiserver does it."""

    def __init__(self, config: Config = CONFIG, kernel: Kernel | None = None) -> None:
        self.api = Api(config)
        self.kernel = kernel or Kernel()
        self.socks: dict[int, socket.socket] = {}

    def __call__(self, request: bytes) -> bytes:
        result = self.api.handle(request)
        if isinstance(result, bytes):
            return result
        if isinstance(result, RemoveHostfwd):
            self.socks.pop(result.rule.id).close()
            return result.reply
        assert isinstance(result, AddHostfwd)  # get_stats is the daemon's (test_observability)
        try:
            sock = self.kernel.bind(result)
        except OSError:
            return ADD_FAILED
        rule = self.api.rule(result)
        self.socks[rule.id] = sock
        return self.api.added(rule)


# == contract §5.3: every row =================================================================
ROWS_5_3 = [
    # not JSON, empty body, truncated, duplicate keys
    (b"hello", ERR_PARSE),
    (b"", ERR_PARSE),
    (b"  \n", ERR_PARSE),
    (b'{"execute":"list_hostfwd"', ERR_PARSE),
    (b'{"execute":"list_hostfwd","execute":"list_hostfwd"}', ERR_PARSE),
    (b'{"execute":"list_hostfwd","a":{"b":1,"b":2}}', ERR_PARSE),
    # valid JSON, not an object
    (b"[1,2]", ERR_NOT_OBJECT),
    (b'"str"', ERR_NOT_OBJECT),
    (b"null", ERR_NOT_OBJECT),
    (b"42", ERR_NOT_OBJECT),
    # no execute, or not a string
    (b"{}", ERR_NO_EXECUTE),
    (b'{"execute":42}', ERR_NO_EXECUTE),
    (b'{"execute":null}', ERR_NO_EXECUTE),
    (b'{"EXECUTE":"list_hostfwd"}', ERR_NO_EXECUTE),
    # unknown command (case-sensitive)
    (b'{"execute":"List_hostfwd"}', ERR_UNKNOWN),
    (b'{"execute":"add_hostfwd6"}', ERR_UNKNOWN),
    (b'{"execute":""}', ERR_UNKNOWN),
    # proto
    (add("TCP"), ERR_PROTO),
    (add("sctp"), ERR_PROTO),
    (add("bad"), ERR_PROTO),
    (add("tcp6"), ERR_PROTO),
    # host_addr (IPv6 literals are our extension, see below)
    (add(host_addr="localhost"), ERR_HOST_ADDR),
    (add(host_addr="127.1"), ERR_HOST_ADDR),
    (add(host_addr="127.0.0.01"), ERR_HOST_ADDR),
    (add(host_addr="1.2.3.256"), ERR_HOST_ADDR),
    (add(host_addr=" 127.0.0.1"), ERR_HOST_ADDR),
    # host_port missing, cast to 0 (exactly 0 is our ephemeral-port extension), wrong type
    (raw_add(b'"proto":"tcp","guest_port":80'), ERR_HOST_PORT),
    (add(port=0.5), ERR_HOST_PORT),
    (add(port=-0.5), ERR_HOST_PORT),
    (add(port="8087"), ERR_HOST_PORT),
    (add(port=True), ERR_HOST_PORT),
    (add(port=None), ERR_HOST_PORT),
    # guest_addr
    (add(guest_addr="fd00::100"), ERR_GUEST_ADDR),  # without --enable-ipv6
    (add(guest_addr="localhost"), ERR_GUEST_ADDR),
    (add(guest_addr="10.0.2"), ERR_GUEST_ADDR),
    # guest_port missing or 0
    (raw_add(b'"proto":"tcp","host_port":8080'), ERR_GUEST_PORT),
    (add(guest_port=0), ERR_GUEST_PORT),
    (add(guest_port="80"), ERR_GUEST_PORT),
    # remove: id missing, wrong type, unknown
    (b'{"execute":"remove_hostfwd"}', ERR_ID),
    (b'{"execute":"remove_hostfwd","arguments":{}}', ERR_ID),
    (b'{"execute":"remove_hostfwd","arguments":[1]}', ERR_ID),
    (remove("1"), ERR_ID),
    (remove(99), ERR_ID),
    (remove(1e10), ERR_ID),
    # 4096 bytes or more
    (LIST + b" " * (MAX_REQUEST - len(LIST)), ERR_TOO_LARGE),
    (b"x" * MAX_REQUEST, ERR_TOO_LARGE),
    (b"{" * (1 << 20), ERR_TOO_LARGE),
]


@pytest.mark.parametrize(("request_", "reply"), ROWS_5_3, ids=lambda v: repr(v)[:60])
def test_error_rows_of_contract_5_3(request_: bytes, reply: bytes) -> None:
    shell = Shell()
    assert shell(request_) == reply
    assert shell.api.rules == {} and shell.kernel.binds == 0


def test_bind_failure_is_slirp_add_hostfwd_failed() -> None:
    shell = Shell(kernel=Kernel(taken=(("tcp", 8080),)))
    assert shell(add(port=8080)) == ADD_FAILED
    assert shell(add("udp", 8080)) == b'{"return":{"id":1}}'  # tcp and udp are separate
    assert shell(add("udp", 8080)) == ADD_FAILED  # the same port twice
    assert shell(LIST) == entries(entry(1, "udp"))


def test_remove_has_no_slirp_remove_hostfwd_failed_row() -> None:
    """slirp4netns's last row needs libslirp to lose a socket; ours owns it, so remove of a
    listed id always succeeds."""
    shell = Shell()
    assert shell(add()) == b'{"return":{"id":1}}'
    assert shell(remove(1)) == OK
    assert shell.kernel.bound == set()


# == contract §5.2: the commands ==============================================================
def test_reply_shapes_and_ids_from_1_never_reused() -> None:
    shell = Shell()
    assert shell(LIST) == b'{"entries":[]}'
    assert shell(add(port=8080)) == b'{"return":{"id":1}}'
    assert shell(add("udp", 8080, host_addr="127.0.0.1", guest_addr="10.0.2.5", guest_port=53))
    assert shell(add(port=8080)) == ADD_FAILED  # a failed add takes no id
    assert shell(add(port=8082)) == b'{"return":{"id":3}}'
    assert shell(LIST) == entries(
        entry(1), entry(2, "udp", "127.0.0.1", 8080, "10.0.2.5", 53), entry(3, port=8082)
    )
    assert shell(remove(3)) == OK
    assert shell(remove(3)) == ERR_ID
    assert shell(add(port=8083)) == b'{"return":{"id":4}}'  # 3 is gone for good
    assert shell(remove(1)) == OK
    assert shell(LIST) == entries(
        entry(2, "udp", "127.0.0.1", 8080, "10.0.2.5", 53), entry(4, port=8083)
    )
    assert not any(r.endswith(b"\n") for r in (OK, ERR_PARSE, shell(LIST)))


def test_numbers_are_cast_to_c_int() -> None:
    shell = Shell()
    assert shell(add(port=8088.9, guest_port=80.5)) == b'{"return":{"id":1}}'
    assert shell(add(port=65535.99)) == b'{"return":{"id":2}}'
    assert shell(LIST) == entries(entry(1, port=8088, guest_port=80), entry(2, port=65535))
    assert shell(remove(1.9)) == OK  # removes 1
    assert shell(remove(-0.9)) == ERR_ID  # 0
    assert shell(remove(2**32 + 2)) == ERR_ID  # INT_MIN, not 2
    assert shell(LIST) == entries(entry(2, port=65535))


@pytest.mark.parametrize(
    "host",
    [None, "", 5, None, True, [], {}, "\u0000127.0.0.1"],
    ids=["missing", "empty", "number", "null", "bool", "array", "object", "nul-first"],
)
def test_missing_or_non_string_host_addr_is_0_0_0_0(host: object) -> None:
    shell = Shell()
    request = add() if host is None else add(host_addr=host)
    assert shell(request) == b'{"return":{"id":1}}'
    assert shell(LIST) == entries(entry(1))


def test_missing_or_empty_guest_addr_is_n_plus_100() -> None:
    shell = Shell(Config(target="1", cidr=IPv4Network("10.7.0.0/24")))
    assert shell(add(port=1)) == b'{"return":{"id":1}}'
    assert shell(add(port=2, guest_addr="")) == b'{"return":{"id":2}}'
    assert shell(add(port=3, guest_addr=7)) == b'{"return":{"id":3}}'  # non-string: missing
    assert shell(add(port=4, guest_addr="0.0.0.0")) == b'{"return":{"id":4}}'  # listed as is
    assert shell(LIST) == entries(
        entry(1, port=1, guest="10.7.0.100"),
        entry(2, port=2, guest="10.7.0.100"),
        entry(3, port=3, guest="10.7.0.100"),
        entry(4, port=4, guest="0.0.0.0"),
    )


def test_strings_are_c_strings() -> None:
    shell = Shell()
    assert shell(b'{"execute":"list_hostfwd\\u0000x"}') == b'{"entries":[]}'
    assert shell(add("tcp\u0000x", host_addr="127.0.0.1\u0000x")) == b'{"return":{"id":1}}'
    assert shell(add(port=2, guest_addr="10.0.2.5\u0000zz")) == b'{"return":{"id":2}}'
    assert shell(LIST) == entries(entry(1, host="127.0.0.1"), entry(2, port=2, guest="10.0.2.5"))


def test_list_ignores_arguments_and_unknown_keys_are_ignored() -> None:
    shell = Shell()
    assert shell(b'{"execute":"list_hostfwd","arguments":"x","zzz":[1]}') == b'{"entries":[]}'
    request = raw_add(b'"proto":"tcp","host_port":1,"guest_port":2,"x":{}') + b""
    assert shell(b'{"arguments.proto":"x",' + request[1:]) == b'{"return":{"id":1}}'


def test_checks_run_in_slirp4netns_order() -> None:
    """The first bad field names the error: proto, host_addr, host_port, guest_addr, guest_port."""
    shell = Shell()
    all_bad = raw_add(b'"proto":"x","host_addr":"x","host_port":0,"guest_addr":"x","guest_port":0')
    assert shell(all_bad) == ERR_PROTO
    assert shell(all_bad.replace(b'"x","host_addr"', b'"tcp","host_addr"')) == ERR_HOST_ADDR
    assert shell(raw_add(b'"proto":"tcp","host_port":0.5,"guest_addr":"x"')) == ERR_HOST_PORT
    assert shell(raw_add(b'"proto":"tcp","host_port":1,"guest_addr":"x"')) == ERR_GUEST_ADDR
    assert shell(raw_add(b'"proto":"tcp","host_port":1,"guest_port":0')) == ERR_GUEST_PORT


# == the parser: parson's JSON as slirp4netns 1.2.0 accepts it ================================
L = b'{"execute":"list_hostfwd"'
LISTED = b'{"entries":[]}'
PARSER_ROWS = [
    # framing: C string, BOM, isspace, trailing garbage
    (L + b"}\x00garbage", LISTED),
    (L + b"} trailing", LISTED),
    (L + b"}{" + L + b"}", LISTED),
    (b"\xef\xbb\xbf" + L + b"}", LISTED),
    (b" \xef\xbb\xbf" + L + b"}", ERR_PARSE),
    (b"\v\f\r\n\t " + L + b'\v,\v"x"\v:\v1\v}', LISTED),
    (b"/*c*/" + L + b"}", ERR_PARSE),
    (L + b"\x00}", ERR_PARSE),
    # objects and arrays
    (L + b",}", ERR_PARSE),
    (L + b',"a":[1,2,]}', ERR_PARSE),
    (L + b',"a":[1 2]}', ERR_PARSE),
    (L + b',"a":[],"b":{},"c":[[],{"d":null}]}', LISTED),
    (b"[" * 2047 + b"]" * 2047, ERR_NOT_OBJECT),
    (L + b',"a":' + b"[" * 2030 + b"]" * 2030 + b"}", LISTED),
    # strings
    (L + b',"x":"\xff"}', LISTED),  # raw bytes >= 0x80: not checked
    (L + b',"x":"\xc0\x80\xed\xa0\x80"}', LISTED),
    (L + b',"\xff":1}', LISTED),
    (L + b',"x":"\x7f"}', LISTED),
    (L + b',"x":"\x01"}', ERR_PARSE),  # raw control characters are not
    (L + b',"x":"\t"}', ERR_PARSE),
    (L + b',"x":"\\/\\b\\f\\n\\r\\t\\"\\\\"}', LISTED),
    (L + b',"x":"\\x"}', ERR_PARSE),
    (L + b',"x":"\\U0041"}', ERR_PARSE),
    (L + b',"x":"\\u12"}', ERR_PARSE),
    (L + b',"x":"\\u004G"}', ERR_PARSE),
    (L + b',"x":"\\u00e9\\uD83D\\uDE00"}', LISTED),
    (L + b',"x":"\\ud800"}', ERR_PARSE),
    (L + b',"x":"\\ud83dx"}', ERR_PARSE),
    (L + b',"x":"\\ud83d\\u0041"}', ERR_PARSE),
    (L + b',"x":"\\udc00\\ud800"}', ERR_PARSE),
    (L + b',"x":"\\u0000"}', LISTED),
    (b'{"execute\\u0000":"list_hostfwd"}', ERR_PARSE),  # NUL in a key
    (b'{"exe\\u0063ute":"list_hostfwd"}', LISTED),
    # numbers: what strtod reads, then parson's checks
    (L + b',"x":1.}', LISTED),
    (L + b',"x":1.e5}', LISTED),
    (L + b',"x":-.5}', LISTED),
    (L + b',"x":-0.}', LISTED),
    (L + b',"x":0.0e5}', LISTED),
    (L + b',"x":1E+2}', LISTED),
    (L + b',"x":5e-324}', LISTED),
    (L + b',"x":1e-999}', LISTED),
    (L + b',"x":01}', ERR_PARSE),
    (L + b',"x":-00}', ERR_PARSE),
    (L + b',"x":0e5}', ERR_PARSE),
    (L + b',"x":-0e1}', ERR_PARSE),
    (L + b',"x":0x10}', ERR_PARSE),
    (L + b',"x":+1}', ERR_PARSE),
    (L + b',"x":.5}', ERR_PARSE),
    (L + b',"x":1e}', ERR_PARSE),
    (L + b',"x":1e+}', ERR_PARSE),
    (L + b',"x":-}', ERR_PARSE),
    (L + b',"x":NaN}', ERR_PARSE),
    (L + b',"x":-nan}', ERR_PARSE),
    (L + b',"x":-inf}', ERR_PARSE),
    (L + b',"x":-Infinity}', ERR_PARSE),
    (L + b',"x":1e999}', ERR_PARSE),
    (L + b',"x":' + b"1" * 400 + b"}", ERR_PARSE),
    (L + b',"x":trueish}', ERR_PARSE),
    # top-level values other than objects
    (b"-", ERR_NOT_OBJECT),
    (b"-x", ERR_NOT_OBJECT),
    (b"0x", ERR_NOT_OBJECT),
    (b"1e", ERR_NOT_OBJECT),
    (b"trueish", ERR_NOT_OBJECT),
    (b"0x10", ERR_PARSE),
    (b"tru", ERR_PARSE),
    (b"nul", ERR_PARSE),
    (b"[", ERR_PARSE),
    (b"{", ERR_PARSE),
    (b'{"execute"', ERR_PARSE),
]


@pytest.mark.parametrize(("request_", "reply"), PARSER_ROWS, ids=lambda v: repr(v)[:60])
def test_parser_rows_measured_on_slirp4netns(request_: bytes, reply: bytes) -> None:
    assert Shell()(request_) == reply


def test_4095_bytes_work_and_4096_do_not() -> None:
    shell = Shell()
    padded = LIST + b" " * (MAX_REQUEST - 1 - len(LIST))
    assert len(padded) == 4095 and shell(padded) == LISTED
    assert shell(padded + b" ") == ERR_TOO_LARGE


def test_parser_survives_100k_nesting_without_a_size_limit() -> None:
    for text in (b"[" * 100_000 + b"]" * 100_000, b'{"a":' * 100_000 + b"1" + b"}" * 100_000):
        reader = Reader(limit=None)
        assert reader.feed(text) == Rejected.NOT_JSON  # parson's 2048 levels, no RecursionError


def test_python_json_extensions_are_refused() -> None:
    """Python's json would take NaN, Infinity and unbounded ints; parson does not."""
    for value in (b"NaN", b"Infinity", b"-Infinity", b"9" * 5000):
        reader = Reader(limit=None)
        assert reader.feed(L + b',"x":' + value + b"}") == Rejected.NOT_JSON


# -- incremental reading ---------------------------------------------------------------------
def first_outcome(chunks: list[bytes]) -> Outcome:
    reader = Reader(limit=MAX_REQUEST)
    for chunk in chunks:
        outcome = reader.feed(chunk)
        if outcome is not None:
            return outcome
    return reader.finish()


def decide(outcome: Outcome) -> bytes:
    """The reply an outcome gives on a fresh table."""
    result = Api(CONFIG).execute(outcome)
    return result if isinstance(result, bytes) else b"command"


def test_a_request_is_complete_at_its_last_byte_without_eof() -> None:
    for request in (LIST, PODMAN_ADD.strip(), ROOTLESSKIT_REMOVE_1.strip(), b"[1]", b'"s"'):
        reader = Reader()
        for i in range(len(request) - 1):
            assert reader.feed(request[i : i + 1]) is None, request[: i + 1]
        assert reader.feed(request[-1:]) is not None


def test_a_hopeless_prefix_is_decided_at_once() -> None:
    for prefix in (b"}", b"x", b'{"a" 1', b'{"a":1,}', b'["\x01', b'{"a":01,', b"\xef\xbb{"):
        assert Reader().feed(prefix) == Rejected.NOT_JSON, prefix


def test_a_nul_ends_the_request() -> None:
    reader = Reader()
    assert reader.feed(b'{"execute":"li\x00') == Rejected.NOT_JSON  # nothing after a NUL counts


def test_numbers_literals_and_bom_wait_for_more() -> None:
    for prefix in (b"1", b"-", b'{"a":1', b'{"a":1e', b"[tr", b"nu", b"\xef", b"\xef\xbb", b" "):
        assert Reader().feed(prefix) is None, prefix


@given(
    st.binary(max_size=300) | st.sampled_from([PODMAN_ADD, ROOTLESSKIT_ADD, LIST, b"0x10"]),
    st.lists(st.integers(0, 300), max_size=8),
)
@settings(max_examples=1500, deadline=None)
def test_any_split_gives_the_same_reply_as_one_piece(data: bytes, cuts: list[int]) -> None:
    points = sorted({min(c, len(data)) for c in cuts})
    chunks = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    whole = first_outcome([data] if data else [])
    assert decide(first_outcome([c for c in chunks if c])) == decide(whole)


# == deliberate fixes =========================================================================
@pytest.mark.parametrize(
    "request_",
    [
        raw_add(b'"host_port":8080,"guest_port":80'),  # no proto
        raw_add(b'"proto":6,"host_port":8080,"guest_port":80'),
        raw_add(b'"proto":null,"host_port":8080,"guest_port":80'),
        raw_add(b'"proto":["tcp"],"host_port":8080,"guest_port":80'),
        b'{"execute":"add_hostfwd"}',  # no arguments
        b'{"execute":"add_hostfwd","arguments":"x"}',
        b'{"execute":"add_hostfwd","arguments":["tcp"]}',
    ],
)
def test_fix_missing_or_non_string_proto_is_the_proto_error(request_: bytes) -> None:
    """slirp4netns strcmp()s a NULL here and dies of SIGSEGV."""
    assert Shell()(request_) == ERR_PROTO


@pytest.mark.parametrize(
    ("port", "reply_host", "reply_guest"),
    [
        (70000, ERR_HOST_PORT, ERR_GUEST_PORT),  # slirp4netns binds 4464
        (65536, ERR_HOST_PORT, ERR_GUEST_PORT),  # slirp4netns binds a random port
        (-1, ERR_HOST_PORT, ERR_GUEST_PORT),  # slirp4netns binds 65535
        (1e10, ERR_HOST_PORT, ERR_GUEST_PORT),  # INT_MIN: slirp4netns binds a random port
        (-(2**31), ERR_HOST_PORT, ERR_GUEST_PORT),
    ],
)
def test_fix_ports_outside_1_to_65535_are_port_errors(
    port: float, reply_host: bytes, reply_guest: bytes
) -> None:
    shell = Shell()
    assert shell(add(port=port)) == reply_host
    assert shell(add(guest_port=port)) == reply_guest
    assert shell.kernel.binds == 0


# == IPv6 extension ===========================================================================
def test_ipv6_host_addr_binds_ipv6_and_lists_canonically() -> None:
    api = Api(CONFIG)
    command = api.handle(add(host_addr="0:0::1"))
    assert command == AddHostfwd("tcp", "::1", 8080, "10.0.2.100", 80, 6)
    assert api.handle(add(host_addr="127.0.0.1")) == AddHostfwd(
        "tcp", "127.0.0.1", 8080, "10.0.2.100", 80, 4
    )
    shell = Shell()
    assert shell(add(host_addr="::")) == b'{"return":{"id":1}}'
    assert shell(add("udp", 53, host_addr="::FFFF:127.0.0.1")) == b'{"return":{"id":2}}'
    assert shell(LIST) == entries(entry(1, host="::"), entry(2, "udp", "::ffff:127.0.0.1", 53))


def test_ipv6_guest_addr_needs_enable_ipv6() -> None:
    assert Shell(CONFIG)(add(guest_addr="fd00::100")) == ERR_GUEST_ADDR
    shell = Shell(CONFIG6)
    assert shell(add(guest_addr="FD00:0::0100")) == b'{"return":{"id":1}}'
    assert shell(LIST) == entries(entry(1, guest="fd00::100"))


@pytest.mark.parametrize("text", ["fe80::1%lo", "::1/128", "[::1]", ":::1", "fd00::100::1", "::g"])
def test_not_an_ipv6_literal(text: str) -> None:
    assert Shell(CONFIG6)(add(host_addr=text)) == ERR_HOST_ADDR
    assert Shell(CONFIG6)(add(guest_addr=text)) == ERR_GUEST_ADDR


def glibc_address(text: str) -> str | None:
    """host_addr as slirp4netns's inet_pton reads it and inet_ntop lists it (IPv6: ours)."""
    text = text or "0.0.0.0"  # missing or "" is 0.0.0.0
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            return socket.inet_ntop(family, socket.inet_pton(family, text))
        except (OSError, ValueError):
            pass
    return None


HEXTET = st.sampled_from(["0", "0000", "ffff", "FFFF", "1", "00ab"]) | st.integers(0, 0xFFFF).map(
    "{:x}".format
)
QUAD = st.lists(
    st.integers(0, 256).map(str) | st.sampled_from(["00", "01", ""]), min_size=3, max_size=5
).map(".".join)
ADDRESS_TEXT = st.one_of(
    st.lists(HEXTET, min_size=1, max_size=9).map(":".join),
    st.tuples(st.lists(HEXTET, max_size=4), st.lists(HEXTET, max_size=4)).map(
        lambda t: ":".join(t[0]) + "::" + ":".join(t[1])
    ),
    st.tuples(st.sampled_from(["::", "::ffff:", "::1:", "0:0:0:0:0:ffff:", "1::"]), QUAD).map(
        "".join
    ),
    QUAD,
    st.text("0123456789abcdefABCDEF:.% ", max_size=24),
)


@given(ADDRESS_TEXT)
@settings(max_examples=3000, deadline=None)
def test_host_addr_is_read_and_listed_as_inet_pton_and_inet_ntop_do(text: str) -> None:
    shell = Shell()
    expected = glibc_address(text)
    if expected is None:
        assert shell(add(host_addr=text)) == ERR_HOST_ADDR, text
    else:
        assert shell(add(host_addr=text)) == b'{"return":{"id":1}}', text
        assert shell(LIST) == entries(entry(1, host=expected)), text


# == real clients (contract §5.4) =============================================================
def test_podman_sequence() -> None:
    shell = Shell()
    assert shell(PODMAN_ADD) == b'{"return":{"id":1}}'
    reply = json.loads(shell(PODMAN_ADD.replace(b"8080", b"8081")))
    assert "error" not in reply and reply["return"]["id"] == 2
    assert "error" in json.loads(shell(PODMAN_ADD))  # port taken: podman sees the error key


def test_rootlesskit_sequence() -> None:
    shell = Shell()
    assert shell(ROOTLESSKIT_ADD) == b'{"return":{"id":1}}'
    assert shell(ROOTLESSKIT_ADD_UDP) == b'{"return":{"id":2}}'
    assert shell(ROOTLESSKIT_REMOVE_1) == OK
    assert shell(ROOTLESSKIT_REMOVE_1) == ERR_ID
    assert shell(LIST) == entries(entry(2, "udp", port=5353, guest_port=5353))


# == hostile input: always an error, the table unchanged, no listener =========================
VALID = [PODMAN_ADD, ROOTLESSKIT_ADD, ROOTLESSKIT_ADD_UDP, remove(2) + b"\n", LIST + b"\n"]
BAD_UTF8 = [b"\xff", b"\xc0", b"\x80", b"\xc0\x80", b"\xed\xa0\x80", b"\xf5\x80\x80\x80"]
# Spans where a corrupted byte leaves a valid request: these two keys have defaults.
_DEFAULTED_KEYS = re.compile(rb'"(?:host_addr|guest_addr)"')


def seeded() -> Shell:
    """A table with ids 1..3 (8090/tcp, 8091/udp, 8092/tcp) that malformed requests must keep."""
    shell = Shell()
    for request in (add(port=8090), add("udp", 8091), add(port=8092)):
        assert shell(request).startswith(b'{"return":')
    return shell


@st.composite
def corrupted(draw: st.DrawFn) -> bytes:
    request = draw(st.sampled_from(VALID))
    end = request.rindex(b"}")  # after the value, garbage is ignored: stay inside it
    keep = {i for m in _DEFAULTED_KEYS.finditer(request) for i in range(m.start() + 1, m.end())}
    i = draw(st.integers(0, end).filter(lambda i: i not in keep))
    bad = draw(st.sampled_from(BAD_UTF8))
    if draw(st.booleans()):
        return request[:i] + bad + request[i + 1 :]
    return request[:i] + bad + request[i:]


@st.composite
def truncated(draw: st.DrawFn) -> bytes:
    request = draw(st.sampled_from(VALID))
    return request[: draw(st.integers(0, request.rindex(b"}")))]


def json_text(value: object) -> bytes:
    return json.dumps(value).encode()


_not_an_address = st.text(min_size=1).filter(
    lambda s: bool(s.split("\0")[0]) and re.search(r"[^0-9a-fA-F.:]", s.split("\0")[0]) is not None
)
_not_a_port = st.one_of(
    st.integers(max_value=0).map(str),
    st.integers(min_value=65536).map(str),
    st.floats(allow_nan=False, allow_infinity=False)
    .filter(lambda f: not 1 <= math.trunc(f) <= 65535)
    .map(repr),
    st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999", "-1e999", "0.99", "-0"]),
    st.text().map(lambda s: json.dumps(s)),
    st.sampled_from(["true", "false", "null", "[]", "{}", "[8080]", '{"a":8080}']),
).map(str.encode)


def _is_zero(text: bytes) -> bool:
    """A JSON number equal to 0: host_port's ephemeral-port extension, not an error."""
    try:
        value = json.loads(text)
    except ValueError:
        return False
    return type(value) in (int, float) and value == 0


_not_a_host_port = _not_a_port.filter(lambda text: not _is_zero(text))
_not_a_proto = st.one_of(
    st.text().filter(lambda s: s.split("\0")[0] not in ("tcp", "udp")).map(json.dumps),
    st.sampled_from(["6", "17", "true", "null", "[]", '["tcp"]', "{}"]),
).map(str.encode)
_not_an_id = st.one_of(
    st.integers().filter(lambda i: not 1 <= i <= 3).map(str),
    st.floats(allow_nan=False, allow_infinity=False)
    .filter(lambda f: not (-(2**31) < f < 2**31 and 1 <= math.trunc(f) <= 3))
    .map(repr),
    st.text().map(json.dumps),
    st.sampled_from(["true", "null", "[1]", '{"id":1}']),
).map(str.encode)


@st.composite
def wrong_types(draw: st.DrawFn) -> bytes:
    field = draw(
        st.sampled_from(
            ["proto", "host_addr", "host_port", "guest_addr", "guest_port", "args", "exec", "id"]
        )
    )
    fields = {
        b"proto": b'"tcp"',
        b"host_addr": b'"127.0.0.1"',
        b"host_port": b"8093",
        b"guest_addr": b'""',
        b"guest_port": b"80",
    }
    if field == "id":
        return b'{"execute":"remove_hostfwd","arguments":{"id":' + draw(_not_an_id) + b"}}"
    if field == "exec":
        value = draw(
            st.one_of(
                st.text().filter(
                    lambda s: (
                        s.split("\0")[0] not in ("add_hostfwd", "list_hostfwd", "remove_hostfwd")
                    )
                ),
                st.integers(),
                st.none(),
                st.lists(st.integers(), max_size=3),
            )
        )
        return b'{"execute":' + json_text(value) + b',"arguments":{}}'
    if field == "args":
        args = draw(st.one_of(st.text(), st.integers(), st.none(), st.lists(st.text())))
        return b'{"execute":"add_hostfwd","arguments":' + json_text(args) + b"}"
    key = field.encode()
    if field == "proto":
        fields[key] = draw(_not_a_proto)
    elif field.endswith("addr"):
        fields[key] = json_text(draw(_not_an_address))
    else:
        fields[key] = draw(_not_a_host_port if field == "host_port" else _not_a_port)
    body = b",".join(b'"' + k + b'":' + v for k, v in fields.items())
    return b'{"execute":"add_hostfwd","arguments":{' + body + b"}}"


@st.composite
def deeply_nested(draw: st.DrawFn) -> bytes:
    n = draw(st.integers(1, 120_000))
    opener = draw(st.sampled_from([b"[", b'{"a":', b'[{"b":']))
    where = draw(st.sampled_from(["alone", "port", "unbalanced"]))
    if where == "alone":
        return opener * n
    if where == "port":  # balanced: a container is never a port
        closer = {b"[": b"]", b'{"a":': b"}", b'[{"b":': b"}]"}[opener]
        inner = opener * n + b"1" + closer * n
        return raw_add(b'"proto":"tcp","host_port":' + inner + b',"guest_port":80')
    return LIST[:-1] + b',"x":' + opener * n + b"}"


@st.composite
def huge(draw: st.DrawFn) -> bytes:
    n = draw(st.integers(MAX_REQUEST, 1 << 20))
    return LIST[:-1] + b',"pad":"' + b"x" * n + b'"}'


MALFORMED = st.one_of(
    truncated(),
    corrupted(),
    st.binary(max_size=600),
    wrong_types(),
    deeply_nested(),
    huge(),
)


@given(MALFORMED)
@settings(
    max_examples=10_500,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
def test_malformed_requests_always_get_an_error_and_change_nothing(request_: bytes) -> None:
    shell = seeded()
    before = (shell(LIST), dict(shell.api.rules), shell.api.next_id, set(shell.kernel.bound))
    binds = shell.kernel.binds
    result = shell.api.handle(request_)
    assert isinstance(result, bytes), f"{request_[:200]!r} -> {result!r}"
    assert result.startswith(ERROR_PREFIX), f"{request_[:200]!r} -> {result!r}"
    after = (shell(LIST), dict(shell.api.rules), shell.api.next_id, set(shell.kernel.bound))
    assert after == before and shell.kernel.binds == binds


def test_every_truncation_of_valid_requests_is_a_parse_error() -> None:
    for request in [*VALID, add(host_addr="::1"), ROOTLESSKIT_REMOVE_1]:
        end = request.rindex(b"}")
        for n in range(end + 1):
            shell = seeded()
            assert shell(request[:n]) == ERR_PARSE, request[:n]
            assert shell.kernel.binds == 3


# == 256 clients x 100 mixed requests against a model (pure level) ============================
PORTS = range(20000, 20400)


def mixed_request(rng: random.Random, mine: list[int]) -> tuple[str, bytes, Any]:
    kind = rng.choices(["add", "list", "remove", "remove-other"], weights=[5, 2, 3, 1])[0]
    if kind == "add":
        spec = (rng.choice(["tcp", "udp"]), rng.choice(PORTS), rng.randint(1, 65535))
        return "add", add(spec[0], spec[1], host_addr="127.0.0.1", guest_port=spec[2]), spec
    if kind == "list":
        return "list", LIST, None
    if kind == "remove" and mine:
        rule_id = mine.pop(rng.randrange(len(mine)))
        return "remove", remove(rule_id), rule_id
    rule_id = rng.randint(1, 30000)
    return "remove", remove(rule_id), rule_id


class Model:
    """The table as the replies say it must be."""

    def __init__(self) -> None:
        self.rules: dict[int, tuple[str, int, int]] = {}
        self.removed: set[int] = set()
        self.ids: list[int] = []

    def record(self, kind: str, arg: Any, reply: bytes) -> int | None:
        if kind == "add" and reply.startswith(b'{"return":{"id":'):
            rule_id = int(json.loads(reply)["return"]["id"])
            assert rule_id not in self.ids, f"id {rule_id} given twice"
            self.ids.append(rule_id)
            self.rules[rule_id] = arg
            return rule_id
        if kind == "add":
            assert reply == ADD_FAILED, reply
        elif kind == "remove" and reply == OK:
            assert arg in self.rules, f"removed {arg}, which was never live"
            del self.rules[arg]
            self.removed.add(arg)
        elif kind == "remove":
            assert reply == ERR_ID and arg not in self.rules, (arg, reply)
        else:
            assert reply.startswith(b'{"entries":['), reply
        return None

    def listing(self) -> bytes:
        return entries(
            *(
                entry(i, proto, "127.0.0.1", port, "10.0.2.100", guest_port)
                for i, (proto, port, guest_port) in sorted(self.rules.items())
            )
        )


def test_model_256_clients_x_100_mixed_requests() -> None:
    rng = random.Random(256)
    shell = Shell()
    model = Model()
    live: set[tuple[str, int]] = set()
    clients: list[list[int]] = [[] for _ in range(256)]
    steps = [100] * 256
    while any(steps):
        c = rng.choice([i for i, n in enumerate(steps) if n])
        steps[c] -= 1
        kind, request, arg = mixed_request(rng, clients[c])
        reply = shell(request)
        # The model of the kernel says what the reply must be, exactly.
        if kind == "add":
            expect_ok = (arg[0], arg[1]) not in live
            assert reply.startswith(b'{"return"') == expect_ok, (arg, reply)
            if expect_ok:
                live.add((arg[0], arg[1]))
        elif kind == "remove" and arg in model.rules:
            assert reply == OK
            live.discard(model.rules[arg][:2])
        elif kind == "list":
            assert reply == model.listing()
        new_id = model.record(kind, arg, reply)
        if new_id is not None:
            assert new_id == len(model.ids)  # ids count successful adds, from 1
            clients[c].append(new_id)
    assert shell(LIST) == model.listing()
    assert shell.kernel.bound == live
    assert len(model.ids) > 5000 and len(model.removed) > 3000


# == the server, in-process over real unix sockets (forwards bound by the model kernel) ========
class Loop:
    """The daemon's epoll loop in miniature."""

    def __init__(self) -> None:
        self.epoll = select.epoll()
        self.handlers: dict[int, Callable[[int], str | None]] = {}

    def watch(self, fd: int, events: int, handler: Callable[[int], str | None]) -> None:
        self.epoll.register(fd, events)
        self.handlers[fd] = handler

    def unwatch(self, fd: int) -> None:
        self.handlers.pop(fd, None)
        try:
            self.epoll.unregister(fd)
        except OSError:
            pass

    def turn(self, timeout: float = 0.0) -> None:
        for fd, events in self.epoll.poll(timeout):
            handler = self.handlers.get(fd)
            if handler is not None:
                handler(events)

    def spin(self, times: int = 5) -> None:
        for _ in range(times):
            self.turn(0.01)


class Recorder:
    """A Forwarding that notes what it was asked, and checks the socket is still open."""

    def __init__(self, fail: bool = False) -> None:
        self.calls: list[tuple[str, int]] = []
        self.fail = fail

    def listen(self, forward: Forward) -> None:
        assert forward.sock.fileno() != -1
        self.calls.append(("listen", forward.rule.id))
        if self.fail:
            raise RuntimeError("no data path today")

    def unlisten(self, forward: Forward) -> None:
        assert forward.sock.fileno() != -1, "unlisten must come before the close"
        self.calls.append(("unlisten", forward.rule.id))


class Served:
    def __init__(self, path: Path, **kwargs: Any) -> None:
        self.path = str(path)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(self.path)
        self.listener.listen(1024)
        self.listener.setblocking(False)
        self.loop = Loop()
        self.kernel = Kernel()
        kwargs.setdefault("bind", self.kernel.bind)
        self.server = ApiServer(
            self.listener, Api(CONFIG), self.loop.watch, self.loop.unwatch, **kwargs
        )
        self.server.start()

    def connect(self) -> socket.socket:
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.settimeout(5)
        client.connect(self.path)
        return client

    def close(self) -> None:
        self.server.close()
        self.listener.close()
        self.loop.epoll.close()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Callable[..., Served]]:
    made: list[Served] = []

    def make(**kwargs: Any) -> Served:
        made.append(Served(tmp_path / f"api{len(made)}.sock", **kwargs))
        return made[-1]

    try:
        yield make
    finally:
        for s in made:
            s.close()


def read_all(client: socket.socket) -> bytes:
    data = b""
    while chunk := client.recv(65536):
        data += chunk
    return data


def test_server_answers_after_half_close(served: Callable[..., Served]) -> None:
    s = served()
    with s.connect() as client:
        client.sendall(PODMAN_ADD)
        client.shutdown(socket.SHUT_WR)
        s.loop.spin()
        assert read_all(client) == b'{"return":{"id":1}}'


def test_server_answers_without_half_close(served: Callable[..., Served]) -> None:
    s = served()
    with s.connect() as client:
        client.sendall(LIST)
        s.loop.spin()
        assert read_all(client) == LISTED


def test_server_waits_for_the_rest_of_a_split_request(served: Callable[..., Served]) -> None:
    s = served()
    with s.connect() as client:
        client.sendall(PODMAN_ADD[:30])
        s.loop.spin()
        client.setblocking(False)
        with pytest.raises(BlockingIOError):
            client.recv(100)  # not answered yet: slirp4netns would say "cannot parse JSON"
        client.setblocking(True)
        client.sendall(PODMAN_ADD[30:])
        s.loop.spin()
        assert read_all(client) == b'{"return":{"id":1}}'


def test_server_a_slow_client_does_not_hold_up_others(served: Callable[..., Served]) -> None:
    s = served()
    with s.connect() as slow, s.connect() as quick:
        slow.sendall(LIST[:5])
        s.loop.spin()
        quick.sendall(LIST)
        quick.shutdown(socket.SHUT_WR)
        s.loop.spin()
        assert read_all(quick) == LISTED
        slow.sendall(LIST[5:])
        s.loop.spin()
        assert read_all(slow) == LISTED


def test_server_too_large_then_close(served: Callable[..., Served]) -> None:
    s = served()
    with s.connect() as client:
        client.sendall(b" " * MAX_REQUEST)
        s.loop.spin()
        assert read_all(client) == ERR_TOO_LARGE


def test_server_second_request_on_a_connection_is_refused(served: Callable[..., Served]) -> None:
    s = served()
    with s.connect() as client:
        client.sendall(LIST)
        s.loop.spin()
        assert client.recv(100) == LISTED
        with pytest.raises((BrokenPipeError, ConnectionResetError)):
            client.sendall(LIST)
            client.sendall(LIST)


def test_server_drops_idle_clients_at_their_deadline(served: Callable[..., Served]) -> None:
    now = [100.0]
    s = served(clock=lambda: now[0], idle_timeout=5.0)
    assert s.server.next_deadline() is None
    with s.connect() as idle, s.connect() as partial:
        s.loop.spin()
        partial.sendall(LIST[:10])
        s.loop.spin()
        assert s.server.next_deadline() == 105.0 and len(s.server.clients) == 2
        s.server.on_timer(104.9)
        assert len(s.server.clients) == 2
        now[0] = 106.0
        s.server.on_timer(105.0)
        assert s.server.clients == {} and s.server.next_deadline() is None
        assert read_all(idle) == ERR_PARSE
        assert read_all(partial) == ERR_PARSE


def test_server_limits_concurrent_clients(served: Callable[..., Served]) -> None:
    s = served(max_clients=2)
    clients = [s.connect() for _ in range(3)]
    try:
        s.loop.spin()
        assert len(s.server.clients) == 2
        assert read_all(clients[2]) == b""  # closed at once
        clients[0].sendall(LIST)
        s.loop.spin()
        assert read_all(clients[0]) == LISTED
    finally:
        for c in clients:
            c.close()


def test_server_pauses_accepting_when_out_of_fds(tmp_path: Path) -> None:
    class Exhausted:
        def fileno(self) -> int:
            return 99

        def accept(self) -> tuple[socket.socket, Any]:
            raise OSError(errno.EMFILE, "Too many open files")

    watched: list[tuple[str, int]] = []
    now = [10.0]
    server = ApiServer(
        cast(socket.socket, Exhausted()),
        Api(CONFIG),
        lambda fd, ev, h: watched.append(("watch", fd)),
        lambda fd: watched.append(("unwatch", fd)),
        clock=lambda: now[0],
    )
    server.start()
    server.on_listener(select.EPOLLIN)
    assert watched == [("watch", 99), ("unwatch", 99)]  # no busy loop on a readable listener
    assert server.next_deadline() == pytest.approx(10.1)
    server.on_timer(10.2)
    assert watched[-1] == ("watch", 99) and server.next_deadline() is None


def test_server_hands_rules_to_forwarding_and_unlistens_before_close(
    served: Callable[..., Served],
) -> None:
    recorder = Recorder()
    s = served(forwarding=recorder)

    def ask(request: bytes) -> bytes:
        with s.connect() as client:
            client.sendall(request)
            client.shutdown(socket.SHUT_WR)
            s.loop.spin()
            return read_all(client)

    assert ask(add(port=1)) == b'{"return":{"id":1}}'
    assert ask(add(port=2)) == b'{"return":{"id":2}}'
    assert ask(add(port=2)) == ADD_FAILED
    assert ask(remove(1)) == OK
    assert s.kernel.bound == {("tcp", 2)} and list(s.server.forwards) == [2]
    s.server.close()
    assert recorder.calls == [("listen", 1), ("listen", 2), ("unlisten", 1), ("unlisten", 2)]
    assert s.kernel.bound == set() and s.server.forwards == {}


def test_server_a_failing_forwarding_is_an_add_failure(served: Callable[..., Served]) -> None:
    s = served(forwarding=Recorder(fail=True))
    with s.connect() as client:
        client.sendall(add())
        s.loop.spin()
        assert read_all(client) == ADD_FAILED
    assert s.kernel.bound == set() and s.server.api.next_id == 1 and s.server.forwards == {}


def test_server_64_threads_x_25_mixed_requests(served: Callable[..., Served]) -> None:
    """The smaller real-socket twin of the model test: replies decide the model."""
    s = served()
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            s.loop.turn(0.02)

    loop_thread = threading.Thread(target=serve)
    loop_thread.start()
    model = Model()
    lock = threading.Lock()
    errors: list[BaseException] = []

    def client(seed: int) -> None:
        rng = random.Random(seed)
        mine: list[int] = []
        try:
            for _ in range(25):
                kind, request, arg = mixed_request(rng, mine)
                with s.connect() as sock:
                    sock.sendall(request)
                    sock.shutdown(socket.SHUT_WR)
                    reply = read_all(sock)
                with lock:
                    new_id = model.record(kind, arg, reply)
                if new_id is not None:
                    mine.append(new_id)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(64)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        stop.set()
        loop_thread.join(5)
    assert not errors, errors[0]
    assert not any(t.is_alive() for t in threads)
    s.loop.spin()
    with s.connect() as sock:
        sock.sendall(LIST)
        s.loop.spin()
        assert read_all(sock) == model.listing()
    assert sorted(model.ids) == list(range(1, len(model.ids) + 1))


# == bind_listener on host loopback (binding only: no traffic) ==============================
def test_bind_listener_tcp_udp_and_ipv6_options() -> None:
    tcp = bind_listener(AddHostfwd("tcp", "127.0.0.1", 0, "10.0.2.100", 80, 4))
    udp = bind_listener(AddHostfwd("udp", "127.0.0.1", 0, "10.0.2.100", 80, 4))
    try:
        assert tcp.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) == 1
        assert tcp.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1
        assert udp.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) == 0
        for sock in (tcp, udp):
            assert not sock.getblocking() and not sock.get_inheritable()
        port = tcp.getsockname()[1]
        with pytest.raises(OSError) as busy:  # a listening port cannot be bound again
            bind_listener(AddHostfwd("tcp", "127.0.0.1", port, "10.0.2.100", 80, 4))
        assert busy.value.errno == errno.EADDRINUSE
        with pytest.raises(OSError) as nonlocal_:
            bind_listener(AddHostfwd("udp", "192.0.2.1", 0, "10.0.2.100", 80, 4))
        assert nonlocal_.value.errno == errno.EADDRNOTAVAIL
    finally:
        tcp.close()
        udp.close()
    try:
        six = bind_listener(AddHostfwd("tcp", "::1", 0, "10.0.2.100", 80, 6))
    except OSError as e:
        if e.errno == errno.EADDRNOTAVAIL:
            pytest.skip("no IPv6 loopback here")
        raise
    with six:
        assert six.family == socket.AF_INET6
        assert six.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 1


def test_reply_is_one_send_and_a_client_gone_early_costs_nothing(
    served: Callable[..., Served],
) -> None:
    s = served()
    client = s.connect()
    client.sendall(LIST)
    client.close()  # gone before the answer
    s.loop.spin()
    assert s.server.clients == {}
    with s.connect() as other:
        other.sendall(LIST)
        s.loop.spin()
        assert read_all(other) == LISTED


def test_server_many_clients_at_once(served: Callable[..., Served]) -> None:
    s = served()
    clients = [s.connect() for _ in range(300)]
    try:
        for c in clients:
            c.sendall(LIST)
        deadline = time.monotonic() + 10
        answered = 0
        while answered < len(clients) and time.monotonic() < deadline:
            s.loop.turn(0.01)
            answered = sum(1 for c in clients if select.select([c], [], [], 0)[0])
        assert all(read_all(c) == LISTED for c in clients)
    finally:
        for c in clients:
            c.close()


# == sans-IO ====================================================================================
@pytest.mark.parametrize("module", ["api", "jsonreader"])
def test_pure_api_modules_import_no_io(module: str) -> None:
    io = {"os", "select", "time", "random", "threading", "signal", "fcntl", "ctypes", "socket"}
    io |= {"pytun", "pyroute2", "pyslirp4netns.shell"}
    path = Path(pyslirp4netns.core.__file__).parent / f"{module}.py"
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        else:
            continue
        for name in names:
            assert not any(name == m or name.startswith(m + ".") for m in io), (module, name)
