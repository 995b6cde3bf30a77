"""backup scenario: PostgreSQL and Redis on db1 with generated data, the app on app1, the lab S3
(moto) on mon1. backup.yml makes a backup whose manifest counts equal the live data and whose copy
is offsite; a corrupted file is named by backup_verify; restore.yml refuses without confirmation and
brings a wiped table back with confirmation, the app ready afterwards.

The tests run in file order and build on each other.
"""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import testinfra

PROJECT = Path(os.environ["MOLECULE_PROJECT_DIRECTORY"])
INVENTORY = Path(os.environ["MOLECULE_INVENTORY_FILE"]).parent
PREFIX = f"tradeops-mol-{os.environ.get('MOLECULE_SCENARIO_NAME', 'backup')}-"
CONFIG = "/etc/tradeops/backup.json"
TOOL = f"/usr/local/bin/tradeops-backup --config {CONFIG}"
METRICS = "/var/lib/prometheus/node-exporter/tradeops_backup.prom"
STATE: dict[str, object] = {}

testinfra_hosts = ["ansible://db1"]


@pytest.fixture(scope="module")
def hosts():
    return {n: testinfra.get_host(f"ansible://{n}?ansible_inventory={INVENTORY}") for n in ("db1", "app1", "mon1")}


def run(cmd: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_NOCOLOR": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=PROJECT, check=False, env=env)
    print(proc.stdout[-8000:], proc.stderr[-2000:])
    proc.text = " ".join((proc.stdout + proc.stderr).split())
    return proc


def playbook(name: str, *extra: str) -> subprocess.CompletedProcess:
    cmd = [str(Path(sys.executable).with_name("ansible-playbook")), "-i", str(INVENTORY),
           str(PROJECT / "playbooks" / name)]
    for e in extra:
        cmd += ["-e", e]
    return run(cmd)


def pg_counts(db1) -> dict[str, int]:
    sql = ("SELECT table_name FROM information_schema.tables "
           "WHERE table_schema = 'public' AND table_type = 'BASE TABLE' ORDER BY 1")
    tables = db1.check_output(f"runuser -u postgres -- psql -X -A -t -d refapp -c {shlex.quote(sql)}").split()
    out = {}
    for t in tables:
        query = f"SELECT count(*) FROM public.{t}"  # noqa: S608 - table names read from the catalog
        out[t] = int(db1.check_output(f"runuser -u postgres -- psql -X -A -t -d refapp -c {shlex.quote(query)}"))
    return out


def redis_keys(db1) -> int:
    pw = db1.check_output("cat /etc/tradeops/backup.d/redis-redis.pw")
    return int(db1.check_output(f"REDISCLI_AUTH={shlex.quote(pw)} redis-cli --user default DBSIZE"))


def manifest(db1, backup_id: str) -> dict:
    root = json.loads(db1.check_output(f"cat {CONFIG}"))["backup_root"]
    return json.loads(db1.check_output(f"cat {root}/{backup_id}/manifest.json"))


def backups(db1) -> list[dict]:
    return json.loads(db1.check_output(f"{TOOL} --json list"))


def manifest_counts(m: dict) -> tuple[dict[str, int], int]:
    items = {i["kind"]: i for i in m["items"]}
    tables = {k.split(".")[-1]: v for k, v in items["postgresql"]["tables"].items()}
    return tables, sum(items["redis"]["keys"].values())


def test_timers_scheduled(hosts):
    db1 = hosts["db1"]
    for unit in ("tradeops-backup.timer", "tradeops-backup-restore-test.timer"):
        out = db1.check_output(f"systemctl show {unit} -p ActiveState -p UnitFileState -p Persistent")
        print(out)
        assert "ActiveState=active" in out and "UnitFileState=enabled" in out and "Persistent=yes" in out, out
        calendar = db1.check_output(f"systemctl show {unit} -p TimersCalendar")
        assert "*-02-30" in calendar, calendar  # never due while a test runs (inventory/lab/group_vars/db.yml)
    svc = db1.check_output("systemctl show tradeops-backup.service -p Type -p ProtectSystem")
    assert "Type=oneshot" in svc and "ProtectSystem=strict" in svc, svc


def test_backup_playbook(hosts):
    db1 = hosts["db1"]
    proc = playbook("backup.yml")
    assert proc.returncode == 0, proc.text[-3000:]
    newest = next(b for b in backups(db1) if b["complete"])
    assert newest["verified"], newest
    STATE["backup_id"] = newest["backup_id"]
    m = manifest(db1, newest["backup_id"])
    tables, keys = manifest_counts(m)
    assert tables.get("backup_fixture") == 4321, tables
    assert tables == pg_counts(db1)
    assert keys == redis_keys(db1) and keys >= 750
    STATE["tables"], STATE["keys"] = tables, keys


def test_offsite_copy_in_moto(hosts):
    backup_id = STATE["backup_id"]
    code = ("import boto3,json,sys\n"
            "s3=boto3.client('s3',endpoint_url='http://127.0.0.1:5000',region_name='us-east-1',"
            "aws_access_key_id='x',aws_secret_access_key='x')\n"
            "r=s3.list_objects_v2(Bucket='tradeops-backups',Prefix=sys.argv[1])\n"
            "print(json.dumps({o['Key']:o['Size'] for o in r.get('Contents',[])}))")
    out = subprocess.run(["docker", "exec", f"{PREFIX}mon1", "/opt/s3-lab/venv/bin/python", "-c", code,
                          f"tradeops/db/{backup_id}/"], capture_output=True, text=True, check=True).stdout
    objects = {k.split("/", 3)[3]: v for k, v in json.loads(out).items()}
    m = manifest(hosts["db1"], backup_id)
    for entry in m["files"]:
        assert objects.get(entry["path"]) == entry["size"], (entry, objects)
    assert "manifest.json" in objects


def test_metrics_record_success(hosts):
    text = hosts["db1"].check_output(f"cat {METRICS}")
    assert 'tradeops_backup_last_success_timestamp_seconds{set="db"}' in text, text
    assert 'tradeops_backup_last_verified{set="db"} 1' in text, text


def test_corrupted_file_is_named(hosts):
    db1 = hosts["db1"]
    backup_id = STATE["backup_id"]
    root = json.loads(db1.check_output(f"cat {CONFIG}"))["backup_root"]
    entry = next(f for f in manifest(db1, backup_id)["files"] if f["path"].startswith("redis/"))
    path = f"{root}/{backup_id}/{entry['path']}"
    db1.check_output(f"cp -p {path} /root/saved.file && printf 'garbage' >> {path}")
    try:
        proc = run([str(Path(sys.executable).with_name("ansible")), "db1", "-i", str(INVENTORY), "-m", "backup_verify",
                    "-a", f"config={CONFIG} backup_id={backup_id} record=false offsite=false"])
        assert proc.returncode != 0, proc.text
        assert entry["path"] in proc.text, proc.text
        others = [f["path"] for f in manifest(db1, backup_id)["files"] if f["path"] != entry["path"]]
        failed = json.JSONDecoder().raw_decode(proc.stdout[proc.stdout.index("FAILED! => ") + len("FAILED! => "):])[0]
        bad = {c["item"] for c in failed["checks"] if c["status"] != "ok" and c["status"] != "skipped"}
        print(bad)
        for other in others:
            assert f"{other}:" not in failed["msg"], failed["msg"]
    finally:
        db1.check_output(f"mv /root/saved.file {path}")


def test_restore_refused_without_confirm(hosts):
    db1 = hosts["db1"]
    before = [b["backup_id"] for b in backups(db1)]
    db1.check_output("runuser -u postgres -- psql -X -q -d refapp -c 'DROP TABLE backup_fixture'")
    proc = playbook("restore.yml")
    assert proc.returncode != 0
    assert "REFUSED" in proc.text and "confirm_restore=true" in proc.text, proc.text[-3000:]
    assert [b["backup_id"] for b in backups(db1)] == before, "no emergency backup without confirmation"
    assert "backup_fixture" not in pg_counts(db1), "nothing restored without confirmation"
    assert hosts["app1"].service("refapp-web.service").is_running


def test_restore_with_confirm(hosts):
    db1 = hosts["db1"]
    db1.check_output("REDISCLI_AUTH=$(cat /etc/tradeops/backup.d/redis-redis.pw) redis-cli --user default "
                     "DEL fixture:1 fixture:2 fixture:3")
    proc = playbook("restore.yml", "confirm_restore=true")
    assert proc.returncode == 0, proc.text[-4000:]
    assert STATE["backup_id"] in proc.text
    assert pg_counts(db1) == STATE["tables"]
    assert redis_keys(db1) == STATE["keys"]
    app1 = hosts["app1"]
    code = ("import json,urllib.request\n"
            "print(urllib.request.urlopen('http://127.0.0.1:8000/api/health/readiness',timeout=5).read().decode())")
    ready = json.loads(app1.check_output(f"python3 -c {shlex.quote(code)}"))
    assert ready["status"] == "ready", ready


CRON_FILE = "/etc/cron.d/tradeops-backup"
CRON_LOCK = "/run/lock/tradeops-backup.lock"
CRON_ENV = "env -i SHELL=/bin/sh PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
TIMERS = ("tradeops-backup.timer", "tradeops-backup-restore-test.timer")


def scheduler(name: str) -> subprocess.CompletedProcess:
    cmd = [str(Path(sys.executable).with_name("ansible-playbook")), "-i", str(INVENTORY),
           str(PROJECT / "molecule" / "backup" / "scheduler.yml"), "-e", f"backup_scheduler={name}"]
    return run(cmd)


def cron_lines(db1) -> list[list[str]]:
    """The job lines of the cron file: [minute, hour, dom, month, dow, user, command]."""
    lines = db1.file(CRON_FILE).content_string.splitlines()
    jobs = [line for line in lines if line.strip() and not line.startswith("#") and "=" not in line.split()[0]]
    return [line.split(None, 6) for line in jobs]


def test_cron_scheduler_runs_backups_without_overlap_and_switches_back(hosts):
    db1 = hosts["db1"]
    proc = scheduler("cron")
    assert proc.returncode == 0, proc.text[-3000:]
    again = scheduler("cron")
    assert again.returncode == 0 and "changed=0" in again.text, again.text[-3000:]  # idempotent
    for unit in TIMERS:
        out = db1.check_output(f"systemctl show {unit} -p LoadState -p ActiveState")
        assert "LoadState=not-found" in out and "ActiveState=inactive" in out, out
        assert not db1.file(f"/etc/systemd/system/{unit}").exists
    cron = db1.file(CRON_FILE)
    assert cron.user == "root" and cron.mode == 0o644
    assert db1.service("cron").is_running and db1.service("cron").is_enabled
    jobs = cron_lines(db1)
    print(jobs)
    # The lab's schedules under molecule: due on 30 February only (inventory/lab/group_vars/db.yml).
    assert [j[:6] for j in jobs] == [["15", "2", "30", "2", "*", "root"], ["30", "4", "30", "2", "*", "root"]]
    backup_cmd, verify_cmd = jobs[0][6], jobs[1][6]
    assert backup_cmd.endswith(f"--config {CONFIG} backup --verify") and verify_cmd.endswith(f"{CONFIG} verify")

    # Another run holds the lock: the line's command exits 75 and makes nothing.
    before = [b["backup_id"] for b in backups(db1)]
    busy = db1.run(f"flock {CRON_LOCK} {CRON_ENV} /bin/sh -c {shlex.quote(backup_cmd)}")
    assert busy.rc == 75, (busy.rc, busy.stdout, busy.stderr)
    assert [b["backup_id"] for b in backups(db1)] == before

    # The line's command, run as cron runs it (its shell and PATH only), makes a verified backup;
    # its output is in the journal under the line's tag.
    mark = db1.check_output("date -u '+%Y-%m-%d %H:%M:%S'")
    ran = db1.run(f"{CRON_ENV} /bin/sh -c {shlex.quote(backup_cmd)}")
    assert ran.rc == 0, (ran.rc, ran.stdout, ran.stderr)
    newest = next(b for b in backups(db1) if b["complete"])
    assert newest["backup_id"] not in before and newest["verified"], newest
    journal = db1.check_output(f"journalctl -t tradeops-backup --since '{mark} UTC' --no-pager -o cat")
    assert f"backup {newest['backup_id']}:" in journal, journal
    checked = db1.run(f"{CRON_ENV} /bin/sh -c {shlex.quote(verify_cmd)}")
    assert checked.rc == 0, (checked.rc, checked.stdout, checked.stderr)

    # Back to systemd: the cron file is removed, the timers are back.
    proc = scheduler("systemd")
    assert proc.returncode == 0, proc.text[-3000:]
    assert not db1.file(CRON_FILE).exists
    for unit in TIMERS:
        out = db1.check_output(f"systemctl show {unit} -p ActiveState -p UnitFileState")
        assert "ActiveState=active" in out and "UnitFileState=enabled" in out, out


def test_the_timers_services_work_in_their_sandbox(hosts):
    """The services the timers start, run by systemd with their hardening (ProtectProc=invisible,
    ProcSubset=pid, MemoryDenyWriteExecute=, no CAP_CHOWN, no AF_NETLINK: scored by
    tests/unit/security/test_systemd_units.py): a backup uploaded offsite and verified, then a
    restore test with scratch restores (a PostgreSQL scratch database, a throw-away redis-server)."""
    db1 = hosts["db1"]
    before = {b["backup_id"] for b in backups(db1)}
    for unit, done in (("tradeops-backup.service", None),
                       ("tradeops-backup-restore-test.service", ("restored into scratch database",
                                                                 "loaded into a throw-away redis-server"))):
        mark = db1.check_output("date -u '+%Y-%m-%d %H:%M:%S'")
        started = db1.run(f"systemctl start {unit}")  # oneshot: returns when the run has ended
        journal = db1.check_output(f"journalctl -u {unit} --since '{mark} UTC' --no-pager -o cat")
        print(unit, journal)
        assert started.rc == 0, (unit, started.stderr, journal)
        state = db1.check_output(f"systemctl show {unit} -p Result -p ExecMainStatus")
        assert "Result=success" in state and "ExecMainStatus=0" in state, (unit, state, journal)
        for text in done or ():
            assert text in journal, (unit, text, journal)
    newest = next(b for b in backups(db1) if b["complete"])
    assert newest["backup_id"] not in before, (before, newest)
    assert newest["verified"] and newest["offsite"] == "complete", newest
