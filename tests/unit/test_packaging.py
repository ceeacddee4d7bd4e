"""Packaging: the tiers install under the `tether` namespace, never as top-level `agent`,
`collector` or `schemas`, which any other distribution could also own."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TIERS = ("agent", "collector", "schemas")


def test_tiers_import_although_other_packages_own_their_short_names(tmp_path: Path) -> None:
    """Decoys named agent/collector/schemas come first on sys.path; tether must not import them."""
    for name in TIERS:
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(f"raise ImportError('decoy {name} imported')\n")
    script = (
        "import tether.agent.service, tether.collector.service, tether.schemas.records, tether.cli\n"
        "import sys\n"
        f"assert not set({TIERS!r}) & set(sys.modules), sorted(set({TIERS!r}) & set(sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


def test_wheel_holds_the_tiers_under_tether_only(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", tmp_path, REPO],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("tether-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert top_level == {"tether"}
    for module in (
        "tether/agent/service.py",
        "tether/collector/service.py",
        "tether/schemas/records.py",
        "tether/schemas/log_fields.yaml",
        "tether/schemas/elasticsearch/tether-logs.json",
        "tether/stack/jaeger.yaml",
    ):
        assert module in names
