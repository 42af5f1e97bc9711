"""The JSON API, differential: the same requests to slirp4netns 1.2.0 and to us, byte for byte.

``COMMON`` is one conversation (adds, lists, removes, every error row of contract §5.3, parson's
edge cases) that slirp4netns survives; both binaries get it on a fresh daemon each, one after the
other in the same loopback-only Outer namespace (the first is stopped before the second starts,
so both find the same ports free), and every reply must be identical.

Where slirp4netns crashes or misbehaves we deliberately differ; those rows are asserted apart,
each with what slirp4netns does and what we do (the man page's COMPATIBILITY section lists them).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.rig import REFERENCE, Daemon, Guest, User, ask, read_all, start_ready

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(not os.path.exists(REFERENCE), reason=f"{REFERENCE} not installed"),
]

OK = b'{"return":{}}'
ERR_PARSE = b'{"error":{"desc":"bad request: cannot parse JSON"}}'
ERR_PROTO = b'{"error":{"desc":"bad request: add_hostfwd: bad arguments.proto"}}'
ERR_HOST_ADDR = b'{"error":{"desc":"bad request: add_hostfwd: bad arguments.host_addr"}}'
ERR_HOST_PORT = b'{"error":{"desc":"bad request: add_hostfwd: bad arguments.host_port"}}'
ERR_GUEST_ADDR = b'{"error":{"desc":"bad request: add_hostfwd: bad arguments.guest_addr"}}'
ERR_GUEST_PORT = b'{"error":{"desc":"bad request: add_hostfwd: bad arguments.guest_port"}}'
ADD_FAILED = b'{"error":{"desc":"bad request: add_hostfwd: slirp_add_hostfwd failed"}}'
LIST = b'{"execute":"list_hostfwd"}'
L = LIST[:-1]
PODMAN_ADD = (
    b'{"execute":"add_hostfwd","arguments":{"proto":"tcp","host_addr":"0.0.0.0",'
    b'"host_port":8080,"guest_addr":"","guest_port":80}}\n'
)
ROOTLESSKIT_ADD = (
    b'{"execute":"add_hostfwd","arguments":{"proto":"tcp","host_addr":"127.0.0.1",'
    b'"host_port":8081,"guest_addr":"10.0.2.100","guest_port":80}}\n'
)
ROOTLESSKIT_REMOVE = b'{"execute":"remove_hostfwd","arguments":{"id":%d}}\n'


def add(proto: Any = "tcp", port: Any = 8080, **fields: Any) -> bytes:
    args: dict[str, Any] = {"proto": proto, "host_port": port, "guest_port": 80}
    args.update(fields)
    return json.dumps({"execute": "add_hostfwd", "arguments": args}).encode()


def raw_add(arguments: bytes) -> bytes:
    return b'{"execute":"add_hostfwd","arguments":{' + arguments + b"}}"


def remove(rule_id: object) -> bytes:
    return json.dumps({"execute": "remove_hostfwd", "arguments": {"id": rule_id}}).encode()


# (request, half-close?) in order: the table carries over from row to row.
COMMON: list[tuple[bytes, bool]] = [
    (LIST, True),
    (PODMAN_ADD, True),
    (ROOTLESSKIT_ADD, True),
    (PODMAN_ADD, True),  # the same port twice
    (add("udp", 8080), True),  # tcp and udp are separate
    (add(port=8082, host_addr="198.51.100.1"), True),  # EADDRNOTAVAIL
    (add(port=8083, host_addr="10.0.2.2"), True),
    (add(port=8088.9, guest_port=80.5), True),  # C int casts
    (add(port=8084, host_addr=5), True),  # a non-string is missing: 0.0.0.0
    (add(port=8085, host_addr=None, guest_addr=7), True),
    (add("tcp\u0000x", 8086), True),  # C strings
    (add(port=8087, host_addr="127.0.0.1\u0000x", guest_addr="10.0.2.5\u0000y"), True),
    (add(port=8089, guest_addr="0.0.0.0"), True),
    (add(port=8090, guest_addr="255.255.255.255"), True),
    (add("udp", 8091, host_addr="255.255.255.255"), True),
    (add(port=8092, host_addr="224.0.0.1"), True),
    (b'{"arguments.proto":"x",' + add(port=8093)[1:], True),
    (LIST, True),
    (ROOTLESSKIT_REMOVE % 2, True),
    (ROOTLESSKIT_REMOVE % 2, True),
    (remove(1.9), True),
    (remove("3"), True),
    (remove(1e10), True),
    (remove(-1), True),
    (b'{"execute":"remove_hostfwd","arguments":[3]}', True),
    (b'{"execute":"remove_hostfwd"}', True),
    (add(port=8081, host_addr="127.0.0.1"), True),  # freed by the remove: a new id
    (LIST, False),  # clients that never half-close are answered too
    (add(port=8094), False),
    (b"hello", False),
    # contract §5.3, every row slirp4netns survives
    (b"hello", True),
    (b"", True),
    (b"  \n", True),
    (L, True),
    (L + b',"execute":"list_hostfwd"}', True),
    (L + b',"a":{"b":1,"b":2}}', True),
    (raw_add(b'"proto":"tcp","host_port":9000,"guest_port":80,"host_port":9001'), True),
    (b"[1,2]", True),
    (b'"str"', True),
    (b"null", True),
    (b"42", True),
    (b"{}", True),
    (b'{"execute":42}', True),
    (b'{"execute":null}', True),
    (b'{"EXECUTE":"list_hostfwd"}', True),
    (b'{"execute":"List_hostfwd"}', True),
    (b'{"execute":""}', True),
    (add("TCP"), True),
    (add("sctp"), True),
    (add("tcp6"), True),
    (add(host_addr="localhost"), True),
    (add(host_addr="127.1"), True),
    (add(host_addr="127.0.0.01"), True),
    (add(host_addr="1.2.3.256"), True),
    (add(host_addr=" 127.0.0.1"), True),
    (raw_add(b'"proto":"tcp","guest_port":80'), True),
    (add(port=0.5), True),
    (add(port=-0.5), True),
    (add(port="8087"), True),
    (add(port=True), True),
    (add(port=None), True),
    (add(guest_addr="fd00::100"), True),  # IPv6 guest without --enable-ipv6
    (add(guest_addr="localhost"), True),
    (add(guest_addr="10.0.2"), True),
    (raw_add(b'"proto":"tcp","host_port":8080'), True),
    (add(guest_port=0), True),
    (add(guest_port="80"), True),
    (raw_add(b'"proto":"x","host_addr":"x","host_port":0,"guest_addr":"x","guest_port":0'), True),
    (raw_add(b'"proto":"tcp","host_addr":"x","host_port":0,"guest_addr":"x"'), True),
    (raw_add(b'"proto":"tcp","host_port":0.5,"guest_addr":"x","guest_port":0'), True),
    (raw_add(b'"proto":"tcp","host_port":9002,"guest_addr":"x","guest_port":0'), True),
    (LIST + b" " * (4095 - len(LIST)), True),  # 4095 bytes work
    (LIST + b" " * (4096 - len(LIST)), True),  # 4096 do not
    (b"x" * 8192, True),
    # parson's JSON
    (L + b"}\x00garbage", True),
    (L + b"} trailing", True),
    (L + b"}" + L + b"}", True),
    (b"\xef\xbb\xbf" + L + b"}", True),
    (b" \xef\xbb\xbf" + L + b"}", True),
    (b"\v\f\r\n\t " + L + b'\v,\v"x"\v:\v1\v}', True),
    (b"/*c*/" + L + b"}", True),
    (L + b"\x00}", True),
    (L + b",}", True),
    (L + b',"a":[1,2,]}', True),
    (L + b',"a":[1 2]}', True),
    (L + b',"a":[],"b":{},"c":[[],{"d":null}]}', True),
    (b"[" * 2047 + b"]" * 2047, True),
    (L + b',"a":' + b"[" * 2030 + b"]" * 2030 + b"}", True),
    (L + b',"x":"\xff"}', True),
    (L + b',"x":"\xc0\x80\xed\xa0\x80"}', True),
    (L + b',"\xff":1}', True),
    (L + b',"x":"\x7f"}', True),
    (L + b',"x":"\x01"}', True),
    (L + b',"x":"\t"}', True),
    (L + b',"x":"\\/\\b\\f\\n\\r\\t\\"\\\\"}', True),
    (L + b',"x":"\\x"}', True),
    (L + b',"x":"\\U0041"}', True),
    (L + b',"x":"\\u12"}', True),
    (L + b',"x":"\\u004G"}', True),
    (L + b',"x":"\\u00e9\\uD83D\\uDE00"}', True),
    (L + b',"x":"\\ud800"}', True),
    (L + b',"x":"\\ud83dx"}', True),
    (L + b',"x":"\\ud83d\\u0041"}', True),
    (L + b',"x":"\\udc00\\ud800"}', True),
    (L + b',"x":"\\u0000"}', True),
    (b'{"execute\\u0000":"list_hostfwd"}', True),
    (b'{"exe\\u0063ute":"list_hostfwd"}', True),
    (b'{"execute":"list_hostfwd\\u0000x"}', True),
    *(
        (L + b',"x":' + number + b"}", True)
        for number in (
            b"1.",
            b"1.e5",
            b"-.5",
            b"-0.",
            b"0.0e5",
            b"1E+2",
            b"5e-324",
            b"1e-999",
            b"01",
            b"-00",
            b"0e5",
            b"-0e1",
            b"0x10",
            b"+1",
            b".5",
            b"1e",
            b"1e+",
            b"-",
            b"NaN",
            b"-nan",
            b"-inf",
            b"-Infinity",
            b"1e999",
            b"1" * 400,
            b"trueish",
        )
    ),
    *(
        (top, True)
        for top in (b"-", b"-x", b"0x", b"1e", b"trueish", b"0x10", b"tru", b"nul", b"[", b"{")
    ),
    (LIST, True),
]


# -- driving a daemon -------------------------------------------------------------------------
Start = Callable[..., tuple[Guest, Daemon]]


@pytest.fixture
def launch(
    make_guest: Callable[..., Guest],
    make_daemon: Callable[..., Daemon],
) -> Start:
    """start(program, extra, user): a guest with a configured tap0 behind a ready daemon."""

    def start(
        program: list[str] | None, extra: list[str], user: User | None = None
    ) -> tuple[Guest, Daemon]:
        guest = make_guest(rootless=True, user=user)
        args = [*extra, "-c", "-r", "3", str(guest.pid), "tap0"]
        return guest, start_ready(make_daemon, args, program=program, user=user)

    return start


class Api:
    """One daemon with -a, ready; ``stop()`` frees its ports for the next one."""

    count = 0

    def __init__(
        self, launch: Start, api_dir: Path, which: str | None, *extra: str, user: User | None = None
    ) -> None:
        Api.count += 1
        self.path = str(api_dir / f"{Api.count}.sock")
        program = [which] if which else None
        self.guest, self.daemon = launch(program, ["-a", self.path, *extra], user)

    def __call__(self, request: bytes, half_close: bool = True) -> bytes:
        return ask(self.path, request, half_close)

    def alive(self) -> bool:
        return self.daemon.poll() is None

    def stop(self) -> None:
        self.daemon.close()
        self.guest.close()


def crashed_by_segv(api: Api) -> bool:
    try:
        return api.daemon.wait(5) == -signal.SIGSEGV
    except TimeoutError:
        return False


# == the same conversation, byte for byte ======================================================
def test_common_conversation_byte_for_byte(launch: Start, api_dir: Path) -> None:
    results: dict[str, list[bytes]] = {}
    for name, which in (("slirp4netns", REFERENCE), ("pyslirp4netns", None)):
        api = Api(launch, api_dir, which)
        replies = []
        for i, (request, half_close) in enumerate(COMMON):
            replies.append(api(request, half_close))
            assert api.alive(), f"{name} died at row {i}: {request[:80]!r}"
        results[name] = replies
        api.stop()
    ref, ours = results["slirp4netns"], results["pyslirp4netns"]
    differing = [
        (i, COMMON[i][0][:80], ref[i], ours[i]) for i in range(len(COMMON)) if ref[i] != ours[i]
    ]
    assert not differing, differing[:5]
    assert ref[17].startswith(b'{"entries":[{"id":1,'), ref[17]  # the conversation did work
    assert sum(r.startswith(b'{"return":{"id":') for r in ref) >= 12


# == deliberate differences ====================================================================
CRASHERS = [
    raw_add(b'"host_port":8080,"guest_port":80'),  # no proto
    raw_add(b'"proto":6,"host_port":8080,"guest_port":80'),
    b'{"execute":"add_hostfwd"}',  # no arguments
    b'{"execute":"add_hostfwd","arguments":"x"}',
]


@pytest.mark.parametrize("request_", CRASHERS, ids=["no-proto", "proto-6", "no-args", "args-x"])
def test_fix_missing_proto_is_an_error_not_a_crash(
    launch: Start,
    api_dir: Path,
    request_: bytes,
) -> None:
    ref = Api(launch, api_dir, REFERENCE)
    assert ref(request_) == b""
    assert crashed_by_segv(ref), ref.daemon.stderr
    ref.stop()
    ours = Api(launch, api_dir, None)
    assert ours(request_) == ERR_PROTO
    assert ours.alive() and ours(LIST) == b'{"entries":[]}'


def test_fix_ports_outside_1_to_65535(launch: Start, api_dir: Path) -> None:
    rows = [add(port=70000), add(port=-1), add(port=65536), add(port=1e10), add(guest_port=70000)]
    ref = Api(launch, api_dir, REFERENCE)
    assert [ref(r) for r in rows] == [b'{"return":{"id":%d}}' % i for i in range(1, 6)]
    listed = json.loads(ref(LIST))["entries"]
    assert [e["host_port"] for e in listed] == [70000, -1, 65536, -(2**31), 8080]
    assert listed[4]["guest_port"] == 70000  # and 70000 binds 4464, -1 binds 65535 (ss shows)
    ref.stop()
    ours = Api(launch, api_dir, None)
    assert [ours(r) for r in rows] == [ERR_HOST_PORT] * 4 + [ERR_GUEST_PORT]
    assert ours(LIST) == b'{"entries":[]}'


def test_extension_ipv6_addresses(launch: Start, api_dir: Path) -> None:
    rows = [add(port=8100, host_addr="::1"), add(port=8101, guest_addr="fd00::100")]
    ref = Api(launch, api_dir, REFERENCE, "--enable-ipv6")
    assert [ref(r) for r in rows] == [ERR_HOST_ADDR, ERR_GUEST_ADDR]
    ref.stop()
    ours = Api(launch, api_dir, None, "--enable-ipv6")
    assert [ours(r) for r in rows] == [b'{"return":{"id":1}}', b'{"return":{"id":2}}']


def test_extension_host_port_0_binds_an_ephemeral_port(launch: Start, api_dir: Path) -> None:
    rows = [add(port=0), add(port=0.0, host_addr="127.0.0.1")]
    ref = Api(launch, api_dir, REFERENCE)
    assert [ref(r) for r in rows] == [ERR_HOST_PORT, ERR_HOST_PORT]
    ref.stop()
    ours = Api(launch, api_dir, None)
    replies = [json.loads(ours(r))["return"] for r in rows]
    assert [r["id"] for r in replies] == [1, 2] and all(r["host_port"] > 0 for r in replies)
    listed = json.loads(ours(LIST))["entries"]
    assert [e["host_port"] for e in listed] == [r["host_port"] for r in replies]


def test_fix_a_request_in_pieces_is_read_whole(launch: Start, api_dir: Path) -> None:
    def in_pieces(api: Api) -> bytes:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            sock.connect(api.path)
            sock.sendall(PODMAN_ADD[:25])
            time.sleep(0.3)
            try:
                sock.sendall(PODMAN_ADD[25:])
                sock.shutdown(socket.SHUT_WR)
            except (BrokenPipeError, ConnectionResetError):
                pass  # slirp4netns has answered the first piece and closed
            return read_all(sock)

    ref = Api(launch, api_dir, REFERENCE)
    assert in_pieces(ref) == ERR_PARSE  # parsed from its first read() only
    ref.stop()
    assert in_pieces(Api(launch, api_dir, None)) == b'{"return":{"id":1}}'


def test_fix_an_idle_client_does_not_stop_the_network(
    launch: Start,
    api_dir: Path,
) -> None:
    def pings_with_an_idle_client(api: Api) -> str:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as idle:
            idle.connect(api.path)
            time.sleep(0.2)  # accepted: slirp4netns now sits in read()
            ping = api.guest.run(
                ["busybox", "ping", "-c", "3", "-i", "0.3", "-W", "1", "10.0.2.2"], check=False
            )
        return ping.stdout.decode()

    ref = Api(launch, api_dir, REFERENCE)
    assert re.search(r"\b0 packets received", pings_with_an_idle_client(ref))
    ref.stop()
    assert "3 packets received" in pings_with_an_idle_client(Api(launch, api_dir, None))


def test_privileged_port_as_unprivileged_user(
    launch: Start,
    api_dir: Path,
    unpriv: User,
) -> None:
    os.chown(api_dir, unpriv.uid, unpriv.gid)
    rows = [add(port=80), add(port=1023), add(port=8080)]
    expected = [ADD_FAILED, ADD_FAILED, b'{"return":{"id":1}}']  # EACCES
    for which in (REFERENCE, None):
        api = Api(launch, api_dir, which, user=unpriv)
        assert [api(r) for r in rows] == expected, which
        api.stop()
