"""Loading component configuration: YAML, `${ENV}` substitution, one typed model per component.

Errors name the key path and what is wrong with it, every problem at once, e.g.
    kafka.bootstrap_servers: Field required
    kafka.bootstrap: unknown key (check its spelling and the section it is in)
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, TypeVar

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError

# ${NAME} or ${NAME:-default}; $${...} escapes a literal ${...}.
_ENV_REFERENCE = re.compile(r"\$(\$?)\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")

Model = TypeVar("Model", bound=BaseModel)


class ConfigError(ValueError):
    """The configuration is invalid; str() lists every problem, one per line."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(f"{source}: invalid configuration\n" + "\n".join(f"  {p}" for p in problems))


class Section(BaseModel):
    """Base of every config model: unknown keys are errors, not silently ignored typos. Errors never
    repeat the input: a section's input may hold a secret."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)


def _host_port(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError("expected host:port (port 0-65535), for example 127.0.0.1:4317")
    return value


# An address to listen on or connect to; every endpoint of every tier is validated the same way.
HostPort = Annotated[str, AfterValidator(_host_port)]


def substitute_env(text: str, environ: Mapping[str, str], source: str = "config") -> str:
    missing: list[str] = []
    result = _expand(text, environ, missing)
    _raise_missing(missing, source)
    return result


def _expand(text: str, environ: Mapping[str, str], missing: list[str]) -> str:
    def replace(match: re.Match[str]) -> str:
        escaped, name, default = match.groups()
        if escaped:
            return match.group(0)[1:]
        if name in environ:
            return environ[name]
        if default is not None:
            return default
        missing.append(name)
        return ""

    return _ENV_REFERENCE.sub(replace, text)


def _raise_missing(missing: list[str], source: str) -> None:
    if missing:
        raise ConfigError(
            source,
            [
                f"${{{n}}}: environment variable is not set (export it, or write ${{{n}:-default}})"
                for n in dict.fromkeys(missing)
            ],
        )


def _substitute_values(data: Any, environ: Mapping[str, str], missing: list[str]) -> Any:
    """Expand `${...}` in string values only: comments and keys stay as written, and a variable's
    value can never change the YAML structure around it."""
    if isinstance(data, str):
        return _expand(data, environ, missing)
    if isinstance(data, dict):
        return {key: _substitute_values(value, environ, missing) for key, value in data.items()}
    if isinstance(data, list):
        return [_substitute_values(value, environ, missing) for value in data]
    return data


def load_config(path: Path, model: type[Model], environ: Mapping[str, str] | None = None) -> Model:
    source = str(path)
    data = _parse_yaml(path.read_text(), source)
    missing: list[str] = []
    data = _substitute_values(data, os.environ if environ is None else environ, missing)
    _raise_missing(missing, source)
    return _validate(data, model, source)


def parse_config(text: str, model: type[Model], source: str = "config") -> Model:
    return _validate(_parse_yaml(text, source), model, source)


def _parse_yaml(text: str, source: str) -> dict[str, Any]:
    try:
        data: Any = yaml.safe_load(text) or {}
    except yaml.YAMLError as error:
        raise ConfigError(source, [f"not valid YAML: {error}"]) from error
    if not isinstance(data, dict):
        raise ConfigError(source, ["the top level must be a mapping of sections"])
    return data


def _validate(data: dict[str, Any], model: type[Model], source: str) -> Model:
    try:
        return model.model_validate(data)
    except ValidationError as error:
        # from None: pydantic's own text repeats input values, and those may be secrets
        raise ConfigError(source, [describe_error(e) for e in error.errors()]) from None


def describe_error(error: Any) -> str:
    """One line for one pydantic error: the key path and the problem (never the input value)."""
    path = ".".join(str(p) for p in error["loc"]) or "(top level)"
    message = error["msg"]
    if error["type"] == "extra_forbidden":
        message = "unknown key (check its spelling and the section it is in)"
    hint = (error.get("ctx") or {}).get("hint")
    return f"{path}: {message}" + (f" ({hint})" if hint else "")
