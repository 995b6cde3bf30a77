"""tradeops_backup (the tradeops-backup CLI and the backup_verify module) against real programs: a throw-away
PostgreSQL 15 cluster, redis-server, SQLite, openssl, and S3 served by moto in server mode on a loopback port.
No mocks."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import tarfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import backup_run
import backup_verify
import boto3
import pytest
from ansible.module_utils import tradeops_backup as tb
from plugin_testlib import free_port
from reference_app.conftest import (  # noqa: F401 - session fixtures: a real PostgreSQL cluster and redis-server
    PG_SUPERUSER_PASSWORD,
    REDIS_PASSWORD,
    postgres_server,
    redis_server,
)

pytestmark = pytest.mark.slow

MODULE_UTILS = Path(__file__).resolve().parents[3] / "plugins" / "module_utils"
DB = "bk_app"
ENV_SECRET = "TOKEN=live-trading-token-7f3a9c"
PG_TABLES = {"public.orders": 500, "public.trades": 200, "public.empty_t": 0, 'Risk.odd "name"': 3}
SQLITE_TABLES = {"positions": 40, "fills": 25}
REDIS_DB = 3
REDIS_KEYS, REDIS_TTL_KEYS = 40, 5


# Writes pairs of rows (one in a, one in b) in one transaction each, until told to stop.
SQLITE_WRITER = textwrap.dedent("""
    import os, sqlite3, sys, time
    conn = sqlite3.connect(sys.argv[1], timeout=30, isolation_level=None)
    end = time.monotonic() + 20
    while time.monotonic() < end and not os.path.exists(sys.argv[2]):
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO a (v) VALUES (hex(randomblob(200)))")
        conn.execute("INSERT INTO b (v) VALUES (hex(randomblob(200)))")
        conn.execute("COMMIT")
""")


def _secret_file(path: Path, text: str) -> str:
    path.write_text(text + "\n")
    path.chmod(0o600)
    return str(path)


@pytest.fixture(scope="module")
def sources(postgres_server, redis_server, tmp_path_factory) -> dict[str, Any]:  # noqa: F811
    """What a host holds: a PostgreSQL database, an SQLite database inside data/, Redis keys, config/.env."""
    base = tmp_path_factory.mktemp("host")
    pg = postgres_server
    pg.psql(f"DROP DATABASE IF EXISTS {DB}")
    pg.psql(f"CREATE DATABASE {DB}")
    odd = '"Risk"."odd ""name"""'  # a schema and table name that need quoting
    pg.psql("CREATE TABLE orders (id serial PRIMARY KEY, sym text, qty int);"  # noqa: S608 - fixed test SQL
            "INSERT INTO orders (sym, qty) SELECT 'SYM' || g, g FROM generate_series(1, 500) g;"
            "CREATE TABLE trades (id bigserial PRIMARY KEY, order_id int REFERENCES orders(id), px numeric);"
            "INSERT INTO trades (order_id, px) SELECT g, g * 1.5 FROM generate_series(1, 200) g;"
            'CREATE TABLE empty_t (x int); CREATE SCHEMA "Risk";'
            f"CREATE TABLE {odd} (v text); INSERT INTO {odd} VALUES ('a'), ('b'), ('c');", database=DB)
    data = base / "shared" / "data"
    config = base / "shared" / "config"
    data.mkdir(parents=True)
    config.mkdir()
    (data / "reports").mkdir()
    (data / "reports" / "eod.csv").write_text("sym,qty\nAAPL,10\n")
    (data / "blob.bin").write_bytes(os.urandom(150_000))  # incompressible: the disk-full test needs bytes
    (config / ".env").write_text(ENV_SECRET + "\n")
    (config / ".env").chmod(0o600)
    (config / "app.toml").write_text("[app]\nport = 8000\n")
    db = data / "app.db"
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE positions (id INTEGER PRIMARY KEY, sym TEXT)")
        conn.execute("CREATE TABLE fills (id INTEGER PRIMARY KEY, px REAL)")
        conn.executemany("INSERT INTO positions (sym) VALUES (?)", [(f"S{i}",) for i in range(40)])
        conn.executemany("INSERT INTO fills (px) VALUES (?)", [(i * 0.5,) for i in range(25)])
    conn.close()
    with tb.Resp("127.0.0.1", redis_server.port, REDIS_PASSWORD) as r:
        r.call("SELECT", REDIS_DB)
        r.call("FLUSHDB")
        for i in range(REDIS_KEYS):
            r.call("SET", f"quote:{i}", f"{i}.5")
        for i in range(REDIS_TTL_KEYS):
            r.call("SET", f"session:{i}", "x", "EX", 3600)
    secrets = base / "secrets"
    secrets.mkdir(mode=0o700)
    return {
        "pg": pg, "redis": redis_server, "data": data, "config": config, "sqlite": db,
        "pg_password_file": _secret_file(secrets / "pg.pw", PG_SUPERUSER_PASSWORD),
        "redis_password_file": _secret_file(secrets / "redis.pw", REDIS_PASSWORD),
        "key_file": _secret_file(secrets / "backup.key", "k3y-" + "a" * 60),
    }


def make_cfg(sources: dict[str, Any], root: Path, **overrides: Any) -> dict[str, Any]:
    raw = {
        "backup_root": str(root), "set": "refapp", "host": "db1",
        "postgresql": [{"name": "appdb", "dbname": DB, "host": "127.0.0.1", "port": sources["pg"].port,
                        "user": "postgres", "password_file": sources["pg_password_file"]}],
        "sqlite": [{"name": "app", "path": str(sources["sqlite"])}],
        "redis": [{"name": "cache", "host": "127.0.0.1", "port": sources["redis"].port,
                   "password_file": sources["redis_password_file"]}],
        "paths": [{"name": "data", "path": str(sources["data"])},
                  {"name": "config", "path": str(sources["config"]), "secret": True}],
        "encryption": {"key_file": sources["key_file"]},
        "verify": {"max_age_hours": 1},
    }
    raw.update(overrides)
    return tb.load_config(raw)


@pytest.fixture(scope="module")
def made(sources, tmp_path_factory) -> tuple[dict[str, Any], dict[str, Any]]:
    """One full backup, made once; tests that damage it work on a copy (``copy_backup``)."""
    cfg = make_cfg(sources, tmp_path_factory.mktemp("backups") / "root")
    return cfg, tb.run_backup(cfg)


def copy_backup(made: tuple[dict[str, Any], dict[str, Any]], tmp_path: Path, **overrides: Any
                ) -> tuple[dict[str, Any], Path]:
    cfg, manifest = made
    root = tmp_path / "root"
    shutil.copytree(cfg["backup_root"], root)
    new = json.loads(json.dumps(cfg))
    new.update(backup_root=str(root), **overrides)
    return tb.load_config(new), root / manifest["backup_id"]


def resign(cfg: dict[str, Any], directory: Path, manifest: dict[str, Any]) -> None:
    """Write ``manifest`` signed with the set's key: a fault on the host itself (a bad copy tool, a bug), which the
    signature cannot catch, so the deeper checks must (an edit without the key: tests/security/hostile)."""
    (directory / "manifest.json").write_text(json.dumps(tb.auth.sign(manifest, tb._keys(cfg).key)))


def keyed(tmp_path: Path, **raw: Any) -> dict[str, Any]:
    """A configuration with a key of its own in ``tmp_path`` (every backup is encrypted and signed)."""
    key = _secret_file(tmp_path / "set.key", "set-key-" + "b" * 40)
    return tb.load_config({"encryption": {"key_file": key}, **raw})


def pg_databases(pg) -> list[str]:
    return pg.psql("SELECT datname FROM pg_database ORDER BY 1").split()


# -- backup and manifest -------------------------------------------------------------------


def test_backup_writes_a_complete_manifest_with_counts(made, sources):
    cfg, manifest = made
    directory = Path(cfg["backup_root"]) / manifest["backup_id"]
    assert re.match(r"^\d{8}T\d{6}Z-db1$", manifest["backup_id"])
    assert manifest["outcome"] == "complete" and manifest["host"] == "db1" and manifest["set"] == "refapp"
    assert manifest["tool"] == "tradeops-backup" and manifest["tool_version"] == tb.__version__
    assert manifest["format"] == 2 and manifest["auth"]["alg"] == "hmac-sha256"
    assert tb.check_manifest(manifest, manifest["backup_id"], tb._keys(cfg)) == manifest["auth"]["mac"]
    assert all(f["encrypted"] and f["path"].endswith(".age") for f in manifest["files"])  # everything
    assert manifest["started"] <= manifest["finished"]
    stored = sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file())
    assert stored == sorted([*(f["path"] for f in manifest["files"]), "manifest.json"])
    for entry in manifest["files"]:
        path = directory / entry["path"]
        assert entry["size"] == path.stat().st_size and entry["sha256"] == tb.sha256_file(path)
        assert path.stat().st_mode & 0o077 == 0, entry["path"]
    assert manifest["bytes"] == sum(f["size"] for f in manifest["files"])
    items = {i["name"]: i for i in manifest["items"]}
    assert items["appdb"]["tables"] == PG_TABLES and items["appdb"]["server_version"].startswith("15")
    assert items["app"]["tables"] == SQLITE_TABLES and items["app"]["sqlite_version"] == sqlite3.sqlite_version
    redis = items["cache"]
    assert redis["keys"][f"db{REDIS_DB}"] == REDIS_KEYS + REDIS_TTL_KEYS and redis["server_version"].startswith("7")
    assert redis["rdb_keys"] >= REDIS_KEYS + REDIS_TTL_KEYS and redis["rdb_expires"] >= REDIS_TTL_KEYS
    assert items["config"]["file"] == "files/config.tar.gz.age" and items["config"]["encrypted"]
    # the live SQLite database (and its WAL) is backed up through the API, not in the data tar
    plain = Path(cfg["backup_root"]).parent / "data.tar.gz"
    tb.decrypt_file(directory / "files" / "data.tar.gz.age", plain, tb._keys(cfg))
    with tarfile.open(plain) as tar:
        assert sorted(tar.getnames()) == ["blob.bin", "reports", "reports/eod.csv"]
    assert items["data"]["members"] == 3
    text = (directory / "manifest.json").read_text()
    for secret in (PG_SUPERUSER_PASSWORD, REDIS_PASSWORD, ENV_SECRET):
        assert secret not in text


def test_secrets_are_encrypted_and_decrypt_with_the_documented_command(made, sources, tmp_path):
    cfg, manifest = made
    directory = Path(cfg["backup_root"]) / manifest["backup_id"]
    stored = directory / "files" / "config.tar.gz.age"
    raw = stored.read_bytes()
    assert raw.startswith(b"age-encryption.org/v1\n") and b"live-trading-token" not in raw and b".env" not in raw
    assert not (directory / "files" / "config.tar.gz").exists()
    dump = (directory / "postgresql" / "appdb.dump.age").read_bytes()
    assert dump.startswith(b"age-encryption.org/v1\n") and b"PGDMP" not in dump and b"SYM1" not in dump
    plain = tmp_path / "config.tar.gz"
    config = tmp_path / "backup.json"
    config.write_text(json.dumps(cfg))
    command = tb.DECRYPT_HINT.replace("CONFIG", str(config)).replace("FILE.age", str(stored))
    assert tb.main_cli([*command.split()[1:-1], str(plain)]) == 0
    assert plain.stat().st_mode & 0o077 == 0
    with tarfile.open(plain) as tar:
        assert tar.extractfile(".env").read().decode().strip() == ENV_SECRET
        assert tar.getmember(".env").mode & 0o077 == 0


def test_wrong_password_is_a_clear_error_without_the_secret(sources, tmp_path):
    wrong = "wrong-Pw-0x5eed"
    cfg = make_cfg(sources, tmp_path / "root", sqlite=[], redis=[], paths=[], postgresql=[
        {"name": "appdb", "dbname": DB, "host": "127.0.0.1", "port": sources["pg"].port, "user": "postgres",
         "password_file": _secret_file(tmp_path / "wrong.pw", wrong)}])
    with pytest.raises(tb.BackupError) as failed:
        tb.run_backup(cfg)
    message = str(failed.value)
    assert "postgresql item 'appdb'" in message and "password authentication failed" in message
    assert wrong not in message
    assert [p.name for p in (tmp_path / "root").iterdir()] == [".lock"]  # the partial backup was removed


def test_sqlite_backup_of_a_database_being_written_is_consistent(tmp_path):
    db = tmp_path / "busy.db"
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE a (id INTEGER PRIMARY KEY, v TEXT)")
        conn.execute("CREATE TABLE b (id INTEGER PRIMARY KEY, v TEXT)")
    conn.close()
    stop = tmp_path / "stop"
    writer = subprocess.Popen([sys.executable, "-c", SQLITE_WRITER, str(db), str(stop)])
    try:
        deadline = time.monotonic() + 10
        while sqlite3.connect(db).execute("SELECT count(*) FROM b").fetchone()[0] < 200:
            assert time.monotonic() < deadline and writer.poll() is None
            time.sleep(0.02)
        cfg = keyed(tmp_path, backup_root=str(tmp_path / "root"), sqlite=[{"name": "busy", "path": str(db)}])
        manifests = [tb.run_backup(cfg) for _ in range(3)]
    finally:
        stop.touch()
        writer.wait(timeout=30)
    for manifest in manifests:
        counts = manifest["items"][0]["tables"]
        assert counts["a"] == counts["b"] > 0  # each copy is one committed state, never half a transaction
        report = tb.verify_backup(cfg, manifest["backup_id"], max_age_hours=1)
        assert report["status"] == "passed", report
    assert manifests[0]["items"][0]["tables"]["a"] < manifests[-1]["items"][0]["tables"]["a"]  # writes went on


# -- verify --------------------------------------------------------------------------------


def test_verify_passes_with_scratch_restores_and_leaves_nothing_behind(made, sources):
    cfg, manifest = made
    before = pg_databases(sources["pg"])
    report = tb.verify_backup(cfg, record=False)
    assert report["status"] == "passed", report["checks"]
    assert report["backup_id"] == manifest["backup_id"] and report["failed_items"] == []
    checks = {(c["item"], c["check"]): c for c in report["checks"]}
    pg = checks[("postgresql/appdb.dump.age", "restore")]["detail"]
    assert "restored into scratch database tradeops_verify_appdb_" in pg and "4 tables, 703 rows" in pg
    assert "loaded into a throw-away redis-server" in checks[("redis/cache.rdb.age", "restore")]["detail"]
    assert "integrity_check ok" in checks[("sqlite/app.sqlite3.age", "restore")]["detail"]
    assert "decrypted" in checks[("files/config.tar.gz.age", "archive")]["detail"]
    assert "signed with the set's key" in checks[(manifest["backup_id"], "authenticity")]["detail"]
    assert {c["check"] for c in report["checks"]} == {"authenticity", "configuration", "freshness", "checksum",
                                                      "restore", "archive"}
    assert pg_databases(sources["pg"]) == before  # the scratch database was dropped


@pytest.mark.parametrize(("damage", "path"), [
    ("flip", "postgresql/appdb.dump.age"),
    ("flip", "sqlite/app.sqlite3.age"),
    ("truncate", "files/data.tar.gz.age"),
    ("delete", "redis/cache.rdb.age"),
])  # fmt: skip
def test_verify_names_exactly_the_damaged_file(made, tmp_path, damage, path):
    cfg, directory = copy_backup(made, tmp_path)
    target = directory / path
    if damage == "flip":
        data = bytearray(target.read_bytes())
        data[len(data) // 2] ^= 0x01
        target.write_bytes(bytes(data))
    elif damage == "truncate":
        target.write_bytes(target.read_bytes()[:-100])
    else:
        target.unlink()
    report = tb.verify_backup(cfg, scratch_restore=False)
    assert report["status"] == "failed"
    assert report["failed_items"] == [path]
    assert json.loads((directory / "verify.json").read_text())["status"] == "failed"
    assert tb.list_backups(cfg["backup_root"])[0]["verified"] is False


def test_archive_check_catches_damage_the_manifest_agrees_with(made, tmp_path):
    """A truncated archive whose manifest was rewritten to match, by something holding the key (a bad copy tool
    on the host), is caught by the full read (age authenticates its last chunk too)."""
    cfg, directory = copy_backup(made, tmp_path)
    target = directory / "files" / "data.tar.gz.age"
    target.write_bytes(target.read_bytes()[:-200])
    manifest = json.loads((directory / "manifest.json").read_text())
    for entry in manifest["files"]:
        if entry["path"] == "files/data.tar.gz.age":
            entry.update(size=target.stat().st_size, sha256=tb.sha256_file(target))
    resign(cfg, directory, manifest)
    report = tb.verify_backup(cfg, scratch_restore=False)
    assert report["failed_items"] == ["files/data.tar.gz.age"]
    assert [c["check"] for c in report["checks"] if c["status"] == "failed"] == ["archive"]


def test_verify_with_the_wrong_key_names_the_backup(made, tmp_path):
    cfg, directory = copy_backup(made, tmp_path)
    cfg["encryption"]["key_file"] = _secret_file(tmp_path / "other.key", "another-key-" + "c" * 40)
    report = tb.verify_backup(cfg, scratch_restore=False)
    assert report["failed_items"] == [directory.name]
    assert "signed with another key" in report["message"]


def test_scratch_restore_with_different_counts_fails_and_drops_the_scratch_db(made, sources, tmp_path):
    cfg, directory = copy_backup(made, tmp_path)
    manifest = json.loads((directory / "manifest.json").read_text())
    for item in manifest["items"]:
        if item["kind"] == "postgresql":
            item["tables"]["public.orders"] = 499
        if item["kind"] == "redis":
            item["rdb_keys"] += 7
    resign(cfg, directory, manifest)
    before = pg_databases(sources["pg"])
    report = tb.verify_backup(cfg)
    assert report["failed_items"] == ["postgresql/appdb.dump.age", "redis/cache.rdb.age"]
    detail = next(c["detail"] for c in report["checks"] if c["item"] == "postgresql/appdb.dump.age"
                  and c["status"] == "failed")
    assert "public.orders: manifest 499 restored 500" in detail
    assert pg_databases(sources["pg"]) == before


def test_freshness_and_unknown_backup_id(made, tmp_path, capsys):
    cfg, directory = copy_backup(made, tmp_path)
    report = tb.verify_backup(cfg, scratch_restore=False, max_age_hours=0)
    assert report["failed_items"] == [directory.name]
    config = tmp_path / "backup.json"
    config.write_text(json.dumps(cfg))
    assert tb.main_cli(["--config", str(config), "verify", "--backup-id", "20000101T000000Z-x"]) == 2
    assert f"unknown backup_id '20000101T000000Z-x'; available: {directory.name}" in capsys.readouterr().err


# -- retention -----------------------------------------------------------------------------


def _b(backup_id: str, verified: bool = False, complete: bool = True, age_days: float = 0.0) -> dict[str, Any]:
    return {"backup_id": backup_id, "complete": complete, "verified": verified,
            "finished": tb.iso(1_700_000_000 - age_days * 86400)}


@pytest.mark.parametrize(("backups", "days", "count", "kept"), [
    ([_b("3"), _b("2", verified=True), _b("1")], 0, 0, ["2"]),  # policy says delete all: newest verified stays
    ([_b("3", verified=True), _b("2", verified=True), _b("1")], None, 1, ["3"]),
    ([_b("3", age_days=1), _b("2", age_days=5), _b("1", age_days=9)], 7, 1, ["3", "2"]),
    ([_b("3", age_days=1), _b("2", age_days=5), _b("1", age_days=9)], 7, 3, ["3", "2", "1"]),
    ([_b("3"), _b("2", complete=False), _b("1")], None, None, ["3", "1"]),  # incomplete: never kept
    ([_b("4"), _b("3", verified=True, age_days=30), _b("1", verified=True, age_days=40)], 7, 1, ["4", "3"]),
])  # fmt: skip
def test_plan_retention(backups, days, count, kept):
    keep, delete = tb.plan_retention(backups, days, count, now=1_700_000_000)
    assert keep == kept
    assert sorted(keep + delete) == sorted(b["backup_id"] for b in backups)


def test_prune_keeps_the_newest_verified_backup_whatever_the_policy(sources, tmp_path):
    cfg = keyed(tmp_path, backup_root=str(tmp_path / "root"), sqlite=[{"name": "app", "path": str(sources["sqlite"])}],
                retention={"keep_days": 0, "keep_count": 0})
    ids = [tb.run_backup(cfg)["backup_id"] for _ in range(3)]
    assert len(set(ids)) == 3 and ids == sorted(ids)
    assert tb.verify_backup(cfg, ids[1], max_age_hours=1)["status"] == "passed"
    (tmp_path / "root" / ".20000101T000000Z-db1.partial").mkdir()  # left by a killed run
    result = tb.prune_local(cfg)
    assert result["kept"] == [ids[1]] and sorted(result["deleted"]) == sorted([ids[0], ids[2]])
    assert sorted(p.name for p in (tmp_path / "root").iterdir()) == [".lock", ids[1]]


# -- disk full -----------------------------------------------------------------------------


def test_disk_full_removes_the_partial_backup_and_keeps_earlier_ones(made, tmp_path):
    cfg, directory = copy_backup(made, tmp_path)
    before = {p: p.read_bytes() for p in directory.rglob("*") if p.is_file()}
    config = tmp_path / "backup.json"
    config.write_text(json.dumps(cfg))
    script = textwrap.dedent(f"""
        import resource, signal, sys
        import ansible.module_utils
        ansible.module_utils.__path__.append({str(MODULE_UTILS)!r})
        from ansible.module_utils import tradeops_backup
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes beyond the limit fail with EFBIG, like ENOSPC
        resource.setrlimit(resource.RLIMIT_FSIZE, (60_000, 60_000))
        sys.exit(tradeops_backup.main_cli(["--config", {str(config)!r}, "backup", "--no-prune"]))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2, proc.stderr
    assert "paths item 'data'" in proc.stderr and "no space left (or file size limit)" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert sorted(p.name for p in Path(cfg["backup_root"]).iterdir()) == [".lock", directory.name]
    assert {p: p.read_bytes() for p in directory.rglob("*") if p.is_file()} == before
    assert tb.verify_backup(cfg, scratch_restore=False, record=False)["status"] == "passed"


# -- restore -------------------------------------------------------------------------------


def test_restore_every_kind(made, sources, tmp_path):
    cfg, directory = copy_backup(made, tmp_path)
    pg = sources["pg"]
    result = tb.restore_item(cfg, None, "appdb", target="bk_restored")
    assert result["tables"] == PG_TABLES and result["replaced"] is False
    pg.psql("TRUNCATE trades; DELETE FROM orders WHERE id > 10", database="bk_restored")
    with pytest.raises(tb.BackupError, match="exists; restoring replaces it: pass confirm"):
        tb.restore_item(cfg, None, "appdb", target="bk_restored")
    assert pg.psql("SELECT count(*) FROM orders", database="bk_restored") == "10"
    again = tb.restore_item(cfg, directory.name, "appdb", target="bk_restored", confirm=True)
    assert again["replaced"] is True
    assert pg.psql("SELECT count(*) FROM orders", database="bk_restored") == "500"
    assert not [d for d in pg_databases(pg) if "_restore_" in d or "_pre_restore_" in d]
    pg.psql("DROP DATABASE bk_restored")

    sqlite_target = tmp_path / "restored" / "app.db"
    assert tb.restore_item(cfg, None, "app", target=str(sqlite_target))["tables"] == SQLITE_TABLES
    config_target = tmp_path / "restored" / "config"
    assert tb.restore_item(cfg, None, "config", target=str(config_target))["members"] == 2
    assert (config_target / ".env").read_text().strip() == ENV_SECRET
    rdb_target = tmp_path / "restored" / "dump.rdb"
    assert tb.restore_item(cfg, None, "cache", target=str(rdb_target))["keys"] >= REDIS_KEYS
    with pytest.raises(tb.BackupError, match="has no item 'nope'; it has: appdb, app, cache, data, config"):
        tb.restore_item(cfg, None, "nope")


def test_a_dump_is_decrypted_straight_into_pg_restore_and_a_bad_chunk_stops_the_swap(made, sources, tmp_path):
    """The PostgreSQL restore reads age's output as pg_restore's standard input (no plain dump on disk); a chunk
    that fails age's authentication (under a manifest that agrees: a fault on the host) fails the restore with the
    decryption named, and nothing is swapped in nor left behind."""
    cfg, directory = copy_backup(made, tmp_path)
    pg = sources["pg"]
    stored = directory / "postgresql" / "appdb.dump.age"
    data = bytearray(stored.read_bytes())
    data[-100] ^= 0x01  # in the last chunk: pg_restore has already read nearly everything
    stored.write_bytes(bytes(data))
    manifest = json.loads((directory / "manifest.json").read_text())
    for entry in manifest["files"]:
        if entry["path"] == "postgresql/appdb.dump.age":
            entry["sha256"] = tb.sha256_file(stored)
    resign(cfg, directory, manifest)
    before = pg_databases(pg)
    with pytest.raises(tb.BackupError, match=r"decrypting appdb\.dump\.age failed"):
        tb.restore_item(cfg, None, "appdb", target="bk_tampered")
    assert pg_databases(pg) == before


def test_extract_refuses_members_outside_the_target(tmp_path):
    evil = tmp_path / "evil.tar.gz"
    with tarfile.open(evil, "w:gz") as tar:
        payload = tmp_path / "p"
        payload.write_text("x")
        tar.add(payload, arcname="../escaped")
    with pytest.raises(tb.BackupError, match=r"unsafe member '\.\./escaped'"):
        tb.extract_archive(evil, tmp_path / "target", None)
    assert not (tmp_path / "escaped").exists()


# -- offsite (moto in server mode) ---------------------------------------------------------


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    port = free_port()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def _s3(endpoint: str):
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
                        aws_secret_access_key="testing")


def test_offsite_upload_verify_outage_and_catch_up(made, sources, s3_endpoint, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    client = _s3(s3_endpoint)
    client.create_bucket(Bucket="tradeops-backups")
    offsite = {"bucket": "tradeops-backups", "endpoint_url": s3_endpoint, "server_side_encryption": "AES256",
               "storage_class": "STANDARD_IA", "multipart_threshold_mb": 0.05, "attempts": 2, "backoff": 0.01,
               "retention": {"keep_days": 0, "keep_count": 0}}
    metrics = tmp_path / "textfile"
    cfg, directory = copy_backup(made, tmp_path, offsite=offsite, metrics_dir=str(metrics))
    first = directory.name

    up = tb.upload_missing(cfg)
    assert up["status"] == "complete" and up["uploaded"][0]["backup_id"] == first
    manifest = json.loads((directory / "manifest.json").read_text())
    for entry in manifest["files"]:
        head = client.head_object(Bucket="tradeops-backups", Key=f"tradeops/refapp/{first}/{entry['path']}")
        assert head["ContentLength"] == entry["size"] and head["Metadata"]["sha256"] == entry["sha256"]
        assert head["ServerSideEncryption"] == "AES256" and head["StorageClass"] == "STANDARD_IA"
    data = client.head_object(Bucket="tradeops-backups", Key=f"tradeops/refapp/{first}/files/data.tar.gz.age")
    assert data["ETag"].strip('"').endswith("-1")  # above the threshold: a multipart upload
    assert tb.upload_missing(cfg)["uploaded"] == []  # recorded complete: not looked at again
    assert tb.upload_missing(cfg, recheck=True)["uploaded"][0]["uploaded"] == []  # all there: nothing sent again

    report = tb.verify_backup(cfg, scratch_restore=False)
    offsite_checks = [c for c in report["checks"] if c["check"] == "offsite"]
    assert report["status"] == "passed" and len(offsite_checks) == len(manifest["files"]) + 1
    assert tb.upload_missing(cfg, first)["uploaded"][0]["uploaded"] == ["verify.json"]

    # S3 is down: the local backup is kept, the run exits 1, the metric records the failure
    down = json.loads(json.dumps(cfg))
    down["offsite"]["endpoint_url"] = f"http://127.0.0.1:{free_port()}"
    config_down = tmp_path / "down.json"
    config_down.write_text(json.dumps(down))
    capsys.readouterr()
    assert tb.main_cli(["--config", str(config_down), "--json", "backup"]) == 1
    result = json.loads(capsys.readouterr().out)
    second = result["backup_id"]
    assert "failed after 2 attempt(s)" in result["problems"][0] and "Could not connect" in result["problems"][0]
    assert tb.load_manifest(Path(cfg["backup_root"]) / second) is not None
    assert json.loads((Path(cfg["backup_root"]) / second / "offsite.json").read_text())["status"] == "failed"
    prom = (metrics / "tradeops_backup.prom").read_text()
    assert 'tradeops_backup_last_run_success{set="refapp"} 0' in prom
    assert re.search(r'tradeops_backup_last_failure_timestamp_seconds\{set="refapp"\} \d{10}', prom)
    assert 'tradeops_backup_offsite_pending{set="refapp"} 1' in prom
    assert [b["backup_id"] for b in tb.list_backups(cfg["backup_root"])] == [second, first]  # nothing pruned

    # the next run uploads what is missing
    config = tmp_path / "up.json"
    config.write_text(json.dumps(cfg))
    assert tb.main_cli(["--config", str(config), "upload"]) == 0
    assert f"{second}: uploaded" in capsys.readouterr().out
    assert tb.main_cli(["--config", str(config), "--json", "list", "--offsite"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(b["backup_id"], b["complete"], b["verified"]) for b in listed] == [(second, True, False),
                                                                                (first, True, True)]

    # a damaged offsite object (same size, same metadata) is named by the verification
    key = f"tradeops/refapp/{first}/sqlite/app.sqlite3.age"
    body = bytearray(client.get_object(Bucket="tradeops-backups", Key=key)["Body"].read())
    body[100] ^= 0xFF
    client.put_object(Bucket="tradeops-backups", Key=key, Body=bytes(body),
                      Metadata={"sha256": tb.sha256_file(directory / "sqlite" / "app.sqlite3.age")})
    report = tb.verify_backup(cfg, first, scratch_restore=False, record=False)
    assert report["failed_items"] == ["sqlite/app.sqlite3.age"]
    assert "downloaded and hashed" in next(c["detail"] for c in report["checks"] if c["status"] == "failed")

    fresh = json.loads(json.dumps(cfg))
    fresh["backup_root"] = str(tmp_path / "fresh")
    fresh = tb.load_config(fresh)
    with pytest.raises(tb.BackupError, match=r"downloaded sqlite/app\.sqlite3\.age differs from its manifest sha256"):
        tb.S3Store(fresh).fetch(first, Path(fresh["backup_root"]))
    assert list(Path(fresh["backup_root"]).iterdir()) == []
    assert tb.upload_missing(cfg, first)["uploaded"][0]["uploaded"] == ["sqlite/app.sqlite3.age"]  # repaired

    # offsite retention: the policy deletes everything, the newest verified offsite backup stays
    assert tb.prune_offsite(cfg) == {"kept": [first], "deleted": [second], "dry_run": False}
    assert [b["backup_id"] for b in tb.S3Store(cfg).list_backups()] == [first]

    # disaster recovery onto a fresh host: fetch from offsite, verify
    with pytest.raises(tb.BackupError, match=f"available: {first}"):
        tb.S3Store(fresh).fetch("20000101T000000Z-db1", Path(fresh["backup_root"]))
    fetched = tb.S3Store(fresh).fetch(first, Path(fresh["backup_root"]))
    assert fetched == Path(fresh["backup_root"]) / first
    assert tb.verify_backup(fresh, first, offsite=False, max_age_hours=24)["status"] == "passed"


# -- wrong credentials ---------------------------------------------------------------------

MOTO_POLICY = '{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}'


@pytest.fixture(scope="module")
def s3_with_auth() -> Iterator[dict[str, str]]:
    """moto in server mode (its own process) that checks signatures after four set-up calls: a bucket and an
    IAM user with an access key; every later request must be signed with that key's secret."""
    port = free_port()
    proc = subprocess.Popen([str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
                            env={**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "4"}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        endpoint = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None, "moto_server did not start"
                time.sleep(0.1)
        boot = {"endpoint_url": endpoint, "region_name": "us-east-1", "aws_access_key_id": "boot",
                "aws_secret_access_key": "boot"}
        boto3.client("s3", **boot).create_bucket(Bucket="tradeops-auth")
        iam = boto3.client("iam", **boot)
        iam.create_user(UserName="backup")
        iam.put_user_policy(UserName="backup", PolicyName="all", PolicyDocument=MOTO_POLICY)
        key = iam.create_access_key(UserName="backup")["AccessKey"]
        yield {"endpoint": endpoint, "key_id": key["AccessKeyId"], "secret": key["SecretAccessKey"]}
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _metrics(path: Path) -> dict[str, float]:
    return {m.group(1): float(m.group(2)) for m in re.finditer(r'^tradeops_backup_(\w+)\{set="[^"]+"\} (\S+)$',
                                                               path.read_text(), re.MULTILINE)}


@pytest.mark.parametrize("wrong", ["secret", "key_id"])
def test_wrong_s3_credentials_keep_the_local_backup_and_never_print_the_secret(sources, s3_with_auth, tmp_path,
                                                                               capsys, wrong):
    """Exit 1 (the local backup is made and kept, its offsite copy is not), the error names the setting to fix,
    the secret is in no output, the metric records the failure; with the right secret the next run uploads it."""
    bad_secret = "wr0ng-S3-secret-" + "x" * 24
    secret_file = tmp_path / "s3.secret"
    key_id = s3_with_auth["key_id"]
    if wrong == "secret":
        _secret_file(secret_file, bad_secret)
    else:
        _secret_file(secret_file, s3_with_auth["secret"])
        key_id = "AKIANOSUCHKEY0000000"
    metrics = tmp_path / "textfile"
    raw = {"backup_root": str(tmp_path / "root"), "set": "creds", "metrics_dir": str(metrics),
           "sqlite": [{"name": "app", "path": str(sources["sqlite"])}], "encryption": {"key_file": sources["key_file"]},
           "offsite": {"bucket": "tradeops-auth", "endpoint_url": s3_with_auth["endpoint"], "access_key_id": key_id,
                       "secret_access_key_file": str(secret_file), "attempts": 3, "backoff": 0.01}}
    config = tmp_path / "backup.json"
    config.write_text(json.dumps(raw))
    for as_json in (True, False):
        assert tb.main_cli(["--config", str(config), *(["--json"] if as_json else []), "backup", "--no-prune"]) == 1
        out = capsys.readouterr()
        printed = out.out + out.err
        assert bad_secret not in printed and s3_with_auth["secret"] not in printed
        if wrong == "secret":
            assert "SignatureDoesNotMatch" in printed, printed
            assert "check the secret in offsite.secret_access_key_file (role variable backup_s3_secret_access_key)" \
                in printed, printed
        else:
            assert "InvalidAccessKeyId" in printed, printed
            assert "check offsite.access_key_id (role variable backup_s3_access_key_id)" in printed, printed
        assert "failed after 1 attempt(s)" in printed, printed  # not retried: retrying cannot fix credentials
    backups = tb.list_backups(tmp_path / "root")
    assert len(backups) == 2 and all(b["complete"] and b["offsite"] == "failed" for b in backups)
    values = _metrics(metrics / "tradeops_backup.prom")
    assert values["last_run_success"] == 0 and values["offsite_pending"] == 2
    assert values["last_failure_timestamp_seconds"] > 0
    assert "last_success_timestamp_seconds" not in values
    # the offsite comparison of a verification says the same, without the secret
    assert tb.main_cli(["--config", str(config), "verify", "--no-scratch"]) == 3
    out = capsys.readouterr()
    assert "offsite" in out.out and bad_secret not in out.out + out.err
    # fixed credentials: the next run uploads what is missing
    _secret_file(secret_file, s3_with_auth["secret"])
    raw["offsite"]["access_key_id"] = s3_with_auth["key_id"]
    config.write_text(json.dumps(raw))
    assert tb.main_cli(["--config", str(config), "--json", "upload"]) == 0
    uploaded = json.loads(capsys.readouterr().out)["uploaded"]
    assert sorted(u["backup_id"] for u in uploaded) == sorted(b["backup_id"] for b in backups)


def test_a_missing_bucket_during_a_multipart_upload_is_a_clear_partial_failure(sources, s3_endpoint, tmp_path,
                                                                             monkeypatch, capsys):
    """boto3 wraps the S3 error of a multipart upload (S3UploadFailedError): still exit 1 with the cause named,
    not an internal error; the local backup is kept and uploaded once the bucket exists."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    metrics = tmp_path / "textfile"
    config = tmp_path / "backup.json"
    config.write_text(json.dumps({
        "backup_root": str(tmp_path / "root"), "set": "nobucket", "metrics_dir": str(metrics),
        "paths": [{"name": "data", "path": str(sources["data"])}], "encryption": {"key_file": sources["key_file"]},
        "offsite": {"bucket": "tradeops-not-yet", "endpoint_url": s3_endpoint, "multipart_threshold_mb": 0.05,
                    "attempts": 3, "backoff": 0.01}}))
    assert tb.main_cli(["--config", str(config), "backup"]) == 1
    out = capsys.readouterr()
    assert "internal error" not in out.err and "S3UploadFailedError" not in out.out, out
    assert "failed after 1 attempt(s): NoSuchBucket" in out.out and "create the bucket or fix offsite.bucket" \
        in out.out, out.out
    [made] = tb.list_backups(tmp_path / "root")
    assert made["complete"] and made["offsite"] == "failed"
    assert _metrics(metrics / "tradeops_backup.prom")["last_run_success"] == 0
    _s3(s3_endpoint).create_bucket(Bucket="tradeops-not-yet")
    assert tb.main_cli(["--config", str(config), "upload"]) == 0
    assert f"{made['backup_id']}: uploaded" in capsys.readouterr().out


def test_wrong_database_passwords_fail_the_run_clearly_and_keep_earlier_backups(sources, tmp_path, capsys):
    """A wrong PostgreSQL or Redis password: exit 2, the item and the cause named, the password in no output,
    nothing left of the failed run, the earlier backup untouched, the metric records the failure."""
    metrics = tmp_path / "textfile"
    good = {"backup_root": str(tmp_path / "root"), "set": "creds", "metrics_dir": str(metrics),
            "encryption": {"key_file": sources["key_file"]},
            "postgresql": [{"name": "appdb", "dbname": DB, "host": "127.0.0.1", "port": sources["pg"].port,
                            "user": "postgres", "password_file": sources["pg_password_file"]}],
            "redis": [{"name": "cache", "host": "127.0.0.1", "port": sources["redis"].port,
                       "password_file": sources["redis_password_file"]}]}
    config = tmp_path / "backup.json"
    config.write_text(json.dumps(good))
    assert tb.main_cli(["--config", str(config), "backup"]) == 0
    earlier = tb.list_backups(tmp_path / "root")
    assert len(earlier) == 1
    capsys.readouterr()
    for kind, expected in (("postgresql", "postgresql item 'appdb': "),
                           ("redis", "redis item 'cache': ")):
        wrong = f"wr0ng-{kind}-pw-{os.getpid()}"
        bad = json.loads(json.dumps(good))
        bad[kind][0]["password_file"] = _secret_file(tmp_path / f"{kind}.pw", wrong)
        config.write_text(json.dumps(bad))
        assert tb.main_cli(["--config", str(config), "--json", "backup"]) == 2
        out = capsys.readouterr()
        assert out.out == "" and wrong not in out.err, out
        assert out.err.startswith("tradeops-backup: error: backup of set 'creds' failed: " + expected), out.err
        assert re.search(r"password authentication failed|WRONGPASS", out.err), out.err
        assert tb.list_backups(tmp_path / "root") == earlier
        assert sorted(p.name for p in (tmp_path / "root").iterdir()) == [".lock", earlier[0]["backup_id"]]
        values = _metrics(metrics / "tradeops_backup.prom")
        assert values["last_run_success"] == 0
        assert values["last_failure_timestamp_seconds"] > values["last_success_timestamp_seconds"]
    assert tb.verify_backup(tb.load_config(good), earlier[0]["backup_id"], max_age_hours=1)["status"] == "passed"


def test_unknown_backup_id_lists_the_available_ones(made, tmp_path, capsys):
    cfg, directory = copy_backup(made, tmp_path)
    config = tmp_path / "backup.json"
    config.write_text(json.dumps(cfg))
    for command in (["restore", "--backup-id", "nope", "--confirm"], ["verify", "--backup-id", "nope"]):
        assert tb.main_cli(["--config", str(config), *command]) == 2
        assert f"unknown backup_id 'nope'; available: {directory.name}" in capsys.readouterr().err


# -- CLI -----------------------------------------------------------------------------------


def test_cli_backup_verify_list_json_and_metrics(sources, tmp_path, capsys):
    config = tmp_path / "backup.json"
    metrics = tmp_path / "textfile"
    config.write_text(json.dumps({"backup_root": str(tmp_path / "root"), "set": "screener",
                                  "sqlite": [{"name": "app", "path": str(sources["sqlite"])}],
                                  "paths": [{"name": "config", "path": str(sources["config"]), "secret": True}],
                                  "encryption": {"key_file": sources["key_file"]}, "metrics_dir": str(metrics)}))
    assert tb.main_cli(["--config", str(config), "--json", "backup", "--verify"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["verify"]["status"] == "passed" and result["problems"] == []
    assert tb.main_cli(["--config", str(config), "--json", "list"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(b["backup_id"], b["complete"], b["verified"]) for b in listed] == [(result["backup_id"], True, True)]
    prom = (metrics / "tradeops_backup.prom").read_text()
    for metric in ("last_success_timestamp_seconds", "last_duration_seconds", "last_size_bytes"):
        assert re.search(rf'^tradeops_backup_{metric}{{set="screener"}} [0-9.]+$', prom, re.MULTILINE), metric
    assert 'tradeops_backup_last_verified{set="screener"} 1' in prom
    assert "# TYPE tradeops_backup_last_verified gauge" in prom
    assert tb.main_cli(["--config", str(tmp_path / "missing.json"), "list"]) == 2
    assert "cannot read the configuration" in capsys.readouterr().err
    assert tb.main_cli(["--config", str(config), "frobnicate"]) == 2


# -- the backup_verify module --------------------------------------------------------------


def test_module_backup_verify(made, tmp_path, run_module):
    cfg, directory = copy_backup(made, tmp_path)
    config = tmp_path / "backup.json"
    config.write_text(json.dumps(cfg))
    ok = run_module(backup_verify, {"config": str(config), "scratch_restore": False}, check_mode=True)
    assert ok["_rc"] == 0 and ok["status"] == "passed" and ok["changed"] is False, ok
    assert not (directory / "verify.json").exists()  # check mode records nothing
    target = directory / "redis" / "cache.rdb.age"
    target.write_bytes(target.read_bytes()[:-1] + b"\x00")
    bad = run_module(backup_verify, {"settings": cfg, "scratch_restore": False, "max_age_hours": 24})
    assert bad["failed"] and bad["_rc"] == 1 and bad["failed_items"] == ["redis/cache.rdb.age"]
    assert "redis/cache.rdb.age (checksum: sha256 differs from the manifest" in bad["msg"]
    assert json.loads((directory / "verify.json").read_text())["status"] == "failed"
    unknown = run_module(backup_verify, {"config": str(config), "backup_id": "nope"})
    assert unknown["failed"] and f"available: {directory.name}" in unknown["msg"]


def test_module_backup_run(sources, tmp_path, run_module):
    root = tmp_path / "root"
    settings = {"backup_root": str(root), "set": "screener",
                "sqlite": [{"name": "app", "path": str(sources["sqlite"])}],
                "paths": [{"name": "config", "path": str(sources["config"]), "secret": True}],
                "encryption": {"key_file": sources["key_file"]}}
    predicted = run_module(backup_run, {"settings": settings}, check_mode=True)
    assert predicted["changed"] and predicted["items"] == [{"kind": "sqlite", "name": "app"},
                                                           {"kind": "paths", "name": "config"}]
    assert not root.exists()
    keyless = run_module(backup_run, {"settings": {**settings, "encryption": {}}}, check_mode=True)
    assert keyless["failed"] and "encryption.key_file is required" in keyless["msg"] and not root.exists()
    made = run_module(backup_run, {"settings": settings, "verify": True})
    assert made["_rc"] == 0 and made["changed"] and made["verify"]["status"] == "passed", made
    assert tb.list_backups(root, tb._keys(tb.load_config(settings)))[0]["verified"] and made["problems"] == []
    down = {**settings, "offsite": {"bucket": "b", "endpoint_url": f"http://127.0.0.1:{free_port()}", "attempts": 1}}
    failed = run_module(backup_run, {"settings": down, "prune": False})
    assert failed["failed"] and failed["backup_id"] and "was made and kept locally, but:" in failed["msg"]
    assert (root / failed["backup_id"] / "manifest.json").is_file()
    broken = run_module(backup_run, {"settings": {**settings, "sqlite": [{"name": "app", "path": "/nonexistent.db"}]}})
    assert broken["failed"] and "sqlite item 'app': SQLite database /nonexistent.db does not exist" in broken["msg"]


@pytest.mark.parametrize("module", [backup_verify, backup_run])
def test_module_documentation_matches_its_argument_spec(module):
    import yaml

    doc = yaml.safe_load(module.DOCUMENTATION)
    spec = module.argument_spec()
    assert set(doc["options"]) == set(spec)
    for name, option in spec.items():
        assert doc["options"][name]["type"] == option["type"], name
        assert doc["options"][name].get("default") == option.get("default"), name
    yaml.safe_load(module.EXAMPLES)
    yaml.safe_load(module.RETURN)


def test_a_stopped_run_removes_its_partial_backup(sources, tmp_path):
    """systemd stops a hung run with SIGTERM: the partial directory goes, exit 2."""
    import socket

    silent = socket.create_server(("127.0.0.1", 0))  # accepts, never answers: the run hangs in Redis
    config = tmp_path / "backup.json"
    config.write_text(json.dumps({"backup_root": str(tmp_path / "root"),
                                  "encryption": {"key_file": sources["key_file"]},
                                  "sqlite": [{"name": "app", "path": str(sources["sqlite"])}],
                                  "redis": [{"name": "hung", "port": silent.getsockname()[1]}]}))
    script = f"import sys, ansible.module_utils; ansible.module_utils.__path__.append({str(MODULE_UTILS)!r}); " \
             f"from ansible.module_utils import tradeops_backup; " \
             f"sys.exit(tradeops_backup.main_cli(['--config', {str(config)!r}, 'backup']))"
    proc = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 10
        while not list((tmp_path / "root").glob(".*.partial/sqlite/app.sqlite3*")):
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.02)
        proc.terminate()
        assert proc.wait(timeout=10) == 2
        assert "interrupted; partial files were removed" in proc.stderr.read()
        assert [p.name for p in (tmp_path / "root").iterdir()] == [".lock"]
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stderr.close()
        silent.close()
