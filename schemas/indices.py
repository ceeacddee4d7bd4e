"""The Elasticsearch index layout: templates (elasticsearch/*.json), daily indices, read aliases.

Indices are named `<alias>-YYYY.MM.DD` from the document's own @timestamp (UTC), never from the
time of indexing, so a replayed document lands in the same index under the same `_id`. This
layout needs neither ILM nor data streams, which the local integ-test distribution lacks.
"""

from __future__ import annotations

import time
from functools import cache
from importlib import resources
from typing import Any

import orjson

LOGS_ALIAS = "tether-logs"
SPANS_ALIAS = "tether-spans"
TRACES_ALIAS = "tether-traces"
DEADLETTER_ALIAS = "tether-deadletter"
TEMPLATE_NAMES = (LOGS_ALIAS, SPANS_ALIAS, TRACES_ALIAS, DEADLETTER_ALIAS)


@cache
def index_template(name: str) -> dict[str, Any]:
    """The composable index template body for `name` (one of TEMPLATE_NAMES)."""
    text = resources.files("tether.schemas").joinpath("elasticsearch", f"{name}.json").read_bytes()
    template: dict[str, Any] = orjson.loads(text)
    return template


NS_PER_DAY = 86_400 * 1_000_000_000


def daily_index(alias: str, timestamp_ns: int) -> str:
    """The concrete index for a document of `alias` whose @timestamp is `timestamp_ns`."""
    return _daily_index(alias, timestamp_ns // NS_PER_DAY)


@cache
def _daily_index(alias: str, day: int) -> str:
    return f"{alias}-{time.strftime('%Y.%m.%d', time.gmtime(day * 86_400))}"
