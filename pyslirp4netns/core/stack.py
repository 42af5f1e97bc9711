"""The guest-facing stack, sans-IO: frames in, frames and requests out.

Theory of operation
-------------------
The shell hands every Ethernet frame it reads from the tap to
``Stack.receive_frame(frame, now, csum_done, gso_size)``; after each batch it calls
``flush(now)`` and takes ``take_frames()`` (frames for the guest, each a list of buffers for one
``writev``, the virtio-net header first when the tap has one) and ``take_requests()``
(``events``: host sockets to open, bytes to write, sockets to close, lines to log). What the
host side brings back comes in as facts on the part that owns the flow: ``streams`` (TCP) and
``datagrams`` (UDP and ping). The stack never opens an fd, reads a clock or draws a random
number: ``now`` is an argument, randomness is a callable handed in, and
``next_deadline()``/``on_timer(now)`` are how its timers run.

This module is the demux. Each part owns one job:

* ``neighbours`` and ``egress``: guest MACs, and every frame toward the guest;
* ``gateway``: what the gateway answers itself (ARP, echo, DHCP, TFTP, NDP/RA);
* ``datagrams``: UDP and ICMP echo flows through host sockets, ICMP errors back;
* ``streams``: TCP connections through host sockets;
* ``fragments``: IPv4 and IPv6 reassembly (bounded in count, bytes and time; overlaps refused).

A malformed frame raises ``WireError`` inside, is counted by reason in ``dropped`` and changes
nothing else: one bad frame can't stop the stack. Nothing here keeps ``frame`` past the call but
views of it that the shell made immutable (a fresh ``bytes`` per read).
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable

from pyslirp4netns.config import Config
from pyslirp4netns.core import events
from pyslirp4netns.core.datagrams import Datagrams
from pyslirp4netns.core.egress import ERROR_TTL, Egress, multicast_or_broadcast
from pyslirp4netns.core.fragments import Reassembler
from pyslirp4netns.core.gateway import Gateway
from pyslirp4netns.core.nat import Nameservers, Policy
from pyslirp4netns.core.stats import LoggedDrops
from pyslirp4netns.core.streams import Streams
from pyslirp4netns.wire import ethernet, icmpv4, icmpv6, ipv4, ipv6, tcpframe, udp
from pyslirp4netns.wire.codec import Buffer, WireError
from pyslirp4netns.wire.numbers import IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP

FirstFragment = tuple[ethernet.EthernetRepr, ipv4.Ipv4Repr, bytes]
# IPv6: the first fragment's Ethernet header, its fragment header's next header, and its packet
# (to quote in a time exceeded).
FirstFragment6 = tuple[ethernet.EthernetRepr, int, bytes]
# RFC 8200 §4.5: the upper-layer header must be in the first fragment (RFC 7112 §5).
_UPPER_HEADER_SIZE = {IPPROTO_TCP: 20, IPPROTO_UDP: 8, IPPROTO_ICMPV6: 4}


class Stack:
    """One virtual network: the gateway and DNS aliases as the guest sees them."""

    def __init__(
        self,
        config: Config,
        *,
        vnet_hdr: bool = False,
        policy: Policy | None = None,
        rng: Callable[[], float] | None = None,
        now: float = 0.0,
    ) -> None:
        self.enable_ipv6 = config.enable_ipv6
        self._requests: list[events.Request] = []
        # --debug: every drop is also a log line (core/stats.py); otherwise a plain Counter.
        self.dropped: Counter[str] = LoggedDrops(self._requests) if config.debug else Counter()
        self.policy = policy or Policy(config)
        self._warned: set[str] = set()
        rng = rng or (lambda: 0.5)
        ids = itertools.count(1)  # one id space for every flow, TCP or not
        self.egress = Egress(config, vnet_hdr, self.dropped)
        self.egress.now = now
        self.gateway = Gateway(config, self.egress, self.policy, self.dropped, self._warn, rng, now)
        self.datagrams = Datagrams(self.egress, self.policy, self._requests, self.dropped, ids)
        self.streams = Streams(self.egress, self.policy, self._requests, self.dropped, ids, rng)
        self.datagrams.debug = self.streams.debug = config.debug  # flow life as log lines
        # The first fragment's Ethernet and IP headers, kept for the reassembled datagram.
        self.reassembler: Reassembler[FirstFragment] = Reassembler(max_size=0xFFFF - ipv4.SIZE)
        # IPv6 under the same bounds; the fragmentable part may fill a whole Payload Length.
        self.reassembler6: Reassembler[FirstFragment6] = Reassembler(max_size=0xFFFF)

    # -- what the shell gives and takes ---------------------------------------------------
    def set_nameservers(self, nameservers: Nameservers) -> None:
        """resolv.conf as the shell last read it: the DNS alias's target and our RAs' RDNSS."""
        self.policy.nameservers = nameservers

    def take_frames(self) -> list[list[Buffer]]:
        return self.egress.take()

    def take_requests(self) -> list[events.Request]:
        # Copied, not swapped: the parts append to this very list.
        requests = self._requests[:]
        self._requests.clear()
        return requests

    def _warn(self, text: str) -> None:
        if text not in self._warned:
            self._warned.add(text)
            self._requests.append(events.Log(text))

    # -- input ---------------------------------------------------------------------------
    def receive_frame(
        self, frame: Buffer, now: float, csum_done: bool = False, gso_size: int = 0
    ) -> None:
        """One frame from the guest. ``csum_done``: the tap says its L4 checksum is not to be
        verified (virtio NEEDS_CSUM/DATA_VALID); ``gso_size``: a UDP GSO super-frame's size."""
        self.egress.now = now
        # The fast path: an IPv4 TCP frame without IP options, of a connection we have.
        if (
            len(frame) >= tcpframe.SIZE
            and frame[12] == 0x08
            and frame[13] == 0x00
            and frame[14] == tcpframe.VERSION_IHL
            and frame[23] == IPPROTO_TCP
        ):
            flow = self.streams.fast.get(bytes(frame[tcpframe.KEY]))
            if flow is not None and self.streams.fast_segment(flow, frame, now, csum_done):
                return
        try:
            eth = ethernet.decode(frame)
            if eth.vlan is not None:
                self.dropped["ethernet: vlan tagged"] += 1
            elif eth.ethertype == ethernet.ETHERTYPE_IPV4:
                self._ipv4(eth, frame, now, csum_done, gso_size)
            elif eth.ethertype == ethernet.ETHERTYPE_ARP:
                self.gateway.arp(eth, frame)
            elif eth.ethertype == ethernet.ETHERTYPE_IPV6 and self.enable_ipv6:
                self._ipv6(eth, frame, now, csum_done, gso_size)
            else:
                self.dropped["ethernet: ethertype not served"] += 1
        except WireError as e:
            self.dropped[str(e)] += 1

    # -- IPv4 ----------------------------------------------------------------------------
    def _ipv4(
        self, eth: ethernet.EthernetRepr, frame: Buffer, now: float, csum_done: bool, gso: int
    ) -> None:
        ip = ipv4.decode(frame, eth.payload_offset)
        self.egress.learn(ip.src, eth.src)
        if ip.more_fragments or ip.fragment_offset:
            self._ipv4_fragment(eth, ip, frame, now)
            return
        self._ipv4_payload(
            eth,
            ip,
            frame,
            ip.payload_offset,
            ip.payload_length,
            eth.payload_offset,
            now,
            csum_done,
            gso,
        )

    def _ipv4_fragment(
        self, eth: ethernet.EthernetRepr, ip: ipv4.Ipv4Repr, frame: Buffer, now: float
    ) -> None:
        start = ip.payload_offset
        key = (ip.src, ip.dst, ip.identification, ip.protocol)
        first = (
            (eth, ip, bytes(frame[eth.payload_offset : start])) if not ip.fragment_offset else None
        )
        done = self.reassembler.add(
            key,
            ip.fragment_offset,
            ip.more_fragments,
            frame[start : start + ip.payload_length],
            now,
            first,
        )
        if done is None:
            return
        (first_eth, first_ip, header), payload = done
        # The transport header is now contiguous after the first fragment's IP header.
        whole = header + payload
        self._ipv4_payload(first_eth, first_ip, whole, len(header), len(payload), 0, now, False, 0)

    def _ipv4_payload(
        self,
        eth: ethernet.EthernetRepr,
        ip: ipv4.Ipv4Repr,
        buf: Buffer,
        offset: int,
        length: int,
        ip_start: int,
        now: float,
        csum_done: bool,
        gso: int,
    ) -> None:
        """The transport payload of ``ip`` at ``offset`` in ``buf`` (a frame or a reassembly)."""
        protocol = ip.protocol
        if protocol == IPPROTO_TCP:
            self.streams.segment(eth, ip.src, ip.dst, buf, offset, length, ip_start, now, csum_done)
        elif protocol == IPPROTO_UDP:
            datagram = udp.decode(buf, offset, length)
            if not csum_done and not udp.checksum_ok(buf, datagram, ip.src, ip.dst):
                self.dropped["udp: bad checksum"] += 1
            elif self.gateway.serves_udp(ip.dst, datagram.dst_port):
                self.gateway.datagram(eth, ip, buf, datagram)
            else:
                original = buf[ip_start : datagram.payload_offset]
                self.datagrams.udp(eth, ip.src, ip.dst, datagram, buf, original, now, gso)
        elif protocol == IPPROTO_ICMP:
            message = icmpv4.decode(buf, offset, length)
            if message.type != icmpv4.ECHO_REQUEST or message.code != 0:
                self.dropped["icmpv4: not an echo request"] += 1
            elif ip.dst in self.egress.aliases:
                self.gateway.echo4(eth, ip, buf, message)
            else:
                self._ping(eth, ip.src, ip.dst, buf, message, ip_start, 8, now)
        else:
            self.dropped["ipv4: protocol not served"] += 1

    # -- IPv6 ----------------------------------------------------------------------------
    def _ipv6(
        self, eth: ethernet.EthernetRepr, frame: Buffer, now: float, csum_done: bool, gso: int
    ) -> None:
        ip = ipv6.decode(frame, eth.payload_offset)
        self.egress.learn6(ip.src, eth.src)
        upper = ipv6.walk_extensions(frame, ip)
        if upper.fragment is not None:
            self._ipv6_fragment(eth, ip, upper, frame, now)
            return
        self._ipv6_upper(eth, ip, upper, frame, eth.payload_offset, now, csum_done, gso)

    def _ipv6_fragment(
        self,
        eth: ethernet.EthernetRepr,
        ip: ipv6.Ipv6Repr,
        upper: ipv6.Ipv6Upper,
        frame: Buffer,
        now: float,
    ) -> None:
        """RFC 8200 §4.5: fragments keyed by (source, destination, identification), bounded
        and strict as IPv4's (overlaps discard the datagram: RFC 5722); an atomic fragment
        (offset 0, M=0) is processed on its own (RFC 6946). The reassembled packet is the
        fixed header (next header = the fragment header's) and the fragmentable part; the
        unfragmentable extension headers were walked already and are not kept."""
        fragment = upper.fragment
        assert fragment is not None
        start, length = upper.offset, upper.length
        first: FirstFragment6 | None = None
        if not fragment.offset:
            need = _UPPER_HEADER_SIZE.get(upper.protocol, 0)
            if length < need and fragment.more_fragments:
                self.dropped["ipv6: first fragment without upper-layer header"] += 1
                return
            first = (eth, upper.protocol, bytes(frame[eth.payload_offset : start + length]))
        done = self.reassembler6.add(
            (ip.src, ip.dst, fragment.identification),
            fragment.offset,
            fragment.more_fragments,
            frame[start : start + length],
            now,
            first,
        )
        if done is None:
            return
        (first_eth, protocol, _), payload = done
        header = ipv6.encode(
            ip.src,
            ip.dst,
            protocol,  # RFC 8200 §4.5: the first fragment's, whatever later ones say
            len(payload),
            hop_limit=ip.hop_limit,
            traffic_class=ip.traffic_class,
            flow_label=ip.flow_label,
        )
        whole = header + payload
        reassembled = ipv6.decode(whole, 0)
        inner = ipv6.walk_extensions(whole, reassembled)
        if inner.fragment is not None:
            self.dropped["ipv6: fragment header after reassembly"] += 1
            return
        self._ipv6_upper(first_eth, reassembled, inner, whole, 0, now, False, 0)

    def _ipv6_upper(
        self,
        eth: ethernet.EthernetRepr,
        ip: ipv6.Ipv6Repr,
        upper: ipv6.Ipv6Upper,
        frame: Buffer,
        ip_start: int,
        now: float,
        csum_done: bool,
        gso: int,
    ) -> None:
        """The upper-layer payload of ``ip`` (in a frame, or a reassembled packet)."""
        protocol, offset, length = upper.protocol, upper.offset, upper.length
        if protocol == IPPROTO_TCP:
            self.streams.segment(
                eth, ip.src, ip.dst, frame, offset, length, ip_start, now, csum_done
            )
        elif protocol == IPPROTO_UDP:
            datagram = udp.decode(frame, offset, length)
            if not csum_done and not udp.checksum_ok(frame, datagram, ip.src, ip.dst):
                self.dropped["udp: bad checksum"] += 1
                return
            if self.gateway.serves_udp6(ip.dst, datagram.dst_port):
                self.gateway.datagram6(eth, ip, frame, datagram)  # DHCPv6
                return
            original = frame[ip_start : datagram.payload_offset]
            self.datagrams.udp(eth, ip.src, ip.dst, datagram, frame, original, now, gso)
        elif protocol == IPPROTO_ICMPV6:
            message = icmpv6.decode(frame, offset, length, ip.src, ip.dst)
            if message.type != icmpv6.ECHO_REQUEST:
                self.gateway.icmp6(eth, ip, frame, message)
            elif message.code != 0:
                self.dropped["icmpv6: type not served"] += 1
            elif ip.dst in self.egress.aliases6:
                self.gateway.icmp6(eth, ip, frame, message)
            else:
                self._ping(eth, ip.src, ip.dst, frame, message, ip_start, 4, now)
        else:
            self.dropped["ipv6: protocol not served"] += 1

    def _ping(
        self,
        eth: ethernet.EthernetRepr,
        src: bytes,
        dst: bytes,
        buf: Buffer,
        message: icmpv4.IcmpRepr,
        ip_start: int,
        quote: int,
        now: float,
    ) -> None:
        """An echo request to another host, through a ping flow; an ICMP error about it will
        quote its IP header and ``quote`` bytes of its echo data."""
        start = message.payload_offset
        whole = bytes(buf[start - icmpv4.SIZE : start + message.payload_length])
        original = buf[ip_start : start + quote]
        proto = IPPROTO_ICMP if len(src) == 4 else IPPROTO_ICMPV6
        self.datagrams.ping(eth, src, dst, message.identifier, whole, original, now, proto)

    # -- output and timers ----------------------------------------------------------------
    def flush(self, now: float) -> None:
        """Once per batch, before taking frames and requests: TCP sends what it owes."""
        self.egress.now = now
        self.streams.flush(now)

    def next_deadline(self) -> float | None:
        """The earliest timer of any part; called once per loop turn, so kept cheap."""
        best = self.streams.next_deadline()
        ra = self.gateway.next_ra
        if ra is not None and (best is None or ra < best):
            best = ra
        if self.datagrams.flows or len(self.reassembler) or len(self.reassembler6):
            for deadline in (
                self.datagrams.next_deadline(),
                self.reassembler.next_deadline(),
                self.reassembler6.next_deadline(),
            ):
                if deadline is not None and (best is None or deadline < best):
                    best = deadline
        return best

    def on_timer(self, now: float) -> None:
        self.egress.now = now
        self.streams.on_timer(now)
        self.datagrams.on_timer(now)
        for head in self.reassembler.expire(now):
            # RFC 792 / RFC 1122 §3.3.2: time exceeded (code 1) when the first fragment came.
            eth, ip, header = head
            if multicast_or_broadcast(ip.dst):
                continue
            message = icmpv4.encode(icmpv4.TIME_EXCEEDED, 1, 0, header[: ip.header_length + 8])
            gateway = self.egress.gateway
            self.egress.ipv4(eth.src, gateway, ip.src, ipv4.PROTO_ICMP, message, b"", ERROR_TTL)
        for eth, _, packet in self.reassembler6.expire(now):
            # RFC 8200 §4.5: time exceeded, code 1, quoting the first fragment, only if it came.
            src, dst = packet[8:24], packet[24:40]  # the fixed header's addresses (§3)
            if dst[0] == 0xFF:
                continue  # RFC 4443 §2.4 (e.3): no error about a multicast packet
            gateway6 = self.egress.gateway6
            code = icmpv6.REASSEMBLY_TIME_EXCEEDED
            message = icmpv6.time_exceeded(gateway6, src, code, packet)
            self.egress.ipv6(eth.src, gateway6, src, IPPROTO_ICMPV6, message, ERROR_TTL)
        self.gateway.on_timer(now)
        self.flush(now)
