"""The sans-IO core's share of a 1-byte request/response, hot, with no syscalls at all.

One established connection (SYN, host connected, ACK); then per round trip: the guest's 1-byte
segment in, the host write it asks for reported done, the host's 1-byte answer in, the frame
out, and the timers when due, exactly as the shell's loop drives the stack. Prints µs per round
trip and frames per round trip (1.00: the request's ACK rides on the answer). With
``--profile`` it prints cProfile's call count per round trip too (the harness's own frame
building included: about 30 calls).

    python3 -m benchmarks.core_rr [--mtu 1500] [--rounds 50000] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time

from pyslirp4netns.config import Config
from pyslirp4netns.core import events
from pyslirp4netns.core.stack import Stack
from pyslirp4netns.wire import ethernet, ipv4, tcp
from pyslirp4netns.wire.numbers import IPPROTO_TCP

GUEST_MAC = bytes.fromhex("020000000001")
GUEST = bytes([10, 0, 2, 100])
GATEWAY = bytes([10, 0, 2, 2])
GATEWAY_MAC = b"\x52\x55" + GATEWAY
GISS, ISS = 1000, 2**31  # the guest's ISN; ours (the stack's rng is 0.5 without one)


def segment(
    flags: int, seq: int, ack: int = 0, payload: bytes = b"", options: bytes = b""
) -> bytes:
    header = tcp.encode(
        GUEST, GATEWAY, 40000, 8080, seq, ack, flags, 65535, payload, options=options
    )
    ip = ipv4.encode(GUEST, GATEWAY, IPPROTO_TCP, len(header) + len(payload))
    return ethernet.encode(GATEWAY_MAC, GUEST_MAC, ethernet.ETHERTYPE_IPV4) + ip + header + payload


def turn(stack: Stack, now: float) -> int:
    """What the shell does after a batch; host writes always succeed whole."""
    stack.flush(now)
    while requests := stack.take_requests():
        for request in requests:
            if isinstance(request, events.StreamWrite):
                written = sum(map(len, request.data))
                stack.streams.host_written(request.flow, written, False, now)
        stack.flush(now)
    return len(stack.take_frames())


def run(mtu: int, rounds: int) -> tuple[float, float]:
    stack = Stack(Config(target="1", pid=1, mtu=mtu), vnet_hdr=True)
    options = tcp.encode_options(mss=mtu - 40, window_scale=7, sack_permitted=True)
    stack.receive_frame(segment(tcp.SYN, GISS, options=options), 0.0)
    turn(stack, 0.0)
    stack.streams.host_connected(1, 0.0)
    turn(stack, 0.0)
    stack.receive_frame(segment(tcp.ACK, GISS + 1, ISS + 1), 0.0)
    turn(stack, 0.0)
    frames = [
        memoryview(segment(tcp.ACK | tcp.PSH, GISS + 1 + i, ISS + 1 + i, b"x"))
        for i in range(rounds)
    ]
    now, out = 1.0, 0
    start = time.perf_counter()
    for frame in frames:
        now += 0.0001  # 10,000 round trips a second of stack time
        stack.receive_frame(frame, now, True, 0)
        out += turn(stack, now)
        stack.streams.host_data(1, b"x", now)
        out += turn(stack, now)
        deadline = stack.next_deadline()
        if deadline is not None and deadline <= now:
            stack.on_timer(now)
            out += turn(stack, now)
    elapsed = time.perf_counter() - start
    if stack.dropped:
        raise SystemExit(f"core_rr: frames dropped: {dict(stack.dropped)}")
    return elapsed / rounds * 1e6, out / rounds


def main() -> None:
    p = argparse.ArgumentParser(prog="python3 -m benchmarks.core_rr", description=__doc__)
    p.add_argument("--mtu", type=int, default=1500)
    p.add_argument("--rounds", type=int, default=50000)
    p.add_argument("--profile", action="store_true", help="also count calls with cProfile")
    args = p.parse_args()
    us, frames = run(args.mtu, args.rounds)
    print(f"core: {us:.1f} µs per round trip, {frames:.2f} frames per round trip (MTU {args.mtu})")
    if args.profile:
        profile = cProfile.Profile()
        profile.runcall(run, args.mtu, args.rounds)
        calls = pstats.Stats(profile).total_calls  # type: ignore[attr-defined]
        print(f"core: {calls / args.rounds:.0f} Python calls per round trip (cProfile)")


if __name__ == "__main__":
    main()
