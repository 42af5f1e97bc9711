"""UDP through the daemon, from a real guest kernel to real host sockets.

Every scenario that slirp4netns also serves runs against it too (the reference), so a failure
on ours alone is ours to fix.
"""

from __future__ import annotations

import json
import time

import pytest

from tests.rig import PROGRAMS, SLAAC_WAIT, UDP_CLIENT, UDP_SERVER, Background, Remote, is_reference

pytestmark = pytest.mark.timeout(600)

SERVER, CLIENT = UDP_SERVER, UDP_CLIENT


@pytest.fixture
def servers(outer):  # type: ignore[no-untyped-def]
    started: list[Background] = []

    def start(mode: str, *args: str, prefix: list[str] | None = None) -> Background:
        server = Background(prefix or outer.prefix(), [*SERVER, mode, *args])
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()


@pytest.mark.parametrize("program", PROGRAMS)
@pytest.mark.parametrize("mtu", [1500, 65520])
def test_10000_datagrams_of_every_size_echo_back_identical(slirp, servers, program, mtu) -> None:
    """Sizes 1..65507 (fragmented by the guest and by us at MTU 1500) via 10.0.2.2."""
    echo = servers("echo")
    guest, daemon = slirp(program, extra=["--mtu", str(mtu)])
    count = 10000
    result = guest.run([*CLIENT, "echo", "10.0.2.2", echo.line, "--count", str(count)], timeout=540)
    summary = json.loads(result.stdout)
    print(f"\n{'slirp4netns' if program else 'pyslirp4netns'} MTU {mtu}: {summary}")
    assert summary == {**summary, "ok": count, "mismatched": 0, "lost": 0}, summary
    assert daemon.poll() is None


@pytest.mark.parametrize("program", PROGRAMS)
def test_dns_query_to_the_alias_is_answered_by_the_fake_resolver(slirp, servers, program) -> None:
    servers("dns", "--port", "53", "--answer", "192.0.2.53")  # resolv.conf: 127.0.0.1
    guest, _ = slirp(program)
    answer = guest.run([*CLIENT, "dns", "10.0.2.3", "53"]).stdout.decode().strip()
    assert answer == "192.0.2.53"


@pytest.mark.parametrize("program", PROGRAMS)
def test_resolv_conf_edit_takes_effect_within_a_second(slirp, servers, outer, program) -> None:
    servers("dns", "--port", "53", "--answer", "192.0.2.53")
    servers("dns", "--bind", "127.0.0.2", "--port", "53", "--answer", "192.0.2.54")
    guest, _ = slirp(program)
    query = [*CLIENT, "dns", "10.0.2.3", "53"]
    assert guest.run(query).stdout.decode().strip() == "192.0.2.53"
    original = outer.resolv.read_text()
    try:
        outer.resolv.write_text("nameserver 127.0.0.2\n")
        time.sleep(1.5)
        assert guest.run(query).stdout.decode().strip() == "192.0.2.54"
    finally:
        outer.resolv.write_text(original)


@pytest.mark.parametrize("program", PROGRAMS)
def test_udp_to_a_closed_host_port_refuses_the_guest_socket(slirp, program) -> None:
    """Ours: the host socket's port unreachable reaches the guest (ECONNREFUSED). slirp4netns
    drops it silently (contract §3.4), so its guest waits in vain: printed, not asserted."""
    guest, _ = slirp(program)
    closed = "9"  # discard: nothing listens in the outer namespace
    outcome = guest.run([*CLIENT, "once", "10.0.2.2", closed, "--timeout", "3"])
    seen = outcome.stdout.decode().strip()
    print(f"\n{'slirp4netns' if program else 'pyslirp4netns'}: {seen}")
    if program is None or not is_reference(program):
        assert seen == "ConnectionRefusedError"


def test_disable_dns_sends_the_alias_to_the_real_address(slirp, servers) -> None:
    """With --disable-dns, N+3 has no meaning: the datagram goes to 10.0.2.3 on the host side,
    which doesn't exist in the outer namespace, so the guest hears nothing back (no leak)."""
    servers("dns", "--port", "53", "--answer", "192.0.2.53")
    guest, _ = slirp(None, extra=["--disable-dns"])
    answer = guest.run([*CLIENT, "dns", "10.0.2.3", "53", "--timeout", "2"]).stdout.decode()
    assert answer.strip() in ("TimeoutError", "OSError", "ConnectionRefusedError")


@pytest.mark.parametrize("program", PROGRAMS)
def test_outbound_addr_is_the_source_the_remote_sees(slirp, servers, outer, program) -> None:
    remote = Remote(outer, extra4=["198.51.100.2"])
    try:
        peer = servers("peer", "--bind", Remote.REMOTE4, prefix=remote.prefix())
        peer6 = servers("peer", "--bind", Remote.REMOTE6, prefix=remote.prefix())
        extra = ["--outbound-addr=198.51.100.2", "--outbound-addr6=veth-r", "--enable-ipv6"]
        if program is not None:
            extra = extra[:1]  # slirp4netns 1.2.0 looks --outbound-addr6's ifname up wrongly
        guest, _ = slirp(program, extra=extra)
        seen = guest.run([*CLIENT, "once", Remote.REMOTE4, peer.line]).stdout.decode().split()
        assert seen[0] == "198.51.100.2"
        if program is None:
            guest.sh(SLAAC_WAIT)
            seen6 = guest.run([*CLIENT, "once", Remote.REMOTE6, peer6.line, "--timeout", "5"])
            assert seen6.stdout.decode().split()[0] == Remote.HOST6, seen6
    finally:
        remote.close()
