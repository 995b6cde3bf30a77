"""os_packages: the decision to refresh package lists, over an apt that behaves like the real module
on a host whose lists are empty, stale or fresh (the real apt runs in molecule/datatier on hosts that
boot in the first-hour state); and the rule that every role and scenario installs through it."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import os_packages
import pytest
import yaml
from test_app_modules import _doc_options, _spec_options

ROOT = Path(__file__).resolve().parents[3]
_spec = importlib.util.spec_from_file_location("os_packages_action", ROOT / "plugins" / "action" / "os_packages.py")
action = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(action)


class FakeApt:
    """ansible.builtin.apt as it behaves on a Debian host: it trusts the lists' mtime
    (``lists_age``) against cache_valid_time, never updates in check mode, and fails
    "No package matching" for a package its lists do not hold."""

    def __init__(self, lists: set[str], lists_age: int, mirror: set[str], installed: set[str] = frozenset(),
                 check_mode: bool = False):
        self.lists, self.lists_age, self.mirror = set(lists), lists_age, set(mirror)
        self.installed, self.check_mode, self.calls = set(installed), check_mode, []

    def __call__(self, module_name: str, module_args: dict[str, Any], task_vars: dict[str, Any]) -> dict[str, Any]:
        assert module_name == "ansible.builtin.apt"
        self.calls.append(dict(module_args))
        updated = False
        if module_args.get("update_cache") and self.lists_age > module_args.get("cache_valid_time", 0) - 0.5:
            if not self.check_mode:
                self.lists, self.lists_age = set(self.mirror), 0
            updated = True
        names = module_args["name"]
        if module_args["state"] == "absent":
            gone = [n for n in names if n in self.installed]
            if not self.check_mode:
                self.installed -= set(gone)
            return {"changed": bool(gone)}
        for name in names:
            if name not in self.installed and name not in self.lists:
                return {"failed": True, "msg": f"No package matching '{name}' is available"}
        new = [n for n in names if n not in self.installed]
        if not self.check_mode:
            self.installed |= set(new)
        return {"changed": bool(new) or updated, "cache_updated": updated}


def run(apt: FakeApt, **args: Any) -> dict[str, Any]:
    plugin = object.__new__(action.ActionModule)
    plugin._task = SimpleNamespace(check_mode=apt.check_mode)
    plugin._execute_module = apt
    full = {"state": "present", "cache_valid_time": 3600, "install_recommends": None, **args}
    return plugin.install(full, {})


MIRROR = {"nginx", "openssl", "redis-server"}


def test_empty_lists_with_a_fresh_mtime_are_refreshed_then_installed():
    apt = FakeApt(lists=set(), lists_age=60, mirror=MIRROR)  # an image built a minute ago
    result = run(apt, name=["nginx", "openssl"])
    assert not result.get("failed"), result
    assert result["changed"] and result["lists_refreshed"] is True
    assert "No package matching 'nginx'" in result["stale_lists"]
    assert apt.installed == {"nginx", "openssl"}
    assert [c["cache_valid_time"] for c in apt.calls] == [3600, 0]


def test_fresh_lists_are_one_apt_call_and_idempotent():
    apt = FakeApt(lists=MIRROR, lists_age=60, mirror=MIRROR)
    first = run(apt, name=["nginx"])
    again = run(apt, name=["nginx"])
    assert first["changed"] and first["lists_refreshed"] is False
    assert again["changed"] is False and len(apt.calls) == 2


def test_installed_packages_need_no_lists_at_all():
    apt = FakeApt(lists=set(), lists_age=60, mirror=MIRROR, installed={"nginx"})
    result = run(apt, name=["nginx"])
    assert result["changed"] is False and len(apt.calls) == 1


def test_old_lists_are_refreshed_by_cache_valid_time_as_before():
    apt = FakeApt(lists={"nginx"}, lists_age=7200, mirror=MIRROR)
    result = run(apt, name=["redis-server"])
    assert result["changed"] and result["lists_refreshed"] is False and len(apt.calls) == 1


def test_a_wrong_name_fails_once_refreshed_and_says_what_to_check():
    apt = FakeApt(lists=set(), lists_age=60, mirror=MIRROR)
    result = run(apt, name=["ngnix"])
    assert result["failed"] and result["lists_refreshed"] is True
    assert "No package matching 'ngnix'" in result["msg"] and "after refreshing the package lists" in result["msg"]
    assert "check the package names (ngnix)" in result["msg"]
    assert len(apt.calls) == 2


def test_cache_valid_time_zero_is_not_refreshed_twice():
    apt = FakeApt(lists=set(), lists_age=60, mirror=MIRROR)
    result = run(apt, name=["ngnix"], cache_valid_time=0)
    assert result["failed"] and len(apt.calls) == 1


def test_other_failures_pass_through_unretried():
    def broken(module_name, module_args, task_vars):
        broken.calls += 1
        return {"failed": True, "msg": "Could not get lock /var/lib/dpkg/lock-frontend"}
    broken.calls = 0
    broken.check_mode = False
    result = run(broken, name=["nginx"])
    assert result["failed"] and result["msg"].startswith("os_packages: Could not get lock")
    assert broken.calls == 1


def test_check_mode_reports_instead_of_failing_and_changes_nothing():
    apt = FakeApt(lists=set(), lists_age=60, mirror=MIRROR, check_mode=True)
    result = run(apt, name=["nginx", "openssl"])
    assert not result.get("failed") and result["changed"]
    assert result["msg"] == "would refresh the package lists and install nginx, openssl"
    assert "check mode does not refresh them" in result["warnings"][0]
    assert apt.lists == set() and apt.installed == set() and len(apt.calls) == 1


def test_absent_needs_no_lists():
    apt = FakeApt(lists=set(), lists_age=60, mirror=MIRROR, installed={"nginx"})
    result = run(apt, name=["nginx"], state="absent")
    assert result["changed"] and apt.installed == set()
    assert "update_cache" not in apt.calls[0]


@pytest.mark.parametrize(("result", "stale"), [
    ({"failed": True, "msg": "No package matching 'x' is available"}, True),
    ({"failed": True, "msg": "'apt-get install x' failed", "stderr": "E: Failed to fetch x.deb  404  Not Found"},
     True),
    ({"failed": True, "msg": "Package x has no installation candidate"}, True),
    ({"failed": True, "msg": "dpkg was interrupted"}, False),
    ({"changed": False, "msg": "No package matching"}, False),
])  # fmt: skip
def test_lists_look_stale(result, stale):
    assert action.lists_look_stale(result) is stale


def test_apt_args_pass_install_recommends_only_when_set():
    base = {"name": ["a"], "state": "present", "install_recommends": None}
    assert action.apt_args(base, 3600) == {"name": ["a"], "state": "present", "update_cache": True,
                                           "cache_valid_time": 3600}
    assert action.apt_args({**base, "install_recommends": False}, 0)["install_recommends"] is False


def test_documentation_matches_the_action_plugins_argument_spec():
    doc = yaml.safe_load(os_packages.DOCUMENTATION)
    assert _doc_options(doc["options"]) == _spec_options(action.ARGUMENT_SPEC)
    assert doc["attributes"]["check_mode"]["support"] == "full"
    yaml.safe_load(os_packages.EXAMPLES)
    assert yaml.safe_load(os_packages.RETURN)


APT_TASK = re.compile(r"^\s*-?\s*(ansible\.builtin\.)?(apt|package):\s*$", re.M)


def test_every_role_and_scenario_installs_packages_through_os_packages():
    """One way to install OS packages: a direct apt task trusts the lists' age and fails on a
    freshly built image (empty lists, fresh mtime) unless another role ran first."""
    offenders = [str(p.relative_to(ROOT)) for top in ("roles", "molecule", "playbooks", "tests")
                 for p in (ROOT / top).rglob("*.yml") if APT_TASK.search(p.read_text())]
    assert offenders == []
