"""A real DHCP client (busybox udhcpc) in the guest, without -c, leases N+15 from the daemon."""

from __future__ import annotations

import stat

import pytest

from tests.rig import PROGRAMS, start_ready

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize("program", PROGRAMS)
def test_udhcpc_leases_the_first_pool_address(make_guest, make_daemon, outer, program):
    guest = make_guest(rootless=True)
    start_ready(make_daemon, ["-r", "3", str(guest.pid), "tap0"], program=program)
    script = outer.dir / "udhcpc.sh"
    script.write_text(
        '#!/bin/sh\n[ "$1" = bound ] && echo "ip=$ip subnet=$subnet router=$router dns=$dns '
        'serverid=$serverid lease=$lease"\nexit 0\n'
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXOTH | stat.S_IROTH)
    guest.run(["ip", "link", "set", "tap0", "up"])
    leases = []
    for _ in range(2):  # the same MAC gets the same lease again
        out = guest.sh(f"busybox udhcpc -i tap0 -f -q -n -t 4 -T 1 -s {script}", timeout=30)
        leases.append(out.strip().splitlines()[-1])
    assert (
        leases[0]
        == leases[1]
        == (
            "ip=10.0.2.15 subnet=255.255.255.0 router=10.0.2.2 dns=10.0.2.3 "
            "serverid=10.0.2.2 lease=86400"
        )
    ), leases
