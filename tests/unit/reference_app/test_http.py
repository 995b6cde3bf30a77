"""The HTTP service as a real subprocess on a free port, with SQLite."""

from __future__ import annotations

import json
import re
import sqlite3

import pytest

from .conftest import base_env, free_port, migrated_sqlite, run_refapp

TOKEN = "health-token-abc123"

SAMPLE = re.compile(
    r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)"
    r"(?:\{(?P<labels>(?:[a-zA-Z_][a-zA-Z0-9_]*=\"(?:[^\"\\\n]|\\[\\\"n])*\",?)*)\})?"
    r" (?P<value>[-+]?(?:[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?|Inf|NaN))(?: -?[0-9]+)?$"
)
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"')


def parse_metrics(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Parse exposition text strictly: every line is HELP, TYPE or a well-formed sample, and
    every sample belongs to a family declared by a TYPE line before it."""
    assert text.endswith("\n")
    types: dict[str, str] = {}
    helps: set[str] = set()
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            helps.add(line.split(" ", 3)[2])
        elif line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in ("counter", "gauge", "histogram", "summary", "untyped"), line
            assert name not in types, f"duplicate TYPE for {name}"
            types[name] = kind
        else:
            match = SAMPLE.match(line)
            assert match, f"malformed sample line: {line!r}"
            name = match["name"]
            family = re.sub(r"_(bucket|sum|count)$", "", name) if name not in types else name
            assert family in types, f"sample {name} without TYPE"
            labels = dict(LABEL.findall(match["labels"] or ""))
            samples.setdefault(name, []).append((labels, float(match["value"])))
    assert helps == set(types), "every family needs HELP and TYPE"
    return samples


def total(samples, name: str, **where: str) -> float:
    return sum(v for labels, v in samples.get(name, []) if all(labels.get(k) == w for k, w in where.items()))


@pytest.fixture
def app(start_app, sqlite_url):
    return start_app(env={"APP_DATABASE_URL": sqlite_url, "APP_HEALTH_TOKEN": TOKEN, "APP_SERVICE": "screener"})


def test_health_liveness_version(app):
    for path in ("/health", "/api/health"):
        resp = app.get(path)
        assert resp.status == 200
        assert resp.headers["content-type"] == "application/json"
        assert resp.json() == {"status": "ok", "service": "screener", "version": "0.0.0.dev0"}
    assert app.get("/api/health/liveness").status == 200
    assert app.get("/api/version").json() == {"version": "0.0.0.dev0", "service": "screener"}
    head = app.get("/health", method="HEAD")
    assert head.status == 200 and head.body == b""


def test_readiness_ready_with_migrated_sqlite(app, sqlite_url):
    resp = app.get("/api/health/readiness")
    assert resp.status == 200, resp.text
    body = resp.json()
    assert body["status"] == "ready" and body["version"] == "0.0.0.dev0"
    assert body["checks"]["database"]["ok"] is True
    assert body["checks"]["database"]["backend"] == "sqlite"
    assert body["checks"]["database"]["schema_version"] >= 2
    assert "redis" not in body["checks"]


def test_not_found_method_and_work(app):
    resp = app.get("/nope?x=1")
    assert resp.status == 404 and resp.json()["error"] == "not found"
    resp = app.get("/health", method="POST")
    assert resp.status == 405 and resp.headers["allow"] == "GET, HEAD"
    resp = app.get("/api/work?ms=120")
    assert resp.status == 200 and resp.json()["slept_ms"] == 120
    assert app.get("/api/work?ms=-5").status == 400
    assert app.get("/api/work?ms=abc").status == 400
    assert app.get("/api/work").json()["slept_ms"] == 0


def test_detailed_requires_the_token(app):
    assert app.get("/api/health/detailed").status == 401
    wrong = app.get("/api/health/detailed", headers={"Authorization": "Bearer wrong"})
    assert wrong.status == 401 and wrong.headers["www-authenticate"].startswith("Bearer")
    assert app.get("/api/health/detailed", headers={"Authorization": f"Basic {TOKEN}"}).status == 401
    resp = app.get("/api/health/detailed", headers={"Authorization": f"Bearer {TOKEN}"})
    assert resp.status == 200
    body = resp.json()
    assert body["status"] == "ready" and body["checks"]["database"]["ok"] is True
    assert body["pid"] == app.proc.pid
    assert body["service"] == "screener" and body["version"] == "0.0.0.dev0"
    assert body["uptime_seconds"] > 0 and body["python"].count(".") == 2
    assert body["requests"]["total"] == 3  # the three 401s before; this request is still in flight
    assert body["requests"]["in_flight"] == 1
    assert body["requests"]["by_status"]["401"] == 3
    assert TOKEN not in resp.text and TOKEN not in app.log


def test_detailed_is_closed_without_configured_token(start_app, sqlite_url):
    app = start_app(env={"APP_DATABASE_URL": sqlite_url})
    assert app.get("/api/health/detailed", headers={"Authorization": "Bearer "}).status == 401
    assert app.get("/api/health/detailed", headers={"Authorization": "Bearer anything"}).status == 401


def test_metrics_exposition(app):
    first = parse_metrics(app.get("/metrics").text)
    assert total(first, "refapp_up") == 1
    assert first["refapp_build_info"] == [({"service": "screener", "version": "0.0.0.dev0"}, 1.0)]
    for _ in range(3):
        app.get("/health")
    app.get("/api/work?ms=30")
    app.get("/does/not/exist/42")
    resp = app.get("/metrics")
    assert resp.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = parse_metrics(resp.text)
    name = "refapp_http_requests_total"
    assert total(samples, name, path="/health", status="200", method="GET") == 3
    assert total(samples, name, path="/api/work") == 1
    assert total(samples, name, path="other", status="404") == 1
    assert not any("/does/not" in labels.get("path", "") for labels, _ in samples[name])
    assert total(samples, name, path="/metrics") == 1  # the first scrape; this one is not done yet
    requests = total(samples, name)
    assert requests == 6
    assert total(samples, "refapp_http_request_duration_seconds_count") == requests
    inf = total(samples, "refapp_http_request_duration_seconds_bucket", le="+Inf")
    assert inf == requests
    work_buckets = [
        (float(labels["le"]), value)
        for labels, value in samples["refapp_http_request_duration_seconds_bucket"]
        if labels["path"] == "/api/work"
    ]
    assert [v for _, v in sorted(work_buckets)] == sorted(v for _, v in work_buckets)  # cumulative
    assert total(samples, "refapp_http_request_duration_seconds_sum", path="/api/work") >= 0.03
    assert total(samples, "refapp_http_request_errors_total") == 0
    third = parse_metrics(app.get("/metrics").text)
    assert total(third, name) == requests + 1


def test_readiness_503_when_database_file_missing(start_app, tmp_path):
    app = start_app(env={"APP_DATABASE_URL": f"sqlite:///{tmp_path}/absent.db"})
    resp = app.get("/api/health/readiness")
    assert resp.status == 503
    body = resp.json()
    assert body["status"] == "not ready" and body["failed"] == ["database"]
    assert "database file not found" in body["checks"]["database"]["error"]
    assert not (tmp_path / "absent.db").exists()  # readiness never creates the database
    assert app.get("/api/health/liveness").status == 200
    samples = parse_metrics(app.get("/metrics").text)
    assert total(samples, "refapp_http_request_errors_total") == 1
    assert total(samples, "refapp_http_requests_total", status="503", path="/api/health/readiness") == 1


def test_readiness_503_when_schema_not_migrated(start_app, tmp_path):
    sqlite3.connect(tmp_path / "empty.db").close()
    app = start_app(env={"APP_DATABASE_URL": f"sqlite:///{tmp_path}/empty.db"})
    resp = app.get("/api/health/readiness")
    assert resp.status == 503
    assert "not migrated" in resp.json()["checks"]["database"]["error"]


def test_readiness_503_when_database_not_configured(start_app):
    resp = start_app().get("/api/health/readiness")
    assert resp.status == 503
    assert resp.json()["checks"]["database"] == {"ok": False, "error": "not configured (set APP_DATABASE_URL)"}


def test_readiness_503_when_redis_port_closed(start_app, sqlite_url):
    port = free_port()
    app = start_app(env={"APP_DATABASE_URL": sqlite_url, "APP_REDIS_URL": f"redis://:rsecret@127.0.0.1:{port}/0"})
    resp = app.get("/api/health/readiness")
    assert resp.status == 503
    body = resp.json()
    assert body["failed"] == ["redis"]
    assert body["checks"]["database"]["ok"] is True
    assert "connection refused" in body["checks"]["redis"]["error"]
    assert body["checks"]["redis"]["url"] == f"redis://:***@127.0.0.1:{port}/0"
    assert "rsecret" not in resp.text and "rsecret" not in app.log


def test_env_file_flags_and_json_logs(start_app, tmp_path):
    url = migrated_sqlite(tmp_path / "env.db")
    env_file = tmp_path / "app.env"
    env_file.write_text(
        f"# systemd EnvironmentFile\nAPP_DATABASE_URL={url}\nAPP_SERVICE=from-file\nAPP_LOG_FORMAT=json\n"
    )
    app = start_app(env={"APP_SERVICE": "from-env"}, args=["--env-file", str(env_file)])
    assert app.get("/api/version").json()["service"] == "from-env"  # the environment wins over the file
    assert app.get("/api/health/readiness").status == 200  # the URL came from the file
    app.signal()
    assert app.wait() == 0
    lines = [json.loads(line) for line in app.log.splitlines()]
    access = [entry for entry in lines if entry["logger"] == "refapp.access"]
    assert [(e["method"], e["path"], e["status"]) for e in access] == [
        ("GET", "/api/version", 200),
        ("GET", "/api/health/readiness", 200),
    ]
    assert all(e["service"] == "from-env" and e["duration_ms"] >= 0 for e in access)
    flagged = start_app(env={"APP_SERVICE": "from-env"}, args=["--service", "from-flag", "--bind", "127.0.0.1"])
    assert flagged.get("/health").json()["service"] == "from-flag"


def test_plain_access_log_line(app):
    app.get("/api/work?ms=1&token=x")
    app.signal()
    assert app.wait() == 0
    assert re.search(r'INFO refapp.access: 127\.0\.0\.1 "GET /api/work" 200 \d+\.\dms', app.log)
    assert "token=x" not in app.log  # query strings are not logged


def test_configuration_errors_exit_2(tmp_path):
    for env, needle in (({"APP_PORT": "eighty"}, "APP_PORT"), ({"APP_DATABASE_URL": "mysql://u:hunter2@h/d"}, "URL")):
        proc = run_refapp("serve", env=base_env(**env))
        assert proc.returncode == 2 and needle in proc.stderr and "hunter2" not in proc.stderr
    proc = run_refapp("--env-file", str(tmp_path / "missing.env"), "serve")
    assert proc.returncode == 2 and "cannot read env file" in proc.stderr
    proc = run_refapp("serve", "--port", "notaport")
    assert proc.returncode == 2


def test_port_in_use_exits_1(start_app, sqlite_url):
    first = start_app(env={"APP_DATABASE_URL": sqlite_url})
    proc = run_refapp("serve", env=base_env(APP_PORT=str(first.port)), timeout=10)
    assert proc.returncode == 1
    assert f"cannot listen on 127.0.0.1:{first.port}" in proc.stderr
