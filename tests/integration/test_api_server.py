"""The API socket of the real daemon, driven over the real unix socket (contract §5).

Every daemon runs in the rig's loopback-only ``Outer`` namespace, so the forwards' listeners it
binds live there too (``ss`` inside Outer shows them). The socket file itself is in a short temp
dir on the shared filesystem, reachable from the test process.
"""

from __future__ import annotations

import json
import os
import random
import re
import select
import signal
import socket
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.rig import Daemon, Guest, Outer, User, ask, read_all, start_ready

pytestmark = pytest.mark.timeout(300)

ERROR_PREFIX = b'{"error":{"desc":"bad request: '
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
LIST = b'{"execute":"list_hostfwd"}'
PODMAN_ADD = (
    b'{"execute":"add_hostfwd","arguments":{"proto":"tcp","host_addr":"0.0.0.0",'
    b'"host_port":8080,"guest_addr":"","guest_port":80}}\n'
)
ROOTLESSKIT_ADD = (
    b'{"execute":"add_hostfwd","arguments":{"proto":"tcp","host_addr":"127.0.0.1",'
    b'"host_port":8081,"guest_addr":"10.0.2.100","guest_port":80}}\n'
)
ROOTLESSKIT_REMOVE = b'{"execute":"remove_hostfwd","arguments":{"id":%d}}\n'


def add(proto: str = "tcp", port: Any = 8080, **fields: Any) -> bytes:
    args: dict[str, Any] = {"proto": proto, "host_port": port, "guest_port": 80}
    args.update(fields)
    return json.dumps({"execute": "add_hostfwd", "arguments": args}).encode()


def remove(rule_id: object) -> bytes:
    return json.dumps({"execute": "remove_hostfwd", "arguments": {"id": rule_id}}).encode()


def entry(rule_id: int, proto: str, host: str, port: int, guest: str, guest_port: int) -> str:
    return (
        f'{{"id":{rule_id},"proto":"{proto}","host_addr":"{host}","host_port":{port},'
        f'"guest_addr":"{guest}","guest_port":{guest_port}}}'
    )


def entries(*items: str) -> bytes:
    return f'{{"entries":[{",".join(items)}]}}'.encode()


# -- clients -----------------------------------------------------------------------------------
Start = Callable[..., tuple[Guest, Daemon]]


def start(slirp: Start, api_dir: Path, *extra: str, **kwargs: Any) -> tuple[Guest, Daemon, str]:
    path = str(api_dir / "api.sock")
    guest, daemon = slirp(extra=["-a", path, *extra], **kwargs)
    return guest, daemon, path


def listeners(outer: Outer) -> set[str]:
    """host:port/proto of every TCP listener and bound UDP socket in Outer."""
    out = outer.run(["ss", "-Hlntu"]).stdout.decode()
    found = set()
    for line in out.splitlines():
        fields = line.split()
        found.add(f"{fields[4]}/{fields[0]}")
    return found


# == bytes ======================================================================================
SCRIPT: list[tuple[bytes, bytes | None]] = [
    (LIST, b'{"entries":[]}'),
    (PODMAN_ADD, b'{"return":{"id":1}}'),
    (ROOTLESSKIT_ADD, b'{"return":{"id":2}}'),
    (PODMAN_ADD, ADD_FAILED),  # the same port twice
    (add("udp", 8080), b'{"return":{"id":3}}'),  # tcp and udp are separate
    (add(port=8082, host_addr="198.51.100.1"), ADD_FAILED),  # not local in Outer
    (add(port=8088.9, guest_port=80.5, host_addr="127.0.0.1"), b'{"return":{"id":4}}'),
    (
        LIST,
        entries(
            entry(1, "tcp", "0.0.0.0", 8080, "10.0.2.100", 80),
            entry(2, "tcp", "127.0.0.1", 8081, "10.0.2.100", 80),
            entry(3, "udp", "0.0.0.0", 8080, "10.0.2.100", 80),
            entry(4, "tcp", "127.0.0.1", 8088, "10.0.2.100", 80),
        ),
    ),
    (ROOTLESSKIT_REMOVE % 2, OK),
    (ROOTLESSKIT_REMOVE % 2, ERR_ID),
    (remove(1.9), OK),
    (add(port=8081, host_addr="127.0.0.1"), b'{"return":{"id":5}}'),  # freed, new id
    (b"hello", ERR_PARSE),
    (b"", ERR_PARSE),
    (b'{"execute":"list_hostfwd","execute":"list_hostfwd"}', ERR_PARSE),
    (b"[1,2]", ERR_NOT_OBJECT),
    (b'{"execute":42}', ERR_NO_EXECUTE),
    (b'{"execute":"List_hostfwd"}', ERR_UNKNOWN),
    (add("sctp"), ERR_PROTO),
    (add(host_addr="localhost"), ERR_HOST_ADDR),
    (add(port=0.5), ERR_HOST_PORT),  # exactly 0 is our extension (test_hostfwd_ephemeral)
    (add(port="8087"), ERR_HOST_PORT),
    (add(guest_addr="fd00::100"), ERR_GUEST_ADDR),
    (add(guest_port=0), ERR_GUEST_PORT),
    (remove("3"), ERR_ID),
    (LIST + b" " * (4095 - len(LIST)), None),  # 4095 bytes: answered (checked below)
    (LIST + b" " * (4096 - len(LIST)), ERR_TOO_LARGE),
    (LIST + b"} trailing", None),
    # deliberate fixes
    (add(port=70000), ERR_HOST_PORT),
    (add(port=-1), ERR_HOST_PORT),
    (b'{"execute":"add_hostfwd","arguments":{"host_port":1,"guest_port":2}}', ERR_PROTO),
    (b'{"execute":"add_hostfwd"}', ERR_PROTO),
    (remove(3), OK),
    (remove(4), OK),
    (remove(5), OK),
    (LIST, b'{"entries":[]}'),
]


def test_replies_byte_for_byte(slirp: Start, api_dir: Path, outer: Outer) -> None:
    _, daemon, path = start(slirp, api_dir)
    for request, expected in SCRIPT:
        reply = ask(path, request)
        if expected is None:
            assert reply.startswith(b'{"entries":['), (request, reply)
        else:
            assert reply == expected, (request, reply)
    # a client that never half-closes is answered too, and so is one that sends in pieces
    assert ask(path, LIST, half_close=False) == b'{"entries":[]}'
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(path)
        sock.sendall(PODMAN_ADD[:20])
        time.sleep(0.3)
        sock.sendall(PODMAN_ADD[20:])
        assert read_all(sock) == b'{"return":{"id":6}}'
    assert "8080" in " ".join(listeners(outer))
    assert ask(path, remove(6)) == OK
    assert daemon.poll() is None
    assert "api_handler" not in daemon.stderr and "apifd" not in daemon.stderr


def test_forward_listeners_follow_the_table(slirp: Start, api_dir: Path, outer: Outer) -> None:
    _, _, path = start(slirp, api_dir, "--enable-ipv6")
    before = listeners(outer)
    assert ask(path, add(port=18080, host_addr="127.0.0.1")) == b'{"return":{"id":1}}'
    assert ask(path, add("udp", 18080)) == b'{"return":{"id":2}}'
    assert ask(path, add(port=18080, host_addr="::1", guest_addr="FD00::100")) == (
        b'{"return":{"id":3}}'
    )
    assert ask(path, add(port=18081, host_addr="::")) == b'{"return":{"id":4}}'
    assert ask(path, add(port=18081)) == b'{"return":{"id":5}}'  # v6-only: 0.0.0.0 is free
    assert ask(path, LIST) == entries(
        entry(1, "tcp", "127.0.0.1", 18080, "10.0.2.100", 80),
        entry(2, "udp", "0.0.0.0", 18080, "10.0.2.100", 80),
        entry(3, "tcp", "::1", 18080, "fd00::100", 80),
        entry(4, "tcp", "::", 18081, "10.0.2.100", 80),
        entry(5, "tcp", "0.0.0.0", 18081, "10.0.2.100", 80),
    )
    assert listeners(outer) - before == {
        "127.0.0.1:18080/tcp",
        "0.0.0.0:18080/udp",
        "[::1]:18080/tcp",
        "[::]:18081/tcp",
        "0.0.0.0:18081/tcp",
    }
    for rule_id in (1, 2, 3):
        assert ask(path, remove(rule_id)) == OK
    assert listeners(outer) - before == {"[::]:18081/tcp", "0.0.0.0:18081/tcp"}


def test_privileged_port_as_unprivileged_user(slirp: Start, api_dir: Path, unpriv: User) -> None:
    os.chown(api_dir, unpriv.uid, unpriv.gid)
    _, _, path = start(slirp, api_dir, user=unpriv)
    assert ask(path, add(port=80)) == ADD_FAILED  # EACCES
    assert ask(path, add(port=8080)) == b'{"return":{"id":1}}'


def test_existing_file_replaced_and_removed_at_exit(
    make_guest: Callable[..., Guest],
    make_daemon: Callable[..., Daemon],
    pipes: Callable[[], tuple[int, int]],
    api_dir: Path,
) -> None:
    path = api_dir / "api.sock"
    path.write_text("in the way")
    guest = make_guest()
    exit_r, exit_w = pipes()
    args = ["-a", str(path), "-e", "3", "-r", "4", str(guest.pid), "tap0"]
    daemon = start_ready(make_daemon, args, ready_fd=4, fds={3: exit_r})
    assert ask(str(path), add(port=18090)) == b'{"return":{"id":1}}'
    os.close(exit_w)
    assert daemon.wait(10) == 0, daemon.stderr
    assert not path.exists()


# == nothing blocks the loop ====================================================================
def rtts(ping_output: str) -> list[float]:
    return [float(m) for m in re.findall(r"time=([\d.]+) ms", ping_output)]


def test_100_idle_clients_do_not_delay_pings(slirp: Start, api_dir: Path) -> None:
    guest, daemon, path = start(slirp, api_dir)
    idle = []
    try:
        for _ in range(100):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(path)
            idle.append(sock)
        idle[0].sendall(b'{"execute":"list_h')  # one of them half-way through a request
        started = time.monotonic()
        ping = guest.run(
            ["busybox", "ping", "-c", "15", "-i", "0.2", "-W", "1", "10.0.2.2"], check=False
        )
        out = ping.stdout.decode()
        assert "15 packets received" in out, out
        times = rtts(out)
        print(f"gateway ping with 100 idle API clients: max {max(times):.2f} ms")
        assert max(times) < 50, times
        if time.monotonic() - started < 4.5:  # still within the clients' idle allowance
            assert ask(path, LIST, timeout=1) == b'{"entries":[]}'
    finally:
        for sock in idle:
            sock.close()
    assert daemon.poll() is None


def test_slow_loris_does_not_block_others(slirp: Start, api_dir: Path) -> None:
    _, _, path = start(slirp, api_dir)
    request = add(port=18100)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as slow:
        slow.settimeout(10)
        slow.connect(path)
        worst = 0.0
        for i in range(4):  # one byte a second
            slow.sendall(request[i : i + 1])
            t = time.monotonic()
            assert ask(path, LIST, timeout=1) == b'{"entries":[]}'
            worst = max(worst, time.monotonic() - t)
            time.sleep(1)
        print(f"replies while a client trickles: worst {worst * 1000:.1f} ms")
        assert worst < 0.1


def test_idle_client_is_dropped_after_a_few_seconds(slirp: Start, api_dir: Path) -> None:
    _, _, path = start(slirp, api_dir)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(path)
        t = time.monotonic()
        reply = read_all(sock)
        waited = time.monotonic() - t
    assert reply == ERR_PARSE
    assert 4 < waited < 7, waited


# == load: 256 concurrent clients x 100 mixed requests ============================================
PORTS = range(21000, 21200)


def check_history(history: list[tuple[str, Any, bytes]], final: bytes) -> int:
    """Whatever order the server took the requests in, the replies must tell one story."""
    added: dict[int, tuple[str, int, int]] = {}
    removed: list[int] = []
    for kind, arg, reply in history:
        if kind == "add":
            if reply == ADD_FAILED:
                continue
            rule_id = int(json.loads(reply)["return"]["id"])
            assert rule_id not in added, f"id {rule_id} given twice"
            added[rule_id] = arg
        elif kind == "remove":
            assert reply in (OK, ERR_ID), reply
            if reply == OK:
                removed.append(arg)
        else:
            assert reply.startswith(b'{"entries":['), reply[:100]
    assert sorted(added) == list(range(1, len(added) + 1))  # no gaps, from 1
    assert len(removed) == len(set(removed)) and set(removed) <= set(added)
    live = sorted(set(added) - set(removed))
    assert final == entries(
        *(entry(i, added[i][0], "127.0.0.1", added[i][1], "10.0.2.100", added[i][2]) for i in live)
    )
    live_ports = [added[i][:2] for i in live]
    assert len(live_ports) == len(set(live_ports))  # the kernel kept each port to one rule
    return len(added)


class MixedClient:
    """One of the 256: 100 requests in a row, each on its own connection."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.mine: list[int] = []
        self.left = 100

    def next_request(self) -> tuple[str, Any, bytes]:
        rng = self.rng
        kind = rng.choices(["add", "list", "remove", "remove-other"], [5, 2, 3, 1])[0]
        if kind == "add":
            arg = (rng.choice(["tcp", "udp"]), rng.choice(PORTS), rng.randint(1, 65535))
            return "add", arg, add(arg[0], arg[1], host_addr="127.0.0.1", guest_port=arg[2])
        if kind == "list":
            return "list", None, LIST
        if kind == "remove" and self.mine:
            rule_id = self.mine.pop(rng.randrange(len(self.mine)))
        else:
            rule_id = rng.randint(1, 12000)
        return "remove", rule_id, remove(rule_id)


def run_concurrently(
    path: str, clients: list[MixedClient], timeout: float
) -> tuple[list[tuple[str, Any, bytes]], list[float]]:
    """All clients at once from one thread on one epoll (no GIL hand-offs between 256 client
    threads in the measured latency): connect, write, half-close, read to EOF, next."""
    history: list[tuple[str, Any, bytes]] = []
    latencies: list[float] = []
    epoll = select.epoll()
    open_: dict[int, tuple[MixedClient, socket.socket, str, Any, float, list[bytes]]] = {}

    def begin(client: MixedClient) -> None:
        client.left -= 1
        kind, arg, request = client.next_request()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        t = time.monotonic()
        sock.connect(path)  # the server's backlog holds all 256: this does not wait
        sock.setblocking(False)
        sock.sendall(request)  # a few hundred bytes: the socket buffer takes them at once
        sock.shutdown(socket.SHUT_WR)
        open_[sock.fileno()] = (client, sock, kind, arg, t, [])
        epoll.register(sock.fileno(), select.EPOLLIN)

    deadline = time.monotonic() + timeout
    try:
        for client in clients:
            begin(client)
        while open_:
            assert time.monotonic() < deadline, f"{len(open_)} requests unanswered"
            for fd, _ in epoll.poll(1.0):
                client, sock, kind, arg, t, parts = open_[fd]
                try:
                    chunk = sock.recv(65536)
                except BlockingIOError:
                    continue
                if chunk:
                    parts.append(chunk)
                    continue
                latencies.append(time.monotonic() - t)
                epoll.unregister(fd)
                sock.close()
                del open_[fd]
                reply = b"".join(parts)
                history.append((kind, arg, reply))
                if kind == "add" and reply.startswith(b'{"return"'):
                    client.mine.append(int(json.loads(reply)["return"]["id"]))
                if client.left:
                    begin(client)
    finally:
        for _, sock, *_ in open_.values():
            sock.close()
        epoll.close()
    return history, latencies


def test_256_concurrent_clients_x_100_mixed_requests(
    slirp: Start, api_dir: Path, outer: Outer
) -> None:
    _, daemon, path = start(slirp, api_dir)
    before = listeners(outer)
    started = time.monotonic()
    history, latencies = run_concurrently(path, [MixedClient(i) for i in range(256)], 240)
    elapsed = time.monotonic() - started
    assert len(history) == 25_600
    adds = check_history(history, ask(path, LIST))
    p99 = statistics.quantiles(latencies, n=100)[98]
    print(
        f"256 clients x 100 requests: {len(history) / elapsed:.0f} req/s, "
        f"p50 {statistics.median(latencies) * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, "
        f"max {max(latencies) * 1000:.1f} ms, {adds} successful adds"
    )
    # The figure is printed above; the bound is about starvation, not speed (on a loaded 2-CPU
    # machine p99 swings from 20 to 120 ms): no client may wait anywhere near its 5 s limit.
    assert p99 < 1.0
    live = json.loads(ask(path, LIST))["entries"]
    assert listeners(outer) - before == {f"127.0.0.1:{e['host_port']}/{e['proto']}" for e in live}
    assert daemon.poll() is None


# == 10,000 malformed requests ====================================================================
VALID = [
    PODMAN_ADD,
    ROOTLESSKIT_ADD,
    ROOTLESSKIT_REMOVE % 2,
    LIST + b"\n",
    add("udp", 5353, host_addr="", guest_addr=""),
]
_DEFAULTED_KEYS = re.compile(rb'"(?:host_addr|guest_addr)"')  # a corrupted one is just absent


def malformed_corpus(seed: int = 10_000) -> list[bytes]:
    rng = random.Random(seed)
    corpus: list[bytes] = []
    for request in VALID:  # every truncation
        corpus.extend(request[:n] for n in range(request.rindex(b"}") + 1))
    for _ in range(2000):  # invalid UTF-8 where it cannot be harmless
        request = rng.choice(VALID)
        end = request.rindex(b"}")
        keep = {i for m in _DEFAULTED_KEYS.finditer(request) for i in range(m.start() + 1, m.end())}
        i = rng.choice([i for i in range(end + 1) if i not in keep])
        bad = rng.choice([b"\xff", b"\xc0\x80", b"\xed\xa0\x80", b"\x80", b"\xf8\x88\x80\x80\x80"])
        corpus.append(request[:i] + bad + request[i + (rng.random() < 0.5) :])
    for _ in range(2500):  # random bytes
        corpus.append(rng.randbytes(rng.randint(1, 400)))
    bad_ports = [
        b"-0.5",
        b"70000",
        b"-1",
        b"65536",
        b"1e10",
        b"1e999",
        b"NaN",
        b"Infinity",
        b"-Infinity",
        b'"80"',
        b"true",
        b"null",
        b"[]",
        b"{}",
        b"0.5",
        b"9" * 400,
    ]
    bad_protos = [b'"TCP"', b'"sctp"', b"6", b"null", b'["tcp"]', b"{}", b'""', b'"udp6"']
    bad_addrs = [
        b'"localhost"',
        b'"1.2.3"',
        b'"256.1.1.1"',
        b'"::g"',
        b'"fe80::1%lo"',
        b'"\\u00ff"',
    ]
    for _ in range(2500):  # wrong types and out-of-range numbers
        fields = {
            b"proto": b'"tcp"',
            b"host_addr": b'"127.0.0.1"',
            b"host_port": b"%d" % rng.choice(PORTS),
            b"guest_addr": b'""',
            b"guest_port": b"80",
        }
        which = rng.choice([b"proto", b"host_addr", b"host_port", b"guest_addr", b"guest_port"])
        pool = {b"proto": bad_protos, b"host_port": bad_ports, b"guest_port": bad_ports}
        fields[which] = rng.choice(pool.get(which, bad_addrs))
        body = b",".join(b'"' + k + b'":' + v for k, v in fields.items())
        corpus.append(b'{"execute":"add_hostfwd","arguments":{' + body + b"}}")
    for _ in range(1500):  # deep nesting, balanced and not
        n = rng.choice([10, 1000, 2047, 2100, 100_000])
        opener, closer = rng.choice([(b"[", b"]"), (b'{"a":', b"}")])
        body = opener * n + b"1" + closer * n
        corpus.append(rng.choice([opener * n, add(port=0.5)[:-2] + b',"x":' + body + b"}}"]))
    for _ in range(400):  # too large, up to 1 MiB
        corpus.append(LIST[:-1] + b',"pad":"' + b"x" * rng.randint(4096, 1 << 20) + b'"}')
    while len(corpus) < 10_000:
        corpus.append(rng.choice([b"{", b"}", b"[", b'"', b"\x00", b"{\x00}"]) * rng.randint(1, 9))
    return corpus


def send_malformed(path: str, request: bytes) -> tuple[str, float]:
    t = time.monotonic()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(1)
        sock.connect(path)
        try:
            sock.sendall(request)
            sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # answered (and closed) before we were done: the reply may still be there
        try:
            reply = read_all(sock)
        except TimeoutError:
            return "timeout", time.monotonic() - t
    took = time.monotonic() - t
    if reply == b"" or reply.startswith(ERROR_PREFIX):
        return "ok", took
    return f"reply {reply[:80]!r} to {request[:80]!r}", took


def test_10000_malformed_requests(slirp: Start, api_dir: Path, outer: Outer) -> None:
    guest, daemon, path = start(slirp, api_dir)
    for port in (8090, 8091):
        assert ask(path, add(port=port, host_addr="127.0.0.1")).startswith(b'{"return"')
    table, ports = ask(path, LIST), listeners(outer)
    corpus = malformed_corpus()
    assert len(corpus) >= 10_000
    started = time.monotonic()
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda r: send_malformed(path, r), corpus))
    elapsed = time.monotonic() - started
    bad = [r for r in results if r[0] != "ok"]
    slowest = max(took for _, took in results)
    print(f"{len(corpus)} malformed requests in {elapsed:.1f} s, slowest {slowest * 1000:.0f} ms")
    assert not bad, bad[:5]
    assert slowest < 1.0
    assert daemon.poll() is None
    assert ask(path, LIST) == table and listeners(outer) == ports
    ping = guest.run(["busybox", "ping", "-c", "1", "-W", "2", "10.0.2.2"], check=False)
    assert ping.returncode == 0


def test_sigterm_closes_forwards_and_the_socket(slirp: Start, api_dir: Path, outer: Outer) -> None:
    _, daemon, path = start(slirp, api_dir)
    before = listeners(outer)
    assert ask(path, add(port=18200)) == b'{"return":{"id":1}}'
    assert listeners(outer) != before
    daemon.signal(signal.SIGTERM)
    assert daemon.wait(10) == 0
    assert not os.path.exists(path)
    assert listeners(outer) == before
