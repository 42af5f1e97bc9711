"""TCP test tool, run on the host side (``serve``) or in the guest (``send``, ``recv``, ...).

Data is a deterministic stream (a 1 MiB block from a seeded generator, repeated), so both ends
can produce it; every check is a SHA-256 of what actually arrived.

serve MODE: listen on --bind:--port (0 = any), print the port, then for each connection:
  echo    send back everything, then close after the peer's FIN
  sink    read to EOF, answer "<bytes> <sha256>" and close
  source  send --size bytes, then FIN; then read to EOF and answer nothing
  halfsrc read to EOF (counting), then send --size bytes and close (data after the peer's FIN)
  slow    read at --rate bytes/s until EOF
  reset   accept, then close with RST at once
  late-reset  accept, read one byte, then close with RST
  source-reset  send --size bytes, wait 0.5 s, then close with RST (a reset mid-stream)
  whoami  send the peer's address, then close
Clients: send (send --size, half-close, print the sink's answer), recv (read to EOF, print
"<bytes> <sha256>"), echo (N parallel connections each echoing --size bytes; prints "ok N"),
connect (print the outcome name and the time it took in ms), halfsend (send --size, SHUT_WR,
then read to EOF: prints "<bytes> <sha256>"), slowrecv (read at --rate bytes/s for --seconds,
then at full speed to EOF: prints "<bytes> <sha256>"), recvreset (the same until EOF or an
error: prints "<bytes> <sha256> <eof or the error's name>"), many (open --count connections with
at most --inflight connects outstanding, echo 16 bytes on each one that opened, print JSON, hold
them --hold seconds).
"""

from __future__ import annotations

import argparse
import errno
import hashlib
import json
import random
import resource
import selectors
import socket
import struct
import sys
import threading
import time

BLOCK = random.Random(7).randbytes(1 << 20)


def stream_chunks(size: int):  # type: ignore[no-untyped-def]
    view = memoryview(BLOCK)
    left = size
    while left > 0:
        n = min(left, len(BLOCK))
        yield view[:n]
        left -= n


def expected_digest(size: int) -> str:
    h = hashlib.sha256()
    for chunk in stream_chunks(size):
        h.update(chunk)
    return h.hexdigest()


def send_all(sock: socket.socket, size: int) -> None:
    for chunk in stream_chunks(size):
        sock.sendall(chunk)


def read_all(sock: socket.socket) -> tuple[int, str]:
    h = hashlib.sha256()
    total = 0
    buf = bytearray(1 << 20)
    while True:
        n = sock.recv_into(buf)
        if not n:
            return total, h.hexdigest()
        h.update(memoryview(buf)[:n])
        total += n


def serve_one(conn: socket.socket, args: argparse.Namespace) -> None:
    try:
        if args.mode == "echo":
            while data := conn.recv(1 << 20):
                conn.sendall(data)
        elif args.mode == "sink":
            total, digest = read_all(conn)
            conn.sendall(f"{total} {digest}".encode())
        elif args.mode == "source":
            send_all(conn, args.size)
            conn.shutdown(socket.SHUT_WR)
            read_all(conn)
        elif args.mode == "halfsrc":
            read_all(conn)
            send_all(conn, args.size)
        elif args.mode == "slow":
            while conn.recv(max(1, args.rate // 10)):
                time.sleep(0.1)
        elif args.mode in ("reset", "late-reset", "source-reset"):
            if args.mode == "source-reset":
                send_all(conn, args.size)
                time.sleep(0.5)  # every byte is through the daemon before the RST
            if args.mode == "late-reset":
                # Reset once the client's first byte is in: a reset racing the connect reaches
                # the guest as a refused connection (slirp4netns's handshake is not over until
                # its host connect completes), not as a peer reset.
                conn.recv(1)
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        elif args.mode == "whoami":
            conn.sendall(str(conn.getpeername()[0]).encode())
    except OSError:
        pass
    finally:
        conn.close()


def serve(args: argparse.Namespace) -> None:
    family = socket.AF_INET6 if ":" in args.bind else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if args.mode == "slow":
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    listener.bind((args.bind, args.port))
    listener.listen(4096)
    print(listener.getsockname()[1], flush=True)
    while True:
        conn, _ = listener.accept()
        if args.mode in ("reset", "late-reset"):  # source-reset: in a thread, it sleeps
            serve_one(conn, args)
            continue
        threading.Thread(target=serve_one, args=(conn, args), daemon=True).start()


def connect(args: argparse.Namespace) -> socket.socket:
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.settimeout(args.timeout)
    sock.connect((args.host, args.port))
    return sock


def parallel_echo(args: argparse.Namespace) -> None:
    """N connections at once, each sending --size bytes and reading them back (one selector)."""
    sel = selectors.DefaultSelector()
    expected = bytes(BLOCK[: args.size])
    states = []
    for _ in range(args.count):
        sock = connect(args)
        sock.setblocking(False)
        state = {"sock": sock, "sent": 0, "got": bytearray()}
        states.append(state)
        sel.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE, state)
    done = 0
    deadline = time.monotonic() + args.timeout * 10
    while done < args.count and time.monotonic() < deadline:
        for key, events in sel.select(timeout=1):
            state = key.data
            sock = state["sock"]
            if events & selectors.EVENT_WRITE:
                if state["sent"] < args.size:
                    try:
                        state["sent"] += sock.send(expected[state["sent"] : state["sent"] + 65536])
                    except BlockingIOError:
                        pass
                if state["sent"] >= args.size:
                    sel.modify(sock, selectors.EVENT_READ, state)
            if events & selectors.EVENT_READ:
                try:
                    data = sock.recv(65536)
                except BlockingIOError:
                    continue
                state["got"] += data
                if len(state["got"]) >= args.size or not data:
                    sel.unregister(sock)
                    sock.close()
                    done += 1
    good = sum(1 for s in states if bytes(s["got"]) == expected)
    print(f"ok {good}")


def paced_chunks(sock: socket.socket, rate: int, seconds: float):  # type: ignore[no-untyped-def]
    """What arrives until EOF, read at ``rate`` bytes/s for ``seconds`` (a slow reader: the
    window closes), then at full speed."""
    slow_until = time.monotonic() + seconds
    step = max(1, rate // 10)
    while True:
        slow = time.monotonic() < slow_until
        chunk = sock.recv(step if slow else 1 << 20)
        if not chunk:
            return
        yield chunk
        if slow:
            time.sleep(len(chunk) / rate)


def many(args: argparse.Namespace) -> None:
    """--count connects, at most --inflight outstanding, each failure timed; then 16 bytes
    echoed on every connection that opened (against an echo server); prints a JSON line, then
    holds the connections --hold seconds more."""
    sel = selectors.DefaultSelector()
    held: list[socket.socket] = []
    failed: dict[str, int] = {}
    slowest_failure = 0.0
    pending: dict[socket.socket, float] = {}
    tried = 0
    deadline = time.monotonic() + args.timeout
    while (tried < args.count or pending) and time.monotonic() < deadline:
        while tried < args.count and len(pending) < args.inflight:
            sock = socket.socket()
            sock.setblocking(False)
            tried += 1
            code = sock.connect_ex((args.host, args.port))
            if code not in (0, errno.EINPROGRESS):
                name = errno.errorcode.get(code, str(code))
                failed[name] = failed.get(name, 0) + 1
                sock.close()
                continue
            sel.register(sock, selectors.EVENT_WRITE)
            pending[sock] = time.monotonic()
        for key, _ in sel.select(0.05):
            sock = key.fileobj  # type: ignore[assignment]
            sel.unregister(sock)
            since = pending.pop(sock)
            code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if code:
                name = errno.errorcode.get(code, str(code))
                failed[name] = failed.get(name, 0) + 1
                slowest_failure = max(slowest_failure, time.monotonic() - since)
                sock.close()
            else:
                held.append(sock)
    for sock in pending:
        failed["timeout"] = failed.get("timeout", 0) + 1
        sock.close()
    echoed = 0
    for i, sock in enumerate(held):
        message = b"%016d" % i
        try:
            sock.setblocking(True)
            sock.settimeout(5)
            sock.sendall(message)
            got = b""
            while len(got) < len(message) and (chunk := sock.recv(len(message) - len(got))):
                got += chunk
            if got == message:
                echoed += 1
        except OSError:
            pass
    report = {
        "tried": tried,
        "held": len(held),
        "failed": failed,
        "slowest_failure_ms": round(slowest_failure * 1000, 1),
        "echoed": echoed,
    }
    print(json.dumps(report), flush=True)
    time.sleep(args.hold)
    for sock in held:
        sock.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("action")
    parser.add_argument("mode_or_host")
    parser.add_argument("port", type=int, nargs="?", default=0)
    parser.add_argument("--bind", default="127.0.0.1")
    parser.add_argument("--size", type=int, default=1 << 20)
    parser.add_argument("--rate", type=int, default=1 << 20)
    parser.add_argument("--count", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("--seconds", type=float, default=0.0)
    parser.add_argument("--hold", type=float, default=0.0)
    parser.add_argument("--inflight", type=int, default=256)
    args = parser.parse_args()
    if args.action == "serve":
        args.mode = args.mode_or_host
        serve(args)
        return
    args.host = args.mode_or_host
    if args.action == "connect":
        start = time.monotonic()
        try:
            connect(args).close()
            outcome = "connected"
        except OSError as e:
            outcome = type(e).__name__
        print(outcome, round((time.monotonic() - start) * 1000, 1))
    elif args.action == "send":
        sock = connect(args)
        send_all(sock, args.size)
        sock.shutdown(socket.SHUT_WR)
        print(sock.recv(1024).decode())
    elif args.action == "recv":
        sock = connect(args)
        print(*read_all(sock))
    elif args.action == "read":
        sock = connect(args)
        print(sock.recv(1024).decode())
    elif args.action == "halfsend":
        sock = connect(args)
        send_all(sock, args.size)
        sock.shutdown(socket.SHUT_WR)
        print(*read_all(sock))
    elif args.action == "readreset":
        try:
            sock = connect(args)
            sock.sendall(b"x")
            time.sleep(0.5)
            sock.sendall(b"y" * 65536)
            print("read", sock.recv(10))
        except OSError as e:
            print(type(e).__name__)
    elif args.action in ("recvreset", "slowrecv"):
        sock = connect(args)
        h, total, outcome = hashlib.sha256(), 0, "eof"
        try:
            for chunk in paced_chunks(sock, args.rate, args.seconds):
                h.update(chunk)
                total += len(chunk)
        except OSError as e:
            outcome = type(e).__name__
        print(total, h.hexdigest(), *([outcome] if args.action == "recvreset" else []))
    elif args.action == "many":
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        many(args)
    elif args.action == "echo":
        parallel_echo(args)
    elif args.action == "rr":
        # --count sequential 1-byte round trips on one connection: prints round trips/s
        sock = connect(args)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        start = time.monotonic()
        for _ in range(args.count):
            sock.sendall(b"x")
            if not sock.recv(1):
                break
        print(round(args.count / (time.monotonic() - start)))
    elif args.action == "digest":
        print(expected_digest(args.size))
    else:
        sys.exit(f"unknown action {args.action}")


if __name__ == "__main__":
    main()
