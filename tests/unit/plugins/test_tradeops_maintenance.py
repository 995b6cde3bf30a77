"""tradeops_maintenance (the tradeops-maintenance CLI): real SQLite files, real directory trees, a real HTTP
server answering Prometheus API responses in the format Prometheus 2.x returns (the real Prometheus is proven
in molecule/maintenance)."""

from __future__ import annotations

import datetime as dt
import http.server
import json
import os
import re
import sqlite3
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from ansible.module_utils import tradeops_maintenance as tm
from plugin_testlib import free_port

NOW = dt.datetime(2026, 11, 26, 6, 0, tzinfo=dt.UTC)


def _vector(*samples: tuple[dict[str, str], str]) -> dict[str, Any]:
    return {"status": "success", "data": {"resultType": "vector",
                                          "result": [{"metric": m, "value": [1764136800.0, v]} for m, v in samples]}}


# Answers as GET /api/v1/query returns them (Prometheus 2.42, Debian 12), by figure name.
RECORDED = {
    "cpu_avg": _vector(({"instance": "app1"}, "12.5")),
    "cpu_peak": _vector(({"instance": "app1"}, "97.25")),
    "memory_avg": _vector(({"instance": "app1", "job": "node"}, "40.123")),
    "memory_peak": _vector(({"instance": "app1", "job": "node"}, "61.7")),
    "disk_avg": _vector(({"instance": "app1", "mountpoint": "/"}, "50"), ({"instance": "app1", "mountpoint": "/srv"},
                                                                          "NaN")),
    "disk_peak": _vector(({"instance": "app1", "mountpoint": "/"}, "55.5"), ({"instance": "app1", "mountpoint": "/srv"},
                                                                             "NaN")),
    "availability": _vector(({"instance": "app1", "job": "blackbox", "probe": "liveness"}, "100"),
                            ({"instance": "app1", "job": "blackbox", "probe": "readiness"}, "98.61111111111111")),
    "alerts": _vector(({"__name__": "ALERTS", "alertname": "AppProbeFailed", "alertstate": "firing",
                        "instance": "app1", "severity": "critical"}, "1")),
}
BAD_QUERY = {"status": "error", "errorType": "bad_data",
             "error": 'invalid parameter "query": 1:1: parse error: unexpected character'}


def _db(path: Path, rows: int = 2000) -> Path:
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("CREATE TABLE fills (id INTEGER PRIMARY KEY, sym TEXT, px REAL)")
        conn.execute("CREATE INDEX fills_sym ON fills (sym)")
        conn.executemany("INSERT INTO fills (sym, px) VALUES (?, ?)", [(f"S{i % 50}" * 20, i) for i in range(rows)])
    conn.close()
    return path


def _write_cfg(tmp_path: Path, **extra: Any) -> Path:
    cfg = {"host": "app1", "metrics_dir": str(tmp_path / "textfile"), "reports_dir": str(tmp_path / "reports")}
    cfg.update(extra)
    path = tmp_path / "maintenance.json"
    path.write_text(json.dumps(cfg))
    return path


def _prom(tmp_path: Path) -> str:
    return (tmp_path / "textfile" / "tradeops_job.prom").read_text()


# --------------------------------------------------------------------------- configuration


@pytest.mark.parametrize(("raw", "message"), [
    ({"frobnicate": 1}, "unknown configuration keys: frobnicate"),
    ({"sqlite": [{"path": "relative.db"}]}, "absolute path"),
    ({"sqlite": [{"name": "a", "path": "/x/a.db"}, {"name": "a", "path": "/x/b.db"}]}, "names must be unique"),
    ({"cleanup": [{"path": "/var"}]}, "refusing a system or top-level directory"),
    ({"cleanup": [{"path": "/cache"}]}, "refusing a system or top-level directory"),
    ({"cleanup": [{"path": "/opt/app/cache", "max_age_days": 0}]}, "max_age_days must be a number > 0"),
    ({"keep": {"weekly": 3}}, "keep.weekly"),
    ({"busy_timeout_ms": -1}, "busy_timeout_ms"),
    ({"prometheus": {"url": "mon1:9090"}}, "give http(s)://host:port"),
    ({"prometheus": {"url": "http://mon1:9090", "colour": "red"}}, "unknown prometheus keys: colour"),
])
def test_bad_configuration_is_refused_with_what_to_fix(raw, message):
    with pytest.raises(tm.MaintenanceError, match=re.escape(message)):
        tm.load_config(raw)


def test_configuration_defaults():
    cfg = tm.load_config({"host": "app1", "prometheus": {"url": "http://mon1:9090/"}})
    assert cfg["prometheus"]["url"] == "http://mon1:9090" and cfg["prometheus"]["instance"] == "app1"
    assert cfg["keep"] == {"daily": 31, "monthly": 12} and cfg["busy_timeout_ms"] == 30000
    assert tm.load_config({"prometheus": {"url": ""}})["prometheus"] is None


# --------------------------------------------------------------------------- sqlite


def test_sqlite_turns_wal_on_checks_and_vacuums_a_real_database(tmp_path):
    db = _db(tmp_path / "app.db")
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("DELETE FROM fills WHERE id % 2 = 0")  # free pages for VACUUM to give back
    conn.close()
    result = tm.maintain_sqlite(db)
    assert result["status"] == "ok", result
    assert result["journal_mode"] == "wal" and result["integrity"] == ["ok"]
    assert result["size_after"] < result["size_before"]
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA freelist_count").fetchone()[0] == 0
    assert conn.execute("SELECT count(*) FROM sqlite_stat1").fetchone()[0] > 0  # ANALYZE ran
    assert conn.execute("SELECT count(*) FROM fills").fetchone()[0] == 1000
    conn.close()


def test_a_missing_database_is_skipped_and_never_created(tmp_path):
    result = tm.maintain_sqlite(tmp_path / "later.db")
    assert result["status"] == "skipped" and not (tmp_path / "later.db").exists()


def test_a_file_that_is_not_a_database_fails(tmp_path):
    bad = tmp_path / "app.db"
    bad.write_bytes(b"this is not sqlite" * 100)
    result = tm.maintain_sqlite(bad)
    assert result["status"] == "failed" and "not a database" in result["detail"]


def test_a_corrupted_page_fails_the_integrity_check_and_nothing_else_runs(tmp_path):
    db = _db(tmp_path / "app.db", rows=5000)
    conn = sqlite3.connect(db)
    page_size, pages = conn.execute("PRAGMA page_size").fetchone()[0], conn.execute("PRAGMA page_count").fetchone()[0]
    conn.close()
    with open(db, "r+b") as handle:  # scribble over the middle of the file (b-tree pages), header intact
        handle.seek(page_size * (pages // 2))
        handle.write(b"\xff" * page_size * 3)
    result = tm.maintain_sqlite(db)
    assert result["status"] == "failed", result
    assert "malformed" in result["detail"] or "integrity_check" in result["detail"]


def test_the_app_keeps_writing_while_maintenance_runs(tmp_path):
    """The live database: a writer in another thread is never refused (busy timeout, WAL)."""
    db = _db(tmp_path / "app.db", rows=20000)
    errors: list[str] = []
    stop = threading.Event()
    written = 0

    def writer() -> None:
        nonlocal written
        conn = sqlite3.connect(db, timeout=30)
        while not stop.is_set():
            try:
                with conn:
                    conn.execute("INSERT INTO fills (sym, px) VALUES ('LIVE', 1)")
                written += 1
                time.sleep(0.002)  # an app writes often, not in a tight loop that starves every other writer
            except sqlite3.Error as exc:
                errors.append(str(exc))
        conn.close()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        time.sleep(0.05)
        result = tm.maintain_sqlite(db, busy_timeout_ms=30000)
    finally:
        time.sleep(0.05)
        stop.set()
        thread.join()
    assert result["status"] == "ok", result
    assert errors == [] and written > 0
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT count(*) FROM fills WHERE sym = 'LIVE'").fetchone()[0] == written
    conn.close()


def test_a_database_locked_past_the_busy_timeout_cannot_be_checked(tmp_path):
    db = _db(tmp_path / "app.db", rows=10)
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        result = tm.maintain_sqlite(db, busy_timeout_ms=200)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert result["status"] == "cannot_check" and "locked" in result["detail"]


# --------------------------------------------------------------------------- cleanup


def _tree(root: Path, now: float) -> dict[str, Path]:
    old, new = now - 10 * 86400, now - 3600
    outside = root.parent / "outside"
    outside.mkdir()
    (outside / "precious").write_text("keep me")
    os.utime(outside / "precious", (old, old))
    paths = {"old": root / "old.bin", "new": root / "new.bin", "deep_old": root / "a" / "b" / "old.txt",
             "deep_new": root / "a" / "new.txt", "link": root / "link-out", "dirlink": root / "dir-out",
             "precious": outside / "precious", "empty_old": root / "empty"}
    for key in ("old", "new", "deep_old", "deep_new"):
        paths[key].parent.mkdir(parents=True, exist_ok=True)
        paths[key].write_bytes(b"x" * 100)
    paths["empty_old"].mkdir()
    paths["link"].symlink_to(outside / "precious")
    paths["dirlink"].symlink_to(outside, target_is_directory=True)
    for key in ("old", "deep_old"):
        os.utime(paths[key], (old, old))
    for key in ("new", "deep_new"):
        os.utime(paths[key], (new, new))
    for key in ("link", "dirlink"):
        os.utime(paths[key], (old, old), follow_symlinks=False)
    for directory in (root / "a" / "b", paths["empty_old"]):
        os.utime(directory, (old, old))
    return paths


def test_cleanup_removes_only_old_files_and_never_leaves_its_directory(tmp_path):
    now = time.time()
    root = tmp_path / "app" / "cache"
    root.mkdir(parents=True)
    paths = _tree(root, now)
    os.utime(root / "a" / "b", (now - 10 * 86400,) * 2)
    result = tm.cleanup_dir(root, 7, now=now)
    assert result["status"] == "ok" and result["errors"] == []
    assert not paths["old"].exists() and not paths["deep_old"].exists()
    assert paths["new"].exists() and paths["deep_new"].exists()
    assert not paths["link"].is_symlink() and not paths["dirlink"].is_symlink()  # the links, not their targets
    assert paths["precious"].read_text() == "keep me"
    assert not paths["empty_old"].exists() and root.is_dir() and (root / "a").is_dir()
    assert result["bytes"] == 200


def test_cleanup_dry_run_removes_nothing_and_a_missing_directory_is_skipped(tmp_path):
    now = time.time()
    root = tmp_path / "app" / "cache"
    root.mkdir(parents=True)
    paths = _tree(root, now)
    result = tm.cleanup_dir(root, 7, now=now, dry_run=True)
    assert str(paths["old"]) in result["removed"] and paths["old"].exists()
    assert tm.cleanup_dir(tmp_path / "app" / "nothing", 7)["status"] == "skipped"
    with pytest.raises(tm.MaintenanceError, match="refusing"):
        tm.cleanup_dir("/", 1)


# --------------------------------------------------------------------------- Prometheus


def test_queries_select_the_instance_and_span_the_period():
    daily = tm.build_queries("app1", "daily")
    assert set(daily) == set(RECORDED)
    assert 'node_cpu_seconds_total{instance="app1",mode="idle"}[5m]' in daily["cpu_avg"]
    assert daily["cpu_peak"].startswith("max_over_time(") and daily["cpu_peak"].endswith("[1d:1m])")
    assert daily["availability"] == '100 * avg_over_time(probe_success{job="blackbox",instance="app1"}[1d])'
    assert daily["alerts"] == 'max_over_time(ALERTS{alertstate="firing",instance="app1"}[1d])'
    monthly = tm.build_queries('we"ird', "monthly", rate_window="2m", step="1h")
    assert monthly["memory_avg"].endswith("[30d:1h])") and 'instance="we\\"ird"' in monthly["memory_avg"]
    assert "[2m]" in monthly["cpu_avg"]


def test_recorded_answers_become_report_figures():
    answers = {name: tm.parse_vector(answer) for name, answer in RECORDED.items()}
    figures = tm.summarize(answers)
    assert figures["cpu_percent"] == {"avg": 12.5, "peak": 97.25}
    assert figures["memory_percent"] == {"avg": 40.12, "peak": 61.7}
    assert figures["disk_percent"] == {"/": {"avg": 50.0, "peak": 55.5}, "/srv": {"avg": None, "peak": None}}
    assert figures["availability_percent"] == {"liveness": 100.0, "readiness": 98.611}
    assert figures["alerts_fired"] == [{"alertname": "AppProbeFailed", "severity": "critical"}]
    empty = tm.summarize({name: [] for name in RECORDED})
    assert empty["cpu_percent"] == {"avg": None, "peak": None} and empty["alerts_fired"] == []


@pytest.mark.parametrize("answer", [BAD_QUERY, {"status": "success", "data": {"resultType": "matrix", "result": []}},
                                    ["not", "an", "object"]])
def test_unusable_answers_cannot_be_checked(answer):
    with pytest.raises(tm.CannotCheck):
        tm.parse_vector(answer)


class _FakePrometheus(http.server.BaseHTTPRequestHandler):
    """A real HTTP server answering /api/v1/query with the recorded answer of the query's figure."""

    queries: ClassVar[dict[str, str]] = {}
    seen: ClassVar[list[dict[str, list[str]]]] = []

    def do_GET(self) -> None:
        params = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
        self.seen.append(params)
        name = next((n for n, q in self.queries.items() if q == params.get("query", [""])[0]), None)
        body, code = (json.dumps(RECORDED[name]), 200) if name else (json.dumps(BAD_QUERY), 400)
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def prometheus() -> Iterator[str]:
    _FakePrometheus.queries = tm.build_queries("app1", "daily")
    _FakePrometheus.seen = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FakePrometheus)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def test_figures_over_http_and_an_error_answer(prometheus):
    prom = tm.load_config({"host": "app1", "prometheus": {"url": prometheus}})["prometheus"]
    figures = tm.prometheus_figures(prom, "daily", NOW.timestamp())
    assert figures["cpu_percent"]["peak"] == 97.25
    assert {p["time"][0] for p in _FakePrometheus.seen} == {f"{NOW.timestamp():.3f}"}
    with pytest.raises(tm.CannotCheck, match=r"parse error"):
        tm.prometheus_figures(prom, "monthly", NOW.timestamp())  # queries the fake does not know: HTTP 400


def test_an_unreachable_prometheus_cannot_be_checked():
    with pytest.raises(tm.CannotCheck, match="unreachable"):
        tm.prometheus_get(f"http://127.0.0.1:{free_port()}", "up", NOW.timestamp(), 2.0)


# --------------------------------------------------------------------------- reports


def test_report_files_markdown_json_and_retention(tmp_path, prometheus):
    cfg = tm.load_config({"host": "app1", "reports_dir": str(tmp_path / "reports"), "keep": {"daily": 2},
                          "prometheus": {"url": prometheus}, "disk_paths": [str(tmp_path)]})
    for day in (22, 23, 24, 25, 26):
        report = tm.make_report(cfg, "daily", now=NOW.replace(day=day))
        out = tm.write_report(cfg, report)
    assert report["status"] == "failed" and report["problems"] == ["alerts fired: AppProbeFailed"]
    names = sorted(p.name for p in (tmp_path / "reports").iterdir())
    assert names == ["app1-daily-2026-11-25.json", "app1-daily-2026-11-25.md",
                     "app1-daily-2026-11-26.json", "app1-daily-2026-11-26.md"]
    assert sorted(out["deleted"]) == ["app1-daily-2026-11-24.json", "app1-daily-2026-11-24.md"]
    saved = json.loads((tmp_path / "reports" / "app1-daily-2026-11-26.json").read_text())
    assert saved["prometheus"]["memory_percent"] == {"avg": 40.12, "peak": 61.7}
    assert saved["start"] == "2026-11-25T06:00:00+00:00" and saved["health"] is None
    markdown = (tmp_path / "reports" / "app1-daily-2026-11-26.md").read_text()
    assert "| CPU | 12.5 % | 97.25 % |" in markdown and "| readiness | 98.611 % |" in markdown
    assert "Alerts fired: AppProbeFailed (critical)" in markdown
    assert str(tmp_path) in saved["host_facts"]["disk_percent"]
    assert oct((tmp_path / "reports" / "app1-daily-2026-11-26.md").stat().st_mode & 0o777) == "0o640"
    monthly = tm.make_report(cfg, "monthly", now=NOW)
    assert monthly["date"] == "2026-11" and monthly["status"] == "cannot_check"  # the fake knows daily queries only


def test_report_health_checks_decide_the_status(tmp_path):
    healthy = tm.load_config({"host": "app1", "health": {"thresholds": {"disk": {"paths": [str(tmp_path)],
                                                                                  "warning": 100, "critical": 100}}}})
    assert tm.make_report(healthy, "daily")["status"] == "ok"
    down = tm.load_config({"host": "app1", "health": {"tcp": [f"127.0.0.1:{free_port()}"], "timeout": 1}})
    report = tm.make_report(down, "daily")
    assert report["status"] == "failed" and report["problems"][0].startswith("health unhealthy")


# --------------------------------------------------------------------------- command line and job metric


def test_cli_exit_codes_and_job_metric(tmp_path, capsys):
    db = _db(tmp_path / "app.db", rows=10)
    config = _write_cfg(tmp_path, sqlite=[{"name": "app", "path": str(db)}])
    assert tm.main_cli(["--config", str(config), "--json", "sqlite"]) == 0
    assert json.loads(capsys.readouterr().out)["databases"][0]["journal_mode"] == "wal"
    assert 'tradeops_job_last_success{task="maintenance-sqlite"} 1' in _prom(tmp_path)
    db.write_bytes(b"garbage" * 1000)
    assert tm.main_cli(["--config", str(config), "sqlite"]) == 1
    assert 'tradeops_job_last_success{task="maintenance-sqlite"} 0' in _prom(tmp_path)
    assert "tradeops_job_last_run_timestamp_seconds{task=\"maintenance-sqlite\"}" in _prom(tmp_path)
    # a report that only found the host unhealthy did its job: exit 1, metric 1
    down = _write_cfg(tmp_path, health={"tcp": [f"127.0.0.1:{free_port()}"], "timeout": 1})
    assert tm.main_cli(["--config", str(down), "report", "--period", "monthly"]) == 1
    assert 'tradeops_job_last_success{task="maintenance-report-monthly"} 1' in _prom(tmp_path)
    unreachable = _write_cfg(tmp_path, prometheus={"url": f"http://127.0.0.1:{free_port()}", "timeout": 1})
    assert tm.main_cli(["--config", str(unreachable), "report"]) == 3
    assert 'tradeops_job_last_success{task="maintenance-report-daily"} 0' in _prom(tmp_path)
    assert list((tmp_path / "reports").glob("app1-daily-*.md")), "a report is written with what could be read"
    capsys.readouterr()
    assert tm.main_cli(["--config", str(tmp_path / "missing.json"), "sqlite"]) == 2
    assert "cannot read the configuration" in capsys.readouterr().err
    assert tm.main_cli(["--config", str(config), "frobnicate"]) == 2
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"cleanup": [{"path": "/etc"}]}))
    assert tm.main_cli(["--config", str(bad), "check"]) == 2 and "refusing" in capsys.readouterr().err
    assert tm.main_cli(["--config", str(config), "check"]) == 0
    assert tm.main_cli(["--help"]) == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="switching to a database's owner needs root")
def test_as_root_the_work_is_done_as_the_database_owner():
    """Files SQLite creates next to the database (-wal, -shm) belong to its owner, not to root."""
    with tempfile.TemporaryDirectory() as top:  # pytest's own tmp_path is 0700 root: not traversable by the owner
        os.chmod(top, 0o755)  # noqa: S103 - traversable by the database owner, like an app directory
        data = Path(top) / "data"
        data.mkdir()
        _as_owner_checks(data)


def _as_owner_checks(data: Path) -> None:
    db = _db(data / "app.db", rows=10)
    for path in (data, db):
        os.chown(path, 65534, 65534)
    with tm.as_owner_of(db):
        assert (os.geteuid(), os.getegid()) == (65534, 65534)
        (data / "made-inside").touch()
    assert (os.geteuid(), os.getegid()) == (0, 0)
    assert (data / "made-inside").stat().st_uid == 65534
    assert tm.maintain_sqlite(db)["status"] == "ok"
    assert {p.name: p.stat().st_uid for p in data.iterdir()} == {"app.db": 65534, "made-inside": 65534}
