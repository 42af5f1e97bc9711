"""Guest text that arrived out of order, held until the hole before it fills, and the SACK
blocks (RFC 2018) that tell the guest what we hold.

RFC 9293 §3.10.7.4 lets a receiver keep in-window segments that do not start at RCV.NXT "for
later processing". We keep them: otherwise every segment after a loss would have to be resent.
And we report them: the guest sends TSO bursts, so one lost burst gives us too few arrivals for
the three duplicate ACKs of a fast retransmit, and without SACK every hole would cost the guest a
retransmission timeout.

``OutOfOrder`` holds disjoint pieces sorted by sequence number. The connection creates one on
the first out-of-order arrival and drops it when ``drain`` has emptied it, so the in-order path
never looks at it. Memory is bounded twice: by the count here (``OOO_MAX_SEGMENTS``) and by the
window, because the connection only inserts text inside what it advertised.
"""

from __future__ import annotations

from pyslirp4netns.core.seq import HALF, MASK, seq_le, seq_lt

OOO_MAX_SEGMENTS = 256  # pieces kept (their bytes are bounded by the window anyway)
MAX_SACK_BLOCKS = 4  # RFC 2018 §3: 40 bytes of option space hold four blocks without timestamps


class OutOfOrder:
    """Out-of-order text ahead of RCV.NXT: sorted, disjoint ``(seq, text)`` pieces."""

    __slots__ = ("pieces", "size", "last")

    def __init__(self) -> None:
        self.pieces: list[tuple[int, bytes]] = []
        self.size = 0  # bytes held
        self.last = 0  # sequence number of the latest arrival kept (the first SACK block's)

    def insert(self, rcv_nxt: int, off: int, data: bytes) -> None:
        """Hold ``data``, which starts ``off`` > 0 bytes past ``rcv_nxt``; bytes already held win.

        At ``OOO_MAX_SEGMENTS`` pieces the new text is dropped: the guest will resend it."""
        pieces: list[tuple[int, int, bytes]] = []  # (offset, seq, text)
        pos = off
        end = off + len(data)
        for s, d in self.pieces:
            es = (s - rcv_nxt) & MASK
            if pos < end and es > pos:  # a gap before this piece: fill it with our bytes
                cut = min(es, end)
                pieces.append((pos, (rcv_nxt + pos) & MASK, data[pos - off : cut - off]))
            pieces.append((es, s, d))
            if es + len(d) > pos:
                pos = es + len(d)
        if pos < end:
            pieces.append((pos, (rcv_nxt + pos) & MASK, data[pos - off :]))
        if len(pieces) > OOO_MAX_SEGMENTS:
            return
        self.last = (rcv_nxt + off) & MASK
        pieces.sort(key=lambda p: p[0])
        self.pieces = [(s, d) for _, s, d in pieces]
        self.size = sum(len(d) for _, _, d in pieces)

    def blocks(self) -> tuple[tuple[int, int], ...]:
        """SACK blocks ``(left edge, right edge)`` for what we hold (RFC 2018 §3-4): adjacent
        pieces merged, the block holding the latest arrival first (§4), at most four."""
        blocks: list[tuple[int, int]] = []
        for seq, data in self.pieces:
            end = (seq + len(data)) & MASK
            if blocks and blocks[-1][1] == seq:
                blocks[-1] = (blocks[-1][0], end)
            else:
                blocks.append((seq, end))
        last = self.last
        blocks.sort(key=lambda b: 0 if seq_le(b[0], last) and seq_lt(last, b[1]) else 1)  # stable
        return tuple(blocks[:MAX_SACK_BLOCKS])

    def drain(self, rcv_nxt: int, fin: int | None) -> list[bytes]:
        """Take out the held text that RCV.NXT (``rcv_nxt``) has reached, in order: what
        continues the stream from there, nothing past the guest's FIN at ``fin`` (if known).
        Pieces wholly behind ``rcv_nxt`` are dropped; the first one after a hole stays."""
        pieces = self.pieces
        out: list[bytes] = []
        while pieces:
            s, d = pieces[0]
            off = (s - rcv_nxt) & MASK
            if 0 < off < HALF:
                break  # still a hole before this piece
            del pieces[0]
            self.size -= len(d)
            skip = 0 if off == 0 else (-off) & MASK
            take = len(d) - skip
            if fin is not None:
                to_fin = (fin - rcv_nxt) & MASK
                if to_fin < HALF and take > to_fin:
                    take = to_fin  # nothing after the guest's FIN is text
            if take > 0:
                out.append(d[skip : skip + take] if skip or take < len(d) else d)
                rcv_nxt = (rcv_nxt + take) & MASK
        return out
