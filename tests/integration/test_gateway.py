"""From the guest: ARP and ping for the gateway and DNS aliases, answered by the daemon."""

from __future__ import annotations

import re

import pytest

from tests.rig import PROGRAMS, start_ready

pytestmark = pytest.mark.timeout(120)


def configured_guest(make_guest, make_daemon, rootless: bool, extra: list[str], program):  # type: ignore[no-untyped-def]
    guest = make_guest(rootless=rootless)
    args = [*extra, "-c", "-r", "3", str(guest.pid), "tap0"]
    return guest, start_ready(make_daemon, args, program=program)


@pytest.mark.parametrize(
    "extra", [[], ["--disable-host-loopback", "--disable-dns"]], ids=["default", "disabled"]
)
@pytest.mark.parametrize("rootless", [False, True], ids=["root", "rootless"])
@pytest.mark.parametrize("program", PROGRAMS)
def test_ping_and_arp_for_the_aliases(make_guest, make_daemon, rootless, extra, program):
    """The same scenario against slirp4netns (the reference) and us."""
    guest, daemon = configured_guest(make_guest, make_daemon, rootless, extra, program)
    for alias, mac in (("10.0.2.2", "52:55:0a:00:02:02"), ("10.0.2.3", "52:55:0a:00:02:03")):
        ping = guest.run(["busybox", "ping", "-c", "3", "-W", "2", alias], check=False)
        assert ping.returncode == 0, ping.stdout.decode() + ping.stderr.decode()
        assert "3 packets received" in ping.stdout.decode()
        assert re.search(r"ttl=255", ping.stdout.decode())
        arping = guest.run(["busybox", "arping", "-c", "2", "-w", "3", "-I", "tap0", alias])
        out = arping.stdout.decode().lower()
        assert "received 2 response" in out and mac in out, out
    # nobody else answers ARP (contract §3.2)
    silent = guest.run(
        ["busybox", "arping", "-c", "1", "-w", "2", "-I", "tap0", "10.0.2.5"], check=False
    )
    assert "received 0 response" in silent.stdout.decode().lower()
    assert daemon.poll() is None
