"""``--enable-sandbox``: an empty root with only /etc and /run, and no privilege but one.

As slirp4netns 1.2.1+ (contract §6.2), after the API socket is bound and before the ready byte:
a private mount namespace; a tiny tmpfs on /tmp holding ``etc``, ``run`` (read-only recursive
binds of the real ones) and ``old``; ``pivot_root`` into it and the old root detached; then
``PR_SET_NO_NEW_PRIVS`` and every capability dropped except ``CAP_NET_BIND_SERVICE`` (ambient,
bounding, effective, permitted, inheritable). A resolv.conf that resolves outside /etc and /run
is bound at its own path too, and failing to bind it is fatal.

Two differences from slirp4netns, both safer. Every mount we inherit is made a *slave* before
anything else, so nothing we mount or detach can propagate back into the caller's namespace
(slirp4netns makes only / private and /etc and /run slaves). And a failure to remount the
tmpfs read-only is fatal instead of ignored.

Python loads modules lazily, and after the pivot there is no /usr to load them from:
``preload()`` imports every module the daemon can still need first, and the tests exercise
every path after the pivot (DNS, DHCP, forwards added over the API, IPv6, ICMP errors, the
resolv.conf watcher, the exit paths).
"""

from __future__ import annotations

import ctypes
import errno
import importlib
import os
import pkgutil
import platform
from collections.abc import Callable
from pathlib import Path

import pyslirp4netns
from pyslirp4netns.shell.errors import do_slirp_failed, log

CLONE_NEWNS = 0x00020000
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_NOATIME = 0x400
MS_NODIRATIME = 0x800
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
MS_SLAVE = 0x80000
MS_RELATIME = 0x200000
MNT_DETACH = 0x2
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
CAP_NET_BIND_SERVICE = 10
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
# statvfs f_flag bits that a remount must carry over: a user namespace may not clear them.
_KEPT_FLAGS = (
    (os.ST_NOSUID, MS_NOSUID),
    (os.ST_NODEV, MS_NODEV),
    (os.ST_NOEXEC, MS_NOEXEC),
    (os.ST_NOATIME, MS_NOATIME),
    (os.ST_NODIRATIME, MS_NODIRATIME),
    (os.ST_RELATIME, MS_RELATIME),
)
# glibc has no pivot_root(); its syscall number per machine.
_SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "riscv64": 41, "ppc64le": 203, "s390x": 217}
ROOT = "/tmp"  # where the tmpfs goes, as slirp4netns; it must exist
KEPT_DIRS = ("/etc", "/run")
# Modules the daemon never needs once it runs (pyroute2 is for -c, before the sandbox).
_NOT_PRELOADED = {"pyslirp4netns.shell.configure", "pyslirp4netns.__main__"}

_libc = ctypes.CDLL(None, use_errno=True)


class _CapHeader(ctypes.Structure):
    _fields_ = (("version", ctypes.c_uint32), ("pid", ctypes.c_int))


class _CapData(ctypes.Structure):
    _fields_ = (
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    )


class SandboxError(Exception):
    """One failed step; ``str()`` is slirp4netns's line for it."""


def _check(result: int, what: str, with_errno: bool = False) -> None:
    """perror-style, or with ``(errno: N)`` appended as slirp4netns 1.2.1's bind errors."""
    if result != 0:
        err = ctypes.get_errno() or errno.EIO
        line = f"{what}: {os.strerror(err)}"
        raise SandboxError(f"{line} (errno: {err})" if with_errno else line)


def _mount(
    source: str | None,
    target: str,
    fstype: str | None,
    flags: int,
    what: str,
    data: str | None = None,
    with_errno: bool = False,
) -> None:
    result = _libc.mount(
        None if source is None else source.encode(),
        target.encode(),
        None if fstype is None else fstype.encode(),
        ctypes.c_ulong(flags),
        None if data is None else data.encode(),
    )
    _check(result, what, with_errno)


def preload() -> None:
    """Import every module of ours the running daemon may touch, while imports still work."""
    for info in pkgutil.walk_packages(pyslirp4netns.__path__, "pyslirp4netns."):
        if info.name not in _NOT_PRELOADED:
            importlib.import_module(info.name)


def resolv_outside() -> str | None:
    """resolv.conf's real path when it lies outside /etc and /run (it must be bound too)."""
    real = os.path.realpath("/etc/resolv.conf")
    if any(real == d or real.startswith(d + "/") for d in KEPT_DIRS):
        return None
    return real if os.path.exists(real) else None


def _os_step(call: Callable[[str], None], path: str, what: str) -> None:
    try:
        call(path)
    except OSError as e:
        raise SandboxError(f"{what}: {os.strerror(e.errno or errno.EIO)}") from None


def _kept_flags(path: str) -> int:
    f = os.statvfs(path).f_flag
    return sum(ms for st, ms in _KEPT_FLAGS if f & st)


def _bind_ro(source: str, target: str) -> None:
    """A recursive bind of ``source`` at ``target``, its top mount read-only."""
    what = f"cannot bind mount {source} to {target}"
    _mount(source, target, None, MS_BIND | MS_REC, what, with_errno=True)
    flags = MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC
    _mount(None, target, None, flags | _kept_flags(target), f"cannot remount ro {target}")


def _pivot_root(new: str, old: str) -> int:
    number = _SYS_PIVOT_ROOT.get(platform.machine())
    if number is None:
        ctypes.set_errno(errno.ENOSYS)
        return -1
    result: int = _libc.syscall(number, new.encode(), old.encode())
    return result


def _enter_empty_root() -> None:
    outside = resolv_outside()
    if outside is not None:
        log(
            f"sandbox: /etc/resolv.conf (-> {outside}) seems a symlink to a file outside "
            "{/etc, /run}, attempting to bind it as well."
        )
    _check(_libc.unshare(CLONE_NEWNS), "cannot unshare new mount namespace")
    # Slaves: mounts still arrive from the caller (a resolv.conf remounted by podman), and
    # nothing we do here reaches back (contract §6.2: the caller's submounts stay mounted).
    _mount(None, "/", None, MS_REC | MS_SLAVE, "cannot remount / private")
    tmpfs = MS_NOSUID | MS_NODEV | MS_NOEXEC
    _mount("tmpfs", ROOT, "tmpfs", tmpfs, f"cannot mount tmpfs on {ROOT}", "size=4k,mode=755")
    for d in (*KEPT_DIRS, "/old"):
        try:
            os.mkdir(ROOT + d, 0o755)
        except OSError as e:
            raise SandboxError(f"cannot mkdir {d}: {os.strerror(e.errno or errno.EIO)}") from None
    for d in KEPT_DIRS:
        _bind_ro(d, ROOT + d)
    if outside is not None:
        target = ROOT + outside
        try:
            os.makedirs(os.path.dirname(target), 0o755, exist_ok=True)
            Path(target).touch(0o644)
        except OSError as e:
            err = e.errno or errno.EIO
            raise SandboxError(f"cannot bind mount {outside}: {os.strerror(err)}") from None
        _bind_ro(outside, target)
    _os_step(os.chdir, ROOT, f"cannot chdir to {ROOT}")
    _check(_pivot_root(".", "old"), f"cannot pivot_root to {ROOT}")
    _os_step(os.chdir, "/", "cannot chdir to /")
    _check(_libc.umount2(b"/old", MNT_DETACH), "cannot umount /old")
    _os_step(os.rmdir, "/old", "cannot rmdir /old")
    _mount(None, "/", None, MS_REMOUNT | MS_RDONLY | tmpfs, "cannot remount ro /")


def _cap_last() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 63


def _drop_privileges(cap_last: int) -> None:
    _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)")
    _libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)  # EINVAL before Linux 4.3
    for cap in range(cap_last + 1):
        if cap != CAP_NET_BIND_SERVICE:
            _check(_libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0), f"prctl(PR_CAPBSET_DROP, {cap})")
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    keep = 1 << CAP_NET_BIND_SERVICE
    data = (_CapData * 2)(_CapData(keep, keep, keep), _CapData(0, 0, 0))
    _check(_libc.capset(ctypes.byref(header), data), "capset(0)")


def enter() -> None:
    """Everything above, or slirp4netns's failure lines and ``StartupError``."""
    preload()
    cap_last = _cap_last()  # /proc is gone after the pivot
    try:
        _enter_empty_root()
        _drop_privileges(cap_last)
    except SandboxError as e:
        raise do_slirp_failed(str(e), "create_sandbox failed") from None
