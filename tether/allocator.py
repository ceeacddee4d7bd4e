"""The C allocator's settings for processes that allocate and free megabytes per second: the
agent's (keep freed memory for reuse) and the collector's (give large blocks back).

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
    return _mallopt({M_MMAP_THRESHOLD: MMAP_THRESHOLD_BYTES, M_TRIM_THRESHOLD: TRIM_THRESHOLD_BYTES})


# The collector's blocks above this (bulk bodies, fetched record batches, the lists of a delivery)
# come from their own mmap and go back to the kernel when freed.
COLLECTOR_MMAP_THRESHOLD_BYTES = 256 * 1024
COLLECTOR_TRIM_THRESHOLD_BYTES = 4 * 1024 * 1024


def return_large_blocks() -> bool:
    """The collector's settings, the agent's reverse: its large blocks live as long as a delivery
    (a bulk body, a fetch), a few per thousand documents, while small objects that outlive them
    (held traces, the recent-trace cache) are allocated between. With glibc's adaptive threshold
    those blocks come from the heap once one has been freed, and the small objects pin the pages
    around them (11-35 MB more peak RSS in the collector benchmark). A fixed threshold keeps them
    out of the heap, at the cost of faulting their pages in again: a few hundred page faults per
    bulk request. False where this is not glibc and nothing changed."""
    return _mallopt(
        {M_MMAP_THRESHOLD: COLLECTOR_MMAP_THRESHOLD_BYTES, M_TRIM_THRESHOLD: COLLECTOR_TRIM_THRESHOLD_BYTES}
    )


def _mallopt(settings: dict[int, int]) -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    applied = all([bool(mallopt(parameter, value)) for parameter, value in settings.items()])
    if not applied:
        log.info("allocator settings not applied: this C library does not take them")
    return applied
