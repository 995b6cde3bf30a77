"""Role prometheus' preflight under ansible-playbook: bad thresholds, routes, receivers and rules fail
before the role changes anything, with a message that names the variable; the defaults and the
monitoring scenario's settings pass.

The preflight tasks run on localhost (nothing else of the role: they only assert); the platform
facts they read are given as the play's ``ansible_facts``.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
FACTS = {"os_family": "Debian", "service_mgr": "systemd", "distribution": "Debian"}


def case_play(name: str, role: str, extra: dict) -> dict:
    """One play per case: the role's preflight in a block whose rescue keeps the host for the next
    case, so every case runs in ONE ansible-playbook (a second or more each otherwise)."""
    include = {"name": "Preflight of the role",
               "ansible.builtin.include_role": {"name": role, "tasks_from": "preflight"}}
    return {"name": name, "hosts": "localhost", "gather_facts": False, "connection": "local",
            "vars": {"ansible_facts": FACTS, **extra},
            "tasks": [{"name": "Preflight", "block": [include],
                       "rescue": [{"name": "Rescued", "ansible.builtin.meta": "noop"}]}]}


def run_preflights(directory: Path, role: str, cases: dict[str, dict]) -> dict[str, tuple[bool, list[str], list[str]]]:
    """{case: (failed, messages of the failed tasks, names of the tasks that ran)}."""
    play = directory / "play.yml"
    play.write_text(yaml.safe_dump([case_play(name, role, extra) for name, extra in cases.items()], sort_keys=False))
    playbook = shutil.which("ansible-playbook", path=str(Path(sys.executable).parent)) or "ansible-playbook"
    env = {**os.environ, "ANSIBLE_ROLES_PATH": str(ROOT / "roles"), "ANSIBLE_INJECT_FACT_VARS": "false",
           "ANSIBLE_STDOUT_CALLBACK": "json", "ANSIBLE_LOCALHOST_WARNING": "false",
           "ANSIBLE_INVENTORY_UNPARSED_WARNING": "false"}
    proc = subprocess.run([playbook, "-i", "localhost,", str(play)], capture_output=True,
                          text=True, env=env, cwd=directory, check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(proc.stdout[proc.stdout.index("{"):])
    results = {}
    for played in report["plays"]:
        messages, ran = [], []
        for task in played["tasks"]:
            result = task["hosts"].get("localhost", {})
            ran.append(task["task"]["name"])
            for item in result.get("results", [result]):
                if item.get("failed") or item.get("evaluated_to") is False:
                    messages.append(" ".join(str(item.get("msg", "")).split()))
        results[played["play"]["name"]] = (bool(messages), messages, ran)
    assert set(results) == set(cases), sorted(set(cases) - set(results))
    return results


BAD = [
    ({"prometheus_alert_cpu_thresholds": [{"percent": 0, "severity": "warning"}]}, "prometheus_alert_cpu_thresholds"),
    ({"prometheus_alert_memory_thresholds": [{"percent": "85%", "severity": "warning"}]},
     "prometheus_alert_memory_thresholds"),
    ({"prometheus_alert_disk_thresholds": [{"percent": 120, "severity": "warning"}]},
     "prometheus_alert_disk_thresholds"),
    ({"prometheus_alert_disk_thresholds": [{"percent": 90, "severity": "page"}]}, "prometheus_alert_disk_thresholds"),
    ({"prometheus_alert_disk_thresholds": {"percent": 90, "severity": "warning"}}, "prometheus_alert_disk_thresholds"),
    ({"prometheus_alert_latency_thresholds": [{"ms": 0, "severity": "warning"}]},
     "prometheus_alert_latency_thresholds"),
    ({"prometheus_alert_latency_thresholds": [{"seconds": 1, "severity": "warning"}]},
     "prometheus_alert_latency_thresholds"),
    ({"prometheus_alert_error_rate_percent": 0}, "prometheus_alert_error_rate_percent"),
    ({"prometheus_alert_backup_max_age_hours": -1}, "prometheus_alert_backup_max_age_hours"),
    ({"prometheus_evaluation_interval_seconds": 0}, "prometheus_evaluation_interval_seconds"),
    ({"prometheus_scrape_interval_seconds": "15s"}, "prometheus_scrape_interval_seconds"),
    ({"prometheus_alert_consecutive_breaches": 0}, "prometheus_alert_consecutive_breaches"),
    ({"prometheus_alertmanager_group_wait": "soon"}, "prometheus_alertmanager_group_wait"),
    ({"prometheus_alertmanager_repeat_interval": "0m"}, "prometheus_alertmanager_repeat_interval"),
    ({"prometheus_alertmanager_critical_receivers": ["pagerduty"]}, "prometheus_alertmanager_critical_receivers"),
    ({"prometheus_alertmanager_warning_receivers": "slack"}, "prometheus_alertmanager_warning_receivers"),
    ({"prometheus_alertmanager_slack_url": "hooks.slack.com/services/T0/B0/x"}, "prometheus_alertmanager_slack_url"),
    ({"prometheus_alertmanager_email_to": "oncall@example.test", "prometheus_alertmanager_smtp_smarthost":
      "smtp.example.test", "prometheus_alertmanager_smtp_from": "am@example.test"},
     "prometheus_alertmanager_smtp_smarthost"),
    ({"prometheus_alertmanager_email_to": "oncall", "prometheus_alertmanager_smtp_smarthost": "smtp.example.test:25",
      "prometheus_alertmanager_smtp_from": "am@example.test"}, "prometheus_alertmanager_email_to"),
    ({"prometheus_alertmanager_email_to": "oncall@example.test", "prometheus_alertmanager_smtp_smarthost":
      "smtp.example.test:587", "prometheus_alertmanager_smtp_from": "am@example.test",
      "prometheus_alertmanager_smtp_auth_username": "am"}, "prometheus_alertmanager_smtp_auth_password"),
    ({"prometheus_extra_rules": [{"expr": "up == 0"}]}, "prometheus_extra_rules"),
    ({"prometheus_extra_rules": [{"alert": "Queue too long", "expr": "q > 1"}]}, "prometheus_extra_rules"),
]


SECRET = "XXXXsecretXXXX"
SECRETS_CASE = {"prometheus_alertmanager_slack_url": f"hooks.slack.com/services/T000/B000/{SECRET}",
                "prometheus_alertmanager_email_to": "oncall@example.test",
                "prometheus_alertmanager_smtp_smarthost": "smtp.example.test",
                "prometheus_alertmanager_smtp_from": "am@example.test",
                "prometheus_alertmanager_smtp_auth_username": "am",
                "prometheus_alertmanager_smtp_auth_password": f"pw-{SECRET}"}
IDS = [f"{i}-{v}" for i, (_, v) in enumerate(BAD)]


@pytest.fixture(scope="module")
def preflights(tmp_path_factory):
    scenario = yaml.safe_load((ROOT / "molecule" / "monitoring" / "host_vars" / "mon1.yml").read_text())
    cases = {"defaults": {}, "scenario": scenario, "secrets": SECRETS_CASE}
    cases.update({case_id: extra for case_id, (extra, _) in zip(IDS, BAD, strict=True)})
    return run_preflights(tmp_path_factory.mktemp("preflight"), "prometheus", cases)


def test_defaults_pass(preflights):
    assert preflights["defaults"][:2] == (False, [])


def test_the_monitoring_scenarios_settings_pass(preflights):
    assert preflights["scenario"][:2] == (False, [])


@pytest.mark.parametrize(("case_id", "variable"), [(i, v) for i, (_, v) in zip(IDS, BAD, strict=True)], ids=IDS)
def test_bad_input_fails_in_preflight_naming_the_variable(preflights, case_id, variable):
    failed, messages, ran = preflights[case_id]
    assert failed and messages, ran
    assert any(variable in m for m in messages), messages


def test_secrets_are_not_in_the_failure(preflights):
    """A malformed webhook URL (it holds a token) and an SMTP password are never printed."""
    failed, messages, _ = preflights["secrets"]
    assert failed and messages
    assert not any(SECRET in m for m in messages), messages


LISTEN = {"listen-default": ({}, False), "listen-loopback": ({"monitoring_listen_address": "127.0.0.1"}, False),
          "listen-ipv6": ({"monitoring_listen_address": "[::1]"}, False),
          "listen-with-port": ({"monitoring_listen_address": "127.0.0.1:9100"}, True),
          "listen-bare-ipv6": ({"monitoring_listen_address": "::1"}, True),
          "listen-name": ({"monitoring_listen_address": "localhost"}, True)}


@pytest.fixture(scope="module")
def monitoring_preflights(tmp_path_factory):
    cases = {name: extra for name, (extra, _) in LISTEN.items()}
    return run_preflights(tmp_path_factory.mktemp("monitoring-preflight"), "monitoring", cases)


@pytest.mark.parametrize("case", LISTEN)
def test_monitoring_listen_address(monitoring_preflights, case):
    """Role monitoring: the exporters' listen address is empty, an IPv4 address or a bracketed IPv6 one;
    anything else fails naming the variable and the value."""
    failed, messages, _ = monitoring_preflights[case]
    assert failed == LISTEN[case][1], messages
    if failed:
        assert "monitoring_listen_address" in messages[0], messages
        assert LISTEN[case][0]["monitoring_listen_address"] in messages[0], messages
