#!/usr/bin/env python3
"""Backup benchmark (issue 5) on its own two-host lab: db1 (PostgreSQL, Redis, the backups) and
mon1 (the lab S3: moto in server mode).

Starts its own lab (LAB_ID=bench-backup, never the main lab), converges it with lab.yml (only
the roles the backups need), generates a PostgreSQL table of about --size-mb MiB in the refapp
database server-side (generate_series), then times RUNS repetitions of, on db1:

  pg_dump /dev/null   raw ``pg_dump -Fc`` of the same database, same login, to /dev/null (the baseline)
  pg_dump file        raw ``pg_dump -Fc`` to a file beside the backups (the baseline plus the disk write)
  backup              ``tradeops-backup backup --no-upload --no-prune`` (dump in an exported snapshot,
                      exact row counts in it, sha256 of every file, Redis BGSAVE, encrypted tar of the
                      PostgreSQL config, manifest)
  upload              ``tradeops-backup upload --backup-id B`` to the lab S3 (multipart, checked)
  verify              ``tradeops-backup verify --backup-id B`` (what the backup_verify module runs:
                      checksums, scratch restore into a temporary database, counts compared,
                      Redis RDB loaded into a throw-away server, offsite copy compared)
  pg_restore          raw ``pg_restore`` of the backup's dump into a new database owned by refapp, as the
                      tool restores (the RTO baseline)
  restore.yml         ``ansible-playbook restore.yml -e confirm_restore=true`` wall time (the RTO:
                      emergency backup of the current state, restore of every item, counts compared)

Prints medians, the ratios against the baselines measured in the same run (issue 5's target:
backup <= 2x raw pg_dump) and the upload throughput. Never asserts times.

    tests/bench/backup_bench.py [--size-mb 1024] [--runs 3] [--keep-lab]

``--local`` (issue 20: what authenticated encryption costs) needs no lab: on the controller, a throw-away
PostgreSQL (the unit tests' server) with a table of --size-mb MiB (default 256 there), and two versions of
the backup code side by side in one process: *before* = ``tradeops_backup.py`` of git revision --before
(default main: the dump in clear, the secret config archive in openssl aes-256-cbc, no signature) and *after*
= this tree's (every file age-encrypted, manifest signed). Each run times, alternately, ``verify_backup``
(what backup_verify runs: authenticity, checksums, decryption, scratch restore into a temporary database,
counts) and ``restore_item`` of the database (decrypt, restore into a new database, counts, swap) for both;
prints the medians and after/before ratios (issue 20's target: within 1.2x).

    tests/bench/backup_bench.py --local [--size-mb 256] [--runs 5] [--before main]

Exit codes: 0 figures printed; 1 a step failed (its output is printed); 2 bad arguments.
"""
from __future__ import annotations

import argparse
import json
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchlib import (
    LAB,
    VENV_BIN,
    StepFailed,
    ansible_env,
    container,
    lab_env,
    save_results,
    sh,
    timed,
    write_inventory,
)

LAB_ID = "bench-backup"
LAB_ENV = lab_env(LAB_ID, ["db1", "mon1"])
DB1, MON1 = container(LAB_ID, "db1"), container(LAB_ID, "mon1")
CONFIG = "/etc/tradeops/backup.json"
TOOL = f"/usr/local/bin/tradeops-backup --config {CONFIG}"
PW_FILE = "/etc/tradeops/backup.d/postgresql-refapp.pw"
# The tool's own login (the lab's backup role), over TCP like the tool.
PG_ENV = f"PGPASSWORD=$(cat {PW_FILE}) PGHOST=127.0.0.1 PGUSER=tradeops_backup PGDATABASE=refapp"
SITE_TAGS = "common,ops_agent,postgresql,redis,s3_lab,backup"
# The generated table (ROWS: the row count), in the lab (generate) and on the controller (--local).
TABLE_SQL = ("CREATE TABLE bench_ticks (id bigint PRIMARY KEY, ts timestamptz NOT NULL, symbol text NOT NULL, "
             "price numeric(12,4) NOT NULL, qty integer NOT NULL, venue text NOT NULL); "
             "INSERT INTO bench_ticks SELECT g, timestamptz '2026-01-02 14:30:00+00' + g * interval '1 ms', "
             "'SYM' || (g % 4999), round((random() * 1000)::numeric, 4), (random() * 10000)::int, "
             "md5(g::text) FROM generate_series(1, ROWS) g")
# ~131 bytes per row in the heap and the primary key: rows for one MiB.
ROWS_PER_MB = 8000


def on_db1(script: str, check: bool = True) -> subprocess.CompletedProcess:
    return sh(["docker", "exec", DB1, "bash", "-c", f"set -euo pipefail; {script}"], check=check)


def generate(size_mb: int) -> dict[str, int]:
    """A table of about ``size_mb`` MiB in refapp, owned by refapp, made server-side."""
    rows = size_mb * ROWS_PER_MB
    sql = ("DROP TABLE IF EXISTS bench_ticks; " + TABLE_SQL.replace("ROWS", ":rows")
           + "; ALTER TABLE bench_ticks OWNER TO refapp; VACUUM ANALYZE bench_ticks;")
    on_db1(f"echo {shlex.quote(sql)} | runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 -v rows={rows} -d refapp")
    size = int(on_db1("runuser -u postgres -- psql -X -A -t -d refapp -c "
                      "\"SELECT pg_database_size('refapp')\"").stdout)
    return {"rows": rows, "bytes": size}


def delete_offsite(backup_id: str) -> None:
    """Drop one backup's objects from the lab S3 (moto holds them in memory)."""
    code = ("import boto3,sys\n"
            "s3=boto3.client('s3',endpoint_url='http://127.0.0.1:5000',region_name='us-east-1',"
            "aws_access_key_id='x',aws_secret_access_key='x')\n"
            "r=s3.list_objects_v2(Bucket='tradeops-backups',Prefix='tradeops/db/'+sys.argv[1]+'/')\n"
            "objs=[{'Key':o['Key']} for o in r.get('Contents',[])]\n"
            "objs and s3.delete_objects(Bucket='tradeops-backups',Delete={'Objects':objs})\n")
    sh(["docker", "exec", MON1, "/opt/s3-lab/venv/bin/python", "-c", code, backup_id])


def local_bench(size_mb: int, runs: int, before_rev: str) -> int:
    """Verify and restore time of one backup, before (git ``before_rev``) and after (this tree), same run."""
    import contextlib
    import importlib.util
    import shutil

    root = Path(__file__).resolve().parents[2]
    sys.path.insert(0, str(root / "tests" / "unit"))
    import ansible.module_utils
    ansible.module_utils.__path__.append(str(root / "plugins" / "module_utils"))
    from ansible.module_utils import tradeops_backup as after
    from reference_app.conftest import PG_SUPERUSER_PASSWORD, postgres_server

    tmp = Path(tempfile.mkdtemp(prefix="tradeops-bench-auth-"))
    source = tmp / "before_backup.py"
    source.write_text(sh(["git", "-C", str(root), "show",
                          f"{before_rev}:plugins/module_utils/tradeops_backup.py"]).stdout)
    spec = importlib.util.spec_from_file_location("tradeops_backup_before", source)
    assert spec is not None and spec.loader is not None
    before = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(before)

    def secret(name: str, text: str) -> str:
        (tmp / name).write_text(text + "\n")
        (tmp / name).chmod(0o600)
        return str(tmp / name)

    server = postgres_server.__wrapped__()
    pg = next(server)
    try:
        rows = size_mb * ROWS_PER_MB
        pg.psql("CREATE DATABASE bench")
        pg.psql(TABLE_SQL.replace("ROWS", str(rows)), database="bench")
        pg.psql("VACUUM ANALYZE bench_ticks", database="bench")
        db_bytes = int(pg.psql("SELECT pg_database_size('bench')"))
        conf_dir = tmp / "config"
        conf_dir.mkdir()
        (conf_dir / ".env").write_text("TOKEN=bench\n")
        raw = {"set": "bench", "host": "bench", "verify": {"max_age_hours": None},
               "postgresql": [{"name": "bench", "dbname": "bench", "host": "127.0.0.1", "port": pg.port,
                               "user": "postgres", "password_file": secret("pg.pw", PG_SUPERUSER_PASSWORD)}],
               "paths": [{"name": "config", "path": str(conf_dir), "secret": True}],
               "encryption": {"key_file": secret("set.key", "bench-key-" + "f" * 40)}}
        versions = {"before": before, "after": after}
        cfgs = {name: mod.load_config({**raw, "backup_root": str(tmp / name)}) for name, mod in versions.items()}
        ids, sizes = {}, {}
        for name, mod in versions.items():
            manifest = mod.run_backup(cfgs[name])
            ids[name], sizes[name] = manifest["backup_id"], manifest["bytes"]
        print(f"backup bench --local: database {db_bytes / 2**20:.0f} MiB; backup before {sizes['before'] / 2**20:.0f}"
              f" MiB, after {sizes['after'] / 2**20:.0f} MiB (before = {before_rev}: dump in clear, config in openssl;"
              " after = this tree: every file age-encrypted, manifest signed); "
              f"{runs} runs, each step alternated", flush=True)
        times: dict[str, list[float]] = {}
        for run in range(runs):
            for step in ("verify", "restore"):
                order = ("before", "after") if run % 2 == 0 else ("after", "before")
                for name in order:
                    mod, cfg = versions[name], cfgs[name]
                    t0 = time.monotonic()
                    if step == "verify":
                        report = mod.verify_backup(cfg, ids[name], offsite=False, record=False)
                        if report["status"] != "passed":
                            raise StepFailed(f"{name} verify did not pass: {report['message']}")
                    else:
                        mod.restore_item(cfg, ids[name], "bench", target=f"bench_{name}", confirm=True)
                    times.setdefault(f"{step} {name}", []).append(time.monotonic() - t0)
                    if step == "restore":
                        pg.psql(f"DROP DATABASE bench_{name} WITH (FORCE)")
            print(f"  run {run + 1}: " + "  ".join(f"{k} {v[-1]:.2f}s" for k, v in times.items()), flush=True)
        med = {k: statistics.median(v) for k, v in times.items()}
        ratios = {}
        for step in ("verify", "restore"):
            ratios[step] = med[f"{step} after"] / med[f"{step} before"]
            # each run's pair was timed back to back: a busy machine moves both alike
            paired = statistics.median(a / b for a, b in zip(times[f"{step} after"], times[f"{step} before"],
                                                              strict=True))
            ratios[f"{step} per-run"] = paired
            print(f"  {step:8s} before {med[f'{step} before']:6.2f} s  after {med[f'{step} after']:6.2f} s  "
                  f"ratio of medians {ratios[step]:4.2f}x, median of the runs' ratios {paired:4.2f}x  "
                  f"(target <= 1.2x: {'met' if max(paired, ratios[step]) <= 1.2 else 'NOT met'})")
        save_results("backup-auth", f"Verify and restore of a {db_bytes / 2**20:.0f} MiB PostgreSQL database before "
                     f"and after age encryption + signed manifests, median of {runs} runs",
                     {k: {"median s": round(v, 2)} for k, v in med.items()}
                     | {f"{k} after/before": {"ratio": round(v, 2)} for k, v in ratios.items()})
    except StepFailed as exc:
        print(f"bench: a step failed: {exc}", file=sys.stderr)
        return 1
    finally:
        with contextlib.suppress(StopIteration):
            next(server)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mb", type=int, help="size of the generated database in MiB (1024; 256 with --local)")
    ap.add_argument("--runs", type=int, default=3, help="timed repetitions of each step; medians are printed (3)")
    ap.add_argument("--keep-lab", action="store_true", help="leave the bench lab running")
    ap.add_argument("--local", action="store_true", help="no lab: verify/restore before and after issue 20")
    ap.add_argument("--before", default="main", help="with --local: the git revision of 'before' (main)")
    args = ap.parse_args()
    args.size_mb = args.size_mb or (256 if args.local else 1024)
    if args.size_mb < 1 or args.runs < 1:
        ap.error("--size-mb and --runs must be at least 1")
    if args.local:
        return local_bench(args.size_mb, args.runs, args.before)
    tmp = Path(tempfile.mkdtemp(prefix="tradeops-bench-backup-"))
    inv = write_inventory(tmp, LAB_ID, {"db": ["db1"], "monitoring": ["mon1"]})
    env = ansible_env(tmp)

    def play(*a: str, profile: bool = False) -> subprocess.CompletedProcess:
        extra = {"ANSIBLE_CALLBACKS_ENABLED": "tradeops_summary,ansible.posix.profile_tasks"} if profile else {}
        return sh([str(VENV_BIN / "ansible-playbook"), "-i", str(inv), *a], {**env, **extra})

    times: dict[str, list[float]] = {}
    tasks: dict[str, list[float]] = {}  # restore.yml's tasks (profile_tasks)

    def note(step: str, seconds: float) -> None:
        times.setdefault(step, []).append(seconds)

    try:
        sh([str(LAB), "up"], LAB_ENV)
        # moto holds every object in memory: room for the backups of all runs, plus its own.
        s3_memory = f"{512 + args.size_mb * (args.runs + 1)}M"
        t_site, _ = timed(play, "playbooks/lab.yml", "-t", SITE_TAGS, "-e", f"s3_lab_memory_max={s3_memory}")
        t0 = time.monotonic()
        data = generate(args.size_mb)
        t_gen = time.monotonic() - t0
        print(f"backup benchmark: lab db1 + mon1 converged in {t_site:.0f} s; generated {data['rows']} rows, "
              f"database refapp {data['bytes'] / 2**20:.0f} MiB in {t_gen:.0f} s; {args.runs} runs", flush=True)
        on_db1(f"{PG_ENV} pg_dump -Fc --no-password > /dev/null")  # warm the page cache
        sizes = []
        for run in range(args.runs):
            note("pg_dump /dev/null", timed(on_db1, f"{PG_ENV} pg_dump -Fc --no-password > /dev/null")[0])
            note("pg_dump file", timed(on_db1, f"{PG_ENV} pg_dump -Fc --no-password -f /var/backups/bench.dump"
                                       " && sync -f /var/backups/bench.dump")[0])
            dump_bytes = int(on_db1("stat -c %s /var/backups/bench.dump; rm -f /var/backups/bench.dump").stdout)
            took, proc = timed(on_db1, f"{TOOL} --json backup --no-upload --no-prune")
            note("backup", took)
            result = json.loads(proc.stdout)
            backup_id = result["backup_id"]
            sizes.append(result["bytes"])
            note("upload", timed(on_db1, f"{TOOL} --json upload --backup-id {backup_id}")[0])
            took, proc = timed(on_db1, f"{TOOL} --json verify --backup-id {backup_id}", check=False)
            report = json.loads(proc.stdout or "{}")
            if proc.returncode != 0 or report.get("status") != "passed":
                raise StepFailed(f"verify of {backup_id} did not pass: {report.get('message')} {proc.stderr[-1000:]}")
            note("verify", took)
            delete_offsite(backup_id)  # moto holds objects in memory; restore.yml uses the local copy
            root = json.loads(on_db1(f"cat {CONFIG}").stdout)["backup_root"]
            dump = f"{root}/{backup_id}/postgresql/refapp.dump"
            note("pg_restore", timed(on_db1, f"{PG_ENV} createdb --no-password --owner=refapp bench_restore && "
                                     f"{PG_ENV} pg_restore --no-password --exit-on-error -d bench_restore {dump} && "
                                     f"{PG_ENV} dropdb --no-password bench_restore")[0])
            took, proc = timed(play, "playbooks/restore.yml", "-e", "confirm_restore=true",
                               "-e", f"backup_id={backup_id}", profile=True)
            note("restore.yml", took)
            for task, secs in re.findall(r"^(\S.*?) -+ (\d+\.\d+)s$", proc.stdout, re.MULTILINE):
                tasks.setdefault(task.strip(), []).append(float(secs))
            # keep the disk flat: the backups of this run (and restore.yml's emergency backup) go
            for b in json.loads(on_db1(f"{TOOL} --json list").stdout):
                on_db1(f"rm -rf {shlex.quote(root)}/{b['backup_id']}")
            print(f"  run {run + 1}: " + "  ".join(f"{k} {v[-1]:.1f}s" for k, v in times.items()), flush=True)
    except StepFailed as exc:
        print(f"bench: a step failed: {exc}", file=sys.stderr)
        return 1
    finally:
        if not args.keep_lab:
            sh([str(LAB), "down"], LAB_ENV, check=False)
    med = {k: statistics.median(v) for k, v in times.items()}
    base = med["pg_dump /dev/null"]
    size = statistics.median(sizes)
    print(f"backup benchmark: database {data['bytes'] / 2**20:.0f} MiB, pg_dump -Fc {dump_bytes / 2**20:.0f} MiB, "
          f"backup {size / 2**20:.0f} MiB; median of {args.runs} runs")
    for step in ("pg_dump /dev/null", "pg_dump file", "backup", "upload", "verify", "pg_restore", "restore.yml"):
        extra = ""
        if step in ("pg_dump file", "backup"):
            extra = f"   {med[step] / base:4.2f}x raw pg_dump to /dev/null"
        elif step == "upload":
            extra = f"   {size / 2**20 / med[step]:6.1f} MiB/s to the lab S3"
        elif step == "restore.yml":
            extra = f"   {med[step] / med['pg_restore']:4.2f}x raw pg_restore (RTO)"
        print(f"  {step:18s} {med[step]:7.2f} s{extra}")
    # each run's backup against the pg_dump of the same run (a busy machine moves both alike)
    ratio = statistics.median(b / d for b, d in zip(times["backup"], times["pg_dump /dev/null"], strict=True))
    print(f"  target backup <= 2.0x raw pg_dump: median of the runs' ratios {ratio:.2f}x "
          f"{'met' if ratio <= 2.0 else 'NOT met'}")
    slow = sorted(((statistics.median(v), k) for k, v in tasks.items()), reverse=True)[:4]
    print("  restore.yml's slowest tasks (median s): " + "; ".join(f"{k} {m:.1f}" for m, k in slow))
    save_results("backup", f"Backup and restore of a {data['bytes'] / 2**20:.0f} MiB PostgreSQL database, median of "
                 f"{args.runs} runs", {step: {"median s": round(m, 2), "x raw pg_dump": round(m / base, 2)}
                                       for step, m in med.items()} | {"backup / raw pg_dump, per run": {
                                           "median ratio": round(ratio, 2)}})
    return 0


if __name__ == "__main__":
    sys.exit(main())
