"""The textfile writer shared by the backup, deploy and job metrics."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from ansible.module_utils.tradeops_metrics import escape_label, format_value, update_textfile

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
