"""TcpConnection as segment traces: explicit ``now``, and ``expect`` fails on any extra output."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyslirp4netns.core.sack import OOO_MAX_SEGMENTS
from pyslirp4netns.core.sendbuffer import SendBuffer
from pyslirp4netns.core.seq import MASK, seq_add, seq_diff, seq_ge, seq_gt, seq_le, seq_lt
from pyslirp4netns.core.tcb import (
    CONNECT_TIMEOUT,
    FIN_WAIT_2_TIMEOUT,
    MAX_RETRANSMITS,
    SYN_RETRIES,
    TIME_WAIT_TIMEOUT,
    Segment,
    TcpState,
    reset_for,
)
from pyslirp4netns.core.tcp import TRANSITIONS, TcpConnection
from pyslirp4netns.wire.tcp import ACK, FIN, PSH, RST, SYN, URG, TcpOptions, encode_options

S = TcpState
MSS = 1000
IRS = 1000  # the guest's ISN
ISS = 5000  # ours
G = IRS + 1  # the guest's first data byte
U = ISS + 1  # ours
SYNACK_OPTS = encode_options(mss=MSS)


def seg(
    seq: int, ack: int, flags: int, window: int, payload: bytes = b"", options: bytes = b""
) -> Segment:
    return Segment(seq & MASK, ack & MASK, flags, window, options, payload)


def state_of(conn: TcpConnection) -> TcpState:
    """The state, read through a call so that mypy does not narrow it across inputs."""
    return conn.state


def _held(conn: TcpConnection) -> int:
    """Bytes of guest text held out of order."""
    return conn._ooo.size if conn._ooo is not None else 0


def expect(conn: TcpConnection, now: float, expected: list[Segment]) -> None:
    got = conn.flush(now)
    assert got == expected, "\n got: " + "\n      ".join(map(repr, got))


def accept(
    *,
    irs: int = IRS,
    iss: int = ISS,
    options: TcpOptions | None = None,
    peer_window: int = 65535,
    rcv_buffer: int = 8000,
    snd_buffer: int = 8000,
    max_segment: int = MSS,
    now: float = 0.0,
) -> TcpConnection:
    return TcpConnection.accept(
        irs=irs,
        peer_window=peer_window,
        options=options if options is not None else TcpOptions(mss=MSS),
        iss=iss,
        now=now,
        mss=MSS,
        max_segment=max_segment,
        rcv_buffer=rcv_buffer,
        snd_buffer=snd_buffer,
    )


def established(
    *,
    irs: int = IRS,
    iss: int = ISS,
    window: int = 65535,
    rcv_buffer: int = 8000,
    snd_buffer: int = 8000,
    max_segment: int = MSS,
    options: TcpOptions | None = None,
) -> TcpConnection:
    """A passive connection after the three-way handshake at t=0 (no RTT sample taken)."""
    c = accept(
        irs=irs,
        iss=iss,
        options=options,
        rcv_buffer=rcv_buffer,
        snd_buffer=snd_buffer,
        max_segment=max_segment,
    )
    c.host_connected(0.0)
    [synack] = c.flush(0.0)
    assert synack.flags == SYN | ACK
    c.on_segment(irs + 1, iss + 1, ACK, window, b"", 0.0)
    assert state_of(c) is S.ESTABLISHED
    expect(c, 0.0, [])
    c.rtt.srtt, c.rtt.rto = None, 1.0  # forget the handshake's 0 s sample: keep timers readable
    return c


# -- sequence arithmetic ---------------------------------------------------------------------
def test_sequence_arithmetic_wraps_around() -> None:
    top = MASK
    assert seq_add(top, 1) == 0
    assert seq_add(top - 1, 5) == 3
    assert seq_lt(top, 0) and seq_lt(top - 10, 5) and not seq_lt(5, top - 10)
    assert seq_le(3, 3) and seq_le(top, 2) and not seq_le(2, top)
    assert seq_gt(0, top) and seq_ge(0, 0) and seq_ge(1, top)
    assert seq_diff(2, top) == 3 and seq_diff(top, 2) == -3
    assert not seq_lt(0, 0x80000000) and not seq_gt(0, 0x80000000)  # undefined: neither


# -- passive open ----------------------------------------------------------------------------
def test_passive_open_waits_for_the_host_and_drops_syn_retransmissions() -> None:
    c = accept()
    assert state_of(c) is S.SYN_RECEIVED and c.connecting
    expect(c, 0.0, [])
    c.on_segment(IRS, 0, SYN, 65535, b"", 1.0, TcpOptions(mss=MSS))
    expect(c, 1.0, [])
    c.host_connected(1.5)
    expect(c, 1.5, [seg(ISS, G, SYN | ACK, 8000, options=SYNACK_OPTS)])
    # After SYN|ACK went out, a retransmitted SYN makes us resend it.
    c.on_segment(IRS, 0, SYN, 65535, b"", 2.0, TcpOptions(mss=MSS))
    expect(c, 2.0, [seg(ISS, G, SYN | ACK, 8000, options=SYNACK_OPTS)])
    c.on_segment(G, U, ACK, 65535, b"", 2.1)
    assert state_of(c) is S.ESTABLISHED and not c.connecting
    expect(c, 2.1, [])
    assert c.next_deadline() is None


def test_host_refused_gets_rst_ack_with_ack_irs_plus_one() -> None:
    c = accept()
    c.host_refused(0.5)
    expect(c, 0.5, [seg(0, G, RST | ACK, 0)])
    assert state_of(c) is S.CLOSED and c.closed


def test_host_failed_is_silent_for_the_icmp_path() -> None:
    c = accept()
    c.host_failed(0.5)
    expect(c, 0.5, [])
    assert c.closed
    # Late or repeated host facts change nothing.
    c.host_connected(1.0)
    c.host_refused(1.0)
    expect(c, 1.0, [])


def test_pending_connect_times_out_with_rst_ack() -> None:
    c = accept(now=10.0)
    assert c.next_deadline() == 10.0 + CONNECT_TIMEOUT
    c.on_timer(10.0 + CONNECT_TIMEOUT - 0.01)
    expect(c, 84.0, [])
    c.on_timer(10.0 + CONNECT_TIMEOUT)
    expect(c, 85.0, [seg(0, G, RST | ACK, 0)])
    assert c.closed and c.timed_out


def test_pending_connect_ignores_everything_but_an_exact_rst() -> None:
    c = accept()
    for flags in (ACK, ACK | PSH, FIN | ACK, SYN | ACK, URG | ACK):
        c.on_segment(G, U, flags, 100, b"data", 0.1)
    c.on_segment(G + 5, 0, RST, 0, b"", 0.1)
    expect(c, 0.1, [])
    assert state_of(c) is S.SYN_RECEIVED and c.to_host_bytes == 0
    c.on_segment(G, 0, RST, 0, b"", 0.2)
    assert c.closed and c.reset


def test_synack_retransmitted_with_backoff_then_given_up() -> None:
    c = accept()
    c.host_connected(0.0)
    synack = seg(ISS, G, SYN | ACK, 8000, options=SYNACK_OPTS)
    expect(c, 0.0, [synack])
    t = 0.0
    for i in range(SYN_RETRIES):
        deadline = c.next_deadline()
        assert deadline is not None and deadline == pytest.approx(t + 2.0**i)
        t = deadline
        c.on_timer(t)
        expect(c, t, [synack])
    c.on_timer(c.next_deadline() or 0.0)
    expect(c, t, [seg(U, G, RST | ACK, 0)])
    assert c.closed and c.timed_out


def test_syn_received_bad_ack_gets_rst_and_no_state_change() -> None:
    c = accept()
    c.host_connected(0.0)
    c.flush(0.0)
    c.on_segment(G, U + 100, ACK, 1000, b"", 0.1)
    expect(c, 0.1, [seg(U + 100, 0, RST, 0)])
    assert state_of(c) is S.SYN_RECEIVED


def test_syn_options_default_mss_and_no_window_scale() -> None:
    c = accept(options=TcpOptions())
    assert c.peer_mss == 536 and c.send_mss == 536
    c.host_connected(0.0)
    [synack] = c.flush(0.0)
    assert synack.options == encode_options(mss=MSS)  # no window scale: the guest offered none


# -- active open -----------------------------------------------------------------------------
def connect(rcv_buffer: int = 8000) -> TcpConnection:
    c = TcpConnection.connect(
        iss=ISS, now=0.0, mss=MSS, max_segment=MSS, rcv_buffer=rcv_buffer, snd_buffer=8000
    )
    expect(
        c,
        0.0,
        [
            seg(
                ISS,
                0,
                SYN,
                8000,
                options=encode_options(mss=MSS, window_scale=0, sack_permitted=True),
            )
        ],
    )
    return c


def test_active_open_with_window_scaling() -> None:
    c = TcpConnection.connect(
        iss=ISS, now=0.0, mss=MSS, max_segment=MSS, rcv_buffer=1 << 20, snd_buffer=8000
    )
    assert state_of(c) is S.SYN_SENT
    syn = seg(
        ISS, 0, SYN, 65535, options=encode_options(mss=MSS, window_scale=5, sack_permitted=True)
    )
    expect(c, 0.0, [syn])
    c.on_segment(IRS, U, SYN | ACK, 30000, b"", 0.01, TcpOptions(mss=1400, window_scale=2))
    assert state_of(c) is S.ESTABLISHED
    assert c.snd_wnd == 30000  # a SYN's window is never scaled (RFC 7323 §2.2)
    assert c.peer_mss == 1400 and c.send_mss == MSS
    assert c.rtt.srtt == pytest.approx(0.01)
    expect(c, 0.01, [seg(U, G, ACK, (1 << 20) >> 5)])
    c.on_segment(G, U, ACK, 100, b"", 0.02)
    assert c.snd_wnd == 400  # now scaled by the guest's shift


def test_active_open_without_guest_window_scale_scales_neither_way() -> None:
    c = TcpConnection.connect(
        iss=ISS, now=0.0, mss=MSS, max_segment=MSS, rcv_buffer=1 << 20, snd_buffer=8000
    )
    c.flush(0.0)
    c.on_segment(IRS, U, SYN | ACK, 30000, b"", 0.01, TcpOptions(mss=1400))
    assert c.rcv_wscale == 0 and c.snd_wscale == 0
    expect(c, 0.01, [seg(U, G, ACK, 65535)])
    c.on_segment(G, U, ACK, 100, b"", 0.02)
    assert c.snd_wnd == 100


def test_active_open_refused_by_guest_rst_ack() -> None:
    c = connect()
    c.on_segment(0, U, RST | ACK, 0, b"", 0.1)
    assert c.closed and c.refused
    expect(c, 0.1, [])


def test_active_open_bad_ack_gets_rst_and_bare_rst_is_ignored() -> None:
    c = connect()
    c.on_segment(IRS, ISS + 7, SYN | ACK, 100, b"", 0.1)
    expect(c, 0.1, [seg(ISS + 7, 0, RST, 0)])
    c.on_segment(0, 0, RST, 0, b"", 0.1)  # no ACK: not acceptable in SYN-SENT
    c.on_segment(0, ISS + 7, RST | ACK, 0, b"", 0.1)  # bad ACK: dropped, no answer
    assert state_of(c) is S.SYN_SENT
    expect(c, 0.1, [])


def test_active_syn_retried_with_backoff_then_timed_out() -> None:
    c = connect()
    syn = seg(
        ISS, 0, SYN, 8000, options=encode_options(mss=MSS, window_scale=0, sack_permitted=True)
    )
    t = 0.0
    for i in range(SYN_RETRIES):
        t = c.next_deadline() or -1.0
        assert t == pytest.approx(2.0 ** (i + 1) - 1)
        c.on_timer(t)
        expect(c, t, [syn])
    c.on_timer(c.next_deadline() or -1.0)
    expect(c, t, [])  # nothing to reset: the guest never answered
    assert c.closed and c.timed_out and not c.refused


def test_active_simultaneous_open_answers_syn_with_synack() -> None:
    c = connect()
    c.on_segment(IRS, 0, SYN, 5000, b"", 0.1, TcpOptions(mss=MSS))
    assert state_of(c) is S.SYN_RECEIVED
    expect(c, 0.1, [seg(ISS, G, SYN | ACK, 8000, options=SYNACK_OPTS)])
    c.on_segment(G, U, ACK, 5000, b"", 0.2)
    assert state_of(c) is S.ESTABLISHED


def test_active_open_data_and_fin_on_the_synack() -> None:
    c = connect()
    c.on_segment(IRS, U, SYN | ACK | FIN, 100, b"hello", 0.1, TcpOptions(mss=MSS))
    assert list(c.to_host) == [b"hello"] and c.shutdown_host
    assert state_of(c) is S.CLOSE_WAIT
    expect(c, 0.1, [seg(U, G + 6, ACK, 8000 - 6)])  # the FIN takes a sequence number too


def test_host_data_and_eof_during_handshake_wait_for_established() -> None:
    c = connect()
    assert c.send_space() == 8000
    assert c.host_data(b"abc", 0.0) == 3
    c.host_eof(0.0)
    expect(c, 0.0, [])
    c.on_segment(IRS, U, SYN | ACK, 100, b"", 0.1, TcpOptions(mss=MSS))
    assert state_of(c) is S.FIN_WAIT_1
    expect(c, 0.1, [seg(U, G, ACK | PSH | FIN, 8000, b"abc")])
    c.on_segment(G, U + 4, ACK, 100, b"", 0.2)
    assert state_of(c) is S.FIN_WAIT_2


# -- data, guest -> host ---------------------------------------------------------------------
def test_guest_data_batch_gets_one_cumulative_ack() -> None:
    c = established()
    c.on_segment(G, U, ACK, 65535, b"a" * 1000, 1.0)
    c.on_segment(G + 1000, U, ACK | PSH, 65535, memoryview(bytearray(b"b" * 500)), 1.0)
    c.on_segment(G + 1500, U, ACK | URG, 65535, b"c" * 10, 1.0)  # URG: ordinary data
    assert b"".join(c.to_host) == b"a" * 1000 + b"b" * 500 + b"c" * 10
    assert c.to_host_bytes == 1510
    # The right edge stays where it was (G + 8000): 8000 - 1510 left.
    expect(c, 1.0, [seg(U, G + 1510, ACK, 8000 - 1510)])
    expect(c, 1.0, [])


def test_payload_view_is_copied() -> None:
    c = established()
    buf = bytearray(b"x" * 100)
    c.on_segment(G, U, ACK, 65535, memoryview(buf), 1.0)
    buf[:] = b"y" * 100
    assert c.to_host[0] == b"x" * 100


def test_window_update_after_host_consumed() -> None:
    c = established(rcv_buffer=4000)
    for i in range(4):
        c.on_segment(G + i * 1000, U, ACK, 65535, b"d" * 1000, 1.0)
    expect(c, 1.0, [seg(U, G + 4000, ACK, 0)])
    # More data into a zero window: dropped and acknowledged (RFC 9293 §3.10.7.4).
    c.on_segment(G + 4000, U, ACK, 65535, b"e" * 1000, 1.1)
    assert c.to_host_bytes == 4000
    expect(c, 1.1, [seg(U, G + 4000, ACK, 0)])
    c.host_consumed(500, 1.2)  # less than min(MSS, buffer/2): no update (receiver SWS)
    expect(c, 1.2, [])
    c.host_consumed(1500, 1.3)
    expect(c, 1.3, [seg(U, G + 4000, ACK, 2000)])
    c.host_consumed(2000, 1.4)  # the guest knows 2000; 4000 doubles it
    expect(c, 1.4, [seg(U, G + 4000, ACK, 4000)])


def test_receive_window_never_shrinks_and_buffer_stays_bounded() -> None:
    c = established(rcv_buffer=3000)
    # The guest ignores the window: everything beyond G + 3000 is trimmed.
    c.on_segment(G, U, ACK, 65535, b"z" * 5000, 1.0)
    assert c.to_host_bytes == 3000 and b"".join(c.to_host) == b"z" * 3000
    expect(c, 1.0, [seg(U, G + 3000, ACK, 0)])
    for i in range(20):
        c.on_segment(G + 3000 + i * 7, U, ACK, 65535, b"q" * 900, 1.0 + i)
        assert c.to_host_bytes <= 3000


def test_tiny_segments_are_merged_so_to_host_stays_small() -> None:
    c = established(rcv_buffer=100000)
    for i in range(20000):
        c.on_segment(G + i, U, ACK, 65535, b"%c" % (i & 0xFF), 1.0)
    assert c.to_host_bytes == 20000 and len(c.to_host) <= 20000 // 512 + 1
    assert b"".join(c.to_host) == bytes(i & 0xFF for i in range(20000))


def test_fin_right_at_the_window_edge_is_accepted() -> None:
    c = established(rcv_buffer=2000)
    c.on_segment(G, U, ACK | FIN, 65535, b"e" * 2000, 1.0)
    assert c.to_host_bytes == 2000 and state_of(c) is S.CLOSE_WAIT
    expect(c, 1.0, [seg(U, G + 2001, ACK, 0)])
    c2 = established(rcv_buffer=2000)
    c2.on_segment(G, U, ACK | FIN, 65535, b"e" * 2001, 1.0)  # past the edge: FIN trimmed
    assert c2.to_host_bytes == 2000 and state_of(c2) is S.ESTABLISHED


def test_zero_window_probe_from_guest_is_answered() -> None:
    c = established(rcv_buffer=2000)
    c.on_segment(G, U, ACK, 65535, b"a" * 2000, 1.0)
    expect(c, 1.0, [seg(U, G + 2000, ACK, 0)])
    c.on_segment(G + 2000, U, ACK, 65535, b"b", 2.0)  # 1-byte probe
    expect(c, 2.0, [seg(U, G + 2000, ACK, 0)])
    assert c.to_host_bytes == 2000


def test_out_of_order_segments_are_reassembled_with_duplicate_acks() -> None:
    c = established()
    c.on_segment(G + 1000, U, ACK, 65535, b"2" * 1000, 1.0)
    c.on_segment(G + 3000, U, ACK, 65535, b"4" * 1000, 1.0)
    c.on_segment(G + 2000, U, ACK, 65535, b"3" * 1000, 1.0)
    c.on_segment(G + 2500, U, ACK, 65535, b"3" * 500 + b"4" * 1000, 1.0)  # overlaps
    assert c.to_host_bytes == 0
    dup = seg(U, G, ACK, 8000)
    expect(c, 1.0, [dup, dup, dup])  # at most three per flush: enough for fast retransmit
    c.on_segment(G, U, ACK, 65535, b"1" * 1000, 1.1)
    assert b"".join(c.to_host) == b"1" * 1000 + b"2" * 1000 + b"3" * 1000 + b"4" * 1000
    expect(c, 1.1, [seg(U, G + 4000, ACK, 4000)])


def test_out_of_order_fin_is_processed_when_the_hole_fills() -> None:
    c = established()
    c.on_segment(G + 5, U, ACK | FIN, 65535, b"world", 1.0)
    assert state_of(c) is S.ESTABLISHED and not c.shutdown_host
    expect(c, 1.0, [seg(U, G, ACK, 8000)])
    c.on_segment(G, U, ACK, 65535, b"hello", 1.1)
    assert b"".join(c.to_host) == b"helloworld" and c.shutdown_host
    assert state_of(c) is S.CLOSE_WAIT
    expect(c, 1.1, [seg(U, G + 11, ACK, 8000 - 11)])


def test_old_and_overlapping_segments_deliver_each_byte_once() -> None:
    c = established()
    c.on_segment(G, U, ACK, 65535, b"abcdef", 1.0)
    c.on_segment(G, U, ACK, 65535, b"abc", 1.0)  # wholly old: unacceptable, ACK
    c.on_segment(G + 3, U, ACK, 65535, b"defghi", 1.0)  # overlaps the head
    assert b"".join(c.to_host) == b"abcdefghi"
    expect(c, 1.0, [seg(U, G + 9, ACK, 8000 - 9)])


def test_unacceptable_segment_and_ack_of_unsent_data_get_an_ack() -> None:
    c = established()
    c.on_segment(G + 100000, U, ACK, 65535, b"far", 1.0)
    expect(c, 1.0, [seg(U, G, ACK, 8000)])
    c.on_segment(G, U + 50, ACK, 65535, b"data", 1.0)  # acks what we never sent: dropped
    assert c.to_host_bytes == 0
    expect(c, 1.0, [seg(U, G, ACK, 8000)])
    c.on_segment(G, U, PSH, 65535, b"data", 1.0)  # no ACK bit: dropped silently
    expect(c, 1.0, [])
    assert c.to_host_bytes == 0


def test_urgent_data_is_inline_and_harmless() -> None:
    c = established()
    c.on_segment(G, U, ACK | URG | PSH, 65535, b"!", 1.0)
    c.on_segment(G + 1, U, URG, 65535, b"?", 1.0)  # URG without ACK: dropped like any
    c.on_segment(G + 1, U, ACK | URG | FIN, 65535, b"end", 1.0)
    assert b"".join(c.to_host) == b"!end" and state_of(c) is S.CLOSE_WAIT


# -- data, host -> guest ---------------------------------------------------------------------
def test_host_data_is_segmented_with_psh_on_the_last() -> None:
    c = established()
    assert c.send_space() == 8000
    assert c.host_data(b"x" * 2500, 1.0) == 2500
    assert c.send_space() == 5500
    expect(
        c,
        1.0,
        [
            seg(U, G, ACK, 8000, b"x" * 1000),
            seg(U + 1000, G, ACK, 8000, b"x" * 1000),
            seg(U + 2000, G, ACK | PSH, 8000, b"x" * 500),
        ],
    )
    assert c.next_deadline() == 2.0  # RTO 1 s
    c.on_segment(G, U + 2500, ACK, 65535, b"", 1.1)
    assert c.send_space() == 8000 and c.next_deadline() is None
    assert c.rtt.srtt == pytest.approx(0.1) and c.rtt.rto == pytest.approx(0.3)


def test_data_piggybacks_the_ack() -> None:
    c = established()
    c.on_segment(G, U, ACK, 65535, b"ping", 1.0)
    c.host_data(b"pong", 1.0)
    expect(c, 1.0, [seg(U, G + 4, ACK | PSH, 7996, b"pong")])


def test_gso_burst_and_peer_mss_in_no_gso_mode() -> None:
    c = established(max_segment=65000, snd_buffer=200000, options=TcpOptions(mss=536))
    assert c.peer_mss == 536 and c.send_mss == 536
    c.host_data(b"g" * 70000, 1.0)
    out = c.flush(1.0)
    # One 65000-byte burst, then the window's remaining whole MSS multiples (122 * 536).
    assert [(s.seq, len(s.payload), s.flags) for s in out] == [
        (U, 65000, ACK),
        (U + 65000, 122 * 536 - 65000, ACK | PSH),
    ]
    d = established(options=TcpOptions(mss=536))  # no GSO: max_segment == mss
    d.host_data(b"h" * 1200, 1.0)
    assert [len(s.payload) for s in d.flush(1.0)] == [536, 536, 128]


def test_sender_respects_guest_window_and_avoids_silly_segments() -> None:
    c = established(window=2500)
    c.host_data(b"w" * 6000, 1.0)
    # 2500 of window: two full segments; the 500 left is less than an MSS and less than half
    # the largest window, so it waits (RFC 9293 §3.8.6.2.1).
    expect(
        c, 1.0, [seg(U, G, ACK, 8000, b"w" * 1000), seg(U + 1000, G, ACK | PSH, 8000, b"w" * 1000)]
    )
    c.on_segment(G, U + 2000, ACK, 2500, b"", 1.1)
    expect(
        c,
        1.1,
        [seg(U + 2000, G, ACK, 8000, b"w" * 1000), seg(U + 3000, G, ACK | PSH, 8000, b"w" * 1000)],
    )
    c.on_segment(G, U + 4000, ACK, 2500, b"", 1.2)
    expect(
        c,
        1.2,
        [seg(U + 4000, G, ACK, 8000, b"w" * 1000), seg(U + 5000, G, ACK | PSH, 8000, b"w" * 1000)],
    )


def test_zero_window_persist_probes_back_off_and_never_give_up_while_answered() -> None:
    c = established(window=0)
    c.host_data(b"p" * 3000, 1.0)
    expect(c, 1.0, [])
    assert c.next_deadline() == 2.0
    t = 1.0
    for i in range(MAX_RETRANSMITS + 5):
        t = c.next_deadline() or -1.0
        c.on_timer(t)
        expect(c, t, [seg(U, G, ACK | PSH, 8000, b"p")])  # 1-byte probe
        c.on_segment(G, U, ACK, 0, b"", t + 0.01)  # still closed
        expect(c, t + 0.01, [])
        assert state_of(c) is S.ESTABLISHED
        assert c.next_deadline() == pytest.approx(t + min(60.0, 2.0 ** (i + 1)))
    c.on_segment(G, U, ACK, 5000, b"", t + 1.0)  # the window opens
    out = c.flush(t + 1.0)
    assert [(s.seq, len(s.payload)) for s in out] == [(U, 1000), (U + 1000, 1000), (U + 2000, 1000)]


def test_probe_byte_accepted_by_the_guest() -> None:
    c = established(window=0)
    c.host_data(b"ab", 1.0)
    expect(c, 1.0, [])
    c.on_timer(2.0)
    expect(c, 2.0, [seg(U, G, ACK | PSH, 8000, b"a")])
    c.on_segment(G, U + 1, ACK, 10, b"", 2.1)
    expect(c, 2.1, [seg(U + 1, G, ACK | PSH, 8000, b"b")])


def test_retransmission_timeout_goes_back_n_with_backoff() -> None:
    c = established()
    c.host_data(b"r" * 3000, 0.0)
    first = c.flush(0.0)
    assert len(first) == 3
    c.on_segment(G, U + 1000, ACK, 65535, b"", 0.5)  # first acked: timer restarts (§5.3)
    assert c.next_deadline() == pytest.approx(1.5)
    expect(c, 0.5, [])
    c.on_timer(1.5)
    expect(c, 1.5, first[1:])  # go-back-N from snd_una
    assert c.next_deadline() == pytest.approx(3.5)  # backed off to 2 s
    c.on_timer(3.5)
    expect(c, 3.5, first[1:])
    assert c.next_deadline() == pytest.approx(7.5)
    c.on_segment(G, U + 3000, ACK, 65535, b"", 4.0)
    assert c.next_deadline() is None
    assert c.rtt.srtt is None  # Karn: retransmitted data gives no sample (RFC 6298 §3)


def test_retransmissions_give_up_with_rst() -> None:
    c = established()
    c.host_data(b"r" * 10, 0.0)
    c.flush(0.0)
    timeouts = []
    for _ in range(MAX_RETRANSMITS):
        t = c.next_deadline() or -1.0
        timeouts.append(t)
        c.on_timer(t)
        assert [s.payload for s in c.flush(t)] == [b"r" * 10]
    assert timeouts[-1] > 60 * 5 and timeouts[-1] - timeouts[-2] == pytest.approx(60.0)
    c.on_timer(c.next_deadline() or -1.0)
    expect(c, 0.0, [seg(U + 10, G, RST | ACK, 0)])
    assert c.closed and c.timed_out


def test_fast_retransmit_after_three_duplicate_acks_and_partial_ack() -> None:
    c = established()
    c.host_data(b"f" * 5000, 0.0)
    sent = c.flush(0.0)
    assert len(sent) == 5
    c.on_segment(G, U + 1000, ACK, 65535, b"", 0.1)
    for _ in range(3):
        c.on_segment(G, U + 1000, ACK, 65535, b"", 0.1)
    expect(c, 0.1, [seg(U + 1000, G, ACK, 8000, b"f" * 1000)])
    c.on_segment(G, U + 1000, ACK, 65535, b"", 0.1)  # a 4th: no second fast retransmit
    expect(c, 0.1, [])
    c.on_segment(G, U + 3000, ACK, 65535, b"", 0.15)  # partial ACK: the next hole goes now
    expect(c, 0.15, [seg(U + 3000, G, ACK, 8000, b"f" * 1000)])
    c.on_segment(G, U + 5000, ACK, 65535, b"", 0.2)
    expect(c, 0.2, [])
    assert c.next_deadline() is None


def test_data_acks_do_not_count_as_duplicates() -> None:
    c = established()
    c.host_data(b"f" * 2000, 0.0)
    c.flush(0.0)
    for i in range(5):
        c.on_segment(G + i, U, ACK, 65535, b"x", 0.1)  # the guest sends data, acks nothing
    expect(c, 0.1, [seg(U + 2000, G + 5, ACK, 7995)])


def test_send_buffer_takes_one_read_past_its_mark_then_nothing() -> None:
    c = established(snd_buffer=3000)
    assert c.host_data(b"a" * 2000, 1.0) == 2000
    assert c.host_data(b"a" * 3000, 1.0) == 3000  # room was left: the whole read is taken
    assert c.send_space() == 0 and c.host_data(b"b", 1.0) == 0  # full: the shell pauses
    c.flush(1.0)
    c.on_segment(G, U + 3000, ACK, 65535, b"", 1.1)
    assert c.send_space() == 1000


# -- closing ---------------------------------------------------------------------------------
def test_guest_fin_half_close_then_host_data_and_eof() -> None:
    c = established()
    c.on_segment(G, U, ACK | FIN, 65535, b"req", 1.0)
    assert state_of(c) is S.CLOSE_WAIT and c.shutdown_host and list(c.to_host) == [b"req"]
    expect(c, 1.0, [seg(U, G + 4, ACK, 7996)])
    c.host_data(b"response", 1.1)  # data continues the other way
    expect(c, 1.1, [seg(U, G + 4, ACK | PSH, 7996, b"response")])
    c.on_segment(G + 4, U + 8, ACK, 65535, b"", 1.2)
    c.host_eof(1.3)
    assert state_of(c) is S.LAST_ACK
    expect(c, 1.3, [seg(U + 8, G + 4, ACK | FIN, 7996)])
    c.on_segment(G + 4, U + 9, ACK, 65535, b"", 1.4)
    assert state_of(c) is S.CLOSED
    assert not c.closed  # the shell still owes the host 3 bytes
    c.host_consumed(3, 1.5)
    assert c.closed


def test_host_reset_after_close_drops_the_undelivered_bytes() -> None:
    c = established()
    c.on_segment(G, U, ACK | FIN, 65535, b"tail", 1.0)
    c.host_eof(1.0)
    c.flush(1.0)
    c.on_segment(G + 5, U + 1, ACK, 65535, b"", 1.1)
    assert state_of(c) is S.CLOSED and not c.closed  # 4 bytes still owed to the host
    c.host_reset(1.2)  # the host socket failed: nothing will consume them
    assert c.closed
    expect(c, 1.2, [])


def test_host_eof_half_close_then_guest_data_then_time_wait() -> None:
    c = established()
    c.host_data(b"bye", 1.0)
    c.host_eof(1.0)
    assert state_of(c) is S.FIN_WAIT_1 and c.send_space() == 0
    expect(c, 1.0, [seg(U, G, ACK | PSH | FIN, 8000, b"bye")])
    c.on_segment(G, U + 4, ACK, 65535, b"", 1.1)
    assert state_of(c) is S.FIN_WAIT_2
    c.on_segment(G, U + 4, ACK, 65535, b"more", 1.2)  # data continues the other way
    assert list(c.to_host) == [b"more"]
    expect(c, 1.2, [seg(U + 4, G + 4, ACK, 7996)])
    c.on_segment(G + 4, U + 4, ACK | FIN, 65535, b"", 1.3)
    assert state_of(c) is S.TIME_WAIT and c.shutdown_host
    expect(c, 1.3, [seg(U + 4, G + 5, ACK, 7995)])
    # A retransmitted FIN is acknowledged again and restarts the wait.
    c.on_segment(G + 4, U + 4, ACK | FIN, 65535, b"", 10.0)
    expect(c, 10.0, [seg(U + 4, G + 5, ACK, 7995)])
    assert c.next_deadline() == 10.0 + TIME_WAIT_TIMEOUT
    c.on_timer(10.0 + TIME_WAIT_TIMEOUT)
    assert state_of(c) is S.CLOSED
    expect(c, 40.0, [])


def test_fin_waits_for_the_send_queue_to_drain() -> None:
    c = established(window=1000)
    c.host_data(b"q" * 2000, 1.0)
    c.host_eof(1.0)
    expect(c, 1.0, [seg(U, G, ACK | PSH, 8000, b"q" * 1000)])
    c.on_segment(G, U + 1000, ACK, 1000, b"", 1.1)
    # 1000 of window fits the data but not the FIN: the FIN waits for window.
    expect(c, 1.1, [seg(U + 1000, G, ACK | PSH, 8000, b"q" * 1000)])
    c.on_segment(G, U + 2000, ACK, 1000, b"", 1.2)
    expect(c, 1.2, [seg(U + 2000, G, ACK | FIN, 8000)])
    c.on_segment(G, U + 2001, ACK, 1000, b"", 1.3)
    assert state_of(c) is S.FIN_WAIT_2


def test_simultaneous_close() -> None:
    c = established()
    c.host_eof(1.0)
    expect(c, 1.0, [seg(U, G, ACK | FIN, 8000)])
    c.on_segment(G, U, ACK | FIN, 65535, b"", 1.1)  # crosses our FIN
    assert state_of(c) is S.CLOSING
    expect(c, 1.1, [seg(U + 1, G + 1, ACK, 7999)])
    c.on_segment(G + 1, U + 1, ACK, 65535, b"", 1.2)
    assert state_of(c) is S.TIME_WAIT
    assert c.next_deadline() == pytest.approx(1.2 + TIME_WAIT_TIMEOUT)


def test_fin_ack_and_fin_in_one_segment_goes_to_time_wait() -> None:
    c = established()
    c.host_eof(1.0)
    c.flush(1.0)
    c.on_segment(G, U + 1, ACK | FIN, 65535, b"", 1.1)
    assert state_of(c) is S.TIME_WAIT
    expect(c, 1.1, [seg(U + 1, G + 1, ACK, 7999)])


def test_fin_is_retransmitted() -> None:
    c = established()
    c.host_eof(0.0)
    fin = seg(U, G, ACK | FIN, 8000)
    expect(c, 0.0, [fin])
    c.on_timer(1.0)
    expect(c, 1.0, [fin])


def test_fin_wait_2_times_out_after_guest_silence() -> None:
    c = established()
    c.host_eof(1.0)
    c.flush(1.0)
    c.on_segment(G, U + 1, ACK, 65535, b"", 2.0)
    assert state_of(c) is S.FIN_WAIT_2 and c.next_deadline() == 2.0 + FIN_WAIT_2_TIMEOUT
    c.on_segment(G, U + 1, ACK, 65535, b"still here", 50.0)  # restarts the idle timer
    c.flush(50.0)
    c.on_timer(62.0)
    assert state_of(c) is S.FIN_WAIT_2
    c.on_timer(50.0 + FIN_WAIT_2_TIMEOUT)
    expect(c, 110.0, [seg(U + 1, G + 10, RST | ACK, 0)])
    assert state_of(c) is S.CLOSED and c.timed_out


def test_new_syn_in_time_wait_reopens() -> None:
    c = make("TIME_WAIT")
    c.on_segment(G + 100000, 0, SYN, 65535, b"", 5.0, TcpOptions(mss=MSS))
    assert c.reopen and c.closed
    expect(c, 5.0, [])


# -- RST and challenge ACKs ------------------------------------------------------------------
def make(state: str) -> TcpConnection:
    """A connection in ``state`` (SYN_RECEIVED_PENDING: before host_connected)."""
    if state == "SYN_SENT":
        return connect()
    c = accept(rcv_buffer=8000)
    if state == "SYN_RECEIVED_PENDING":
        return c
    c.host_connected(0.0)
    c.flush(0.0)
    if state == "SYN_RECEIVED":
        return c
    c.on_segment(G, U, ACK, 65535, b"", 0.0)
    if state in ("FIN_WAIT_1", "FIN_WAIT_2", "CLOSING", "TIME_WAIT"):
        c.host_eof(0.0)
        c.flush(0.0)  # our FIN: U
        if state == "FIN_WAIT_2":
            c.on_segment(G, U + 1, ACK, 65535, b"", 0.0)
        elif state == "CLOSING":
            c.on_segment(G, U, ACK | FIN, 65535, b"", 0.0)
        elif state == "TIME_WAIT":
            c.on_segment(G, U + 1, ACK | FIN, 65535, b"", 0.0)
    elif state in ("CLOSE_WAIT", "LAST_ACK"):
        c.on_segment(G, U, ACK | FIN, 65535, b"", 0.0)
        if state == "LAST_ACK":
            c.host_eof(0.0)
    c.flush(0.0)
    assert state_of(c) is TcpState[state], c.state
    return c


SYNCHRONIZED = [
    "SYN_RECEIVED",
    "ESTABLISHED",
    "FIN_WAIT_1",
    "FIN_WAIT_2",
    "CLOSING",
    "TIME_WAIT",
    "CLOSE_WAIT",
    "LAST_ACK",
]


@pytest.mark.parametrize("state", ["SYN_RECEIVED_PENDING", *SYNCHRONIZED])
def test_guest_rst_at_rcv_nxt_resets_in_every_state(state: str) -> None:
    c = make(state)
    c.on_segment(c.rcv_nxt, 0, RST, 0, b"", 1.0)
    assert state_of(c) is S.CLOSED and c.reset and c.closed
    expect(c, 1.0, [])


def test_guest_rst_in_syn_sent_needs_the_right_ack() -> None:
    c = make("SYN_SENT")
    c.on_segment(0, U, RST | ACK, 0, b"", 1.0)
    assert c.closed and c.refused


@pytest.mark.parametrize("state", [s for s in SYNCHRONIZED if s != "SYN_RECEIVED"])
def test_in_window_rst_and_syn_get_a_challenge_ack(state: str) -> None:
    c = make(state)
    challenge = seg(c.snd_nxt, c.rcv_nxt, ACK, (c.rcv_adv - c.rcv_nxt) & MASK)
    for flags in (RST, RST | ACK):
        c.on_segment(c.rcv_nxt + 10, 0, flags, 0, b"", 1.0)
        expect(c, 1.0, [challenge])
    c.on_segment(c.rcv_nxt + 10**6, 0, RST, 0, b"", 1.0)  # outside the window: dropped
    expect(c, 1.0, [])
    c.on_segment(c.rcv_nxt + 10, 0, SYN | ACK, 0, b"", 1.0, TcpOptions())  # RFC 5961 §4
    expect(c, 1.0, [challenge])
    c.on_segment(c.rcv_nxt - 10, 0, SYN, 0, b"", 1.0, TcpOptions())
    expect(c, 1.0, [challenge])
    assert state_of(c) is TcpState[state] and not c.reset


def test_syn_received_challenge_is_the_synack_again() -> None:
    c = make("SYN_RECEIVED")
    c.on_segment(G + 10, 0, RST, 0, b"", 1.0)
    expect(c, 1.0, [seg(ISS, G, SYN | ACK, 8000, options=SYNACK_OPTS)])
    assert state_of(c) is S.SYN_RECEIVED


HOST_RESET = {
    "SYN_RECEIVED_PENDING": [seg(0, G, RST | ACK, 0)],
    "SYN_SENT": [],  # RFC 9293 §3.10.5: nothing to reset yet
    "SYN_RECEIVED": [seg(U, G, RST | ACK, 0)],
    "ESTABLISHED": [seg(U, G, RST | ACK, 0)],
    "FIN_WAIT_1": [seg(U + 1, G, RST | ACK, 0)],
    "FIN_WAIT_2": [seg(U + 1, G, RST | ACK, 0)],
    "CLOSING": [seg(U + 1, G + 1, RST | ACK, 0)],
    "TIME_WAIT": [],  # the guest has finished: nothing to reset
    "CLOSE_WAIT": [seg(U, G + 1, RST | ACK, 0)],
    "LAST_ACK": [seg(U + 1, G + 1, RST | ACK, 0)],
}


@pytest.mark.parametrize("state", sorted(HOST_RESET))
def test_host_reset_in_every_state(state: str) -> None:
    c = make(state)
    c.host_reset(1.0)
    expect(c, 1.0, HOST_RESET[state])
    assert c.closed
    c.host_reset(2.0)  # twice: nothing more
    c.on_segment(G, U, ACK, 100, b"late", 2.0)
    expect(c, 2.0, [])


def test_reset_for_unknown_flows() -> None:
    assert reset_for(100, 0, SYN, 0) == seg(0, 101, RST | ACK, 0)
    assert reset_for(100, 0, SYN | FIN, 5) == seg(0, 107, RST | ACK, 0)
    assert reset_for(100, 777, ACK, 5) == seg(777, 0, RST, 0)
    assert reset_for(100, 777, RST | ACK, 0) is None


# -- wrap-around and window scaling ----------------------------------------------------------
def test_sequence_numbers_wrap_both_ways() -> None:
    irs, iss = MASK - 2, MASK - 1
    c = established(irs=irs, iss=iss)
    g, u = (irs + 1) & MASK, (iss + 1) & MASK
    assert (g, u) == (MASK - 1, MASK)
    c.on_segment(g, u, ACK, 65535, b"0123456789", 1.0)
    assert c.rcv_nxt == 8 and b"".join(c.to_host) == b"0123456789"
    expect(c, 1.0, [seg(u, 8, ACK, 7990)])
    c.on_segment(8 + 5, u, ACK, 65535, b"later", 1.1)  # out of order across the wrap
    c.on_segment(8, u, ACK, 65535, b"abcde", 1.1)
    assert c.rcv_nxt == 18
    c.host_data(b"z" * 1500, 1.2)
    expect(c, 1.2, [seg(u, 18, ACK, 7980, b"z" * 1000), seg(999, 18, ACK | PSH, 7980, b"z" * 500)])
    c.on_segment(18, 1499, ACK, 65535, b"", 1.3)
    assert c.snd_una == 1499 and c.next_deadline() is None and c.send_space() == 8000


def test_window_scaling_both_ways() -> None:
    opts = TcpOptions(mss=MSS, window_scale=7)
    c = accept(options=opts, rcv_buffer=1 << 20, peer_window=200)
    assert c.rcv_wscale == 5  # the smallest shift that makes 1 MiB fit 16 bits
    c.host_connected(0.0)
    # The SYN|ACK offers our shift and carries an unscaled window.
    expect(c, 0.0, [seg(ISS, G, SYN | ACK, 65535, options=encode_options(mss=MSS, window_scale=5))])
    assert c.snd_wnd == 200  # the guest's SYN window is not scaled
    c.on_segment(G, U, ACK, 200, b"", 0.1)
    assert c.snd_wnd == 200 << 7
    c.on_segment(G, U, ACK, 65535, b"x" * 1000, 0.2)
    expect(c, 0.2, [seg(U, G + 1000, ACK, ((1 << 20) - 1000) >> 5)])
    c.host_data(b"y" * 3000, 0.3)
    assert len(c.flush(0.3)) == 3


def test_scaled_window_rounding_keeps_the_old_right_edge_acceptable() -> None:
    c = accept(options=TcpOptions(mss=MSS, window_scale=0), rcv_buffer=1 << 20)
    c.host_connected(0.0)
    c.flush(0.0)
    c.on_segment(G, U, ACK, 65535, b"", 0.0)
    c.flush(0.0)
    c.on_segment(G, U, ACK, 65535, b"x" * 1000, 0.1)
    expect(c, 0.1, [seg(U, G + 1000, ACK, ((1 << 20) - 1000) >> 5)])
    edge = c.rcv_adv
    # Fill the window to within less than one scaling unit of its edge.
    n = (edge - c.rcv_nxt) & MASK
    c.on_segment(c.rcv_nxt, U, ACK, 65535, b"y" * (n - 7), 0.2)
    [ack] = c.flush(0.2)
    assert ack.window == 0  # 7 bytes left, below the 32-byte unit: shown as zero
    c.on_segment(c.rcv_nxt, U, ACK, 65535, b"z" * 7, 0.3)  # still inside the old edge
    assert c.rcv_nxt == edge and c.to_host_bytes == 1000 + n


# -- Hypothesis ------------------------------------------------------------------------------
def _reachable(a: TcpState, b: TcpState, steps: int = 3) -> bool:
    frontier = {a}
    for _ in range(steps):
        if b in frontier:
            return True
        frontier = frontier | {t for s in frontier for t in TRANSITIONS[s]}
    return b in frontier


STREAM_PERIOD = 1 << 20  # divides 2**32, so a cyclic stream is consistent across the wrap
GUEST_STREAM = random.Random(1).randbytes(STREAM_PERIOD)
HOST_STREAM = random.Random(2).randbytes(STREAM_PERIOD)

# A script is a list of actions. Segments are biased toward what a live guest sends (seq at
# or near rcv_nxt, ack at snd_una or snd_max, common flag sets) but any value can come up.
seq_choices = st.one_of(
    st.tuples(st.just("rel"), st.just(0)),
    st.tuples(st.just("rel"), st.sampled_from([-1, 1, 1000, -1000, 3000, 1 << 31])),
    st.tuples(st.just("rel"), st.integers(-3000, 12000)),
    st.tuples(st.just("raw"), st.integers(0, MASK)),
)
ack_choices = st.one_of(
    st.tuples(st.sampled_from(["una", "max"]), st.just(0)),
    st.tuples(st.sampled_from(["una", "max"]), st.integers(-3000, 3000)),
    st.tuples(st.just("raw"), st.integers(0, MASK)),
)
flag_sets = st.one_of(
    st.sampled_from([ACK, ACK | PSH, ACK | FIN, ACK | PSH | FIN, RST, RST | ACK, SYN, SYN | ACK]),
    st.integers(0, 0x3F),
)
well_formed = st.tuples(
    st.just("segment"),
    st.tuples(st.just("rel"), st.just(0) | st.sampled_from([500, 1000, 2000])),
    st.tuples(st.sampled_from(["una", "max"]), st.just(0)),
    st.sampled_from([ACK, ACK | PSH, ACK | FIN]),
    st.just(65535),
    st.integers(0, 3000),
)
actions = st.one_of(
    well_formed,
    well_formed,
    st.tuples(
        st.just("segment"),
        seq_choices,
        ack_choices,
        flag_sets,
        st.one_of(st.just(65535), st.just(0), st.integers(0, 0xFFFF)),
        st.one_of(st.just(0), st.integers(1, 3000)),
    ),
    st.tuples(st.just("host"), st.sampled_from(["connected", "refused", "failed", "eof", "reset"])),
    st.tuples(st.just("data"), st.integers(0, 5000)),
    st.tuples(st.just("consumed"), st.integers(0, 5000)),
    st.tuples(st.just("time"), st.one_of(st.floats(0.0, 2.0), st.floats(0.0, 100.0))),
)


def _check_output(c: TcpConnection, out: list[Segment], max_segment: int) -> None:
    for s in out:
        assert 0 <= s.seq <= MASK and 0 <= s.ack <= MASK
        assert 0 <= s.window < 65536
        assert len(s.options) % 4 == 0 and len(s.options) <= 40
        assert len(s.payload) <= max_segment
        assert s.flags & ~(SYN | ACK | FIN | RST | PSH) == 0
        if s.payload:  # the guest gets the host's bytes at their stream offsets
            off = (s.seq - c.iss - 1) & MASK
            assert s.payload == HOST_STREAM[off : off + len(s.payload)]


def _guest_segment(
    c: TcpConnection, irs: int, action: tuple[object, ...], now: float
) -> tuple[int, int, int, int, bytes]:
    _, seq_choice, ack_choice, flags, window, length = action
    assert isinstance(seq_choice, tuple) and isinstance(ack_choice, tuple)
    seq_base, rel_seq = seq_choice
    ack_base, rel_ack = ack_choice
    assert isinstance(rel_seq, int) and isinstance(rel_ack, int) and isinstance(flags, int)
    assert isinstance(window, int) and isinstance(length, int)
    if state_of(c) is S.SYN_SENT and flags & SYN:
        seq = irs  # the guest's SYN|ACK
    elif seq_base == "raw":
        seq = rel_seq
    else:
        seq = (c.rcv_nxt + rel_seq) & MASK
    if ack_base == "raw":
        ack = rel_ack
    else:
        ack = ((c.snd_una if ack_base == "una" else c.snd_max) + rel_ack) & MASK
    # The payload is the guest's stream at this sequence number, so that what reaches to_host
    # can be checked byte for byte.
    start = ((seq + (1 if flags & SYN else 0) - irs - 1) & MASK) % STREAM_PERIOD
    return seq, ack, flags, window, (GUEST_STREAM + GUEST_STREAM)[start : start + length]


@settings(max_examples=1000, deadline=None)
@given(
    active=st.booleans(),
    handshake=st.booleans(),
    irs=st.integers(0, MASK) | st.integers(MASK - 5000, MASK),
    iss=st.integers(0, MASK) | st.integers(MASK - 5000, MASK),
    window_scale=st.none() | st.integers(0, 14),
    rcv_buffer=st.sampled_from([1, 3000, 8000, 1 << 20]),
    snd_buffer=st.sampled_from([0, 3000, 8000]),
    max_segment=st.sampled_from([MSS, 65000]),
    script=st.lists(actions, max_size=60),
)
def test_random_inputs_never_raise_and_stay_bounded(
    active: bool,
    handshake: bool,
    irs: int,
    iss: int,
    window_scale: int | None,
    rcv_buffer: int,
    snd_buffer: int,
    max_segment: int,
    script: list[tuple[object, ...]],
) -> None:
    now = 0.0
    options = TcpOptions(mss=MSS, window_scale=window_scale)
    sizes = {"mss": MSS, "max_segment": max_segment, "rcv_buffer": rcv_buffer}
    if active:
        c = TcpConnection.connect(iss=iss, now=now, snd_buffer=snd_buffer, **sizes)
        c.flush(now)
        if handshake:
            c.on_segment(irs, (iss + 1) & MASK, SYN | ACK, 65535, b"", now, options)
    else:
        c = TcpConnection.accept(
            irs=irs,
            peer_window=65535,
            options=options,
            iss=iss,
            now=now,
            snd_buffer=snd_buffer,
            **sizes,
        )
        if handshake:
            c.host_connected(now)
            c.flush(now)
            c.on_segment((irs + 1) & MASK, (iss + 1) & MASK, ACK, 65535, b"", now)
    c.flush(now)
    host_sent = 0
    delivered = bytearray()
    for action in script:
        before = c.state
        kind = action[0]
        if kind == "segment":
            seq, ack, flags, window, payload = _guest_segment(c, irs, action, now)
            c.on_segment(seq, ack, flags, window, memoryview(payload), now, options)
        elif kind == "host":
            getattr(c, "host_" + str(action[1]))(now)
        elif kind == "data":
            assert isinstance(action[1], int)
            space = c.send_space()
            chunk = HOST_STREAM[host_sent : host_sent + action[1]]
            took = c.host_data(chunk, now)
            assert took == (len(chunk) if space > 0 else 0)  # one read past the mark at most
            host_sent += took
        elif kind == "consumed":
            assert isinstance(action[1], int)
            while c.to_host:
                delivered += c.to_host.popleft()
            c.host_consumed(action[1], now)
        elif kind == "time":
            assert isinstance(action[1], float)
            now += action[1]
            c.on_timer(now)
        out = c.flush(now)
        _check_output(c, out, max(max_segment, MSS))
        assert _reachable(before, c.state), (before, c.state)
        # Bounded: the guest's bytes in to_host plus reassembly never exceed rcv_buffer.
        assert 0 <= c.to_host_bytes <= rcv_buffer
        assert sum(map(len, c.to_host)) <= c.to_host_bytes
        assert c.to_host_bytes + _held(c) <= rcv_buffer
        assert len(c._sndbuf) < snd_buffer + 5000  # past the mark by one read at most
        # The out-of-order store exists only while it holds text, and is bounded.
        assert c._ooo is None or 0 < len(c._ooo.pieces) <= OOO_MAX_SEGMENTS
        # Liveness: no state can hang without a timer, and no timer is left in the past.
        deadline = c.next_deadline()
        assert deadline is None or deadline > now
        if state_of(c) is S.CLOSED:
            assert deadline is None
        elif state_of(c) is S.ESTABLISHED:
            assert (deadline is None) == (c.snd_max == c.snd_una and not c._unsent())
        elif state_of(c) is S.CLOSE_WAIT:
            assert deadline is not None  # the idle timer of the keep-alive probes (issue 14)
        else:
            assert deadline is not None
    # Every byte handed to the host is the guest's stream, in order, exactly once.
    while c.to_host:
        delivered += c.to_host.popleft()
    assert bytes(delivered) == GUEST_STREAM[: len(delivered)]


class Guest:
    """A simple, well-behaved guest TCP: in-order receiver, go-back-N sender, constant window."""

    def __init__(self, c: TcpConnection, irs: int, window: int, shift: int) -> None:
        self.c = c
        self.irs = irs
        self.window = window  # its window field; its buffer is window << shift
        self.shift = shift
        self.rcv_nxt = (c.iss + 1) & MASK
        self.received = bytearray()
        self.got_fin = False
        self.snd_una = self.snd_nxt = self.snd_max = (irs + 1) & MASK
        self.sent = 0  # stream bytes handed to the wire at least once
        self.fin = False  # its app closed
        self.dead = False  # got our RST
        self.peer_window = 0  # our last window, in bytes
        self.to_us: list[tuple[int, int, int, int, bytes]] = []
        self.to_guest: list[Segment] = []

    def receive(self, s: Segment) -> None:
        if self.dead:
            return
        if s.flags & RST:
            self.dead = True
            return
        if s.flags & ACK and seq_gt(s.ack, self.snd_una) and seq_le(s.ack, self.snd_max):
            self.snd_una = s.ack
            if seq_lt(self.snd_nxt, s.ack):
                self.snd_nxt = s.ack
        self.peer_window = s.window << self.c.rcv_wscale
        off = (self.rcv_nxt - s.seq) & MASK
        if not self.got_fin and off <= len(s.payload):
            room = self.window << self.shift
            new = s.payload[off : off + room]
            self.received += new
            self.rcv_nxt = (self.rcv_nxt + len(new)) & MASK
            if s.flags & FIN and off + len(new) == len(s.payload):
                self.rcv_nxt = (self.rcv_nxt + 1) & MASK
                self.got_fin = True
        if s.payload or s.flags & (FIN | SYN):
            self.ack()

    def ack(self) -> None:
        self.to_us.append((self.snd_nxt, self.rcv_nxt, ACK, self.window, b""))

    def send(self, n: int, *, retransmit: bool = False) -> None:
        if self.dead:
            return
        if retransmit:
            self.snd_nxt = self.snd_una
        start = (self.snd_nxt - self.irs - 1) & MASK
        limit = max(0, (self.snd_una + self.peer_window - self.snd_nxt) & MASK)
        if limit >= 1 << 31:
            limit = 0
        stream_end = self.sent if retransmit else self.sent + n
        n = max(0, min(stream_end - start, limit, 3000))
        payload = GUEST_STREAM[start : start + n]
        flags = ACK
        if self.fin and start + n == self.sent:
            flags |= FIN
        if n or flags & FIN or retransmit:
            self.to_us.append((self.snd_nxt, self.rcv_nxt, flags, self.window, payload))
            self.snd_nxt = (self.snd_nxt + n + (1 if flags & FIN else 0)) & MASK
            if seq_gt(self.snd_nxt, self.snd_max):
                self.snd_max = self.snd_nxt
            if n:
                self.sent = max(self.sent, start + n)


moving_data = st.tuples(
    st.sampled_from(["to_guest", "to_us", "guest_send", "host_data"]), st.integers(1, 5000)
)
guest_actions = st.one_of(
    moving_data,
    moving_data,
    moving_data,
    st.tuples(st.just("drop_to_guest"), st.just(0)),
    st.tuples(st.just("drop_to_us"), st.just(0)),
    st.tuples(st.just("swap_to_us"), st.just(0)),
    st.tuples(st.just("guest_send"), st.integers(0, 4000)),
    st.tuples(st.just("guest_retransmit"), st.just(0)),
    st.tuples(st.just("guest_fin"), st.just(0)),
    st.tuples(st.just("host_data"), st.integers(0, 5000)),
    st.tuples(st.just("host_eof"), st.just(0)),
    st.tuples(st.just("consume"), st.integers(0, 5000)),
    st.tuples(st.just("time"), st.floats(0.0, 3.0)),
)


@settings(max_examples=500, deadline=None)
@given(
    irs=st.integers(0, MASK) | st.integers(MASK - 5000, MASK),
    iss=st.integers(0, MASK) | st.integers(MASK - 5000, MASK),
    guest_shift=st.none() | st.integers(0, 3),
    guest_window=st.sampled_from([2000, 8000, 65535]),
    rcv_buffer=st.sampled_from([3000, 8000, 100000]),
    max_segment=st.sampled_from([MSS, 65000]),
    script=st.lists(guest_actions, max_size=80),
)
def test_lossy_guest_gets_every_byte_both_ways(
    irs: int,
    iss: int,
    guest_shift: int | None,
    guest_window: int,
    rcv_buffer: int,
    max_segment: int,
    script: list[tuple[str, float]],
) -> None:
    now = 0.0
    c = TcpConnection.accept(
        irs=irs,
        peer_window=guest_window,
        options=TcpOptions(mss=MSS, window_scale=guest_shift),
        iss=iss,
        now=now,
        mss=MSS,
        max_segment=max_segment,
        rcv_buffer=rcv_buffer,
        snd_buffer=8000,
    )
    g = Guest(c, irs, guest_window, guest_shift or 0)
    c.host_connected(now)
    for s in c.flush(now):
        g.receive(s)
    host_sent = 0
    host_eof = False
    got = bytearray()

    def step(before: TcpState) -> None:
        out = c.flush(now)
        _check_output(c, out, max_segment)
        g.to_guest.extend(out)
        assert _reachable(before, c.state), (before, c.state)
        assert c.to_host_bytes + _held(c) <= rcv_buffer
        got.extend(b"".join(c.to_host))
        c.to_host.clear()
        assert got == GUEST_STREAM[: len(got)]
        assert g.received == HOST_STREAM[: len(g.received)]

    def run(kind: str, arg: float) -> None:
        nonlocal now, host_sent, host_eof
        n = int(arg)
        before = c.state
        if kind == "to_guest":
            for s in g.to_guest[:n]:
                g.receive(s)
            del g.to_guest[:n]
        elif kind == "to_us":
            for seq, ack, flags, window, payload in g.to_us[:n]:
                c.on_segment(seq, ack, flags, window, payload, now)
            del g.to_us[:n]
        elif kind == "drop_to_guest":
            del g.to_guest[:1]
        elif kind == "drop_to_us":
            del g.to_us[:1]
        elif kind == "swap_to_us" and len(g.to_us) > 1:
            g.to_us[0], g.to_us[1] = g.to_us[1], g.to_us[0]
        elif kind == "guest_send" and not g.fin:
            g.send(n)
        elif kind == "guest_retransmit":
            g.send(0, retransmit=True)
        elif kind == "guest_fin" and not g.fin:
            g.fin = True
            g.send(0)
        elif kind == "host_data" and not host_eof:
            host_sent += c.host_data(HOST_STREAM[host_sent : host_sent + n], now)
        elif kind == "host_eof":
            host_eof = True
            c.host_eof(now)
        elif kind == "consume":
            c.host_consumed(n, now)
        elif kind == "time":
            now += arg
            c.on_timer(now)
        step(before)

    if g.to_us == []:
        g.ack()
    run("to_us", 1)
    for kind, arg in script:
        run(kind, arg)
    # Drain: no more losses; the guest retransmits when stalled, time runs to each deadline.
    if not g.fin:
        g.fin = True
        g.send(0)
    if not host_eof:
        run("host_eof", 0)
    for _ in range(500):
        if state_of(c) is S.CLOSED and not g.to_guest:
            break
        if g.to_guest:
            run("to_guest", len(g.to_guest))
        elif g.to_us:
            run("to_us", len(g.to_us))
            run("consume", rcv_buffer)
        elif g.snd_una != g.snd_max or not g.fin:
            run("guest_retransmit", 0)
            if not g.to_us:
                g.ack()
        elif g.got_fin and state_of(c) is S.TIME_WAIT:
            break
        else:
            deadline = c.next_deadline()
            assert deadline is not None, c.state  # nothing may hang
            run("time", max(0.0, deadline - now))
    if c.reset or c.timed_out or g.dead:
        return  # the lossy phase may have exhausted the retransmissions
    assert g.got_fin and g.received == HOST_STREAM[:host_sent]
    assert c.shutdown_host and got == GUEST_STREAM[: g.sent]
    assert state_of(c) in (S.TIME_WAIT, S.CLOSED)


@pytest.mark.parametrize("state", ["SYN_RECEIVED_PENDING", "SYN_SENT", *SYNCHRONIZED])
def test_every_flag_combination_in_every_state(state: str) -> None:
    for flags in range(64):
        for seq_off in (-1, 0, 1, 5000, 1 << 31):
            for ack_off in (-1, 0, 1, 1 << 31):
                c = make(state)
                c.on_segment(
                    (c.rcv_nxt + seq_off) & MASK,
                    (c.snd_una + ack_off) & MASK,
                    flags,
                    seq_off & 0xFFFF,
                    b"p" * (seq_off & 7),
                    1.0,
                    TcpOptions(),
                )
                before = TcpState[state.removesuffix("_PENDING")]
                assert _reachable(before, c.state)
                _check_output(c, c.flush(1.0), MSS)
                c.on_timer(1000.0)
                c.flush(1000.0)


def test_sack_blocks_name_what_we_hold_past_a_hole() -> None:
    """RFC 2018: with SACK permitted, the duplicate ACKs list the out-of-order blocks, the
    latest arrival's block first; without it they carry no option."""
    c = established(options=TcpOptions(mss=MSS, sack_permitted=True))
    c.on_segment(G + 100, U, ACK, 65535, b"b" * 100, 0.1)
    c.on_segment(G + 300, U, ACK, 65535, b"d" * 100, 0.1)
    blocks = ((G + 300, G + 400), (G + 100, G + 200))
    sack = encode_options(sack_blocks=blocks)
    expect(c, 0.1, [seg(U, G, ACK, c._window_field()[0], options=sack)] * 2)
    plain = established()
    plain.on_segment(G + 100, U, ACK, 65535, b"b" * 100, 0.1)
    assert [s.options for s in plain.flush(0.1)] == [b""]


def test_synack_allows_sack_only_if_the_syn_did() -> None:
    c = accept(options=TcpOptions(mss=MSS, sack_permitted=True))
    c.host_connected(0.0)
    [synack] = c.flush(0.0)
    assert synack.options == encode_options(mss=MSS, sack_permitted=True)


def test_delayed_ack_rides_on_the_answer_or_goes_by_its_deadline() -> None:
    """RFC 1122 §4.2.3.2: a little data's ACK may wait (here 2 ms) for data going back; two
    full segments are acknowledged at once."""
    c = established()
    c.delayed_ack = 0.002
    c.on_segment(G, U, ACK | PSH, 65535, b"q", 0.1)
    expect(c, 0.1, [])  # held back
    assert c.next_deadline() == pytest.approx(0.102)
    c.host_data(b"answer", 0.1005)
    [reply] = c.flush(0.1005)
    assert (reply.ack, reply.payload) == (G + 1, b"answer")  # the ACK rode along
    c.on_segment(G + 1, U + 6, ACK | PSH, 65535, b"r", 0.2)
    expect(c, 0.2, [])
    c.on_timer(0.2021)
    [ack] = c.flush(0.2021)
    assert (ack.ack, ack.payload) == (G + 2, b"")
    c.on_segment(G + 2, U + 6, ACK, 65535, b"x" * 2 * MSS, 0.3)
    [ack] = c.flush(0.3)  # two full segments: no waiting
    assert ack.ack == G + 2 + 2 * MSS


@given(
    chunks=st.lists(st.binary(min_size=1, max_size=50), max_size=8),
    ops=st.lists(st.tuples(st.integers(0, 400), st.integers(0, 400)), max_size=20),
)
def test_send_buffer_views_match_a_flat_copy(
    chunks: list[bytes], ops: list[tuple[int, int]]
) -> None:
    """SendBuffer (chunks, consumed from the front) reads like one flat byte string."""
    buf = SendBuffer()
    flat = b""
    for chunk in chunks:
        buf.append(chunk)
        flat += chunk
    for off, n in ops:
        assert bytes(buf.view(off, n)) == flat[off : off + n]
        k = n % 7
        buf.consume(k)
        flat = flat[k:]
        assert len(buf) == len(flat)
