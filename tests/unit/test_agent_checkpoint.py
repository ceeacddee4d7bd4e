"""agent.checkpoint: persisted file offsets, one entry per file (device and inode)."""

from __future__ import annotations

import os
from pathlib import Path

import orjson
import pytest

from tether.agent.checkpoint import (
    Checkpoints,
    FileCheckpoint,
    FormerCheckpoint,
    LegacyCheckpoint,
    head_digest,
)

A, B = (1, 10), (1, 11)  # (device, inode) of two files


def at(offset: int, path: str = "/var/log/a.log", fingerprint: str = "fp-1") -> FileCheckpoint:
    return FileCheckpoint(fingerprint, offset, path, head_digest(b"first line\n"), 11)


def test_empty_when_no_file(tmp_path: Path) -> None:
    checkpoints = Checkpoints(tmp_path / "checkpoints.json")
    assert checkpoints.get(A) is None
    assert not (tmp_path / "checkpoints.json").exists()


def test_advance_persists_and_reloads(tmp_path: Path) -> None:
    path = tmp_path / "state" / "agent" / "checkpoints.json"  # parent directories are created
    checkpoints = Checkpoints(path)
    checkpoints.advance(A, at(1024))
    checkpoints.advance(B, at(0, "/var/log/b.log", "fp-2"))
    assert checkpoints.get(A) == at(1024)
    assert checkpoints.get(B) == at(0, "/var/log/b.log", "fp-2")  # offset 0 is a real checkpoint

    reloaded = Checkpoints(path)
    assert reloaded.get(A) == at(1024)
    assert reloaded.get(B) == at(0, "/var/log/b.log", "fp-2")
    assert reloaded.get((2, 10)) is None  # the same inode number on another device is another file
    head = head_digest(b"first line\n")
    assert orjson.loads(path.read_bytes()) == {
        "1:10": {
            "fingerprint": "fp-1",
            "offset": 1024,
            "path": "/var/log/a.log",
            "head": head,
            "head_bytes": 11,
        },
        "1:11": {
            "fingerprint": "fp-2",
            "offset": 0,
            "path": "/var/log/b.log",
            "head": head,
            "head_bytes": 11,
        },
    }


def test_advance_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "checkpoints.json"
    checkpoints = Checkpoints(path)
    checkpoints.advance(A, at(10))
    checkpoints.advance(A, at(2**40, "/a.log.1"))  # offsets past 4 GiB survive the round trip
    assert Checkpoints(path).get(A) == at(2**40, "/a.log.1")


def test_forget(tmp_path: Path) -> None:
    path = tmp_path / "checkpoints.json"
    checkpoints = Checkpoints(path)
    checkpoints.advance(A, at(5))
    checkpoints.advance(B, at(7))
    checkpoints.forget(B)
    assert checkpoints.get(B) is None
    assert Checkpoints(path).get(B) == at(7)  # forgotten in memory, persisted by flush
    checkpoints.flush()
    reloaded = Checkpoints(path)
    assert reloaded.get(B) is None
    assert reloaded.get(A) == at(5)
    reloaded.forget((9, 9))  # no error
    reloaded.flush()
    assert Checkpoints(path).get(A) == at(5)


def test_forget_unknown_on_empty_writes_nothing(tmp_path: Path) -> None:
    Checkpoints(tmp_path / "checkpoints.json").forget(A)
    assert list(tmp_path.iterdir()) == []


def test_no_temporary_file_left_behind(tmp_path: Path) -> None:
    path = tmp_path / "checkpoints.json"
    checkpoints = Checkpoints(path)
    for i in range(20):
        checkpoints.advance((1, i % 3), at(i * 100, f"/{i}.log"))
    checkpoints.forget((1, 0))
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoints.json"]


def test_entries_of_the_first_line_format_load_as_legacy_until_taken_or_dropped(tmp_path: Path) -> None:
    path = tmp_path / "checkpoints.json"
    # As agents that keyed checkpoints by the fingerprint of the first line wrote them.
    path.write_bytes(
        orjson.dumps(
            {
                "0123456789abcdef": {"offset": 300, "path": "/a.log"},
                "fedcba9876543210": {"offset": 7, "path": "/b.log"},
            }
        )
    )
    checkpoints = Checkpoints(path)
    assert checkpoints.get(A) is None
    assert set(checkpoints.legacy) == {"0123456789abcdef", "fedcba9876543210"}
    assert checkpoints.take_legacy("0123456789abcdef") == LegacyCheckpoint("0123456789abcdef", 300, "/a.log")
    assert checkpoints.take_legacy("0123456789abcdef") is None  # taken once
    checkpoints.advance(A, at(300, "/a.log", "0123456789abcdef"))
    # Until dropped, the entries not taken are written back as they were.
    reloaded = Checkpoints(path)
    assert reloaded.legacy == {"fedcba9876543210": LegacyCheckpoint("fedcba9876543210", 7, "/b.log")}
    assert reloaded.get(A) == at(300, "/a.log", "0123456789abcdef")
    reloaded.drop_legacy()
    reloaded.flush()
    assert list(orjson.loads(path.read_bytes())) == ["1:10"]


def test_failed_write_keeps_the_previous_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "checkpoints.json"
    checkpoints = Checkpoints(path)
    checkpoints.advance(A, at(100))
    before = path.read_bytes()

    def crash(*args: object) -> None:
        raise OSError("simulated crash before the rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="simulated crash"):
        checkpoints.advance(A, at(200))
    monkeypatch.undo()
    # The checkpoint file was never half-written: it still holds the last complete state.
    assert path.read_bytes() == before
    assert Checkpoints(path).get(A) == at(100)


def test_former_contents_persist_until_forgotten_in_a_shape_older_agents_drop(tmp_path: Path) -> None:
    path = tmp_path / "checkpoints.json"
    checkpoints = Checkpoints(path)
    former = FormerCheckpoint("fp-old", 2048, "/var/log/a.log", head_digest(b"first line\n"), 11, until=1.5e9)
    checkpoints.remember_former(former)
    checkpoints.advance(A, at(0, fingerprint="fp-new"))  # the truncated file's new fingerprint
    assert Checkpoints(path).formers() == [former]
    entry = orjson.loads(path.read_bytes())["former:fp-old"]
    # What an agent without formers reads: an entry without "fingerprint" is a first-line one,
    # {"offset", "path"}, keyed by a first-line digest no file has; it drops those no file takes.
    assert "fingerprint" not in entry and (entry["offset"], entry["path"]) == (2048, "/var/log/a.log")
    checkpoints.forget_former("fp-old")
    checkpoints.flush()
    assert Checkpoints(path).formers() == []
    assert Checkpoints(path).get(A) == at(0, fingerprint="fp-new")
