"""What crosses between the sans-IO core and the shell: requests the core makes of the shell.

The core never touches a socket: it appends these to ``Stack.requests`` and the shell carries
them out in order after each batch. Facts flow the other way as method calls on the stack
(``udp_received``, ``datagram_error``, ``ping_received``, ...). Flow ids are small integers
chosen by the stack; the shell maps them to its sockets.
"""

from __future__ import annotations

from dataclasses import dataclass

UDP = 17
PING = 1  # ICMP or ICMPv6 echo, by family


@dataclass(frozen=True, slots=True)
class DatagramOpen:
    """Open a connected host socket for a new flow: UDP, or an ICMP echo (ping) socket."""

    flow: int
    kind: int  # UDP or PING
    family: int  # socket.AF_INET or AF_INET6
    addr: bytes  # 4 or 16 bytes, already through nat.Policy
    port: int  # 0 for ping
    scope: int = 0  # IPv6 scope id (a link-local resolver from resolv.conf)


@dataclass(frozen=True, slots=True)
class DatagramSend:
    """Send one payload on a flow's socket (UDP payload, or a whole ICMP echo message).

    ``segment`` > 0 asks for UDP GSO: the payload is a run of datagrams of that size (the
    last may be shorter), sent with one UDP_SEGMENT sendmsg.
    """

    flow: int
    payload: bytes
    segment: int = 0


@dataclass(frozen=True, slots=True)
class DatagramClose:
    """The flow expired or was evicted: close its socket."""

    flow: int


@dataclass(frozen=True, slots=True)
class StreamConnect:
    """Start a non-blocking host ``connect()`` for a guest's SYN (then report
    ``tcp_connected``/``tcp_refused``/``tcp_failed``)."""

    flow: int
    family: int
    addr: bytes
    port: int
    scope: int = 0


@dataclass(frozen=True, slots=True)
class StreamWrite:
    """The flow's connection has bytes in ``to_host``: write what the socket takes."""

    flow: int


@dataclass(frozen=True, slots=True)
class StreamShutdown:
    """The guest sent FIN and every byte before it is in ``to_host``: SHUT_WR once written."""

    flow: int


@dataclass(frozen=True, slots=True)
class StreamClose:
    """The flow is over; ``abort``: close with RST (SO_LINGER 0), the guest reset it."""

    flow: int
    abort: bool = False


@dataclass(frozen=True, slots=True)
class Log:
    """One line for stderr (rare events only: never per packet)."""

    text: str


Request = (
    DatagramOpen
    | DatagramSend
    | DatagramClose
    | StreamConnect
    | StreamWrite
    | StreamShutdown
    | StreamClose
    | Log
)
