"""DHCPv6 messages (RFC 8415 §8) and their options (§21), for a stateless server (§6.1)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from pyslirp4netns.wire.codec import Buffer, Codec, WireError

# RFC 8415 §8, client/server message format:
#  0                   1                   2                   3
#  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
# +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
# |    msg-type   |               transaction-id                  |
# +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
# .                            options                            .
# .                 (variable number and length)                  .
# +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
# (the 24-bit transaction-id is a mask of one 32-bit field: struct has no 3-byte integer)

DHCPV6 = Codec("Dhcpv6Header", ">L", "msg_type_xid", "DHCPV6_HEADER")
SIZE = DHCPV6.size
MSG_TYPE_SHIFT = 24  # of msg_type_xid
XID_MASK = 0x00FFFFFF

# RFC 8415 §21.1, option format:
#  0                   1                   2                   3
#  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
# +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
# |          option-code          |           option-len          |
# +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
# |                          option-data                          |
# |                      (option-len octets)                      |
# +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+

OPTION = Codec("Dhcpv6Option", ">HH", "code length", "DHCPV6_OPTION")

CLIENT_PORT = 546  # RFC 8415 §7.2
SERVER_PORT = 547
ALL_SERVERS = bytes.fromhex("ff020000000000000000000000010002")  # ff02::1:2 (§7.1)

# Message types (RFC 8415 §7.3).
SOLICIT = 1
ADVERTISE = 2
REQUEST = 3
REPLY = 7
INFORMATION_REQUEST = 11

# Option codes (RFC 8415 §21, RFC 3646 §3).
OPTION_CLIENTID = 1
OPTION_SERVERID = 2
OPTION_IA_NA = 3
OPTION_IA_TA = 4
OPTION_ORO = 6
OPTION_DNS_SERVERS = 23
OPTION_IA_PD = 25
IA_OPTIONS = frozenset((OPTION_IA_NA, OPTION_IA_TA, OPTION_IA_PD))

DUID_LL = 3  # RFC 8415 §11.4: DUID type, then hardware type and link-layer address
HARDWARE_ETHERNET = 1


class Dhcpv6Repr(NamedTuple):
    """A validated DHCPv6 client/server message: type, transaction id, options in order."""

    msg_type: int
    xid: int
    options: list[tuple[int, bytes]]

    def option(self, code: int) -> bytes | None:
        """The first option ``code``'s data, or None."""
        for found, data in self.options:
            if found == code:
                return data
        return None


def decode(buf: Buffer, offset: int = 0, length: int | None = None) -> Dhcpv6Repr:
    """The DHCPv6 message of ``length`` bytes (default: to the end) at ``offset``."""
    if length is None:
        length = len(buf) - offset
    if length < SIZE or length > len(buf) - offset:
        raise WireError("dhcpv6: truncated")
    (word,) = DHCPV6.values_from(buf, offset)
    options: list[tuple[int, bytes]] = []
    pos, end = offset + SIZE, offset + length
    while pos < end:
        if end - pos < OPTION.size:
            raise WireError("dhcpv6: option truncated")
        code, size = OPTION.values_from(buf, pos)
        pos += OPTION.size
        if size > end - pos:
            raise WireError("dhcpv6: option overruns message")
        options.append((code, bytes(buf[pos : pos + size])))
        pos += size
    return Dhcpv6Repr(word >> MSG_TYPE_SHIFT, word & XID_MASK, options)


def encode(msg_type: int, xid: int, options: Iterable[tuple[int, bytes]]) -> bytes:
    """A DHCPv6 message with ``options`` in the order given (RFC 8415 §8, §21.1)."""
    parts = [DHCPV6.struct.pack(msg_type << MSG_TYPE_SHIFT | (xid & XID_MASK))]
    for code, data in options:
        if len(data) > 0xFFFF:
            raise ValueError("dhcpv6 option too long")
        parts.append(OPTION.struct.pack(code, len(data)) + data)
    return b"".join(parts)


def requested(oro: bytes) -> list[int]:
    """The option codes an Option Request option (RFC 8415 §21.7) lists."""
    if len(oro) & 1:
        raise WireError("dhcpv6: odd option request option")
    return [int.from_bytes(oro[i : i + 2], "big") for i in range(0, len(oro), 2)]
