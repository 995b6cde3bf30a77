"""The textfile writer shared by the backup, deploy and job metrics."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from ansible.module_utils.tradeops_metrics import escape_label, format_value, update_textfile

MODULE_UTILS = str(Path(__file__).resolve().parents[3] / "plugins" / "module_utils")
METRICS = {"last_outcome": "1 for the outcome of the last run", "duration_seconds": "seconds of the last run"}


def test_series_merge_and_render(tmp_path: Path) -> None:
    update_textfile(tmp_path, "tradeops_x", METRICS, [({"app": "a"}, {"duration_seconds": 1.5})])
    target = update_textfile(tmp_path, "tradeops_x", METRICS,
                             [({"app": "b"}, {"duration_seconds": 2, "last_outcome": True}),
                              ({"app": "a"}, {"last_outcome": 0, "duration_seconds": None})])
    assert target == tmp_path / "tradeops_x.prom"
    assert target.read_text() == (
        "# HELP tradeops_x_last_outcome 1 for the outcome of the last run\n"
        "# TYPE tradeops_x_last_outcome gauge\n"
        'tradeops_x_last_outcome{app="a"} 0\n'
        'tradeops_x_last_outcome{app="b"} 1\n'
        "# HELP tradeops_x_duration_seconds seconds of the last run\n"
        "# TYPE tradeops_x_duration_seconds gauge\n"
        'tradeops_x_duration_seconds{app="a"} 1.5\n'
        'tradeops_x_duration_seconds{app="b"} 2\n')
    assert oct(target.stat().st_mode & 0o777) == "0o644"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_label_values_escaped() -> None:
    assert escape_label('a"b\\c\nd') == 'a\\"b\\\\c\\nd'
    assert format_value(1732590000.1234) == "1732590000.123"
    assert format_value(0.0) == "0"


@pytest.mark.parametrize(("stem", "series", "error"), [
    ("bad-stem", [({}, {})], "letters, digits and _"),
    ("tradeops_x", [({"app": "a"}, {"last_outcom": 1})], "unknown metric(s) last_outcom"),
    ("tradeops_x", [({"bad-label": "a"}, {"last_outcome": 1})], "invalid label name(s) bad-label"),
])
def test_bad_input_is_refused_before_writing(tmp_path: Path, stem, series, error) -> None:
    with pytest.raises(ValueError, match=error.replace("(", r"\(").replace(")", r"\)")):
        update_textfile(tmp_path, stem, METRICS, series)
    assert list(tmp_path.iterdir()) == []


def test_unreadable_or_old_state_is_replaced(tmp_path: Path) -> None:
    (tmp_path / ".tradeops_x_state.json").write_text(json.dumps({"old-format-key": {"last_outcome": 1}}))
    text = update_textfile(tmp_path, "tradeops_x", METRICS, [({"app": "a"}, {"last_outcome": 1})]).read_text()
    assert "old-format-key" not in text and 'tradeops_x_last_outcome{app="a"} 1' in text
    (tmp_path / ".tradeops_x_state.json").write_text("{not json")
    text = update_textfile(tmp_path, "tradeops_x", METRICS, [({"app": "b"}, {"last_outcome": 0})]).read_text()
    assert 'tradeops_x_last_outcome{app="b"} 0' in text


def _writer(directory: str, index: int) -> None:
    for run in range(20):
        update_textfile(directory, "tradeops_x", METRICS, [({"app": f"w{index}"}, {"duration_seconds": run})])


def test_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    # flock() locks belong to open file descriptions: each writer's own open() excludes the others,
    # in threads as in processes.
    procs = [threading.Thread(target=_writer, args=(str(tmp_path), i)) for i in range(4)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(30)
    text = (tmp_path / "tradeops_x.prom").read_text()
    for i in range(4):
        assert f'tradeops_x_duration_seconds{{app="w{i}"}} 19' in text


def test_writers_declaring_different_metrics_keep_each_others_series(tmp_path: Path) -> None:
    update_textfile(tmp_path, "tradeops_x", METRICS, [({"app": "a"}, {"last_outcome": 1})])
    other = {"runs_total": "runs of the other writer"}
    text = update_textfile(tmp_path, "tradeops_x", other, [({"app": "b"}, {"runs_total": 3})]).read_text()
    assert 'tradeops_x_last_outcome{app="a"} 1' in text and 'tradeops_x_runs_total{app="b"} 3' in text
    assert "# HELP tradeops_x_runs_total runs of the other writer" in text
    text = update_textfile(tmp_path, "tradeops_x", METRICS, [({"app": "a"}, {"last_outcome": 0})]).read_text()
    assert 'tradeops_x_last_outcome{app="a"} 0' in text and 'tradeops_x_runs_total{app="b"} 3' in text


# The ops agent also runs on Windows (role windows_schedule), where there is no fcntl: the lock then
# comes from msvcrt. Windows cannot run here; this runs that branch in processes where `import fcntl`
# fails and `msvcrt` is a stand-in whose locking() takes a POSIX record lock of the same byte with the
# same non-blocking contract (OSError when held elsewhere) — the logic of the branch, not Windows itself.
_WINDOWS_LIKE = r"""
import sys, types
import fcntl as _real
sys.modules["fcntl"] = None
msvcrt = types.ModuleType("msvcrt")
msvcrt.LK_NBLCK = 2
def locking(fd, mode, nbytes):
    assert mode == msvcrt.LK_NBLCK and nbytes == 1
    _real.lockf(fd, _real.LOCK_EX | _real.LOCK_NB, 1, 0, 0)
msvcrt.locking = locking
sys.modules["msvcrt"] = msvcrt
import ansible.module_utils
ansible.module_utils.__path__.append(sys.argv[1])
from ansible.module_utils import tradeops_metrics as m
assert m.fcntl is None
"""


def _windows_like(script: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", _WINDOWS_LIKE + script, MODULE_UTILS, *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_windows_lock_branch_excludes_other_processes(tmp_path: Path) -> None:
    holder = _windows_like("h = open(sys.argv[2], 'a'); assert m.try_lock(h); print('held', flush=True); "
                           "__import__('time').sleep(3)", str(tmp_path / "l"))
    assert holder.stdout.readline().strip() == "held"
    other = _windows_like("h = open(sys.argv[2], 'a'); print(m.try_lock(h))", str(tmp_path / "l"))
    assert other.communicate(timeout=30)[0].strip() == "False"
    holder.wait(30)
    again = _windows_like("h = open(sys.argv[2], 'a'); print(m.try_lock(h))", str(tmp_path / "l"))
    assert again.communicate(timeout=30)[0].strip() == "True"  # released with the holder's exit


def test_windows_lock_branch_writers_lose_nothing(tmp_path: Path) -> None:
    writer = ("for n in range(20): m.update_textfile(sys.argv[2], 'tradeops_x', {'duration_seconds': 'x'}, "
              "[({'app': sys.argv[3]}, {'duration_seconds': n})])")
    procs = [_windows_like(writer, str(tmp_path), f"w{i}") for i in range(4)]
    for proc in procs:
        _out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    text = (tmp_path / "tradeops_x.prom").read_text()
    for i in range(4):
        assert f'tradeops_x_duration_seconds{{app="w{i}"}} 19' in text
