"""The C allocator's settings for processes that allocate and free megabytes per second.

glibc serves large blocks (above a threshold that adapts up to the largest block freed) from
fresh `mmap`s and gives the top of its heap back to the kernel whenever more than twice that
threshold is free. The agent allocates and frees a few MB per file chunk (the chunk, one request
per partition, their compressed batches), so each chunk's memory was handed back and faulted in
again, zero-filled by the kernel, a measurable share of the agent's CPU (docs/performance-history.md has the
figures). Keeping freed memory for reuse costs no more resident memory than
the process's own peak, which its configuration bounds.
"""

from __future__ import annotations

import ctypes
import logging
import sys

log = logging.getLogger("tether.allocator")

# mallopt parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024  # glibc's maximum: blocks below it come from the heap
TRIM_THRESHOLD_BYTES = 64 * 1024 * 1024  # free memory kept at the top of the heap


def keep_freed_memory() -> bool:
    """Make glibc reuse freed memory instead of returning it; False where that is not glibc
    (musl's mallopt does nothing, other systems have none) and nothing changed."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    applied = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
    )
    if not applied:
        log.info("allocator settings not applied: this C library does not take them")
    return applied
