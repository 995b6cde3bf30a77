"""The stdlib PostgreSQL and Redis clients, readiness, migrate and jobs against real
PostgreSQL 15 and Redis servers started by conftest.py (apt-get install postgresql
redis-server)."""

from __future__ import annotations

import json
import subprocess

import pytest
from refapp import pg, redisc

from .conftest import (
    PG_APP_PASSWORD,
    PG_APP_USER,
    PG_CLEAR_PASSWORD,
    PG_CLEAR_USER,
    PG_MD5_PASSWORD,
    PG_MD5_USER,
    PG_TRUST_USER,
    PG_UNICODE_PASSWORD,
    PG_UNICODE_USER,
    PYTHON,
    REDIS_ACL_PASSWORD,
    REDIS_ACL_USER,
    base_env,
    run_refapp,
)

pytestmark = pytest.mark.slow


def _connect(server, user=PG_APP_USER, password=PG_APP_PASSWORD, database="appdb"):
    return pg.connect(server.host, server.port, user, password, database, timeout=5)


# -- PostgreSQL client -------------------------------------------------------------------


def test_scram_sha_256_authentication_and_queries(postgres_server):
    with _connect(postgres_server) as conn:
        assert conn.parameters["server_version"].startswith(("15", "16", "17", "18"))
        assert conn.backend_pid
        result = conn.query("SELECT 1 AS one, NULL::text AS nothing, 'x''y' AS quoted")
        assert result.columns == ["one", "nothing", "quoted"]
        assert result.rows == [("1", None, "x'y")]
        assert result.tag == "SELECT 1"
        results = conn.execute("CREATE TEMP TABLE t (v text); INSERT INTO t VALUES ('a'), ('b'); SELECT v FROM t")
        assert [r.tag for r in results] == ["CREATE TABLE", "INSERT 0 2", "SELECT 2"]
        assert results[-1].rows == [("a",), ("b",)]
        assert conn.transaction_status == "I"
    assert conn.closed


def test_scram_verifier_really_used(postgres_server):
    query = "SELECT rolname || ':' || left(rolpassword, 14) FROM pg_authid WHERE rolname LIKE 'refapp_%'"
    stored = postgres_server.psql(query).splitlines()
    assert f"{PG_APP_USER}:SCRAM-SHA-256$" in stored
    assert any(line.startswith(f"{PG_MD5_USER}:md5") for line in stored)


def test_scram_with_a_password_that_saslprep_normalises(postgres_server):
    with _connect(postgres_server, PG_UNICODE_USER, PG_UNICODE_PASSWORD, "postgres") as conn:
        assert conn.query("SELECT current_user").rows == [(PG_UNICODE_USER,)]
    composed = "p\u00e4ssw\u00f6rd"  # the same password in NFC form
    with _connect(postgres_server, PG_UNICODE_USER, composed, "postgres") as conn:
        assert conn.query("SELECT 1").rows == [("1",)]


@pytest.mark.parametrize(
    ("user", "password"),
    [(PG_MD5_USER, PG_MD5_PASSWORD), (PG_CLEAR_USER, PG_CLEAR_PASSWORD), (PG_TRUST_USER, None)],
    ids=["md5", "cleartext", "trust"],
)
def test_other_authentication_methods(postgres_server, user, password):
    with _connect(postgres_server, user, password, "postgres") as conn:
        assert conn.query("SELECT current_user").rows == [(user,)]


def test_wrong_password_and_server_errors(postgres_server):
    with pytest.raises(pg.PgServerError) as err:
        _connect(postgres_server, password="not-the-password")
    assert err.value.code == "28P01"
    assert f'password authentication failed for user "{PG_APP_USER}"' in err.value.message
    with pytest.raises(pg.PgAuthError, match="requires a password"):
        _connect(postgres_server, password=None)
    with _connect(postgres_server) as conn:
        with pytest.raises(pg.PgServerError) as err:
            conn.query("SELECT * FROM no_such_table")
        assert err.value.code == "42P01" and 'relation "no_such_table" does not exist' in err.value.message
        assert conn.query("SELECT 2").rows == [("2",)]  # still usable after an error


def test_quote_literal_round_trips(postgres_server):
    values = ["plain", "O'Brien", "back\\slash", "tab\tnew\nline", "ünïcødé €", "'; DROP TABLE x; --", ""]
    with _connect(postgres_server) as conn:
        for value in values:
            assert conn.query(f"SELECT {pg.quote_literal(value)}").rows == [(value,)]
        conn.query("SET standard_conforming_strings = off")
        backslash = "back\\slash"
        assert conn.query("SELECT " + pg.quote_literal(backslash)).rows == [(backslash,)]


def test_terminate_on_close(postgres_server):
    conn = _connect(postgres_server)
    pid = conn.backend_pid
    conn.close()
    conn.close()  # idempotent
    with _connect(postgres_server) as other:
        for _ in range(50):
            if (str(pid),) not in other.query("SELECT pid FROM pg_stat_activity").rows:
                break
            other.query("SELECT pg_sleep(0.02)")
        else:
            pytest.fail("the backend did not end after Terminate")


# -- Redis client ------------------------------------------------------------------------


def test_redis_client(redis_server):
    with redisc.connect(redis_server.host, redis_server.port, redis_server.password, db=3, timeout=5) as client:
        assert client.ping() == "PONG"
        assert client.set("refapp:test:key", "välue") is True
        assert client.get("refapp:test:key") == "välue".encode()
        assert client.get("refapp:test:missing") is None
        assert client.incr("refapp:test:n") == 1 and client.incr("refapp:test:n") == 2
        assert client.dbsize() == 2
        assert client.execute("LRANGE", "refapp:test:missing", 0, -1) == []
        with pytest.raises(redisc.RedisReplyError) as err:
            client.incr("refapp:test:key")
        assert err.value.kind == "ERR"
        client.execute("FLUSHDB")
    with redisc.connect(redis_server.host, redis_server.port, REDIS_ACL_PASSWORD, REDIS_ACL_USER) as client:
        assert client.ping() == "PONG"
    with pytest.raises(redisc.RedisReplyError) as err:
        redisc.connect(redis_server.host, redis_server.port, "wrong-password")
    assert err.value.kind == "WRONGPASS"
    with redisc.connect(redis_server.host, redis_server.port) as client, pytest.raises(redisc.RedisReplyError) as err:
        client.ping()
    assert err.value.kind == "NOAUTH"


# -- the application against both -------------------------------------------------------


def test_readiness_ready_with_postgres_and_redis(start_app, postgres_server, redis_server):
    app = start_app(
        env={
            "APP_DATABASE_URL": postgres_server.url(),
            "APP_REDIS_URL": redis_server.url(user=REDIS_ACL_USER, password=REDIS_ACL_PASSWORD, db=2),
        }
    )
    resp = app.get("/api/health/readiness")
    assert resp.status == 200, resp.text
    checks = resp.json()["checks"]
    assert checks["database"]["ok"] is True and checks["database"]["backend"] == "postgresql"
    assert checks["database"]["url"] == f"postgresql://{PG_APP_USER}:***@127.0.0.1:{postgres_server.port}/appdb"
    assert checks["redis"]["ok"] is True
    assert checks["redis"]["url"] == f"redis://{REDIS_ACL_USER}:***@127.0.0.1:{redis_server.port}/2"
    for secret in (PG_APP_PASSWORD, REDIS_ACL_PASSWORD):
        assert secret not in resp.text and secret not in app.log


def test_readiness_503_on_wrong_postgres_password(start_app, postgres_server, redis_server):
    wrong = "Wrong-Pg-Pw-123"
    app = start_app(env={"APP_DATABASE_URL": postgres_server.url(password=wrong), "APP_REDIS_URL": redis_server.url()})
    resp = app.get("/api/health/readiness")
    assert resp.status == 503
    body = resp.json()
    assert body["failed"] == ["database"] and body["checks"]["redis"]["ok"] is True
    assert f'password authentication failed for user "{PG_APP_USER}"' in body["checks"]["database"]["error"]
    assert wrong not in resp.text and wrong not in app.log
    assert redis_server.password not in resp.text and redis_server.password not in app.log


def test_readiness_503_on_wrong_redis_password(start_app, postgres_server, redis_server):
    wrong = "Wrong-Redis-Pw-456"
    app = start_app(env={"APP_DATABASE_URL": postgres_server.url(), "APP_REDIS_URL": redis_server.url(password=wrong)})
    resp = app.get("/api/health/readiness")
    assert resp.status == 503
    body = resp.json()
    assert body["failed"] == ["redis"]
    assert "WRONGPASS" in body["checks"]["redis"]["error"]
    assert wrong not in resp.text and wrong not in app.log


def test_readiness_503_when_postgres_database_missing(start_app, postgres_server):
    app = start_app(env={"APP_DATABASE_URL": postgres_server.url(database="no_such_db")})
    resp = app.get("/api/health/readiness")
    assert resp.status == 503
    assert 'database "no_such_db" does not exist' in resp.json()["checks"]["database"]["error"]


def _job(url: str, redis_url: str | None, *args: str) -> tuple[int, dict]:
    env = base_env(APP_DATABASE_URL=url, **({"APP_REDIS_URL": redis_url} if redis_url else {}))
    proc = run_refapp(*args, env=env)
    assert PG_APP_PASSWORD not in proc.stdout + proc.stderr
    return proc.returncode, json.loads(proc.stdout.strip().splitlines()[-1]) if proc.stdout.strip() else {}


def test_migrate_and_jobs_on_postgres(postgres_server, redis_server):
    db = postgres_server.create_database("jobs")
    url = postgres_server.url(database=db)
    env = base_env(APP_DATABASE_URL=url)
    # two hosts migrating at once: the advisory lock makes each migration apply once
    procs = [
        subprocess.Popen([PYTHON, "-m", "refapp", "migrate"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    outputs = [proc.communicate(timeout=60) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], outputs
    applied = sorted(v for out, _ in outputs for v in json.loads(out)["applied"])
    assert applied == [1, 2]
    assert (
        postgres_server.psql("SELECT string_agg(version::text, ',' ORDER BY version) FROM schema_version", db) == "1,2"
    )

    code, summary = _job(url, redis_server.url(db=5), "daily-scan", "--symbols", "AAPL,MSFT")
    assert code == 0 and summary["scan_id"] == 1 and summary["redis"] == "ok"
    code, summary = _job(url, None, "weekly-analysis")
    assert code == 0 and summary["scans_counted"] == 1 and summary["symbols_distinct"] == 2
    postgres_server.psql(
        "INSERT INTO scans (kind, created_at, symbols) VALUES ('daily', now() - interval '60 days', 'X')", db
    )
    code, summary = _job(url, None, "cleanup", "--days", "30")
    assert code == 0 and summary["deleted_scans"] == 1 and summary["deleted_analyses"] == 0
    assert postgres_server.psql("SELECT kind || ':' || symbols FROM scans", db) == "daily:AAPL,MSFT"
    assert postgres_server.psql("SELECT count(*) FROM analyses", db) == "1"
    assert postgres_server.psql("SELECT count(*) FROM kv WHERE key LIKE 'last_run:%'", db) == "3"
    with redisc.connect(redis_server.host, redis_server.port, redis_server.password, db=5) as client:
        assert client.get("refapp:refapp:runs:daily-scan") == b"1"
    code, summary = _job(url, None, "migrate")
    assert code == 0 and summary["applied"] == [] and summary["from_version"] == 2


def test_jobs_fail_with_wrong_postgres_password(postgres_server):
    code, summary = _job(postgres_server.url(password="nope-Pw-789"), None, "daily-scan")
    assert code == 1 and summary["ok"] is False
    assert "password authentication failed" in summary["error"] and "nope-Pw-789" not in json.dumps(summary)
