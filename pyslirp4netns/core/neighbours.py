"""Guest addresses and their MACs, learned from what the guest sends, and the frames that wait
for an address we have not heard from yet (contract §3.2: libslirp asks by ARP or neighbour
solicitation before delivering to a guest it does not know)."""

from __future__ import annotations

from collections import Counter
from ipaddress import IPv4Network

from pyslirp4netns.core import ndp
from pyslirp4netns.wire.codec import Buffer
from pyslirp4netns.wire.numbers import UNSPECIFIED6

UNKNOWN_MAC = bytes(6)  # a frame's destination until ARP/NDP tells us the guest's MAC
NEIGHBOUR_LIMIT = 4096  # guest addresses remembered, per family
ARP_RETRY = 1.0  # seconds before asking again for an unanswered guest address
AWAITING_LIMIT = 64  # guest addresses being resolved at once
AWAITING_FRAMES = 16  # frames held per address meanwhile

Held = tuple[list[Buffer], bytes]  # a frame's buffers (MAC still unknown) and its vnet header


class Neighbours:
    """IPv4 and IPv6 neighbour caches, bounded, and the frames held while we ask."""

    def __init__(
        self,
        cidr: IPv4Network,
        aliases: set[bytes],
        dropped: Counter[str],
        aliases6: tuple[bytes, ...] = ndp.ALIASES6,
    ) -> None:
        self.v4: dict[bytes, bytes] = {}  # guest IPv4 -> MAC
        self.v6: dict[bytes, bytes] = {}  # guest IPv6 -> MAC
        self._aliases = aliases  # our own IPv4 addresses: never learned as guests
        self._aliases6 = aliases6  # and our IPv6 ones
        self._network = int(cidr.network_address)
        self._netmask = int(cidr.netmask)
        self._dropped = dropped
        # Guest addresses we asked for: (when we asked, frames waiting for the answer).
        self._awaiting: dict[bytes, tuple[float, list[Held]]] = {}

    def get(self, ip: bytes) -> bytes | None:
        return (self.v4 if len(ip) == 4 else self.v6).get(ip)

    def learn(self, ip: bytes, mac: bytes) -> list[Held]:
        """A guest IPv4 source: only unicast inside the CIDR, never our aliases. Returns the
        frames that were waiting for it. The all-zero MAC is never learned: it is UNKNOWN_MAC,
        which would send a frame for that guest back to resolution forever."""
        if ip in self._aliases or mac[0] & 1 or mac == UNKNOWN_MAC or self.v4.get(ip) == mac:
            return []
        if len(self.v4) >= NEIGHBOUR_LIMIT and ip not in self.v4:
            return []
        if int.from_bytes(ip, "big") & self._netmask != self._network:
            return []
        self.v4[ip] = mac
        return self._release(ip)

    def learn6(self, ip: bytes, mac: bytes) -> list[Held]:
        """A guest IPv6 source (unicast, not ours); returns the frames that were waiting."""
        if ip[0] == 0xFF or ip == UNSPECIFIED6 or ip in self._aliases6 or mac[0] & 1:
            return []
        if mac == UNKNOWN_MAC:  # never the sentinel, as in learn
            return []
        if self.v6.get(ip) == mac:
            return []
        if len(self.v6) >= NEIGHBOUR_LIMIT and ip not in self.v6:
            return []
        self.v6[ip] = mac
        return self._release(ip)

    def _release(self, ip: bytes) -> list[Held]:
        waiting = self._awaiting.pop(ip, None)
        return [] if waiting is None else waiting[1]

    def hold(self, ip: bytes, frame: Held, now: float) -> bool:
        """Keep ``frame`` until ``ip`` answers; True when the caller must ask for it now (first
        time, or no answer within ARP_RETRY, which also drops what waited as stale)."""
        waiting = self._awaiting.get(ip)
        if waiting is None:
            if len(self._awaiting) >= AWAITING_LIMIT:
                self._dropped["arp: too many unresolved guest addresses"] += 1
                return False
            waiting = (now, [])
            ask = True
        else:
            ask = now - waiting[0] >= ARP_RETRY
            if ask:
                waiting = (now, [])  # no answer within ARP_RETRY: what waited is stale
        held = waiting[1]
        if len(held) < AWAITING_FRAMES:
            held.append(frame)
        else:
            self._dropped["arp: frame dropped while resolving"] += 1
        self._awaiting[ip] = waiting
        return ask
