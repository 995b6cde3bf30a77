"""A backup planted or altered in the bucket never decides a restore (issue 20), one test per attack.

The attacker holds the offsite bucket's credentials (every db host has them) but not the set's key (vault and
hosts only): they can write any manifest, file or ``verify.json``, and cannot sign. Each test was seen failing
against the code before signed manifests (the commit that added this file says how)."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from ansible.module_utils import tradeops_backup as tb
from plugin_testlib import free_port
from reference_app.conftest import PG_SUPERUSER_PASSWORD, postgres_server  # noqa: F401 - a real PostgreSQL

KEY = "set-key-for-the-hostile-tests-" + "e" * 20


def _secret(path: Path, text: str) -> str:
    path.write_text(text + "\n")
    path.chmod(0o600)
    return str(path)


@pytest.fixture
def host(tmp_path: Path) -> dict[str, Any]:
    """A host's set: an SQLite database and a secret config directory, one signed backup of them."""
    data = tmp_path / "data"
    data.mkdir()
    db = data / "app.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE fills (id INTEGER PRIMARY KEY, px REAL)")
        conn.executemany("INSERT INTO fills (px) VALUES (?)", [(i,) for i in range(12)])
    conn.close()
    config = tmp_path / "config"
    config.mkdir()
    (config / ".env").write_text("TOKEN=live\n")
    raw = {"backup_root": str(tmp_path / "backups"), "set": "refapp", "host": "db1",
           "sqlite": [{"name": "app", "path": str(db)}],
           "paths": [{"name": "config", "path": str(config), "secret": True}],
           "encryption": {"key_file": _secret(tmp_path / "set.key", KEY)}, "verify": {"max_age_hours": None}}
    cfg = tb.load_config(raw)
    manifest = tb.run_backup(cfg)
    directory = Path(cfg["backup_root"]) / manifest["backup_id"]
    return {"cfg": cfg, "raw": raw, "dir": directory, "id": manifest["backup_id"], "db": db, "config": config,
            "tmp": tmp_path}


def _manifest(directory: Path) -> dict[str, Any]:
    return json.loads((directory / "manifest.json").read_text())


def _write(directory: Path, manifest: dict[str, Any]) -> None:
    (directory / "manifest.json").write_text(json.dumps(manifest))


def _resign(cfg: dict[str, Any], directory: Path, manifest: dict[str, Any]) -> None:
    """Signed with the set's key: what the attacker cannot do. Used to show the layer under the signature."""
    _write(directory, tb.auth.sign(manifest, tb._keys(cfg).key))


def _verify(cfg: dict[str, Any], backup_id: str) -> dict[str, Any]:
    return tb.verify_backup(cfg, backup_id, scratch_restore=False, offsite=False, record=False)


def test_a_tampered_manifest_is_refused_for_restore_and_named_by_verify(host: dict[str, Any]) -> None:
    """The attacker raises a row count and points the archive at another source: the MAC does not verify."""
    directory = host["dir"]
    manifest = _manifest(directory)
    for item in manifest["items"]:
        item["source"] = "/etc/cron.d"
        if item["kind"] == "sqlite":
            item["tables"] = {"fills": 99}
    _write(directory, manifest)
    report = _verify(host["cfg"], host["id"])
    assert report["status"] == "failed" and report["failed_items"] == [host["id"]], report
    assert "does not verify with this set's key" in report["message"]
    assert [c["check"] for c in report["checks"]] == ["authenticity"]  # nothing else is read from it
    before = host["db"].read_bytes()
    with pytest.raises(tb.BackupError, match="does not verify with this set's key"):
        tb.restore_item(host["cfg"], host["id"], "app", confirm=True)
    assert host["db"].read_bytes() == before
    assert tb.list_backups(host["cfg"]["backup_root"], tb._keys(host["cfg"]))[0]["authentic"] is False


def test_tampered_ciphertext_is_refused_by_the_manifest_and_by_the_cipher(host: dict[str, Any]) -> None:
    """A flipped byte in the encrypted archive with the manifest's sha256 rewritten to match: the manifest fails;
    and under it, even with a manifest that agrees (re-signed), age's authentication refuses the plaintext
    (openssl aes-256-cbc decrypted it into garbage without a word)."""
    directory, cfg = host["dir"], host["cfg"]
    manifest = _manifest(directory)
    entry = next(e for e in manifest["files"] if e["item"] == "config")
    stored = directory / entry["path"]
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0x01
    stored.write_bytes(bytes(data))
    entry["sha256"] = tb.sha256_file(stored)
    _write(directory, manifest)
    with pytest.raises(tb.BackupError, match="does not verify"):
        tb.restore_item(cfg, host["id"], "config", target=str(host["tmp"] / "out"), confirm=True)
    _resign(cfg, directory, manifest)
    with pytest.raises(tb.BackupError, match=r"decrypting .*altered"):
        tb.decrypt_file(stored, host["tmp"] / "plain.tar.gz", tb._keys(cfg))
    report = _verify(cfg, host["id"])
    assert report["failed_items"] == [entry["path"]], report
    with pytest.raises(tb.BackupError, match="decrypting"):
        tb.restore_item(cfg, host["id"], "config", target=str(host["tmp"] / "out"), confirm=True)
    assert not list((host["tmp"] / "out").iterdir())


def test_an_item_the_configuration_does_not_name_is_refused(host: dict[str, Any]) -> None:
    """A planted item restored to its manifest's own ``source`` would let the bucket write anywhere as root."""
    directory, cfg = host["dir"], host["cfg"]
    victim = host["tmp"] / "victim"
    victim.mkdir()
    (victim / "authorized_keys").write_text("the operator's key\n")
    manifest = _manifest(directory)
    config_entry = next(e for e in manifest["files"] if e["item"] == "config")
    planted = directory / "files" / "evil.tar.gz.age"
    shutil.copy(directory / config_entry["path"], planted)
    manifest["files"].append({**config_entry, "path": "files/evil.tar.gz.age", "item": "evil"})
    manifest["items"].append({"name": "evil", "kind": "files", "file": "files/evil.tar.gz.age", "encrypted": True,
                              "source": str(victim), "members": 1})
    _write(directory, manifest)
    with pytest.raises(tb.BackupError, match="does not verify"):
        tb.restore_item(cfg, host["id"], "evil", confirm=True)
    # under the signature (a manifest signed before the item left the configuration): still refused, named
    _resign(cfg, directory, manifest)
    with pytest.raises(tb.BackupError, match=r"files item 'evil', which the configuration of set 'refapp' does not "
                                             r"name: refused.*add it to backup_paths"):
        tb.restore_item(cfg, host["id"], "evil", confirm=True)
    report = _verify(cfg, host["id"])
    assert "files/evil.tar.gz.age" in report["failed_items"], report
    config_file = host["tmp"] / "backup.json"
    config_file.write_text(json.dumps(host["raw"]))
    assert tb.main_cli(["--config", str(config_file), "restore", "--backup-id", host["id"], "--confirm"]) == 2
    assert (victim / "authorized_keys").read_text() == "the operator's key\n"  # nothing restored at all


def test_the_manifest_never_chooses_the_database_or_the_path(postgres_server, tmp_path: Path) -> None:  # noqa: F811
    """A manifest naming another PostgreSQL database (or another path) restores into the configured one only."""
    pg = postgres_server
    for name in ("hx_app", "hx_victim"):
        pg.psql(f"DROP DATABASE IF EXISTS {name}")
        pg.psql(f"CREATE DATABASE {name}")
    pg.psql("CREATE TABLE t (v int); INSERT INTO t SELECT generate_series(1, 5)", database="hx_app")
    pg.psql("CREATE TABLE precious (v int); INSERT INTO precious VALUES (1)", database="hx_victim")
    data = tmp_path / "app.db"
    with sqlite3.connect(data) as conn:
        conn.execute("CREATE TABLE fills (id INTEGER PRIMARY KEY)")
    conn.close()
    victim_file = tmp_path / "victim.db"
    victim_file.write_bytes(b"not yours")
    cfg = tb.load_config({
        "backup_root": str(tmp_path / "backups"), "set": "refapp",
        "postgresql": [{"name": "appdb", "dbname": "hx_app", "host": "127.0.0.1", "port": pg.port,
                        "user": "postgres", "password_file": _secret(tmp_path / "pg.pw", PG_SUPERUSER_PASSWORD)}],
        "sqlite": [{"name": "app", "path": str(data)}],
        "encryption": {"key_file": _secret(tmp_path / "set.key", KEY)}})
    manifest = tb.run_backup(cfg)
    directory = Path(cfg["backup_root"]) / manifest["backup_id"]
    for item in manifest["items"]:
        item.update(database="hx_victim", source=str(victim_file))
    _resign(cfg, directory, manifest)  # even signed: the manifest's targets are never read
    result = tb.restore_item(cfg, manifest["backup_id"], "appdb", confirm=True)
    assert result["database"] == "hx_app"
    assert pg.psql("SELECT count(*) FROM precious", database="hx_victim") == "1"
    assert tb.restore_item(cfg, manifest["backup_id"], "app", confirm=True)["path"] == str(data)
    assert victim_file.read_bytes() == b"not yours"
    for name in ("hx_app", "hx_victim"):
        pg.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def test_a_bare_verified_object_in_the_bucket_verifies_nothing(host: dict[str, Any], s3: str) -> None:
    """A planted newer backup with a ``verify.json`` saying passed, and the same object next to a real backup:
    neither is verified, restore.yml's choice (authentic and verified) stays the real, verified backup."""
    client = boto3.client("s3", endpoint_url=s3, region_name="us-east-1")
    client.create_bucket(Bucket="bk-hostile")
    raw = {**host["raw"], "offsite": {"bucket": "bk-hostile", "endpoint_url": s3, "attempts": 1}}
    cfg = tb.load_config(raw)
    real = host["id"]
    tb.upload_missing(cfg)
    passed = json.dumps({"backup_id": real, "status": "passed", "verified_at": "2099-01-01T00:00:00Z"})
    client.put_object(Bucket="bk-hostile", Key=f"tradeops/refapp/{real}/verify.json", Body=passed)
    planted = "20991231T235959Z-db1"
    forged = {**_manifest(host["dir"]), "backup_id": planted}
    forged.pop("auth")
    client.put_object(Bucket="bk-hostile", Key=f"tradeops/refapp/{planted}/manifest.json", Body=json.dumps(forged))
    client.put_object(Bucket="bk-hostile", Key=f"tradeops/refapp/{planted}/verify.json",
                      Body=json.dumps({"backup_id": planted, "status": "passed"}))
    listed = {b["backup_id"]: b for b in tb.S3Store(cfg).list_backups()}
    assert (listed[planted]["authentic"], listed[planted]["verified"]) == (False, False)
    assert (listed[real]["authentic"], listed[real]["verified"]) == (True, False)
    # a real verification signs its record: then, and only then, the real backup is verified
    assert tb.verify_backup(cfg, real, scratch_restore=False)["status"] == "passed"
    tb.publish_verification(cfg, {"backup_id": real, "status": "passed"})
    listed = {b["backup_id"]: b for b in tb.S3Store(cfg).list_backups()}
    assert listed[real]["verified"] is True and listed[planted]["verified"] is False
    # forged newer backups take no place among the keep_count newest: the real one is not pushed out
    second = tb.run_backup(cfg)["backup_id"]  # newer than the real one, older than the forgery, unverified
    tb.upload_missing(cfg)
    cfg["offsite"]["retention"] = {"keep_days": None, "keep_count": 1}
    pruned = tb.prune_offsite(cfg, dry_run=True)
    assert {real, second} <= set(pruned["kept"]) and second not in pruned["deleted"], pruned
    shutil.rmtree(Path(cfg["backup_root"]) / second)
    # the bare object fetched onto a fresh host does not make the local copy verified either
    fresh = tb.load_config({**raw, "backup_root": str(host["tmp"] / "fresh")})
    client.put_object(Bucket="bk-hostile", Key=f"tradeops/refapp/{real}/verify.json", Body=passed)
    tb.S3Store(fresh).fetch(real, Path(fresh["backup_root"]))
    assert tb.list_backups(fresh["backup_root"], tb._keys(fresh))[0]["verified"] is False
    with pytest.raises(tb.BackupError, match="not signed"):
        tb.S3Store(fresh).fetch(planted, Path(fresh["backup_root"]))
    with pytest.raises(tb.BackupError, match="no verified backup"):
        tb.resolve_backup(Path(fresh["backup_root"]), "latest-verified", tb._keys(fresh))


def _legacy_backup(host: dict[str, Any]) -> str:
    """A backup as the code before signing made it (format 1): no auth, the SQLite copy in clear, the secret
    archive in ``openssl enc -aes-256-cbc -pbkdf2 -iter 200000 -salt`` with the key file as passphrase."""
    cfg, tmp = host["cfg"], host["tmp"]
    backup_id = "20200101T000000Z-db1"
    directory = Path(cfg["backup_root"]) / backup_id
    (directory / "sqlite").mkdir(parents=True)
    (directory / "files").mkdir()
    copy = directory / "sqlite" / "app.sqlite3"
    shutil.copy(host["db"], copy)
    plain = tmp / "config.tar.gz"
    with tarfile.open(plain, "w:gz") as tar:
        tar.add(host["config"] / ".env", arcname=".env")
    enc = directory / "files" / "config.tar.gz.enc"
    subprocess.run(["openssl", "enc", "-salt", *tb.CIPHER, "-pass", f"file:{cfg['encryption']['key_file']}",
                    "-in", str(plain), "-out", str(enc)], check=True)
    files = [{"path": "sqlite/app.sqlite3", "item": "app", "size": copy.stat().st_size,
              "sha256": tb.sha256_file(copy), "encrypted": False},
             {"path": "files/config.tar.gz.enc", "item": "config", "size": enc.stat().st_size,
              "sha256": tb.sha256_file(enc), "encrypted": True, "plain_sha256": tb.sha256_file(plain),
              "plain_size": plain.stat().st_size}]
    items = [{"name": "app", "kind": "sqlite", "file": "sqlite/app.sqlite3", "encrypted": False,
              "source": str(host["db"]), "tables": {"fills": 12}},
             {"name": "config", "kind": "files", "file": "files/config.tar.gz.enc", "encrypted": True,
              "source": str(host["config"]), "members": 1}]
    _write(directory, {"format": 1, "tool": "tradeops-backup", "backup_id": backup_id, "set": "refapp",
                       "host": "db1", "outcome": "complete", "started": "2020-01-01T00:00:00Z",
                       "finished": "2020-01-01T00:00:01Z", "files": files, "items": items,
                       "bytes": sum(f["size"] for f in files)})
    return backup_id


def test_an_unsigned_old_backup_is_restored_only_with_the_explicit_opt_in(host: dict[str, Any]) -> None:
    cfg = host["cfg"]
    old = _legacy_backup(host)
    report = _verify(cfg, old)
    assert report["failed_items"] == [old] and "is not signed" in report["message"]
    before = host["db"].read_bytes()
    with pytest.raises(tb.BackupError, match=r"not signed .*allow_unsigned"):
        tb.restore_item(cfg, old, "app", confirm=True)
    assert host["db"].read_bytes() == before
    assert tb.list_backups(cfg["backup_root"], tb._keys(cfg))[-1]["authentic"] is False
    # opted in: restored, to the configured targets, the format-1 archive decrypted with openssl
    assert tb.verify_backup(cfg, old, scratch_restore=False, offsite=False, record=False,
                            allow_unsigned=True)["status"] == "passed"
    assert tb.restore_item(cfg, old, "app", confirm=True, allow_unsigned=True)["tables"] == {"fills": 12}
    out = host["tmp"] / "restored-config"
    assert tb.restore_item(cfg, old, "config", target=str(out), allow_unsigned=True)["members"] == 1
    assert (out / ".env").read_text() == "TOKEN=live\n"
    # opting in never accepts a manifest whose signature is there and wrong
    manifest = _manifest(host["dir"])
    manifest["items"][0]["tables"] = {"fills": 1}
    _write(host["dir"], manifest)
    with pytest.raises(tb.BackupError, match="does not verify"):
        tb.restore_item(cfg, host["id"], "app", confirm=True, allow_unsigned=True)
