"""The shell: the only place with an event loop, fds, signals and the clock.

Start-up follows slirp4netns (contract §4.1): get the tap from inside the target, print the
banner, bind the API socket, then write the ready byte only once all of that holds. The loop
then waits, without a timeout and so without burning CPU, on:

* the tap (frames are read in batches until EAGAIN and fed to the sans-IO ``Stack``; what it
  answers is written back once per batch),
* the exit fd (any poll event ends the run with status 0, contract §4.3),
* SIGTERM/SIGINT (through a wake-up pipe: a clean exit 0 where slirp4netns dies by the signal),
* the target process (a pidfd in PID mode: we exit 0 when it is gone; slirp4netns idles forever),
* the API listener.
"""

from __future__ import annotations

import errno
import os
import resource
import select
import signal
import socket
import stat
import sys
import time
from collections.abc import Callable

from pyslirp4netns.config import Config
from pyslirp4netns.core import events
from pyslirp4netns.core.api import Api
from pyslirp4netns.core.stack import Stack
from pyslirp4netns.shell.apiserver import ApiServer, Forwarding, Watch
from pyslirp4netns.shell.errors import StartupError, log
from pyslirp4netns.shell.faults import ENV as FAULTS_ENV
from pyslirp4netns.shell.faults import FaultInjector
from pyslirp4netns.shell.forwards import PortForwarding
from pyslirp4netns.shell.netns import (
    CLONE_NEWUSER,
    Tap,
    join_target,
    join_userns,
    tap_from_fd,
)
from pyslirp4netns.shell.resolv import ResolvConf
from pyslirp4netns.shell.streams import HostDatagrams, HostStreams
from pyslirp4netns.wire import vnet
from pyslirp4netns.wire.codec import Buffer

MIN_MTU = 68  # libslirp's IF_MTU_MIN
UNIX_PATH_MAX = 108
READ_SIZE = 65536 + 64  # a full 64 KiB GSO frame plus the virtio-net header


def fd_is_open(fd: int) -> bool:
    if fd < 0:
        return False
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def want_offload() -> bool:
    """PYSLIRP4NETNS_OFFLOAD=0 opens the tap exactly as slirp4netns does (no vnet header)."""
    return os.environ.get("PYSLIRP4NETNS_OFFLOAD", "1") != "0"


def banner(config: Config) -> str:
    """The stdout block slirp4netns prints once the tap is there (contract §4.5)."""
    lines = [
        "Starting slirp",
        f"* MTU:             {config.mtu}",
        f"* Network:         {config.network}",
        f"* Netmask:         {config.netmask}",
        f"* Gateway:         {config.gateway}",
        f"* DNS:             {config.dns}",
        f"* DHCP begin:      {config.dhcp_start}",
        f"* DHCP end:        {config.dhcp_end}",
        f"* Recommended IP:  {config.guest}",
    ]
    if config.api_socket is not None:
        lines.append(f"* API Socket:      {config.api_socket}")
    if config.outbound_addr is not None:
        lines.append(f"* Outbound IPv4:    {config.outbound_addr}")
    if config.outbound_addr6 is not None:
        lines.append(f"* Outbound IPv6:    {config.outbound_addr6}")
    if config.macaddress is not None:
        lines.append(f"* MAC address:     {':'.join(f'{b:02x}' for b in config.macaddress)}")
    if not config.disable_host_loopback:
        lines.append(
            f"WARNING: 127.0.0.1:* on the host is accessible as {config.gateway} "
            "(set --disable-host-loopback to prohibit connecting to 127.0.0.1:*)"
        )
    return "\n".join(lines) + "\n"


def do_slirp_failed(*lines: str) -> StartupError:
    """slirp4netns's tail of lines for a failure after the tap exists."""
    for line in lines:
        log(line)
    log("do_slirp is exiting")
    log("do_slirp failed")
    return StartupError("parent failed")


class ApiSocket:
    """The listening unix socket at --api-socket; the file is ours to remove at exit."""

    # A deep backlog: a client whose connect() finds it full gets EAGAIN (Go's dialer gives up
    # on that), and bursts of clients are what the server is built for.
    BACKLOG = 1024

    def __init__(self, path: str) -> None:
        if len(path.encode()) >= UNIX_PATH_MAX:
            raise do_slirp_failed(f"the specified API socket path is too long (>= {UNIX_PATH_MAX})")
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            os.unlink(path)  # slirp4netns replaces whatever is there
        except FileNotFoundError:
            pass
        except OSError:
            pass  # bind reports the real problem
        try:
            self.sock.bind(path)
            self.sock.listen(self.BACKLOG)
        except OSError as e:
            self.sock.close()
            raise do_slirp_failed(
                f"api_bindlisten: bind: {os.strerror(e.errno or errno.EIO)}"
            ) from None
        self.sock.setblocking(False)
        st = os.stat(path)
        self._identity = (st.st_dev, st.st_ino)
        self.server: ApiServer | None = None

    def serve(
        self,
        config: Config,
        watch: Watch,
        unwatch: Callable[[int], None],
        forwarding: Forwarding | None = None,
    ) -> ApiServer:
        """Answer requests from the daemon's loop (apiserver.py); forwards go to ``forwarding``."""
        self.server = ApiServer(self.sock, Api(config), watch, unwatch, forwarding)
        self.server.start()
        return self.server

    def close(self) -> None:
        """Stop the server and its forwards, then close and remove the file, unless someone
        else has since put their own at the path."""
        if self.server is not None:
            self.server.close()
            self.server = None
        self.sock.close()
        try:
            st = os.stat(self.path)
            if stat.S_ISSOCK(st.st_mode) and (st.st_dev, st.st_ino) == self._identity:
                os.unlink(self.path)
        except OSError:
            pass


class Daemon:
    """Owns every fd of the running process and the loop that serves them."""

    def __init__(self, config: Config, tap: Tap, target_pidfd: int | None) -> None:
        self.config = config
        self.tap = tap
        self.api: ApiSocket | None = None
        self.forwarding: PortForwarding | None = None
        self.epoll = select.epoll()
        self.handlers: dict[int, Callable[[int], str | None]] = {}
        self.target_pidfd = target_pidfd
        now = time.monotonic()
        self.stack = Stack(config, vnet_hdr=tap.vnet_hdr, rng=_random_fraction, now=now)
        self.resolv = ResolvConf()
        self.stack.policy.nameservers = self.resolv.current(now)
        self.datagrams = HostDatagrams(self.stack, config, self._watch, self._unwatch)
        self.streams = HostStreams(
            self.stack, config, self._watch, self.epoll.modify, self._unwatch
        )
        self.faults = faults_from_env()
        # The other direction gets its own injector: same rates, its own random stream.
        self.faults_out = faults_from_env(seed_offset=1, quiet=True)
        self._header = vnet.SIZE if tap.vnet_hdr else 0
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._exit_now: str | None = None

    # -- start-up ------------------------------------------------------------------------
    def start(self, exit_fd_open: bool) -> None:
        config = self.config
        if config.api_socket is not None:
            self.api = ApiSocket(config.api_socket)
            self.forwarding = PortForwarding(
                self.stack, config, self.streams, self.datagrams, self._watch, self._unwatch
            )
            self.api.serve(config, self._watch, self._unwatch, self.forwarding)
        os.set_blocking(self.tap.fd, False)
        self._watch(self.tap.fd, select.EPOLLIN, self._on_tap)
        self._watch(self._wake_r, select.EPOLLIN, self._on_signal)
        for signum in (signal.SIGTERM, signal.SIGINT):
            if signal.getsignal(signum) is not signal.SIG_IGN:  # a caller's "ignore" stands
                signal.signal(signum, _note_signal)
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        if config.exit_fd >= 0:
            self._watch_exit_fd(config.exit_fd, exit_fd_open)
        if self.target_pidfd is not None:
            self._watch(self.target_pidfd, select.EPOLLIN, self._on_target_exit)
        if config.enable_sandbox:
            log("WARNING: --enable-sandbox is not implemented yet by pyslirp4netns; ignored")
        if config.enable_seccomp:
            log("WARNING: --enable-seccomp is not implemented yet by pyslirp4netns; ignored")

    def _watch(self, fd: int, events: int, handler: Callable[[int], str | None]) -> None:
        self.epoll.register(fd, events)
        self.handlers[fd] = handler

    def _unwatch(self, fd: int) -> None:
        self.handlers.pop(fd, None)
        try:
            self.epoll.unregister(fd)
        except OSError:
            pass

    def _watch_exit_fd(self, fd: int, was_open: bool) -> None:
        """poll(POLLHUP) semantics on epoll: any HUP/ERR fires; a closed fd is POLLNVAL."""
        if not was_open:
            self._exit_now = "exitfd event"  # POLLNVAL on the first poll
            return
        try:
            self.epoll.register(fd, 0)  # HUP and ERR are always reported; data never is
        except PermissionError:
            return  # a regular file or /dev/null: poll never fires on it either
        except OSError:
            self._exit_now = "exitfd event"
            return
        self.handlers[fd] = lambda events: "exitfd event"

    # -- the loop --------------------------------------------------------------------------
    def serve(self) -> int:
        reason = self._exit_now
        stack = self.stack
        server = self.api.server if self.api is not None else None
        while reason is None:
            # One timer for everything (principle 2): the stack's and the API server's.
            deadline = stack.next_deadline()
            api_deadline = server.next_deadline() if server is not None else None
            soonest = deadline
            if api_deadline is not None and (soonest is None or api_deadline < soonest):
                soonest = api_deadline
            timeout = -1.0 if soonest is None else max(0.0, soonest - time.monotonic())
            for fd, events_ in self.epoll.poll(timeout):
                handler = self.handlers.get(fd)
                if handler is not None:
                    reason = handler(events_) or reason
            if soonest is not None:
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    stack.on_timer(now)
                if server is not None and api_deadline is not None and now >= api_deadline:
                    server.on_timer(now)
            self._carry_out()
        log(reason)
        if os.environ.get("PYSLIRP4NETNS_STATS") == "1":
            log(f"frames dropped by reason: {dict(stack.dropped)}")
        log("do_slirp is exiting")
        return 0

    def _carry_out(self) -> None:
        """Do what the stack asked of the shell, then write its frames (principle 2)."""
        stack = self.stack
        stack.flush(time.monotonic())
        while stack.requests:
            requests, stack.requests = stack.requests, []
            for request in requests:
                if isinstance(request, _STREAM_REQUESTS):
                    self.streams.carry_out(request)
                elif isinstance(request, events.Log):
                    log(request.text)
                else:
                    self.datagrams.carry_out(request)
            stack.flush(time.monotonic())  # what the host side just reported
        self.streams.resume_reads()
        self._write_tap()

    def _on_tap(self, events_: int) -> str | None:
        # Drain until EAGAIN: one wake-up, many frames, then one round of writes.
        return self._read_tap()

    def _read_tap(self) -> str | None:
        header = self._header
        fd, stack, faults = self.tap.fd, self.stack, self.faults
        now = time.monotonic()
        stack.policy.nameservers = self.resolv.current(now)  # a stat at most once a second
        while True:
            try:
                # A fresh bytes per frame: immutable, so the stack may keep views of it (a
                # guest's payload goes to the host socket without being copied again).
                buf = os.read(fd, READ_SIZE)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as e:
                if e.errno == errno.EBADFD:  # tap detached (device deleted): nothing to serve
                    return "tap device is gone"
                raise
            n = len(buf)
            if n <= header:
                break
            view = memoryview(buf)
            # virtio-net header: NEEDS_CSUM/DATA_VALID frames carry no checksum to verify; a UDP
            # GSO super-frame says its datagram size.
            csum_done, gso_size = False, 0
            if header:
                csum_done = bool(buf[0] & (vnet.NEEDS_CSUM | vnet.DATA_VALID))
                if buf[1] == vnet.GSO_UDP_L4:
                    gso_size = buf[4] | buf[5] << 8
            if faults is None:
                stack.receive_frame(view[header:n], now, csum_done, gso_size)
            else:
                for frame, verifiable in faults.apply(bytes(view[header:n]), not csum_done):
                    stack.receive_frame(frame, now, not verifiable, gso_size)
        if faults is not None:
            for frame, verifiable in faults.flush():
                stack.receive_frame(frame, now, not verifiable, 0)
        return None

    def _write_tap(self) -> None:
        out = self.stack.out
        if not out:
            return
        fd = self.tap.fd
        if self.faults_out is not None:
            out[:] = self._faulty(out)
        for parts in out:
            try:
                os.writev(fd, parts)
            except (BlockingIOError, InterruptedError):
                break  # the guest's queue is full: drop, as a congested link would
            except OSError:
                pass  # e.g. EINVAL for a frame the tap refuses: that frame only
        out.clear()

    def _faulty(self, out: list[list[Buffer]]) -> list[list[Buffer]]:
        """Frames toward the guest through the test-only fault injector (the virtio-net header
        travels with its frame, so a reordered frame keeps its own offload request)."""
        assert self.faults_out is not None
        size = vnet.SIZE if self.tap.vnet_hdr else 0
        result: list[list[Buffer]] = []
        released: list[tuple[bytes, bool]] = []
        for parts in out:
            frame = b"".join(bytes(p) for p in parts)
            verifiable = not (size and frame[0] & vnet.NEEDS_CSUM)
            released.extend(self.faults_out.apply(frame, verifiable))
        released.extend(self.faults_out.flush())
        for frame, _ in released:
            result.append([frame[:size], frame[size:]] if size else [frame])
        return result

    def _on_signal(self, events: int) -> str | None:
        try:
            data = os.read(self._wake_r, 64)
        except BlockingIOError:
            return None
        for signum in data:
            if signum in (signal.SIGTERM, signal.SIGINT):
                return f"{signal.Signals(signum).name} received"
        return None

    def _on_target_exit(self, events: int) -> str | None:
        return f"target process {self.config.pid} exited"

    def close(self) -> None:
        if self.api is not None:
            self.api.close()
            self.api = None
        signal.set_wakeup_fd(-1)
        self.datagrams.close()
        self.streams.close()
        self.epoll.close()
        for fd in (self._wake_r, self._wake_w, self.tap.fd, self.target_pidfd):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass


def faults_from_env(seed_offset: int = 0, quiet: bool = False) -> FaultInjector | None:
    """The test-only fault injector, when PYSLIRP4NETNS_FAULTS asks for one."""
    spec = os.environ.get(FAULTS_ENV)
    if not spec:
        return None
    try:
        injector = FaultInjector.from_spec(spec)
    except ValueError as e:
        raise StartupError(str(e)) from None
    if seed_offset:
        injector.random.seed(injector.random.random() + seed_offset)
    if not quiet:
        log(f"WARNING: fault injection is on, both directions ({injector})")
    return injector


_STREAM_REQUESTS = (
    events.StreamWrite,
    events.StreamConnect,
    events.StreamShutdown,
    events.StreamClose,
)


def raise_fd_limit() -> None:
    """Every guest connection holds a host socket: take the whole hard limit of open files
    (the soft limit is often 1024, which a busy container exceeds)."""
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (OSError, ValueError):
        pass


def _random_fraction() -> float:
    """Uniform in [0, 1) from the OS: the stack's only randomness (RA timing) comes from here."""
    return int.from_bytes(os.urandom(4), "big") / 2**32


def _note_signal(signum: int, frame: object) -> None:
    """The wake-up fd carries the signal number to the loop; nothing to do here."""


def write_ready(fd: int) -> None:
    """Exactly b"1", then close (contract §4.2). A bad fd fails silently, as in slirp4netns."""
    try:
        os.write(fd, b"1")
    except OSError:
        pass
    try:
        os.close(fd)
    except OSError:
        pass


def open_target_pidfd(config: Config) -> int | None:
    """A pidfd for the target, taken before joining, so that a recycled PID can't fool us."""
    if config.pid is None or config.path_mode:
        return None
    try:
        return os.pidfd_open(config.pid)
    except OSError:
        return None  # gone already (the join will say so) or no pidfd support


def become_userns_root(config: Config) -> None:
    """slirp4netns's sandbox preamble for a rootless caller (contract §4.1 step 5).

    In PID mode the process joins the target's user namespace (we are single-threaded here: the
    join thread, if any, has ended), then takes uid/gid 0 there. Path mode joins nothing, so
    the setegid fails exactly as in slirp4netns.
    """
    if not config.path_mode and config.pid is not None:
        join_userns(f"/proc/{config.pid}/ns/user", CLONE_NEWUSER)
    for name, call in (("setegid(0)", os.setegid), ("seteuid(0)", os.seteuid)):
        try:
            call(0)
        except OSError:
            log(name)  # slirp4netns prints the bare call, no strerror
            raise StartupError("parent failed") from None


def run(config: Config) -> int:
    """Start, serve until told to stop, return the exit status (0 clean, 1 start-up failure)."""
    try:
        return _run(config)
    except StartupError as e:
        log(str(e))
        return 1


def _run(config: Config) -> int:
    if config.target_type == "bess":
        raise StartupError("--target-type=bess is not supported by pyslirp4netns")
    # Note which inherited fds are open before we open any of our own: a closed --exit-fd means
    # "exit now" (POLLNVAL) and a closed --ready-fd is skipped, whatever number our fds get.
    exit_fd_open = fd_is_open(config.exit_fd)
    ready_fd_open = fd_is_open(config.ready_fd)
    raise_fd_limit()
    target_pidfd = open_target_pidfd(config)
    if config.tapfd is not None:
        tap, note = tap_from_fd(config.tapfd), None
    else:
        tap, note = join_target(config, want_offload())
    if note:
        log(note)
    if config.mtu < MIN_MTU:  # -c already failed in the kernel; this is libslirp's own check
        log(f"slirp_new: MTU {config.mtu} is below the minimum of {MIN_MTU}")
        raise do_slirp_failed("slirp_new failed", "create_slirp failed")
    sys.stdout.write(banner(config))
    sys.stdout.flush()
    if config.enable_sandbox and os.geteuid() != 0:
        become_userns_root(config)
    daemon = Daemon(config, tap, target_pidfd)
    try:
        daemon.start(exit_fd_open)
        if ready_fd_open:
            write_ready(config.ready_fd)
        return daemon.serve()
    finally:
        daemon.close()
