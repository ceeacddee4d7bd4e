"""The CLI's config validation: a stranger's first contact with a wrong file."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from tether.cli import app

EXAMPLES = Path(__file__).resolve().parents[2] / "deploy" / "examples"


def test_examples_validate() -> None:
    runner = CliRunner()
    for component in ("agent", "collector"):
        result = runner.invoke(app, [component, "validate", "--config", str(EXAMPLES / f"{component}.yaml")])
        assert result.exit_code == 0, result.output
        assert "valid" in result.output


def test_every_problem_is_reported_with_its_key(tmp_path: Path) -> None:
    config = tmp_path / "agent.yaml"
    config.write_text("kafka:\n  bootstrap: x\nfiles: {include: []}\notlp: {grpc_endpoint: nowhere}\n")
    result = CliRunner().invoke(app, ["agent", "validate", "--config", str(config)])
    assert result.exit_code == 2
    for expected in (
        "data_dir: Field required",
        "kafka.bootstrap_servers: Field required",
        "kafka.bootstrap: unknown key",
        "files.include:",
        "otlp.grpc_endpoint:",
    ):
        assert expected in result.output, result.output


def test_missing_environment_variable_is_named(tmp_path: Path) -> None:
    config = tmp_path / "collector.yaml"
    config.write_text("kafka: {bootstrap_servers: '${TETHER_TEST_UNSET_VARIABLE}'}\n")
    result = CliRunner().invoke(app, ["collector", "validate", "--config", str(config)])
    assert result.exit_code == 2
    assert "TETHER_TEST_UNSET_VARIABLE" in result.output


def test_running_without_config_says_so() -> None:
    result = CliRunner().invoke(app, ["agent"])
    assert result.exit_code == 2
    assert "--config" in result.output
