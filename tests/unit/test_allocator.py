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
