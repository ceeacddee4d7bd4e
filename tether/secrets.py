"""Secrets in configuration: given inline (often as `${ENV}`) or as a file, never shown.

Each secret `x` of a section may be written `x: ...` or `x_file: /path` (as Kubernetes mounts a
Secret), exactly one of them. The file is read when the configuration is loaded, one trailing
newline stripped. Values are pydantic SecretStr: repr, str, model_dump and errors show `**********`.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from pydantic import PrivateAttr, SecretStr, model_validator

from tether.config import Section


class SecretFileError(ValueError):
    pass


def read_secret_file(path: Path, key: str) -> SecretStr:
    """The file's text less one trailing newline; errors name the key and the path, never content."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SecretFileError(f"{key}: no such file {path} (is the Secret mounted?)") from None
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) else "not UTF-8 text"
        raise SecretFileError(f"{key}: cannot read {path}: {reason}") from None
    if text.endswith("\r\n"):
        text = text[:-2]
    elif text.endswith("\n"):
        text = text[:-1]
    if not text:
        raise SecretFileError(f"{key}: {path} is empty")
    return SecretStr(text)


class SecretSection(Section):
    """A section with secrets: subclasses list them in SECRETS and declare `x: SecretStr | None`
    and `x_file: Path | None` for each; `secret("x")` is the value, whichever way it was given."""

    SECRETS: ClassVar[tuple[str, ...]] = ()
    _secrets: dict[str, SecretStr] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _read_secrets(self) -> SecretSection:
        for name in self.SECRETS:
            inline: SecretStr | None = getattr(self, name)
            path: Path | None = getattr(self, f"{name}_file")
            if inline is not None and path is not None:
                raise ValueError(f"{name} and {name}_file are both set: keep exactly one")
            if path is not None:
                self._secrets[name] = read_secret_file(path, f"{name}_file")
            elif inline is not None:
                if not inline.get_secret_value():
                    raise ValueError(f"{name} is empty (an unset environment variable?)")
                self._secrets[name] = inline
        return self

    def secret(self, name: str) -> SecretStr | None:
        return self._secrets.get(name)

    def has_secret(self, name: str) -> bool:
        return name in self._secrets
