"""--ipv6-prefix (issue 14, our extension): the guest's SLAAC address, the gateway and its
traffic move to the prefix given; without the flag everything stays on fd00::/64."""

from __future__ import annotations

import pytest

from tests.rig import SLAAC_WAIT, UDP_CLIENT, UDP_SERVER, Background

pytestmark = pytest.mark.timeout(120)


def test_guest_autoconfigures_in_the_prefix_and_reaches_the_host_through_its_gateway(
    slirp, outer
) -> None:
    peer = Background(outer.prefix(), [*UDP_SERVER, "peer", "--bind", "::1"])
    try:
        guest, daemon = slirp(extra=["--enable-ipv6", "--ipv6-prefix=fd00:1234::/64"])
        guest.sh(SLAAC_WAIT)
        addresses = guest.sh("ip -6 addr show dev tap0 scope global")
        assert "inet6 fd00:1234::" in addresses and "inet6 fd00::" not in addresses, addresses
        routes = guest.sh("ip -6 route show dev tap0")
        assert "fd00:1234::/64" in routes and "default via fe80::2" in routes, routes
        ping = guest.run(["busybox", "ping", "-6", "-c", "1", "-W", "3", "fd00:1234::2"])
        assert b"1 packets received" in ping.stdout, ping
        seen = guest.run([*UDP_CLIENT, "once", "fd00:1234::2", peer.line, "--timeout", "5"])
        assert seen.stdout.decode().split()[0] == "::1", seen  # mapped to host loopback
        neighbours = guest.sh("ip -6 neigh show dev tap0")
        assert "fd00:1234::2 lladdr 52:56:00:00:00:02" in neighbours, neighbours
        assert daemon.poll() is None
    finally:
        peer.close()
