"""The tap port of ``--pcap``, ``--stats`` and ``--debug``: every frame captured and counted.

The daemon swaps this subclass in for ``TapPort`` only when one of those options is given, so the
default read and write loops carry no per-frame check for them. Frames are seen where they
cross the tap: read ones just before the stack sees them, written
ones as handed to ``writev`` (a frame the tap then refuses with EAGAIN is in the capture too).
With the test-only fault injector, read frames are seen as it releases them.
"""

from __future__ import annotations

import time

from pyslirp4netns.core.stats import FROM_GUEST, TO_GUEST, ProtocolCounts
from pyslirp4netns.shell.faults import FaultInjector
from pyslirp4netns.shell.pcap import PcapWriter
from pyslirp4netns.shell.tap import FrameSink, Tap, TapPort
from pyslirp4netns.wire.codec import Buffer

HEAD = 128  # bytes of a frame that classification may look at (Ethernet, IPv6 and extensions)
MIN_HEAD = 54  # Ethernet and IPv6 headers: a first part this long is classified alone


class _Observed:
    """A ``FrameSink`` in front of the stack: counts and captures, then hands the frame on."""

    __slots__ = ("sink", "counts", "pcap", "wall")

    def __init__(self, sink: FrameSink, counts: ProtocolCounts, pcap: PcapWriter | None) -> None:
        self.sink = sink
        self.counts = counts
        self.pcap = pcap
        self.wall = 0.0

    def receive_frame(
        self, frame: Buffer, now: float, csum_done: bool = False, gso_size: int = 0
    ) -> None:
        self.counts.count(FROM_GUEST, frame, len(frame))
        if self.pcap is not None:
            self.pcap.frame((frame,), self.wall)
        self.sink.receive_frame(frame, now, csum_done, gso_size)


class ObservedTapPort(TapPort):
    """``TapPort`` that counts every frame per protocol and, with ``pcap``, captures it."""

    def __init__(
        self,
        tap: Tap,
        faults_in: FaultInjector | None = None,
        faults_out: FaultInjector | None = None,
        pcap: PcapWriter | None = None,
    ) -> None:
        super().__init__(tap, faults_in, faults_out)
        self.counts = ProtocolCounts()
        self.pcap = pcap
        self._observed: _Observed | None = None

    def read(self, sink: FrameSink, now: float) -> str | None:
        observed = self._observed
        if observed is None or observed.sink is not sink:
            observed = self._observed = _Observed(sink, self.counts, self.pcap)
        observed.wall = time.time()
        return super().read(observed, now)

    def write(self, frames: list[list[Buffer]]) -> None:
        if self.fd >= 0:
            header, counts, pcap = self.header, self.counts, self.pcap
            wall = time.time()
            for parts in frames:
                if header:
                    parts = parts[1:]  # the virtio-net header is the tap's, not the frame's
                n = 0
                for part in parts:
                    n += len(part)
                head = parts[0]
                if len(head) < MIN_HEAD and len(parts) > 1:  # headers split over parts: rare
                    head = b"".join(bytes(part[:HEAD]) for part in parts)[:HEAD]
                counts.count(TO_GUEST, head, n)
                if pcap is not None:
                    pcap.frame(parts, wall)
        super().write(frames)

    def idle(self) -> None:
        """The loop has been idle a while: what is captured goes to the file."""
        if self.pcap is not None:
            self.pcap.flush()

    def close(self) -> None:
        if self.pcap is not None:
            self.pcap.close()
