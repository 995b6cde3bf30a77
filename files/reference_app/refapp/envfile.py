"""Read KEY=VALUE files (the format of a systemd EnvironmentFile).

Blank lines and lines starting with ``#`` or ``;`` are ignored, an optional ``export``
prefix is accepted, and a value wrapped in matching single or double quotes is unquoted.
Values are never echoed in error messages: they may be secrets.
"""

from __future__ import annotations

import os
import re
from collections.abc import MutableMapping
from pathlib import Path

_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class EnvFileError(ValueError):
    """The file cannot be read or a line is not KEY=VALUE."""


def parse_env_text(text: str, source: str = "<env>") -> dict[str, str]:
    """Parse the text of an env file into a dict (later keys win)."""
    result: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("export "):
            line = line[len("export ") :].lstrip()
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not _KEY.match(key):
            raise EnvFileError(f"{source}:{number}: expected KEY=VALUE")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        result[key] = value
    return result


def load_env_file(path: str | os.PathLike[str], environ: MutableMapping[str, str] | None = None) -> list[str]:
    """Set the file's variables that are not already in ``environ``; return the keys set."""
    target = os.environ if environ is None else environ
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise EnvFileError(f"cannot read env file {path}: {exc.strerror or exc}") from exc
    applied = []
    for key, value in parse_env_text(text, str(path)).items():
        if key not in target:
            target[key] = value
            applied.append(key)
    return applied
