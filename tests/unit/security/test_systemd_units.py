"""Systemd hardening gate: every unit tradeops installs, rendered from the roles' templates with
their defaults (ONE ansible-playbook run on localhost, the ``template`` lookup, nothing on a host)
and scored by ``systemd-analyze security --offline=yes`` of systemd 252 (Debian 12, the lab's).

- tradeops' own services (app, backup, maintenance, schedule jobs and session policy, the lab's
  S3 endpoint) must score <= 2.0; the failure lists every unit above with its score;
- Debian's packaged units the roles harden with drop-ins (exporters, Alertmanager, blackbox) are
  scored as shipped (``packaged/``, copied from the .debs) and with the rendered drop-in: the
  drop-in must lower the score, and below 2.0 too;
- every timer renders and names an existing service.

The table of scores is printed (``pytest -s``) and written to ``.cache/security/systemd-units.json``.
Jobs of role schedule are the schedule scenario's (``molecule/schedule/host_vars/app1.yml``: the
role has none by default), with the role's defaults for everything else.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
PACKAGED = HERE / "packaged"
REPORT = ROOT / ".cache" / "security" / "systemd-units.json"
ANSIBLE_PLAYBOOK = str(Path(sys.executable).with_name("ansible-playbook"))
THRESHOLD = 2.0
SYSTEMD = 252
FACTS = {"os_family": "Debian", "service_mgr": "systemd", "distribution": "Debian"}


def role_files(role: str) -> list[str]:
    files = (ROOT / "roles" / role / "defaults" / "main.yml", ROOT / "roles" / role / "vars" / "main.yml")
    return [str(p) for p in files if p.exists()]


def render_task(role: str, template: str, dest: str, loop: str | list[str], loop_var: str = "item") -> dict[str, Any]:
    """template: a Jinja expression of the template's name under the role's templates/. A debug
    task (no module process per item): the test writes {dest: content} from the JSON output."""
    templates = ROOT / "roles" / role / "templates"
    lookup = f"lookup('ansible.builtin.template', '{templates}/' ~ {template})"
    return {"name": f"Render {role}'s units",
            "ansible.builtin.debug": {"msg": "{{ {'dest': " + dest + ", 'content': " + lookup + "} }}"},
            "loop": loop, "loop_control": {"loop_var": loop_var}}


def schedule_scenario() -> dict[str, Any]:
    """The schedule scenario's jobs and session units (the role's defaults have no job)."""
    host_vars = yaml.safe_load((ROOT / "molecule" / "schedule" / "host_vars" / "app1.yml").read_text())
    keep = ("market_exchange", "schedule_jobs", "schedule_session_units", "schedule_trading_units", "__refapp")
    return {k: host_vars[k] for k in keep}


def plays() -> list[dict[str, Any]]:
    base = {"hosts": "localhost", "connection": "local", "gather_facts": False}
    scenario = schedule_scenario()
    dropin = "'etc/systemd/system/' ~ item.unit ~ '.service.d/tradeops-hardening.conf'"
    return [
        {**base, "name": "app", "vars_files": role_files("app"), "tasks": [
            render_task("app", "'app.service.j2'", "'own/' ~ app_name ~ '-' ~ __svc.name ~ '.service'",
                        "{{ app_services }}", "__svc")]},
        {**base, "name": "backup", "vars_files": role_files("backup"), "tasks": [
            render_task("backup", "item ~ '.j2'", "'own/' ~ item", "{{ __backup_timer_units }}")]},
        {**base, "name": "maintenance", "vars_files": role_files("maintenance"), "tasks": [
            render_task("maintenance", f"'tradeops-maintenance.{kind}.j2'",
                        f"'own/' ~ __maintenance_unit_prefix ~ '-' ~ item.name ~ '.{kind}'",
                        "{{ __maintenance_tasks }}")
            for kind in ("service", "timer")]},
        {**base, "name": "schedule", "vars_files": role_files("schedule"),
         "vars": {"ansible_facts": FACTS, "__refapp": scenario.pop("__refapp")}, "tasks": [
             {"name": "The scenario's jobs (set_fact: above the defaults of vars_files)",
              "ansible.builtin.set_fact": scenario},
             # What the role's preflight sets (the rest of it checks the host: users, paths).
             {"name": "The exchange's calendar", "ansible.builtin.set_fact": {
                 "__schedule_calendar": "{{ schedule_exchange | market_calendar_document }}"}},
             {"name": "The exchange's zone", "ansible.builtin.set_fact": {
                 "__schedule_zone": "{{ __schedule_calendar.zone }}"}},
             *[render_task("schedule", f"'tradeops-job.{kind}.j2'",
                           f"'own/' ~ __schedule_unit_prefix ~ '-' ~ item.name ~ '.{kind}'", "{{ __schedule_jobs }}")
               for kind in ("service", "timer")],
             render_task("schedule", "__schedule_policy_unit ~ '.' ~ item ~ '.j2'",
                         "'own/' ~ __schedule_policy_unit ~ '.' ~ item", ["service", "timer"])]},
        {**base, "name": "s3_lab", "vars_files": role_files("s3_lab"),
         "vars": {"role_path": str(ROOT / "roles" / "s3_lab")},
         "tasks": [render_task("s3_lab", "'tradeops-s3-lab.service.j2'", "'own/' ~ item", ["{{ __s3_lab_unit }}"])]},
        {**base, "name": "monitoring", "vars_files": role_files("monitoring"), "tasks": [
            render_task("monitoring", "'hardening.conf.j2'", dropin, "{{ __monitoring_exporters }}")]},
        {**base, "name": "prometheus", "vars_files": role_files("prometheus"), "tasks": [
            render_task("prometheus", "'hardening.conf.j2'", dropin, "{{ __prometheus_hardened_units }}")]},
    ]


def score(unit: str, root: Path | None = None, path: Path | None = None) -> float:
    """systemd-analyze's overall exposure of a unit file (path) or of a unit under a root tree."""
    argv = ["systemd-analyze", "security", "--offline=yes", "--no-pager"]
    argv += [f"--root={root}", unit] if root else [str(path)]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    found = re.search(r"Overall exposure level for \S+: ([\d.]+)", proc.stdout)
    assert found, f"systemd-analyze could not score {unit}: {proc.stdout[-1500:]} {proc.stderr[-1500:]}"
    return float(found.group(1))


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("systemd-analyze") is None:
        pytest.fail("systemd-analyze is missing: scripts/bootstrap.sh servers (apt-get install systemd)")
    version = subprocess.run(["systemd-analyze", "--version"], capture_output=True, text=True, check=True).stdout
    if int(re.match(r"systemd (\d+)", version).group(1)) != SYSTEMD:
        pytest.fail(f"exposure scores are pinned to systemd {SYSTEMD} (Debian 12): this is {version.split()[1]}")
    out = tmp_path_factory.mktemp("units")
    book = out / "render.yml"
    book.write_text(yaml.safe_dump(plays(), sort_keys=False))
    env = {**os.environ, "ANSIBLE_ROLES_PATH": str(ROOT / "roles"), "ANSIBLE_INJECT_FACT_VARS": "false",
           "ANSIBLE_LOCALHOST_WARNING": "false", "ANSIBLE_INVENTORY_UNPARSED_WARNING": "false",
           "ANSIBLE_STDOUT_CALLBACK": "json"}
    proc = subprocess.run([ANSIBLE_PLAYBOOK, "-i", "localhost,", str(book), "-e", f"playbook_dir={ROOT / 'playbooks'}"],
                          capture_output=True, text=True, cwd=ROOT, env=env, check=False, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    report = json.loads(proc.stdout[proc.stdout.index("{"):])
    for play in report["plays"]:
        for task in play["tasks"]:
            for item in task["hosts"]["localhost"].get("results", []):
                if isinstance(item.get("msg"), dict) and "dest" in item["msg"]:
                    dest = out / item["msg"]["dest"]
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    dest.write_text(item["msg"]["content"] + "\n")
    packaged = out / "lib" / "systemd" / "system"
    packaged.mkdir(parents=True)
    for unit in PACKAGED.glob("*.service"):
        shutil.copy(unit, packaged / unit.name)
    return out


@pytest.fixture(scope="module")
def table(rendered: Path) -> dict[str, dict[str, Any]]:
    """{unit: {"kind": own|packaged, "score": s, "before": s (packaged)}}, printed and saved."""
    rows: dict[str, dict[str, Any]] = {}
    for unit in sorted((rendered / "own").glob("*.service")):
        rows[unit.name] = {"kind": "own", "score": score(unit.name, path=unit)}
    bare = rendered / "bare"
    (bare / "lib" / "systemd" / "system").mkdir(parents=True)
    for dropin in sorted((rendered / "etc" / "systemd" / "system").glob("*.service.d")):
        unit = dropin.name.removesuffix(".d")
        shutil.copy(PACKAGED / unit, bare / "lib" / "systemd" / "system" / unit)
        rows[unit] = {"kind": "packaged + drop-in", "before": score(unit, root=bare),
                      "score": score(unit, root=rendered)}
    lines = [f"{'unit':<48} {'kind':<18} {'before':>6} {'score':>6}"]
    lines += [f"{name:<48} {row['kind']:<18} {row.get('before', ''):>6} {row['score']:>6}"
              for name, row in rows.items()]
    print(f"\nsystemd-analyze security --offline=yes (systemd {SYSTEMD})\n" + "\n".join(lines))
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(json.dumps({"systemd": SYSTEMD, "threshold": THRESHOLD, "units": rows}, indent=2) + "\n")
    return rows


def test_every_unit_tradeops_installs_is_rendered(rendered: Path) -> None:
    own = {p.name for p in (rendered / "own").iterdir()}
    for expected in ("refapp-web.service", "tradeops-backup.service", "tradeops-backup-restore-test.service",
                     "tradeops-maintenance-sqlite.service", "tradeops-job-daily-scan.service",
                     "tradeops-job-weekly-restart.service", "tradeops-session-policy.service",
                     "tradeops-s3-lab.service"):
        assert expected in own, sorted(own)
    dropins = {p.name for p in (rendered / "etc" / "systemd" / "system").iterdir()}
    assert dropins == {f"{p.name}.d" for p in PACKAGED.glob("*.service")}, dropins


def test_every_timer_starts_a_rendered_service(rendered: Path) -> None:
    timers = sorted((rendered / "own").glob("*.timer"))
    assert len(timers) >= 6
    for timer in timers:
        text = timer.read_text()
        assert "OnCalendar=" in text, timer.name
        unit = re.search(r"^Unit=(\S+)", text, re.M)
        service = unit.group(1) if unit else timer.name.replace(".timer", ".service")
        assert (rendered / "own" / service).exists(), f"{timer.name} starts {service}, which is not rendered"


def test_tradeops_units_score_at_most_2(table: dict[str, dict[str, Any]]) -> None:
    own = {name: row["score"] for name, row in table.items() if row["kind"] == "own"}
    assert len(own) >= 10
    above = {name: s for name, s in own.items() if s > THRESHOLD}
    assert not above, f"units above {THRESHOLD} (systemd-analyze security --offline=yes): {above}"


def test_dropins_harden_the_packaged_units(table: dict[str, dict[str, Any]]) -> None:
    packaged = {name: row for name, row in table.items() if row["kind"] != "own"}
    assert set(packaged) == {p.name for p in PACKAGED.glob("*.service")}
    for name, row in packaged.items():
        assert row["before"] > 9, (name, row)  # Debian's unit as shipped: User= and Restart= only
        assert row["score"] < row["before"], (name, row)
        assert row["score"] <= THRESHOLD, (name, row)


def test_the_gate_fails_on_an_unhardened_unit(tmp_path: Path) -> None:
    """The scorer is real: a unit with User= and Restart= only is far above the threshold."""
    unit = tmp_path / "bare.service"
    unit.write_text("[Service]\nUser=nobody\nRestart=on-failure\nExecStart=/bin/true\n")
    assert score(unit.name, path=unit) > 9
