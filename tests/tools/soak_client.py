"""Guest side of benchmarks/soak.py: mixed TCP, UDP, DNS and ICMP through the daemon for a while.

Runs in a root-style guest (raw ICMP socket), by path (the standard library and flood.py beside
it). Five threads, each paced so that the load is steady rather than saturating, each operation
with a timeout:

  tcp-short  connect to HOST:TCP_PORT (an echo server), send 1..65,536 bytes, read them back,
             close; 20 a second
  tcp-long   one connection kept open, a 1,024-byte round trip every 0.1 s (reconnects if it
             breaks, counted as an error)
  udp        datagrams of 1..8,000 bytes (fragmented at MTU 1500) to HOST:UDP_PORT (an echo
             server), each awaited; a new source port (a new flow) every 50 datagrams; 50 a second
  dns        an A query to the DNS alias from a fresh socket (a new flow each time); 20 a second
  icmp       an echo request to each of --ping addresses in turn; 10 a second

Every --report seconds and at the end: one JSON line, the cumulative count of successes and of
errors by name per thread.
"""

from __future__ import annotations

import argparse
import json
import random
import socket
import struct
import threading
import time
from collections import Counter

from flood import checksum  # type: ignore[import-not-found]  # tests/tools/flood.py, beside this

DNS_QUERY = b"\x00\x00\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x04soak\x04test\x00\x00\x01\x00\x01"


class Tally:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ok: Counter[str] = Counter()
        self.errors: dict[str, Counter[str]] = {}

    def good(self, kind: str) -> None:
        with self.lock:
            self.ok[kind] += 1

    def bad(self, kind: str, why: str) -> None:
        with self.lock:
            self.errors.setdefault(kind, Counter())[why] += 1

    def line(self, elapsed: float, final: bool) -> str:
        with self.lock:
            return json.dumps(
                {
                    "elapsed": round(elapsed, 1),
                    "final": final,
                    "ok": dict(self.ok),
                    "errors": {k: dict(v) for k, v in self.errors.items()},
                }
            )


def paced(period: float, end: float, stop: threading.Event):  # type: ignore[no-untyped-def]
    """Yield every ``period`` seconds until ``end`` (or ``stop``)."""
    due = time.monotonic()
    while not stop.is_set() and time.monotonic() < end:
        yield
        due += period
        delay = due - time.monotonic()
        if delay > 0:
            stop.wait(delay)
        else:
            due = time.monotonic()  # late: no burst to catch up


def name(e: BaseException) -> str:
    return type(e).__name__


def recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(min(65536, size - len(data)))
        if not chunk:
            raise EOFError("closed early")
        data += chunk
    return bytes(data)


def tcp_short(args: argparse.Namespace, tally: Tally, end: float, stop: threading.Event) -> None:
    rng = random.Random(1)
    for _ in paced(0.05, end, stop):
        payload = rng.randbytes(rng.randint(1, 65536))
        try:
            with socket.create_connection((args.host, args.tcp_port), timeout=5) as sock:
                sock.sendall(payload)
                ok = recv_exactly(sock, len(payload)) == payload
            tally.good("tcp-short") if ok else tally.bad("tcp-short", "mismatch")
        except (OSError, EOFError) as e:
            tally.bad("tcp-short", name(e))


def tcp_long(args: argparse.Namespace, tally: Tally, end: float, stop: threading.Event) -> None:
    rng = random.Random(2)
    sock: socket.socket | None = None
    for _ in paced(0.1, end, stop):
        payload = rng.randbytes(1024)
        try:
            if sock is None:
                sock = socket.create_connection((args.host, args.tcp_port), timeout=5)
            sock.sendall(payload)
            ok = recv_exactly(sock, len(payload)) == payload
            tally.good("tcp-long") if ok else tally.bad("tcp-long", "mismatch")
        except (OSError, EOFError) as e:
            tally.bad("tcp-long", name(e))
            if sock is not None:
                sock.close()
            sock = None
    if sock is not None:
        sock.close()


def udp(args: argparse.Namespace, tally: Tally, end: float, stop: threading.Event) -> None:
    rng = random.Random(3)
    sock: socket.socket | None = None
    for i, _ in enumerate(paced(0.02, end, stop)):
        if sock is None or i % 50 == 0:
            if sock is not None:
                sock.close()
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.settimeout(1.0)
            sock.connect((args.host, args.udp_port))
        payload = rng.randbytes(rng.randint(1, 8000))
        try:
            sock.send(payload)
            while sock.recv(65535) != payload:
                pass  # a late echo of an earlier datagram
            tally.good("udp")
        except OSError as e:
            tally.bad("udp", name(e))
    if sock is not None:
        sock.close()


def dns(args: argparse.Namespace, tally: Tally, end: float, stop: threading.Event) -> None:
    for i, _ in enumerate(paced(0.05, end, stop)):
        ident = struct.pack("!H", i & 0xFFFF)
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.settimeout(2.0)
                sock.connect((args.dns, 53))
                sock.send(ident + DNS_QUERY[2:])
                answer = sock.recv(65535)
            tally.good("dns") if answer[:2] == ident else tally.bad("dns", "bad id")
        except OSError as e:
            tally.bad("dns", name(e))


def icmp(args: argparse.Namespace, tally: Tally, end: float, stop: threading.Event) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    sock.settimeout(1.0)
    ident = 0x50AC
    for seq, _ in enumerate(paced(0.1, end, stop)):
        target = args.ping[seq % len(args.ping)]
        kind = f"icmp {target}"
        seq &= 0xFFFF
        request = struct.pack("!BBHHH", 8, 0, 0, ident, seq) + b"soak" * 14
        request = request[:2] + struct.pack("!H", checksum(request)) + request[4:]
        try:
            sock.sendto(request, (target, 0))
            deadline = time.monotonic() + 1.0
            while True:
                sock.settimeout(max(0.001, deadline - time.monotonic()))
                reply, (source, _) = sock.recvfrom(2048)
                body = reply[(reply[0] & 0x0F) * 4 :]
                if source == target and body[0] == 0 and body[4:8] == request[4:8]:
                    break
            tally.good(kind)
        except OSError as e:
            tally.bad(kind, name(e))
    sock.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--host", default="10.0.2.2")
    p.add_argument("--dns", default="10.0.2.3")
    p.add_argument("--tcp-port", type=int, required=True)
    p.add_argument("--udp-port", type=int, required=True)
    p.add_argument("--ping", nargs="+", default=["10.0.2.2"])
    p.add_argument("--seconds", type=float, default=600.0)
    p.add_argument("--report", type=float, default=30.0)
    args = p.parse_args()
    tally = Tally()
    stop = threading.Event()
    start = time.monotonic()
    end = start + args.seconds
    threads = [
        threading.Thread(target=work, args=(args, tally, end, stop), daemon=True)
        for work in (tcp_short, tcp_long, udp, dns, icmp)
    ]
    for thread in threads:
        thread.start()
    try:
        while time.monotonic() < end:
            stop.wait(min(args.report, max(0.0, end - time.monotonic())))
            if time.monotonic() < end:
                print(tally.line(time.monotonic() - start, False), flush=True)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=10)
        print(tally.line(time.monotonic() - start, True), flush=True)


if __name__ == "__main__":
    main()
