"""tether.allocator: freed memory is reused instead of being faulted in again."""

from __future__ import annotations

import subprocess
import sys
import textwrap

CHURN = textwrap.dedent(
    """
    import resource, sys
    from tether.allocator import keep_freed_memory

    if sys.argv[1] == "tuned":
        assert keep_freed_memory()

    def churn():  # the agent's pattern: a chunk's requests allocated together, then freed
        for _ in range(30):
            parts = [bytes(420_000) for _ in range(8)]
            del parts

    churn()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    churn()
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    """
)


def page_faults(mode: str) -> int:
    result = subprocess.run(
        [sys.executable, "-c", CHURN, mode], capture_output=True, text=True, check=True, timeout=60
    )
    return int(result.stdout)


def test_freed_memory_is_reused_without_page_faults() -> None:
    plain, tuned = page_faults("plain"), page_faults("tuned")
    # glibc's defaults give part of each round's 3.4 MB back and fault it in again (~240 pages
    # a round on the development machine)
    assert plain > 30 * 100
    assert tuned < plain / 20


MMAPPED = textwrap.dedent(
    """
    import ctypes, sys
    from tether.allocator import return_large_blocks

    if sys.argv[1] == "tuned":
        assert return_large_blocks()

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
            "fordblks", "keepcost")]

    mallinfo2 = ctypes.CDLL(None).mallinfo2
    mallinfo2.restype = MallInfo2
    # The collector's pattern: a bulk body is freed (glibc's adaptive threshold then serves blocks
    # of its size from the heap, where objects allocated between them can pin their pages), then
    # more bodies and fetches are allocated.
    del bytearray(b"x" * 1_000_000)[:]
    large = [b"x" * 1_000_000 for _ in range(40)]
    print(mallinfo2().hblkhd // 1_000_000)
    """
)


def mmapped_mb(mode: str) -> int:
    result = subprocess.run(
        [sys.executable, "-c", MMAPPED, mode], capture_output=True, text=True, check=True, timeout=60
    )
    return int(result.stdout)


def test_the_collectors_large_blocks_are_mapped_apart_and_returned_when_freed() -> None:
    plain, tuned = mmapped_mb("plain"), mmapped_mb("tuned")
    assert tuned >= 40, (plain, tuned)  # each in its own mapping, unmapped when freed
    assert plain < 10, (plain, tuned)  # glibc's defaults: from the heap
