"""Chaos suite (issue 9): the lab, its inventory, and the helpers the experiments share.

The session starts the lab LAB_ID=chaos (containers tradeops-chaos-<host>, its own network,
nothing published on the machine), writes an inventory under .cache/chaos/lab/inventory that
links inventory/lab/group_vars, converges it with lab.yml (site.yml and the lab S3) and deploys
1.0.0. The lab is removed at the end unless CHAOS_KEEP=1 (then a re-run reuses it). Every
experiment records its figures in .cache/chaos/results.json and the suite ends with the line
``chaos: N passed, N failed``.

    .venv/bin/python -m pytest tests/chaos            (what `make chaos` runs)
    CHAOS_KEEP=1 .venv/bin/python -m pytest tests/chaos -k kill
    CHAOS_KEEP=1 CHAOS_REUSE=1 .venv/bin/python -m pytest tests/chaos -k bad   (no site.yml, the kept lab)
"""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / ".cache" / "chaos"
INVENTORY = CACHE / "lab" / "inventory"
RESULTS = CACHE / "results.json"
LAB_ENV = {"LAB_ID": "chaos", "LAB_PUBLISH": "0", "LAB_HOSTS": "lb1 app1 app2 db1 mon1"}
PREFIX = "tradeops-chaos-"
APPS = ("app1", "app2")
APP_ROOT = "/opt/refapp"
BASE_VERSION = "1.0.0"
VENV_BIN = Path(sys.executable).parent
HOSTS = {"lb": ["lb1"], "app": list(APPS), "db": ["db1"], "monitoring": ["mon1"]}
_RESULTS: dict[str, Any] = {}


# -- the lab --------------------------------------------------------------------------------------

def write_inventory() -> Path:
    """The lab inventory with this lab's container names; group_vars are the lab's own."""
    INVENTORY.mkdir(parents=True, exist_ok=True)
    groups: dict[str, Any] = {g: {"hosts": {h: {"ansible_host": PREFIX + h} for h in hs}} for g, hs in HOSTS.items()}
    groups["linux"] = {"children": {g: {} for g in HOSTS}}
    (INVENTORY / "hosts.yml").write_text(json.dumps({"all": {
        "vars": {"ansible_connection": "community.docker.docker", "ansible_user": "root",
                 "ansible_python_interpreter": "/usr/bin/python3"},
        "children": groups}}, indent=1))
    link = INVENTORY / "group_vars"
    if not link.is_symlink():
        link.symlink_to(ROOT / "inventory" / "lab" / "group_vars")
    return INVENTORY


def ansible_env() -> dict[str, str]:
    return {**os.environ, "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_CACHE_PLUGIN_CONNECTION": str(CACHE / "facts"),
            "TRADEOPS_SUMMARY_LOG": str(CACHE / "deploy-summary.jsonl"),
            "PATH": f"{VENV_BIN}:{os.environ['PATH']}"}


class Run(subprocess.CompletedProcess):
    text: str
    seconds: float


def playbook(name: str, *extra: str, args: tuple[str, ...] = (), timeout: float = 900,
             inventory: Path = INVENTORY) -> Run:
    """ansible-playbook playbooks/NAME -e EXTRA... ARGS... against the chaos lab (or another
    inventory of it); .text is its output on one line."""
    cmd = playbook_cmd(name, *extra, args=args, inventory=inventory)
    t0 = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=False, env=ansible_env(),
                          timeout=timeout)
    proc.seconds = time.monotonic() - t0  # type: ignore[attr-defined]
    print(f"$ {shlex.join(cmd[1:])}  -> rc {proc.returncode} in {proc.seconds:.1f} s")  # type: ignore[attr-defined]
    print(proc.stdout[-5000:], proc.stderr[-2000:])
    # Messages are folded over lines by the result callback: compare on one line.
    proc.text = " ".join((proc.stdout + proc.stderr).split())  # type: ignore[attr-defined]
    return proc  # type: ignore[return-value]


def playbook_cmd(name: str, *extra: str, args: tuple[str, ...] = (), inventory: Path = INVENTORY) -> list[str]:
    cmd = [str(VENV_BIN / "ansible-playbook"), "-i", str(inventory), str(ROOT / "playbooks" / name), *args]
    for e in extra:
        cmd += ["-e", e]
    return cmd


def sh(host: str, script: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    """A shell command on a lab host (docker exec), its output as text."""
    proc = subprocess.run(["docker", "exec", PREFIX + host, "sh", "-c", script], capture_output=True, text=True,
                          check=False, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{host}: {script!r} exited {proc.returncode}: {proc.stdout[-1500:]}{proc.stderr[-1500:]}")
    return proc


def out(host: str, script: str) -> str:
    return sh(host, script).stdout.strip()


def get_json(host: str, url: str) -> dict[str, Any]:
    """GET url from a lab host; the JSON body, whatever the status."""
    code = ("import json,ssl,sys,urllib.request,urllib.error\n"
            f"try: r=urllib.request.urlopen({url!r},timeout=5,context=ssl._create_unverified_context())\n"
            "except urllib.error.HTTPError as e: r=e\n"
            "print(r.read().decode())")
    return json.loads(out(host, f"python3 -c {shlex.quote(code)}"))


def served_version(host: str) -> str:
    return str(get_json(host, "http://127.0.0.1:8000/api/health/readiness").get("version"))


def current_release(host: str) -> str:
    return out(host, f"readlink -f {APP_ROOT}/current")


def ledger(host: str) -> list[dict[str, Any]]:
    text = sh(host, f"cat {APP_ROOT}/ledger.jsonl", check=False).stdout
    return [json.loads(x) for x in text.splitlines() if x.strip()]


def tree_sum(host: str, path: str, staging: str = "/nonexistent") -> str:
    """Checksum of the live files under path (the role's staging directory left out: it holds
    the rejected candidate on purpose)."""
    return out(host, f"find {path} -path {staging} -prune -o -type f -print0 | sort -z | xargs -0 sha256sum "
                     "| sha256sum")


def main_pid(host: str, unit: str) -> str:
    return out(host, f"systemctl show {unit} -p MainPID --value")


def wait_on(host: str, condition: str, timeout: float, poll: float = 0.05) -> float:
    """Block until the shell condition holds on host (polled there, every `poll` s, so the moment is
    seen within a poll, not a docker exec round trip); the seconds waited. AssertionError on timeout."""
    t0 = time.monotonic()
    script = (f"end=$(( $(date +%s) + {int(timeout)} )); until {condition}; do "
              f"[ $(date +%s) -ge $end ] && exit 9; sleep {poll}; done")
    proc = sh(host, script, check=False, timeout=timeout + 30)
    assert proc.returncode == 0, f"{host}: `{condition}` not true within {timeout:.0f} s"
    return time.monotonic() - t0


def ledger_has(after: int = 0, **fields: str) -> str:
    """A shell condition (for wait_on): the app ledger has a line with these fields after its first
    `after` lines (its lines are compact JSON with sorted keys, tradeops_release.append_jsonl)."""
    greps = " | ".join(f"grep -F {shlex.quote(json.dumps({k: v}, separators=(',', ':'))[1:-1])}"
                       for k, v in sorted(fields.items()))
    return f"tail -n +{after + 1} {APP_ROOT}/ledger.jsonl 2>/dev/null | {greps} >/dev/null"


def psql(sql: str) -> str:
    return out("db1", f"runuser -u postgres -- psql -X -A -t -q -d refapp -c {shlex.quote(sql)}")


def pg_counts() -> dict[str, int]:
    tables = psql("SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' "
                  "AND table_type = 'BASE TABLE' ORDER BY 1").split()
    return {t: int(psql(f"SELECT count(*) FROM public.{t}")) for t in tables}  # noqa: S608 - names from the catalog


BACKUP_TOOL = "/usr/local/bin/tradeops-backup --config /etc/tradeops/backup.json"


def backup_list() -> list[dict[str, Any]]:
    return json.loads(out("db1", f"{BACKUP_TOOL} --json list"))


def record(experiment: str, **figures: Any) -> None:
    """Figures of an experiment: printed, and kept in .cache/chaos/results.json."""
    if not _RESULTS and RESULTS.exists():  # figures of experiments not run this time are kept
        _RESULTS.update(json.loads(RESULTS.read_text()).get("experiments", {}))
    _RESULTS[experiment] = figures
    print(f"chaos figures {experiment}: {json.dumps(figures, sort_keys=True)}")
    CACHE.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                   "host": os.uname().nodename, "experiments": _RESULTS}, indent=1) + "\n")


class Load:
    """tests/lab/loadgen.py on db1 through lb1 (bounded: fixed rate, time limit), for a block."""

    def __init__(self, url: str = "https://lb1/api/version", rate: float = 20, max_seconds: float = 120) -> None:
        self.args = [url, "--rate", str(rate), "--max-seconds", str(max_seconds)]
        self.result: dict[str, Any] = {}

    def __enter__(self) -> Load:
        self.proc = subprocess.Popen(["docker", "exec", PREFIX + "db1", "python3", "/usr/local/bin/loadgen",
                                      *self.args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(2)
        return self

    def __exit__(self, *exc: object) -> None:
        time.sleep(2)
        sh("db1", "touch /run/tradeops-loadgen.stop")
        stdout, stderr = self.proc.communicate(timeout=120)
        self.result = json.loads(stdout.strip().splitlines()[-1]) if stdout.strip() else {"error": stderr}
        print("load:", self.result)

    @property
    def ratio(self) -> float:
        return self.result["ok"] / self.result["sent"] if self.result.get("sent") else 0.0


# -- "nothing lost" -------------------------------------------------------------------------------

class State:
    """What must survive an experiment: the release each host serves, the ledgers (append-only),
    the row counts in PostgreSQL (the chaos canary table included), the complete backups, and
    lb1 with every backend in its upstream."""

    def __init__(self) -> None:
        self.releases = {h: current_release(h) for h in APPS}
        self.served = {h: served_version(h) for h in APPS}
        self.ledgers = {h: ledger(h) for h in APPS}
        self.rows = pg_counts()
        self.backups = sorted(b["backup_id"] for b in backup_list() if b.get("complete"))

    def check(self, version: str | None = None, releases_may_change: bool = False) -> None:
        """Assert nothing was lost; every app host serves `version` (default: what served before)."""
        for h in APPS:
            release = current_release(h)
            want = version or self.served[h]
            assert release.rsplit("/", 1)[-1].startswith(want + "-"), f"{h}: current -> {release}, want {want}"
            if not releases_may_change and version is None:
                assert release == self.releases[h], f"{h}: current moved {self.releases[h]} -> {release}"
            assert sh(h, f"{release}/venv/bin/refapp --version", check=False).returncode == 0, \
                f"{h}: current {release} is not a complete release"
            assert served_version(h) == want, f"{h} serves {served_version(h)}, want {want}"
            now = ledger(h)
            assert now[:len(self.ledgers[h])] == self.ledgers[h], f"{h}: ledger lost or rewrote entries"
        rows = pg_counts()
        assert rows == self.rows, f"PostgreSQL row counts changed: {self.rows} -> {rows}"
        have = {b["backup_id"] for b in backup_list() if b.get("complete")}
        assert set(self.backups) <= have, f"backups lost: {sorted(set(self.backups) - have)}"
        assert lb_drained() == [], f"lb1 still has drained backends: {lb_drained()}"


def lb_drained() -> list[str]:
    """Backends lb1 has taken out of its upstream (marked `down`)."""
    text = out("lb1", "cat /etc/nginx/tradeops.d/upstream.conf")
    return [line.rsplit("#", 1)[-1].strip() for line in text.splitlines() if " down;" in line]
