"""`refapp migrate` and the jobs, run as real commands against SQLite."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta

from .conftest import base_env, free_port, run_refapp


def _run(url: str, *args: str):
    proc = run_refapp(*args, env=base_env(APP_DATABASE_URL=url))
    lines = proc.stdout.strip().splitlines()
    return proc, (json.loads(lines[-1]) if lines else None)


def test_migrate_is_idempotent(tmp_path):
    url = f"sqlite:///{tmp_path}/jobs.db"
    proc, summary = _run(url, "migrate")
    assert proc.returncode == 0, proc.stderr
    assert summary["ok"] is True and summary["from_version"] is None and summary["applied"] == [1, 2]
    proc, summary = _run(url, "migrate")
    assert proc.returncode == 0 and summary["from_version"] == 2 and summary["applied"] == []
    with sqlite3.connect(tmp_path / "jobs.db") as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        versions = [row[0] for row in conn.execute("SELECT version FROM schema_version ORDER BY version")]
    assert {"schema_version", "scans", "kv", "analyses"} <= tables
    assert versions == [1, 2]


def test_jobs_write_rows(tmp_path):
    db_path = tmp_path / "jobs.db"
    url = f"sqlite:///{db_path}"
    assert _run(url, "migrate")[0].returncode == 0
    proc, summary = _run(url, "daily-scan", "--symbols", "spy, qqq,SPY")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert summary["ok"] is True and summary["job"] == "daily-scan" and summary["symbols"] == 2
    assert len(proc.stdout.strip().splitlines()) == 1
    proc, summary = _run(url, "weekly-analysis")
    assert proc.returncode == 0 and summary["scans_counted"] == 1 and summary["symbols_distinct"] == 2
    old = (datetime.now(UTC) - timedelta(days=40)).isoformat(timespec="microseconds")
    with sqlite3.connect(db_path) as conn:
        conn.execute("INSERT INTO scans (kind, created_at, symbols) VALUES ('daily', ?, 'OLD')", (old,))
        conn.execute(
            "INSERT INTO analyses (created_at, period_start, scans_counted, symbols_distinct) VALUES (?, ?, 0, 0)",
            (old, old),
        )
    proc, summary = _run(url, "cleanup", "--days", "30")
    assert proc.returncode == 0 and summary["deleted_scans"] == 1 and summary["deleted_analyses"] == 1
    with sqlite3.connect(db_path) as conn:
        scans = conn.execute("SELECT kind, symbols FROM scans").fetchall()
        analyses = conn.execute("SELECT scans_counted FROM analyses").fetchall()
        last_runs = dict(conn.execute("SELECT key, value FROM kv").fetchall())
    assert scans == [("daily", "QQQ,SPY")]
    assert analyses == [(1,)]
    assert set(last_runs) == {"last_run:daily-scan", "last_run:weekly-analysis", "last_run:cleanup"}


def test_jobs_fail_clearly_before_migrate_and_without_database(tmp_path):
    proc, summary = _run(f"sqlite:///{tmp_path}/absent.db", "daily-scan")
    assert proc.returncode == 1 and summary["ok"] is False and "not found" in summary["error"]
    sqlite3.connect(tmp_path / "empty.db").close()
    proc, summary = _run(f"sqlite:///{tmp_path}/empty.db", "weekly-analysis")
    assert proc.returncode == 1 and "refapp migrate" in summary["error"]
    proc = run_refapp("migrate")
    assert proc.returncode == 2 and "APP_DATABASE_URL is not set" in proc.stderr
    proc, _ = _run(f"sqlite:///{tmp_path}/no/such/dir/x.db", "migrate")
    assert proc.returncode == 1 and "does not exist" in proc.stderr
    proc, _ = _run(f"sqlite:///{tmp_path}/x.db", "cleanup", "--days", "-1")
    assert proc.returncode == 2


def test_migrate_unreachable_postgres_is_a_clear_failure():
    port = free_port()
    proc, _ = _run(f"postgresql://app:hunter2@127.0.0.1:{port}/db", "migrate")
    assert proc.returncode == 1
    assert f"cannot migrate postgresql://app:***@127.0.0.1:{port}/db" in proc.stderr
    assert "connection refused" in proc.stderr
    assert "hunter2" not in proc.stderr + proc.stdout


def test_check_command_and_version(tmp_path):
    url = f"sqlite:///{tmp_path}/c.db"
    proc = run_refapp("check", env=base_env(APP_DATABASE_URL=url))
    assert proc.returncode == 1 and json.loads(proc.stdout)["status"] == "not ready"
    assert _run(url, "migrate")[0].returncode == 0
    proc = run_refapp("check", env=base_env(APP_DATABASE_URL=url))
    assert proc.returncode == 0 and json.loads(proc.stdout)["checks"]["database"]["ok"] is True
    proc = run_refapp("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == "0.0.0.dev0"
    proc = run_refapp("--help")
    assert proc.returncode == 0 and "APP_DATABASE_URL" in proc.stdout and "exit codes" in proc.stdout
