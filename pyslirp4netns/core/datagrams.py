"""UDP and ICMP echo from the guest to anywhere but the gateway's own services: one *flow* per
(guest address, port or echo identifier, destination), carried by one host socket.

A flow's destination goes through ``nat.Policy`` once, before the shell opens any socket; a
denied one gets ICMP net unreachable from the gateway. Flows idle out after 240 s (10 s for
port 53, slirp4netns's 10 s after the last answer) and the tables are bounded, the least
recently used flow making room. Errors the host socket receives (``IP_RECVERR``) come back to
the guest as the matching ICMP error quoting its own datagram: better than slirp4netns, where
UDP to a closed port is silently lost. ICMP errors are never sent about multicast or broadcast
datagrams (RFC 1122 §3.2.2).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from pyslirp4netns.core import events
from pyslirp4netns.core.egress import ERROR_TTL, Egress
from pyslirp4netns.core.events import DatagramClose, DatagramOpen, DatagramSend
from pyslirp4netns.core.nat import Deny, Flow, FlowTable, Policy
from pyslirp4netns.core.neighbours import UNKNOWN_MAC
from pyslirp4netns.core.stats import flow_line
from pyslirp4netns.wire import ethernet, icmpv4, icmpv6, ipv4, ipv6, udp
from pyslirp4netns.wire.codec import Buffer
from pyslirp4netns.wire.numbers import (
    DNS_PORT,
    IPPROTO_ICMP,
    IPPROTO_ICMPV6,
    IPPROTO_UDP,
)

UDP_TIMEOUT = 240.0  # contract §3.8
DNS_TIMEOUT = 10.0  # flows to port 53: slirp4netns's 10 s after the last answer
PING_TIMEOUT = 240.0  # contract §3.5
FLOW_LIMIT = 4096  # per table; the least recently used flow makes room
FORWARD_TTL = 64  # what we put on datagrams relayed from host sockets

# sock_extended_err origins (linux/errqueue.h)
ORIGIN_ICMP = 2
ORIGIN_ICMP6 = 3


class Datagrams:
    """The UDP, DNS and ping flow tables and what crosses them both ways."""

    def __init__(
        self,
        egress: Egress,
        policy: Policy,
        requests: list[events.Request],
        dropped: Counter[str],
        ids: Iterator[int],
    ) -> None:
        self.egress = egress
        self.policy = policy
        self.requests = requests
        self.dropped = dropped
        self.udp_flows = FlowTable(UDP_TIMEOUT, FLOW_LIMIT)
        self.dns_flows = FlowTable(DNS_TIMEOUT, FLOW_LIMIT)
        self.ping_flows = FlowTable(PING_TIMEOUT, FLOW_LIMIT)
        self.flows: dict[int, tuple[Flow, FlowTable]] = {}
        self._ids = ids  # flow ids, shared with TCP streams: one id names one flow
        self.debug = False  # --debug: a log line per flow opened and closed

    # -- from the guest ------------------------------------------------------------------
    def udp(
        self,
        eth: ethernet.EthernetRepr,
        src: bytes,
        dst: bytes,
        datagram: udp.UdpRepr,
        buf: Buffer,
        original: Buffer,
        now: float,
        gso: int,
    ) -> None:
        port = datagram.dst_port
        key = (src, datagram.src_port, dst, port)
        table = self.dns_flows if port == DNS_PORT else self.udp_flows
        flow = table.get(key)
        if flow is None:
            decision = self.policy.resolve(IPPROTO_UDP, dst, port)
            if isinstance(decision, Deny):
                self.egress.refuse(eth.src, src, dst, original)
                return
            flow = self._new_flow(
                table, key, events.UDP, eth.src, src, datagram.src_port, dst, port, now
            )
            scope = self.policy.nameservers.v6_scope if decision.port == DNS_PORT else 0
            self.requests.append(
                DatagramOpen(
                    flow.id, events.UDP, decision.family, decision.addr, decision.port, scope
                )
            )
        else:
            table.touch(flow, now)
        start = datagram.payload_offset
        payload = bytes(buf[start : start + datagram.payload_length])
        flow.sent += len(payload)
        self.requests.append(DatagramSend(flow.id, payload, gso))

    def ping(
        self,
        eth: ethernet.EthernetRepr,
        src: bytes,
        dst: bytes,
        identifier: int,
        message: bytes,
        original: Buffer,
        now: float,
        proto: int,
    ) -> None:
        key = (src, dst, identifier)
        flow = self.ping_flows.get(key)
        if flow is None:
            decision = self.policy.resolve(proto, dst, 0)
            if isinstance(decision, Deny):
                self.egress.refuse(eth.src, src, dst, original)
                return
            flow = self._new_flow(
                self.ping_flows, key, events.PING, eth.src, src, identifier, dst, 0, now
            )
            self.requests.append(
                DatagramOpen(flow.id, events.PING, decision.family, decision.addr, 0)
            )
        else:
            self.ping_flows.touch(flow, now)
        flow.sent += len(message)
        self.requests.append(DatagramSend(flow.id, message))

    def _new_flow(
        self,
        table: FlowTable,
        key: tuple[object, ...],
        kind: int,
        mac: bytes,
        guest: bytes,
        guest_port: int,
        remote: bytes,
        remote_port: int,
        now: float,
    ) -> Flow:
        flow = Flow(next(self._ids), kind, mac, guest, guest_port, remote, remote_port, now)
        evicted = table.add(key, flow)
        if evicted is not None:
            del self.flows[evicted.id]
            self.requests.append(DatagramClose(evicted.id))
            self.dropped["flow: evicted (table full)"] += 1
            if self.debug:
                self._log(evicted, "closed (evicted: table full)")
        self.flows[flow.id] = (flow, table)
        if self.debug:
            self._log(flow, "open")
        return flow

    def _log(self, flow: Flow, event: str) -> None:
        """--debug: one line about ``flow``; byte counts with any event but "open"."""
        proto = "udp" if flow.kind == events.UDP else "ping"
        counts: tuple[int | None, int | None] = (None, None)
        if event != "open":
            counts = (flow.sent, flow.received)
        guest, remote = (flow.guest, flow.guest_port), (flow.remote, flow.remote_port)
        self.requests.append(events.Log(flow_line(proto, flow.id, event, guest, remote, *counts)))

    def forward_flow(
        self, guest: bytes, guest_port: int, remote: bytes, remote_port: int, now: float
    ) -> tuple[int, bool]:
        """The UDP flow for a host client of a forward (``(id, new)``): the guest's replies to
        ``remote``:``remote_port`` come back to it, whatever the address policy says."""
        key = (guest, guest_port, remote, remote_port)
        table = self.dns_flows if remote_port == DNS_PORT else self.udp_flows
        flow = table.get(key)
        if flow is not None:
            table.touch(flow, now)
            return flow.id, False
        mac = self.egress.neighbours.get(guest) or UNKNOWN_MAC
        flow = self._new_flow(
            table, key, events.UDP, mac, guest, guest_port, remote, remote_port, now
        )
        return flow.id, True

    # -- from the host -------------------------------------------------------------------
    def udp_received(self, flow_id: int, data: Buffer, now: float) -> None:
        """A datagram arrived on a UDP flow's host socket: relay it to the guest."""
        entry = self.flows.get(flow_id)
        if entry is None:
            return
        flow, table = entry
        table.touch(flow, now)
        flow.received += len(data)
        guest, remote = flow.guest, flow.remote
        egress = self.egress
        if len(guest) == 4:
            whole = udp.SIZE + len(data) + ipv4.SIZE <= egress.mtu
            header = udp.encode(
                remote,
                guest,
                flow.remote_port,
                flow.guest_port,
                data,
                partial=whole and egress.vnet_hdr,
            )
            egress.ipv4(flow.guest_mac, remote, guest, ipv4.PROTO_UDP, header, data, FORWARD_TTL)
        else:
            header = udp.encode(remote, guest, flow.remote_port, flow.guest_port, data)
            egress.ipv6(flow.guest_mac, remote, guest, IPPROTO_UDP, header + data, FORWARD_TTL)

    def ping_received(self, flow_id: int, message: Buffer, now: float, raw: bool) -> None:
        """An ICMP(v6) message on a ping flow's socket (``raw``: a raw socket, which sees every
        echo reply from that host, so the identifier must be ours)."""
        entry = self.flows.get(flow_id)
        if entry is None or len(message) < icmpv4.SIZE:
            return
        flow, table = entry
        v4 = len(flow.guest) == 4
        kind, code = message[0], message[1]
        if kind != (icmpv4.ECHO_REPLY if v4 else icmpv6.ECHO_REPLY) or code:
            return
        if raw and int.from_bytes(message[4:6], "big") != flow.guest_port:
            return
        table.touch(flow, now)
        flow.received += len(message)
        sequence = int.from_bytes(message[6:8], "big")
        data = bytes(message[icmpv4.SIZE :])
        if v4:
            reply = icmpv4.echo_reply(flow.guest_port, sequence, data)
            self.egress.ipv4(
                flow.guest_mac, flow.remote, flow.guest, ipv4.PROTO_ICMP, reply, b"", FORWARD_TTL
            )
        else:
            reply = icmpv6.echo_reply(flow.remote, flow.guest, flow.guest_port, sequence, data)
            self.egress.ipv6(
                flow.guest_mac, flow.remote, flow.guest, IPPROTO_ICMPV6, reply, FORWARD_TTL
            )

    def host_error(
        self, flow_id: int, origin: int, type_: int, code: int, payload: Buffer, now: float
    ) -> None:
        """An ICMP error the host socket received (``IP_RECVERR``) about what we sent on a flow:
        the guest gets the matching error, quoting the datagram as it had sent it."""
        entry = self.flows.get(flow_id)
        if entry is None:
            return
        flow = entry[0]
        mapped = guest_error(len(flow.guest) == 4, origin, type_, code)
        if mapped is not None:
            self._send_error(flow, mapped[0], mapped[1], payload)

    def host_failed(self, flow_id: int, host_unreachable: bool, payload: Buffer) -> None:
        """The shell couldn't open or send on a flow's socket (routing, permissions): ICMP net
        (or host) unreachable from the gateway, as slirp4netns answers; the flow is forgotten."""
        entry = self.flows.pop(flow_id, None)
        if entry is None:
            return
        flow, table = entry
        table.remove(flow)
        self.requests.append(DatagramClose(flow.id))
        if self.debug:
            self._log(flow, "closed (host unreachable)" if host_unreachable else "closed (failed)")
        if len(flow.guest) == 4:
            code = icmpv4.HOST_UNREACHABLE if host_unreachable else icmpv4.NET_UNREACHABLE
            self._send_error(flow, icmpv4.DEST_UNREACHABLE, code, payload, from_gateway=True)
        else:
            code = icmpv6.ADDRESS_UNREACHABLE if host_unreachable else icmpv6.NO_ROUTE
            self._send_error(flow, icmpv6.DEST_UNREACHABLE, code, payload, from_gateway=True)

    def _send_error(
        self, flow: Flow, type_: int, code: int, payload: Buffer, from_gateway: bool = False
    ) -> None:
        """An ICMP error about the flow's guest datagram carrying ``payload`` (as sent by us)."""
        guest, remote = flow.guest, flow.remote
        if self.egress.to_group(remote):
            return
        v4 = len(guest) == 4
        if flow.kind == events.UDP:
            transport = udp.encode(guest, remote, flow.guest_port, flow.remote_port, payload)
            proto = IPPROTO_UDP
            body = bytes(payload)
        else:
            # Our echo request as the guest sent it: its own identifier, not the ping socket's.
            sequence = bytes(payload[6:8]).rjust(2, b"\x00")
            request = icmpv4.ECHO_REQUEST if v4 else icmpv6.ECHO_REQUEST
            transport = bytes((request, 0, 0, 0)) + flow.guest_port.to_bytes(2, "big") + sequence
            proto = IPPROTO_ICMP if v4 else IPPROTO_ICMPV6
            body = bytes(payload[8:])
        length = len(transport) + len(body)
        port_unreachable = (type_, code) in (
            (icmpv4.DEST_UNREACHABLE, icmpv4.PORT_UNREACHABLE),
            (icmpv6.DEST_UNREACHABLE, icmpv6.PORT_UNREACHABLE),
        )
        from_remote = port_unreachable and not from_gateway
        if v4:
            source = remote if from_remote else self.egress.gateway
            original = ipv4.encode(guest, remote, proto, length) + transport[:8]
            message = icmpv4.encode(type_, code, 0, original)
            self.egress.ipv4(
                flow.guest_mac, source, guest, ipv4.PROTO_ICMP, message, b"", ERROR_TTL
            )
        else:
            source = remote if from_remote else self.egress.gateway6
            original = ipv6.encode(guest, remote, proto, length) + transport + body
            room = icmpv6.MIN_MTU - ipv6.SIZE - icmpv6.SIZE
            message = icmpv6.encode(source, guest, type_, code, 0, original[:room])
            self.egress.ipv6(flow.guest_mac, source, guest, IPPROTO_ICMPV6, message, ERROR_TTL)

    # -- timers --------------------------------------------------------------------------
    def next_deadline(self) -> float | None:
        best = None
        for table in (self.udp_flows, self.dns_flows, self.ping_flows):
            deadline = table.next_deadline()
            if deadline is not None and (best is None or deadline < best):
                best = deadline
        return best

    def on_timer(self, now: float) -> None:
        for table in (self.udp_flows, self.dns_flows, self.ping_flows):
            for flow in table.expire(now):
                del self.flows[flow.id]
                self.requests.append(DatagramClose(flow.id))
                if self.debug:
                    self._log(flow, "closed (idle)")


def guest_error(v4: bool, origin: int, type_: int, code: int) -> tuple[int, int] | None:
    """The ICMP (type, code) for the guest's family from a host socket's extended error."""
    if origin == ORIGIN_ICMP:
        if type_ == icmpv4.DEST_UNREACHABLE and code != icmpv4.FRAGMENTATION_NEEDED:
            if v4:
                return type_, code
            port = code == icmpv4.PORT_UNREACHABLE
            return icmpv6.DEST_UNREACHABLE, icmpv6.PORT_UNREACHABLE if port else icmpv6.NO_ROUTE
        if type_ == icmpv4.TIME_EXCEEDED:
            return (type_, code) if v4 else (icmpv6.TIME_EXCEEDED, code)
        return None
    if origin == ORIGIN_ICMP6:
        if type_ == icmpv6.DEST_UNREACHABLE:
            if not v4:
                return type_, code
            port = code == icmpv6.PORT_UNREACHABLE
            return (
                icmpv4.DEST_UNREACHABLE,
                icmpv4.PORT_UNREACHABLE if port else icmpv4.HOST_UNREACHABLE,
            )
        if type_ == icmpv6.TIME_EXCEEDED:
            return (type_, code) if not v4 else (icmpv4.TIME_EXCEEDED, code)
    return None
