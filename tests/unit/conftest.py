"""Fixtures shared by the in-process tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.unit.otlp_receivers import Receivers, receivers


@pytest.fixture
async def otlp(tmp_path: Path) -> AsyncIterator[Receivers]:
    """Both OTLP receivers on free ports, over a real Delivery and a fake Kafka sink."""
    async with receivers(tmp_path) as running:
        yield running
