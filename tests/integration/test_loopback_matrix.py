"""``--disable-host-loopback`` against crafted frames: nothing a guest sends reaches host loopback.

A guest's kernel never routes 127.0.0.1, 0.0.0.0 or ::1 out of tap0, but a hostile guest can write
any frame it likes. So scapy writes them straight onto the tap, addressed to the gateway's MAC:
TCP SYN, UDP and ICMP echo toward every address that could lead to host loopback. In the outer
"host" namespace an AF_PACKET socket on ``lo`` counts what arrives there, beside listeners on
0.0.0.0 and [::] (``tests.rig.scapy_tools``). The daemon runs with ``--configure
--disable-host-loopback --enable-ipv6``.

slirp4netns 1.2.0 is run on the same matrix and printed beside us, never asserted: it lets a guest
through to 127.0.0.0/8, 0.0.0.0, ::1, :: and ::ffff:127.0.0.1 (contract §3.4); we must show 0
everywhere. The positive control (the same frames to the gateway without the flag do reach the
host listener) proves the rig can see a hit at all.
"""

from __future__ import annotations

import importlib.util
import os
import time
from collections.abc import Callable, Iterator, Sequence

import pytest

from tests.rig import REFERENCE, Daemon, Guest, Outer, start_ready
from tests.rig.scapy_tools import HostListener, Probe, Report, SendSpec, classify, payload, probes

pytestmark = pytest.mark.timeout(60)

# On CI a missing scapy is a failure (the tests run and say so), elsewhere a skip.
HAVE_SCAPY = importlib.util.find_spec("scapy") is not None or bool(os.environ.get("CI"))
needs_scapy = pytest.mark.skipif(not HAVE_SCAPY, reason="scapy is not installed")
needs_reference = pytest.mark.skipif(not os.path.exists(REFERENCE), reason="no reference")

GUEST4 = "10.0.2.100"  # what --configure gives the guest
DESTINATIONS = (
    "10.0.2.2",  # the gateway alias: mapped to 127.0.0.1 unless the flag is given
    "127.0.0.1",
    "127.0.0.2",  # the rest of 127.0.0.0/8 is loopback too
    "0.0.0.0",  # connect()/sendto() to the unspecified address reach the local host
    "255.255.255.255",  # libslirp maps the limited broadcast to 127.0.0.1
    "10.0.2.255",  # the subnet broadcast
    "fd00::2",  # the IPv6 gateway alias: mapped to ::1 unless the flag is given
    "::1",
    "::",
    "::ffff:127.0.0.1",  # an AF_INET6 socket reaches 127.0.0.1 through the v4-mapped form
)
PROTOS = ("tcp", "udp", "icmp")
MATRIX = probes(DESTINATIONS, PROTOS, base_port=23400)
PORTS = range(MATRIX[0].port, MATRIX[-1].port + 1)
CONTROL = [p for p in MATRIX if p.dst == "10.0.2.2" and p.proto in ("tcp", "udp")]
REPEAT = 3
SETTLE = 2.0  # after the last frame: time for the daemon's host sockets to deliver

OURS = "pyslirp4netns"
THEIRS = "slirp4netns"


@pytest.fixture
def listen(outer: Outer) -> Iterator[Callable[[], HostListener]]:
    listeners: list[HostListener] = []

    def make() -> HostListener:
        listener = HostListener(outer.prefix(), PORTS)
        listeners.append(listener)
        return listener

    try:
        yield make
    finally:
        for listener in listeners:
            listener.close()


def ipv6_source(guest: Guest) -> str:
    """The guest's own link-local address: present as soon as tap0 is up, unlike SLAAC's."""
    out = guest.run(["ip", "-6", "-o", "addr", "show", "dev", "tap0", "scope", "link"], check=False)
    fields = out.stdout.decode().split()
    # Only the replies would need the guest to own it; the daemons decide on the destination alone.
    return fields[3].split("/")[0] if len(fields) > 3 else "fe80::2"


def run_matrix(
    make_guest: Callable[..., Guest],
    make_daemon: Callable[..., Daemon],
    listen: Callable[[], HostListener],
    program: Sequence[str] | None,
    flags: Sequence[str],
    cells: Sequence[Probe],
) -> Report:
    """One daemon, one guest, one listener: send every cell REPEAT times, count what arrived."""
    guest = make_guest(rootless=False)  # root style: scapy needs CAP_NET_RAW in the guest
    listener = listen()
    args = [*flags, "--configure", "--enable-ipv6", "-r", "3", str(guest.pid), "tap0"]
    daemon = start_ready(make_daemon, args, program=program)
    spec = SendSpec(cells, src4=GUEST4, src6=ipv6_source(guest), repeat=REPEAT)
    sent = guest.run(spec.argv(), timeout=30, check=False)
    assert sent.returncode == 0, sent.stderr.decode()
    assert int(sent.stdout) == len(cells) * REPEAT
    time.sleep(SETTLE)
    report = listener.report()
    alive = daemon.poll() is None
    # End this run before the next starts, so no late packet of one lands in the other's count.
    for done in (daemon, guest, listener):
        done.close()
    assert alive, f"daemon died on the crafted frames:\n{daemon.stderr}"
    return report


def table(results: dict[str, Report | None]) -> str:
    """destination x proto -> packets arriving on host lo (/ accepted or read by the listener)."""
    names = list(results)
    lines = [
        f"--disable-host-loopback: packets arriving on host lo, per {REPEAT} sent "
        "(/ connections accepted or datagrams read by the host listener)",
        f"{'destination':<18} {'proto':<5} " + " ".join(f"{n:>14}" for n in names),
    ]

    def cell(report: Report | None, probe: Probe) -> str:
        if report is None:
            return "n/a"
        if probe.proto == "icmp":
            return str(report.sniffed(probe))
        return f"{report.sniffed(probe)}/{report.received(probe)}"

    for probe in MATRIX:
        row = " ".join(f"{cell(results[n], probe):>14}" for n in names)
        lines.append(f"{probe.dst:<18} {probe.proto:<5} {row}")
    others = " ".join(f"{'n/a' if r is None else r.other:>14}" for r in results.values())
    lines.append(f"{'(unattributed)':<24} {others}")
    leaks = []
    for name, report in results.items():
        if report is not None:
            leaks.append(f"{name}: {sum(report.sniffed(p) > 0 for p in MATRIX)} leaking cells")
    lines.append("; ".join(leaks))
    return "\n".join(lines)


@needs_scapy
def test_disable_host_loopback_matrix_reaches_nothing(  # type: ignore[no-untyped-def]
    make_guest, make_daemon, listen
) -> None:
    flags = ["--disable-host-loopback"]
    results: dict[str, Report | None] = {THEIRS: None}
    if os.path.exists(REFERENCE):
        results[THEIRS] = run_matrix(make_guest, make_daemon, listen, [REFERENCE], flags, MATRIX)
    ours = run_matrix(make_guest, make_daemon, listen, None, flags, MATRIX)
    results[OURS] = ours
    text = table(results)
    print("\n" + text)
    hits = {(p.dst, p.proto): (ours.sniffed(p), ours.received(p)) for p in MATRIX}
    assert all(h == (0, 0) for h in hits.values()) and ours.other == 0, text


@needs_scapy
@pytest.mark.parametrize(
    "program",
    [
        pytest.param(
            None,
            id=OURS,
        ),
        pytest.param([REFERENCE], id=THEIRS, marks=needs_reference),
    ],
)
def test_without_the_flag_the_gateway_reaches_host_loopback(  # type: ignore[no-untyped-def]
    make_guest, make_daemon, listen, program
) -> None:
    """The positive control: the rig does see a crafted SYN or datagram that gets through."""
    report = run_matrix(make_guest, make_daemon, listen, program, [], CONTROL)
    seen = {p.proto: (report.sniffed(p), report.received(p)) for p in CONTROL}
    assert all(sniffed > 0 and received > 0 for sniffed, received in seen.values()), seen


@needs_scapy
def test_the_lo_detector_counts_probes_arriving_and_nothing_else() -> None:
    """classify() on frames as lo shows them (zero MACs): only a probe's opening packet is a hit."""
    from scapy.layers.inet import ICMP, IP, TCP, UDP
    from scapy.layers.inet6 import ICMPv6EchoReply, ICMPv6EchoRequest, IPv6
    from scapy.layers.l2 import Ether

    lo = Ether(src="00:00:00:00:00:00", dst="00:00:00:00:00:00")
    v4, v6 = IP(src="127.0.0.1", dst="127.0.0.1"), IPv6(src="::1", dst="::1")
    first = PORTS.start
    cases = [
        (lo / v4 / TCP(sport=50000, dport=first, flags="S"), ("syn", first)),
        (lo / v6 / TCP(sport=50000, dport=first + 1, flags="S"), ("syn", first + 1)),
        (lo / v4 / TCP(sport=first, dport=50000, flags="SA"), None),
        (lo / v4 / TCP(sport=50000, dport=first, flags="A"), None),
        (lo / v4 / UDP(sport=50000, dport=first + 2) / payload(2), ("udp", first + 2)),
        (lo / v6 / UDP(sport=50000, dport=first + 2) / b"x", ("udp", first + 2)),
        (lo / v4 / UDP(sport=50000, dport=7) / b"pseudo-PING", ("other", 0)),
        (lo / v4 / UDP(sport=50000, dport=53) / b"x", None),
        (lo / v4 / ICMP(type=8) / payload(5), ("echo", 5)),
        (lo / v4 / ICMP(type=8) / b"ping", ("other", 0)),
        (lo / v4 / ICMP(type=0) / payload(5), None),
        (lo / v6 / ICMPv6EchoRequest(data=payload(7)), ("echo", 7)),
        (lo / v6 / ICMPv6EchoReply(data=payload(7)), None),
        (lo / v4 / TCP(sport=50000, dport=PORTS.stop, flags="S"), ("other", 0)),
    ]
    for frame, expected in cases:
        assert classify(bytes(frame), PORTS) == expected, frame.summary()
