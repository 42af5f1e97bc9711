"""--outbound-addr / --outbound-addr6 applied to ICMP echo (issue 14): the ping socket the
daemon opens for a guest echo to another host is bound to the outbound address, so the remote
sees that source (UDP: tests/integration/test_udp.py)."""

from __future__ import annotations

import sys

import pytest

from tests.rig import SLAAC_WAIT, Background, Remote

pytestmark = pytest.mark.timeout(120)

RANGE = "net.ipv4.ping_group_range"  # per network namespace: Outer's only

# In the remote: print the source of the first ICMP(v6) echo request that arrives.
SNIFFER = r"""
import socket, sys
v6 = sys.argv[1] == "6"
family = socket.AF_INET6 if v6 else socket.AF_INET
sock = socket.socket(family, socket.SOCK_RAW, 58 if v6 else socket.IPPROTO_ICMP)
sock.settimeout(20)
print("ready", flush=True)
while True:
    data, peer = sock.recvfrom(65535)
    kind = data[0] if v6 else data[(data[0] & 15) * 4]
    if kind == (128 if v6 else 8):
        print(peer[0], flush=True)
        break
"""


def test_ping_to_a_remote_leaves_from_the_outbound_addresses(slirp, outer) -> None:
    remote = Remote(outer, extra4=["198.51.100.2"])
    sniffers: list[Background] = []
    # Ping sockets for every gid in Outer, so that this runs sandboxed too (no CAP_NET_RAW).
    before = outer.run(["sysctl", "-n", RANGE]).stdout.decode().split()
    outer.run(["sysctl", "-qw", f"{RANGE}=0 2147483647"])
    try:
        extra = ["--outbound-addr=198.51.100.2", "--outbound-addr6=veth-r", "--enable-ipv6"]
        guest, daemon = slirp(extra=extra)
        guest.sh(SLAAC_WAIT)
        for version, target, expected in (
            ("4", Remote.REMOTE4, "198.51.100.2"),
            ("6", Remote.REMOTE6, Remote.HOST6),
        ):
            sniffer = Background(remote.prefix(), [sys.executable, "-c", SNIFFER, version])
            sniffers.append(sniffer)
            ping = guest.run(
                ["busybox", "ping", f"-{version}", "-c", "1", "-W", "5", target], check=False
            )
            assert b"1 packets received" in ping.stdout, (ping, daemon.stderr)
            assert sniffer.output(timeout=10).strip() == expected
        assert daemon.poll() is None
    finally:
        for sniffer in sniffers:
            sniffer.close()
        remote.close()
        outer.run(["sysctl", "-qw", f"{RANGE}={' '.join(before)}"])
