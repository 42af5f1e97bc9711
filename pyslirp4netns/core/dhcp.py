"""The DHCPv4 server of the virtual network (contract §3.3), sans-IO.

Leases N+15..N+30 (16 addresses), 24 hours, keyed by the client's MAC, so the same MAC gets the
same address; router N+2, DNS N+3 (also with ``--disable-dns``, as libslirp), server id N+2.
DISCOVER gets an OFFER, a REQUEST for the client's own lease (or with no address named) an ACK,
a REQUEST for any other address a NAK. Leases are never taken back: 16 MACs fill the pool, after
which new clients get no answer, as in libslirp.
"""

from __future__ import annotations

from pyslirp4netns.config import Config
from pyslirp4netns.wire import dhcp

LEASE_SECONDS = 24 * 3600
POOL_SIZE = 16


class DhcpServer:
    def __init__(self, config: Config) -> None:
        self.server = config.gateway.packed
        self.dns = config.dns.packed
        self.netmask = config.netmask.packed
        first = int(config.dhcp_start)
        self.pool = [(first + i).to_bytes(4, "big") for i in range(POOL_SIZE)]
        self.leases: dict[bytes, bytes] = {}  # MAC -> address

    def _lease_for(self, mac: bytes) -> bytes | None:
        lease = self.leases.get(mac)
        if lease is None:
            taken = set(self.leases.values())
            lease = next((a for a in self.pool if a not in taken), None)
            if lease is not None:
                self.leases[mac] = lease
        return lease

    def handle(self, message: dhcp.DhcpRepr) -> bytes | None:
        """The reply's DHCP payload for one client message, or None for no answer."""
        if message.op != dhcp.BOOTREQUEST:
            return None
        kind = message.message_type
        if kind == dhcp.DISCOVER:
            reply_type = dhcp.OFFER
        elif kind == dhcp.REQUEST:
            reply_type = dhcp.ACK
        else:
            return None  # RELEASE, DECLINE, INFORM, plain BOOTP: nothing to say
        lease = self._lease_for(message.chaddr)
        if lease is None:
            return None
        if kind == dhcp.REQUEST:
            wanted = message.options.get(dhcp.OPTION_REQUESTED_IP)
            if wanted is None and message.ciaddr != bytes(4):
                wanted = message.ciaddr
            if wanted is not None and wanted != lease:
                return dhcp.encode_reply(
                    xid=message.xid,
                    chaddr=message.chaddr,
                    message_type=dhcp.NAK,
                    server_id=self.server,
                    flags=message.flags,
                )
        return dhcp.encode_reply(
            xid=message.xid,
            chaddr=message.chaddr,
            message_type=reply_type,
            server_id=self.server,
            yiaddr=lease,
            flags=message.flags,
            lease_time=LEASE_SECONDS,
            subnet_mask=self.netmask,
            router=self.server,
            dns=[self.dns],
        )
