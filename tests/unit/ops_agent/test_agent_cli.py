"""The installed console scripts tradeops-health and tradeops-release (from the wheel, in a venv)."""

from __future__ import annotations

import json
import socket
from pathlib import Path

from .conftest import APP_VERSION, MODULE_UTILS, build_agent, run


def _health(venv, *args: str):
    return run(venv / "bin" / "tradeops-health", *args, timeout=30)


def _release(venv, *args: str):
    return run(venv / "bin" / "tradeops-release", *args, timeout=30)


def test_installed_package_is_the_module_utils_code(venv):
    proc = run(venv / "bin" / "python", "-c",
               "import tradeops_agent, tradeops_agent.health as h, tradeops_agent.release as r; "
               "print(tradeops_agent.__version__); print(h.__file__); print(r.__file__)")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    version, health_file, release_file = proc.stdout.split()
    assert version == build_agent.DEFAULT_VERSION
    assert Path(health_file).read_bytes() == (MODULE_UTILS / "tradeops_health.py").read_bytes()
    assert Path(release_file).read_bytes() == (MODULE_UTILS / "tradeops_release.py").read_bytes()
    assert "include-system-site-packages = true" in (venv / "pyvenv.cfg").read_text()


def test_health_healthy_exit_0_with_json(venv, http_server):
    port = http_server.rsplit(":", 1)[1]
    proc = _health(venv, "--url", f"{http_server}/health", "--json-field", "version", "--json-value", APP_VERSION,
                   "--tcp", f"127.0.0.1:{port}", "--json")  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    assert report["status"] == "healthy" and report["failed_checks"] == [] and report["attempts"] == 1
    assert [(c["kind"], c["status"]) for c in report["checks"]] == [("http", "healthy"), ("tcp", "healthy")]
    assert report["checks"][0]["data"] == {"status": 200, "json_value": APP_VERSION}


def test_health_text_output(venv, http_server):
    proc = _health(venv, "--url", f"{http_server}/health")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("HEALTHY: healthy after 1 attempt(s)")
    assert f"{http_server}/health" in proc.stdout and "HTTP 200" in proc.stdout


def test_health_unhealthy_exit_2(venv, http_server):
    proc = _health(venv, "--url", f"{http_server}/down", "--json")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    assert report["status"] == "unhealthy" and report["failed_checks"] == [f"{http_server}/down"]
    assert "got 503" in report["checks"][0]["detail"] and report["checks"][0]["data"]["status"] == 503
    wrong_version = _health(venv, "--url", f"{http_server}/health", "--json-field", "version", "--json-value", "9.9.9")
    assert wrong_version.returncode == 2 and "expected '9.9.9'" in wrong_version.stdout
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    refused = _health(venv, "--url", f"http://127.0.0.1:{closed}/health", "--timeout", "2")
    assert refused.returncode == 2 and "connection refused" in refused.stdout


def test_health_degraded_exit_1(venv, http_server):
    # any used space on / is above a 0 % warning limit and below a 100 % critical one
    proc = _health(venv, "--url", f"{http_server}/health", "--disk", "/", "--disk-limits", "0:100", "--json")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    assert report["status"] == "degraded" and report["failed_checks"] == ["disk:/"]


def test_health_could_not_check_exit_3(venv):
    for args, needle in (
        (["--frobnicate"], "unrecognized arguments"),
        ([], "nothing to check"),
        (["--url", "ftp://127.0.0.1/"], "must start with http:// or https://"),
        (["--disk", "/", "--disk-limits", "95:80"], "warning"),
        (["--config", "/nonexistent/health.json"], "--config"),
    ):
        proc = _health(venv, *args)
        assert proc.returncode == 3, (args, proc.stdout, proc.stderr)
        assert needle in proc.stderr, (args, proc.stderr)
    help_ = _health(venv, "--help")
    assert help_.returncode == 0 and "3 could not check" in help_.stdout


def test_release_help_list_and_lock(venv, tmp_path):
    help_ = _release(venv, "--help")
    assert help_.returncode == 0 and "rollback" in help_.stdout and "--path" in help_.stdout
    tree = tmp_path / "app"
    tree.mkdir()
    listing = _release(venv, "--path", tree, "list")
    assert listing.returncode == 0, listing.stderr
    result = json.loads(listing.stdout)
    assert result["action"] == "list" and result["releases"] == [] and result["current"] is None
    assert not result["changed"] and sorted(p.name for p in tree.iterdir()) == []  # listing writes nothing
    lock = _release(venv, "--path", tree, "--actor", "alice", "lock", "--lock-reason", "maintenance",
                    "--lock-pid", "1")  # fmt: skip
    assert lock.returncode == 0, lock.stderr
    assert json.loads(lock.stdout)["changed"] is True
    refused = _release(venv, "--path", tree, "--actor", "bob", "lock", "--lock-reason", "deploy", "--lock-pid", "1")
    assert refused.returncode == 1 and "alice" in refused.stderr, refused.stderr
    ledger = [json.loads(line) for line in (tree / "ledger.jsonl").read_text().splitlines()]
    assert [e["action"] for e in ledger] == ["lock"]
    bad = _release(venv, "--path", tree, "frobnicate")
    assert bad.returncode == 2 and "invalid choice" in bad.stderr


def test_backup_cli_backs_up_and_verifies_sqlite_with_the_hosts_python(venv, tmp_path):
    """tradeops-backup from the wheel on the hosts' interpreter: an SQLite backup, verified by a scratch restore."""
    import sqlite3

    db = tmp_path / "app.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE fills (id INTEGER PRIMARY KEY, px REAL)")
        conn.executemany("INSERT INTO fills (px) VALUES (?)", [(i,) for i in range(30)])
    conn.close()
    key = tmp_path / "backup.key"  # every backup is age-encrypted and signed with the set's key
    key.write_text("agent-key-" + "d" * 40)
    key.chmod(0o600)
    config = tmp_path / "backup.json"
    config.write_text(json.dumps({"backup_root": str(tmp_path / "backups"), "set": "agent",
                                  "sqlite": [{"name": "app", "path": str(db)}], "encryption": {"key_file": str(key)},
                                  "metrics_dir": str(tmp_path / "textfile")}))
    command = venv / "bin" / "tradeops-backup"
    assert run(command, "--help").returncode == 0
    made = run(command, "--config", config, "--json", "backup", "--verify", timeout=60)
    assert made.returncode == 0, made.stdout + made.stderr
    result = json.loads(made.stdout)
    assert result["verify"]["status"] == "passed" and result["problems"] == []
    listed = run(command, "--config", config, "--json", "list")
    assert [(b["backup_id"], b["verified"]) for b in json.loads(listed.stdout)] == [(result["backup_id"], True)]
    prom = (tmp_path / "textfile" / "tradeops_backup.prom").read_text()
    assert 'tradeops_backup_last_verified{set="agent"} 1' in prom
    unknown = run(command, "--config", config, "verify", "--backup-id", "20000101T000000Z-x")
    assert unknown.returncode == 2 and f"available: {result['backup_id']}" in unknown.stderr


def test_maintenance_cli_runs_sqlite_upkeep_with_the_hosts_python(venv, tmp_path):
    """tradeops-maintenance from the wheel on the hosts' interpreter: WAL on a real database, a missing one
    skipped, the job metric written through the shared writer (tradeops_agent/metrics.py)."""
    import sqlite3

    db = tmp_path / "app.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE fills (id INTEGER PRIMARY KEY, px REAL)")
    conn.close()
    config = tmp_path / "maintenance.json"
    config.write_text(json.dumps({"host": "agent", "metrics_dir": str(tmp_path / "textfile"),
                                  "sqlite": [{"name": "app", "path": str(db)},
                                             {"name": "later", "path": str(tmp_path / "later.db")}]}))
    command = venv / "bin" / "tradeops-maintenance"
    assert run(command, "--help").returncode == 0
    done = run(command, "--config", config, "--json", "sqlite", timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert [(d["name"], d["status"]) for d in json.loads(done.stdout)["databases"]] == [("app", "ok"),
                                                                                        ("later", "skipped")]
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()
    prom = (tmp_path / "textfile" / "tradeops_job.prom").read_text()
    assert 'tradeops_job_last_success{task="maintenance-sqlite"} 1' in prom
