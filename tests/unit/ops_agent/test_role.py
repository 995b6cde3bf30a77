"""Role ops_agent: its variables are documented and validated, and a real run on this
machine (connection local, paths under a temporary directory) installs working commands,
changes nothing the second time. Bad input fails in preflight, before any change."""

from __future__ import annotations

import hashlib
import json
import os

import pytest
import yaml

from . import role_run
from .conftest import ROLE, build_agent, run, started_role_run


def _defaults() -> dict:
    return yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())


def test_argument_specs_equal_defaults_and_readme_lists_them():
    defaults = _defaults()
    options = yaml.safe_load((ROLE / "meta" / "argument_specs.yml").read_text())["argument_specs"]["main"]["options"]
    assert {k: v["default"] for k, v in options.items()} == defaults
    assert all(k.startswith("ops_agent_") for k in defaults)
    readme = (ROLE / "README.md").read_text()
    for key, value in defaults.items():
        row = next((line for line in readme.splitlines() if line.startswith(f"| `{key}` |")), None)
        assert row and str(value) in row, f"README.md must list {key} with its default {value}"


def test_default_version_is_the_agent_source_version():
    assert _defaults()["ops_agent_version"] == build_agent.DEFAULT_VERSION


def test_every_task_is_tagged_and_the_build_runs_on_the_controller():
    main = yaml.safe_load((ROLE / "tasks" / "main.yml").read_text())
    assert [t["tags"] for t in main] == [["ops_agent_install"]] * len(main)
    install = yaml.safe_load((ROLE / "tasks" / "install.yml").read_text())
    build = install[0]
    assert build["delegate_to"] == "localhost" and build["check_mode"] is False and build["changed_when"] is False
    assert build["ansible.builtin.command"]["argv"][:2] == [
        "{{ ansible_playbook_python }}", "{{ role_path }}/../../scripts/build_agent.py"]


def _changed(play: dict) -> list[str]:
    names = [t["task"]["name"] for t in play["tasks"] if t["hosts"].get("localhost", {}).get("changed")]
    return [name.removeprefix("ops_agent : ") for name in names]


@pytest.mark.skipif(role_run.blocker() is not None, reason=str(role_run.blocker()))
def test_role_installs_idempotently_on_this_machine(http_server, request):
    run_ = started_role_run()
    if run_ is None:  # not started at collection (another runner): run it now
        run_ = role_run.RoleRun()
        request.addfinalizer(run_.close)
    code, result, tail = run_.wait()
    assert code == 0, tail
    plays = {p["play"]["name"]: p for p in result["plays"]}
    base = run_.base

    rescued = [t["hosts"]["localhost"] for t in plays["bad input"]["tasks"]
               if "failed_task" in t["hosts"].get("localhost", {}).get("ansible_facts", {})]  # fmt: skip
    assert rescued, "the bad input must fail in the role and be rescued"
    facts = rescued[0]["ansible_facts"]
    assert facts["failed_task"] == "Assert a supported platform and well-formed variables"
    assert "ops_agent_venv a dedicated directory" in facts["failed_msg"] and "(got /opt)" in facts["failed_msg"]
    assert _changed(plays["bad input"]) == []

    installed = _changed(plays["install"])
    assert {"Create the agent's virtualenv (with the system site packages, for python3-psutil)",
            "Install the agent wheel offline", "Link the agent's commands into the bin directory"} <= set(installed)
    assert _changed(plays["again"]) == [], "a second run must change nothing"

    venv = base / "agent" / "venv"
    wheel = base / "agent" / "wheels" / f"tradeops_agent-{build_agent.DEFAULT_VERSION}-py3-none-any.whl"
    assert (venv / "tradeops-agent.sha256").read_text().strip() == hashlib.sha256(wheel.read_bytes()).hexdigest()
    assert "include-system-site-packages = true" in (venv / "pyvenv.cfg").read_text()
    for command in ("tradeops-health", "tradeops-release", "tradeops-backup", "tradeops-maintenance"):
        link = base / "bin" / command
        assert link.is_symlink() and os.readlink(link) == str(venv / "bin" / command)
    health = run(base / "bin" / "tradeops-health", "--url", f"{http_server}/health", "--json")
    assert health.returncode == 0 and json.loads(health.stdout)["status"] == "healthy", health.stdout + health.stderr
