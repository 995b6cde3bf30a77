"""The app's data tier through psycopg 3 and redis-py (refapp.db, refapp.config, refapp.checks),
readiness, migrate and jobs, against real PostgreSQL 15 (TLS from a CA of its own) and Redis
servers started by conftest.py (apt-get install postgresql redis-server)."""

from __future__ import annotations

import json
import subprocess

import pytest
import redis
from refapp.checks import check_database, check_redis
from refapp.config import redis_client, settings_from_env
from refapp.db import DatabaseError, open_database

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
    write_tls_files,
)

pytestmark = pytest.mark.slow


# -- PostgreSQL through refapp.db (psycopg 3) ------------------------------------------


def test_values_are_bound_server_side_and_come_back_typed(postgres_server):
    values = ["plain", "O'Brien", "back\\slash", "50% off", "tab\tnew\nline", "ünïcødé €", "'; DROP TABLE x; --", ""]
    with open_database(postgres_server.url()) as db:
        for value in values:
            assert db.query("SELECT ?::text, '?', 'x%'", (value,)) == [(value, "?", "x%")]
        assert db.query("SELECT 1, NULL::text, 2.5::float8, true") == [(1, None, 2.5, True)]
        db.execute("CREATE TEMP TABLE t (id bigserial PRIMARY KEY, v text)")
        assert db.insert("INSERT INTO t (v) VALUES (?)", ("a",)) == 1
        assert db.insert("INSERT INTO t (v) VALUES (?)", ("b",)) == 2
        with pytest.raises(RuntimeError), db.transaction():
            db.execute("DELETE FROM t")
            raise RuntimeError("rolled back")
        assert db.execute("UPDATE t SET v = ? WHERE id > ?", ("c", 0)) == 2
        assert db.table_exists("t") and not db.table_exists("no_such_table")


def test_server_side_settings_of_the_session(postgres_server):
    with open_database(postgres_server.url(), statement_timeout=0.3) as db:
        details = db.details()
        assert (details["application_name"], details["statement_timeout"]) == ("refapp", "300ms")
        assert details["server_version"] >= 150000
        with pytest.raises(DatabaseError, match=r"statement timeout \(SQLSTATE 57014\)"):
            db.query("SELECT pg_sleep(3)")
        assert db.query("SELECT 1") == [(1,)]  # still usable
    with open_database(postgres_server.url(application_name="screener")) as db:
        assert db.details()["application_name"] == "screener"
        assert db.details()["statement_timeout"] == "0"  # migrate: none
    with pytest.raises(DatabaseError, match="invalid connection option"):
        open_database(postgres_server.url(no_such_option="1"))


@pytest.mark.parametrize(
    ("user", "password"),
    [(PG_APP_USER, PG_APP_PASSWORD), (PG_UNICODE_USER, PG_UNICODE_PASSWORD), (PG_UNICODE_USER, "p\u00e4ssw\u00f6rd"),
     (PG_MD5_USER, PG_MD5_PASSWORD), (PG_CLEAR_USER, PG_CLEAR_PASSWORD), (PG_TRUST_USER, None)],
    ids=["scram", "scram-saslprep", "scram-saslprep-nfc", "md5", "cleartext", "trust"],
)
def test_authentication_methods(postgres_server, user, password):
    with open_database(postgres_server.url(user, password, "postgres")) as db:
        assert db.query("SELECT current_user") == [(user,)]


def test_scram_verifier_really_used(postgres_server):
    query = "SELECT rolname || ':' || left(rolpassword, 14) FROM pg_authid WHERE rolname LIKE 'refapp_%'"
    stored = postgres_server.psql(query).splitlines()
    assert f"{PG_APP_USER}:SCRAM-SHA-256$" in stored
    assert any(line.startswith(f"{PG_MD5_USER}:md5") for line in stored)


def test_wrong_password_and_server_errors_hold_no_secret(postgres_server):
    wrong = "not-the-password%/:"
    with pytest.raises(DatabaseError) as err:
        open_database(postgres_server.url(password=wrong))
    assert f'password authentication failed for user "{PG_APP_USER}"' in str(err.value)
    assert wrong not in str(err.value) and "\n" not in str(err.value)
    with open_database(postgres_server.url()) as db:
        with pytest.raises(DatabaseError, match=r'relation "no_such_table" does not exist \(SQLSTATE 42P01\)'):
            db.query("SELECT * FROM no_such_table WHERE v = ?", (PG_APP_PASSWORD,))
        assert db.query("SELECT 2") == [(2,)]  # still usable after an error


def test_tls_verify_full_against_the_servers_ca(postgres_server, tmp_path):
    ca = str(postgres_server.ca_file)
    with open_database(postgres_server.url(host="localhost", sslmode="verify-full", sslrootcert=ca)) as db:
        assert db.details()["tls"] is True
        assert db.query("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()") == [(True,)]
    # The certificate names localhost, not the address: verify-full refuses the address.
    with pytest.raises(DatabaseError, match="does not match host name"):
        open_database(postgres_server.url(sslmode="verify-full", sslrootcert=ca))
    # A certificate from another CA is refused, even for the right name.
    other_ca = write_tls_files(tmp_path)[0]
    with pytest.raises(DatabaseError, match="certificate verify failed"):
        open_database(postgres_server.url(host="localhost", sslmode="verify-full", sslrootcert=str(other_ca)))
    with open_database(postgres_server.url(sslmode="disable")) as db:
        assert db.details()["tls"] is False


def test_database_check_reports_tls_and_settings(postgres_server):
    url = postgres_server.url(host="localhost", sslmode="verify-full", sslrootcert=str(postgres_server.ca_file))
    check = check_database(settings_from_env({"APP_DATABASE_URL": url, "APP_CHECK_TIMEOUT": "1.5"}))
    assert check["ok"] is True, check
    assert (check["tls"], check["application_name"], check["statement_timeout"]) == (True, "refapp", "1500ms")
    assert PG_APP_PASSWORD not in json.dumps(check)


# -- Redis through refapp.config (redis-py) --------------------------------------------


def test_redis_client(redis_server):
    settings = settings_from_env({"APP_REDIS_URL": redis_server.url(db=3)})
    with redis_client(settings) as client:
        assert client.ping() is True
        assert client.set("refapp:test:key", "välue") is True
        assert client.get("refapp:test:key") == "välue"
        assert client.get("refapp:test:missing") is None
        assert client.incr("refapp:test:n") == 1 and client.incr("refapp:test:n") == 2
        assert client.dbsize() == 2
        assert client.client_getname() == "refapp"
        with pytest.raises(redis.ResponseError):
            client.incr("refapp:test:key")
        client.flushdb()
    acl = settings_from_env({"APP_REDIS_URL": redis_server.url(user=REDIS_ACL_USER, password=REDIS_ACL_PASSWORD)})
    with redis_client(acl) as client:
        assert client.acl_whoami() == REDIS_ACL_USER


@pytest.mark.parametrize(
    ("url_of", "words"),
    [(lambda s: s.url(password="wrong-Pw"), "invalid username-password pair"),
     (lambda s: f"redis://{s.host}:{s.port}/0", "authenticat"),  # RESP3 HELLO or RESP2 NOAUTH
     (lambda s: f"redis://:x@127.0.0.1:{s.port + 1 if s.port < 65535 else 1}/0", "redis 127.0.0.1:")],
    ids=["wrong-password", "no-password", "nothing-listening"],
)
def test_redis_check_failures_hold_no_secret(redis_server, url_of, words):
    check = check_redis(settings_from_env({"APP_REDIS_URL": url_of(redis_server), "APP_CHECK_TIMEOUT": "2"}))
    assert check is not None and check["ok"] is False, check
    assert words in check["error"].lower()
    assert "wrong-Pw" not in json.dumps(check) and redis_server.password not in json.dumps(check)


# -- the application against both -------------------------------------------------------


def test_readiness_ready_with_postgres_over_verified_tls_and_redis(start_app, postgres_server, redis_server):
    tls = {"sslmode": "verify-full", "sslrootcert": str(postgres_server.ca_file)}
    app = start_app(
        env={
            "APP_DATABASE_URL": postgres_server.url(host="localhost", **tls),
            "APP_REDIS_URL": redis_server.url(user=REDIS_ACL_USER, password=REDIS_ACL_PASSWORD, db=2),
        }
    )
    resp = app.get("/api/health/readiness")
    assert resp.status == 200, resp.text
    checks = resp.json()["checks"]
    assert checks["database"]["ok"] is True and checks["database"]["backend"] == "postgresql"
    assert checks["database"]["tls"] is True
    assert checks["database"]["url"] == (f"postgresql://{PG_APP_USER}:***@localhost:{postgres_server.port}/appdb"
                                         f"?sslmode=verify-full&sslrootcert={postgres_server.ca_file}")
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
    assert "invalid username-password pair" in body["checks"]["redis"]["error"]
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
    with redis_client(settings_from_env({"APP_REDIS_URL": redis_server.url(db=5)})) as client:
        assert client.get("refapp:refapp:runs:daily-scan") == "1"
    code, summary = _job(url, None, "migrate")
    assert code == 0 and summary["applied"] == [] and summary["from_version"] == 2


def test_jobs_fail_with_wrong_postgres_password(postgres_server):
    code, summary = _job(postgres_server.url(password="nope-Pw-789"), None, "daily-scan")
    assert code == 1 and summary["ok"] is False
    assert "password authentication failed" in summary["error"] and "nope-Pw-789" not in json.dumps(summary)
