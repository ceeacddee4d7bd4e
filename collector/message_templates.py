"""Rendering a message template (messagetemplates.org; Serilog's CLEF `@mt`) with the line's own
properties, as Serilog renders it, so the message is searchable as text.

Holes are `{Name}`, `{@Name}` / `{$Name}` (capture operators), `{0}` (positional), each with an
optional `,alignment` and `:format`; `{{` and `}}` are literal braces. A string renders in double
quotes (`:l` renders it literally), null as `null`, true/false as `True`/`False`, an array as
`[a, b]` and an object as `{ K: v }` (with its `$type` in front). A hole with a format takes its
text from CLEF's `@r` (the renderings of the formatted holes, in order). A hole without a property,
or text that is no valid hole, is kept as written.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

MAX_ALIGNMENT = 1000
_HOLE = re.compile(r"\{([@$]?)([A-Za-z0-9_]+)(,-?[0-9]+)?(:[^{}]*)?\}")


def render_template(template: str, properties: dict[str, Any]) -> str:
    renderings = properties.get("@r")
    formatted = iter(renderings if isinstance(renderings, list) else ())
    out: list[str] = []
    at = 0
    while at < len(template):
        char = template[at]
        if char in "{}" and template.startswith(char * 2, at):
            out.append(char)
            at += 2
            continue
        hole = _HOLE.match(template, at) if char == "{" else None
        if hole is None:
            out.append(char)
            at += 1
            continue
        at = hole.end()
        name, alignment, format_ = hole.group(2), hole.group(3), hole.group(4)
        rendering = next(formatted, None) if format_ else None
        if isinstance(rendering, str):
            text = rendering
        elif name in properties:
            text = _render(properties[name], literal=format_ == ":l")
        else:
            out.append(hole.group(0))
            continue
        out.append(_align(text, alignment))
    return "".join(out)


def _render(value: Any, *, literal: bool = False) -> str:
    if isinstance(value, str):
        return value if literal else '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, list):
        return "[" + ", ".join(_render(item) for item in value) + "]"
    if isinstance(value, dict):
        type_name = value.get("$type")
        fields = ", ".join(f"{k}: {_render(v)}" for k, v in value.items() if k != "$type")
        body = "{ " + fields + " }" if fields else "{ }"
        return f"{type_name} {body}" if isinstance(type_name, str) else body
    return orjson.dumps(value).decode()


def _align(text: str, alignment: str | None) -> str:
    """Padded to the alignment's width (negative: left-aligned), at most MAX_ALIGNMENT: a line must
    not make the collector build a string of any size it names."""
    if not alignment:
        return text
    width = max(-MAX_ALIGNMENT, min(int(alignment[1:]), MAX_ALIGNMENT))
    return text.ljust(-width) if width < 0 else text.rjust(width)
