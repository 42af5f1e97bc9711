"""Malformed frames from the guest: the daemon stays up, logs no traceback, and still answers."""

from __future__ import annotations

import random
import sys

import pytest

from pyslirp4netns.core.fragments import fragment_ipv4
from pyslirp4netns.wire import dhcp, icmpv6, ipv4, tcp
from tests.rig import start_ready
from tests.rig.frames import (
    ALL_ROUTERS6,
    BROADCAST4,
    DNS4,
    GATEWAY4,
    GATEWAY6,
    GUEST4,
    GUEST_MAC,
    arp_request_frame,
    echo4_frame,
    ethernet_frame,
    icmp6_frame,
    ipv4_frame,
    tcp4_frame,
    udp4_frame,
    udp6_frame,
    udp_datagram,
)

pytestmark = pytest.mark.timeout(180)

REMOTE = bytes([198, 51, 100, 10])  # nothing routes there from the loopback-only outer namespace


def valid_frames() -> list[bytes]:
    discover = dhcp.encode_reply(
        xid=1, chaddr=GUEST_MAC, message_type=dhcp.DISCOVER, server_id=GATEWAY4
    )
    discover = b"\x01" + discover[1:]  # a client's BOOTREQUEST
    return [
        arp_request_frame(GATEWAY4),
        echo4_frame(GATEWAY4, b"x" * 56),
        udp4_frame(BROADCAST4, 67, discover, sport=68),
        tcp4_frame(GATEWAY4, 80, tcp.SYN),
        udp4_frame(GATEWAY4, 5001, b"hello"),
        udp4_frame(DNS4, 53, b"\x12\x34" + bytes(10)),  # the DNS forwarder
        udp4_frame(GATEWAY4, 69, b"\x00\x01file\x00octet\x00"),  # TFTP
        echo4_frame(REMOTE, b"x" * 56),  # ping elsewhere
        *ipv6_frames(),
    ]


def ipv6_frames() -> list[bytes]:
    """NS, RS, echo and UDP over IPv6 (the daemon runs with --enable-ipv6)."""
    return [
        icmp6_frame(GATEWAY6, icmpv6.NEIGHBOR_SOLICITATION, GATEWAY6 + b"\x01\x01" + GUEST_MAC),
        icmp6_frame(ALL_ROUTERS6, icmpv6.ROUTER_SOLICITATION, b"\x01\x01" + GUEST_MAC),
        icmp6_frame(GATEWAY6, icmpv6.ECHO_REQUEST, b"y" * 40, rest=0x10001, hop_limit=64),
        udp6_frame(GATEWAY6, 5002, b"six"),
    ]


def fragment_frames(rng: random.Random) -> list[bytes]:
    """Fragments: in order, overlapping, oversized, tiny, and with lying offsets."""
    out = []
    for ident in range(200):
        payload = rng.randbytes(rng.randint(100, 6000))
        whole = udp_datagram(GUEST4, GATEWAY4, 5000, 5003, payload)
        pieces = fragment_ipv4(whole, rng.choice([68, 576, 1500]))
        for offset, more, chunk in pieces:
            if rng.random() < 0.3:
                offset = max(
                    0, offset + rng.choice([-8, 8, 16, 65528 - offset])
                )  # overlap/oversize
            frame = ipv4_frame(
                GATEWAY4,
                ipv4.PROTO_UDP,
                bytes(chunk),
                identification=ident,
                more_fragments=more or rng.random() < 0.1,
                fragment_offset=offset & ~7,
            )
            out.append(frame)
    return out


def corpus(seed: int = 1) -> list[bytes]:
    rng = random.Random(seed)
    out: list[bytes] = []
    for frame in valid_frames():
        out.extend(frame[:cut] for cut in range(14, len(frame)))  # every truncation
        for _ in range(800):  # lying fields: flip random bytes in the headers
            bad = bytearray(frame)
            for _ in range(rng.randint(1, 4)):
                bad[rng.randrange(14, min(len(bad), 80))] = rng.randrange(256)
            out.append(bytes(bad))
        ihl = bytearray(frame)
        if ihl[12:14] == b"\x08\x00":
            for value in (0x40, 0x44, 0x4F, 0x46, 0x60):  # bad version/IHL, options past the end
                ihl[14] = value
                out.append(bytes(ihl))
    out.extend(fragment_frames(rng))
    for ethertype in (0x86DD, 0x88CC, 0x8100, 0x88A8, 0x0000, 0xFFFF):  # unknown, tagged
        out.append(ethernet_frame(ethertype, bytes(46)))
    out.extend(bytes(rng.randrange(256) for _ in range(rng.randint(14, 200))) for _ in range(1000))
    return out


SENDER = """
import socket, sys
frames = open(sys.argv[1], "rb").read().split(b"\\n--frame--\\n")
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("tap0", 0))
sent = 0
for f in frames:
    if len(f) >= 14:
        s.send(f); sent += 1
print(sent)
"""


def test_malformed_corpus_leaves_the_daemon_serving(make_guest, make_daemon, outer) -> None:
    frames = corpus()
    assert len(frames) >= 5000
    data = outer.dir / "corpus.bin"
    data.write_bytes(b"\n--frame--\n".join(frames))
    data.chmod(0o644)
    guest = make_guest(rootless=True)
    daemon = start_ready(make_daemon, ["-c", "-6", "-r", "3", str(guest.pid), "tap0"])
    sent = guest.run([sys.executable, "-c", SENDER, str(data)], timeout=60).stdout.decode()
    assert int(sent) >= 5000
    ping = guest.run(["busybox", "ping", "-c", "2", "-W", "2", "10.0.2.2"], check=False)
    assert ping.returncode == 0, ping.stdout.decode() + daemon.stderr
    arping = guest.run(["busybox", "arping", "-c", "1", "-w", "3", "-I", "tap0", "10.0.2.2"])
    assert "received 1 response" in arping.stdout.decode().lower()
    ping6 = guest.run(["busybox", "ping", "-6", "-c", "2", "-W", "2", "fe80::2%tap0"], check=False)
    assert ping6.returncode == 0, ping6.stdout.decode() + daemon.stderr
    assert daemon.poll() is None
    assert "Traceback" not in daemon.stderr, daemon.stderr
