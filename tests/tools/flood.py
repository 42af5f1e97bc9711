"""Guest-side floods for the reliability tests and benchmarks/floods.py (runs in the guest).

Frames are written straight onto tap0 with an AF_PACKET socket, addressed to the gateway's MAC,
so the guest kernel keeps no state for them (a flood, not a client). Standard library only: this
file runs by path inside the guest namespace.

  syn ADDR PORT --count N --seconds S   N TCP SYNs from our address, random source ports, spread
                                        over S seconds; the guest kernel answers any SYN-ACK with
                                        a RST, as a real flooder's host would
  frags ADDR --count N                  N incomplete IPv4 fragment sets (first fragment only,
                                        MF set, 1,024 bytes each) toward ADDR:9 (UDP)
  udp ADDR PORT --count N               one UDP datagram from each of N source ports
  ports ADDR --inflight K [--last P]    a non-blocking connect to every port 1-P (65535) of
                                        ADDR, at most K outstanding; prints the outcomes as JSON
  ping ADDR --seconds S                 an ICMP echo (ping socket) every 0.1 s for S seconds;
                                        prints the worst round trip and the losses as JSON

Each mode prints one JSON line at the end.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import random
import selectors
import socket
import struct
import time

GATEWAY_MAC = bytes.fromhex("52550a000202")  # slirp4netns's gateway MAC
ETH_P_IP = 0x0800


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ipv4_header(src: bytes, dst: bytes, protocol: int, length: int, ident: int, frag: int) -> bytes:
    header = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + length, ident, frag, 64, protocol, 0, src, dst
    )
    return header[:10] + struct.pack("!H", checksum(header)) + header[12:]


def transport_checksum(src: bytes, dst: bytes, protocol: int, segment: bytes) -> int:
    pseudo = struct.pack("!4s4sBBH", src, dst, 0, protocol, len(segment))
    return checksum(pseudo + segment)


class Tap:
    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_IP))
        self.sock.bind(("tap0", ETH_P_IP))
        self.mac = self.sock.getsockname()[4]
        self.gateway_mac = gateway_mac()
        self.src = socket.inet_aton(our_address())
        self.sent = 0
        self.dropped = 0

    def send(self, packet: bytes) -> None:
        frame = self.gateway_mac + self.mac + struct.pack("!H", ETH_P_IP) + packet
        try:
            self.sock.send(frame)
            self.sent += 1
        except OSError as e:
            if e.errno not in (errno.ENOBUFS, errno.EAGAIN):
                raise
            self.dropped += 1


def our_address() -> str:
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("10.0.2.2", 9))
        return str(probe.getsockname()[0])
    finally:
        probe.close()


def gateway_mac() -> bytes:
    """The gateway's MAC from the guest's neighbour table (after one datagram), else the default."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.sendto(b"", ("10.0.2.2", 9))
    probe.close()
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        with open("/proc/net/arp") as table:
            for line in table.readlines()[1:]:
                fields = line.split()
                if fields[0] == "10.0.2.2" and fields[3] != "00:00:00:00:00:00":
                    return bytes.fromhex(fields[3].replace(":", ""))
        time.sleep(0.05)
    return GATEWAY_MAC


def paced(count: int, seconds: float):  # type: ignore[no-untyped-def]
    """Yield 0..count-1, spread evenly over ``seconds`` (in bursts of 100)."""
    start = time.monotonic()
    for i in range(count):
        if seconds and i % 100 == 0:
            ahead = start + seconds * i / count - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
        yield i


def syn_flood(args: argparse.Namespace) -> dict[str, object]:
    tap = Tap()
    dst = socket.inet_aton(args.addr)
    rng = random.Random(1)
    start = time.monotonic()
    for i in paced(args.count, args.seconds):
        sport = 1024 + (i % 64000)
        seq = rng.getrandbits(32)
        options = struct.pack("!BBH", 2, 4, 1460)
        header = struct.pack("!HHIIBBHHH", sport, args.port, seq, 0, 6 << 4, 0x02, 64240, 0, 0)
        segment = header + options
        csum = transport_checksum(tap.src, dst, 6, segment)
        segment = segment[:16] + struct.pack("!H", csum) + segment[18:]
        tap.send(ipv4_header(tap.src, dst, 6, len(segment), i & 0xFFFF, 0) + segment)
    return {"sent": tap.sent, "dropped": tap.dropped, "seconds": round(time.monotonic() - start, 2)}


def fragment_flood(args: argparse.Namespace) -> dict[str, object]:
    tap = Tap()
    dst = socket.inet_aton(args.addr)
    payload = struct.pack("!HHHH", 40000, 9, 8 + 2048, 0) + bytes(1016)  # claims 2,048 bytes
    start = time.monotonic()
    for i in paced(args.count, args.seconds):
        tap.send(ipv4_header(tap.src, dst, 17, len(payload), i & 0xFFFF, 0x2000) + payload)
    return {"sent": tap.sent, "dropped": tap.dropped, "seconds": round(time.monotonic() - start, 2)}


def udp_flood(args: argparse.Namespace) -> dict[str, object]:
    tap = Tap()
    dst = socket.inet_aton(args.addr)
    start = time.monotonic()
    for i in paced(args.count, args.seconds):
        sport = 1 + (i % 65535)
        data = b"flow %d" % i
        datagram = struct.pack("!HHHH", sport, args.port, 8 + len(data), 0) + data
        csum = transport_checksum(tap.src, dst, 17, datagram) or 0xFFFF
        datagram = datagram[:6] + struct.pack("!H", csum) + datagram[8:]
        tap.send(ipv4_header(tap.src, dst, 17, len(datagram), i & 0xFFFF, 0) + datagram)
    return {"sent": tap.sent, "dropped": tap.dropped, "seconds": round(time.monotonic() - start, 2)}


def port_scan(args: argparse.Namespace) -> dict[str, object]:
    selector = selectors.DefaultSelector()
    outcomes: dict[str, int] = {}
    pending: dict[socket.socket, float] = {}
    next_port = 1
    peak = 0
    start = time.monotonic()
    deadline = start + args.seconds
    while (next_port <= args.last or pending) and time.monotonic() < deadline:
        while next_port <= args.last and len(pending) < args.inflight:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            code = sock.connect_ex((args.addr, next_port))
            next_port += 1
            if code in (0, errno.EINPROGRESS):
                selector.register(sock, selectors.EVENT_WRITE)
                pending[sock] = time.monotonic()
            else:
                name = errno.errorcode.get(code, str(code))
                outcomes[name] = outcomes.get(name, 0) + 1
                sock.close()
        peak = max(peak, len(pending))
        for key, _ in selector.select(0.1):
            sock = key.fileobj  # type: ignore[assignment]
            code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            name = "connected" if code == 0 else errno.errorcode.get(code, str(code))
            outcomes[name] = outcomes.get(name, 0) + 1
            selector.unregister(sock)
            del pending[sock]
            sock.close()
        now = time.monotonic()
        for sock, since in list(pending.items()):
            if now - since > 10:
                outcomes["timeout"] = outcomes.get("timeout", 0) + 1
                selector.unregister(sock)
                del pending[sock]
                sock.close()
    return {
        "outcomes": outcomes,
        "peak_inflight": peak,
        "seconds": round(time.monotonic() - start, 2),
        "unfinished": args.last + 1 - next_port + len(pending),
    }


def pinger(args: argparse.Namespace) -> dict[str, object]:
    # A raw socket (the guest is root style): ping sockets are off in a new namespace.
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    sock.settimeout(1.0)
    worst = 0.0
    lost = 0
    sent = 0
    end = time.monotonic() + args.seconds
    while time.monotonic() < end:
        sent += 1
        request = struct.pack("!BBHHH", 8, 0, 0, 0x4242, sent) + b"flood-ping"
        request = request[:2] + struct.pack("!H", checksum(request)) + request[4:]
        started = time.monotonic()
        sock.sendto(request, (args.addr, 0))
        try:
            while True:
                reply = sock.recv(2048)
                icmp = reply[(reply[0] & 0x0F) * 4 :]
                if icmp[0] == 0 and struct.unpack_from("!HH", icmp, 4) == (0x4242, sent):
                    break
            worst = max(worst, time.monotonic() - started)
        except TimeoutError:
            lost += 1
        time.sleep(max(0.0, 0.1 - (time.monotonic() - started)))
    return {"sent": sent, "lost": lost, "worst_ms": round(worst * 1000, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("mode", choices=["syn", "frags", "udp", "ports", "ping"])
    p.add_argument("addr")
    p.add_argument("port", type=int, nargs="?", default=9)
    p.add_argument("--count", type=int, default=1000)
    p.add_argument("--seconds", type=float, default=0.0)
    p.add_argument("--inflight", type=int, default=10000)
    p.add_argument("--last", type=int, default=65535, help="ports: the last port to try")
    args = p.parse_args()
    modes = {
        "syn": syn_flood,
        "frags": fragment_flood,
        "udp": udp_flood,
        "ports": port_scan,
        "ping": pinger,
    }
    if args.mode == "ping" and not args.seconds:
        args.seconds = 5.0
    if args.mode == "ports" and not args.seconds:
        args.seconds = 600.0
    print(json.dumps(modes[args.mode](args)), flush=True)
    os._exit(0)  # nothing to tear down; the sockets go with the process


if __name__ == "__main__":
    main()
