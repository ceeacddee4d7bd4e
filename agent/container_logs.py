"""Container log files as Kubernetes nodes hold them: their format, their records, their pod.

On a node, the container runtime writes what a container prints to stdout and stderr into one file
per container and restart, at the path the kubelet chose:
`/var/log/pods/<namespace>_<pod>_<uid>/<container>/<restart>.log`. Each physical line wraps a piece
of what the app printed:

- CRI (containerd, CRI-O): `<RFC 3339 time> <stdout|stderr> <P|F> <content>`; a line longer than
  the runtime's limit is cut into `P` (partial) lines ended by an `F` (full) one.
- Docker json-file: `{"log":"<content>\\n","stream":"stdout","time":"..."}`; a line longer than
  16 KiB is cut into entries whose `log` lacks the final "\\n".

This module is the reference of the unwrapping (the Rust fast path is native/fastlog/src/
container_log.rs, byte-identical, tests/unit/test_container_logs.py). Rules, shared:

- A file's format is detected once, from its first line (`detect_format`); "plain" files are read
  as today (agent/chunks.py).
- Physical lines split on \\n, as plain lines. A line that is not of the file's format is a record
  of its own, its whole text the content, with no stream.
- The pieces of one stream are joined up to the end piece, the other stream's lines may come
  between. The joined content is kept up to max_line_bytes; a longer one is cut there and flagged
  truncated, shipped at once, and the rest of its pieces are skipped (`skipping`, carried from
  chunk to chunk, a bit per stream). A last physical line without newline at least
  max_line_bytes long is the head of an over-long line (agent/sources/file.py skips its rest):
  its record is flagged truncated, and when it was a piece, its further pieces are skipped.
- A record is shipped once its end is in the chunk. A record whose end is not yet there is kept
  back: `consumed` stops at its first line, records that start after it wait too (they are read
  again next time), and `skipping` is what held at that line. A record starting before
  `flush_before` ships as it is (the file source's timeout for a record that never ends).
- A record's offset is its first physical line's; its time, when the content has none, the
  runtime's time of that line.
- Stack traces printed as plain text are one record: after a head line (Java `x.y.SomeException:
  ...` or `Exception in thread ...`, Python `Traceback (most recent call last):`, Go `panic: ...`
  or `fatal error: ...`) the stream's next records that continue it (`trace_continues`) are joined
  to it, "\\n" between them, up to TRACE_MAX_LINES lines and max_line_bytes (the next one starts
  a record of its own). A trace whose next line is not in the chunk yet waits like a record
  without its end; one that straddles a waiting record of the other stream is read again with it.

Known limit: a json-file entry longer than the file source's read_chunk_bytes (dockerd writes
16 KiB entries; the chunk is 2 MiB by default) cannot be parsed from its head: that head is a
record of its own, as it is, flagged truncated.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Final, Literal

import orjson

from tether.agent.parse import parse_timestamp

LogFormat = Literal["plain", "cri", "docker"]
LOG_FORMATS: Final[tuple[LogFormat, ...]] = ("plain", "cri", "docker")

# The kubelet compresses older rotations (<restart>.log.<time>.gz): never tailed, whatever the
# configured excludes say (they are not lines of text).
COMPRESSED_ROTATION: Final = "*.gz"

# A stack trace joins at most this many lines (its head included).
TRACE_MAX_LINES: Final = 256
_JAVA, _PYTHON, _GO = 1, 2, 3

# Bits of `skipping`, by stream.
STREAM_BITS: Final[dict[bytes, int]] = {b"stdout": 1, b"stderr": 2}

_DOCKER_PREFIX: Final = b'{"log":'
# <restart>.log, or a rotation of it the kubelet renamed (<restart>.log.<YYYYMMDD-hhmmss>); names
# and uids of Kubernetes objects hold no "_" (DNS-1123), so the directory splits unambiguously.
_POD_LOG_PATH: Final = re.compile(
    r"(?:^|/)pods/([^/_]+)_([^/_]+)_([^/_]+)/([^/]+)/(\d+)\.log(?:\.\d{8}-\d{6})?$"
)


@dataclass(frozen=True, slots=True)
class PodContainer:
    """Where a container log file belongs, read from its path."""

    namespace: str
    pod: str
    uid: str
    container: str
    restart_count: int


@lru_cache(maxsize=4096)
def pod_container(path: str) -> PodContainer | None:
    """The pod and container of a kubelet log path (`.../pods/<ns>_<pod>_<uid>/<container>/<n>.log`,
    any prefix, so a host directory mounted elsewhere works too); None for any other path."""
    match = _POD_LOG_PATH.search(path)
    if match is None:
        return None
    namespace, pod, uid, container, restart = match.groups()
    return PodContainer(namespace, pod, uid, container, int(restart))


@dataclass(frozen=True, slots=True)
class PhysicalLine:
    stream: bytes  # b"stdout" or b"stderr"
    partial: bool  # a piece of a longer line, continued by the stream's next line
    content: bytes
    time_text: bytes  # the runtime's time, as written


def parse_cri(line: bytes) -> PhysicalLine | None:
    """`<time> <stream> <tags> <content>`: tags are ":"-separated, the first P or F; None when the
    line is not one."""
    first = line.find(b" ")
    if first <= 0:
        return None
    second = line.find(b" ", first + 1)
    if second < 0:
        return None
    stream = line[first + 1 : second]
    if stream not in STREAM_BITS:
        return None
    third = line.find(b" ", second + 1)
    tags, content = (line[second + 1 :], b"") if third < 0 else (line[second + 1 : third], line[third + 1 :])
    tag = tags.split(b":", 1)[0]
    if tag not in (b"P", b"F"):
        return None
    return PhysicalLine(stream, tag == b"P", content, line[:first])


def parse_docker(line: bytes) -> PhysicalLine | None:
    """A json-file entry: a JSON object with a string `log` and a `stream` of stdout or stderr
    (`time`, a string, optional); None when the line is not one."""
    if not line.startswith(_DOCKER_PREFIX):
        return None
    try:
        entry = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(entry, dict):
        return None
    log, stream, time = entry.get("log"), entry.get("stream"), entry.get("time")
    if not isinstance(log, str) or not isinstance(stream, str):
        return None
    stream_bytes = stream.encode()
    if stream_bytes not in STREAM_BITS:
        return None
    content = log.encode()
    partial = not content.endswith(b"\n")
    return PhysicalLine(
        stream_bytes,
        partial,
        content if partial else content[:-1],
        time.encode() if isinstance(time, str) else b"",
    )


def detect_format(head: bytes) -> LogFormat:
    """The format of a file from its first line (or its first bytes, when that line is long)."""
    newline = head.find(b"\n")
    first = head if newline < 0 else head[:newline]
    if first.startswith(_DOCKER_PREFIX):  # dockerd's json-file writes "log" first
        return "docker"
    cri = parse_cri(first)
    if cri is not None and runtime_time_ns(cri.time_text):
        return "cri"
    return "plain"


def runtime_time_ns(text: bytes) -> int:
    """The runtime's time of a line, Unix ns; 0 when unusable."""
    return parse_timestamp(text.decode("utf-8", errors="replace")) if text else 0


def trace_head(content: bytes) -> int:
    """The kind of stack trace a plain-text line begins (0: none)."""
    line = content.rstrip(b"\r")
    if line.startswith(b"Traceback (most recent call last):"):
        return _PYTHON
    if line.startswith((b"panic: ", b"fatal error: ")):
        return _GO
    if line.startswith(b"Exception in thread "):
        return _JAVA
    colon = line.find(b":")
    name = line if colon < 0 else line[:colon]  # java.lang.IllegalStateException
    if b"." in name and b" " not in name and b"\t" not in name and name.endswith((b"Exception", b"Error")):
        return _JAVA
    return 0


def trace_continues(kind: int, lines: int, content: bytes) -> tuple[bool, bool]:
    """Whether a line continues a trace of `kind` that has `lines` lines, and whether it ends it."""
    line = content.rstrip(b"\r")
    indented = line.startswith((b" ", b"\t"))
    if kind == _JAVA:  # \tat ..., \t... 3 more, Caused by: ...
        return indented or line.startswith(b"Caused by: "), False
    if kind == _PYTHON:  # indented frames, then the exception's line ends it
        if indented:
            return True, False
        return (True, True) if lines >= 2 else (False, False)
    # Go: blank lines, goroutine headers, frames (a call, then its indented file:line)
    joins = (
        not line or indented or line.startswith((b"goroutine ", b"created by ", b"[")) or line.endswith(b")")
    )
    return joins, False


@dataclass(slots=True)
class ContainerRecord:
    """One record of a container log: the joined content of its physical lines."""

    offset: int  # of its first physical line in the file
    stream: bytes  # b"" for a line not of the file's format
    time_text: bytes  # the runtime's time of its first line (b"" when none)
    truncated: bool = False
    pieces: list[bytes] = field(default_factory=list)
    size: int = 0
    last_line: int = 0  # offset of its last physical line seen
    skipping_before: int = 0  # `skipping` when its first line was read
    trace: int = 0  # the kind of stack trace it begins (a record that joins the ones after it)
    lines: int = 1  # the records joined in it (a stack trace's lines)

    @property
    def content(self) -> bytes:
        return b"".join(self.pieces)

    def join(self, record: ContainerRecord) -> None:
        """A line of its stack trace."""
        self.pieces += [b"\n", *record.pieces]
        self.size += 1 + record.size
        self.last_line = record.last_line
        self.lines += 1

    def add(self, content: bytes, limit: int) -> None:
        room = limit - self.size
        if len(content) > room:
            content = content[:room]
            self.truncated = True
        self.pieces.append(content)
        self.size += len(content)


@dataclass(frozen=True, slots=True)
class Unwrapped:
    records: list[ContainerRecord]  # in the order they were completed
    consumed: int  # bytes of the chunk these records stand for
    skipping: int  # streams inside a record already shipped (whose rest is skipped)


def unwrap(
    data: bytes,
    base_offset: int,
    log_format: LogFormat,
    max_line_bytes: int,
    skipping: int = 0,
    flush_before: int = 0,
) -> Unwrapped:
    """The records of a chunk of a container log (see the module's rules)."""
    parse = parse_cri if log_format == "cri" else parse_docker
    limit = max_line_bytes
    done: list[ContainerRecord] = []
    pending: dict[bytes, ContainerRecord] = {}
    traces: dict[bytes, ContainerRecord] = {}  # by stream: a stack trace that may go on

    def complete(record: ContainerRecord) -> None:
        trace = traces.pop(record.stream, None)
        if trace is not None:
            joins, ends = trace_continues(trace.trace, trace.lines, record.content)
            fits = trace.lines < TRACE_MAX_LINES and trace.size + 1 + record.size <= limit
            if joins and fits and not record.truncated:
                trace.join(record)
                if ends:
                    done.append(trace)
                else:
                    traces[record.stream] = trace
                return
            done.append(trace)
        record.trace = 0 if record.truncated else trace_head(record.content)
        if record.trace:
            traces[record.stream] = record
        else:
            done.append(record)

    pos, size = 0, len(data)
    while pos < size:
        newline = data.find(b"\n", pos)
        end, after = (size, size) if newline < 0 else (newline, newline + 1)
        line, offset = data[pos:end], base_offset + pos
        pos = after
        head_of_long = newline < 0 and len(line) >= limit
        physical = parse(line)
        if physical is None:  # not of the format: a record of its own
            alone = ContainerRecord(offset, b"", b"", truncated=head_of_long, last_line=offset)
            alone.add(line, limit)
            done.append(alone)
            continue
        bit = STREAM_BITS[physical.stream]
        if skipping & bit:  # the rest of a record shipped already
            if not physical.partial:
                skipping &= ~bit
            continue
        record = pending.pop(physical.stream) if physical.stream in pending else None
        if record is None:
            record = ContainerRecord(offset, physical.stream, physical.time_text, skipping_before=skipping)
        record.add(physical.content, limit)
        record.last_line = offset
        record.truncated |= head_of_long
        if physical.partial and record.truncated:  # over-long: ship its head, skip its rest
            skipping |= bit
            complete(record)
        elif physical.partial:
            pending[physical.stream] = record
        else:
            complete(record)
    open_records = sorted([*pending.values(), *traces.values()], key=lambda record: record.offset)
    waiting = [record for record in open_records if record.offset >= flush_before]
    done += [record for record in open_records if record.offset < flush_before]  # waited enough
    if not waiting:
        return Unwrapped(done, size, skipping)
    boundary, skipping = waiting[0].offset, waiting[0].skipping_before
    while True:  # a stack trace on both sides of the boundary is read again, whole
        across = [r for r in done if r.lines > 1 and r.offset < boundary <= r.last_line]
        if not across:
            break
        first = min(across, key=lambda record: record.offset)
        boundary, skipping = first.offset, first.skipping_before
    shipped = []
    for record in done:
        if record.offset >= boundary:
            continue  # read again next time
        shipped.append(record)
        if record.stream and record.last_line >= boundary:
            skipping |= STREAM_BITS[record.stream]  # its lines from the boundary on are skipped
    return Unwrapped(shipped, boundary - base_offset, skipping)
