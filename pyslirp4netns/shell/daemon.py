"""The shell: the only place with an event loop, fds, signals and the clock.

``startup`` gets the tap and builds the ``Daemon``; ``start`` binds the API socket, enters the
sandbox and loads the seccomp filter when asked, before the ready byte. The loop
then waits, without a timeout and so without burning CPU, on:

* the tap, or with ``--target-type=bess`` the connected client (frames are read in batches
  until EAGAIN and fed to the sans-IO ``Stack``; what it answers is written back once per batch),
* the exit fd (any poll event ends the run with status 0, contract §4.3),
* SIGTERM/SIGINT (through a wake-up pipe: a clean exit 0 where slirp4netns dies by the signal),
  and SIGUSR1 (our extension: the get_stats counters as one JSON line on stderr),
* the target process (a pidfd in PID mode: we exit 0 when it is gone; slirp4netns idles forever),
* the API listener.
"""

from __future__ import annotations

import os
import resource
import signal
import time
from collections import Counter

from pyslirp4netns.config import Config
from pyslirp4netns.core import events, stats
from pyslirp4netns.core.stack import Stack
from pyslirp4netns.shell import heap, sandbox, seccomp
from pyslirp4netns.shell.apiserver import ApiSocket
from pyslirp4netns.shell.bess import BessListener
from pyslirp4netns.shell.datagrams import HostDatagrams
from pyslirp4netns.shell.errors import StartupError, log
from pyslirp4netns.shell.faults import ENV as FAULTS_ENV
from pyslirp4netns.shell.faults import TEST_SYSCALL_ENV, FaultInjector, forbidden_call
from pyslirp4netns.shell.forwards import PortForwarding
from pyslirp4netns.shell.observe import ObservedTapPort
from pyslirp4netns.shell.pcap import PcapWriter
from pyslirp4netns.shell.reactor import EPOLLERR, EPOLLHUP, EPOLLIN, Reactor
from pyslirp4netns.shell.resolv import ResolvConf
from pyslirp4netns.shell.splice import SYSCALLS as SPLICE_SYSCALLS
from pyslirp4netns.shell.splice import Splicer
from pyslirp4netns.shell.streams import HostStreams
from pyslirp4netns.shell.tap import STACK_RAISED, Tap, TapPort


class Daemon:
    """Owns every fd of the running process and the loop that serves them."""

    def __init__(
        self,
        config: Config,
        tap: Tap,
        target_pidfd: int | None,
        bess: BessListener | None = None,
    ) -> None:
        self.config = config
        self.tap = tap
        self.bess = bess  # --target-type=bess: "tap" is its current client
        self.api: ApiSocket | None = None
        self.forwarding: PortForwarding | None = None
        self.splicer: Splicer | None = None  # --port-forward-mode=splice
        self.reactor = Reactor()
        self.target_pidfd = target_pidfd
        now = time.monotonic()
        self.stack = Stack(config, vnet_hdr=tap.vnet_hdr, rng=_random_fraction, now=now)
        self.resolv = ResolvConf()
        self.stack.set_nameservers(self.resolv.current(now))
        self.datagrams = HostDatagrams(self.stack.datagrams, config, self.reactor)
        self.streams = HostStreams(self.stack.streams, config, self.reactor)
        # Each direction gets its own injector: same rates, its own random stream.
        faults = faults_from_env(), faults_from_env(seed_offset=1, quiet=True)
        self.observed: ObservedTapPort | None = None
        if config.pcap is None and not config.stats and not config.debug:
            self.port = TapPort(tap, *faults)
        else:  # only these options pay for per-frame counting and capture (shell/observe.py)
            self.port = self.observed = ObservedTapPort(tap, *faults, pcap=_open_pcap(config))
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._exit_now: str | None = None

    # -- start-up ------------------------------------------------------------------------
    def start(self, exit_fd_open: bool) -> None:
        config, reactor = self.config, self.reactor
        heap.keep_freed_memory()
        if config.api_socket is not None:
            if config.port_forward_mode == "splice":  # forks shell/splice.py's namespace helper
                self.splicer = Splicer(config, reactor)
            self.api = ApiSocket(config.api_socket)
            self.forwarding = PortForwarding(
                self.stack, config, self.streams, self.datagrams, reactor.watch, reactor.unwatch
            )
            self.forwarding.splicer = self.splicer
            self.api.serve(
                config, reactor.watch, reactor.unwatch, self.forwarding, self._stats_json
            )
        os.set_blocking(self.tap.fd, False)
        reactor.watch(self.tap.fd, EPOLLIN, self._on_tap)
        reactor.watch(self._wake_r, EPOLLIN, self._on_signal)
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
            if signal.getsignal(signum) is not signal.SIG_IGN:  # a caller's "ignore" stands
                signal.signal(signum, _note_signal)
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        if config.exit_fd >= 0:
            self._watch_exit_fd(config.exit_fd, exit_fd_open)
        if self.target_pidfd is not None:
            reactor.watch(self.target_pidfd, EPOLLIN, self._on_target_exit)
        if TEST_SYSCALL_ENV in os.environ:
            signal.signal(signal.SIGUSR2, _note_signal)
        # Contract §4.1 step 6.4: every fd is open, so give up what is no longer needed.
        extra = SPLICE_SYSCALLS if self.splicer is not None else ()
        syscall_filter = seccomp.prepare(extra) if config.enable_seccomp else None
        if config.enable_sandbox:
            sandbox.enter()
        if syscall_filter is not None:
            seccomp.install(syscall_filter)

    def _watch_exit_fd(self, fd: int, was_open: bool) -> None:
        """poll(POLLHUP) semantics on epoll: any HUP/ERR fires; a closed fd is POLLNVAL."""
        if not was_open:
            self._exit_now = "exitfd event"  # POLLNVAL on the first poll
            return
        try:
            self.reactor.watch(fd, 0, lambda events: "exitfd event")  # HUP and ERR only
        except PermissionError:
            return  # a regular file or /dev/null: poll never fires on it either
        except OSError:
            self._exit_now = "exitfd event"

    # -- the loop --------------------------------------------------------------------------
    def serve(self) -> int:
        reason = self._exit_now
        stack, reactor = self.stack, self.reactor
        server = self.api.server if self.api is not None else None
        trim_owed, last_event = False, 0.0  # heap.trim() once the loop has been idle a while
        while reason is None:
            # One timer for everything: the stack's, the API server's and the heap's.
            deadline = stack.next_deadline()
            api_deadline = server.next_deadline() if server is not None else None
            soonest = deadline
            if api_deadline is not None and (soonest is None or api_deadline < soonest):
                soonest = api_deadline
            if trim_owed:
                trim_at = last_event + heap.IDLE_SECONDS
                if soonest is None or trim_at < soonest:
                    soonest = trim_at
            timeout = -1.0 if soonest is None else max(0.0, soonest - time.monotonic())
            reason = reactor.poll(timeout)
            if reactor.woke:
                trim_owed, last_event = True, time.monotonic()
            elif trim_owed and time.monotonic() - last_event >= heap.IDLE_SECONDS:
                heap.trim()
                trim_owed = False
                if self.observed is not None:
                    self.observed.idle()  # the pcap buffer goes to the file
            if soonest is not None:
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    stack.on_timer(now)
                    # Timers close connections too (TIME-WAIT, give-ups): trim after those
                    # as well, once a second has passed without an fd event.
                    trim_owed = True
                if server is not None and api_deadline is not None and now >= api_deadline:
                    server.on_timer(now)
            self._carry_out()
        log(reason)
        if os.environ.get("PYSLIRP4NETNS_STATS") == "1":
            log(f"frames dropped by reason: {dict(stack.dropped)}")
        log("do_slirp is exiting")
        return 0

    def _carry_out(self) -> None:
        """After every input: carry out what the stack asked (which may bring more facts, so
        until it asks nothing), then write its frames."""
        stack, streams, datagrams = self.stack, self.streams, self.datagrams
        stack.flush(time.monotonic())
        while requests := stack.take_requests():
            for request in requests:
                match request:
                    case events.StreamWrite():
                        streams.write(request)
                    case events.DatagramSend():
                        datagrams.send(request)
                    case events.StreamConnect():
                        streams.connect(request)
                    case events.StreamPause():
                        streams.pause(request)
                    case events.StreamResume():
                        streams.resume(request)
                    case events.StreamShutdown():
                        streams.shutdown(request)
                    case events.StreamClose():
                        streams.close_flow(request)
                    case events.DatagramOpen():
                        datagrams.open(request)
                    case events.DatagramClose():
                        datagrams.close_flow(request.flow)
                    case events.Log():
                        log(request.text)
            stack.flush(time.monotonic())  # what the host side just reported
        frames = stack.take_frames()
        if frames:
            self.port.write(frames)

    def _on_tap(self, events_: int) -> str | None:
        # Drain until EAGAIN: one wake-up, many frames, then one round of writes.
        now = time.monotonic()
        self.stack.set_nameservers(self.resolv.current(now))  # a stat at most once a second
        reason = self.port.read(self.stack, now)
        if self.bess is not None and (reason is not None or events_ & (EPOLLHUP | EPOLLERR)):
            self._bess_client_gone()
            return None
        return reason

    def _bess_client_gone(self) -> None:
        """The BESS client left: wait for the next one (frames for the guest are dropped)."""
        assert self.bess is not None
        fd, self.port.fd = self.port.fd, -1
        self.reactor.unwatch(fd)
        os.close(fd)
        log("BESS client disconnected; waiting for the next one")
        self.reactor.watch(self.bess.fd, EPOLLIN, self._on_bess_client)

    def _on_bess_client(self, events_: int) -> str | None:
        assert self.bess is not None
        fd = self.bess.accept()
        if fd is not None:
            self.reactor.unwatch(self.bess.fd)
            self.port.fd = fd
            self.reactor.watch(fd, EPOLLIN, self._on_tap)
            log(f"BESS client connected (fd {fd})")
        return None

    def _on_signal(self, events: int) -> str | None:
        try:
            data = os.read(self._wake_r, 64)
        except BlockingIOError:
            return None
        for signum in data:
            if signum in (signal.SIGTERM, signal.SIGINT):
                return f"{signal.Signals(signum).name} received"
            if signum == signal.SIGUSR1:
                log(self._stats_json().decode())
                if self.observed is not None:
                    self.observed.idle()
            if signum == signal.SIGUSR2:
                forbidden_call(os.environ.get(TEST_SYSCALL_ENV, ""))
        return None

    def counters(self) -> dict[str, object]:
        """get_stats and SIGUSR1 (the man page's STATISTICS): what is counted, as of now."""
        port, stack, datagrams = self.port, self.stack, self.stack.datagrams
        server = self.api.server if self.api is not None else None
        totals = {
            "from_guest": {"frames": port.frames_in, "bytes": port.bytes_in},
            "to_guest": {"frames": port.frames_out, "bytes": port.bytes_out},
        }
        result: dict[str, object] = {
            "frames": totals,
            "protocols": self.observed.counts.snapshot() if self.observed is not None else None,
            "drops": stats.drops(stack.dropped + Counter({STACK_RAISED: port.bugs})),
            "flows": {
                "tcp": len(stack.streams.by_id),
                "udp": len(datagrams.udp_flows) + len(datagrams.dns_flows),
                "ping": len(datagrams.ping_flows),
            },
            "api_requests": server.requests if server is not None else 0,
            "peak_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        }
        pcap = self.observed.pcap if self.observed is not None else None
        if pcap is not None:
            result["pcap"] = {"records": pcap.records, "bytes": pcap.size, "stopped": pcap.stopped}
        return result

    def _stats_json(self) -> bytes:
        return stats.render(self.counters()).encode()

    def _on_target_exit(self, events: int) -> str | None:
        return f"target process {self.config.pid} exited"

    def close(self) -> None:
        if self.api is not None:
            self.api.close()
            self.api = None
        if self.splicer is not None:
            self.splicer.close()
        signal.set_wakeup_fd(-1)
        self.datagrams.close()
        self.streams.close()
        self.reactor.close()
        if self.bess is not None:
            self.bess.close()
        if self.observed is not None:
            self.observed.close()  # the capture's last records
        tap_fd = self.port.fd if self.port.fd >= 0 else None
        for fd in (self._wake_r, self._wake_w, tap_fd, self.target_pidfd):
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


def _open_pcap(config: Config) -> PcapWriter | None:
    """--pcap: created now, before the sandbox and seccomp (its fd outlives pivot_root)."""
    if config.pcap is None:
        return None
    try:
        return PcapWriter.open(config.pcap, config.pcap_max_size, log)
    except OSError as e:
        raise StartupError(f"pcap: open {config.pcap}: {os.strerror(e.errno or 5)}") from None


def _random_fraction() -> float:
    """Uniform in [0, 1) from the OS: the stack's only randomness (RA timing) comes from here."""
    return int.from_bytes(os.urandom(4), "big") / 2**32


def _note_signal(signum: int, frame: object) -> None:
    """The wake-up fd carries the signal number to the loop; nothing to do here."""
