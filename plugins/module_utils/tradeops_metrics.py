# Copyright: tradeops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Metrics for node_exporter's textfile collector, written the way the collector needs them.

One ``<stem>.prom`` file per kind of fact (``tradeops_backup``, ``tradeops_deploy``,
``tradeops_job``), holding every series of that kind on the host. A writer updates only its
own series: the values are kept in ``.<stem>_state.json`` next to the file, merged under an
exclusive lock (``.<stem>.lock``) and the whole file is rewritten through a temporary file and
a rename, so node_exporter never reads half a file and two writers never lose each other's
values.

Standard library only. This file is shipped to hosts twice: as ``ansible.module_utils`` for
the modules and as ``tradeops_agent/metrics.py`` in the ops agent wheel
(``scripts/build_agent.py``); there is no other copy.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import IO, Any

try:
    import fcntl
except ImportError:  # Windows: the ops agent's backup and maintenance tools run there too (role windows_schedule)
    fcntl = None  # type: ignore[assignment]
    import msvcrt

Labels = Mapping[str, str]
Values = Mapping[str, "float | int | bool | None"]

_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*\Z")


def escape_label(value: str) -> str:
    """A label value as the exposition format wants it (backslash, double quote and newline escaped)."""
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def format_value(value: float) -> str:
    """Up to millisecond precision, without trailing zeros (``1``, ``0.25``, ``1732590000.123``)."""
    return f"{float(value):.3f}".rstrip("0").rstrip(".")


def _series_key(labels: Labels) -> str:
    return json.dumps(dict(sorted(labels.items())), sort_keys=True)


def _is_labels_key(key: str) -> bool:
    try:
        return isinstance(json.loads(key), dict)
    except ValueError:
        return False


def render(stem: str, metrics: Mapping[str, str], state: Mapping[str, Mapping[str, float]]) -> str:
    """The text of ``<stem>.prom``: for each metric (in ``metrics``' order) HELP, TYPE and its series."""
    lines: list[str] = []
    for metric, text in metrics.items():
        name = f"{stem}_{metric}"
        lines += [f"# HELP {name} {text}", f"# TYPE {name} gauge"]
        for key in sorted(state):
            if metric in state[key]:
                labels = ",".join(f'{k}="{escape_label(v)}"' for k, v in json.loads(key).items())
                lines.append(f"{name}{{{labels}}} {format_value(state[key][metric])}")
    return "\n".join(lines) + "\n"


def try_lock(handle: IO[Any]) -> bool:
    """An exclusive lock on an open file, without waiting: True when taken, False when another process
    holds it. Released when the file is closed. flock(2) on POSIX; on Windows (no fcntl) msvcrt's
    lock of the file's first byte."""
    if fcntl is not None:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True
    handle.seek(0)
    try:
        msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
    except OSError:
        return False
    return True


def lock(handle: IO[Any], poll: float = 0.05) -> None:
    """An exclusive lock on an open file, waiting for it (see try_lock)."""
    if fcntl is not None:
        fcntl.flock(handle, fcntl.LOCK_EX)
        return
    while not try_lock(handle):
        time.sleep(poll)


def fsync_dir(path: str | Path) -> None:
    """Make a rename in ``path`` durable (best effort: some filesystems refuse; Windows has no directory fsync)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | Path, data: bytes | str, mode: int = 0o600) -> None:
    """Write ``path`` through a temporary file and a rename: readers see the old or the new content."""
    path = Path(path)
    raw = data.encode("utf-8") if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(raw)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def _load_state(path: Path) -> tuple[dict[str, dict[str, float]], dict[str, str]]:
    """The series and the HELP texts kept in the state file; anything unreadable counts as empty
    (the file is rewritten whole by this writer, never merged with garbage)."""
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}, {}
    if not isinstance(loaded, dict):
        return {}, {}
    series = loaded.get("series") if isinstance(loaded.get("series"), dict) else loaded  # older files: series only
    known = loaded.get("help") if isinstance(loaded.get("help"), dict) else {}
    return ({k: v for k, v in series.items() if isinstance(v, dict) and _is_labels_key(k)},
            {str(k): str(v) for k, v in known.items() if _NAME.match(str(k))})


def update_textfile(directory: str | Path, stem: str, metrics: Mapping[str, str],
                    series: Iterable[tuple[Labels, Values]]) -> Path:
    """Merge ``series`` (pairs of labels and ``{metric: value}``; ``None`` leaves a value as it was)
    into ``<directory>/<stem>.prom`` and rewrite it atomically. Returns the file's path.

    ``metrics`` maps each metric (the part after ``<stem>_``) to its HELP text; a value for a
    metric not in it is an error (a typo would otherwise publish nothing). Metrics that other
    writers of the same file declared are kept (their HELP is remembered in the state file)."""
    if not _NAME.match(stem):
        raise ValueError(f"metric file stem {stem!r}: letters, digits and _ only")
    updates = [(dict(labels), dict(values)) for labels, values in series]
    for labels, values in updates:
        unknown = sorted(set(values) - set(metrics))
        if unknown:
            raise ValueError(f"{stem}: unknown metric(s) {', '.join(unknown)} (known: {', '.join(metrics)})")
        bad = [k for k in labels if not _NAME.match(k)]
        if bad:
            raise ValueError(f"{stem}: invalid label name(s) {', '.join(bad)}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state_path = directory / f".{stem}_state.json"
    with open(directory / f".{stem}.lock", "a") as handle:
        lock(handle)
        state, known = _load_state(state_path)
        for labels, values in updates:
            current = state.setdefault(_series_key(labels), {})
            current.update({k: float(v) for k, v in values.items() if v is not None})
        # Every writer of a file may publish other metrics: keep the HELP of all of them, this
        # writer's text winning, so none of another writer's series is dropped from the file.
        known = {**metrics, **{k: v for k, v in sorted(known.items()) if k not in metrics}}
        atomic_write(state_path, json.dumps({"help": known, "series": state}, indent=2, sort_keys=True) + "\n",
                      0o644)
        target = directory / f"{stem}.prom"
        atomic_write(target, render(stem, known, state), 0o644)
    return target
