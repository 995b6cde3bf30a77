"""multiservice scenario, the batch-only application beside the seven services (converge.yml's screener):
no unit of its own; each release gated by `refapp check` from that release before `current` switches to it;
a release failing its gate is never current; verify.yml and rollback.yml run the gate; the scheduled daily
scan always runs `current`; the seven services are never touched by its deploys.

The tests run in file order and build on each other: 1.0.0 (converge), 1.1.0, 1.2.0 refused, back to 1.0.0.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(os.environ["MOLECULE_PROJECT_DIRECTORY"]) / "molecule" / ".testinfra"))
from testinfra_helpers import PROJECT, playbook

ROOT = "/opt/screener"
JOB = "tradeops-job-screener-daily-scan.service"
SERVICES = ("orchestration", "news", "scanner", "pattern", "technical", "trading", "reporting")


@pytest.fixture(scope="module")
def app_vars(tmp_path_factory) -> list[str]:
    """``-e @file`` with the screener's variables as converge.yml deploys it (one place for them)."""
    plays = yaml.safe_load((Path(__file__).resolve().parents[1] / "converge.yml").read_text())
    found = next(p["vars"] for p in plays if p.get("vars", {}).get("app_name") == "screener")
    path = tmp_path_factory.mktemp("screener") / "screener.json"
    path.write_text(json.dumps({k: v for k, v in found.items() if k != "app_version"}))
    return ["-e", f"@{path}"]


@pytest.fixture(scope="module")
def unready_wheel(tmp_path_factory) -> str:
    """1.2.0 whose `refapp check` always answers not ready (exit 1): it fails its gate."""
    out = tmp_path_factory.mktemp("wheels")
    return subprocess.run([sys.executable, str(PROJECT / "scripts" / "build_refapp.py"), "--version", "1.2.0",
                           "--fault", "unready", "--out", str(out)],
                          capture_output=True, text=True, check=True).stdout.strip()


def current(host) -> str:
    return host.check_output(f"readlink {ROOT}/current").rsplit("/", 1)[-1]


def ledger(host) -> list[dict]:
    return [json.loads(x) for x in host.file(f"{ROOT}/ledger.jsonl").content_string.splitlines()]


def scan(host) -> dict:
    """Run the scheduled daily scan now (systemctl start waits for the oneshot) and return its summary line."""
    host.run_expect([0], f"systemctl start {JOB}")
    lines = host.check_output(f"journalctl -u {JOB} -o cat --no-pager -n 40").splitlines()
    return json.loads(next(line for line in reversed(lines) if line.startswith('{"job"')))


def pids(host) -> dict[str, str]:
    return {s: host.check_output(f"systemctl show -P MainPID catalyst-{s}.service") for s in SERVICES}


def test_the_first_release_is_current_with_no_unit_and_its_job_runs_it(host):
    assert current(host).startswith("1.0.0-")
    assert host.run("systemctl list-unit-files 'screener-*' --no-legend").stdout.strip() == ""
    assert [e["action"] for e in ledger(host) if e["version"] == "1.0.0"] == ["create", "activate", "mark", "summary"]
    result = scan(host)
    assert result["version"] == "1.0.0" and result["ok"] is True, result


def test_an_upgrade_is_gated_from_the_new_release_then_switched(host, app_vars):
    before = pids(host)
    proc = playbook("deploy.yml", *app_vars, "-e", "app_version=1.1.0")
    assert proc.returncode == 0, proc.text[-3000:]
    assert current(host).startswith("1.1.0-")
    entries = [e for e in ledger(host) if e["version"] == "1.1.0"]
    assert [e["action"] for e in entries] == ["create", "activate", "mark", "summary"]
    assert entries[-1]["outcome"] == "deployed" and entries[-1]["timings"]["restart"] == 0
    assert scan(host)["version"] == "1.1.0"
    assert pids(host) == before  # the seven services were not restarted


def test_a_release_failing_its_gate_is_never_current(host, app_vars, unready_wheel):
    before, previous = pids(host), current(host)
    proc = playbook("deploy.yml", *app_vars, "-e", "app_version=1.2.0", "-e", f"app_source={unready_wheel}")
    assert proc.returncode != 0, "a release that fails its gate must fail the play"
    assert "its gate failed before the switch" in proc.text and "app_gate [unhealthy] refapp exited 1" in proc.text
    assert f"Nothing was switched: {previous} is still current" in proc.text
    assert current(host) == previous
    entries = [e for e in ledger(host) if e["version"] == "1.2.0"]
    assert [(e["action"], e["outcome"]) for e in entries] == [("create", "created"), ("mark", "bad"),
                                                              ("summary", "not-switched")]
    assert "app_gate" in entries[1]["reason"]
    assert scan(host)["version"] == "1.1.0"  # the job still runs the release that passed its gate
    assert pids(host) == before


def test_verify_and_rollback_run_the_gate(host, app_vars):
    verified = playbook("verify.yml", *app_vars)
    assert verified.returncode == 0, verified.text[-3000:]
    back = playbook("rollback.yml", *app_vars, "-e", "rollback_to=1.0.0")
    assert back.returncode == 0, back.text[-3000:]
    assert current(host).startswith("1.0.0-")
    last = ledger(host)[-2:]
    assert [(e["action"], e["version"]) for e in last] == [("rollback", "1.0.0"), ("summary", "1.0.0")]
    assert scan(host)["version"] == "1.0.0"
