"""DHCP messages (RFC 2131 §2) and their options (RFC 2132), for a server on Ethernet."""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from pyslirp4netns.wire.codec import Buffer, Codec, WireError

# RFC 2131 §2, Figure 1, followed by the magic cookie that starts the options (§3):
#  0                   1                   2                   3
#  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
# +---------------+---------------+---------------+---------------+
# |     op (1)    |   htype (1)   |   hlen (1)    |   hops (1)    |
# +---------------+---------------+---------------+---------------+
# |                            xid (4)                            |
# +-------------------------------+-------------------------------+
# |           secs (2)            |           flags (2)           |
# +-------------------------------+-------------------------------+
# |                          ciaddr  (4)                          |
# +---------------------------------------------------------------+
# |                          yiaddr  (4)                          |
# +---------------------------------------------------------------+
# |                          siaddr  (4)                          |
# +---------------------------------------------------------------+
# |                          giaddr  (4)                          |
# +---------------------------------------------------------------+
# |                          chaddr  (16)                         |
# +---------------------------------------------------------------+
# |                          sname   (64)                         |
# +---------------------------------------------------------------+
# |                          file    (128)                        |
# +---------------------------------------------------------------+
# |                       magic cookie (4)                        |
# +---------------------------------------------------------------+
# |                          options (variable)                   |
# +---------------------------------------------------------------+

DHCP = Codec(
    "DhcpHeader",
    ">BBBBLHH4s4s4s4s16s64s128sL",
    "op htype hlen hops xid secs flags ciaddr yiaddr siaddr giaddr chaddr sname file magic_cookie",
    "DHCP_HEADER",
)
SIZE = DHCP.size  # 240, options start here

SERVER_PORT = 67
CLIENT_PORT = 68
BOOTREQUEST = 1
BOOTREPLY = 2
HTYPE_ETHERNET = 1
MAGIC_COOKIE = 0x63825363
FLAG_BROADCAST = 0x8000
MIN_MESSAGE = 300  # RFC 1542 §2.1: BOOTP relay agents and old clients expect at least 300 bytes

# Option codes (RFC 2132).
OPTION_PAD = 0
OPTION_SUBNET_MASK = 1
OPTION_ROUTER = 3
OPTION_DNS = 6
OPTION_HOSTNAME = 12
OPTION_REQUESTED_IP = 50
OPTION_LEASE_TIME = 51
OPTION_MESSAGE_TYPE = 53
OPTION_SERVER_ID = 54
OPTION_PARAMETER_LIST = 55
OPTION_CLIENT_ID = 61
OPTION_END = 255

# Message types (RFC 2132 §9.6).
DISCOVER = 1
OFFER = 2
REQUEST = 3
DECLINE = 4
ACK = 5
NAK = 6
RELEASE = 7
INFORM = 8

ZERO_ADDRESS = b"\x00" * 4


class DhcpRepr(NamedTuple):
    """A validated DHCP message from an Ethernet client."""

    op: int
    xid: int
    secs: int
    flags: int
    ciaddr: bytes
    yiaddr: bytes
    siaddr: bytes
    giaddr: bytes
    chaddr: bytes  # the 6-byte MAC
    options: dict[int, bytes]
    message_type: int | None  # option 53, None for plain BOOTP


def decode(buf: Buffer, offset: int = 0, length: int | None = None) -> DhcpRepr:
    """The DHCP message of ``length`` bytes (default: to the end) at ``offset`` (a UDP payload)."""
    if length is None:
        length = len(buf) - offset
    if length < SIZE or length > len(buf) - offset:
        raise WireError("dhcp: truncated")
    (op, htype, hlen, _, xid, secs, flags, ciaddr, yiaddr, siaddr, giaddr, chaddr, _, _, cookie) = (
        DHCP.values_from(buf, offset)
    )
    if op != BOOTREQUEST and op != BOOTREPLY:
        raise WireError("dhcp: bad op")
    if htype != HTYPE_ETHERNET or hlen != 6:
        raise WireError("dhcp: not ethernet")
    if cookie != MAGIC_COOKIE:
        raise WireError("dhcp: no magic cookie")
    options = parse_options(buf[offset + SIZE : offset + length])
    message_type = options.get(OPTION_MESSAGE_TYPE)
    if message_type is not None and len(message_type) != 1:
        raise WireError("dhcp: bad message type option")
    return DhcpRepr(
        op,
        xid,
        secs,
        flags,
        ciaddr,
        yiaddr,
        siaddr,
        giaddr,
        chaddr[:6],
        options,
        message_type[0] if message_type is not None else None,
    )


def parse_options(raw: Buffer) -> dict[int, bytes]:
    """Option code -> data; PAD skipped, parsing stops at END or at the end of ``raw``.

    RFC 2131 §4.1: a repeated option is concatenated (RFC 3396). A length running past the end
    raises WireError. Option overload (52) is not followed: sname and file stay unread.
    """
    options: dict[int, bytes] = {}
    pos = 0
    end = len(raw)
    while pos < end:
        code = raw[pos]
        if code == OPTION_END:
            break
        if code == OPTION_PAD:
            pos += 1
            continue
        if end - pos < 2:
            raise WireError("dhcp: option truncated")
        length = raw[pos + 1]
        if length > end - pos - 2:
            raise WireError("dhcp: option overruns message")
        data = bytes(raw[pos + 2 : pos + 2 + length])
        options[code] = options[code] + data if code in options else data
        pos += 2 + length
    return options


def _option(code: int, data: bytes) -> bytes:
    if len(data) > 255:
        raise ValueError("dhcp option too long")
    return bytes((code, len(data))) + data


def encode_reply(
    *,
    xid: int,
    chaddr: bytes,
    message_type: int,
    server_id: bytes,
    yiaddr: bytes = ZERO_ADDRESS,
    siaddr: bytes = ZERO_ADDRESS,
    ciaddr: bytes = ZERO_ADDRESS,
    giaddr: bytes = ZERO_ADDRESS,
    flags: int = 0,
    lease_time: int | None = None,
    subnet_mask: bytes | None = None,
    router: bytes | None = None,
    dns: Iterable[bytes] = (),
) -> bytes:
    """A BOOTREPLY (RFC 2131 §4.3.1, Table 3) with options 53, 54 and, when given, 51, 1, 3, 6.

    Padded with zeros to MIN_MESSAGE bytes.
    """
    header = DHCP.struct.pack(
        BOOTREPLY,
        HTYPE_ETHERNET,
        6,
        0,
        xid,
        0,
        flags,
        ciaddr,
        yiaddr,
        siaddr,
        giaddr,
        chaddr,  # struct pads the 6-byte MAC with zeros to 16
        b"",
        b"",
        MAGIC_COOKIE,
    )
    options = _option(OPTION_MESSAGE_TYPE, bytes((message_type,)))
    options += _option(OPTION_SERVER_ID, server_id)
    if lease_time is not None:
        options += _option(OPTION_LEASE_TIME, lease_time.to_bytes(4, "big"))
    if subnet_mask is not None:
        options += _option(OPTION_SUBNET_MASK, subnet_mask)
    if router is not None:
        options += _option(OPTION_ROUTER, router)
    servers = b"".join(dns)
    if servers:
        options += _option(OPTION_DNS, servers)
    message = header + options + bytes((OPTION_END,))
    return message.ljust(MIN_MESSAGE, b"\x00")
