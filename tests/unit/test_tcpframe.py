"""The ESTABLISHED fast path's codec (wire/tcpframe.py) against the general encoders and
decoders: same bytes out, same fields in, and the general path for everything it must judge."""

from __future__ import annotations

from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from pyslirp4netns.config import Config
from pyslirp4netns.core import events
from pyslirp4netns.core.egress import Egress
from pyslirp4netns.core.tcb import Segment
from pyslirp4netns.wire import ethernet, ipv4, tcp, tcpframe, vnet
from pyslirp4netns.wire.numbers import IPPROTO_TCP

GUEST_MAC = bytes.fromhex("020000000001")
GUEST = bytes([10, 0, 2, 100])
GATEWAY = bytes([10, 0, 2, 2])

u32 = st.integers(0, 2**32 - 1)
u16 = st.integers(0, 0xFFFF)


def test_frame_is_the_three_codecs_in_a_row() -> None:
    assert tcpframe.SIZE == ethernet.SIZE + ipv4.SIZE + tcp.SIZE == 54
    fields = (ethernet.ETHERNET.tuple._fields, ipv4.IPV4.tuple._fields, tcp.TCP.tuple._fields)
    assert len(tcpframe.FRAME.unpack(bytes(54))) == sum(map(len, fields))


@given(u32, u32, st.integers(0, 0x3F), u16, st.binary(max_size=64), st.integers(0, 0xFFFF))
def test_receive_offsets_read_what_the_general_decoders_read(
    seq: int, ack: int, flags: int, window: int, payload: bytes, ident: int
) -> None:
    header = tcp.encode(GUEST, GATEWAY, 40000, 80, seq, ack, flags, window, payload)
    ip = ipv4.encode(GUEST, GATEWAY, IPPROTO_TCP, len(header) + len(payload), identification=ident)
    frame = ethernet.encode(GATEWAY, GUEST_MAC, ethernet.ETHERTYPE_IPV4) + ip + header + payload
    total, fragment, seq_, ack_, offset, flags_, window_ = tcpframe.RECEIVE.unpack_from(frame)
    got_ip = ipv4.decode(frame, ethernet.SIZE)
    got = tcp.decode(frame, got_ip.payload_offset, got_ip.payload_length)
    assert total == got_ip.total_length and fragment == 0
    assert (seq_, ack_, flags_, window_) == (got.seq, got.ack, got.flags, got.window)
    assert offset >> 4 == 5
    assert frame[tcpframe.KEY] == tcpframe.key(GUEST, 40000, GATEWAY, 80)


@given(u32, u32, st.integers(0, 0x3F), u16, st.binary(max_size=3000), st.integers(0, 2000))
def test_template_frames_are_the_general_encoders_bytes(
    seq: int, ack: int, flags: int, window: int, payload: bytes, gso: int
) -> None:
    general = Egress(Config(target="1", pid=1), True, Counter())
    fast = Egress(Config(target="1", pid=1), True, Counter())
    segment = Segment(seq, ack, flags, window, b"", payload)
    general.tcp(GUEST_MAC, GATEWAY, GUEST, 80, 40000, segment, gso)
    template = fast.template(GUEST_MAC, GATEWAY, GUEST, 80, 40000)
    assert template is not None
    fast.tcp4(template, segment, gso)
    flat = [b"".join(bytes(p) for p in parts) for parts in general.take()]
    assert flat == [b"".join(bytes(p) for p in parts) for parts in fast.take()]
    info = vnet.decode(flat[0])
    assert info.flags == vnet.NEEDS_CSUM and info.hdr_len == tcpframe.SIZE


def test_no_template_where_the_general_path_must_run() -> None:
    plain = Egress(Config(target="1", pid=1), False, Counter())
    assert plain.template(GUEST_MAC, GATEWAY, GUEST, 80, 40000) is None  # full checksums
    offload = Egress(Config(target="1", pid=1), True, Counter())
    v6 = bytes(15) + b"\x02"
    assert offload.template(GUEST_MAC, v6, v6, 80, 40000) is None


def test_an_established_flow_takes_the_fast_path_and_bad_frames_still_drop() -> None:
    from tests.unit.test_streams import GISS, ISS, connect, segment, setup

    stack, host = setup(vnet_hdr=True)
    flow = connect(stack, host, vnet_hdr=True)
    assert stack.streams.fast.keys() == {tcpframe.key(GUEST, 40000, GATEWAY, 8080)}
    good = bytearray(segment(tcp.ACK | tcp.PSH, GISS + 1, ISS + 1, b"abc"))
    bad_ip = bytearray(good)
    bad_ip[ethernet.SIZE + 10] ^= 0xFF  # IPv4 header checksum
    bad_tcp = bytearray(good)
    bad_tcp[-1] ^= 0xFF  # payload: the TCP checksum no longer holds
    for frame in (bad_ip, bad_tcp):
        stack.receive_frame(bytes(frame), 1.0)
        assert host.step(1.0) == ([], [])  # nothing taken, nothing acknowledged
    assert stack.dropped == Counter({"ipv4: bad header checksum": 1, "tcp: bad checksum": 1})
    stack.receive_frame(bytes(good), 1.0)
    _, requests = host.step(1.0)
    writes = [r for r in requests if isinstance(r, events.StreamWrite)]
    assert [b"".join(bytes(chunk) for chunk in w.data) for w in writes] == [b"abc"]
    assert flow == 1
