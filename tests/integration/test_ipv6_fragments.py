"""Guest IPv6 fragments (issue 14): UDP datagrams bigger than the guest's MTU leave its kernel
in fragments (RFC 8200 §4.5) and must reach the host socket whole; the echo comes back
fragmented by us. Before, every IPv6 fragment was dropped."""

from __future__ import annotations

import json
import sys

import pytest

from tests.rig import SLAAC_WAIT, UDP_SERVER, Background

pytestmark = pytest.mark.timeout(180)

# Run inside the guest: one connected socket, each size sent once (retried twice on loss) and
# its echo compared by SHA-256; prints a JSON summary.
GUEST_CLIENT = r"""
import hashlib, json, random, socket, sys
host, port = sys.argv[1], int(sys.argv[2])
sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
sock.settimeout(2.0)
sock.connect((host, port))
rng = random.Random(14)
result = {}
for size in map(int, sys.argv[3:]):
    payload = rng.randbytes(size)
    want = hashlib.sha256(payload).hexdigest()
    got = "lost"
    for _ in range(3):
        sock.send(payload)
        try:
            echo = sock.recv(70000)
        except TimeoutError:
            continue
        got = "ok" if hashlib.sha256(echo).hexdigest() == want else f"bad {len(echo)}"
        break
    result[size] = got
print(json.dumps(result))
"""

SIZES = [1452, 1453, 4000, 9000, 30000, 65000, 65527]  # 65527: IPv6 UDP's largest payload


def test_fragmented_udp_over_ipv6_arrives_whole_and_echoes_back(slirp, outer) -> None:
    echo = Background(outer.prefix(), [*UDP_SERVER, "echo", "--bind", "::1"])
    try:
        guest, daemon = slirp(extra=["--enable-ipv6"])  # guest MTU 1500
        guest.sh(SLAAC_WAIT)
        argv = [sys.executable, "-c", GUEST_CLIENT, "fd00::2", echo.line, *map(str, SIZES)]
        out = guest.run(argv, timeout=60).stdout.decode()
        assert json.loads(out) == {str(size): "ok" for size in SIZES}, (out, daemon.stderr)
        assert daemon.poll() is None
    finally:
        echo.close()
