"""TCP header and options (RFC 9293 §3.1, options from RFC 7323 and RFC 2018)."""

from __future__ import annotations

from typing import NamedTuple

from pyslirp4netns.wire import numbers
from pyslirp4netns.wire.codec import Buffer, Codec, WireError, checksum, ones_sum, pseudo_sum

# RFC 9293 §3.1:
#  0                   1                   2                   3
#  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
# +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
# |          Source Port          |       Destination Port        |
# +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
# |                        Sequence Number                        |
# +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
# |                    Acknowledgment Number                      |
# +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
# |  Data |       |C|E|U|A|P|R|S|F|                               |
# | Offset| Rsrvd |W|C|R|C|S|S|Y|I|            Window             |
# |       |       |R|E|G|K|H|T|N|N|                               |
# +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
# |           Checksum            |         Urgent Pointer        |
# +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
# |                           [Options]                           |
# +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+

TCP = Codec(
    "TcpHeader",
    ">HHLLBBHHH",
    "src_port dst_port seq ack data_offset flags window checksum urgent_pointer",
    "TCP_HEADER",
)
SIZE = TCP.size  # without options
CHECKSUM_OFFSET = 16  # for virtio csum_offset

DATA_OFFSET_MASK = 0xF0  # of data_offset, in 32-bit words
FIN = 0x01
SYN = 0x02
RST = 0x04
PSH = 0x08
ACK = 0x10
URG = 0x20
ECE = 0x40
CWR = 0x80

PROTOCOL = numbers.IPPROTO_TCP

# Options: kind, length (counting kind and length), value. RFC 9293 §3.2 (EOL, NOP, MSS),
# RFC 7323 §2.2 (window scale) and §3.2 (timestamps), RFC 2018 §2 and §3 (SACK).
OPT_EOL = 0
OPT_NOP = 1
OPT_MSS = 2
OPT_WINDOW_SCALE = 3
OPT_SACK_PERMITTED = 4
OPT_SACK = 5
OPT_TIMESTAMP = 8


# after kind 5 and its length
MSS_OPT = Codec("TcpMssOption", ">BBH", "kind length mss", "MSS_OPTION")
WINDOW_SCALE_OPT = Codec("TcpWindowScaleOption", ">BBB", "kind length shift", "WINDOW_SCALE_OPTION")
SACK_PERMITTED_OPT = Codec("TcpSackPermittedOption", ">BB", "kind length", "SACK_PERMITTED_OPTION")
TIMESTAMP_OPT = Codec(
    "TcpTimestampOption", ">BBLL", "kind length ts_val ts_ecr", "TIMESTAMP_OPTION"
)
SACK_BLOCK_CODEC = Codec("TcpSackBlock", ">LL", "left right", "SACK_BLOCK")

MAX_WINDOW_SCALE = 14  # RFC 7323 §2.3: larger shifts are used as 14

_VALUES = TCP.values_from
_PACK = TCP.struct.pack


class TcpRepr(NamedTuple):
    """A validated TCP header; the payload is ``payload_length`` bytes at ``payload_offset``."""

    src_port: int
    dst_port: int
    seq: int
    ack: int
    flags: int
    window: int
    checksum: int
    urgent_pointer: int
    options: bytes  # raw; parse_options() when they matter (SYN)
    payload_offset: int
    payload_length: int


class TcpOptions(NamedTuple):
    """The options we understand; absent ones are None/False/empty."""

    mss: int | None = None
    window_scale: int | None = None
    sack_permitted: bool = False
    timestamp: tuple[int, int] | None = None  # (ts_val, ts_ecr)
    sack_blocks: tuple[tuple[int, int], ...] = ()


def decode(buf: Buffer, offset: int = 0, length: int | None = None) -> TcpRepr:
    """The TCP segment at ``offset`` in an IP payload of ``length`` bytes (default: to the end).

    The checksum is not verified here (with virtio NEEDS_CSUM it is not filled in yet): see
    ``checksum_ok``.
    """
    if length is None:
        length = len(buf) - offset
    if length > len(buf) - offset or length < SIZE:
        raise WireError("tcp: truncated")
    src_port, dst_port, seq, ack, data_offset, flags, window, checksum_, urgent_pointer = _VALUES(
        buf, offset
    )
    header_length = (data_offset & DATA_OFFSET_MASK) >> 2
    if header_length < SIZE or header_length > length:
        raise WireError("tcp: bad data offset")
    options = b"" if header_length == SIZE else bytes(buf[offset + SIZE : offset + header_length])
    return TcpRepr(
        src_port,
        dst_port,
        seq,
        ack,
        flags,
        window,
        checksum_,
        urgent_pointer,
        options,
        offset + header_length,
        length - header_length,
    )


def checksum_ok(buf: Buffer, offset: int, length: int, src: bytes, dst: bytes) -> bool:
    """Whether the segment of ``length`` bytes at ``offset`` checksums right (RFC 9293 §3.1)."""
    return checksum(buf[offset : offset + length], pseudo_sum(src, dst, PROTOCOL, length)) == 0


def parse_options(raw: Buffer) -> TcpOptions:
    """The options we know from the raw option bytes; unknown kinds are skipped by their length.

    RFC 9293 §3.1: a zero, short or overrunning length makes the segment malformed (WireError),
    as does a known option with the wrong length.
    """
    mss: int | None = None
    window_scale: int | None = None
    timestamp: tuple[int, int] | None = None
    sack_permitted = False
    sack_blocks: tuple[tuple[int, int], ...] = ()
    pos = 0
    end = len(raw)
    while pos < end:
        kind = raw[pos]
        if kind == OPT_EOL:
            break
        if kind == OPT_NOP:
            pos += 1
            continue
        if end - pos < 2:
            raise WireError("tcp: option truncated")
        length = raw[pos + 1]
        if length < 2 or length > end - pos:
            raise WireError("tcp: bad option length")
        if kind == OPT_MSS:
            if length != MSS_OPT.size:
                raise WireError("tcp: bad MSS option")
            mss = MSS_OPT.values_from(raw, pos)[2]
        elif kind == OPT_WINDOW_SCALE:
            if length != WINDOW_SCALE_OPT.size:
                raise WireError("tcp: bad window scale option")
            window_scale = min(WINDOW_SCALE_OPT.values_from(raw, pos)[2], MAX_WINDOW_SCALE)
        elif kind == OPT_SACK_PERMITTED:
            if length != SACK_PERMITTED_OPT.size:
                raise WireError("tcp: bad SACK-permitted option")
            sack_permitted = True
        elif kind == OPT_TIMESTAMP:
            if length != TIMESTAMP_OPT.size:
                raise WireError("tcp: bad timestamp option")
            _, _, ts_val, ts_ecr = TIMESTAMP_OPT.values_from(raw, pos)
            timestamp = (ts_val, ts_ecr)
        elif kind == OPT_SACK:
            if (length - 2) % SACK_BLOCK_CODEC.size or length == 2:
                raise WireError("tcp: bad SACK option")
            sack_blocks = tuple(
                SACK_BLOCK_CODEC.values_from(raw, at)
                for at in range(pos + 2, pos + length, SACK_BLOCK_CODEC.size)
            )
        pos += length
    return TcpOptions(mss, window_scale, sack_permitted, timestamp, sack_blocks)


def encode_options(
    *,
    mss: int | None = None,
    window_scale: int | None = None,
    sack_permitted: bool = False,
    timestamp: tuple[int, int] | None = None,
    sack_blocks: tuple[tuple[int, int], ...] = (),
) -> bytes:
    """Option bytes in Linux's layout (tcp_options_write), NOP-padded to a 32-bit boundary.

    RFC 9293 §3.1: the header, options included, ends on a 32-bit boundary. SACK-permitted shares
    the timestamp's padding, as Linux sends it: MSS, SACK-permitted, timestamps, NOP, window scale.
    """
    out = b""
    if mss is not None:
        out += MSS_OPT.struct.pack(OPT_MSS, MSS_OPT.size, mss)
    if timestamp is not None:
        if sack_permitted:
            out += SACK_PERMITTED_OPT.struct.pack(OPT_SACK_PERMITTED, SACK_PERMITTED_OPT.size)
        else:
            out += b"\x01\x01"
        out += TIMESTAMP_OPT.struct.pack(OPT_TIMESTAMP, TIMESTAMP_OPT.size, *timestamp)
    if window_scale is not None:
        out += b"\x01" + WINDOW_SCALE_OPT.struct.pack(
            OPT_WINDOW_SCALE, WINDOW_SCALE_OPT.size, window_scale
        )
    if sack_permitted and timestamp is None:
        out += b"\x01\x01" + SACK_PERMITTED_OPT.struct.pack(
            OPT_SACK_PERMITTED, SACK_PERMITTED_OPT.size
        )
    if sack_blocks:
        out += bytes((OPT_NOP, OPT_NOP, OPT_SACK, 2 + SACK_BLOCK_CODEC.size * len(sack_blocks)))
        for left, right in sack_blocks:
            out += SACK_BLOCK_CODEC.struct.pack(left, right)
    if len(out) > 40:
        raise ValueError("tcp options exceed 40 bytes")
    return out


def encode(
    src: bytes,
    dst: bytes,
    src_port: int,
    dst_port: int,
    seq: int,
    ack: int,
    flags: int,
    window: int,
    payload: Buffer = b"",
    *,
    options: bytes = b"",
    urgent_pointer: int = 0,
    partial: bool = False,
) -> bytes:
    """The TCP header (with ``options``, a multiple of 4 bytes) for ``payload`` from ``src`` to
    ``dst`` (4 or 16 bytes each).

    The checksum covers pseudo-header, header and payload (RFC 9293 §3.1). With ``partial`` the
    field holds only the pseudo-header sum, for the tap to finish (virtio NEEDS_CSUM,
    csum_offset CHECKSUM_OFFSET) or to segment (GSO).
    """
    if len(options) & 3 or len(options) > 40:
        raise ValueError("tcp options must be a multiple of 4 bytes, at most 40")
    header_length = SIZE + len(options)
    data_offset = header_length << 2
    length = header_length + len(payload)
    initial = pseudo_sum(src, dst, PROTOCOL, length)
    if partial:
        value = initial
    else:
        fixed = _PACK(src_port, dst_port, seq, ack, data_offset, flags, window, 0, urgent_pointer)
        value = checksum(payload, ones_sum(options, ones_sum(fixed, initial)))
    header = _PACK(src_port, dst_port, seq, ack, data_offset, flags, window, value, urgent_pointer)
    return header + options
