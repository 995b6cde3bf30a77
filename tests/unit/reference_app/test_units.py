"""Pure functions of the reference app, tested in-process: configuration, URL parsing and
redaction, placeholders and libpq connection parameters, metrics text."""

from __future__ import annotations

import pytest
from refapp.config import ConfigError, settings_from_env
from refapp.db import connection_parameters, to_pyformat
from refapp.envfile import EnvFileError, load_env_file, parse_env_text
from refapp.metrics import Metrics
from refapp.urls import (
    PostgresTarget,
    SqliteTarget,
    UrlError,
    parse_database_url,
    parse_redis_url,
    redact_url,
    scrub,
)


def test_env_file_format(tmp_path):
    path = tmp_path / "app.env"
    path.write_text(
        "# comment\n\n; also a comment\nAPP_PORT=9000\nexport APP_SERVICE = screener \n"
        "APP_HEALTH_TOKEN='quoted value'\nAPP_BIND=\"0.0.0.0\"\nAPP_EMPTY=\nAPP_EQ=a=b\n"
    )
    environ = {"APP_PORT": "8001"}
    applied = load_env_file(path, environ)
    assert environ == {
        "APP_PORT": "8001",  # already set: the environment wins
        "APP_SERVICE": "screener",
        "APP_HEALTH_TOKEN": "quoted value",
        "APP_BIND": "0.0.0.0",
        "APP_EMPTY": "",
        "APP_EQ": "a=b",
    }
    assert "APP_PORT" not in applied


def test_env_file_errors_do_not_echo_values(tmp_path):
    with pytest.raises(EnvFileError, match=r"x\.env:2: expected KEY=VALUE") as err:
        parse_env_text("A=1\nnot-a-line secret-value\n", "x.env")
    assert "secret-value" not in str(err.value)
    with pytest.raises(EnvFileError, match="cannot read env file"):
        load_env_file(tmp_path / "missing.env", {})


def test_settings_defaults_and_validation():
    settings = settings_from_env({})
    assert (settings.bind, settings.port, settings.service, settings.shutdown_grace) == (
        "127.0.0.1",
        8000,
        "refapp",
        25,
    )
    assert settings.database is None and settings.redis is None
    for env, message in [
        ({"APP_PORT": "http"}, "APP_PORT must be a number"),
        ({"APP_PORT": "70000"}, "between 0 and 65535"),
        ({"APP_SHUTDOWN_GRACE": "-1"}, "APP_SHUTDOWN_GRACE"),
        ({"APP_DATABASE_URL": "mysql://u:hunter2@h/db"}, "APP_DATABASE_URL"),
        ({"APP_REDIS_URL": "redis://:hunter2@h:6379/zero"}, "APP_REDIS_URL"),
        ({"APP_LOG_FORMAT": "xml"}, "APP_LOG_FORMAT"),
    ]:
        with pytest.raises(ConfigError, match=message) as err:
            settings_from_env(env)
        assert "hunter2" not in str(err.value)
    assert repr(settings_from_env({"APP_HEALTH_TOKEN": "tok-123"})).count("tok-123") == 0


def test_database_urls():
    assert parse_database_url("sqlite:////var/lib/app/app.db") == SqliteTarget("/var/lib/app/app.db")
    with pytest.raises(UrlError, match="absolute path"):
        parse_database_url("sqlite:///relative.db")
    target = parse_database_url("postgresql://app:p%40ss%2Fw%3Ard@db1:6543/trading?sslmode=require")
    assert isinstance(target, PostgresTarget)
    assert (target.user, target.password, target.host, target.port, target.database) == (
        "app", "p@ss/w:rd", "db1", 6543, "trading",
    )  # fmt: skip
    assert target.options == {"sslmode": "require"}
    default = parse_database_url("postgres://app@db1/")
    assert (default.port, default.database, default.password) == (5432, "app", None)
    unix = parse_database_url("postgresql://app@%2Frun%2Fpostgresql/db")
    assert unix.host == "/run/postgresql"
    with pytest.raises(UrlError, match="needs a user"):
        parse_database_url("postgresql://db1/x")


def test_redis_urls():
    target = parse_redis_url("redis://:s%3Acret@cache:6380/2")
    assert (target.username, target.password, target.host, target.port, target.db) == (None, "s:cret", "cache", 6380, 2)
    target = parse_redis_url("redis://alice:pw@cache")
    assert (target.username, target.password, target.port, target.db) == ("alice", "pw", 6379, 0)


def test_redaction():
    assert redact_url("postgresql://user:secret@host:5432/db") == "postgresql://user:***@host:5432/db"
    assert redact_url("redis://:secret@host:6379/0") == "redis://:***@host:6379/0"
    assert redact_url("sqlite:////a/b.db") == "sqlite:////a/b.db"
    assert redact_url("postgresql://user@host/db") == "postgresql://user@host/db"
    text = scrub("failed for postgresql://u:p%40ss@h/db with p@ss", "p@ss")
    assert "p@ss" not in text and "p%40ss" not in text


def test_placeholders_become_pyformat_outside_quotes():
    assert to_pyformat("SELECT ?, '?', \"?\", ?") == "SELECT %s, '?', \"?\", %s"
    assert to_pyformat("SELECT ? WHERE v LIKE 'x%' AND w = '100%?'") == "SELECT %s WHERE v LIKE 'x%%' AND w = '100%%?'"
    assert to_pyformat("SELECT 'it''s', ?") == "SELECT 'it''s', %s"


def test_connection_parameters_carry_url_options_and_server_settings():
    target = parse_database_url(
        "postgresql://app:p%40ss@db1:6543/trading"  # pragma: allowlist secret
        "?sslmode=verify-full&sslrootcert=/opt/ca.crt&options=-c%20search_path%3Dx"
    )
    params = connection_parameters(target, timeout=0.5, statement_timeout=2.25)
    assert params == {
        "host": "db1", "port": "6543", "user": "app", "dbname": "trading",
        "password": "p@ss",  # pragma: allowlist secret
        "connect_timeout": "2", "application_name": "refapp", "sslmode": "verify-full",
        "sslrootcert": "/opt/ca.crt", "options": "-c search_path=x -c statement_timeout=2250",
    }  # fmt: skip
    bare = connection_parameters(parse_database_url("postgresql://app@db1/trading?application_name=jobs"), 10.2)
    assert "password" not in bare and "options" not in bare
    assert (bare["connect_timeout"], bare["application_name"], bare["port"]) == ("11", "jobs", "5432")


def test_metrics_label_escaping_and_route_bounding():
    metrics = Metrics("svc", "1.0", frozenset({"/health"}))
    metrics.started_request()
    metrics.finished_request("GET", "/health", 200, 0.01)
    metrics.started_request()
    metrics.finished_request("BREW", "/some/random/path/123", 404, 0.02)
    text = metrics.render()
    assert 'refapp_http_requests_total{service="svc",method="GET",path="/health",status="200"} 1' in text
    assert 'refapp_http_requests_total{service="svc",method="OTHER",path="other",status="404"} 1' in text
    assert "/some/random" not in text
    assert Metrics('a"b\\c', "1", frozenset()).render().count('service="a\\"b\\\\c"') >= 1
