"""Evidence for the Windows path that runs on Linux (Windows itself cannot run here).

- every playbook passes ``--syntax-check`` with the seed 002 inventory (and the Linux playbooks stay
  no-ops for the lab inventory, which has no windows group);
- every template of the windows_* roles rendered with the example inventory's values: valid XML /
  JSON, paths under the root, no secret in clear where it must not be;
- the roles' bad-input cases fail in the preflight, before any change, with a message naming the
  variable (one ansible-playbook run for all cases, on this Linux controller: the valid cases must
  then fail at "Windows role aimed at a ... host");
- the PowerShell modules keep the Linux ledger's fields and app_health's result keys.

The render and the preflight cases are two ansible-playbook runs shared by the tests (module fixture).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
HERE = Path(__file__).resolve().parent
SEED002 = ROOT / "inventory" / "examples" / "seed002"
ANSIBLE_PLAYBOOK = str(Path(os.environ.get("VIRTUAL_ENV", ROOT / ".venv")) / "bin" / "ansible-playbook")
if not Path(ANSIBLE_PLAYBOOK).exists():
    ANSIBLE_PLAYBOOK = "ansible-playbook"

# Test values standing in for the vault: each must appear nowhere in clear where it must not.
SECRETS = {
    "vault_ansible_password": "T3st-ansible-Pw-0001",  # pragma: allowlist secret
    "vault_windows_app_service_account_password": "T3st-account-Pw-0002",  # pragma: allowlist secret
    "vault_windows_app_redis_password": "T3st-redis-Pw-000003",  # pragma: allowlist secret
    "vault_windows_schedule_s3_secret_access_key": "T3st-s3-secret-000004",  # pragma: allowlist secret
}
WINDOWS_ROOT = "C:\\TradingEngine"
# Seed 002's published Redis password: the role must refuse it.
SEED_REDIS_PASSWORD = "trading_engine_redis_2025"  # pragma: allowlist secret


def _env() -> dict[str, str]:
    return {
        **os.environ,
        "ANSIBLE_INJECT_FACT_VARS": "false",
        "ANSIBLE_FORCE_COLOR": "0",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_CACHE_PLUGIN": "memory",
        "ANSIBLE_DISPLAY_SKIPPED_HOSTS": "false",
        # The results (rendered files, each case's outcome, per-host stats) are read from the json callback:
        # no module run on the controller just to hand them over.
        "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.json",
    }


def example_vars() -> dict[str, Any]:
    """The seed 002 example inventory's group vars, without the connection settings, with test secrets."""
    data = yaml.safe_load((SEED002 / "group_vars" / "windows" / "vars.yml").read_text())
    data = {k: v for k, v in data.items() if not k.startswith("ansible_")}
    data.update(SECRETS)
    data["windows_schedule_agent_wheel"] = "/nonexistent/tradeops_agent-0.1.0-py3-none-any.whl"
    return data


# --------------------------------------------------------------------------- preflight cases

# The failure message of a case; for a loop, the failed items' own messages.
FAILURE_TEXT = (
    "{{ ((ansible_failed_result.results | default([]) | selectattr('failed', 'defined') | selectattr('failed')"
    " | map(attribute='msg') | list) + [ansible_failed_result.msg | default('')]) | join(' | ') }}"
)


def preflight_cases(tmp: Path) -> tuple[dict[str, dict[str, Any]], dict[str, tuple[str, dict[str, Any]]]]:
    wheelhouse = tmp / "wheelhouse"
    wheelhouse.mkdir()
    (wheelhouse / "trading_engine-1.0.0-py3-none-any.whl").write_bytes(b"")
    empty = tmp / "empty-wheelhouse"
    empty.mkdir()
    agent = tmp / "tradeops_agent-0.1.0-py3-none-any.whl"
    agent.write_bytes(b"")
    installer = tmp / "python-3.11.9-amd64.exe"
    installer.write_bytes(b"")
    base = {
        "windows_common": {"windows_common_python_installer": str(installer)},
        "windows_app": {
            "windows_app_version": "1.0.0",
            "windows_app_wheelhouse": str(wheelhouse),
            "windows_app_winsw_exe": "/srv/installers/WinSW-x64.exe",
            "windows_app_service_account_password": SECRETS["vault_windows_app_service_account_password"],
            "windows_app_redis_password": SECRETS["vault_windows_app_redis_password"],
        },
        "windows_schedule": {"windows_schedule_agent_wheel": str(agent)},
    }
    aimed = "Windows role aimed at a"
    cases: dict[str, tuple[str, dict[str, Any]]] = {
        # role, vars over the base, expected text of the failure
        "common_valid_on_linux": ("windows_common", {}),
        "common_no_python": ("windows_common", {"windows_common_python_installer": ""}),
        "common_missing_installer": ("windows_common", {"windows_common_python_installer": "/nonexistent/python.exe"}),
        "common_url_without_checksum": (
            "windows_common",
            {"windows_common_python_installer": "https://www.python.org/ftp/python/3.11.9/python-3.11.9-amd64.exe"},
        ),
        "common_redis_port_inbound": (
            "windows_common",
            {
                "windows_common_firewall_rules": [
                    {"name": "Redis Cache", "port": 6379, "protocol": "tcp", "remote_addresses": "Any"}
                ]
            },
        ),
        "common_relative_root": ("windows_common", {"windows_common_root": "TradingEngine"}),
        "common_dir_escapes_root": ("windows_common", {"windows_common_directories": ["data\\..\\..\\Windows"]}),
        "app_valid_on_linux": ("windows_app", {}),
        "app_no_version": ("windows_app", {"windows_app_version": ""}),
        "app_wheel_missing": ("windows_app", {"windows_app_wheelhouse": str(empty)}),
        "app_no_winsw": ("windows_app", {"windows_app_winsw_exe": ""}),
        "app_localsystem": ("windows_app", {"windows_app_service_account": "LocalSystem"}),
        "app_no_account_password": ("windows_app", {"windows_app_service_account_password": ""}),
        "app_secret_in_config": ("windows_app", {"windows_app_config": {"cache": {"password": "x"}}}),
        "app_seed_redis_password": ("windows_app", {"windows_app_redis_password": SEED_REDIS_PASSWORD}),
        "app_redis_public_bind": ("windows_app", {"windows_app_redis_bind": "0.0.0.0"}),
        "app_no_recovery": ("windows_app", {"windows_app_failure_actions": [{"type": "explode", "delay_ms": 1}]}),
        "app_spec_type": ("windows_app", {"windows_app_keep_releases": "many"}),
        "schedule_valid_on_linux": ("windows_schedule", {}),
        "schedule_no_agent_wheel": ("windows_schedule", {"windows_schedule_agent_wheel": "/nonexistent/agent.whl"}),
        "schedule_unknown_job": (
            "windows_schedule",
            {
                "windows_schedule_jobs": [
                    {"name": "defrag", "trigger": "daily", "time": "02:00", "execution_time_limit": "PT1H"}
                ]
            },
        ),
        "schedule_no_time_limit": (
            "windows_schedule",
            {"windows_schedule_jobs": [{"name": "daily-backup", "trigger": "daily", "time": "02:00"}]},
        ),
        "schedule_s3_without_secret": (
            "windows_schedule",
            {"windows_schedule_s3_bucket": "b", "windows_schedule_s3_secret_access_key": ""},
        ),
    }
    expected = {
        "common_valid_on_linux": aimed,
        "common_no_python": "No Python for the host: set windows_common_python_installer",
        "common_missing_installer": "is missing on the controller",
        "common_url_without_checksum": "windows_common_python_installer_checksum",
        "common_redis_port_inbound": "windows_common_forbidden_inbound_ports",
        "common_relative_root": "windows_common_root is",
        "common_dir_escapes_root": "windows_common_directories entry",
        "app_valid_on_linux": aimed,
        "app_no_version": "-e app_version=V",
        "app_wheel_missing": "holds no wheel of trading-engine 1.0.0",
        "app_no_winsw": "error 1053",
        "app_localsystem": 'windows_app_service_account "LocalSystem"',
        "app_no_account_password": "vault_windows_app_service_account_password",  # pragma: allowlist secret
        "app_secret_in_config": "windows_app_config must not hold keys named",  # pragma: allowlist secret
        "app_seed_redis_password": "vault_windows_app_redis_password",  # pragma: allowlist secret
        "app_redis_public_bind": "windows_app_redis_bind must be 127.0.0.1",
        "app_no_recovery": "windows_app_failure_actions",
        "app_spec_type": "windows_app_keep_releases",
        "schedule_valid_on_linux": aimed,
        "schedule_no_agent_wheel": "windows_schedule_agent_wheel",
        "schedule_unknown_job": "windows_schedule_jobs entry defrag",
        "schedule_no_time_limit": "execution_time_limit",
        "schedule_s3_without_secret": "vault_windows_schedule_s3_secret_access_key",  # pragma: allowlist secret
    }
    hosts = {name: {"case_role": role, **base[role], **extra} for name, (role, extra) in cases.items()}
    play = {
        "name": "Preflight cases, one inventory host per case (run in parallel)",
        "hosts": "cases",
        "gather_facts": False,
        "tasks": [
            {
                "name": "Case",
                "block": [
                    {"name": "Apply the role", "ansible.builtin.include_role": {"name": "{{ case_role }}"}},
                    {"name": "Record no failure", "ansible.builtin.set_fact": {"case_result": "NO FAILURE"}},
                ],
                "rescue": [{"name": "Record the failure", "ansible.builtin.set_fact": {"case_result": FAILURE_TEXT}}],
            }
        ],
    }
    (tmp / "site.yml").write_text(
        yaml.safe_dump([{"ansible.builtin.import_playbook": str(HERE / "render.yml")}, play], sort_keys=False)
    )
    (tmp / "hosts.yml").write_text(
        yaml.safe_dump(
            {
                "all": {
                    "vars": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable},
                    "children": {"cases": {"hosts": hosts}},
                    "hosts": {"render": {"example_vars_file": str(tmp / "example.json")}},
                }
            },
            sort_keys=False,
        )
    )
    return expected, cases


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """ONE ansible-playbook run: the render play, then every preflight case (hosts in parallel)."""
    tmp = tmp_path_factory.mktemp("windows")
    expected, cases = preflight_cases(tmp)
    (tmp / "example.json").write_text(json.dumps(example_vars()))
    proc = subprocess.run(
        [ANSIBLE_PLAYBOOK, "-i", str(tmp / "hosts.yml"), "-f", "4", str(tmp / "site.yml")],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    try:
        report = json.loads(proc.stdout)
    except ValueError:
        report = {"plays": [], "stats": {}}
    facts: dict[str, dict[str, Any]] = {}
    for play in report["plays"]:
        for task in play["tasks"]:
            for host, result in task["hosts"].items():
                facts.setdefault(host, {}).update(result.get("ansible_facts") or {})
    return {"proc": proc, "facts": facts, "stats": report["stats"], "expected": expected, "cases": cases}


# --------------------------------------------------------------------------- render


def test_run_passed(run: dict[str, Any]) -> None:
    # Every case's failure is rescued: the run itself must pass (a broken render or case fails it).
    assert run["proc"].returncode == 0, run["proc"].stdout[-4000:] + run["proc"].stderr[-2000:]
    assert run["stats"], "no json callback output"


def _rendered(run: dict[str, Any]) -> dict[str, str]:
    return run["facts"].get("render", {}).get("rendered_files") or {}


def test_no_secret_in_clear(run: dict[str, Any]) -> None:
    files = _rendered(run)
    assert set(files) >= {
        "production.json",
        "redis.conf",
        "backup.json",
        "maintenance.json",
        "maintenance-logs.json",
        "winsw-AITradingEngine.xml",
        "winsw-AITradingEngineRedis.xml",
    }
    for name, text in files.items():
        for key, secret in SECRETS.items():
            assert secret not in text, f"{key}'s value is in clear in {name}"
    # redis.conf carries the password only as its SHA-256 ACL entry.
    digest = hashlib.sha256(SECRETS["vault_windows_app_redis_password"].encode()).hexdigest()
    assert f"user default on #{digest} " in files["redis.conf"]
    assert not re.search(r"^\s*requirepass", files["redis.conf"], re.M)


def test_production_json(run: dict[str, Any]) -> None:
    config = json.loads(_rendered(run)["production.json"])
    assert "password" not in config["cache"]
    assert config["cache"]["password_file"] == WINDOWS_ROOT + "\\config\\secrets\\redis.password"
    assert config["cache"]["host"] == "127.0.0.1" and config["cache"]["port"] == 6379
    assert config["database"]["path"] == WINDOWS_ROOT + "\\data\\databases\\trading_engine.db"
    assert config["environment"] == "production" and config["debug"] is False
    assert config["performance"]["worker_processes"] == 4 and config["performance"]["request_queue_size"] == 1000


def test_redis_conf_loopback_and_paths(run: dict[str, Any]) -> None:
    conf = _rendered(run)["redis.conf"]
    directives = dict(
        line.split(None, 1) for line in conf.splitlines() if line and not line.startswith("#") and " " in line
    )
    assert directives["bind"] == "127.0.0.1"
    assert directives["protected-mode"] == "yes"
    assert directives["dir"] == '"C:/TradingEngine/data/cache"'
    assert directives["logfile"] == '"C:/TradingEngine/data/logs/redis.log"'


def test_winsw_xml(run: dict[str, Any]) -> None:
    files = _rendered(run)
    root = ET.fromstring(files["winsw-AITradingEngine.xml"].encode())  # noqa: S314 (our own rendered file)
    assert root.tag == "service"
    assert root.findtext("id") == "AITradingEngine"
    assert root.findtext("executable") == WINDOWS_ROOT + "\\current\\venv\\Scripts\\python.exe"
    assert root.findtext("workingdirectory") == WINDOWS_ROOT + "\\current"
    assert root.findtext("logpath") == WINDOWS_ROOT + "\\data\\logs"
    assert [(f.get("action"), f.get("delay")) for f in root.findall("onfailure")] == [
        ("restart", "10 sec"),
        ("restart", "30 sec"),
        ("restart", "60 sec"),
    ]
    assert root.findtext("resetfailure") == "86400 sec"
    env = {e.get("name"): e.get("value") for e in root.findall("env")}
    assert env["TRADING_ENGINE_CONFIG"] == WINDOWS_ROOT + "\\config\\production.json"
    assert root.find("serviceaccount") is None, "the account's password must not be in the XML"
    redis = ET.fromstring(files["winsw-AITradingEngineRedis.xml"].encode())  # noqa: S314 (our own rendered file)
    assert redis.findtext("arguments") == '"' + WINDOWS_ROOT + '\\config\\redis.conf"'
    for xml in (root, redis):
        for tag in ("executable", "workingdirectory", "logpath"):
            value = xml.findtext(tag)
            assert value and not any(ord(c) < 32 for c in value), f"{tag} holds a control character: {value!r}"


def test_ops_agent_configs(run: dict[str, Any]) -> None:
    from ansible.module_utils import tradeops_backup, tradeops_maintenance

    files = _rendered(run)
    backup = json.loads(files["backup.json"])
    cfg = tradeops_backup.load_config(backup)  # the ops agent's own validation
    assert cfg["retention"]["keep_days"] == 30
    assert cfg["offsite"]["bucket"] == "trading-engine-backups"
    assert cfg["offsite"]["secret_access_key_file"] == WINDOWS_ROOT + "\\config\\secrets\\s3.secret"
    assert backup["sqlite"] == [
        {"name": "trading_engine", "path": WINDOWS_ROOT + "\\data\\databases\\trading_engine.db"}
    ]
    assert {"name": "config", "path": WINDOWS_ROOT + "\\config", "exclude": ["secrets"]} in backup["paths"]
    for name in ("maintenance.json", "maintenance-logs.json"):
        data = json.loads(files[name])
        unknown = set(data) - set(tradeops_maintenance._DEFAULTS)
        assert not unknown, f"{name}: keys the ops agent does not know: {unknown}"
        for item in data.get("cleanup", []) + data.get("sqlite", []):
            assert item["path"].startswith(WINDOWS_ROOT + "\\"), item


def test_scheduled_commands(run: dict[str, Any]) -> None:
    derived = json.loads(_rendered(run)["derived.json"])
    assert derived["account_name"] == "svc-trading"
    assert derived["account_qualified"] == ".\\svc-trading"
    assert [j["name"] for j in derived["jobs"]] == [
        "daily-backup",
        "log-rotation",
        "database-maintenance",
        "cache-cleanup",
        "health-report",
    ]
    assert all(j["execution_time_limit"].startswith("PT") for j in derived["jobs"])
    for name, command in derived["commands"].items():
        assert command["path"].startswith(WINDOWS_ROOT + "\\ops\\venv\\Scripts\\tradeops-"), name
        assert WINDOWS_ROOT + "\\config\\" in command["arguments"], name
    assert derived["commands"]["daily-backup"]["arguments"].endswith("backup --verify")


# --------------------------------------------------------------------------- preflight


def test_preflight_cases(run: dict[str, Any]) -> None:
    outcomes = {name: facts.get("case_result") for name, facts in run["facts"].items()}
    wrong = {}
    for name, expect in run["expected"].items():
        got = outcomes.get(name) or "(case did not run)"
        if expect not in got:
            wrong[name] = got[:400]
    assert not wrong, json.dumps(wrong, indent=2)


def test_preflight_failed_before_any_change(run: dict[str, Any]) -> None:
    # In each case the role only read (asserts, setup, stat) before it failed: no task changed anything.
    for name in run["expected"]:
        stats = run["stats"].get(name) or {}
        assert stats.get("ok", 0) > 0 and stats.get("changed") == 0, f"{name}: {stats}"


# --------------------------------------------------------------------------- syntax


def syntax_check(inventory: str, *playbooks: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([ANSIBLE_PLAYBOOK, "-i", inventory, "--syntax-check", *playbooks], cwd=ROOT, env=_env(),
                          capture_output=True, text=True, timeout=120, check=False)


def test_syntax_check_every_playbook() -> None:
    # playbooks/tasks and playbooks/vars hold task and vars files that the playbooks include, not playbooks.
    playbooks = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "playbooks").rglob("*.yml")
                       if p.parent.name not in ("tasks", "vars"))
    proc = syntax_check(str(SEED002), *playbooks)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert all(f"playbook: {p}" in proc.stdout for p in playbooks)
    lab = syntax_check("inventory/lab", *(f"playbooks/{p}.yml" for p in ("deploy", "rollback", "backup", "verify")))
    assert lab.returncode == 0, lab.stdout[-3000:] + lab.stderr[-3000:]


def test_syntax_check_catches_an_unknown_module(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text("- hosts: windows\n  tasks:\n    - name: x\n      win_app_relase:\n        path: C:\\x\n")
    assert syntax_check(str(SEED002), str(bad)).returncode != 0


# --------------------------------------------------------------------------- PowerShell modules vs Linux


def test_ledger_fields_equal_linux() -> None:
    from ansible.module_utils.tradeops_release import ReleaseStore

    store = ReleaseStore("/opt/x", actor="a", host="h", clock=lambda: 0.0)
    linux = set(store._entry("create"))
    ps1 = (ROOT / "plugins" / "modules" / "win_app_release.ps1").read_text()
    block = re.search(r"function New-LedgerEntry \{.*?\$entry = @\{(.*?)\n    \}", ps1, re.S).group(1)
    windows = set(re.findall(r"^\s+(\w+) = ", block, re.M))
    assert windows == linux
    # The lock file's fields are those of tradeops_release.LockInfo.
    from ansible.module_utils.tradeops_release import LockInfo

    lock = re.search(r"\$info = @\{(.*?)\n    \}", ps1, re.S).group(1)
    assert set(re.findall(r"(\w+) = ", lock)) == set(LockInfo.__dataclass_fields__)


def test_release_id_and_version_patterns_equal_linux() -> None:
    from ansible.module_utils import tradeops_release

    ps1 = (ROOT / "plugins" / "modules" / "win_app_release.ps1").read_text()
    version = re.search(r"\$VersionPattern = '([^']+)'", ps1).group(1)
    # .NET spells Python's \Z (the very end, not before a last newline) \z, and named groups (?<name>)
    assert version == tradeops_release.VERSION_RE.pattern.replace("\\Z", "\\z")
    release = re.search(r"\$ReleaseIdPattern = '([^']+)'", ps1).group(1)
    linux = tradeops_release.RELEASE_ID_RE.pattern.replace("(?P<", "(?<").replace("\\Z", "\\z")
    assert release == linux


def test_health_result_keys_equal_app_health() -> None:
    from ansible.module_utils.tradeops_health import CheckResult, HealthReport

    ps1 = (ROOT / "plugins" / "modules" / "win_app_health.ps1").read_text()
    result_keys = set(re.findall(r"\$module\.Result\.(\w+) = ", ps1)) - {"changed"}
    assert result_keys == set(HealthReport("healthy", [], 1, 0.0).as_dict())
    check = re.search(r"return \[ordered\]@\{ (.*?) \}", ps1).group(1)
    assert set(re.findall(r"(\w+) = ", check)) == set(CheckResult("n", "k", "healthy", "d").as_dict())
