"""CLOSE-WAIT keep-alive probes (issue 14): a connection the guest closed while the host keeps
its end open is probed after CLOSE_WAIT_IDLE of guest silence (RFC 1122 §4.2.3.6); a guest
that forgot it answers RST, one that kept it answers ACK, and no answer ends it too."""

from __future__ import annotations

from pyslirp4netns.core.seq import MASK
from pyslirp4netns.core.tcb import (
    CLOSE_WAIT_IDLE,
    KEEPALIVE_INTERVAL,
    KEEPALIVE_PROBES,
    Segment,
    TcpState,
)
from pyslirp4netns.core.tcp import TcpConnection
from pyslirp4netns.wire.tcp import ACK, FIN, RST, SYN, TcpOptions

MSS = 1000
IRS, ISS = 1000, 5000
G, U = IRS + 1, ISS + 1  # the guest's and our first sequence numbers after the SYNs


def state_of(conn: TcpConnection) -> TcpState:
    return conn.state


def close_wait(now: float = 1.0) -> TcpConnection:
    """A passive connection the guest has half-closed at ``now`` (our ACK of its FIN taken)."""
    c = TcpConnection.accept(
        irs=IRS,
        peer_window=65535,
        options=TcpOptions(mss=MSS),
        iss=ISS,
        now=0.0,
        mss=MSS,
        max_segment=MSS,
        rcv_buffer=8000,
        snd_buffer=8000,
    )
    c.host_connected(0.0)
    [synack] = c.flush(0.0)
    assert synack.flags == SYN | ACK
    c.on_segment(G, U, ACK, 65535, b"", 0.0)
    c.on_segment(G, U, ACK | FIN, 65535, b"", now)
    assert state_of(c) is TcpState.CLOSE_WAIT
    [ack] = c.flush(now)
    assert (ack.seq, ack.ack, ack.flags) == (U, G + 1, ACK)
    return c


def sent(c: TcpConnection, now: float) -> list[tuple[int, int, int]]:
    return [(s.seq & MASK, s.ack & MASK, s.flags) for s in c.flush(now)]


def test_guest_silence_brings_a_probe_and_its_rst_ends_the_connection() -> None:
    c = close_wait(1.0)
    assert c.next_deadline() == 1.0 + CLOSE_WAIT_IDLE
    c.on_timer(1.0 + CLOSE_WAIT_IDLE)
    assert sent(c, 61.0) == [(U - 1, G + 1, ACK)]  # SEG.SEQ = SND.NXT - 1, no data
    assert c.next_deadline() == 61.0 + KEEPALIVE_INTERVAL
    # The guest kernel dropped its orphan: RST with SEG.SEQ = our probe's ACK.
    c.on_segment(G + 1, 0, RST, 0, b"", 61.5)
    assert state_of(c) is TcpState.CLOSED and not c.timed_out


def test_a_live_guest_answers_with_an_ack_and_the_idle_timer_restarts() -> None:
    c = close_wait(1.0)
    c.on_timer(61.0)
    assert sent(c, 61.0) == [(U - 1, G + 1, ACK)]
    c.on_segment(G + 1, U, ACK, 65535, b"", 61.2)  # "I still have it"
    assert state_of(c) is TcpState.CLOSE_WAIT
    assert c.next_deadline() == 61.2 + CLOSE_WAIT_IDLE
    c.on_timer(100.0)
    assert sent(c, 100.0) == []  # not due yet


def test_unanswered_probes_end_the_connection_with_rst() -> None:
    c = close_wait(1.0)
    now = 1.0 + CLOSE_WAIT_IDLE
    for _ in range(KEEPALIVE_PROBES):
        c.on_timer(now)
        assert sent(c, now) == [(U - 1, G + 1, ACK)]
        now += KEEPALIVE_INTERVAL
    c.on_timer(now)
    assert sent(c, now) == [(U, G + 1, RST | ACK)]
    assert state_of(c) is TcpState.CLOSED and c.timed_out


def test_host_data_in_flight_is_watched_by_the_rto_not_probed() -> None:
    c = close_wait(1.0)
    c.host_data(b"x" * 100, 2.0)
    [data] = c.flush(2.0)
    assert data.seq == U and len(data.payload) == 100
    c.rtt.rto = 1000.0  # keep the retransmission timer out of the way
    c._rto_deadline = 2.0 + 1000.0
    c.on_timer(61.0)
    assert [s for s in c.flush(61.0) if not s.payload] == []  # no probe while data is out
    assert state_of(c) is TcpState.CLOSE_WAIT


def test_host_close_leaves_close_wait_and_its_idle_timer() -> None:
    c = close_wait(1.0)
    c.host_eof(2.0)
    [fin] = c.flush(2.0)
    assert fin.flags & FIN and state_of(c) is TcpState.LAST_ACK
    c.on_segment(G + 1, U + 1, ACK, 65535, b"", 2.1)
    assert state_of(c) is TcpState.CLOSED and c.next_deadline() is None


def test_probe_is_an_ack_only_segment() -> None:
    c = close_wait(1.0)
    c.on_timer(61.0)
    [probe] = c.flush(61.0)
    assert isinstance(probe, Segment) and probe.payload == b"" and probe.options == b""
