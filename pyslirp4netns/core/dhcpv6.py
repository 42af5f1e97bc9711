"""Stateless DHCPv6 (RFC 8415 §6.1): Information-request answered with the DNS alias.

With ``--enable-ipv6`` the guest's addresses come from SLAAC (``ndp``); a client that asks for
"other configuration" (our RAs set the O flag) sends an Information-request to ff02::1:2 and
gets a Reply carrying its Client Identifier back, our Server Identifier (a DUID-LL of the
gateway's MAC) and, when its Option Request option asks for it, the DNS Recursive Name Server
option (RFC 3646) naming the DNS alias fd00::3, as libslirp's DHCPv6 server does. Nothing
stateful is served: Solicit, Request and the rest go unanswered (RFC 8415 §6.1: a stateless
server need not answer them). Pure: messages in, message bytes out.
"""

from __future__ import annotations

from pyslirp4netns.wire import dhcpv6

# RFC 8415 §16.12: Information-requests the server MUST discard, by reason.
DISCARD_IA = "dhcpv6: information-request with an IA option"
DISCARD_SERVER = "dhcpv6: information-request for another server"
NOT_SERVED = "dhcpv6: message type not served"


class Dhcpv6Server:
    """The stateless server of the gateway; ``dns`` is the 16-byte DNS alias."""

    def __init__(self, dns: bytes, mac: bytes) -> None:
        self.dns = dns
        # RFC 8415 §11.4: DUID-LL, hardware type 1 (Ethernet), the gateway's MAC.
        self.duid = (
            dhcpv6.DUID_LL.to_bytes(2, "big") + dhcpv6.HARDWARE_ETHERNET.to_bytes(2, "big") + mac
        )

    def handle(self, message: dhcpv6.Dhcpv6Repr) -> bytes | str:
        """The Reply to send, or why nothing is sent (a reason to count)."""
        if message.msg_type != dhcpv6.INFORMATION_REQUEST:
            return NOT_SERVED
        codes = {code for code, _ in message.options}
        if codes & dhcpv6.IA_OPTIONS:
            return DISCARD_IA
        server = message.option(dhcpv6.OPTION_SERVERID)
        if server is not None and server != self.duid:
            return DISCARD_SERVER
        oro = message.option(dhcpv6.OPTION_ORO)
        wanted = dhcpv6.requested(oro) if oro is not None else []
        # RFC 8415 §18.3.6: the Reply carries the client's Client Identifier (if it sent one)
        # and the Server Identifier, then the options it asked for that we have.
        options: list[tuple[int, bytes]] = []
        client = message.option(dhcpv6.OPTION_CLIENTID)
        if client is not None:
            options.append((dhcpv6.OPTION_CLIENTID, client))
        options.append((dhcpv6.OPTION_SERVERID, self.duid))
        if dhcpv6.OPTION_DNS_SERVERS in wanted:
            options.append((dhcpv6.OPTION_DNS_SERVERS, self.dns))  # RFC 3646 §3
        return dhcpv6.encode(dhcpv6.REPLY, message.xid, options)
