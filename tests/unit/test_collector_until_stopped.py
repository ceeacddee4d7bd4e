from __future__ import annotations

import asyncio

import pytest

from tether.collector.until_stopped import until_stopped


async def test_work_that_finishes() -> None:
    async def work() -> None:
        await asyncio.sleep(0)

    assert await until_stopped(work(), asyncio.Event()) is True


async def test_work_that_fails_raises() -> None:
    async def work() -> None:
        raise RuntimeError("refused")

    with pytest.raises(RuntimeError, match="refused"):
        await until_stopped(work(), asyncio.Event())


async def test_stop_cancels_work_that_retries_forever() -> None:
    cancelled = asyncio.Event()

    async def retry_forever() -> None:
        try:
            await asyncio.Event().wait()  # like a retry loop that never succeeds
        except asyncio.CancelledError:
            cancelled.set()
            raise

    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(0.05, stop.set)
    assert await asyncio.wait_for(until_stopped(retry_forever(), stop), 5) is False
    assert cancelled.is_set()
