"""Every frame toward the guest: Ethernet framing from our aliases' MACs, IPv4 and IPv6 headers,
fragmentation beyond the MTU, TCP segments (one GSO burst each when the tap offloads), and the
ICMP unreachable errors the gateway sends.

Frames wait in ``frames`` (each a list of buffers for one ``writev``, the virtio-net header
first when the tap has one) until the shell takes them. A frame for a guest address we have not
heard from yet waits in ``Neighbours`` while we ask for it.
"""

from __future__ import annotations

from collections import Counter

from pyslirp4netns.config import Config
from pyslirp4netns.core import ndp
from pyslirp4netns.core.fragments import fragment_ipv4, fragment_ipv6
from pyslirp4netns.core.neighbours import UNKNOWN_MAC, Held, Neighbours
from pyslirp4netns.core.tcb import Segment
from pyslirp4netns.wire import arp, ethernet, icmpv4, icmpv6, ipv4, ipv6, tcp, tcpframe, vnet
from pyslirp4netns.wire.codec import Buffer
from pyslirp4netns.wire.numbers import (
    BROADCAST4,
    IPPROTO_ICMPV6,
    IPPROTO_TCP,
    LINK_GATEWAY6,
)

ALIAS_MAC_PREFIX = b"\x52\x55"  # libslirp's MAC for an alias: 52:55 + its IPv4 address
ERROR_TTL = 64  # on ICMP errors and datagrams we originate
UDP_CSUM_OFFSET = 6  # of the checksum within the UDP header, for virtio NEEDS_CSUM


def alias_mac(address: bytes) -> bytes:
    return ALIAS_MAC_PREFIX + address


def multicast_or_broadcast(address: bytes) -> bool:
    if len(address) == 4:
        return address == BROADCAST4 or 224 <= address[0] <= 239
    return address[0] == 0xFF


class Egress:
    """Builds and queues frames for the guest; knows the MTU and whether the tap offloads."""

    def __init__(self, config: Config, vnet_hdr: bool, dropped: Counter[str]) -> None:
        self.mtu = config.mtu
        self.vnet_hdr = vnet_hdr
        self.gateway = config.gateway.packed
        self.gateway6 = config.gateway6.packed  # fd00::2: the source of our ICMPv6 errors
        self.dns6 = config.dns6.packed
        self.aliases6 = ndp.aliases6(self.gateway6, self.dns6)
        self.prefix6 = config.ipv6_prefix.network_address.packed
        dns = config.dns.packed
        self.aliases = {self.gateway: alias_mac(self.gateway), dns: alias_mac(dns)}
        self.subnet_broadcast = config.cidr.broadcast_address.packed
        self.neighbours = Neighbours(config.cidr, set(self.aliases), dropped, self.aliases6)
        self._dropped = dropped
        self.frames: list[list[Buffer]] = []
        self.now = 0.0  # the latest time the stack was given (for ARP retries)
        self._ip_id = 0

    def take(self) -> list[list[Buffer]]:
        frames, self.frames = self.frames, []
        return frames

    # -- neighbours ----------------------------------------------------------------------
    def learn(self, ip: bytes, mac: bytes) -> None:
        """A guest IPv4 source seen; frames that waited for it go out. Every guest frame comes
        here, so a known address costs one lookup."""
        if self.neighbours.v4.get(ip) != mac:
            for parts, header in self.neighbours.learn(ip, mac):
                self.emit([mac + bytes(parts[0][6:]), *parts[1:]], header)

    def learn6(self, ip: bytes, mac: bytes) -> None:
        if self.neighbours.v6.get(ip) != mac:
            for parts, header in self.neighbours.learn6(ip, mac):
                self.emit([mac + bytes(parts[0][6:]), *parts[1:]], header)

    def emit(self, parts: list[Buffer], header: bytes = vnet.PLAIN) -> None:
        if parts[0][:6] == UNKNOWN_MAC:
            self._resolve((parts, header))
            return
        if self.vnet_hdr:
            parts.insert(0, header)
        self.frames.append(parts)

    def _resolve(self, frame: Held) -> None:
        """A frame built for a guest whose MAC we don't know yet: sent at once if we have
        learned it since, else held while we ask."""
        parts, header = frame
        head = parts[0]
        v4 = head[12:14] == b"\x08\x00"
        ip = bytes(head[30:34]) if v4 else bytes(head[38:54])
        mac = self.neighbours.get(ip)
        if mac is not None:
            self.emit([mac + bytes(head[6:]), *parts[1:]], header)
        elif self.neighbours.hold(ip, frame, self.now):
            self._solicit(ip)

    def _solicit(self, ip: bytes) -> None:
        """ARP request (IPv4) or neighbour solicitation (IPv6, RFC 4861 §7.2.2) for ``ip``."""
        if len(ip) == 4:
            gateway_mac = self.aliases[self.gateway]
            request = arp.request(gateway_mac, self.gateway, ip)
            frame = ethernet.encode(ethernet.BROADCAST, gateway_mac, ethernet.ETHERTYPE_ARP)
            self.emit([frame + request])
            return
        group = ndp.solicited_node(ip)
        message = ndp.neighbor_solicitation(LINK_GATEWAY6, group, ip)
        mac = b"\x33\x33" + group[12:]  # RFC 2464 §7
        self.ipv6(mac, LINK_GATEWAY6, group, IPPROTO_ICMPV6, message, ndp.NDP_HOP_LIMIT)

    # -- IP ------------------------------------------------------------------------------
    def ipv4(
        self,
        dst_mac: bytes,
        src: bytes,
        dst: bytes,
        protocol: int,
        transport: bytes,
        payload: Buffer,
        ttl: int,
    ) -> None:
        """``transport`` (an L4 header, or a whole message) + ``payload`` in IPv4 to the guest,
        fragmented when it doesn't fit the MTU (RFC 791). A UDP datagram that fits was encoded
        with a partial checksum when the tap offloads: the vnet header asks it to finish."""
        self._ip_id = ident = (self._ip_id + 1) & 0xFFFF
        src_mac = self.aliases.get(src, self.aliases[self.gateway])
        eth = ethernet.encode(dst_mac, src_mac, ethernet.ETHERTYPE_IPV4)
        length = len(transport) + len(payload)
        if ipv4.SIZE + length <= self.mtu:
            header = ipv4.encode(src, dst, protocol, length, ttl=ttl, identification=ident)
            parts: list[Buffer] = [eth + header + transport]
            if payload:
                parts.append(payload)
            if protocol == ipv4.PROTO_UDP and self.vnet_hdr:
                start = ethernet.SIZE + ipv4.SIZE
                self.emit(parts, vnet.encode(vnet.NEEDS_CSUM, 0, 0, 0, start, UDP_CSUM_OFFSET))
            else:
                self.emit(parts)
            return
        for offset, more, chunk in fragment_ipv4(transport + bytes(payload), self.mtu):
            header = ipv4.encode(
                src,
                dst,
                protocol,
                len(chunk),
                ttl=ttl,
                identification=ident,
                more_fragments=more,
                fragment_offset=offset,
            )
            self.emit([eth + header, chunk])

    def ipv6(
        self, dst_mac: bytes, src: bytes, dst: bytes, next_header: int, message: bytes, hops: int
    ) -> None:
        """An IPv6 packet to the guest; bigger than the MTU, it goes in fragments (RFC 8200 §4.5)"""
        src_mac = ndp.alias_mac6(src if src in self.aliases6 else self.gateway6)
        eth = ethernet.encode(dst_mac, src_mac, ethernet.ETHERTYPE_IPV6)
        if ipv6.SIZE + len(message) <= self.mtu:
            header = ipv6.encode(src, dst, next_header, len(message), hop_limit=hops)
            self.emit([eth + header + message])
            return
        self._ip_id = ident = (self._ip_id + 1) & 0xFFFF
        for offset, more, chunk in fragment_ipv6(message, self.mtu):
            fragment = ipv6.FRAGMENT.struct.pack(next_header, 0, offset | more, ident)
            header = ipv6.encode(
                src, dst, ipv6.NEXT_FRAGMENT, ipv6.FRAGMENT.size + len(chunk), hop_limit=hops
            )
            self.emit([eth + header + fragment, chunk])

    def to_group(self, address: bytes) -> bool:
        """Multicast or broadcast: never the subject of an ICMP error (RFC 1122 §3.2.2)."""
        return multicast_or_broadcast(address) or address == self.subnet_broadcast

    def refuse(self, mac: bytes, src: bytes, dst: bytes, original: Buffer) -> None:
        """A destination the policy denies: ICMP net unreachable from the gateway (contract
        §3.4), unless it was a multicast or broadcast."""
        if self.to_group(dst):
            self._dropped["policy: denied (no ICMP for multicast or broadcast)"] += 1
            return
        self._dropped["policy: denied"] += 1
        self.unreachable(mac, src, original, host=False)

    def unreachable(self, mac: bytes, guest: bytes, original: Buffer, host: bool) -> None:
        """ICMP net (or, with ``host``, host/address) unreachable from the gateway to
        ``guest`` about its packet ``original``, as slirp4netns answers a failed connect."""
        if len(guest) == 4:
            code = icmpv4.HOST_UNREACHABLE if host else icmpv4.NET_UNREACHABLE
            message = icmpv4.dest_unreachable(code, original)
            self.ipv4(mac, self.gateway, guest, ipv4.PROTO_ICMP, message, b"", ERROR_TTL)
        else:
            code = icmpv6.ADDRESS_UNREACHABLE if host else icmpv6.NO_ROUTE
            message = icmpv6.dest_unreachable(self.gateway6, guest, code, original)
            self.ipv6(mac, self.gateway6, guest, IPPROTO_ICMPV6, message, ERROR_TTL)

    # -- TCP -----------------------------------------------------------------------------
    def template(
        self, mac: bytes, src: bytes, dst: bytes, src_port: int, dst_port: int
    ) -> tcpframe.Template | None:
        """A connection's header template toward the guest, for ``tcp4``; None where only the
        general path applies (IPv6, plain frames that need a full checksum, unknown MAC)."""
        if not self.vnet_hdr or len(src) != 4 or mac == UNKNOWN_MAC:
            return None
        src_mac = self.aliases.get(src, self.aliases[self.gateway])
        return tcpframe.Template(mac, src_mac, src, dst, src_port, dst_port)

    def tcp4(self, template: tcpframe.Template, segment: Segment, gso_size: int) -> None:
        """``tcp`` for a segment without options over a template: one pack, same bytes."""
        seq, ack, flags, window, _, payload = segment
        n = len(payload)
        self._ip_id = ident = (self._ip_id + 1) & 0xFFFF
        head = template.frame(ident, seq, ack, flags, window, n)
        if gso_size and n > gso_size:
            info = vnet.encode(
                vnet.NEEDS_CSUM,
                vnet.GSO_TCPV4,
                tcpframe.SIZE,
                gso_size,
                tcpframe.TCP_OFFSET,
                tcp.CHECKSUM_OFFSET,
            )
        else:
            info = tcpframe.CSUM_ONLY
        self.frames.append([info, head, payload] if n else [info, head])

    def tcp(
        self,
        mac: bytes,
        src: bytes,
        dst: bytes,
        src_port: int,
        dst_port: int,
        segment: Segment,
        gso_size: int,
    ) -> None:
        """One segment (or GSO burst of ``gso_size`` pieces) to the guest. With the vnet header
        only the pseudo-header sum is computed: the tap finishes the checksum (NEEDS_CSUM) and
        cuts the burst (GSO); without it the segment fits the MTU and is checksummed here."""
        seq, ack, flags, window, options, payload = segment
        header = tcp.encode(
            src,
            dst,
            src_port,
            dst_port,
            seq,
            ack,
            flags,
            window,
            payload,
            options=options,
            partial=self.vnet_hdr,
        )
        length = len(header) + len(payload)
        if len(src) == 4:
            self._ip_id = (self._ip_id + 1) & 0xFFFF
            ip = ipv4.encode(
                src, dst, ipv4.PROTO_TCP, length, identification=self._ip_id, dont_fragment=True
            )
            src_mac = self.aliases.get(src, self.aliases[self.gateway])
            head = ethernet.encode(mac, src_mac, ethernet.ETHERTYPE_IPV4) + ip + header
            gso_type = vnet.GSO_TCPV4
        else:
            ip = ipv6.encode(src, dst, IPPROTO_TCP, length)
            src_mac = ndp.alias_mac6(src if src in self.aliases6 else self.gateway6)
            head = ethernet.encode(mac, src_mac, ethernet.ETHERTYPE_IPV6) + ip + header
            gso_type = vnet.GSO_TCPV6
        parts: list[Buffer] = [head, payload] if payload else [head]
        if not self.vnet_hdr:
            self.emit(parts)
            return
        csum_start = ethernet.SIZE + len(ip)
        if gso_size and len(payload) > gso_size:
            info = vnet.encode(
                vnet.NEEDS_CSUM, gso_type, len(head), gso_size, csum_start, tcp.CHECKSUM_OFFSET
            )
        else:
            info = vnet.encode(vnet.NEEDS_CSUM, 0, len(head), 0, csum_start, tcp.CHECKSUM_OFFSET)
        self.emit(parts, info)
