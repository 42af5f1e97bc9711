"""What crosses between the sans-IO core and the shell: requests the core makes of the shell.

The core never touches a socket: the shell takes these with ``Stack.take_requests()`` after
each batch and carries them out in order. Facts flow the other way as method calls named
``host_*`` on the part that owns the flow (``stack.streams.host_connected``,
``stack.datagrams.udp_received``, ...). Flow ids are small integers chosen by the stack; the
shell maps them to its sockets.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pyslirp4netns.wire.codec import Buffer

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
    """Write ``data`` (read-only views, in order) to the flow's socket as far as it takes them,
    then report ``host_written``."""

    flow: int
    data: Sequence[Buffer]


@dataclass(frozen=True, slots=True)
class StreamShutdown:
    """The guest sent FIN and every byte before it has been written: ``shutdown(SHUT_WR)``."""

    flow: int


@dataclass(frozen=True, slots=True)
class StreamPause:
    """Stop reading the flow's socket: its connection holds all the guest can take for now."""

    flow: int


@dataclass(frozen=True, slots=True)
class StreamResume:
    """Read the flow's socket again (after a pause, or once a guest connection is set up)."""

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
    | StreamPause
    | StreamResume
    | StreamClose
    | Log
)
