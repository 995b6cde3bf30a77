"""e. Backup faults on db1: the lab S3 (moto on mon1) unreachable during backup.yml, a truncated and a
bit-flipped archive, the disk full during a backup (a size-limited tmpfs mounted over the
backup directory inside the container, never the real disk).

Pass: clear failures naming the cause, the local backup kept when only the upload failed,
backup_verify names the bad file and only it, earlier backups intact and still verified.
"""
from __future__ import annotations

import json
import shlex
import subprocess

import pytest
from chaoslab import INVENTORY, ROOT, VENV_BIN, State, ansible_env, backup_list, out, playbook, record, sh

CONFIG = "/etc/tradeops/backup.json"


def backup_root() -> str:
    return json.loads(out("db1", f"cat {CONFIG}"))["backup_root"]


def manifest(backup_id: str) -> dict:
    return json.loads(out("db1", f"cat {backup_root()}/{backup_id}/manifest.json"))


def verify(backup_id: str) -> subprocess.CompletedProcess:
    """backup_verify (the module) on db1 for one backup, local copy only."""
    proc = subprocess.run([str(VENV_BIN / "ansible"), "db1", "-i", str(INVENTORY), "-m", "backup_verify",
                           "-a", f"config={CONFIG} backup_id={backup_id} record=false offsite=false"],
                          capture_output=True, text=True, cwd=ROOT, check=False, timeout=600,
                          env={**ansible_env(), "ANSIBLE_CALLBACK_RESULT_FORMAT": "json"})
    print(proc.stdout[-4000:], proc.stderr[-1000:])
    proc.text = " ".join((proc.stdout + proc.stderr).split())  # type: ignore[attr-defined]
    return proc


def newest_complete() -> dict:
    return next(b for b in backup_list() if b.get("complete"))


def test_s3_down_during_backup_fails_clearly_local_backup_kept(state: State) -> None:
    # The endpoint is made unreachable from db1 (a route that answers "unreachable"), not stopped:
    # the lab S3 (moto) keeps its buckets in memory, a restart would lose every offsite copy.
    mon1 = out("db1", "getent ahostsv4 mon1 | awk 'NR==1{print $1}'")
    sh("db1", f"ip route add unreachable {mon1}/32")
    try:
        proc = playbook("backup.yml", timeout=900)
    finally:
        sh("db1", f"ip route del unreachable {mon1}/32")
    assert proc.returncode != 0, "a backup whose upload cannot reach S3 must fail"
    text = proc.text.lower()
    assert "offsite" in text or "s3" in text or "upload" in text, proc.text[-3000:]
    after = backup_list()
    new = [b for b in after if b.get("complete") and b["backup_id"] not in state.backups]
    assert new, f"the local backup was not kept when only the upload failed: {after}"
    print("kept locally:", new[0])
    record("e_s3_down", playbook_s=round(proc.seconds, 1), kept_local=new[0]["backup_id"],
           message=proc.text[proc.text.find("FAILED!"):][:400])
    state.check()


@pytest.mark.parametrize("damage", ["truncated", "bit-flipped"])
def test_damaged_archive_named_by_backup_verify(state: State, damage: str) -> None:
    backup_id = state.backups[-1]
    entry = max(manifest(backup_id)["files"], key=lambda f: f["size"])
    path = f"{backup_root()}/{backup_id}/{entry['path']}"
    size = int(out("db1", f"stat -c %s {shlex.quote(path)}"))
    sh("db1", f"cp -p {shlex.quote(path)} /root/chaos-saved.file")
    try:
        if damage == "truncated":
            sh("db1", f"truncate -s {size // 2} {shlex.quote(path)}")
        else:  # flip one bit in the middle of the file
            code = (f"p={path!r}\nf=open(p,'r+b');f.seek({size // 2});b=f.read(1);f.seek({size // 2});"
                    "f.write(bytes([b[0]^1]));f.close()")
            sh("db1", f"python3 -c {shlex.quote(code)}")
        assert out("db1", f"sha256sum < {shlex.quote(path)}") != out("db1", "sha256sum < /root/chaos-saved.file")
        proc = verify(backup_id)
        assert proc.returncode != 0, f"backup_verify passed a {damage} archive"
        assert entry["path"] in proc.text, proc.text[-3000:]
        failed = json.JSONDecoder().raw_decode(proc.stdout[proc.stdout.index("FAILED! => ") + len("FAILED! => "):])[0]
        others = [f["path"] for f in manifest(backup_id)["files"] if f["path"] != entry["path"]]
        for other in others:
            assert f"{other}:" not in failed["msg"], f"{other} named though intact: {failed['msg']}"
        record(f"e_{damage}_archive", file=entry["path"], size=size, message=failed["msg"][:400])
    finally:
        sh("db1", f"mv /root/chaos-saved.file {shlex.quote(path)}")
    assert verify(backup_id).returncode == 0, "the restored archive must verify again"
    state.check()


def test_disk_full_during_backup(state: State) -> None:
    root = backup_root()
    used = int(out("db1", f"du -sk {root}/{state.backups[-1]} | cut -f1"))
    limit_k = max(64, used // 3)  # room for a third of one backup
    owner = out("db1", f"stat -c %u:%g:%a {root}")
    uid, gid, mode = owner.split(":")
    sh("db1", f"mount -t tmpfs -o size={limit_k}k,uid={uid},gid={gid},mode={mode} chaos-full {root}")
    try:
        assert out("db1", f"findmnt -n -o FSTYPE {root}") == "tmpfs"
        proc = playbook("backup.yml", timeout=900)
        left = out("db1", f"ls -A {root}")
    finally:
        sh("db1", f"umount {root}")
    assert proc.returncode != 0, "a backup that fills its disk must fail"
    assert "space" in proc.text.lower(), proc.text[-3000:]
    print("left on the full filesystem:", left)
    record("e_disk_full", tmpfs_kib=limit_k, one_backup_kib=used, playbook_s=round(proc.seconds, 1),
           message=proc.text[proc.text.find("FAILED!"):][:400])
    # The earlier backups (under the mount) are intact and the newest still verifies.
    assert verify(state.backups[-1]).returncode == 0
    state.check()


def test_backup_after_faults_converges(state: State) -> None:
    """The faults are gone: backup.yml succeeds again (upload included) and verifies."""
    proc = playbook("backup.yml", timeout=900)
    assert proc.returncode == 0, proc.text[-3000:]
    newest = newest_complete()
    assert newest["verified"], newest
    record("e_backup_after_faults", playbook_s=round(proc.seconds, 1))
    state.check()

