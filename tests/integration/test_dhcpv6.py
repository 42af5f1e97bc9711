"""Stateless DHCPv6 (issue 14): a guest that asks gets the DNS alias fd00::3.

Two clients: a raw Information-request from a Python socket in the guest (RFC 8415 §18.2.6), and
Debian's ``dhcpcd`` (package dhcpcd-base), which asks only because our Router Advertisement now
sets the O flag: it is the proof that a stock client picks the resolver up on its own."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil
import pytest

from tests.rig import SLAAC_WAIT, wait_until

pytestmark = pytest.mark.timeout(120)

# Inside the guest: one Information-request to ff02::1:2 from port 546 asking for option 23;
# prints the Reply's source, message type, transaction id and options as JSON.
GUEST_CLIENT = r"""
import json, socket, struct, sys
index = socket.if_nametoindex("tap0")
sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
sock.bind(("::", 546, 0, index))
sock.settimeout(2.0)
client_id = bytes.fromhex("000100012c3d4e5f020000000001")
message = bytes.fromhex("0b123456")
message += struct.pack("!HH", 1, len(client_id)) + client_id
message += struct.pack("!HHHH", 6, 4, 23, 24)  # ORO: DNS servers, domain list
message += struct.pack("!HHH", 8, 2, 0)  # elapsed time
for _ in range(3):
    sock.sendto(message, ("ff02::1:2", 547, 0, index))
    try:
        reply, peer = sock.recvfrom(2048)
        break
    except TimeoutError:
        continue
else:
    print(json.dumps({"error": "no reply"}))
    sys.exit(0)
options, pos = {}, 4
while pos + 4 <= len(reply):
    code, size = struct.unpack_from("!HH", reply, pos)
    options[code] = reply[pos + 4 : pos + 4 + size].hex()
    pos += 4 + size
print(json.dumps({"src": peer[0].split("%")[0], "port": peer[1], "type": reply[0],
                  "xid": reply[1:4].hex(), "options": options}))
"""

FD00_3 = "fd000000000000000000000000000003"


def test_information_request_from_the_guest_gets_the_dns_alias(slirp) -> None:
    guest, daemon = slirp(extra=["--enable-ipv6"])
    guest.sh(SLAAC_WAIT)
    out = guest.run([sys.executable, "-c", GUEST_CLIENT], timeout=30).stdout.decode()
    reply = json.loads(out)
    assert reply == {
        "src": "fe80::2",
        "port": 547,
        "type": 7,  # Reply
        "xid": "123456",
        "options": {
            "1": "000100012c3d4e5f020000000001",  # our Client Identifier, back
            "2": "00030001525600000002",  # Server Identifier: DUID-LL of 52:56:00:00:00:02
            "23": FD00_3,
        },
    }, (out, daemon.stderr)
    assert daemon.poll() is None


def end_tree(pid: int) -> None:
    """End the process we started and everything it forked, by PID, within a bounded wait."""
    try:
        root = psutil.Process(pid)
        tree = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for proc in tree:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.terminate()
    _, alive = psutil.wait_procs(tree, timeout=10)
    for proc in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    psutil.wait_procs(alive, timeout=10)


HOOK = """#!/bin/sh
echo "$reason ${new_dhcp6_name_servers:-}" >> "$1"
"""


@pytest.mark.skipif(shutil.which("dhcpcd") is None, reason="dhcpcd (dhcpcd-base) not installed")
def test_dhcpcd_asks_because_of_the_o_flag_and_learns_fd00_3(slirp) -> None:
    guest, daemon = slirp(extra=["--enable-ipv6"], rootless=False)
    work = Path(tempfile.mkdtemp(prefix="dhcpcd-", dir="/tmp"))
    try:
        work.chmod(0o755)  # the hook may run as dhcpcd's privilege-separation user
        log = work / "events"
        log.touch(mode=0o666)
        log.chmod(0o666)
        hook = work / "hook"
        hook.write_text(HOOK.replace('"$1"', f'"{log}"'))
        hook.chmod(0o755)
        # Foreground, IPv6 only, no config file, our hook; ended by PID (timeout bounds it).
        argv = ["dhcpcd", "-6", "-B", "-f", "/dev/null", "-c", str(hook), "-t", "20"]
        argv += ["-o", "dhcp6_name_servers", "tap0"]  # ask for option 23 (RFC 3646)
        proc_argv = ["timeout", "25", *argv]
        # dhcpcd forks privilege-separation helpers that inherit stdout: a file, not a pipe,
        # so that reading what it printed never waits for a helper we have not ended yet.
        with open(work / "output", "w+b") as output:
            proc = subprocess.Popen(
                guest.outer.prefix() + guest.prefix() + proc_argv,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
            try:
                wait_until(
                    lambda: "fd00::3" in log.read_text(),
                    25,
                    "dhcpcd's INFORM6 with fd00::3",
                )
                events = log.read_text()
                assert any(
                    line.split()[:2] == ["INFORM6", "fd00::3"] for line in events.splitlines()
                ), events
            finally:
                end_tree(proc.pid)
                output.seek(0)
                print(output.read().decode(errors="replace"))
        assert daemon.poll() is None
    finally:
        shutil.rmtree(work, ignore_errors=True)
