"""``--enable-seccomp``: a syscall allow-list enforced by the kernel, via libseccomp.

slirp4netns (contract §6.3) allows everything but a deny-list of 31 syscalls. We print its
exact line (on stdout, after the banner, as it does) and are stricter: every syscall not in
``ALLOWED`` kills the process (``SECCOMP_RET_KILL_PROCESS``), so execve, ptrace, mount, setns,
unshare, bpf, keyctl and the rest are gone with its list. ``ALLOWED`` is what the running daemon
was seen to call (``strace`` attached to every filtered daemon of tests/integration and compat:
``tests/tools/syscalls.py``), plus harmless variants Python or glibc may pick and the calls of
the error and exit paths. Some are narrowed by argument:

* ``openat``/``open`` only without write, create, truncate or tmpfile flags (the resolv.conf
  watcher reads; nothing is ever written);
* ``socket`` only for AF_INET and AF_INET6 (host sockets): no AF_UNIX, AF_NETLINK or AF_PACKET
  (the API socket is listening already);
* ``ioctl`` only for the few requests Python's socket and fd code makes;
* ``kill``/``tgkill`` only toward ourselves (abort's own signal).

Anything else kills the process, arguments included. Unlike slirp4netns we add no secondary
architecture: a 32-bit (i386, x32) syscall number does not match the filter's architecture and
kills the process too, where slirp4netns lets it through its deny-list.
"""

from __future__ import annotations

import ctypes
import os
import socket
import sys

from pyslirp4netns.shell.errors import do_slirp_failed, log

# slirp4netns's deny-list and order (its stdout line lists them so; consumers may read it).
SLIRP4NETNS_BLOCKED = (
    "execve lookup_dcookie pidfd_getfd ptrace process_vm_readv process_vm_writev delete_module "
    "finit_module init_module chroot fsconfig fsmount fsopen fspick mount move_mount open_tree "
    "pivot_root umount umount2 open_by_handle_at execveat pidfd_open pidfd_send_signal prctl setns "
    "unshare kexec_file_load kexec_load reboot name_to_handle_at"
).split()

ALLOWED = (
    # the loop, the tap, host sockets and the API
    "epoll_wait epoll_pwait epoll_ctl read readv write writev recvfrom recvmsg recvmmsg sendto "
    "sendmsg sendmmsg accept accept4 connect bind listen shutdown getsockopt setsockopt "
    "getsockname getpeername close fcntl poll ppoll select pselect6 "
    # files: the resolv.conf watcher and the API socket's removal at exit
    "newfstatat fstat stat lstat statx lseek unlink unlinkat readlink readlinkat "
    # memory, time, signals, threads' futexes, exit
    "brk mmap munmap mremap madvise mprotect futex clock_gettime clock_nanosleep nanosleep "
    "gettimeofday rt_sigaction rt_sigprocmask rt_sigreturn sigaltstack restart_syscall getpid "
    "gettid getuid geteuid getgid getegid getrandom sched_yield sched_getaffinity getrusage "
    "exit exit_group"
).split()
NARROWED = ("openat", "open", "socket", "ioctl", "kill", "tgkill")

SCMP_ACT_KILL_PROCESS = 0x80000000
SCMP_ACT_ALLOW = 0x7FFF0000
SCMP_CMP_EQ = 4
SCMP_CMP_MASKED_EQ = 7
FIONREAD, FIONBIO, FIOCLEX, FIONCLEX, TCGETS = 0x541B, 0x5421, 0x5451, 0x5450, 0x5401
# O_TMPFILE without its O_DIRECTORY part: a directory may be opened for reading.
_TMPFILE = getattr(os, "O_TMPFILE", 0) & ~os.O_DIRECTORY
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND | _TMPFILE


class _ArgCmp(ctypes.Structure):
    _fields_ = (
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    )


class SeccompError(Exception):
    pass


def _load_library() -> ctypes.CDLL | None:
    # The soname first: find_library runs ldconfig in a subprocess, a few ms of start-up.
    try:
        lib = ctypes.CDLL("libseccomp.so.2")
    except OSError:
        from ctypes.util import find_library  # only now: it brings subprocess (1 MiB)

        name = find_library("seccomp")
        if name is None:
            return None
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            return None
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = (ctypes.c_uint32,)
    lib.seccomp_release.argtypes = (ctypes.c_void_p,)
    lib.seccomp_load.argtypes = (ctypes.c_void_p,)
    lib.seccomp_syscall_resolve_name.argtypes = (ctypes.c_char_p,)
    lib.seccomp_rule_add_array.argtypes = (
        ctypes.c_void_p,
        ctypes.c_uint32,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.POINTER(_ArgCmp),
    )
    return lib


class Filter:
    """One libseccomp context: rules in, ``load()`` once."""

    def __init__(self, lib: ctypes.CDLL, default: int) -> None:
        self.lib = lib
        self.ctx = lib.seccomp_init(default)
        if not self.ctx:
            raise SeccompError("seccomp_init() failed")
        self.unknown: list[str] = []

    def number(self, name: str) -> int | None:
        n: int = self.lib.seccomp_syscall_resolve_name(name.encode())
        return None if n < 0 else n

    def add(self, action: int, name: str, *cmps: tuple[int, int, int, int]) -> None:
        n = self.number(name)
        if n is None:
            self.unknown.append(name)
            return
        array = (_ArgCmp * max(1, len(cmps)))(*(_ArgCmp(*c) for c in cmps))
        rc = self.lib.seccomp_rule_add_array(self.ctx, action, n, len(cmps), array)
        if rc < 0:
            raise SeccompError(f"seccomp_rule_add({name}): {os.strerror(-rc)}")

    def load(self) -> None:
        rc = self.lib.seccomp_load(self.ctx)
        if rc < 0:
            raise SeccompError(f"seccomp: seccomp_load(): {os.strerror(-rc)}")

    def release(self) -> None:
        self.lib.seccomp_release(self.ctx)


def _rules(f: Filter, extra: tuple[str, ...] = ()) -> None:
    allow = SCMP_ACT_ALLOW
    for name in ALLOWED + list(extra):
        f.add(allow, name)
    f.add(allow, "open", (1, SCMP_CMP_MASKED_EQ, _WRITE_FLAGS, 0))
    f.add(allow, "openat", (2, SCMP_CMP_MASKED_EQ, _WRITE_FLAGS, 0))
    for family in (socket.AF_INET, socket.AF_INET6):
        f.add(allow, "socket", (0, SCMP_CMP_EQ, family, 0))
    for request in (FIONREAD, FIONBIO, FIOCLEX, FIONCLEX, TCGETS):
        f.add(allow, "ioctl", (1, SCMP_CMP_EQ, request, 0))
    pid = os.getpid()
    f.add(allow, "kill", (0, SCMP_CMP_EQ, pid, 0))
    f.add(allow, "tgkill", (0, SCMP_CMP_EQ, pid, 0))


def prepare(extra: tuple[str, ...] = ()) -> Filter:
    """The filter with every rule, not loaded yet: libseccomp must be found before
    ``--enable-sandbox`` hides the libraries. Fails with slirp4netns's lines. ``extra``: what
    an opt-in mode adds (``--port-forward-mode=splice``: ``splice.SYSCALLS``)."""
    lib = _load_library()
    if lib is None:
        log("seccomp: libseccomp is not available")
        raise do_slirp_failed("enable_seccomp failed")
    try:
        f = Filter(lib, SCMP_ACT_KILL_PROCESS)
    except SeccompError as e:
        log(str(e))
        raise do_slirp_failed("enable_seccomp failed") from None
    try:
        _rules(f, extra)
    except SeccompError as e:
        f.release()
        log(str(e))
        raise do_slirp_failed("enable_seccomp failed") from None
    return f


def install(f: Filter) -> None:
    """Load ``f`` (after the sandbox, as slirp4netns) and say what is blocked."""
    blocked = " ".join(SLIRP4NETNS_BLOCKED)
    sys.stdout.write(f"seccomp: The following syscalls are blocked: {blocked}\n")
    sys.stdout.flush()
    try:
        f.load()
    except SeccompError as e:
        log(str(e))
        raise do_slirp_failed("enable_seccomp failed") from None
    finally:
        f.release()
