"""``--pcap FILE``: every frame on the tap, both directions, in the classic pcap format.

The file is the libpcap 2.4 format every tool reads (tcpdump, tshark, scapy): little-endian
magic ``a1b2c3d4`` (microsecond timestamps), ``LINKTYPE_ETHERNET``, snaplen 262144 (tcpdump's),
so a 64 KiB GSO super-frame is written whole. Each record is the Ethernet frame as it crossed
the tap, without the virtio-net header: a GSO burst is the one super-frame it is, its IP total
length as sent (the guest's kernel cuts it into MSS-sized segments after us, and a guest's TSO
frame reaches us the same way); checksums the tap is asked to finish (``NEEDS_CSUM``) hold only
the pseudo-header sum, as in a capture on any host with checksum offload.

Records are gathered in a buffer and written with one ``write`` once it holds ``FLUSH_AT``
bytes, when the loop goes idle, on SIGUSR1 and at exit, never one syscall per frame. The file
is opened (created 0600, truncated) before the sandbox and seccomp, so the fd survives
pivot_root; no file is ever opened later, so the size bound (``--pcap-max-size``) stops the
capture rather than rotating: the record that would pass it is not written, one line says so,
and the file stays a valid capture of everything before.
"""

from __future__ import annotations

import errno
import os
import struct
from collections.abc import Callable, Sequence

from pyslirp4netns.wire.codec import Buffer

MAGIC = 0xA1B2C3D4  # microsecond resolution
VERSION = (2, 4)
SNAPLEN = 262144
LINKTYPE_ETHERNET = 1
GLOBAL_HEADER = struct.pack("<IHHiIII", MAGIC, *VERSION, 0, 0, SNAPLEN, LINKTYPE_ETHERNET)
RECORD = struct.Struct("<IIII")  # ts_sec, ts_usec, incl_len, orig_len
DEFAULT_MAX_SIZE = 100 << 20  # bytes of file, headers included
FLUSH_AT = 256 << 10


class PcapWriter:
    """Buffered pcap records on ``fd`` (owned: ``close`` closes it) up to ``max_size`` bytes."""

    def __init__(
        self, fd: int, max_size: int = DEFAULT_MAX_SIZE, log: Callable[[str], None] = print
    ) -> None:
        self.fd = fd
        self.max_size = max_size
        self.log = log
        self.buffer = bytearray()
        self.size = 0  # bytes of file, written or buffered
        self.records = 0
        self.stopped = False
        self._add(GLOBAL_HEADER)

    @classmethod
    def open(
        cls, path: str, max_size: int = DEFAULT_MAX_SIZE, log: Callable[[str], None] = print
    ) -> PcapWriter:
        """Create (or truncate) ``path``; OSError as open(2) raises it."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        return cls(fd, max_size, log)

    def _add(self, data: Buffer) -> None:
        self.buffer += data
        self.size += len(data)

    def frame(self, parts: Sequence[Buffer], now: float) -> None:
        """One frame made of ``parts`` (as for ``writev``), seen at wall-clock time ``now``."""
        if self.stopped:
            return
        n = 0
        for part in parts:
            n += len(part)
        if self.size + RECORD.size + n > self.max_size:
            self.stopped = True
            self.log(f"pcap: --pcap-max-size of {self.max_size} bytes reached; capture stopped")
            self.flush()
            return
        seconds, micros = divmod(int(now * 1e6 + 0.5), 1_000_000)
        buffer = self.buffer
        buffer += RECORD.pack(seconds, micros, n, n)
        for part in parts:
            buffer += part
        self.size += RECORD.size + n
        self.records += 1
        if len(buffer) >= FLUSH_AT:
            self.flush()

    def flush(self) -> None:
        """Write what is buffered; a failing write (ENOSPC, EIO) ends the capture."""
        data = self.buffer
        if not data or self.fd < 0:
            return
        self.buffer = bytearray()
        view = memoryview(data)
        try:
            while view:
                try:
                    view = view[os.write(self.fd, view) :]
                except InterruptedError:
                    continue
        except OSError as e:
            if not self.stopped:
                self.log(f"pcap: write: {os.strerror(e.errno or errno.EIO)}; capture stopped")
            self.stopped = True

    def close(self) -> None:
        self.flush()
        if self.fd >= 0:
            try:
                os.close(self.fd)
            except OSError:
                pass
            self.fd = -1
