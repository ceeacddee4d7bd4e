"""agent.checkpoint: persisted file offsets."""

from __future__ import annotations

import os
from pathlib import Path

import orjson
import pytest

from tether.agent.checkpoint import Checkpoints


def test_empty_when_no_file(tmp_path: Path) -> None:
    checkpoints = Checkpoints(tmp_path / "checkpoints.json")
    assert checkpoints.offset("fp-1") is None
    assert not (tmp_path / "checkpoints.json").exists()


def test_advance_persists_and_reloads(tmp_path: Path) -> None:
    path = tmp_path / "state" / "agent" / "checkpoints.json"  # parent directories are created
    checkpoints = Checkpoints(path)
    checkpoints.advance("fp-1", "/var/log/a.log", 1024)
    checkpoints.advance("fp-2", "/var/log/b.log", 0)
    assert checkpoints.offset("fp-1") == 1024
    assert checkpoints.offset("fp-2") == 0  # offset 0 is a real checkpoint, not "none"

    reloaded = Checkpoints(path)
    assert reloaded.offset("fp-1") == 1024
    assert reloaded.offset("fp-2") == 0
    assert reloaded.offset("fp-3") is None
    assert orjson.loads(path.read_bytes()) == {
        "fp-1": {"offset": 1024, "path": "/var/log/a.log"},
        "fp-2": {"offset": 0, "path": "/var/log/b.log"},
    }


def test_advance_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "checkpoints.json"
    checkpoints = Checkpoints(path)
    checkpoints.advance("fp", "/a.log", 10)
    checkpoints.advance("fp", "/a.log.1", 2**40)  # offsets past 4 GiB survive the round trip
    assert Checkpoints(path).offset("fp") == 2**40


def test_forget(tmp_path: Path) -> None:
    path = tmp_path / "checkpoints.json"
    checkpoints = Checkpoints(path)
    checkpoints.advance("keep", "/k.log", 5)
    checkpoints.advance("drop", "/d.log", 7)
    checkpoints.forget("drop")
    assert checkpoints.offset("drop") is None
    assert Checkpoints(path).offset("drop") == 7  # forgotten in memory, persisted by flush
    checkpoints.flush()
    reloaded = Checkpoints(path)
    assert reloaded.offset("drop") is None
    assert reloaded.offset("keep") == 5
    reloaded.forget("never-seen")  # no error
    reloaded.flush()
    assert Checkpoints(path).offset("keep") == 5


def test_forget_unknown_on_empty_writes_nothing(tmp_path: Path) -> None:
    Checkpoints(tmp_path / "checkpoints.json").forget("nothing")
    assert list(tmp_path.iterdir()) == []


def test_no_temporary_file_left_behind(tmp_path: Path) -> None:
    path = tmp_path / "checkpoints.json"
    checkpoints = Checkpoints(path)
    for i in range(20):
        checkpoints.advance(f"fp-{i % 3}", f"/{i}.log", i * 100)
    checkpoints.forget("fp-0")
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoints.json"]


def test_failed_write_keeps_the_previous_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "checkpoints.json"
    checkpoints = Checkpoints(path)
    checkpoints.advance("fp", "/a.log", 100)
    before = path.read_bytes()

    def crash(*args: object) -> None:
        raise OSError("simulated crash before the rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="simulated crash"):
        checkpoints.advance("fp", "/a.log", 200)
    monkeypatch.undo()
    # The checkpoint file was never half-written: it still holds the last complete state.
    assert path.read_bytes() == before
    assert Checkpoints(path).offset("fp") == 100
