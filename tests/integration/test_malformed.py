"""Malformed frames from the guest: the daemon stays up, logs no traceback, and still answers."""

from __future__ import annotations

import os
import random
import socket
import sys

import pytest
from rig import read_ready

from pyslirp4netns.core.fragments import fragment_ipv4
from pyslirp4netns.wire import arp, dhcp, ethernet, icmpv4, icmpv6, ipv4, ipv6, tcp, udp

pytestmark = pytest.mark.timeout(180)

GUEST_MAC = bytes.fromhex("020000000001")
GW_MAC = bytes.fromhex("52550a000202")
GUEST, GW, BCAST = bytes([10, 0, 2, 100]), bytes([10, 0, 2, 2]), b"\xff" * 4
REMOTE = bytes([198, 51, 100, 10])  # nothing routes there from the loopback-only outer namespace
GW_MAC6 = bytes.fromhex("525600000002")
GUEST6 = socket.inet_pton(socket.AF_INET6, "fe80::1")
GW6 = socket.inet_pton(socket.AF_INET6, "fd00::2")
ALL_ROUTERS6 = socket.inet_pton(socket.AF_INET6, "ff02::2")


def valid_frames() -> list[bytes]:
    eth4 = ethernet.encode(GW_MAC, GUEST_MAC, ethernet.ETHERTYPE_IPV4)
    echo = icmpv4.encode(icmpv4.ECHO_REQUEST, 0, 0x10001, b"x" * 56)
    discover = dhcp.encode_reply(xid=1, chaddr=GUEST_MAC, message_type=dhcp.DISCOVER, server_id=GW)
    discover = b"\x01" + discover[1:]  # a client's BOOTREQUEST
    syn = tcp.encode(GUEST, GW, 40000, 80, 1, 0, tcp.SYN, 65535)
    payload = b"hello"
    frames = [
        ethernet.encode(ethernet.BROADCAST, GUEST_MAC, ethernet.ETHERTYPE_ARP)
        + arp.request(GUEST_MAC, GUEST, GW),
        eth4 + ipv4.encode(GUEST, GW, ipv4.PROTO_ICMP, len(echo)) + echo,
        eth4
        + ipv4.encode(GUEST, BCAST, ipv4.PROTO_UDP, 8 + len(discover))
        + udp.encode(GUEST, BCAST, 68, 67, discover)
        + discover,
        eth4 + ipv4.encode(GUEST, GW, ipv4.PROTO_TCP, len(syn)) + syn,
        eth4
        + ipv4.encode(GUEST, GW, ipv4.PROTO_UDP, 8 + len(payload))
        + udp.encode(GUEST, GW, 5000, 5001, payload)
        + payload,
        udp4(bytes([10, 0, 2, 3]), 53, b"\x12\x34" + bytes(10)),  # the DNS forwarder
        udp4(GW, 69, b"\x00\x01file\x00octet\x00"),  # TFTP
        eth4 + ipv4.encode(GUEST, REMOTE, ipv4.PROTO_ICMP, len(echo)) + echo,  # ping elsewhere
        *ipv6_frames(),
    ]
    return frames


def udp4(dst: bytes, port: int, payload: bytes) -> bytes:
    eth4 = ethernet.encode(GW_MAC, GUEST_MAC, ethernet.ETHERTYPE_IPV4)
    header = udp.encode(GUEST, dst, 5000, port, payload)
    return eth4 + ipv4.encode(GUEST, dst, ipv4.PROTO_UDP, 8 + len(payload)) + header + payload


def ipv6_frames() -> list[bytes]:
    """NS, RS, echo and UDP over IPv6 (the daemon runs with --enable-ipv6)."""
    eth6 = ethernet.encode(GW_MAC6, GUEST_MAC, ethernet.ETHERTYPE_IPV6)
    out = []
    for dst, kind, rest, body, hops in (
        (GW6, icmpv6.NEIGHBOR_SOLICITATION, 0, GW6 + b"\x01\x01" + GUEST_MAC, 255),
        (ALL_ROUTERS6, icmpv6.ROUTER_SOLICITATION, 0, b"\x01\x01" + GUEST_MAC, 255),
        (GW6, icmpv6.ECHO_REQUEST, 0x10001, b"y" * 40, 64),
    ):
        message = icmpv6.encode(GUEST6, dst, kind, 0, rest, body)
        out.append(eth6 + ipv6.encode(GUEST6, dst, 58, len(message), hop_limit=hops) + message)
    data = b"six"
    header = udp.encode(GUEST6, GW6, 5000, 5002, data)
    out.append(eth6 + ipv6.encode(GUEST6, GW6, 17, 8 + len(data)) + header + data)
    return out


def fragment_frames(rng: random.Random) -> list[bytes]:
    """Fragments: in order, overlapping, oversized, tiny, and with lying offsets."""
    eth4 = ethernet.encode(GW_MAC, GUEST_MAC, ethernet.ETHERTYPE_IPV4)
    out = []
    for ident in range(200):
        payload = rng.randbytes(rng.randint(100, 6000))
        whole = udp.encode(GUEST, GW, 5000, 5003, payload) + payload
        pieces = fragment_ipv4(whole, rng.choice([68, 576, 1500]))
        for offset, more, chunk in pieces:
            if rng.random() < 0.3:
                offset = max(
                    0, offset + rng.choice([-8, 8, 16, 65528 - offset])
                )  # overlap/oversize
            header = ipv4.encode(
                GUEST,
                GW,
                ipv4.PROTO_UDP,
                len(chunk),
                identification=ident,
                more_fragments=more or rng.random() < 0.1,
                fragment_offset=offset & ~7,
            )
            out.append(eth4 + header + bytes(chunk))
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
        out.append(GW_MAC + GUEST_MAC + ethertype.to_bytes(2, "big") + bytes(46))
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


def test_malformed_corpus_leaves_the_daemon_serving(make_guest, make_daemon, pipes, outer) -> None:
    frames = corpus()
    assert len(frames) >= 5000
    data = outer.dir / "corpus.bin"
    data.write_bytes(b"\n--frame--\n".join(frames))
    data.chmod(0o644)
    guest = make_guest(rootless=True)
    r, w = pipes()
    daemon = make_daemon(["-c", "-6", "-r", "3", str(guest.pid), "tap0"], fds={3: w})
    os.close(w)
    assert read_ready(r, 30) == b"1", daemon.stderr
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
