"""The guest-facing stack, sans-IO: frames in, frames and requests out.

Theory of operation
-------------------
The shell (``daemon``) hands every Ethernet frame it reads from the tap to
``Stack.receive_frame(frame, now)`` and afterwards takes ``Stack.out`` (frames for the guest,
written to the tap in order) and ``Stack.requests`` (work for the shell: host sockets; none yet).
The stack never opens an fd, reads a clock or draws a random number: ``now`` is an argument,
and ``next_deadline()``/``on_timer(now)`` are how its timers run.

``frame`` may be a view of the shell's reusable read buffer: nothing here keeps it after the call.
A malformed frame raises ``WireError`` inside, is counted by reason in ``dropped`` and changes
nothing else: one bad frame can't stop the stack.

What answers today (contract §3.2): ARP for the gateway N+2 and the DNS alias N+3 only, with MAC
``52:55:`` + the IPv4 address; ICMP echo to those two addresses, answered by us with TTL 255
(also with ``--disable-host-loopback``/``--disable-dns``, as slirp4netns); DHCP on port 67 of the
gateway or the broadcast address (``dhcp.DhcpServer``). The guest's MAC is
learned from its ARP and IPv4 traffic. Everything else is counted and dropped until the UDP, DNS,
and TCP parts land.
"""

from __future__ import annotations

from collections import Counter

from pyslirp4netns.config import Config
from pyslirp4netns.dhcp import DhcpServer
from pyslirp4netns.wire import arp, dhcp, ethernet, icmpv4, ipv4, udp
from pyslirp4netns.wire.codec import Buffer, WireError

ALIAS_MAC_PREFIX = b"\x52\x55"  # libslirp's MAC for an alias: 52:55 + its IPv4 address
REPLY_TTL = 255  # libslirp answers ICMP itself with TTL 255
BROADCAST4 = b"\xff\xff\xff\xff"


def alias_mac(address: bytes) -> bytes:
    return ALIAS_MAC_PREFIX + address


class Stack:
    """One virtual network: the gateway and DNS aliases as the guest sees them."""

    def __init__(self, config: Config) -> None:
        self.cidr = config.cidr
        self.gateway = config.gateway.packed
        self.dns = config.dns.packed
        self.aliases = {self.gateway: alias_mac(self.gateway), self.dns: alias_mac(self.dns)}
        self.neighbours: dict[bytes, bytes] = {}  # guest IPv4 -> MAC, learned
        self.out: list[bytes] = []
        self.requests: list[object] = []
        self.dropped: Counter[str] = Counter()
        self.dhcp = DhcpServer(config)
        self._ip_id = 0

    # -- input ---------------------------------------------------------------------------
    def receive_frame(self, frame: Buffer, now: float) -> None:
        try:
            self._receive(frame, now)
        except WireError as e:
            self.dropped[str(e)] += 1

    def _receive(self, frame: Buffer, now: float) -> None:
        eth = ethernet.decode(frame)
        if eth.vlan is not None:
            self.dropped["ethernet: vlan tagged"] += 1
        elif eth.ethertype == ethernet.ETHERTYPE_ARP:
            self._arp(eth, frame)
        elif eth.ethertype == ethernet.ETHERTYPE_IPV4:
            self._ipv4(eth, frame)
        else:
            self.dropped["ethernet: ethertype not served"] += 1

    def _learn(self, ip: bytes, mac: bytes) -> None:
        """Remember a guest address: only unicast sources inside the CIDR, never our aliases."""
        if ip in self.aliases or mac[0] & 1 or len(self.neighbours) > 4096:
            return
        if int.from_bytes(ip, "big") & int(self.cidr.netmask) == int(self.cidr.network_address):
            self.neighbours[ip] = mac

    def _arp(self, eth: ethernet.EthernetRepr, frame: Buffer) -> None:
        packet = arp.decode(frame, eth.payload_offset)
        self._learn(packet.spa, packet.sha)
        if packet.oper != arp.REQUEST:
            return
        mac = self.aliases.get(packet.tpa)
        if mac is None:
            return  # slirp4netns answers for its aliases only (contract §3.2)
        answer = arp.reply(mac, packet.tpa, packet.sha, packet.spa)
        self.out.append(ethernet.encode(packet.sha, mac, ethernet.ETHERTYPE_ARP) + answer)

    def _ipv4(self, eth: ethernet.EthernetRepr, frame: Buffer) -> None:
        ip = ipv4.decode(frame, eth.payload_offset)
        self._learn(ip.src, eth.src)
        if ip.more_fragments or ip.fragment_offset:
            self.dropped["ipv4: fragment"] += 1
            return
        if ip.protocol == ipv4.PROTO_ICMP and ip.dst in self.aliases:
            self._icmp_to_alias(eth, ip, frame)
            return
        if ip.protocol == ipv4.PROTO_UDP and ip.dst in (self.gateway, BROADCAST4):
            datagram = udp.decode(frame, ip.payload_offset, ip.payload_length)
            if datagram.dst_port == dhcp.SERVER_PORT:
                self._dhcp(eth, frame, datagram)
                return
        self.dropped["ipv4: not served yet"] += 1

    def _icmp_to_alias(self, eth: ethernet.EthernetRepr, ip: ipv4.Ipv4Repr, frame: Buffer) -> None:
        message = icmpv4.decode(frame, ip.payload_offset, ip.payload_length)
        if message.type != icmpv4.ECHO_REQUEST or message.code != 0:
            self.dropped["icmpv4: not an echo request"] += 1
            return
        start = message.payload_offset
        data = bytes(frame[start : start + message.payload_length])
        reply = icmpv4.echo_reply(message.identifier, message.sequence, data)
        self._send_ipv4(eth.src, ip.dst, ip.src, ipv4.PROTO_ICMP, reply, REPLY_TTL)

    def _dhcp(self, eth: ethernet.EthernetRepr, frame: Buffer, datagram: udp.UdpRepr) -> None:
        message = dhcp.decode(frame, datagram.payload_offset, datagram.payload_length)
        answer = self.dhcp.handle(message)
        if answer is None:
            return
        # Sent to the broadcast address: the client has no address yet (RFC 2131 §4.1).
        header = udp.encode(self.gateway, BROADCAST4, dhcp.SERVER_PORT, dhcp.CLIENT_PORT, answer)
        self._send_ipv4(eth.src, self.gateway, BROADCAST4, ipv4.PROTO_UDP, header + answer, 64)

    # -- output --------------------------------------------------------------------------
    def _send_ipv4(
        self, dst_mac: bytes, src: bytes, dst: bytes, protocol: int, payload: bytes, ttl: int
    ) -> None:
        self._ip_id = (self._ip_id + 1) & 0xFFFF
        header = ipv4.encode(src, dst, protocol, len(payload), ttl=ttl, identification=self._ip_id)
        src_mac = self.aliases.get(src, alias_mac(self.gateway))
        self.out.append(
            ethernet.encode(dst_mac, src_mac, ethernet.ETHERTYPE_IPV4) + header + payload
        )

    # -- timers --------------------------------------------------------------------------
    def next_deadline(self) -> float | None:
        return None

    def on_timer(self, now: float) -> None:
        """Nothing is timed yet; UDP flows and TCP bring deadlines."""
