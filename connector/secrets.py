"""Secret references: a config names where a secret lives, never the secret itself.

A secret is read only when a source or destination needs it, and its value never enters a repr,
an error message or a log line: `Secret.__repr__` shows where it comes from, not what it is.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict, model_validator

from connector.errors import ConfigurationError

# Config keys that hold secrets. A literal value under one of these is a config error.
SECRET_KEY_NAMES = frozenset(
    {"password", "token", "secret", "client_secret", "private_key", "api_key", "security_token", "access_key", "secret_key"}
)
ENV_REFERENCE = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$")


class SecretMissing(ConfigurationError):
    """The referenced environment variable or file is not there. The message names the reference only."""


class Secret(BaseModel):
    """Where to read a secret from: an environment variable or a file (first line, stripped)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    env: str | None = None
    file: Path | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> "Secret":
        if (self.env is None) == (self.file is None):
            raise ValueError("a secret reference needs exactly one of `<name>_env` or `<name>_file`")
        return self

    def get(self) -> str:
        """Read the secret now. Raises SecretMissing naming the variable or file, never a value."""
        if self.env is not None:
            value = os.environ.get(self.env)
            if not value:
                raise SecretMissing(f"environment variable {self.env} is not set")
            return value
        assert self.file is not None
        try:
            return self.file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise SecretMissing(f"secret file {self.file} cannot be read ({exc.strerror})") from None

    def where(self) -> str:
        return f"env:{self.env}" if self.env else f"file:{self.file}"

    def __repr__(self) -> str:
        return f"Secret({self.where()})"

    __str__ = __repr__


def fold_secret_references(node: object, base_dir: Path) -> object:
    """Rewrite `x_env: NAME`, `x_file: PATH` and `x: ${NAME}` into `x: {env|file: ...}` for pydantic.

    A literal string under a secret key is left as it is so that validation reports it with its line.
    """
    if isinstance(node, list):
        return [fold_secret_references(item, base_dir) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict = {}
    for key, value in node.items():
        if isinstance(key, str) and key.endswith("_env") and key[:-4] in SECRET_KEY_NAMES:
            out[key[:-4]] = {"env": value}
        elif isinstance(key, str) and key.endswith("_file") and key[:-5] in SECRET_KEY_NAMES:
            path = Path(str(value)).expanduser()
            out[key[:-5]] = {"file": str(path if path.is_absolute() else base_dir / path)}
        elif key in SECRET_KEY_NAMES and isinstance(value, str) and ENV_REFERENCE.match(value):
            out[key] = {"env": ENV_REFERENCE.match(value).group(1)}  # type: ignore[union-attr]
        else:
            out[key] = fold_secret_references(value, base_dir)
    return out


def literal_secret_paths(node: object, path: tuple = ()) -> list[tuple]:
    """Paths of secret keys that hold a literal value (after folding): each is a config error."""
    found: list[tuple] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key in SECRET_KEY_NAMES and isinstance(value, (str, int)) and value != "" and not ENV_REFERENCE.match(str(value)):
                found.append(path + (key,))
            else:
                found.extend(literal_secret_paths(value, path + (key,)))
    elif isinstance(node, list):
        for i, item in enumerate(node):
            found.extend(literal_secret_paths(item, path + (i,)))
    return found
