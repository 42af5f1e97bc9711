"""Port forwards through the API: host clients reach guest servers, the guest sees who
they are as slirp4netns shows them, UDP round-trips, IPv6, and the same against slirp4netns."""

from __future__ import annotations

import json
import sys

import pytest

from tests.rig import (
    PROGRAMS,
    TCP_TOOL,
    UDP_CLIENT,
    UDP_SERVER,
    Background,
    Remote,
    add_hostfwd,
    api_request,
)

pytestmark = pytest.mark.timeout(180)

SLAAC_WAIT = (  # our own fd00::100, not SLAAC's: until it is usable
    "for i in $(seq 100); do ip -6 addr show dev tap0 | grep -q 'fd00::100' && "
    "! ip -6 addr show dev tap0 | grep -q tentative && exit 0; sleep 0.1; done; exit 1"
)


def api(path: str, request: dict[str, object]) -> dict[str, object]:
    reply: dict[str, object] = json.loads(api_request(path, request))
    return reply


@pytest.mark.parametrize("program", PROGRAMS)
def test_tcp_forward_shows_the_gateway_for_loopback_and_the_real_remote_address(
    slirp, outer, api_path, background, program
) -> None:
    remote = Remote(outer)
    try:
        guest, daemon = slirp(program, extra=["-a", api_path])
        server = Background(
            outer.prefix() + guest.prefix(),
            [*TCP_TOOL, "serve", "whoami", "8080", "--bind", "0.0.0.0"],
        )
        background.append(server)
        add_hostfwd(api_path, "tcp", "0.0.0.0", 18080, "", 8080)  # "" = 10.0.2.100
        local = outer.run([*TCP_TOOL, "read", "127.0.0.1", "18080"]).stdout.decode().strip()
        assert local == "10.0.2.2", daemon.stderr
        far = remote.run([*TCP_TOOL, "read", Remote.HOST4, "18080"]).stdout.decode().strip()
        assert far == Remote.REMOTE4, daemon.stderr
    finally:
        remote.close()


@pytest.mark.parametrize("program", PROGRAMS)
def test_tcp_forward_carries_data_both_ways_and_refusal_resets(
    slirp, outer, api_path, background, program
) -> None:
    guest, daemon = slirp(program, extra=["-a", api_path])
    size = 8 << 20
    sink = Background(
        outer.prefix() + guest.prefix(), [*TCP_TOOL, "serve", "sink", "9000", "--bind", "0.0.0.0"]
    )
    background.append(sink)
    add_hostfwd(api_path, "tcp", "127.0.0.1", 19000, "10.0.2.100", 9000)
    add_hostfwd(api_path, "tcp", "127.0.0.1", 19001, "10.0.2.100", 9001)  # nothing listens there
    digest = outer.run([*TCP_TOOL, "digest", "-", "--size", str(size)]).stdout.decode().strip()
    sent = outer.run([*TCP_TOOL, "send", "127.0.0.1", "19000", "--size", str(size)], timeout=60)
    assert sent.stdout.decode().split() == [str(size), digest], daemon.stderr
    refused = outer.run([*TCP_TOOL, "read", "127.0.0.1", "19001"], check=False)
    assert refused.returncode != 0 or refused.stdout.strip() == b""


@pytest.mark.parametrize("program", PROGRAMS)
def test_udp_forward_round_trips_1000_datagrams(slirp, outer, api_path, background, program):  # type: ignore[no-untyped-def]
    guest, daemon = slirp(program, extra=["-a", api_path])
    echo = Background(
        outer.prefix() + guest.prefix(),
        [*UDP_SERVER, "echo", "--bind", "0.0.0.0", "--port", "5353"],
    )
    background.append(echo)
    add_hostfwd(api_path, "udp", "127.0.0.1", 15353, "", 5353)
    out = outer.run([*UDP_CLIENT, "echo", "127.0.0.1", "15353", "--count", "1000"], timeout=120)
    summary = json.loads(out.stdout)
    assert summary == {**summary, "ok": 1000, "mismatched": 0, "lost": 0}, daemon.stderr


def test_udp_forward_answers_loopback_clients_with_host_loopback_disabled(
    slirp, outer, api_path, background
) -> None:
    """slirp4netns drops the guest's reply to 10.0.2.2 here; we send it to the client."""
    guest, daemon = slirp(None, extra=["-a", api_path, "--disable-host-loopback"])
    echo = Background(
        outer.prefix() + guest.prefix(),
        [*UDP_SERVER, "echo", "--bind", "0.0.0.0", "--port", "5353"],
    )
    background.append(echo)
    add_hostfwd(api_path, "udp", "127.0.0.1", 15354, "", 5353)
    out = outer.run([*UDP_CLIENT, "once", "127.0.0.1", "15354", "--payload", "hi"])
    assert out.stdout.decode().strip() == "hi", daemon.stderr


def test_ipv6_forward_to_an_ipv6_guest(slirp, outer, api_path, background) -> None:
    guest, daemon = slirp(None, extra=["-a", api_path, "--enable-ipv6"])
    guest.run(["ip", "-6", "addr", "add", "fd00::100/64", "dev", "tap0", "nodad"])
    guest.sh(SLAAC_WAIT)
    server = Background(
        outer.prefix() + guest.prefix(), [*TCP_TOOL, "serve", "whoami", "8080", "--bind", "::"]
    )
    background.append(server)
    add_hostfwd(api_path, "tcp", "::1", 18086, "fd00::100", 8080)
    seen = outer.run([*TCP_TOOL, "read", "::1", "18086"]).stdout.decode().strip()
    assert seen == "fd00::2", daemon.stderr
    # an IPv4 listener may lead to an IPv6 guest too
    add_hostfwd(api_path, "tcp", "127.0.0.1", 18087, "fd00::100", 8080)
    assert outer.run([*TCP_TOOL, "read", "127.0.0.1", "18087"]).stdout.decode().strip() == "fd00::2"


@pytest.mark.parametrize("program", PROGRAMS)
def test_removed_forward_stops_listening_but_open_connections_go_on(
    slirp, outer, api_path, background, program
) -> None:
    guest, daemon = slirp(program, extra=["-a", api_path])
    echo = Background(
        outer.prefix() + guest.prefix(), [*TCP_TOOL, "serve", "echo", "7007", "--bind", "0.0.0.0"]
    )
    background.append(echo)
    rule = add_hostfwd(api_path, "tcp", "127.0.0.1", 17007, "", 7007)
    script = (
        "import socket, sys, json, time\n"
        "s = socket.create_connection(('127.0.0.1', 17007), timeout=5)\n"
        "s.sendall(b'before'); a = s.recv(100)\n"
        "print('ready', flush=True); sys.stdin.readline()\n"
        "s.sendall(b'after'); b = s.recv(100)\n"
        "print(a.decode(), b.decode(), flush=True)\n"
    )
    import subprocess

    client = subprocess.Popen(
        [*outer.prefix(), sys.executable, "-c", script],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert client.stdout is not None and client.stdin is not None
        assert client.stdout.readline().strip() == b"ready"
        assert api(api_path, {"execute": "remove_hostfwd", "arguments": {"id": rule}}) == {
            "return": {}
        }
        refused = outer.run([*TCP_TOOL, "connect", "127.0.0.1", "17007"]).stdout.decode()
        assert refused.split()[0] == "ConnectionRefusedError"
        client.stdin.write(b"go\n")
        client.stdin.flush()
        out, _ = client.communicate(timeout=10)
        assert out.decode().split() == ["before", "after"], daemon.stderr
    finally:
        client.kill()
        client.wait(5)
