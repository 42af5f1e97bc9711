"""Guest-side UDP client. ``echo``: N datagrams of sizes 1..65507 (seeded), each sent and awaited
in turn (a lost one is resent, at most 3 times), compared byte for byte; prints a JSON summary.
``once``: send one datagram on a connected socket and print what happened (the reply, or the
error's name, e.g. ConnectionRefusedError). ``dns``: one A query, print the answer's address or
the error's name."""

from __future__ import annotations

import argparse
import errno
import json
import random
import socket
import time


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["echo", "once", "dns"])
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("--count", type=int, default=10000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--payload", default="hello")
    parser.add_argument("--timeout", type=float, default=3.0)
    parser.add_argument(
        "--recverr",
        action="store_true",
        help="dns, once: IP_RECVERR on, so every ICMP error (not only port unreachable) fails "
        "the socket; errors are printed as their errno name (ENETUNREACH, ...)",
    )
    args = parser.parse_args()
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    if args.recverr:
        v4 = family == socket.AF_INET
        # IP_RECVERR 11, IPV6_RECVERR 25 (linux/in.h, linux/in6.h; not in every socket module)
        sock.setsockopt(socket.IPPROTO_IP if v4 else socket.IPPROTO_IPV6, 11 if v4 else 25, 1)
    sock.connect((args.host, args.port))

    def failure(e: OSError) -> str:
        if args.recverr and e.errno is not None:
            return errno.errorcode.get(e.errno, type(e).__name__)
        return type(e).__name__

    if args.mode == "dns":
        # One A query for example.test; print the address of the answer (or the error).
        sock.settimeout(args.timeout)
        query = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00"
        query += b"\x07example\x04test\x00\x00\x01\x00\x01"
        try:
            sock.send(query)
            answer = sock.recv(65535)
            print(socket.inet_ntoa(answer[-4:]) if answer[:2] == b"\x12\x34" else "bad id")
        except OSError as e:
            print(failure(e))
        return
    if args.mode == "once":
        sock.settimeout(args.timeout)
        try:
            sock.send(args.payload.encode())
            print(sock.recv(65535).decode(errors="replace"))
        except OSError as e:
            print(failure(e))
        return
    rng = random.Random(args.seed)
    sizes = [1, 2, 1472, 1473, 65507, 65506, 8192, 65000]
    sizes += [rng.randint(1, 65507) for _ in range(args.count - len(sizes))]
    sock.settimeout(1.0)
    ok = mismatched = resent = lost = 0
    start = time.monotonic()
    for index, size in enumerate(sizes):
        payload = (
            index.to_bytes(4, "big") + rng.randbytes(size)[4:] if size >= 4 else rng.randbytes(size)
        )
        for attempt in range(4):
            if attempt:
                resent += 1
            sock.send(payload)
            try:
                while True:
                    reply = sock.recv(65535)
                    if size < 4 or reply[:4] == payload[:4]:
                        break  # a late answer to an earlier datagram is skipped
            except TimeoutError:
                continue
            if reply == payload:
                ok += 1
            else:
                mismatched += 1
            break
        else:
            lost += 1
    elapsed = time.monotonic() - start
    print(
        json.dumps(
            {
                "ok": ok,
                "mismatched": mismatched,
                "resent": resent,
                "lost": lost,
                "count": len(sizes),
                "seconds": round(elapsed, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
