"""ICMP echo from the guest to a "remote" host (a namespace behind a veth in the outer one).

slirp4netns tries a ping socket, then a raw socket (contract §3.5); so do we, and with neither we
say so once on stderr instead of faking an answer. The same scenarios run against slirp4netns.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.rig import HARDENED, PROGRAMS, SLAAC_WAIT, Remote, is_reference

pytestmark = pytest.mark.timeout(120)

RANGE = "net.ipv4.ping_group_range"


@pytest.fixture
def remote(outer) -> Iterator[Remote]:  # type: ignore[no-untyped-def]
    host = Remote(outer)
    try:
        yield host
    finally:
        host.close()


@pytest.fixture
def ping_range(outer) -> Iterator[None]:  # type: ignore[no-untyped-def]
    """Let every gid open ping sockets in the outer namespace for this test only."""
    before = outer.run(["sysctl", "-n", RANGE]).stdout.decode().split()
    outer.run(["sysctl", "-qw", f"{RANGE}=0 2147483647"])
    try:
        yield
    finally:
        outer.run(["sysctl", "-qw", f"{RANGE}={' '.join(before)}"])


def pings(guest, target: str, *flags: str) -> str:  # type: ignore[no-untyped-def]
    out = guest.run(["busybox", "ping", *flags, "-c", "3", "-W", "2", target], check=False)
    return out.stdout.decode() + out.stderr.decode()


@pytest.mark.parametrize("program", PROGRAMS)
@pytest.mark.skipif(HARDENED, reason="--enable-sandbox drops CAP_NET_RAW (slirp4netns's too)")
def test_root_daemon_pings_a_remote_host_with_a_raw_socket(slirp, remote, program) -> None:
    guest, daemon = slirp(program, rootless=False)
    out = pings(guest, Remote.REMOTE4)
    assert "3 packets received" in out, out + daemon.stderr


@pytest.mark.parametrize("program", PROGRAMS)
def test_unprivileged_daemon_pings_through_ping_sockets(slirp, remote, ping_range, unpriv, program):  # type: ignore[no-untyped-def]
    guest, daemon = slirp(program, rootless=True, user=unpriv)
    out = pings(guest, Remote.REMOTE4)
    assert "3 packets received" in out, out + daemon.stderr


@pytest.mark.parametrize("program", PROGRAMS)
def test_unprivileged_daemon_without_ping_sockets(slirp, remote, unpriv, program) -> None:
    """Ours: no answer and one clear line naming ping_group_range. slirp4netns falls back to a
    UDP datagram to port 7 (printed, not asserted)."""
    guest, daemon = slirp(program, rootless=True, user=unpriv)
    out = pings(guest, Remote.REMOTE4)
    if program is not None and is_reference(program):
        print(f"\nslirp4netns: {out.splitlines()[-1]!r}")
        return
    assert "0 packets received" in out, out
    assert daemon.stderr.count("ping_group_range") == 1, daemon.stderr
    assert "3 packets received" in pings(guest, "10.0.2.2")  # the gateway still answers


@pytest.mark.skipif(HARDENED, reason="--enable-sandbox drops CAP_NET_RAW")
def test_ipv6_ping_to_a_remote_host(slirp, remote) -> None:
    """slirp4netns can't ("external icmpv6 not supported yet"); we can, with a raw socket."""
    guest, daemon = slirp(None, extra=["--enable-ipv6"], rootless=False)
    guest.sh(SLAAC_WAIT)
    out = pings(guest, Remote.REMOTE6, "-6")
    assert "3 packets received" in out, out + daemon.stderr
    assert "3 packets received" in pings(guest, "fd00::2", "-6")
