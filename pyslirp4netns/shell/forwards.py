"""Part of the shell: port forwards from host listeners into the guest (contract §3.7).

``apiserver`` binds each forward's listening socket and hands it here (``listen``); we watch it.
A TCP client is accepted at once and becomes an active open toward the guest through the stack
(the guest's refusal resets the client); a UDP client's datagrams go to the guest on a flow of
their own, and the guest's replies come back to that client, even with
``--disable-host-loopback`` (slirp4netns drops them). ``unlisten`` stops accepting; connections
already made carry on. With ``--port-forward-mode=splice`` a TCP client goes to
``shell/splice.py`` instead, bypassing the stack.

Who the guest sees as the peer: a client on host loopback (or 0.0.0.0) appears as the gateway
(10.0.2.2, or fd00::2 for an IPv6 guest address); any other client with its real address, as
slirp4netns does.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from pyslirp4netns.config import Config
from pyslirp4netns.core.nat import seen_by_guest
from pyslirp4netns.core.stack import Stack
from pyslirp4netns.shell.datagrams import HostDatagrams
from pyslirp4netns.shell.reactor import EPOLLIN, Watch
from pyslirp4netns.shell.streams import HostStreams

if TYPE_CHECKING:
    from pyslirp4netns.shell.splice import Splicer

ACCEPTS_PER_WAKEUP = 64


class Rule(Protocol):
    """What a forward must say (apiserver's ``Forward``: a rule of the table and its socket)."""

    @property
    def proto(self) -> str: ...

    @property
    def sock(self) -> socket.socket: ...

    @property
    def guest_addr(self) -> str: ...

    @property
    def guest_port(self) -> int: ...


class PortForwarding:
    """The data path of the API's forwards."""

    def __init__(
        self,
        stack: Stack,
        config: Config,
        streams: HostStreams,
        datagrams: HostDatagrams,
        watch: Watch,
        unwatch: Callable[[int], None],
        splicer: Splicer | None = None,
    ) -> None:
        self.stack = stack
        self.gateway = config.gateway.packed
        self.gateway6 = config.gateway6.packed
        self.dhcp_start = config.dhcp_start.packed
        self.streams = streams
        self.datagrams = datagrams
        self.watch = watch
        self.unwatch = unwatch
        self.splicer = splicer  # --port-forward-mode=splice: TCP clients go to shell/splice.py
        self.listening: dict[int, int] = {}  # id(rule) -> fd

    def listen(self, rule: Rule) -> None:
        fd = rule.sock.fileno()
        handler = self._accept if rule.proto == "tcp" else self._receive
        if rule.proto == "tcp" and self.splicer is not None:
            handler = self._splice
        self.watch(fd, EPOLLIN, functools.partial(handler, rule))
        self.listening[id(rule)] = fd

    def unlisten(self, rule: Rule) -> None:
        fd = self.listening.pop(id(rule), None)
        if fd is not None:
            self.unwatch(fd)

    def close(self) -> None:
        for fd in self.listening.values():
            self.unwatch(fd)
        self.listening.clear()

    # -- who the guest sees --------------------------------------------------------------
    def _guest(self, rule: Rule) -> bytes:
        """The guest address; "0.0.0.0" means the first DHCP address, as in libslirp."""
        address = ipaddress.ip_address(rule.guest_addr).packed
        return self.dhcp_start if address == bytes(4) else address

    # -- events --------------------------------------------------------------------------
    def _accept(self, rule: Rule, ev: int) -> str | None:
        guest = self._guest(rule)
        for _ in range(ACCEPTS_PER_WAKEUP):
            try:
                sock, peer = rule.sock.accept()
            except (BlockingIOError, InterruptedError):
                return None
            except OSError:
                return None  # e.g. EMFILE: the client waits in the backlog
            now = time.monotonic()
            remote = seen_by_guest(str(peer[0]), guest, self.gateway, self.gateway6)
            flow = self.stack.streams.open_to_guest(
                guest, rule.guest_port, remote, int(peer[1]), now
            )
            if flow is None:
                sock.close()
                continue
            self.streams.adopt(flow, sock)
        return None

    def _splice(self, rule: Rule, ev: int) -> str | None:
        assert self.splicer is not None
        self.splicer.accept(rule.sock, self._guest(rule), rule.guest_port)
        return None

    def _receive(self, rule: Rule, ev: int) -> str | None:
        guest = self._guest(rule)
        for _ in range(ACCEPTS_PER_WAKEUP):
            try:
                data, peer = rule.sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return None
            except OSError:
                continue  # an ICMP error from an earlier reply: not this datagram's business
            now = time.monotonic()
            remote = seen_by_guest(str(peer[0]), guest, self.gateway, self.gateway6)
            flow, _ = self.stack.datagrams.forward_flow(
                guest, rule.guest_port, remote, int(peer[1]), now
            )
            self.datagrams.adopt(flow, rule.sock, peer)
            self.stack.datagrams.udp_received(flow, data, now)
        return None
