"""Crafted guest frames (scapy) and a host-loopback hit counter, for the integration tests.

Each half runs as a script (this file, by path) inside the namespace it belongs to; the test drives
both through the rig (``Outer.prefix()``, ``Guest.run``). So this module imports nothing from the
package it sits in, and its scripts run with ``-P``: tests/rig/ is not put on their ``sys.path``.

* ``listen`` runs in ``Outer``, the loopback-only "host". It keeps TCP and UDP listeners on
  0.0.0.0 and [::] for a range of ports, and an AF_PACKET socket on ``lo`` that counts what
  *arrives* at host loopback: TCP SYNs and UDP datagrams to those ports, and ICMP/ICMPv6 echo
  requests carrying our marker. Sniffing ``lo`` is the detector that can't miss: a datagram to a
  port nobody reads, or a SYN whose connection never completes, still crosses ``lo``. The
  listeners add the application's view (connections accepted, datagrams read). It prints
  ``ready`` once everything is bound, and one JSON line when it reads ``report`` on stdin.
* ``send`` runs in the guest (root style, so it has CAP_NET_RAW). scapy builds Ethernet frames
  addressed to the gateway's MAC and writes them straight onto the tap, so they skip the guest
  kernel's routing: a kernel never puts 127.0.0.1 or 0.0.0.0 on a wire, a buggy or hostile
  guest can.

Every cell of a matrix is a ``Probe`` with its own number: TCP and UDP probes go to port
``base + number``, and every payload (UDP data, echo data) carries ``MARKER`` and the number, so a
hit is attributed to its cell whatever address the daemon rewrote the destination to.
"""

from __future__ import annotations

import json
import os
import selectors
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

MARKER = b"pyslirp4netns-probe:"
ETH_P_ALL = 0x0003
ETHERTYPE_IPV4 = 0x0800
ETHERTYPE_IPV6 = 0x86DD
PROTO_ICMP, PROTO_TCP, PROTO_UDP, PROTO_ICMPV6 = 1, 6, 17, 58
TCP_SYN, TCP_ACK = 0x02, 0x10
ECHO_REQUEST4, ECHO_REQUEST6 = 8, 128
UDP_ECHO_PORT = 7  # libslirp's last resort for ICMP echo is a "pseudo-PING" UDP datagram to port 7
SPORT_BASE = 41000  # guest source ports: SPORT_BASE + 8 * number + repetition
ECHO_ID_BASE = 0x5000  # echo identifier: ECHO_ID_BASE + number
GATEWAY4_MAC = "52:55:0a:00:02:02"  # libslirp: 52:55 + the gateway's IPv4 address
GATEWAY6_MAC = "52:56:00:00:00:02"  # libslirp answers NDP for its IPv6 aliases with this MAC
SCRIPT = [sys.executable, "-P", __file__]  # this module as a script, run by path


class Probe(NamedTuple):
    """One matrix cell: ``proto`` ("tcp", "udp", "icmp") toward ``dst``; ``port`` for tcp/udp."""

    dst: str
    proto: str
    port: int
    number: int


def probes(destinations: Iterable[str], protos: Sequence[str], base_port: int) -> list[Probe]:
    """The cross product, each cell numbered and given its own port."""
    cells = [(dst, proto) for dst in destinations for proto in protos]
    return [Probe(dst, proto, base_port + i, i) for i, (dst, proto) in enumerate(cells)]


def payload(index: int) -> bytes:
    return MARKER + b"%04d" % index


def _marked_index(data: bytes) -> int | None:
    at = data.find(MARKER)
    if at < 0:
        return None
    digits = data[at + len(MARKER) : at + len(MARKER) + 4]
    return int(digits) if digits.isdigit() and len(digits) == 4 else None


# -- the host side ---------------------------------------------------------------------------
def classify(frame: bytes, ports: range) -> tuple[str, int] | None:
    """What one frame seen on ``lo`` means for the matrix, or None if it is not a probe's hit.

    ("syn", port) / ("udp", port) for a TCP SYN or UDP datagram to one of ``ports``;
    ("echo", number) for an echo request carrying our marker; ("other", 0) for traffic that looks
    like a guest probe but can't be attributed (a marker-less echo request, a pseudo-PING to
    port 7, a SYN or datagram to another port).
    """
    if len(frame) < 14:
        return None
    ethertype = int.from_bytes(frame[12:14], "big")
    if ethertype == ETHERTYPE_IPV4 and len(frame) >= 34:
        ihl = (frame[14] & 0x0F) * 4
        if ihl < 20 or int.from_bytes(frame[20:22], "big") & 0x3FFF:
            return None  # a fragment: the probes are far too small to be fragmented
        proto, l4 = frame[23], 14 + ihl
    elif ethertype == ETHERTYPE_IPV6 and len(frame) >= 54:
        proto, l4 = frame[20], 54
    else:
        return None
    body = frame[l4:]
    if proto in (PROTO_ICMP, PROTO_ICMPV6) and len(body) >= 8:
        if body[0] != (ECHO_REQUEST4 if proto == PROTO_ICMP else ECHO_REQUEST6):
            return None  # replies, errors: the kernel's own answers, not a probe arriving
        index = _marked_index(body[8:])
        return ("other", 0) if index is None else ("echo", index)
    if proto == PROTO_TCP and len(body) >= 20:
        dport, flags = int.from_bytes(body[2:4], "big"), body[13]
        if flags & (TCP_SYN | TCP_ACK) != TCP_SYN:
            return None  # only the opening SYN is a hit; the rest of a handshake is not
        return ("syn", dport) if dport in ports else ("other", 0)
    if proto == PROTO_UDP and len(body) >= 8:
        dport = int.from_bytes(body[2:4], "big")
        if dport in ports:
            return ("udp", dport)
        return ("other", 0) if dport == UDP_ECHO_PORT or MARKER in body else None
    return None


def _bound(family: int, kind: int, port: int) -> socket.socket:
    sock = socket.socket(family, kind)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        # Separate v4 and v6 listeners, so each family is observed on its own socket.
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    sock.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", port))
    if kind == socket.SOCK_STREAM:
        sock.listen(64)
    sock.setblocking(False)
    return sock


def listen(ports: range, lifetime: float) -> int:
    """The ``listen`` script: count until ``report`` arrives on stdin (or ``lifetime`` ends)."""
    counts: dict[str, Counter[int]] = {
        key: Counter() for key in ("syn", "udp", "echo", "other", "accepted", "datagrams")
    }
    sel = selectors.DefaultSelector()
    sockets: list[socket.socket] = []
    for port in ports:
        for family in (socket.AF_INET, socket.AF_INET6):
            for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                sock = _bound(family, kind, port)
                sockets.append(sock)
                sel.register(sock, selectors.EVENT_READ, ("listener", kind, port))
    sniffer = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sniffer.bind(("lo", 0))
    sniffer.setblocking(False)
    sel.register(sniffer, selectors.EVENT_READ, ("sniffer", 0, 0))
    stdin = sys.stdin.buffer.fileno()
    sel.register(stdin, selectors.EVENT_READ, ("stdin", 0, 0))
    print("ready", flush=True)
    deadline = time.monotonic() + lifetime
    while time.monotonic() < deadline:
        for key, _ in sel.select(timeout=0.5):
            role, kind, port = key.data
            if role == "stdin":
                os.read(stdin, 64)  # "report", or EOF if the test went away: answer either way
                print(json.dumps({k: dict(v) for k, v in counts.items()}), flush=True)
                return 0
            ready = key.fileobj
            assert isinstance(ready, socket.socket)
            if role == "sniffer":
                while True:
                    try:
                        frame, address = ready.recvfrom(65536)
                    except BlockingIOError:
                        break
                    # lo shows every packet twice, leaving and arriving: count arrivals only.
                    if address[2] == socket.PACKET_OUTGOING:
                        continue
                    hit = classify(frame, ports)
                    if hit is not None:
                        counts[hit[0]][hit[1]] += 1
            elif kind == socket.SOCK_STREAM:
                try:
                    conn, _ = ready.accept()
                except BlockingIOError:
                    continue
                conn.close()
                counts["accepted"][port] += 1
            else:
                while True:
                    try:
                        data = ready.recv(65536)
                    except BlockingIOError:
                        break
                    if _marked_index(data) is not None:
                        counts["datagrams"][port] += 1
    return 1


@dataclass
class Report:
    """What reached host loopback during one run, keyed as the listener counted it."""

    syn: Counter[int] = field(default_factory=Counter)
    udp: Counter[int] = field(default_factory=Counter)
    echo: Counter[int] = field(default_factory=Counter)
    other: int = 0
    accepted: Counter[int] = field(default_factory=Counter)
    datagrams: Counter[int] = field(default_factory=Counter)

    @classmethod
    def from_json(cls, line: str) -> Report:
        raw: dict[str, dict[str, int]] = json.loads(line)

        def counter(name: str) -> Counter[int]:
            return Counter({int(k): v for k, v in raw.get(name, {}).items()})

        return cls(
            syn=counter("syn"),
            udp=counter("udp"),
            echo=counter("echo"),
            other=sum(raw.get("other", {}).values()),
            accepted=counter("accepted"),
            datagrams=counter("datagrams"),
        )

    def sniffed(self, probe: Probe) -> int:
        """Packets of this probe that arrived on host ``lo``."""
        if probe.proto == "tcp":
            return self.syn[probe.port]
        if probe.proto == "udp":
            return self.udp[probe.port]
        return self.echo[probe.number]

    def received(self, probe: Probe) -> int:
        """What a host application saw of it: connections accepted, datagrams read."""
        if probe.proto == "tcp":
            return self.accepted[probe.port]
        if probe.proto == "udp":
            return self.datagrams[probe.port]
        return 0  # nothing but the kernel answers an echo


class HostListener:
    """The ``listen`` script started under ``prefix`` (e.g. ``Outer.prefix()``); ended by PID."""

    def __init__(self, prefix: Sequence[str], ports: range, lifetime: float = 90) -> None:
        argv = [*prefix, *SCRIPT, "listen", str(ports.start), str(ports.stop)]
        self.proc = subprocess.Popen(
            [*argv, str(lifetime)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            line = self._line(10)
            if line != "ready":
                raise RuntimeError(f"listener did not start: {line!r} {self._stderr()}")
        except BaseException:
            self.close()
            raise

    def _line(self, timeout: float) -> str:
        import select

        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            raise TimeoutError(f"listener: no answer within {timeout}s")
        return self.proc.stdout.readline().decode().strip()

    def _stderr(self) -> str:
        self.close()
        assert self.proc.stderr is not None
        return self.proc.stderr.read().decode(errors="replace")

    def report(self, timeout: float = 10) -> Report:
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"report\n")
        self.proc.stdin.flush()
        line = self._line(timeout)
        if not line:
            raise RuntimeError(f"listener died: {self._stderr()}")
        return Report.from_json(line)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None and not stream.closed:
                stream.close()


# -- the guest side --------------------------------------------------------------------------
@dataclass(frozen=True)
class SendSpec:
    """Everything the ``send`` script needs, passed to it as one JSON argument."""

    probes: Sequence[Probe]
    src4: str
    src6: str
    iface: str = "tap0"
    gw4_mac: str = GATEWAY4_MAC
    gw6_mac: str = GATEWAY6_MAC
    repeat: int = 3
    interval: float = 0.002

    def argv(self) -> list[str]:
        spec = {
            "probes": [p._asdict() for p in self.probes],
            "src4": self.src4,
            "src6": self.src6,
            "iface": self.iface,
            "gw4_mac": self.gw4_mac,
            "gw6_mac": self.gw6_mac,
            "repeat": self.repeat,
            "interval": self.interval,
        }
        return [*SCRIPT, "send", json.dumps(spec)]


def send(spec: dict[str, Any]) -> int:
    """The ``send`` script: every probe ``repeat`` times, as frames written onto the tap."""
    from scapy.arch import get_if_hwaddr
    from scapy.layers.inet import ICMP, IP, TCP, UDP
    from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6
    from scapy.layers.l2 import Ether
    from scapy.packet import Packet, Raw
    from scapy.sendrecv import sendp

    iface: str = spec["iface"]
    mac = get_if_hwaddr(iface)
    frames = []
    # Repetition outermost: the copies of one probe are spread over the run, as retransmissions.
    for rep in range(spec["repeat"]):
        for raw in spec["probes"]:
            probe = Probe(**raw)
            data = payload(probe.number)
            l3: Packet
            l4: Packet
            if ":" in probe.dst:
                l2 = Ether(src=mac, dst=spec["gw6_mac"])
                l3 = IPv6(src=spec["src6"], dst=probe.dst, hlim=64)
            else:
                l2 = Ether(src=mac, dst=spec["gw4_mac"])
                l3 = IP(src=spec["src4"], dst=probe.dst, ttl=64)
            sport = SPORT_BASE + 8 * probe.number + rep  # a new flow each time, not a duplicate
            if probe.proto == "tcp":
                seq = 1000 * probe.number + rep
                l4 = TCP(sport=sport, dport=probe.port, flags="S", seq=seq, options=[("MSS", 1460)])
            elif probe.proto == "udp":
                l4 = UDP(sport=sport, dport=probe.port) / Raw(data)
            elif ":" in probe.dst:
                l4 = ICMPv6EchoRequest(id=ECHO_ID_BASE + probe.number, seq=rep, data=data)
            else:
                l4 = ICMP(type=8, id=ECHO_ID_BASE + probe.number, seq=rep) / Raw(data)
            frames.append(l2 / l3 / l4)
    sendp(frames, iface=iface, inter=spec["interval"], verbose=False)
    print(len(frames), flush=True)
    return 0


def main(argv: Sequence[str]) -> int:
    if argv[:1] == ["listen"]:
        return listen(range(int(argv[1]), int(argv[2])), float(argv[3]))
    if argv[:1] == ["send"]:
        return send(json.loads(argv[1]))
    print("usage: scapy_tools.py listen START STOP LIFETIME | send SPEC_JSON", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
