"""What the gateway answers itself (contract §3): ARP for its aliases, ICMP echo to them, DHCP,
TFTP refusals, and with ``--enable-ipv6`` neighbour and router discovery.

* ARP for the gateway N+2 and DNS alias N+3 only (MAC ``52:55:`` + the IPv4 address).
* NDP for fd00::2, fd00::3, fe80::2, fe80::3 (MAC ``52:56:`` + low 32 bits) and a Router
  Advertisement on every Router Solicitation and every 200-600 s.
* ICMP echo to those aliases, answered with TTL/hop limit 255 whatever the disable flags.
* DHCP on port 67 of the gateway or broadcast (``dhcp.DhcpServer``); TFTP refused with
  "Access violation", as slirp4netns, which runs no TFTP server.
* Stateless DHCPv6 on port 547 of ff02::1:2 or the gateway (``dhcpv6.Dhcpv6Server``), answered
  from fe80::2.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from pyslirp4netns.config import Config
from pyslirp4netns.core import ndp
from pyslirp4netns.core.dhcp import DhcpServer
from pyslirp4netns.core.dhcpv6 import Dhcpv6Server
from pyslirp4netns.core.egress import ERROR_TTL, Egress
from pyslirp4netns.core.nat import Policy
from pyslirp4netns.wire import arp, dhcp, dhcpv6, ethernet, icmpv4, icmpv6, ipv4, ipv6, udp
from pyslirp4netns.wire.codec import Buffer
from pyslirp4netns.wire.numbers import (
    ALL_NODES6,
    ALL_NODES_MAC,
    BROADCAST4,
    IPPROTO_ICMPV6,
    IPPROTO_UDP,
    LINK_GATEWAY6,
    UNSPECIFIED6,
)

REPLY_TTL = 255  # libslirp answers ICMP itself with TTL 255
TFTP_PORT = 69
TFTP_RRQ, TFTP_WRQ, TFTP_ERROR = 1, 2, 5
TFTP_ACCESS_VIOLATION = 2


class Gateway:
    """The gateway's own services; every answer goes out through ``egress``."""

    def __init__(
        self,
        config: Config,
        egress: Egress,
        policy: Policy,
        dropped: Counter[str],
        warn: Callable[[str], None],
        rng: Callable[[], float],
        now: float,
    ) -> None:
        self.egress = egress
        self.gateway = egress.gateway
        self.dhcp = DhcpServer(config)
        self.gateway6 = egress.gateway6
        self.dhcpv6 = Dhcpv6Server(egress.dns6, ndp.alias_mac6(egress.gateway6))
        self.policy = policy  # its nameservers: the RDNSS option of our RAs
        self._dropped = dropped
        self._warn = warn
        self._rng = rng
        self.next_ra: float | None = now + self._ra_interval() if config.enable_ipv6 else None

    # -- IPv4 ----------------------------------------------------------------------------
    def arp(self, eth: ethernet.EthernetRepr, frame: Buffer) -> None:
        packet = arp.decode(frame, eth.payload_offset)
        self.egress.learn(packet.spa, packet.sha)
        if packet.oper != arp.REQUEST:
            return
        mac = self.egress.aliases.get(packet.tpa)
        if mac is None:
            return  # slirp4netns answers for its aliases only (contract §3.2)
        answer = arp.reply(mac, packet.tpa, packet.sha, packet.spa)
        self.egress.emit([ethernet.encode(packet.sha, mac, ethernet.ETHERTYPE_ARP) + answer])

    def echo4(
        self, eth: ethernet.EthernetRepr, ip: ipv4.Ipv4Repr, buf: Buffer, message: icmpv4.Icmpv4Repr
    ) -> None:
        start = message.payload_offset
        data = bytes(buf[start : start + message.payload_length])
        reply = icmpv4.echo_reply(message.identifier, message.sequence, data)
        self.egress.ipv4(eth.src, ip.dst, ip.src, ipv4.PROTO_ICMP, reply, b"", REPLY_TTL)

    def serves_udp(self, dst: bytes, port: int) -> bool:
        """Whether a guest datagram to ``dst``:``port`` is ours to answer (DHCP, TFTP)."""
        if port == dhcp.SERVER_PORT:
            return dst == self.gateway or dst == BROADCAST4
        return port == TFTP_PORT and dst == self.gateway

    def datagram(
        self, eth: ethernet.EthernetRepr, ip: ipv4.Ipv4Repr, buf: Buffer, datagram: udp.UdpRepr
    ) -> None:
        if datagram.dst_port == dhcp.SERVER_PORT:
            self._dhcp(eth, buf, datagram)
        else:
            self._tftp(eth, ip, buf, datagram)

    def _dhcp(self, eth: ethernet.EthernetRepr, frame: Buffer, datagram: udp.UdpRepr) -> None:
        message = dhcp.decode(frame, datagram.payload_offset, datagram.payload_length)
        answer = self.dhcp.handle(message)
        if answer is None:
            return
        # Sent to the broadcast address: the client has no address yet (RFC 2131 §4.1).
        header = udp.encode(self.gateway, BROADCAST4, dhcp.SERVER_PORT, dhcp.CLIENT_PORT, answer)
        self.egress.ipv4(
            eth.src, self.gateway, BROADCAST4, ipv4.PROTO_UDP, header, answer, ERROR_TTL
        )

    def _tftp(
        self, eth: ethernet.EthernetRepr, ip: ipv4.Ipv4Repr, buf: Buffer, datagram: udp.UdpRepr
    ) -> None:
        start = datagram.payload_offset
        opcode = (
            int.from_bytes(buf[start : start + 2], "big") if datagram.payload_length >= 2 else 0
        )
        if opcode not in (TFTP_RRQ, TFTP_WRQ):
            self._dropped["tftp: not a request"] += 1
            return
        # RFC 1350 §5: opcode 5, error code, message, NUL.
        error = TFTP_ERROR.to_bytes(2, "big") + TFTP_ACCESS_VIOLATION.to_bytes(2, "big")
        error += b"Access violation\x00"
        header = udp.encode(ip.dst, ip.src, TFTP_PORT, datagram.src_port, error)
        self.egress.ipv4(eth.src, ip.dst, ip.src, ipv4.PROTO_UDP, header, error, ERROR_TTL)

    # -- IPv6 ----------------------------------------------------------------------------
    def serves_udp6(self, dst: bytes, port: int) -> bool:
        """Whether a guest datagram to ``dst``:``port`` is DHCPv6 for us (RFC 8415 §7.1: the
        All_DHCP_Relay_Agents_and_Servers group; libslirp also takes the gateway address)."""
        return port == dhcpv6.SERVER_PORT and dst in (
            dhcpv6.ALL_SERVERS,
            self.gateway6,
            LINK_GATEWAY6,
        )

    def datagram6(
        self, eth: ethernet.EthernetRepr, ip: ipv6.Ipv6Repr, buf: Buffer, datagram: udp.UdpRepr
    ) -> None:
        """Stateless DHCPv6: a Reply from fe80::2 to the client's address and port."""
        message = dhcpv6.decode(buf, datagram.payload_offset, datagram.payload_length)
        answer = self.dhcpv6.handle(message)
        if isinstance(answer, str):
            self._dropped[answer] += 1
            return
        header = udp.encode(LINK_GATEWAY6, ip.src, dhcpv6.SERVER_PORT, datagram.src_port, answer)
        self.egress.ipv6(eth.src, LINK_GATEWAY6, ip.src, IPPROTO_UDP, header + answer, ERROR_TTL)

    def icmp6(
        self,
        eth: ethernet.EthernetRepr,
        ip: ipv6.Ipv6Repr,
        frame: Buffer,
        message: icmpv6.Icmpv6Repr,
    ) -> None:
        """Neighbour and router discovery, and echo requests to our IPv6 aliases."""
        kind = message.type
        start = message.payload_offset
        if kind == icmpv6.ECHO_REQUEST:
            data = bytes(frame[start : start + message.payload_length])
            reply = icmpv6.echo_reply(ip.dst, ip.src, message.identifier, message.sequence, data)
            self.egress.ipv6(eth.src, ip.dst, ip.src, IPPROTO_ICMPV6, reply, REPLY_TTL)
        elif kind == icmpv6.NEIGHBOR_SOLICITATION:
            if ip.hop_limit != ndp.NDP_HOP_LIMIT or message.code:
                self._dropped["ndp: bad hop limit or code"] += 1  # RFC 4861 §7.1.1
                return
            target = bytes(frame[start : start + 16]) if message.payload_length >= 16 else b""
            if target in self.egress.aliases6:
                dst = ip.src if ip.src != UNSPECIFIED6 else ALL_NODES6
                answer = ndp.neighbor_advertisement(target, dst)
                self.egress.ipv6(eth.src, target, dst, IPPROTO_ICMPV6, answer, ndp.NDP_HOP_LIMIT)
        elif kind == icmpv6.ROUTER_SOLICITATION:
            if ip.hop_limit != ndp.NDP_HOP_LIMIT or message.code:
                self._dropped["ndp: bad hop limit or code"] += 1  # RFC 4861 §6.1.1
                return
            self.send_ra()
        elif kind in (icmpv6.ROUTER_ADVERTISEMENT, ndp.REDIRECT):
            name = "RA" if kind == icmpv6.ROUTER_ADVERTISEMENT else "REDIRECT"
            self._warn(f"libslirp: Warning: guest sent NDP {name}, but shouldn't")
        elif kind == icmpv6.NEIGHBOR_ADVERTISEMENT:
            pass  # the guest's own addresses: we reply to frame sources, nothing to learn here
        else:
            self._dropped["icmpv6: type not served"] += 1

    def send_ra(self) -> None:
        egress = self.egress
        answer = ndp.router_advertisement(self.policy.nameservers.v6, egress.prefix6, egress.dns6)
        self.egress.ipv6(
            ALL_NODES_MAC, LINK_GATEWAY6, ALL_NODES6, IPPROTO_ICMPV6, answer, ndp.NDP_HOP_LIMIT
        )

    def on_timer(self, now: float) -> None:
        """The unsolicited Router Advertisement (RFC 4861 §6.2.4), at a random interval."""
        if self.next_ra is not None and now >= self.next_ra:
            self.send_ra()
            self.next_ra = now + self._ra_interval()

    def _ra_interval(self) -> float:
        low, high = ndp.RA_INTERVAL
        return low + (high - low) * self._rng()
