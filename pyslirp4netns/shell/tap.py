"""The tap device: open or attach it with the offloads we want, and move frames in batches.

With ``IFF_VNET_HDR`` and ``TUNSETOFFLOAD`` every frame carries a 10-byte virtio-net header:
the guest hands us 64 KB TCP super-frames whose checksums need no verifying, and we write
64 KB GSO bursts that the kernel cuts to the guest's MSS (the biggest speed lever there is).
Without it, frames are plain and fully checksummed, exactly as slirp4netns's.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
import traceback
from dataclasses import dataclass
from typing import Protocol

import pytun

from pyslirp4netns.shell.errors import log, perror
from pyslirp4netns.shell.faults import FaultInjector
from pyslirp4netns.wire import vnet
from pyslirp4netns.wire.codec import Buffer

IFNAMSIZ = 16

# <linux/if_tun.h>
TUNSETIFF = 0x400454CA
TUNGETIFF = 0x800454D2
TUNSETOFFLOAD = 0x400454D0
TUNSETVNETHDRSZ = 0x400454D8
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000
TUN_F_CSUM = 0x01
TUN_F_TSO4 = 0x02
TUN_F_TSO6 = 0x04
TUN_F_USO4 = 0x20
TUN_F_USO6 = 0x40
TCP_OFFLOAD = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6
UDP_OFFLOAD = TUN_F_USO4 | TUN_F_USO6
# struct virtio_net_hdr (legacy): flags, gso_type, hdr_len, gso_size, csum_start, csum_offset
VNET_HDR_LEN = 10


@dataclass(frozen=True, slots=True)
class Tap:
    """The tap fd and the frame format it speaks (ARCHITECTURE.md, "fast path")."""

    fd: int
    name: str  # as the kernel named it ("tap%d" and "" are expanded)
    vnet_hdr: bool  # every frame is preceded by a 10-byte virtio_net_hdr
    offload: int  # TUN_F_* accepted by TUNSETOFFLOAD; 0 = plain frames with full checksums


def open_tap(name: str, want_offload: bool) -> tuple[Tap, str | None]:
    """Create or attach the tap in the current thread's netns; returns it and a fallback note.

    rootlesskit pre-creates a persistent tap without vnet_hdr; TUNSETIFF on attach takes the new
    flags, but a kernel or device that refuses them gets the plain mode (and one log line).
    """
    # slirp4netns copies at most IFNAMSIZ-1 bytes; the kernel expands "%d" and "" -> "tap%d".
    name = name.encode()[: IFNAMSIZ - 1].decode(errors="ignore")
    note = None
    if want_offload:
        try:
            dev = pytun.TunTapDevice(
                name=name, flags=pytun.IFF_TAP | pytun.IFF_NO_PI | pytun.IFF_VNET_HDR
            )
        except pytun.Error as e:
            note = (
                f"tap offload unavailable (TUNSETIFF with IFF_VNET_HDR: {e.args[-1]}); plain frames"
            )
        else:
            fd, actual = _keep_fd(dev)
            offload, why = _enable_offload(fd)
            if not offload:
                note = f"tap offload unavailable ({why}); plain frames"
            return Tap(fd, actual, True, offload), note
    try:
        dev = pytun.TunTapDevice(name=name, flags=pytun.IFF_TAP | pytun.IFF_NO_PI)
    except pytun.Error as e:
        raise perror("ioctl(TUNSETIFF)", e.args[0]) from None
    fd, actual = _keep_fd(dev)
    return Tap(fd, actual, False, 0), note


def _keep_fd(dev: pytun.TunTapDevice) -> tuple[int, str]:
    """Detach the fd from pytun's object (which closes its own on close/GC)."""
    name = dev.name
    fd = os.dup(dev.fileno())
    dev.close()
    return fd, name.decode() if isinstance(name, bytes) else str(name)


def _enable_offload(fd: int) -> tuple[int, str]:
    """Set the vnet header size and the widest offload set the kernel accepts."""
    try:
        fcntl.ioctl(fd, TUNSETVNETHDRSZ, struct.pack("i", VNET_HDR_LEN))
    except OSError as e:
        return 0, f"TUNSETVNETHDRSZ: {os.strerror(e.errno or errno.EIO)}"
    error = 0
    for flags in (TCP_OFFLOAD | UDP_OFFLOAD, TCP_OFFLOAD):  # USO needs Linux >= 6.2
        try:
            fcntl.ioctl(fd, TUNSETOFFLOAD, flags)
            return flags, ""
        except OSError as e:
            error = e.errno or errno.EIO
    return 0, f"TUNSETOFFLOAD: {os.strerror(error)}"


def tap_from_fd(fd: int) -> Tap:
    """--netns-type=tapfd: an inherited, already attached tap; use whatever header it has."""
    try:
        ifr = fcntl.ioctl(fd, TUNGETIFF, bytes(40))
    except OSError as e:
        raise perror("ioctl(TUNGETIFF)", e.errno or errno.EIO) from None
    name = ifr[:IFNAMSIZ].split(b"\0", 1)[0].decode()
    (flags,) = struct.unpack_from("H", ifr, IFNAMSIZ)
    if not flags & IFF_VNET_HDR:
        return Tap(fd, name, False, 0)
    offload, _ = _enable_offload(fd)
    return Tap(fd, name, True, offload)


READ_SIZE = 65536 + 64  # a full 64 KiB GSO frame plus the virtio-net header
# Frames read per wake-up at most (about the tap's queue, txqueuelen 1000): a guest that sends
# faster than we handle (a SYN flood) would otherwise keep one read going while nothing else
# runs, host events, timers and our writes to the guest (gateway ping replies) included. The
# tap stays readable, so the loop comes straight back after one round of everything else.
READ_BATCH = 1024
BUG_REPORTS = 10  # tracebacks logged at most (each a bug of ours: see TapPort.read)
STACK_RAISED = "stack: frame raised (a bug)"  # its drop reason in get_stats


class FrameSink(Protocol):
    def receive_frame(
        self, frame: Buffer, now: float, csum_done: bool = False, gso_size: int = 0
    ) -> None: ...


class TapPort:
    """Batched frame I/O on the tap fd, through the test-only fault injectors when set."""

    def __init__(
        self,
        tap: Tap,
        faults_in: FaultInjector | None = None,
        faults_out: FaultInjector | None = None,
    ) -> None:
        self.fd = tap.fd
        self.header = vnet.SIZE if tap.vnet_hdr else 0
        self.faults_in = faults_in
        self.faults_out = faults_out
        # Totals for get_stats: frames and Ethernet bytes (no virtio-net header) each way, added
        # once per batch; per-protocol counts are shell/observe.py's (off by default).
        self.frames_in = self.bytes_in = self.frames_out = self.bytes_out = 0
        self.bugs = 0  # guest frames the stack raised on (get_stats: STACK_RAISED)

    def read(self, sink: FrameSink, now: float) -> str | None:
        """Drain the tap until EAGAIN (or ``READ_BATCH`` frames) into ``sink``; a reason to
        stop if the tap is gone."""
        header, fd, faults = self.header, self.fd, self.faults_in
        receive = sink.receive_frame
        count = octets = 0  # the totals of get_stats, stored once per batch (lost if gone)
        while count < READ_BATCH:
            try:
                # A fresh bytes per frame: immutable, so the stack may keep views of it (a
                # guest's payload goes to the host socket without being copied again).
                buf = os.read(fd, READ_SIZE)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as e:
                if e.errno == errno.EBADFD:  # tap detached (device deleted): nothing to serve
                    return "tap device is gone"
                if e.errno in (errno.ECONNRESET, errno.ENOTCONN):
                    return "peer disconnected"  # a BESS client
                raise
            n = len(buf)
            if n <= header:
                if n == 0:
                    return "peer disconnected"  # a BESS client left (a tap never reads 0)
                break
            count += 1
            octets += n - header
            view = memoryview(buf)
            # virtio-net header: NEEDS_CSUM/DATA_VALID frames carry no checksum to verify; a UDP
            # GSO super-frame says its datagram size.
            csum_done, gso_size = False, 0
            if header:
                csum_done = bool(buf[0] & (vnet.NEEDS_CSUM | vnet.DATA_VALID))
                if buf[1] == vnet.GSO_UDP_L4:
                    gso_size = buf[4] | buf[5] << 8
            try:
                if faults is None:
                    receive(view[header:n], now, csum_done, gso_size)
                else:
                    for frame, verifiable in faults.apply(bytes(view[header:n]), not csum_done):
                        receive(frame, now, not verifiable, gso_size)
            except Exception:
                # The stack raises nothing but on a bug of ours (the fuzzers hunt them). One
                # guest's bad frame must not end every other flow with the daemon: that frame is
                # lost, the traceback logged for a report, and the loop goes on (free when
                # nothing is raised, as every try is in Python 3.11).
                self._stack_raised()
        if faults is not None:
            for frame, verifiable in faults.flush():
                receive(frame, now, not verifiable, 0)
        self.frames_in += count
        self.bytes_in += octets
        return None

    def _stack_raised(self) -> None:
        self.bugs += 1
        if self.bugs <= BUG_REPORTS:
            log(
                f"BUG: a guest frame made the stack raise; frame dropped:\n{traceback.format_exc()}"
            )

    def write(self, frames: list[list[Buffer]]) -> None:
        """One ``writev`` a frame, virtio-net header first when the tap has one."""
        fd = self.fd
        if fd < 0:
            return  # no BESS client at the moment: dropped, as on a link that is down
        if self.faults_out is not None:
            frames = self._faulty(frames)
        count = octets = 0
        for parts in frames:
            try:
                octets += os.writev(fd, parts)
            except (BlockingIOError, InterruptedError):
                break  # the guest's queue is full: drop, as a congested link would
            except OSError:
                continue  # e.g. EINVAL for a frame the tap refuses: that frame only
            count += 1
        self.frames_out += count
        self.bytes_out += octets - count * self.header

    def _faulty(self, frames: list[list[Buffer]]) -> list[list[Buffer]]:
        """Frames toward the guest through the fault injector (the virtio-net header travels
        with its frame, so a reordered frame keeps its own offload request)."""
        assert self.faults_out is not None
        size = self.header
        released: list[tuple[bytes, bool]] = []
        for parts in frames:
            frame = b"".join(bytes(p) for p in parts)
            verifiable = not (size and frame[0] & vnet.NEEDS_CSUM)
            released.extend(self.faults_out.apply(frame, verifiable))
        released.extend(self.faults_out.flush())
        return [[frame[:size], frame[size:]] if size else [frame] for frame, _ in released]
