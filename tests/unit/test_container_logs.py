"""Kubernetes container log files: the runtimes' own files (tests/data/k8s, written by
containerd's CRI logger and dockerd's json-file driver) and generated edge cases are unwrapped to
the same records by the reference (agent/container_logs.py) and the native path
(native/fastlog/src/container_log.rs), byte for byte, chunk by chunk.
"""

from __future__ import annotations

import datetime as dt
import random
from pathlib import Path
from typing import Any, Literal

import orjson
import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from tether.agent.chunks import EncodedChunk, NativeChunkEncoder, PythonChunkEncoder
from tether.agent.container_logs import LogFormat, PodContainer, detect_format, pod_container, trace_head
from tether.schemas.log_fields import default_mapping
from tether.schemas.records import (
    ATTR_K8S_CONTAINER_NAME,
    ATTR_K8S_CONTAINER_RESTART_COUNT,
    ATTR_K8S_NAMESPACE,
    ATTR_K8S_POD_NAME,
    ATTR_K8S_POD_UID,
    ATTR_LOG_IOSTREAM,
    ATTR_RECORD_OFFSET,
    ATTR_SERVICE_NAME,
    ATTR_TRUNCATED,
)

K8S = Path(__file__).resolve().parents[1] / "data" / "k8s"
PODS = K8S / "var" / "log" / "pods"
CRI_DIR = PODS / "shop_checkout-6d5f7c9b8d-q7x2m_8e6c2d4a-3f1b-4c7e-9a2d-5b8f1e0c6a73" / "checkout"
DOCKER_DIR = PODS / "legacy_billing-api-5b8c7f9d4-wz6km_1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d" / "api"
OBSERVED = 1_763_700_000_123_456_789
LongLines = Literal["truncate", "drop"]


def _encoders(
    max_line: int, long_lines: LongLines = "truncate", move_routing_keys: bool = False
) -> tuple[PythonChunkEncoder, NativeChunkEncoder]:
    common: dict[str, Any] = {
        "agent_id": "agent-7",
        "partitions": 8,
        "mapping": default_mapping(),
        "max_line_bytes": max_line,
        "long_lines": long_lines,
        "move_routing_keys": move_routing_keys,
    }
    return PythonChunkEncoder(**common), NativeChunkEncoder(**common)


def _both(
    data: bytes,
    log_format: LogFormat,
    max_line: int = 262_144,
    *,
    path: str = "/var/log/pods/ns_pod_uid/app/0.log",
    long_lines: LongLines = "truncate",
    base: int = 4096,
    skipping: int = 0,
    flush_before: int = 0,
) -> tuple[EncodedChunk, EncodedChunk]:
    """Both encoders' chunks with whole bodies (these tests read the contents back); with the
    routing keys moved, as by default, both encoders must agree too."""
    reference, native = _encoders(max_line, long_lines)
    moving = _encoders(max_line, long_lines, move_routing_keys=True)
    arguments: dict[str, Any] = {
        "fingerprint": "0123456789abcdef",
        "path": path,
        "untraced_partition": 5,
        "observed_ns": OBSERVED,
        "log_format": log_format,
        "skipping": skipping,
        "flush_before": flush_before,
    }
    assert moving[0].encode(data, base, **arguments) == moving[1].encode(data, base, **arguments)
    return reference.encode(data, base, **arguments), native.encode(data, base, **arguments)


def _assert_equal(reference: EncodedChunk, native: EncodedChunk) -> None:
    assert native == reference


def _value(value: Any) -> Any:
    return getattr(value, value.WhichOneof("value"))


def _ns(iso: str) -> int:
    instant = dt.datetime.fromisoformat(iso)
    return int(instant.timestamp()) * 1_000_000_000 + instant.microsecond * 1000


def _records(chunk: EncodedChunk) -> list[tuple[dict[str, Any], Any, Any]]:
    """(resource attributes, record attributes, record) of every record of a chunk."""
    out = []
    for value in chunk.records.values():
        for resource_logs in ExportLogsServiceRequest.FromString(value).resource_logs:
            resource = {kv.key: _value(kv.value) for kv in resource_logs.resource.attributes}
            for record in resource_logs.scope_logs[0].log_records:
                attributes = {kv.key: _value(kv.value) for kv in record.attributes}
                out.append((resource, attributes, record))
    return sorted(out, key=lambda item: item[1][ATTR_RECORD_OFFSET])


# ---------------------------------------------------------------- the runtimes' files


def test_formats_are_detected_from_the_first_line_of_the_runtimes_files() -> None:
    assert detect_format((CRI_DIR / "0.log").read_bytes()[:1024]) == "cri"
    assert detect_format((CRI_DIR / "1.log").read_bytes()[:1024]) == "cri"
    assert detect_format((DOCKER_DIR / "0.log").read_bytes()[:1024]) == "docker"
    assert detect_format(b'{"level":"info","msg":"a"}\n') == "plain"
    assert detect_format(b"plain text\n") == "plain"
    assert detect_format(b"not-a-time stdout F x\n") == "plain"  # the header's time must parse


def test_the_kubelet_path_names_the_pod_and_container() -> None:
    assert pod_container(str(CRI_DIR / "1.log")) == PodContainer(
        "shop", "checkout-6d5f7c9b8d-q7x2m", "8e6c2d4a-3f1b-4c7e-9a2d-5b8f1e0c6a73", "checkout", 1
    )
    assert pod_container(str(CRI_DIR / "0.log.20261205-101500")) is not None  # a rotation
    assert pod_container("/var/log/pods/a_b_c/d/0.log.gz") is None
    assert pod_container("/var/log/app.log") is None
    assert pod_container("/var/log/pods/a_b/d/0.log") is None  # no uid


@pytest.mark.parametrize("name", ["0.log", "1.log", "0.log.20261205-101500"])
def test_cri_file_records(name: str) -> None:
    path = CRI_DIR / name
    reference, native = _both(path.read_bytes(), "cri", path=str(path), flush_before=1 << 62)
    _assert_equal(reference, native)
    records = _records(reference)
    assert records and all(r[0][ATTR_K8S_NAMESPACE] == "shop" for r in records)
    assert {r[0][ATTR_K8S_CONTAINER_RESTART_COUNT] for r in records} == {1 if name == "1.log" else 0}
    assert all(r[1][ATTR_LOG_IOSTREAM] in ("stdout", "stderr") for r in records)


def test_cri_partials_are_joined_across_the_other_stream() -> None:
    path = CRI_DIR / "0.log"
    data = path.read_bytes()
    assert b" stdout P " in data
    reference, native = _both(data, "cri", path=str(path))
    _assert_equal(reference, native)
    assert reference.consumed == len(data)
    records = _records(reference)
    bodies = [r[2].body.string_value for r in records]
    long = next(b for b in bodies if "item-00000" in b)
    assert orjson.loads(long)["level"] == "warn" and len(long) > 24000  # whole again, valid JSON
    # the line that came between the pieces is a record of its own, on stderr
    declined = next(r for r in records if "payment declined" in r[2].body.string_value)
    assert declined[1][ATTR_LOG_IOSTREAM] == "stderr"
    # offsets are of first physical lines, each a line start
    for _, attributes, _ in records:
        at = attributes[ATTR_RECORD_OFFSET] - 4096
        assert at == 0 or data[at - 1 : at] == b"\n"
    # the empty line is skipped, the traceback's 4 lines are one record; the rest are records
    assert len(records) == data.count(b"\n") - 2 - 3


def test_time_and_service_of_cri_records() -> None:
    path = CRI_DIR / "0.log"
    data = path.read_bytes()
    reference, _ = _both(data, "cri", path=str(path))
    by_body = {r[2].body.string_value: r for r in _records(reference)}
    own = next(r for body, r in by_body.items() if "order placed" in body)
    assert own[2].time_unix_nano == _ns("2026-12-05T10:20:00+00:00") + 123_456_789  # the line's own ts
    assert own[0][ATTR_SERVICE_NAME] == "checkout-api"
    plain = by_body["plain text from the app, no JSON"]
    runtime = data.split(b"\n")[2].split(b" ", 1)[0].decode()
    assert plain[2].time_unix_nano == _ns(runtime[:26] + "+00:00") // 1000 * 1000 + int(runtime[26:29])
    assert plain[0][ATTR_SERVICE_NAME] == "checkout"  # the container's name
    assert plain[0][ATTR_K8S_POD_NAME] == "checkout-6d5f7c9b8d-q7x2m"
    assert plain[0][ATTR_K8S_POD_UID] == "8e6c2d4a-3f1b-4c7e-9a2d-5b8f1e0c6a73"
    assert plain[0][ATTR_K8S_CONTAINER_NAME] == "checkout"


def test_a_p_never_followed_by_f_waits_then_ships_as_it_is() -> None:
    path = CRI_DIR / "1.log"
    data = path.read_bytes()
    last = data.rstrip(b"\n").rfind(b"\n") + 1
    assert b" stdout P exiting" in data[last:]
    # without the stack trace before it (which waits for the stream's next line too)
    panic = data.find(b" stderr F panic:")
    panic = data.rfind(b"\n", 0, panic) + 1
    without_trace = data[:panic] + data[last:]
    reference, native = _both(without_trace, "cri", path=str(path))
    _assert_equal(reference, native)
    assert reference.consumed == panic  # the last record waits for its end
    reference, native = _both(without_trace, "cri", path=str(path), flush_before=4096 + len(without_trace))
    _assert_equal(reference, native)
    assert reference.consumed == len(without_trace)
    assert _records(reference)[-1][2].body.string_value == "exiting without a newline"


def test_stack_traces_are_one_record_bounded_by_the_next_line_and_the_timeout() -> None:
    path = CRI_DIR / "1.log"
    data = path.read_bytes()
    panic = data.rfind(b"\n", 0, data.find(b" stderr F panic:")) + 1
    reference, native = _both(data, "cri", path=str(path))
    _assert_equal(reference, native)
    assert reference.consumed == panic  # its next stderr line may still continue it
    reference, native = _both(data, "cri", path=str(path), flush_before=4096 + len(data))
    _assert_equal(reference, native)
    trace = next(r for r in _records(reference) if r[1][ATTR_LOG_IOSTREAM] == "stderr")
    assert trace[2].body.string_value.split("\n") == [
        "panic: runtime error: index out of range [3] with length 3",
        "",
        "goroutine 1 [running]:",
        "main.main()",
        "\t/app/main.go:9 +0x1d",
    ]
    assert trace[1][ATTR_RECORD_OFFSET] == 4096 + panic
    # Python's ends with its exception line; Java's (Docker) with the next line not indented
    python, _ = _both((CRI_DIR / "0.log").read_bytes(), "cri")
    [traceback] = [r[2].body.string_value for r in _records(python) if "Traceback" in r[2].body.string_value]
    assert traceback.startswith("Traceback (most recent call last):\n  File") and traceback.endswith(
        "\nValueError: bad input"
    )
    java, _ = _both((DOCKER_DIR / "0.log").read_bytes(), "docker")
    [exception] = [
        r[2].body.string_value for r in _records(java) if "IllegalStateException" in r[2].body.string_value
    ]
    assert exception.count("\n\tat ") == 2


def test_docker_file_records() -> None:
    path = DOCKER_DIR / "0.log"
    data = path.read_bytes()
    reference, native = _both(data, "docker", path=str(path))
    _assert_equal(reference, native)
    assert reference.consumed == len(data)
    records = _records(reference)
    bodies = [r[2].body.string_value for r in records]
    assert "plain text, written with a CRLF" in bodies  # \r\n: the \r is stripped as from lines
    long = next(b for b in bodies if "item-00000" in b)
    assert orjson.loads(long)["service"] == "billing"
    assert len(records) == data.count(b"\n") - 1 - 2  # one split entry joined, a 3-line trace
    invoice = next(r for r in records if "invoice sent" in r[2].body.string_value)
    assert invoice[2].time_unix_nano == _ns("2026-12-05T10:30:00.5+01:00")  # its own time
    assert invoice[0][ATTR_K8S_CONTAINER_NAME] == "api" and invoice[0][ATTR_SERVICE_NAME] == "api"


@pytest.mark.parametrize("directory", [CRI_DIR, DOCKER_DIR])
@pytest.mark.parametrize("chunk_size", [97, 1000, 16_500])
def test_files_read_chunk_by_chunk_give_the_records_of_one_read(directory: Path, chunk_size: int) -> None:
    """The file source reads chunk by chunk, each starting where the last one's records ended
    (consumed), carrying `skipping`: partials across chunk boundaries."""
    path = directory / "0.log"
    data = path.read_bytes()
    log_format = detect_format(data)
    whole, _ = _both(data, log_format, path=str(path), base=0, flush_before=1 << 62)
    offset, skipping, seen = 0, 0, []
    while offset < len(data):
        chunk = data[offset : offset + chunk_size]
        end = chunk.rfind(b"\n") + 1
        if end == 0:  # no whole line in it (the file source reads on): a bigger chunk
            chunk_size *= 2
            continue
        final = offset + end >= len(data)
        reference, native = _both(
            chunk[:end],
            log_format,
            path=str(path),
            base=offset,
            skipping=skipping,
            flush_before=(1 << 62) if final else 0,
        )
        _assert_equal(reference, native)
        if reference.consumed == 0:  # a record longer than the chunk: read a bigger one
            chunk_size *= 2
            continue
        seen += _records(reference)
        offset += reference.consumed
        skipping = reference.skipping
    expected = _records(whole)
    assert [(r[1], r[2].body) for r in seen] == [(r[1], r[2].body) for r in expected]


# ---------------------------------------------------------------- generated edge cases

_T = "2026-12-05T10:00:00.123456789Z"


def _cri_line(rng: random.Random, stream: str, tag: str, content: bytes) -> bytes:
    return f"{_T} {stream} {tag} ".encode() + content


_TRACE_LINES = [
    b"java.lang.IllegalStateException: boom",
    b'Exception in thread "main" java.lang.Error',
    b"\tat a.b.C.d(C.java:12)",
    b"    at a.b.C.e(C.java:13)",
    b"Caused by: x.y.ZError: why",
    b"\t... 3 more",
    b"Traceback (most recent call last):",
    b'  File "x.py", line 1, in <module>',
    b"KeyError: 'k'",
    b"panic: oops",
    b"fatal error: all goroutines are asleep",
    b"goroutine 7 [running]:",
    b"main.f(0x1)",
    b"created by main.main in goroutine 1",
    b"[signal SIGSEGV: segmentation violation]",
    b"not.a.trace: line",
]


def _content(rng: random.Random) -> bytes:
    if rng.random() < 0.3:  # stack trace heads and lines, in and out of order
        return rng.choice(_TRACE_LINES)
    r = rng.random()
    if r < 0.3:
        return orjson.dumps({"level": rng.choice(["info", "error"]), "msg": "m" * rng.randrange(60)})
    if r < 0.4:
        return b"bad \xff\xfe utf8 " + bytes([rng.randrange(0x80, 0x100)])
    if r < 0.5:
        return b"x" * rng.randrange(100, 400)  # over-long joined at the small limits
    if r < 0.55:
        return b""
    if r < 0.6:
        return b"ends with cr\r"
    return b"text " + str(rng.randrange(10**6)).encode()


def _trace_block(rng: random.Random) -> list[bytes]:
    """A stack trace's lines: a head, then lines that continue it, or not."""
    head = rng.choice([line for line in _TRACE_LINES if trace_head(line)])
    return [head] + [rng.choice(_TRACE_LINES) for _ in range(rng.randrange(1, 8))]


def _generated_cri(seed: int, count: int) -> bytes:
    """Both streams interleaved, records cut into P pieces, a P never followed by F at the end,
    lines not of the format, CRLF line ends, tags with extra ":"-separated parts."""
    rng = random.Random(seed)
    lines = []
    for _ in range(count):
        stream = rng.choice(["stdout", "stderr"])
        for _ in range(rng.choice([0, 0, 0, 1, 2, 5])):
            lines.append(_cri_line(rng, stream, rng.choice(["P", "P:x"]), _content(rng)[:50]))
        r = rng.random()
        if r < 0.05:
            lines.append(b"garbage line without header")
        elif r < 0.08:
            lines.append(f"{_T} stdin F x".encode())
        elif r < 0.1:
            lines.append(f"{_T} stdout F".encode())  # no content at all
        line = _cri_line(rng, stream, "F", _content(rng))
        lines.append(line + (b"\r" if rng.random() < 0.05 else b""))
        if rng.random() < 0.1:
            lines += [_cri_line(rng, stream, "F", trace_line) for trace_line in _trace_block(rng)]
    lines.append(_cri_line(rng, "stdout", "P", b'{"msg":"never ends"'))
    return b"\n".join(lines) + b"\n"


# json-file lines where orjson's reading is easy to miss: nesting up to its limit and past it,
# a duplicate key (the last one counts), numbers too big for an integer or a double.
_DOCKER_EDGES = [
    b'{"log":"deep\\n","stream":"stdout","attrs":' + b"[" * 1022 + b"]" * 1022 + b"}",
    b'{"log":"too deep\\n","stream":"stdout","attrs":' + b"[" * 1024 + b"]" * 1024 + b"}",
    b'{"log":"first\\n","stream":"stderr","log":"last\\n"}',
    b'{"log":"big\\n","stream":"stdout","n":123456789012345678901234567890}',
    b'{"log":"infinite\\n","stream":"stdout","n":1e400}',
    b'{"log":"escaped \\u00e9 \\ud83d\\ude00\\n","stream":"stdout"}',
    b'{"log":"trailing\\n","stream":"stdout"} x',
]


def _generated_docker(seed: int, count: int) -> bytes:
    rng = random.Random(seed)
    lines = list(_DOCKER_EDGES)
    for _ in range(count):
        stream = rng.choice(["stdout", "stderr"])
        pieces = [_content(rng).decode(errors="replace")[:50] for _ in range(rng.choice([0, 0, 1, 3]))]
        if rng.random() < 0.1:
            for trace_line in _trace_block(rng):
                lines.append(orjson.dumps({"log": trace_line.decode() + "\n", "stream": stream, "time": _T}))
        for piece in [*pieces, _content(rng).decode(errors="replace") + "\n"]:
            entry: dict[str, Any] = {"log": piece, "stream": stream, "time": _T}
            if rng.random() < 0.05:
                entry["attrs"] = {"tag": "x"}
            lines.append(orjson.dumps(entry))
        r = rng.random()
        if r < 0.05:
            lines.append(b'{"log":"no stream\\n"}')
        elif r < 0.08:
            lines.append(b'{"log":"broken')
        elif r < 0.1:
            lines.append(b'{"log":"\\ud800 lone surrogate\\n","stream":"stdout"}')
    return b"\n".join(lines) + b"\n"


@pytest.mark.parametrize("log_format", ["cri", "docker"])
@pytest.mark.parametrize("max_line", [262_144, 300, 64])
@pytest.mark.parametrize("long_lines", ["truncate", "drop"])
@pytest.mark.parametrize("seed", range(3))
def test_generated_container_lines_agree(
    log_format: LogFormat, max_line: int, long_lines: LongLines, seed: int
) -> None:
    data = (_generated_cri if log_format == "cri" else _generated_docker)(seed, 400)
    reference, native = _both(data, log_format, max_line, long_lines=long_lines)
    assert reference.lines > 200
    if max_line == 64:
        assert reference.truncated > 0
    else:  # stack traces were joined
        joined = b"".join(reference.records.values())
        assert (
            sum(joined.count(b"\n" + line) for line in (b"\tat ", b"  File", b"goroutine ", b"Caused by"))
            > 10
        )
    _assert_equal(reference, native)
    flushed = _both(data, log_format, max_line, long_lines=long_lines, flush_before=1 << 62)
    _assert_equal(*flushed)
    assert flushed[0].consumed == len(data)


@pytest.mark.parametrize("log_format", ["cri", "docker"])
@pytest.mark.parametrize("seed", range(3))
def test_generated_lines_in_chunks_agree(log_format: LogFormat, seed: int) -> None:
    """Random chunk boundaries, the consumed offset and `skipping` carried from chunk to chunk."""
    data = (_generated_cri if log_format == "cri" else _generated_docker)(seed, 300)
    rng = random.Random(seed)
    offset, skipping, rounds = 0, 0, 0
    while offset < len(data) and rounds < 10_000:
        rounds += 1
        end = data.rfind(b"\n", offset, offset + rng.randrange(50, 3000)) + 1
        if end <= offset:
            end = min(len(data), offset + 3000)
        reference, native = _both(data[offset:end], log_format, 128, base=offset, skipping=skipping)
        _assert_equal(reference, native)
        if reference.consumed == 0:
            reference, native = _both(
                data[offset:end], log_format, 128, base=offset, skipping=skipping, flush_before=offset + 1
            )
            _assert_equal(reference, native)
        offset += reference.consumed
        skipping = reference.skipping
    assert offset == len(data) or data[offset:].startswith(f"{_T} stdout P".encode())


def test_a_stack_trace_is_bounded_in_lines() -> None:
    lines = [b"java.lang.IllegalStateException: boom"] + [b"\tat a.B.c(B.java:%d)" % n for n in range(300)]
    data = (
        b"".join(f"{_T} stderr F ".encode() + line + b"\n" for line in lines)
        + f"{_T} stderr F next\n".encode()
    )
    reference, native = _both(data, "cri")
    _assert_equal(reference, native)
    bodies = [r[2].body.string_value for r in _records(reference)]
    assert bodies[0].count("\n") == 255  # TRACE_MAX_LINES lines
    assert len(bodies) == 1 + (301 - 256) + 1
    # and in bytes: a line that would take it past max_line_bytes starts a record of its own
    reference, native = _both(data, "cri", 1000)
    _assert_equal(reference, native)
    assert all(len(r[2].body.string_value) <= 1000 for r in _records(reference))
    first = _records(reference)[0][2].body.string_value
    joined = first.count("\n")
    assert 10 < joined < 255 and len(first) + 1 + len(lines[joined + 1]) > 1000


def test_json_file_lines_are_read_as_orjson_reads_them() -> None:
    reference, native = _both(b"\n".join(_DOCKER_EDGES) + b"\n", "docker")
    _assert_equal(reference, native)
    bodies = [r[2].body.string_value for r in _records(reference)]
    assert bodies[0] == "deep" and bodies[1].startswith('{"log":"too deep')  # past the limit: as is
    assert bodies[2] == "last" and bodies[3] == "big" and bodies[4].startswith('{"log":"infinite')
    assert bodies[5] == "escaped \u00e9 \U0001f600" and bodies[6].endswith("} x")


def test_over_long_joined_lines_are_cut_flagged_and_their_rest_skipped() -> None:
    pieces = [_cri_line(random.Random(0), "stdout", "P", b"a" * 50) for _ in range(5)]
    data = (
        b"\n".join(
            [*pieces, _cri_line(random.Random(0), "stdout", "F", b"end"), f"{_T} stdout F next".encode()]
        )
        + b"\n"
    )
    reference, native = _both(data, "cri", 120)
    _assert_equal(reference, native)
    records = _records(reference)
    assert [r[2].body.string_value for r in records] == ["a" * 120, "next"]
    assert records[0][1].get(ATTR_TRUNCATED) is True and reference.truncated == 1
    # read in two chunks, the second starts inside the skipped rest
    cut = len(b"\n".join(pieces[:3])) + 1
    first, native_first = _both(data[:cut], "cri", 120, base=0)
    _assert_equal(first, native_first)
    assert first.skipping == 1 and first.consumed == cut
    second, native_second = _both(data[cut:], "cri", 120, base=cut, skipping=first.skipping)
    _assert_equal(second, native_second)
    assert [r[2].body.string_value for r in _records(second)] == ["next"]


# ---------------------------------------------------------------- what the collector makes of them


@pytest.mark.parametrize("path", [CRI_DIR / "0.log", CRI_DIR / "1.log", DOCKER_DIR / "0.log"])
def test_the_collector_indexes_container_records_alike_on_both_paths(path: Path) -> None:
    """The collector (unchanged) reads the new attributes: log.iostream under `attributes`, the
    k8s.* ones under `resource.attributes`; its native documents are its reference's."""
    from tests.unit.test_collector_native_documents import compare_one

    data = path.read_bytes()
    reference, _ = _both(data, detect_format(data), path=str(path), flush_before=1 << 62)
    for value in reference.records.values():
        native_docs = compare_one(ExportLogsServiceRequest.FromString(value), default_mapping(), None)
        assert native_docs is not None
        for doc in native_docs:
            assert doc.head is not None
            resource = orjson.loads(doc.head[:-1] + b"}")["resource"]["attributes"]
            assert resource["k8s.pod.uid"] and isinstance(resource["k8s.container.restart_count"], int)
