"""The stack's TCP path frame in, frame out: guest segments and host facts in, frames for the
guest and requests for the shell out, read as traces with an explicit clock.

``Host`` is a small in-memory shell: it keeps what the stack asked for, in order, and states
the facts a real host socket would report. Every step asserts *all* the output, so an extra
frame or request fails the test.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field, replace

import pytest

from pyslirp4netns.config import Config
from pyslirp4netns.core import events
from pyslirp4netns.core import streams as streams_module
from pyslirp4netns.core.stack import Stack
from pyslirp4netns.core.streams import GSO_MAX_SEGMENT, TCP_SND_BUFFER
from pyslirp4netns.core.tcb import TcpState
from pyslirp4netns.wire import arp, ethernet, icmpv4, ipv4, tcp, vnet
from pyslirp4netns.wire.numbers import IPPROTO_TCP

CONFIG = Config(target="1", pid=1)
GUEST_MAC = bytes.fromhex("020000000001")
GUEST = bytes([10, 0, 2, 100])
GATEWAY = bytes([10, 0, 2, 2])
GATEWAY_MAC = b"\x52\x55" + GATEWAY
LOOPBACK = bytes([127, 0, 0, 1])
REMOTE = bytes([198, 51, 100, 10])
GPORT, RPORT = 40000, 8080
GISS = 1000  # the guest's initial sequence number
ISS = 2**31  # ours: the stack's rng is 0.5 unless a test says otherwise
MSS = CONFIG.mtu - 40


def segment(
    flags: int,
    seq: int,
    ack: int = 0,
    payload: bytes = b"",
    *,
    dst: bytes = GATEWAY,
    window: int = 65535,
    options: bytes = b"",
) -> bytes:
    """A guest segment to ``dst``:RPORT, checksummed as the guest kernel would."""
    header = tcp.encode(GUEST, dst, GPORT, RPORT, seq, ack, flags, window, payload, options=options)
    ip = ipv4.encode(GUEST, dst, IPPROTO_TCP, len(header) + len(payload))
    eth = ethernet.encode(GATEWAY_MAC, GUEST_MAC, ethernet.ETHERTYPE_IPV4)
    return eth + ip + header + payload


SYN_OPTIONS = tcp.encode_options(mss=MSS, window_scale=7, sack_permitted=True)


@dataclass
class Sent:
    """One frame toward the guest, decoded."""

    vnet: vnet.VnetRepr | None
    ip: ipv4.Ipv4Repr
    tcp: tcp.TcpRepr | None
    payload: bytes
    raw: bytes


@dataclass
class Host:
    """Carries out nothing; records the requests and states facts through the stack's parts."""

    stack: Stack
    log: list[events.Request] = field(default_factory=list)

    def frames(self) -> list[Sent]:
        out = []
        header = vnet.SIZE if self.stack.egress.vnet_hdr else 0
        for parts in self.stack.take_frames():
            raw = b"".join(bytes(p) for p in parts)
            info = vnet.decode(raw) if header else None
            frame = raw[header:]
            eth = ethernet.decode(frame)
            if eth.ethertype != ethernet.ETHERTYPE_IPV4:
                out.append(Sent(info, None, None, b"", frame))  # type: ignore[arg-type]
                continue
            ip = ipv4.decode(frame, eth.payload_offset)
            seg = None
            payload = frame[ip.payload_offset : ip.payload_offset + ip.payload_length]
            if ip.protocol == IPPROTO_TCP:
                seg = tcp.decode(frame, ip.payload_offset, ip.payload_length)
                payload = frame[seg.payload_offset : seg.payload_offset + seg.payload_length]
            out.append(Sent(info, ip, seg, payload, frame))
        return out

    def step(self, now: float) -> tuple[list[Sent], list[events.Request]]:
        """What the shell would do after a batch: flush, then take frames and requests."""
        self.stack.flush(now)
        requests = self.stack.take_requests()
        self.log += requests
        return self.frames(), requests


def setup(vnet_hdr: bool = False) -> tuple[Stack, Host]:
    stack = Stack(CONFIG, vnet_hdr=vnet_hdr)
    return stack, Host(stack)


def tcp_fields(sent: Sent) -> tuple[int, int, int]:
    assert sent.tcp is not None
    return sent.tcp.flags, sent.tcp.seq, sent.tcp.ack


def connect(stack: Stack, host: Host, vnet_hdr: bool = False) -> int:
    """SYN -> connect request -> host connected -> SYN|ACK -> ACK: an established flow."""
    stack.receive_frame(segment(tcp.SYN, GISS, options=SYN_OPTIONS), 0.0)
    frames, requests = host.step(0.0)
    assert frames == []
    assert requests == [events.StreamConnect(1, socket.AF_INET, LOOPBACK, RPORT)]
    stack.streams.host_connected(1, 0.01)
    frames, requests = host.step(0.01)
    assert [tcp_fields(f) for f in frames] == [(tcp.SYN | tcp.ACK, ISS, GISS + 1)]
    assert requests == [events.StreamResume(1)]  # reading starts with the connection
    stack.receive_frame(segment(tcp.ACK, GISS + 1, ISS + 1), 0.02)
    assert host.step(0.02) == ([], [])
    return 1


def test_syn_asks_for_a_host_connect_and_syn_ack_waits_for_it() -> None:
    stack, host = setup()
    connect(stack, host)


def test_syn_ack_carries_our_mss_window_scale_and_sack() -> None:
    stack, host = setup()
    stack.receive_frame(segment(tcp.SYN, GISS, options=SYN_OPTIONS), 0.0)
    host.step(0.0)
    stack.streams.host_connected(1, 0.01)
    (syn_ack,), _ = host.step(0.01)
    assert syn_ack.tcp is not None
    options = tcp.parse_options(syn_ack.tcp.options)
    assert options.mss == MSS and options.window_scale is not None and options.sack_permitted
    assert (syn_ack.ip.src, syn_ack.ip.dst) == (GATEWAY, GUEST)


def test_duplicate_syn_while_the_connect_is_pending_gets_nothing() -> None:
    stack, host = setup()
    stack.receive_frame(segment(tcp.SYN, GISS, options=SYN_OPTIONS), 0.0)
    host.step(0.0)
    stack.receive_frame(segment(tcp.SYN, GISS, options=SYN_OPTIONS), 1.0)
    assert host.step(1.0) == ([], [])


def test_refused_connect_gets_rst_ack_and_the_socket_closed() -> None:
    stack, host = setup()
    stack.receive_frame(segment(tcp.SYN, GISS, options=SYN_OPTIONS), 0.0)
    host.step(0.0)
    stack.streams.host_refused(1, 0.01)
    frames, requests = host.step(0.01)
    assert [tcp_fields(f) for f in frames] == [(tcp.RST | tcp.ACK, 0, GISS + 1)]
    assert requests == [events.StreamClose(1)]  # the shell closed the failed socket already


def test_failed_connect_gets_icmp_host_unreachable_quoting_the_syn() -> None:
    stack, host = setup()
    syn = segment(tcp.SYN, GISS, options=SYN_OPTIONS)
    stack.receive_frame(syn, 0.0)
    host.step(0.0)
    stack.streams.host_failed(1, True, 0.01)
    frames, requests = host.step(0.01)
    assert requests == [events.StreamClose(1)]
    (error,) = frames
    assert (error.ip.protocol, error.ip.src, error.ip.dst) == (ipv4.PROTO_ICMP, GATEWAY, GUEST)
    message = icmpv4.decode(error.raw, error.ip.payload_offset, error.ip.payload_length)
    assert (message.type, message.code) == (icmpv4.DEST_UNREACHABLE, icmpv4.HOST_UNREACHABLE)
    quoted = error.raw[message.payload_offset :]
    assert quoted == syn[ethernet.SIZE : ethernet.SIZE + ipv4.SIZE + 8]  # RFC 792: IP + 8


def test_denied_destination_gets_icmp_net_unreachable_and_no_connect() -> None:
    stack = Stack(replace(CONFIG, disable_host_loopback=True))
    host = Host(stack)
    stack.receive_frame(segment(tcp.SYN, GISS, options=SYN_OPTIONS), 0.0)
    frames, requests = host.step(0.0)
    assert requests == []
    (error,) = frames
    message = icmpv4.decode(error.raw, error.ip.payload_offset, error.ip.payload_length)
    assert (message.type, message.code) == (icmpv4.DEST_UNREACHABLE, icmpv4.NET_UNREACHABLE)
    assert stack.dropped["policy: denied"] == 1


def test_segment_of_no_connection_gets_a_reset() -> None:
    stack, host = setup()
    stack.receive_frame(segment(tcp.ACK, GISS, 5000), 0.0)
    frames, requests = host.step(0.0)
    assert requests == [] and [tcp_fields(f) for f in frames] == [(tcp.RST, 5000, 0)]


def test_guest_data_is_handed_to_the_host_as_views_and_acked_after_the_write() -> None:
    stack, host = setup()
    flow = connect(stack, host)
    stack.receive_frame(segment(tcp.ACK | tcp.PSH, GISS + 1, ISS + 1, b"hello"), 1.0)
    frames, requests = host.step(1.0)
    assert frames == []  # the ACK waits (delayed) for an answer to carry it
    assert [type(r) for r in requests] == [events.StreamWrite]
    assert b"".join(bytes(b) for b in requests[0].data) == b"hello"  # type: ignore[union-attr]
    stack.streams.host_written(flow, 5, False, 1.0)
    frames, requests = host.step(1.0)
    assert [tcp_fields(f) for f in frames] == [(tcp.ACK, ISS + 1, GISS + 6)]
    assert requests == []  # written: nothing more to offer


def test_a_full_host_socket_gets_no_more_writes_until_writable() -> None:
    stack, host = setup()
    flow = connect(stack, host)
    stack.receive_frame(segment(tcp.ACK, GISS + 1, ISS + 1, b"abcdef"), 1.0)
    _, (write,) = host.step(1.0)
    assert isinstance(write, events.StreamWrite)
    stack.streams.host_written(flow, 2, False, 1.0)  # took "ab": the rest is offered again
    _, (rest,) = host.step(1.0)
    assert isinstance(rest, events.StreamWrite)
    assert b"".join(bytes(b) for b in rest.data) == b"cdef"
    stack.streams.host_written(flow, 0, True, 1.0)  # EAGAIN
    frames, requests = host.step(1.0)
    assert requests == []
    stack.streams.host_writable(flow, 1.1)
    _, (again,) = host.step(1.1)
    assert isinstance(again, events.StreamWrite)
    assert b"".join(bytes(b) for b in again.data) == b"cdef"


def test_new_guest_bytes_are_offered_even_to_a_socket_that_was_full() -> None:
    stack, host = setup()
    flow = connect(stack, host)
    stack.receive_frame(segment(tcp.ACK, GISS + 1, ISS + 1, b"abc"), 1.0)
    host.step(1.0)
    stack.streams.host_written(flow, 0, True, 1.0)  # EAGAIN
    assert host.step(1.0)[1] == []
    stack.receive_frame(segment(tcp.ACK, GISS + 4, ISS + 1, b"def"), 1.1)
    _, requests = host.step(1.1)
    assert [b"".join(bytes(b) for b in r.data) for r in requests] == [b"abcdef"]  # type: ignore[union-attr]


def test_guest_fin_shuts_the_host_socket_down_once_every_byte_is_written() -> None:
    stack, host = setup()
    flow = connect(stack, host)
    stack.receive_frame(segment(tcp.ACK | tcp.FIN, GISS + 1, ISS + 1, b"bye"), 1.0)
    frames, requests = host.step(1.0)
    assert [tcp_fields(f) for f in frames] == [(tcp.ACK, ISS + 1, GISS + 5)]
    assert [type(r) for r in requests] == [events.StreamWrite]  # no shutdown yet
    stack.streams.host_written(flow, 3, False, 1.0)
    _, requests = host.step(1.0)
    assert requests == [events.StreamShutdown(flow)]


def test_host_data_goes_out_as_one_gso_burst_with_the_right_virtio_header() -> None:
    stack, host = setup(vnet_hdr=True)
    flow = connect(stack, host, vnet_hdr=True)
    data = bytes(range(256)) * 40  # 10240 bytes: seven MSS-sized segments
    stack.streams.host_data(flow, data, 1.0)
    (burst,), requests = host.step(1.0)
    assert requests == []
    assert tcp_fields(burst) == (tcp.ACK | tcp.PSH, ISS + 1, GISS + 1)
    assert burst.payload == data
    head = ethernet.SIZE + ipv4.SIZE + tcp.SIZE
    assert burst.vnet == vnet.VnetRepr(
        vnet.NEEDS_CSUM,
        vnet.GSO_TCPV4,
        head,
        MSS,
        ethernet.SIZE + ipv4.SIZE,
        tcp.CHECKSUM_OFFSET,
    )
    assert len(data) <= GSO_MAX_SEGMENT


def test_small_host_data_is_one_segment_that_needs_only_the_checksum() -> None:
    stack, host = setup(vnet_hdr=True)
    flow = connect(stack, host, vnet_hdr=True)
    stack.streams.host_data(flow, b"x", 1.0)
    (sent,), _ = host.step(1.0)
    assert sent.payload == b"x" and sent.vnet is not None
    assert (sent.vnet.flags, sent.vnet.gso_type, sent.vnet.gso_size) == (vnet.NEEDS_CSUM, 0, 0)


def test_without_offload_host_data_is_cut_to_the_mss_and_checksummed() -> None:
    stack, host = setup()
    flow = connect(stack, host)
    stack.streams.host_data(flow, b"y" * (MSS + 10), 1.0)
    frames, _ = host.step(1.0)
    assert [len(f.payload) for f in frames] == [MSS, 10]
    for f in frames:
        assert f.tcp is not None
        assert tcp.checksum_ok(f.raw, f.ip.payload_offset, f.ip.payload_length, GATEWAY, GUEST)


def test_a_full_send_buffer_pauses_host_reads_and_guest_acks_resume_them() -> None:
    stack, host = setup(vnet_hdr=True)
    flow = connect(stack, host, vnet_hdr=True)
    stack.receive_frame(segment(tcp.ACK, GISS + 1, ISS + 1, window=512), 0.5)  # 64 KiB
    host.step(0.5)
    stack.streams.host_data(flow, bytes(TCP_SND_BUFFER), 1.0)
    frames, requests = host.step(1.0)
    assert requests == [events.StreamPause(flow)]
    sent = sum(len(f.payload) for f in frames)
    assert 0 < sent < TCP_SND_BUFFER  # the guest's window holds a part
    stack.receive_frame(segment(tcp.ACK, GISS + 1, ISS + 1 + sent, window=65535), 1.1)
    _, requests = host.step(1.1)
    assert requests == [events.StreamResume(flow)]


def test_host_eof_sends_fin_after_the_data_and_host_reset_sends_rst() -> None:
    stack, host = setup()
    flow = connect(stack, host)
    stack.streams.host_data(flow, b"last", 1.0)
    stack.streams.host_eof(flow, 1.0)
    frames, requests = host.step(1.0)
    assert requests == []
    assert [tcp_fields(f) for f in frames][-1][0] & tcp.FIN
    stack.streams.host_reset(flow, 1.1)
    frames, requests = host.step(1.1)
    assert [f.tcp.flags & tcp.RST for f in frames if f.tcp] == [tcp.RST]
    assert requests == [events.StreamClose(flow)]  # the shell forgot the failed socket


def test_guest_reset_closes_the_host_socket_with_a_reset() -> None:
    stack, host = setup()
    flow = connect(stack, host)
    stack.receive_frame(segment(tcp.RST, GISS + 1), 1.0)
    assert host.step(1.0) == ([], [events.StreamClose(flow, abort=True)])


def test_forward_open_asks_arp_first_then_sends_syn_to_the_guest() -> None:
    stack, host = setup()
    flow = stack.streams.open_to_guest(GUEST, 80, REMOTE, 5555, 0.0)
    assert flow is not None
    frames, requests = host.step(0.0)
    assert requests == []
    (ask,) = frames
    eth = ethernet.decode(ask.raw)
    question = arp.decode(ask.raw, eth.payload_offset)
    assert (eth.dst, question.oper, question.tpa) == (ethernet.BROADCAST, arp.REQUEST, GUEST)
    answer = ethernet.encode(GATEWAY_MAC, GUEST_MAC, ethernet.ETHERTYPE_ARP)
    answer += arp.reply(GUEST_MAC, GUEST, GATEWAY_MAC, GATEWAY)
    stack.receive_frame(answer, 0.1)
    frames, requests = host.step(0.1)
    assert requests == []
    (syn,) = frames
    assert syn.raw[:6] == GUEST_MAC
    assert tcp_fields(syn) == (tcp.SYN, ISS, 0)
    assert (syn.ip.src, syn.ip.dst, syn.tcp.src_port, syn.tcp.dst_port) == (  # type: ignore[union-attr]
        REMOTE,
        GUEST,
        5555,
        80,
    )


def syn_from(port: int) -> bytes:
    """A guest SYN from source port ``port`` (the rest as ``segment``)."""
    header = tcp.encode(GUEST, GATEWAY, port, RPORT, GISS, 0, tcp.SYN, 65535, b"")
    ip = ipv4.encode(GUEST, GATEWAY, IPPROTO_TCP, len(header))
    return ethernet.encode(GATEWAY_MAC, GUEST_MAC, ethernet.ETHERTYPE_IPV4) + ip + header


def test_a_half_open_connection_is_reset_once_the_cap_of_newer_ones_came(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A SYN flood must not fill the table: with the cap at 3, a connection still half-open
    (host connect pending, or our SYN|ACK unacknowledged) when 3 newer ones have come is reset
    (RST|ACK to the guest, its socket closed); an established one is left alone."""
    monkeypatch.setattr(streams_module, "HALF_OPEN_LIMIT", 3)
    stack, host = setup()
    stack.receive_frame(syn_from(50001), 0.0)  # will be established
    stack.receive_frame(syn_from(50002), 0.0)  # host connected, our SYN|ACK never acknowledged
    stack.receive_frame(syn_from(50003), 0.0)  # host connect pending
    host.step(0.0)
    stack.streams.host_connected(1, 0.01)
    stack.streams.host_connected(2, 0.01)
    host.step(0.01)
    ack = tcp.encode(GUEST, GATEWAY, 50001, RPORT, GISS + 1, ISS + 1, tcp.ACK, 65535, b"")
    ip = ipv4.encode(GUEST, GATEWAY, IPPROTO_TCP, len(ack))
    stack.receive_frame(ethernet.encode(GATEWAY_MAC, GUEST_MAC, 0x0800) + ip + ack, 0.02)
    host.step(0.02)
    assert stack.streams.by_id[1].conn.state is TcpState.ESTABLISHED

    stack.receive_frame(syn_from(50004), 0.03)  # the 4th: flow 1 leaves the window, untouched
    frames, requests = host.step(0.03)
    assert frames == []
    assert requests == [events.StreamConnect(4, socket.AF_INET, LOOPBACK, RPORT)]
    stack.receive_frame(syn_from(50005), 0.04)  # the 5th: flow 2, still half-open, is reset
    frames, requests = host.step(0.04)
    assert [(f.tcp.dst_port, f.tcp.flags) for f in frames if f.tcp] == [(50002, tcp.RST | tcp.ACK)]
    assert requests == [
        events.StreamConnect(5, socket.AF_INET, LOOPBACK, RPORT),
        events.StreamClose(2),
    ]
    stack.receive_frame(syn_from(50006), 0.05)  # the 6th: flow 3, connect pending, is refused
    frames, requests = host.step(0.05)
    assert [(f.tcp.dst_port, *tcp_fields(f)) for f in frames if f.tcp] == [
        (50003, tcp.RST | tcp.ACK, 0, GISS + 1)
    ]
    assert requests[0] == events.StreamConnect(6, socket.AF_INET, LOOPBACK, RPORT)
    assert [type(r) for r in requests[1:]] == [events.StreamClose]
    assert stack.dropped["tcp: half-open connection reset"] == 2
    assert sorted(stack.streams.by_id) == [1, 4, 5, 6]
    assert list(stack.streams.opening) == [4, 5, 6]


def test_syns_beyond_the_batch_limit_are_dropped_until_the_next_flush(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A flood's SYNs past the limit of one batch cost no connect: dropped unanswered and
    counted; after the flush the next SYN (the guest's retransmission) is taken."""
    monkeypatch.setattr(streams_module, "SYN_BATCH_LIMIT", 3)
    stack, host = setup()
    for port in range(50001, 50006):
        stack.receive_frame(syn_from(port), 0.0)
    frames, requests = host.step(0.0)
    assert frames == []
    assert requests == [events.StreamConnect(n, socket.AF_INET, LOOPBACK, RPORT) for n in (1, 2, 3)]
    assert stack.dropped["tcp: SYN over the batch limit"] == 2
    stack.receive_frame(syn_from(50004), 1.0)
    frames, requests = host.step(1.0)
    assert requests == [events.StreamConnect(4, socket.AF_INET, LOOPBACK, RPORT)]
    assert sorted(stack.streams.by_id) == [1, 2, 3, 4]
