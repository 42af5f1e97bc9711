"""Counters for ``get_stats``, SIGUSR1 and ``--debug``, sans-IO: frames in, numbers out.

What is counted when (the man page's STATISTICS says the same):

* always: frames and bytes each way in total (the shell's ``TapPort`` adds them once per batch),
  drops by reason (``Stack.dropped``), live flows (the flow tables' sizes), API requests;
* with ``--stats``, ``--pcap`` or ``--debug`` only: frames and bytes each way per protocol
  (``ProtocolCounts.count``, called by the shell's observing tap port for every frame). Off, the
  tap's default read and write loops run without it: no per-frame check, no classification.

A frame counts under ``ethernet`` and under its network protocol (``arp``, ``ipv4``, ``ipv6``
or ``other``); an IPv4 or IPv6 frame also under its transport (``tcp``, ``udp``, ``icmp``,
``icmpv6`` or ``ip-other``; IPv6 extension headers are walked). Bytes are Ethernet frame bytes,
without the virtio-net header; a GSO super-frame is one frame of its whole length, as it crossed
the tap.
"""

from __future__ import annotations

import ipaddress
import json  # here, not when asked: after --enable-sandbox no module file can be opened
from collections import Counter

from pyslirp4netns.core import events
from pyslirp4netns.wire.codec import Buffer

FROM_GUEST = 0
TO_GUEST = 1
DIRECTIONS = ("from_guest", "to_guest")

_NETWORK = {b"\x08\x00": "ipv4", b"\x86\xdd": "ipv6", b"\x08\x06": "arp"}
_TRANSPORT = {6: "tcp", 17: "udp", 1: "icmp", 58: "icmpv6"}
# IPv6 extension headers with the generic (next header, length in 8-octet units - 1) layout.
_EXTENSIONS = {0, 43, 60}
_FRAGMENT = 44
PROTOCOLS = ("ethernet", "arp", "ipv4", "ipv6", "other", "tcp", "udp", "icmp", "icmpv6", "ip-other")


def classify(frame: Buffer) -> tuple[str, str | None]:
    """(network protocol, transport protocol or None) of an Ethernet frame."""
    network = _NETWORK.get(bytes(frame[12:14]), "other")
    if network == "ipv4":
        if len(frame) < 34:
            return network, "ip-other"
        return network, _TRANSPORT.get(frame[23], "ip-other")
    if network == "ipv6":
        if len(frame) < 54:
            return network, "ip-other"
        header, offset = frame[20], 54
        for _ in range(8):  # a bounded walk: counting must never loop on a crafted chain
            if header in _EXTENSIONS and offset + 2 <= len(frame):
                header, offset = frame[offset], offset + (frame[offset + 1] + 1) * 8
            elif header == _FRAGMENT and offset + 8 <= len(frame):
                header, offset = frame[offset], offset + 8
            else:
                break
        return network, _TRANSPORT.get(header, "ip-other")
    return network, None


class ProtocolCounts:
    """Frames and bytes per protocol and direction: ``count`` once for every frame.

    Per frame only one cell is touched: IPv4 frames (the many) are keyed by their protocol byte,
    anything else by its ``classify`` result; ``snapshot`` folds the cells into protocols.
    """

    __slots__ = ("cells",)

    def __init__(self) -> None:
        self.cells: tuple[dict[object, list[int]], dict[object, list[int]]] = ({}, {})

    def count(self, direction: int, head: Buffer, n: int) -> None:
        """A frame of ``n`` bytes starting with ``head`` (its first 54 bytes at least, or all)."""
        key: object
        if len(head) >= 34 and head[12] == 0x08 and head[13] == 0x00:
            key = head[23]
        else:
            key = classify(head)
        cells = self.cells[direction]
        cell = cells.get(key)
        if cell is None:
            cells[key] = [1, n]
        else:
            cell[0] += 1
            cell[1] += n

    def snapshot(self) -> dict[str, dict[str, dict[str, int]]]:
        """{protocol: {direction: {"frames": n, "bytes": n}}} for every protocol seen."""
        totals: dict[str, list[list[int]]] = {}
        for direction, cells in enumerate(self.cells):
            for key, (frames, octets) in cells.items():
                if isinstance(key, int):
                    names: tuple[str, str | None] = ("ipv4", _TRANSPORT.get(key, "ip-other"))
                else:
                    assert isinstance(key, tuple)
                    names = key
                for name in ("ethernet", *names):
                    if name is None:
                        continue
                    cell = totals.setdefault(name, [[0, 0], [0, 0]])[direction]
                    cell[0] += frames
                    cell[1] += octets
        return {
            name: {
                DIRECTIONS[d]: {"frames": totals[name][d][0], "bytes": totals[name][d][1]}
                for d in (FROM_GUEST, TO_GUEST)
            }
            for name in PROTOCOLS
            if name in totals
        }


class LoggedDrops(Counter[str]):
    """``Stack.dropped`` under ``--debug``: every increment also asks the shell for a log line."""

    def __init__(self, requests: list[events.Request]) -> None:
        super().__init__()
        self._requests = requests

    def __setitem__(self, key: str, value: int) -> None:
        if value > self.get(key, 0):
            self._requests.append(events.Log(f"debug: drop: {key}"))
        super().__setitem__(key, value)


def render(stats: dict[str, object]) -> str:
    """The stats as one line of compact JSON with keys in a fixed order (no spaces)."""
    return json.dumps(stats, separators=(",", ":"))


def drops(dropped: Counter[str]) -> dict[str, int]:
    """Drop reasons, sorted for a stable reply."""
    return {reason: dropped[reason] for reason in sorted(dropped) if dropped[reason]}


# -- --debug lines (flow life and drops); built only when --debug is on ----------------------
def endpoint(address: bytes, port: int) -> str:
    text = str(ipaddress.ip_address(address))
    return f"{text}:{port}" if len(address) == 4 else f"[{text}]:{port}"


def flow_line(
    proto: str,
    flow_id: int,
    event: str,
    guest: tuple[bytes, int],
    remote: tuple[bytes, int],
    sent: int | None = None,
    received: int | None = None,
) -> str:
    """``debug: tcp flow 7 open 10.0.2.100:40000 -> 10.0.2.2:80``; at teardown ``event`` holds
    the reason and the byte counts follow: guest to remote, then remote to guest."""
    line = f"debug: {proto} flow {flow_id} {event} {endpoint(*guest)} -> {endpoint(*remote)}"
    if sent is not None:
        line += f", {sent} bytes from guest, {received} bytes to guest"
    return line
