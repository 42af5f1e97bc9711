"""The DHCP server: leases per MAC from N+15, OFFER/ACK/NAK, pool of 16."""

from __future__ import annotations

from ipaddress import ip_address

from pyslirp4netns.config import Config
from pyslirp4netns.core.dhcp import DhcpServer
from pyslirp4netns.wire import dhcp

CONFIG = Config(target="1", pid=1)


def request(mac: bytes, kind: int, options: dict[int, bytes] | None = None) -> dhcp.DhcpRepr:
    zero = bytes(4)
    return dhcp.DhcpRepr(
        dhcp.BOOTREQUEST, 0x1234, 0, 0, zero, zero, zero, zero, mac, options or {}, kind
    )


def reply(server: DhcpServer, message: dhcp.DhcpRepr) -> dhcp.DhcpRepr | None:
    payload = server.handle(message)
    if payload is None:
        return None
    return dhcp.decode(payload.replace(b"\x02", b"\x01", 1))  # decode expects a client op


def test_offer_then_ack_with_slirp4netns_options() -> None:
    server, mac = DhcpServer(CONFIG), bytes.fromhex("020000000001")
    offer = reply(server, request(mac, dhcp.DISCOVER))
    assert offer is not None and offer.message_type == dhcp.OFFER
    assert offer.yiaddr == ip_address("10.0.2.15").packed
    assert offer.options[dhcp.OPTION_ROUTER] == ip_address("10.0.2.2").packed
    assert offer.options[dhcp.OPTION_DNS] == ip_address("10.0.2.3").packed
    assert offer.options[dhcp.OPTION_SERVER_ID] == ip_address("10.0.2.2").packed
    assert offer.options[dhcp.OPTION_LEASE_TIME] == (86400).to_bytes(4, "big")
    ack = reply(server, request(mac, dhcp.REQUEST, {dhcp.OPTION_REQUESTED_IP: offer.yiaddr}))
    assert ack is not None and ack.message_type == dhcp.ACK and ack.yiaddr == offer.yiaddr


def test_same_mac_same_address_and_other_address_is_nakked() -> None:
    server = DhcpServer(CONFIG)
    first, second = bytes.fromhex("020000000001"), bytes.fromhex("020000000002")
    a = reply(server, request(first, dhcp.DISCOVER))
    b = reply(server, request(second, dhcp.DISCOVER))
    assert a is not None and b is not None and a.yiaddr != b.yiaddr
    again = reply(server, request(first, dhcp.DISCOVER))
    assert again is not None and again.yiaddr == a.yiaddr
    nak = reply(server, request(first, dhcp.REQUEST, {dhcp.OPTION_REQUESTED_IP: b.yiaddr}))
    assert nak is not None and nak.message_type == dhcp.NAK


def test_pool_of_sixteen() -> None:
    server = DhcpServer(CONFIG)
    leases = [reply(server, request(bytes([2, 0, 0, 0, 0, i]), dhcp.DISCOVER)) for i in range(17)]
    given = [lease.yiaddr for lease in leases[:16] if lease is not None]
    assert given == [ip_address(f"10.0.2.{15 + i}").packed for i in range(16)]
    assert leases[16] is None
