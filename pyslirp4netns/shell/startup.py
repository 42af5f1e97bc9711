"""Start-up, in slirp4netns's order (contract §4.1), up to the loop.

Check the inherited fds, fork the child that joins the target and opens the tap
(``netns.start_join``), and meanwhile import the data plane: the child's pyroute2 and netlink
work and the parent's imports run side by side, and the daemon process never loads pyroute2.
Then print the banner, take uid 0 in the user namespace for a rootless sandbox, start the
daemon (API socket, sandbox, seccomp) and write the ready byte once all of that holds.

This module imports nothing heavy at the top: what the child needs (``netns``, ``tap``) and the
standard library only.
"""

from __future__ import annotations

import os
import resource
import sys

from pyslirp4netns.config import Config
from pyslirp4netns.shell.errors import StartupError, do_slirp_failed, log
from pyslirp4netns.shell.netns import CLONE_NEWUSER, join_userns, start_join, userns_path
from pyslirp4netns.shell.tap import tap_from_fd

MIN_MTU = 68  # libslirp's IF_MTU_MIN


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


def raise_fd_limit() -> None:
    """Every guest connection holds a host socket: take the whole hard limit of open files
    (the soft limit is often 1024, which a busy container exceeds)."""
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (OSError, ValueError):
        pass


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

    The process joins the target's user namespace (we are single-threaded here: the join
    thread, if any, has ended), then takes uid/gid 0 there. That is the PID's, or the one
    ``--userns-path`` names (slirp4netns joins none in path mode, so its setegid fails there).
    """
    path = userns_path(config) if config.pid is not None or config.userns_path else None
    if path is not None:
        join_userns(path, CLONE_NEWUSER)
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
    # Note which inherited fds are open before we open any of our own: a closed --exit-fd means
    # "exit now" (POLLNVAL) and a closed --ready-fd is skipped, whatever number our fds get.
    exit_fd_open = fd_is_open(config.exit_fd)
    ready_fd_open = fd_is_open(config.ready_fd)
    raise_fd_limit()
    target_pidfd = open_target_pidfd(config)
    joining = None
    if config.target_type != "bess" and config.tapfd is None:
        joining = start_join(config, want_offload())  # runs while we import the data plane
    try:
        from pyslirp4netns.shell.bess import BessListener
        from pyslirp4netns.shell.daemon import Daemon
    except BaseException:
        if joining is not None:
            joining.abandon()
        raise
    bess = None
    if joining is not None:
        tap, note = joining.finish()
    elif config.target_type == "bess":
        bess = BessListener(config.target)
        tap, note = bess.first_client(), None
    else:
        assert config.tapfd is not None
        tap, note = tap_from_fd(config.tapfd), None
    if note:
        log(note)
    if config.mtu < MIN_MTU:  # -c already failed in the kernel; this is libslirp's own check
        log(f"slirp_new: MTU {config.mtu} is below the minimum of {MIN_MTU}")
        raise do_slirp_failed("slirp_new failed", "create_slirp failed")
    sys.stdout.write(banner(config))
    sys.stdout.flush()
    if config.enable_sandbox and os.geteuid() != 0:
        become_userns_root(config)
    daemon = Daemon(config, tap, target_pidfd, bess)
    try:
        daemon.start(exit_fd_open)
        if ready_fd_open:
            write_ready(config.ready_fd)
        return daemon.serve()
    finally:
        daemon.close()
