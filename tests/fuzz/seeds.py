"""Seed inputs for every target, built with the package's own encoders and ``tests.rig.frames``:
real frames and requests in the input layouts ``harnesses`` reads. Written at run time, never
committed: ``python3 -m tests.fuzz.seeds DIR`` writes ``DIR/<target>/seed-NNN``.
"""

from __future__ import annotations

import argparse
import json
import socket
from collections.abc import Iterable
from pathlib import Path

from pyslirp4netns.wire import dhcp, dhcpv6, icmpv6, ipv4, ipv6, tcp, vnet
from tests.fuzz.harnesses import pack_records
from tests.rig import frames as rig

GISS = 1000  # the guest's initial sequence number
ISS = 2**31  # the stack's: its default rng says 0.5
REMOTE4 = bytes([198, 51, 100, 10])
GUEST6 = socket.inet_pton(socket.AF_INET6, "fd00::100")
SYN_OPTIONS = tcp.encode_options(
    mss=1460, window_scale=7, sack_permitted=True, timestamp=(12345, 0)
)
# Option bytes of the frames target's byte 0 (harnesses.run_frames).
VNET, FIX, IPV6, DEBUG, NO_LOOPBACK, JUMBO = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
PENDING = 0xC0  # connects stay pending until a fact record answers them


# -- frames --------------------------------------------------------------------------------
def frame(data: bytes, header: bytes | None = None) -> bytes:
    """A frames record: op 0, the virtio-net header when ``header`` is given, the frame."""
    return b"\x00" + (header if header is not None else b"") + data


def wait(steps: int) -> bytes:
    return b"\x01" + bytes((steps,))


def fact(kind: int, which: int = 0, args: bytes = b"") -> bytes:
    return b"\x02" + bytes((kind, which)) + args


def segment(
    flags: int,
    seq: int,
    ack: int = 0,
    payload: bytes = b"",
    *,
    dst: bytes = rig.GATEWAY4,
    dport: int = 8080,
    options: bytes = b"",
    src: bytes = rig.GUEST4,
    sport: int = 40000,
) -> bytes:
    header = tcp.encode(src, dst, sport, dport, seq, ack, flags, 65535, payload, options=options)
    if len(src) == 16:
        return rig.ipv6_frame(dst, ipv6.NEXT_TCP, header + payload, src=src)
    return rig.ipv4_frame(dst, ipv4.PROTO_TCP, header + payload, src=src)


def tcp_session(
    dst: bytes = rig.GATEWAY4, src: bytes = rig.GUEST4, header: bytes | None = None
) -> list[bytes]:
    """A whole guest connection as records: SYN, ACK, data, host data, ACK, FIN both ways."""
    s = GISS + 1

    def seg(
        flags: int, seq: int, ack: int = 0, payload: bytes = b"", options: bytes = b""
    ) -> bytes:
        return frame(segment(flags, seq, ack, payload, dst=dst, src=src, options=options), header)

    return [
        seg(tcp.SYN, GISS, options=SYN_OPTIONS),
        seg(tcp.ACK, s, ISS + 1),
        seg(tcp.PSH | tcp.ACK, s, ISS + 1, b"GET / HTTP/1.0\r\n\r\n"),
        fact(3, 0, b"HTTP/1.0 200 OK\r\n\r\nhello"),
        seg(tcp.ACK, s + 18, ISS + 1 + 24),
        seg(tcp.FIN | tcp.ACK, s + 18, ISS + 1 + 24),
        fact(6, 0),
        seg(tcp.ACK, s + 19, ISS + 2 + 24),
        wait(255),
    ]


def forwarded_session() -> list[bytes]:
    """A port forward's client (guest port 80, seen from 10.0.2.2:40000) and the guest's
    answers: our SYN (once ARP told us the guest's MAC), its SYN|ACK, data both ways, FINs."""

    def seg(flags: int, seq: int, ack: int, payload: bytes = b"", options: bytes = b"") -> bytes:
        return frame(segment(flags, seq, ack, payload, dport=40000, sport=80, options=options))

    s = GISS + 1
    return [
        fact(12, 0, b"\x00\x50\x9c\x40"),
        frame(rig.arp_request_frame(rig.GATEWAY4)),
        seg(tcp.SYN | tcp.ACK, GISS, ISS + 1, options=SYN_OPTIONS),
        fact(3, 0, b"request from the host"),
        seg(tcp.PSH | tcp.ACK, s, ISS + 22, b"answer"),
        seg(tcp.FIN | tcp.ACK, s + 6, ISS + 22),
        fact(6, 0),
        seg(tcp.ACK, s + 7, ISS + 23),
        wait(255),
    ]


def dhcp_message(kind: int, requested: bytes | None = None, xid: int = 0x2B5B9303) -> bytes:
    """A client's DHCP message as udhcpc sends it."""
    header = dhcp.DHCP.struct.pack(
        dhcp.BOOTREQUEST,
        1,
        6,
        0,
        xid,
        0,
        0,
        bytes(4),
        bytes(4),
        bytes(4),
        bytes(4),
        rig.GUEST_MAC,
        b"",
        b"",
        dhcp.MAGIC_COOKIE,
    )
    options = bytes((dhcp.OPTION_MESSAGE_TYPE, 1, kind))
    options += bytes((dhcp.OPTION_CLIENT_ID, 7, 1)) + rig.GUEST_MAC
    options += bytes((dhcp.OPTION_PARAMETER_LIST, 4, 1, 3, 6, 15))
    if requested is not None:
        options += bytes((dhcp.OPTION_REQUESTED_IP, 4)) + requested
    return header + options + b"\xff"


def info_request(xid: int = 0xABCDEF) -> bytes:
    client = (1).to_bytes(2, "big") + (1).to_bytes(2, "big") + rig.GUEST_MAC
    oro = (23).to_bytes(2, "big") + (24).to_bytes(2, "big")
    options = [(dhcpv6.OPTION_CLIENTID, client), (dhcpv6.OPTION_ORO, oro)]
    return dhcpv6.encode(dhcpv6.INFORMATION_REQUEST, xid, options)


def dns_query(name: bytes = b"example.com") -> bytes:
    labels = b"".join(bytes((len(p),)) + p for p in name.split(b".")) + b"\x00"
    return bytes.fromhex("123401000001000000000000") + labels + b"\x00\x01\x00\x01"


def ipv4_fragments(dst: bytes, datagram: bytes, protocol: int, size: int = 16) -> list[bytes]:
    out = []
    for offset in range(0, len(datagram), size):
        more = offset + size < len(datagram)
        piece = datagram[offset : offset + size]
        out.append(
            rig.ipv4_frame(
                dst, protocol, piece, identification=7, more_fragments=more, fragment_offset=offset
            )
        )
    return out


def ipv6_fragments(
    dst: bytes, datagram: bytes, protocol: int, size: int = 16, src: bytes = rig.GUEST6
) -> list[bytes]:
    out = []
    for offset in range(0, len(datagram), size):
        more = offset + size < len(datagram)
        header = bytes((protocol, 0)) + (offset | more).to_bytes(2, "big") + (7).to_bytes(4, "big")
        piece = datagram[offset : offset + size]
        out.append(rig.ipv6_frame(dst, ipv6.NEXT_FRAGMENT, header + piece, src=src))
    return out


def frames_seeds() -> list[bytes]:
    gw6 = rig.GATEWAY6
    dns_frame = rig.udp4_frame(rig.DNS4, 53, dns_query())
    udp_payload = b"x" * 40
    udp_datagram = rig.udp_datagram(rig.GUEST4, rig.GATEWAY4, 5000, 7777, udp_payload)
    udp6_datagram = rig.udp_datagram(rig.GUEST6, gw6, 5000, 7777, udp_payload)
    ns = rig.icmp6_frame(
        socket.inet_pton(socket.AF_INET6, "ff02::1:ff00:2"),
        icmpv6.NEIGHBOR_SOLICITATION,
        gw6 + b"\x01\x01" + rig.GUEST_MAC,
    )
    rs = rig.icmp6_frame(
        rig.ALL_ROUTERS6, icmpv6.ROUTER_SOLICITATION, bytes(4) + b"\x01\x01" + rig.GUEST_MAC
    )
    echo6 = rig.icmp6_frame(gw6, icmpv6.ECHO_REQUEST, b"ping6", rest=0x00010001)
    dhcp6 = rig.udp6_frame(dhcpv6.ALL_SERVERS, dhcpv6.SERVER_PORT, info_request(), sport=546)
    plain = vnet.PLAIN
    partial = vnet.encode(vnet.NEEDS_CSUM, vnet.GSO_NONE, 0, 0, 34, 16)
    uso = vnet.encode(vnet.NEEDS_CSUM, vnet.GSO_UDP_L4, 42, 100, 34, 6)
    sequences: list[tuple[int, list[bytes]]] = [
        (FIX, [frame(rig.arp_request_frame(rig.GATEWAY4)), frame(rig.arp_request_frame(rig.DNS4))]),
        (
            FIX,
            [
                frame(
                    rig.udp4_frame(
                        rig.BROADCAST4, 67, dhcp_message(dhcp.DISCOVER), sport=68, src=bytes(4)
                    )
                ),
                frame(
                    rig.udp4_frame(
                        rig.BROADCAST4,
                        67,
                        dhcp_message(dhcp.REQUEST, bytes([10, 0, 2, 15])),
                        sport=68,
                        src=bytes(4),
                    )
                ),
            ],
        ),
        (FIX, [frame(rig.echo4_frame(rig.GATEWAY4, b"ping!" * 8))]),
        (
            FIX,
            [
                frame(rig.echo4_frame(REMOTE4, b"remote ping")),
                fact(8, 0, b"\x00\x00\x00\x00\x00\x01\x00\x01remote ping"),
                wait(20),
            ],
        ),
        (FIX, [frame(dns_frame), fact(8, 0, dns_query() + b"answer"), wait(250)]),
        (FIX, [frame(rig.udp4_frame(REMOTE4, 9999, b"to a host")), fact(10, 0, b"\x02\x03\x03")]),
        (FIX, [frame(rig.udp4_frame(REMOTE4, 9999, b"to a host")), fact(11, 1, b"to a host")]),
        (FIX, tcp_session()),
        (FIX | VNET, tcp_session(header=plain)),
        (FIX | JUMBO, tcp_session(REMOTE4)),
        (FIX | NO_LOOPBACK | DEBUG, tcp_session()),
        (
            FIX | PENDING,
            [
                frame(segment(tcp.SYN, GISS, options=SYN_OPTIONS)),
                frame(segment(tcp.SYN, GISS, options=SYN_OPTIONS)),
                fact(0, 0),
                frame(segment(tcp.ACK, GISS + 1, ISS + 1)),
                fact(4, 0, b"\x00\x00\x10"),  # host sockets take 16 bytes a write
                frame(segment(tcp.ACK | tcp.PSH, GISS + 1, ISS + 1, b"data" * 100)),
                b"\x03",  # then none
                frame(segment(tcp.ACK | tcp.PSH, GISS + 401, ISS + 1, b"more" * 10)),
                fact(5, 0),
                b"\x03",  # then all
                frame(segment(tcp.RST, GISS + 401, 0)),
            ],
        ),
        (FIX | PENDING, [frame(segment(tcp.SYN, GISS)), fact(1, 0)]),
        (FIX | PENDING, [frame(segment(tcp.SYN, GISS)), fact(2, 0, b"\x01")]),
        (
            FIX,
            [
                fact(12, 0, b"\x00\x50\x9c\x40"),
                frame(rig.arp_request_frame(rig.GATEWAY4)),
                wait(40),
            ],
        ),
        (FIX, forwarded_session()),
        (FIX, [fact(13, 0, b"\x00\x35\x9c\x40query"), frame(rig.arp_request_frame(rig.GATEWAY4))]),
        (FIX, [frame(f) for f in ipv4_fragments(rig.GATEWAY4, udp_datagram, ipv4.PROTO_UDP)]),
        (FIX, [frame(ipv4_fragments(rig.GATEWAY4, udp_datagram, ipv4.PROTO_UDP)[0]), wait(255)]),
        (FIX | VNET, [frame(rig.udp4_frame(REMOTE4, 9999, b"u" * 300), uso)]),
        (FIX | VNET, [frame(rig.udp4_frame(REMOTE4, 9999, b"v" * 30), partial)]),
        (FIX | IPV6, [frame(ns), frame(rs), frame(echo6), frame(dhcp6), wait(255), wait(255)]),
        (FIX | IPV6, [frame(rig.udp6_frame(gw6, 7777, b"udp6")), fact(8, 0, b"back")]),
        (FIX | IPV6, [frame(f) for f in ipv6_fragments(gw6, udp6_datagram, ipv6.NEXT_UDP)]),
        (FIX | IPV6, tcp_session(gw6, GUEST6)),
        (FIX | IPV6 | VNET, [frame(ns, plain), frame(rs, plain)]),
        (FIX, [frame(rig.tcp4_frame(REMOTE4, 80, tcp.ACK, seq=5, ack=9))]),  # no connection
    ]
    return [bytes((options,)) + pack_records(records) for options, records in sequences]


# -- API -------------------------------------------------------------------------------------
def api_request(execute: str, **arguments: object) -> bytes:
    body: dict[str, object] = {"execute": execute}
    if arguments:
        body["arguments"] = arguments
    return json.dumps(body, separators=(",", ":")).encode()


def api_seeds() -> list[bytes]:
    podman = api_request(
        "add_hostfwd",
        proto="tcp",
        host_addr="0.0.0.0",
        host_port=8080,
        guest_addr="",
        guest_port=80,
    )
    rootlesskit = api_request(
        "add_hostfwd",
        proto="udp",
        host_addr="127.0.0.1",
        host_port=5353,
        guest_addr="10.0.2.100",
        guest_port=5353,
    )
    v6 = api_request("add_hostfwd", proto="tcp", host_addr="::1", host_port=0, guest_port=22)
    remove = api_request("remove_hostfwd", id=1)
    lst = api_request("list_hostfwd")
    stats = api_request("get_stats")
    odd = [
        b'\xef\xbb\xbf{"execute":"list_hostfwd"} trailing',
        b'{"execute":"add_hostfwd","arguments":{"proto":"tcp\\u0000x","host_port":1e2,'
        b'"guest_port":-0.5}}',
        b'[[[[{"a":[1.,-.5,true,false,null,"\\ud83d\\ude00"]}]]]]',
        b'{"execute":"remove_hostfwd","arguments":{"id":4294967296}}',
        b'{"execute":42}',
        b'{"a":1,"a":2}',
        b"-",
        b"x" * 4100,
    ]
    sessions = [
        [podman, lst, remove, lst],
        [rootlesskit, v6, stats, lst],
        odd,
    ]
    out = []
    for i, session in enumerate(sessions):
        for seed in (0, 1, 7):
            records = [bytes((seed,)) + request + b"\n" for request in session]
            out.append(bytes((i & 1,)) + pack_records(records))
    out.append(b"\x02" + pack_records([b"\x00" + podman]))  # the bind fails
    return out


# -- DHCP ------------------------------------------------------------------------------------
def dhcp_seeds() -> list[bytes]:
    v4 = [
        dhcp_message(dhcp.DISCOVER),
        dhcp_message(dhcp.REQUEST, bytes([10, 0, 2, 15])),
        dhcp_message(dhcp.REQUEST, bytes([10, 0, 2, 99])),
        dhcp_message(7),  # RELEASE
    ]
    server_id = (3).to_bytes(2, "big") + (1).to_bytes(2, "big") + bytes.fromhex("525600000002")
    v6 = [
        info_request(),
        dhcpv6.encode(dhcpv6.INFORMATION_REQUEST, 1, [(dhcpv6.OPTION_SERVERID, server_id)]),
        dhcpv6.encode(dhcpv6.SOLICIT, 2, [(dhcpv6.OPTION_IA_NA, bytes(12))]),
    ]
    return [
        b"\x00" + pack_records(v4),
        b"\x02" + pack_records(v4),
        b"\x01" + pack_records(v6),
        b"\x03" + pack_records(v6),
    ]


# -- NDP -------------------------------------------------------------------------------------
def ndp_record(hops: int, src: int, dst: int, type_: int, rest: int, body: bytes) -> bytes:
    return bytes((hops, src, dst, type_, 0)) + rest.to_bytes(4, "big") + body


def ndp_seeds() -> list[bytes]:
    # Address indices as harnesses.ndp lists them: 0-3 aliases, 4 ::, 5 fe80::1, 6 ff02::2,
    # 7 ff02::1, 8 ff02::1:ff00:2, 9 fd00::100.
    gw6 = rig.GATEWAY6
    lla = b"\x01\x01" + rig.GUEST_MAC
    ns = ndp_record(255, 5, 8, icmpv6.NEIGHBOR_SOLICITATION, 0, gw6 + lla)
    dad = ndp_record(255, 4, 8, icmpv6.NEIGHBOR_SOLICITATION, 0, gw6)
    rs = ndp_record(255, 5, 6, icmpv6.ROUTER_SOLICITATION, 0, lla)
    late = ndp_record(255, 5, 0xF6, icmpv6.ROUTER_SOLICITATION, 0, b"")  # 600 s later
    ra = ndp_record(255, 5, 7, icmpv6.ROUTER_ADVERTISEMENT, 0x40001800, bytes(8))
    redirect = ndp_record(255, 5, 0, 137, 0, gw6 + gw6)
    na = ndp_record(255, 5, 7, icmpv6.NEIGHBOR_ADVERTISEMENT, 0x20000000, GUEST6 + lla)
    echo = ndp_record(64, 9, 0, icmpv6.ECHO_REQUEST, 0x00010001, b"ping")
    bad_hops = ndp_record(64, 5, 6, icmpv6.ROUTER_SOLICITATION, 0, lla)
    return [
        b"\x00" + pack_records([ns, rs, echo]),
        b"\x02" + pack_records([dad, rs, late, late]),
        b"\x03" + pack_records([ra, redirect, na, bad_hops, ns]),
    ]


# -- fragments -------------------------------------------------------------------------------
def fragment_record(key: int, offset: int, more: bool, step: int, data: bytes) -> bytes:
    return bytes((key,)) + (offset // 8).to_bytes(2, "big") + bytes((more, step)) + data


def fragments_seeds() -> list[bytes]:
    payload = bytes(range(256))
    in_order = [
        fragment_record(1, o, o + 64 < 256, 1, payload[o : o + 64]) for o in (0, 64, 128, 192)
    ]
    reverse = in_order[::-1]
    overlap = [
        fragment_record(2, 0, True, 0, payload[:64]),
        fragment_record(2, 32, False, 0, payload[:48]),
    ]
    timeout = [
        fragment_record(3, 0, True, 0, payload[:64]),
        fragment_record(3, 64, False, 200, payload[:8]),
    ]
    datagram = rig.udp_datagram(rig.GUEST4, rig.GATEWAY4, 5000, 7777, b"y" * 40)
    datagram6 = rig.udp_datagram(rig.GUEST6, rig.GATEWAY6, 5000, 7777, b"z" * 40)

    def stack_records(whole: bytes, key: int) -> list[bytes]:
        return [
            fragment_record(key, o, o + 16 < len(whole), 1, whole[o : o + 16])
            for o in range(0, len(whole), 16)
        ]

    round_trips = [
        (1500).to_bytes(2, "big") + payload * 8,
        (576).to_bytes(2, "big") + payload * 4,
        (68).to_bytes(2, "big") + payload,
    ]
    return [
        b"\x00" + pack_records(in_order),
        b"\x01" + pack_records(reverse + overlap),
        b"\x00" + pack_records(timeout + in_order),
        b"\x02" + pack_records(stack_records(datagram, 1)),
        b"\x03" + pack_records(stack_records(datagram6, 1)),
        b"\x03"
        + pack_records(stack_records(datagram6, 0)[:1] + [fragment_record(0, 0, False, 255, b"")]),
        b"\x04" + pack_records(round_trips),
        b"\x05" + pack_records(round_trips),
    ]


SEEDS = {
    "frames": frames_seeds,
    "api": api_seeds,
    "dhcp": dhcp_seeds,
    "ndp": ndp_seeds,
    "fragments": fragments_seeds,
}


def write(directory: Path, target: str) -> Path:
    """Write ``target``'s seeds into ``directory/target`` (created); returns that folder."""
    folder = directory / target
    folder.mkdir(parents=True, exist_ok=True)
    for i, seed in enumerate(SEEDS[target]()):
        (folder / f"seed-{i:03d}").write_bytes(seed)
    return folder


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("directory", type=Path)
    parser.add_argument("--target", choices=sorted(SEEDS), action="append")
    args = parser.parse_args(None if argv is None else list(argv))
    for target in args.target or sorted(SEEDS):
        folder = write(args.directory, target)
        print(f"{target}: {len(list(folder.iterdir()))} seeds in {folder}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
