"""datatier scenario: roles postgresql and redis on db1, proven from app1 (a client) and lb1 (not one)."""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import testinfra

INVENTORY = Path(os.environ["MOLECULE_INVENTORY_FILE"]).parent
PROJECT = Path(os.environ["MOLECULE_PROJECT_DIRECTORY"])
CONVERGE = Path(__file__).resolve().parent.parent / "converge.yml"
SECRETS = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "secrets"

testinfra_hosts = ["ansible://db1"]


def secret(name: str) -> str:
    return (SECRETS / name).read_text().split()[0]


@pytest.fixture(scope="module")
def hosts():
    return {n: testinfra.get_host(f"ansible://{n}?ansible_inventory={INVENTORY}") for n in ("db1", "app1", "lb1")}


WRONG = "not-the-password-0123456789"


def psql(client, sql: str, wrong_password: bool = False, db: str = "refapp", sslmode: str = "verify-full",
         host: str = "db1"):
    """psql over TCP to db1 as refapp; the password comes from the client's ~/.pgpass, the CA that
    verify-full checks db1's certificate against from ~/.postgresql/root.crt (converge.yml)."""
    conninfo = f"host={host} port=5432 dbname={db} user=refapp sslmode={sslmode} connect_timeout=5"
    env = f"PGPASSWORD={WRONG} " if wrong_password else ""
    return client.run(f"{env}psql {shlex.quote(conninfo)} -XAtc {shlex.quote(sql)}")


def local_sql(host, sql: str) -> str:
    return host.check_output(f"runuser -u postgres -- psql -XAtc {shlex.quote(sql)}")


def redis(client, *args: str, auth: str | None = None):
    """redis-cli to db1; auth: None, 'default' or 'refapp' (password files from converge.yml), or 'wrong'."""
    if auth == "wrong":
        env = f"REDISCLI_AUTH={WRONG} "
    elif auth:
        env = f'REDISCLI_AUTH="$(cat /root/.redis-{auth})" '
    else:
        env = ""
    who = "--user refapp " if auth == "refapp" else ""
    return client.run(f"{env}redis-cli -h db1 {who}--no-auth-warning " + " ".join(shlex.quote(a) for a in args))


def journal(host, unit: str) -> str:
    return host.run(f"journalctl -u {unit} --no-pager -n 30").stdout


# PostgreSQL ---------------------------------------------------------------

def cluster(host) -> tuple[str, str]:
    version, name = host.check_output("pg_lsclusters --no-header").split()[:2]
    return version, name


def test_postgresql_runs_and_listens_on_its_address(host):
    version, name = cluster(host)
    unit = f"postgresql@{version}-{name}"
    assert host.service(unit).is_running, journal(host, unit)
    assert host.service(unit).is_enabled
    address = host.check_output("hostname -I").split()[0]
    assert host.socket(f"tcp://{address}:5432").is_listening
    assert host.socket("tcp://127.0.0.1:5432").is_listening


def test_scram_login_from_app1_creates_a_table(hosts):
    out = psql(hosts["app1"], "CREATE TABLE IF NOT EXISTS probe (id int); INSERT INTO probe VALUES (1); "
               "SELECT count(*) > 0 FROM probe;")
    assert out.rc == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "t"
    ssl = psql(hosts["app1"], "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
    assert ssl.stdout.strip() == "t", ssl.stderr


def test_clients_verify_the_servers_certificate(hosts, host):
    # verify-full (every psql() above) checked db1's certificate against the lab's CA for the
    # name db1; by its address the same certificate does not match, and is refused.
    address = host.check_output("hostname -I").split()[0]
    by_address = psql(hosts["app1"], "SELECT 1", host=address)
    assert by_address.rc != 0 and "does not match host name" in by_address.stderr, by_address.stderr
    tls_dir = f"/etc/postgresql/{cluster(host)[0]}/main/tls"
    assert local_sql(host, "SHOW ssl_cert_file") == f"{tls_dir}/server.crt"
    issuer = host.check_output(f"openssl x509 -in {tls_dir}/server.crt -noout -issuer")
    assert "tradeops lab CA" in issuer and "snakeoil" not in issuer
    key = host.file(f"{tls_dir}/server.key")
    assert (key.user, key.group, key.mode) == ("postgres", "postgres", 0o600)
    assert host.run(f"runuser -u nobody -- cat {tls_dir}/server.key").rc != 0


def test_wrong_password_is_refused(hosts):
    out = psql(hosts["app1"], "SELECT 1", wrong_password=True)
    assert out.rc != 0
    assert "password authentication failed" in out.stderr


def test_lb1_is_refused_by_pg_hba(hosts):
    # lb1 holds the right password (converge.yml): pg_hba refuses it all the same.
    out = psql(hosts["lb1"], "SELECT 1")
    assert out.rc != 0
    assert "no pg_hba.conf entry" in out.stderr


def test_app_user_reaches_only_its_database_and_only_over_tls(hosts):
    other = psql(hosts["app1"], "SELECT 1", db="postgres")
    assert other.rc != 0 and "no pg_hba.conf entry" in other.stderr
    plain = psql(hosts["app1"], "SELECT 1", sslmode="disable")
    assert plain.rc != 0 and "no encryption" in plain.stderr


def test_passwords_are_scram(host):
    assert local_sql(host, "SHOW password_encryption") == "scram-sha-256"
    stored = local_sql(host, "SELECT rolpassword FROM pg_authid WHERE rolname = 'refapp'")
    assert stored.startswith("SCRAM-SHA-256$")
    hba = host.file(f"/etc/postgresql/{cluster(host)[0]}/main/pg_hba.conf").content_string
    methods = {line.split()[-1] for line in hba.splitlines() if line.startswith("host")}
    assert methods == {"scram-sha-256"}


def test_settings_follow_memory_and_overrides(host):
    # converge.yml sizes for 1024 MB and overrides work_mem.
    expected = {"shared_buffers": "256MB", "effective_cache_size": "768MB", "maintenance_work_mem": "64MB",
                "work_mem": "6MB", "max_connections": "100", "log_min_duration_statement": "500ms"}
    for name, value in expected.items():
        assert local_sql(host, f"SHOW {name}") == value, name
    assert local_sql(host, "SELECT count(*) FROM pg_settings WHERE pending_restart") == "0"


def test_postgresql_files_are_private(host):
    conf = f"/etc/postgresql/{cluster(host)[0]}/main"
    for path in (f"{conf}/conf.d/50-tradeops.conf", f"{conf}/pg_hba.conf"):
        f = host.file(path)
        assert (f.user, f.group, f.mode) == ("postgres", "postgres", 0o640), path


# Redis --------------------------------------------------------------------

def test_redis_runs_on_declared_addresses(host):
    assert host.service("redis-server").is_running, journal(host, "redis-server")
    assert host.service("redis-server").is_enabled
    address = host.check_output("hostname -I").split()[0]
    assert host.socket(f"tcp://{address}:6379").is_listening
    assert host.socket("tcp://127.0.0.1:6379").is_listening
    assert not host.socket("tcp://0.0.0.0:6379").is_listening


def test_redis_requires_auth(hosts):
    for client in ("app1", "lb1"):
        out = redis(hosts[client], "PING")
        assert "NOAUTH" in out.stdout + out.stderr, client
        assert "PONG" not in out.stdout
        assert "NOAUTH" in redis(hosts[client], "GET", "probe").stdout, client
    wrong = redis(hosts["app1"], "PING", auth="wrong")
    assert "WRONGPASS" in wrong.stdout + wrong.stderr


def test_redis_works_with_the_password_from_app1(hosts):
    assert redis(hosts["app1"], "SET", "probe", "1", auth="default").stdout.strip() == "OK"
    assert redis(hosts["app1"], "GET", "probe", auth="default").stdout.strip() == "1"


def test_redis_acl_user_works_but_cannot_administer(hosts):
    assert redis(hosts["app1"], "SET", "k", "v", auth="refapp").stdout.strip() == "OK"
    denied = redis(hosts["app1"], "CONFIG", "GET", "maxmemory", auth="refapp")
    assert "NOPERM" in denied.stdout + denied.stderr


def test_redis_memory_and_persistence(hosts):
    config = redis(hosts["app1"], "CONFIG", "GET", "*", auth="default").stdout.splitlines()
    settings = dict(zip(config[::2], config[1::2], strict=True))
    assert settings["maxmemory-policy"] == "allkeys-lru"
    assert settings["maxmemory"] == str(64 * 1024 * 1024)
    assert settings["appendonly"] == "yes"
    assert settings["save"] == "3600 1 300 100 60 10000"
    assert settings["protected-mode"] == "yes"


def test_redis_config_is_private_and_holds_no_cleartext_password(host):
    f = host.file("/etc/redis/redis.conf")
    assert (f.user, f.group, f.mode) == ("redis", "redis", 0o640)
    leaked = [name for name in ("redis_default", "redis_refapp") if secret(name) in f.content_string]
    assert not leaked, "cleartext password in redis.conf"
    assert host.run("runuser -u nobody -- cat /etc/redis/redis.conf").rc != 0


# Reload or restart ---------------------------------------------------------

def converge_db1(*args: str) -> str:
    """Re-run converge.yml on db1 (PostgreSQL part) with extra arguments; returns its output."""
    proc = subprocess.run(
        [str(Path(sys.executable).with_name("ansible-playbook")), "-i", str(INVENTORY), "--limit", "db1",
         "--tags", "postgresql_configure", str(CONVERGE), *args],
        capture_output=True, text=True, cwd=PROJECT, check=False,
        # The project's fact cache holds the lab's db1: this db1 is another host.
        env={**os.environ, "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_CACHE_PLUGIN": "memory"})
    assert proc.returncode == 0, proc.stdout[-3000:]
    return proc.stdout


def started(host) -> str:
    return local_sql(host, "SELECT pg_postmaster_start_time()")


def test_check_mode_reports_no_change(host):
    out = converge_db1("--check")
    assert "changed=0" in out.split("PLAY RECAP")[-1], out[-2000:]


def test_reloadable_change_reloads_and_start_time_setting_restarts(host):
    before = started(host)
    settings = {"postgresql_settings": {"work_mem": "7MB", "log_min_duration_statement": 500}}
    out = converge_db1("-e", json.dumps(settings))
    assert "RUNNING HANDLER [postgresql : Reload postgresql]" in out
    assert local_sql(host, "SHOW work_mem") == "7MB"
    assert started(host) == before  # reloaded, not restarted

    converge_db1("-e", json.dumps({**settings, "postgresql_max_connections": 120}))
    assert local_sql(host, "SHOW max_connections") == "120"
    assert started(host) != before  # max_connections only applies at start

    converge_db1()  # back to converge.yml's values
    assert (local_sql(host, "SHOW work_mem"), local_sql(host, "SHOW max_connections")) == ("6MB", "100")
