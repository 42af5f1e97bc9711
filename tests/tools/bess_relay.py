"""A BESS client the way User Mode Linux is one: a kernel interface whose frames travel as
SOCK_SEQPACKET messages, one Ethernet frame each.

Run inside a guest network namespace as root: ``bess_relay.py PATH``. It creates the tap
``bess0`` (10.0.2.100/24, default route via 10.0.2.2), connects to PATH, prints ``ready`` and
relays frames both ways until either side closes or it is ended.
"""

from __future__ import annotations

import os
import select
import socket
import subprocess
import sys

import pytun


def main() -> None:
    path = sys.argv[1]
    tap = pytun.TunTapDevice(name="bess0", flags=pytun.IFF_TAP | pytun.IFF_NO_PI)
    for cmd in (
        "ip link set lo up",
        "ip addr add 10.0.2.100/24 dev bess0",
        "ip link set bess0 up",
        "ip route add default via 10.0.2.2",
    ):
        subprocess.run(cmd.split(), check=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    sock.connect(path)
    print("ready", flush=True)
    fd = tap.fileno()
    while True:
        readable, _, _ = select.select([fd, sock], [], [])
        if fd in readable:
            sock.send(os.read(fd, 65536))
        if sock in readable:
            frame = sock.recv(65536)
            if not frame:
                return
            os.write(fd, frame)


if __name__ == "__main__":
    main()
