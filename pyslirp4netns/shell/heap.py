"""The C heap's policy: keep freed memory while traffic flows, give it back once the loop idles.

Every tap read allocates a fresh ~64 KiB bytes object (the core keeps views of it), and most
are freed within the same loop turn. glibc's default then shrinks the heap top with ``brk`` as
soon as more than 128 KiB lie free there, and grows it again on the next read: each round trip
costs page faults on fresh pages. Measured on g2h at MTU 1500 (2-CPU VM): about 20,000 page
faults per GB moved and a quarter of the daemon's CPU, against a few dozen with the heap kept.
So trimming and the dynamic mmap threshold are switched off at start-up, and ``trim()`` (called
by the loop after a second without events) returns what the run no longer uses, freed chunks in
the middle of the heap included (``malloc_trim`` madvises them away).

Without glibc (musl, or ctypes cannot find the symbols) both calls do nothing.
"""

from __future__ import annotations

import ctypes
import gc

M_TRIM_THRESHOLD = -1  # glibc <malloc.h>
M_MMAP_THRESHOLD = -3
TRIM_THRESHOLD = 256 << 20  # free memory kept at the heap top before glibc trims by itself
MMAP_THRESHOLD = 4 << 20  # larger blocks get their own mapping (a 256 KiB host read does not)
IDLE_SECONDS = 1.0  # the loop trims after this long without an event, once per busy spell


def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
        libc.mallopt.restype = ctypes.c_int
        libc.malloc_trim.argtypes = (ctypes.c_size_t,)
    except (OSError, AttributeError):
        return None
    return libc


_LIBC = _libc()


def keep_freed_memory() -> bool:
    """No automatic trimming and a fixed mmap threshold; False where that cannot be set."""
    if _LIBC is None:
        return False
    mmap_ok: int = _LIBC.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
    trim_ok: int = _LIBC.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    return mmap_ok == 1 and trim_ok == 1


def trim() -> None:
    """Free what only reference cycles still hold, then return every free page to the kernel.

    The collection first: a quiet loop allocates too little to trigger the cyclic collector,
    so after 10,000 connections closed their last cycles (about 30 MiB) stayed until the next
    busy spell. One full collection per idle spell costs a few milliseconds.
    """
    gc.collect()
    if _LIBC is not None:
        _LIBC.malloc_trim(0)
