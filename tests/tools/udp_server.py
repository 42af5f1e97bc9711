"""Test UDP server: ``echo`` sends every datagram back; ``peer`` answers with the sender's
address; ``dns`` answers every query with one A record (``--answer``). Prints its port, then serves
until killed."""

from __future__ import annotations

import argparse
import socket
import struct


def dns_answer(query: bytes, address: str) -> bytes | None:
    """A response to a one-question query: the question echoed, one A record for it."""
    if len(query) < 12:
        return None
    end = 12
    while end < len(query) and query[end]:
        end += query[end] + 1
    question = query[12 : end + 5]
    header = query[:2] + struct.pack("!HHHHH", 0x8180, 1, 1, 0, 0)
    record = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + socket.inet_aton(address)
    return header + question + record


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["echo", "peer", "dns"])
    parser.add_argument("--bind", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--answer", default="192.0.2.53")
    args = parser.parse_args()
    family = socket.AF_INET6 if ":" in args.bind else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 << 20)
    sock.bind((args.bind, args.port))
    print(sock.getsockname()[1], flush=True)
    while True:
        data, peer = sock.recvfrom(65535)
        if args.mode == "echo":
            sock.sendto(data, peer)
        elif args.mode == "peer":
            sock.sendto(f"{peer[0]} {peer[1]}".encode(), peer)
        else:
            answer = dns_answer(data, args.answer)
            if answer is not None:
                sock.sendto(answer, peer)


if __name__ == "__main__":
    main()
