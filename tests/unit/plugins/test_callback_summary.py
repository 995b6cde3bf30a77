"""The tradeops_summary callback: its phase table as a pure function, its outcome logic, and
end to end through real ``ansible-playbook`` runs on localhost with real app_release tasks
(a deploy that passes its gate, then one whose gate fails and is rolled back)."""

from __future__ import annotations

import importlib.util
import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from plugin_testlib import HOST_PYTHON

ROOT = Path(__file__).resolve().parents[3]
PLUGIN = ROOT / "plugins" / "callback" / "tradeops_summary.py"
PLAYBOOK_BIN = Path(sys.executable).with_name("ansible-playbook")
SECRET = "s3cr3t-Zq81-never-shown"


def _load_plugin():
    spec = importlib.util.spec_from_file_location("tradeops_summary_under_test", PLUGIN)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


summary = _load_plugin()


# -- phase mapping -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("module", "action", "name", "path", "state", "expected"),
    [
        # by module (and app_release's action): the task name does not matter
        ("app_release", "lock", "Take the deploy lock", "", None, "lock"),
        ("app_release", "unlock", "anything", "", None, "lock"),
        ("app_release", "create", "Create the release", "", None, "unpack"),
        ("app_release", "activate", "Switch current to the new release", "", None, "switch"),
        ("app_release", "rollback", "Switch back to the previous good release", "", None, "switch"),
        ("app_release", "prune", "Prune old releases", "", None, "prune"),
        ("app_release", "mark", "Mark the release good", "", None, "other"),
        ("app_release", "list", "List", "", None, "other"),
        ("app_health", None, "Health of refapp-web", "", None, "health"),
        ("ansible.legacy.app_health", None, "whatever", "", None, "health"),
        ("ansible.builtin.systemd_service", None, "Bounce the api", "", "restarted", "restart"),
        ("ansible.builtin.service", None, "Bounce the api", "", "stopped", "restart"),
        # app_release whose action is templated: decided by the name
        ("app_release", None, "Release the deploy lock", "", None, "lock"),
        # by name (the role's real task names)
        ("ansible.builtin.command", None, "Build the release's wheelhouse on the controller", "", None, "wheelhouse"),
        ("ansible.builtin.set_fact", None, "Read the wheelhouse manifest", "", None, "wheelhouse"),
        ("ansible.builtin.copy", None, "Ship the wheelhouse", "", None, "wheelhouse"),
        ("ansible.builtin.command", None, "Run the migration hook from the new release", "", None, "migrate"),
        ("ansible.builtin.include_tasks", None, "Restart and gate on health", "", None, "restart"),
        ("ansible.builtin.include_tasks", None, "Verify the serving release (nothing was restarted)", "", None,
         "health"),
        ("ansible.builtin.systemd_service", None, "Stop services in reverse dependency order", "", None, "restart"),
        ("ansible.builtin.systemd_service", None, "Start service refapp-web", "", None, "restart"),
        ("ansible.builtin.command", None, "Clear failed state left by an earlier release", "", None, "restart"),
        ("ansible.builtin.include_tasks", None, "Health gate of refapp-web", "", None, "health"),
        ("ansible.builtin.include_tasks", None, "Roll back and fail", "", None, "switch"),
        ("ansible.builtin.systemd_service", None, "Restart app services", "", None, "restart"),  # the handler
        ("ansible.builtin.command", None, "Build the virtualenv", "", None, "venv"),
        ("ansible.builtin.unarchive", None, "Unpack the tarball", "", None, "unpack"),
        # "Enable the units" has no start/stop state: it is not a restart
        ("ansible.builtin.systemd_service", None, "Enable the units (started by a deploy, once a release exists)",
         "", None, "other"),
        ("ansible.builtin.file", None, "Create the release tree", "", None, "other"),
        ("ansible.builtin.fail", None, "Fail the host (stops the rollout)", "", None, "other"),
        ("ansible.builtin.assert", None, "Assert a release version was given", "", None, "other"),
        # by the tasks file, last
        ("ansible.builtin.stat", None, "Look for a current release", "/x/roles/app/tasks/restart.yml:6", None,
         "restart"),
        ("ansible.builtin.debug", None, "Show it", "/x/roles/app/tasks/verify.yml:3", None, "health"),
        ("ansible.builtin.debug", None, "Show it", "/x/roles/app/tasks/deploy.yml:3", None, "other"),
        ("", None, "", "", None, "other"),
    ],
)
def test_phase_of(module, action, name, path, state, expected):
    assert summary.phase_of(module, action, name, path, state) == expected


@pytest.mark.parametrize(
    ("duration", "timings", "expected"),
    [
        (2.0, {"wheelhouse_s": 0.1, "deps_s": 0.5, "venv_s": 0.4, "install_s": 0.2, "compile_s": 0.1,
               "finalize_s": 0.1, "total_s": 1.4}, {"unpack": 0.8, "venv": 1.2}),
        (1.0, {"wheelhouse_s": 0.1, "total_s": 0.2}, {"unpack": 1.0, "venv": 0.0}),  # existing release: no venv
        (0.5, {"venv_s": 3.0}, {"unpack": 0.0, "venv": 0.5}),  # never more than the task took
        (0.5, None, {"unpack": 0.5, "venv": 0.0}),  # no_log or an older module: all unpack
        (0.5, {"venv_s": "x", "deps_s": True}, {"unpack": 0.5, "venv": 0.0}),
    ],
)
def test_split_create(duration, timings, expected):
    got = summary.split_create(duration, timings)
    assert got == pytest.approx(expected)
    assert sum(got.values()) == pytest.approx(duration)


# -- outcome -----------------------------------------------------------------------------


def _run(created=None, switches=(), failures=()):
    run = summary.HostRun(created=created)
    run.switches = [summary.Switch(*s) for s in switches]
    run.failures = [summary.Failure(*f) for f in failures]
    return run


NEW = {"release": "2.0-20260101T000000Z", "version": "2.0", "existed": False}
OLD = "1.0-20250101T000000Z"
ACTIVATE = (3, "activate", NEW["release"], "2.0", OLD, True)
ROLLBACK = (6, "rollback", OLD, "1.0", NEW["release"], True)


@pytest.mark.parametrize(
    ("run", "failed", "outcome", "words"),
    [
        (_run(NEW, [ACTIVATE]), False, "deployed", f"deployed 2.0 ({NEW['release']})"),
        (_run(NEW | {"existed": True}, [(3, "activate", NEW["release"], "2.0", NEW["release"], False)]), False,
         "unchanged", "re-deployed 2.0"),
        (_run(NEW, [ACTIVATE, ROLLBACK], [(5, "Health of web", "app_health"), (7, "Fail the host", "fail")]), True,
         "rolled-back-after-failed-gate", f"rolled back to 1.0 ({OLD}) after failed gate of 2.0"),
        (_run(NEW, [ACTIVATE, ROLLBACK], [(5, "Health of web", "app_health"), (8, "Health of web", "app_health")]),
         True, "failed", "then failed at 'Health of web'"),
        (_run(NEW, [], [(4, "Run the migration hook", "command")]), True, "failed",
         "failed at 'Run the migration hook'; nothing was switched"),
        (_run(None, [], [(1, "Take the deploy lock", "app_release")]), True, "failed", "Take the deploy lock"),
        (_run(None, [(2, "rollback", OLD, "1.0", NEW["release"], True)]), False, "rollback",
         f"rollback to 1.0 ({OLD})"),
        (_run(None, [(2, "rollback", OLD, "1.0", OLD, False)]), False, "rollback", "already current"),
        (_run(None, []), False, "ok", "no release created or switched"),
    ],
)
def test_outcome(run, failed, outcome, words):
    got, sentence = summary.CallbackModule.outcome(run, failed)
    assert got == outcome
    assert words in sentence


def test_no_summary_without_app_release():
    plugin = summary.CallbackModule()
    printed = []
    plugin._display = SimpleNamespace(display=printed.append, banner=printed.append, warning=printed.append)
    plugin.v2_playbook_on_stats(SimpleNamespace(summarize=lambda host: {}))
    assert printed == []


# -- end to end --------------------------------------------------------------------------

PLAYBOOK = """
- name: Deploy under test
  hosts: all
  gather_facts: false
  vars:
    ansible_python_interpreter: "{{ ansible_playbook_python }}"
    secret: "%(secret)s"
    rel_args: {path: "%(root)s", lock_owner: tester, lock_host: ctl, lock_pid: 4242}
  tasks:
    - name: Take the deploy lock
      app_release:
        path: "{{ rel_args.path }}"
        action: lock
        lock_owner: tester
        lock_host: ctl
        lock_pid: 4242
        lock_reason: "deploy {{ secret }}"
      no_log: true  # its ledger_entry carries the reason: must not reach the summary
      changed_when: false

    - name: Deploy, gated on health
      block:
        - name: Build the release's wheelhouse on the controller
          ansible.builtin.command:
            argv: [sleep, "0.3"]
          changed_when: false

        - name: Read the vault password
          ansible.builtin.debug:
            msg: "{{ secret }}"
          no_log: true

        - name: Create the release
          app_release:
            path: "{{ rel_args.path }}"
            action: create
            version: "{{ version }}"
            wheelhouse: "{{ wheelhouse }}"
            package: tiny-app
            python: %(python)s
          register: rel

        - name: Run the migration hook from the new release
          ansible.builtin.command:
            argv: [sleep, "0.2"]
          changed_when: true

        - name: Switch current to the new release
          app_release:
            path: "{{ rel_args.path }}"
            action: activate
            release: "{{ rel.release }}"
            allow_bad: true

        - name: Start service tiny-web
          ansible.builtin.command:
            argv: [sleep, "0.1"]
          changed_when: false

        - name: Health gate of tiny-web
          ansible.builtin.command:
            argv: ["{{ 'false' if fail_gate | bool else 'true' }}"]
          changed_when: false

        - name: Mark the release good
          app_release:
            path: "{{ rel_args.path }}"
            action: mark
            release: "{{ rel.release }}"
            outcome: good

        - name: Prune old releases
          app_release:
            path: "{{ rel_args.path }}"
            action: prune
            keep: 2
      rescue:
        - name: Mark the new release bad in the ledger
          app_release:
            path: "{{ rel_args.path }}"
            action: mark
            release: "{{ rel.release }}"
            outcome: bad
            reason: "{{ ansible_failed_task.name }}"

        - name: Switch back to the previous good release
          app_release:
            path: "{{ rel_args.path }}"
            action: rollback

        - name: Fail the host (stops the rollout)
          ansible.builtin.fail:
            msg: gate failed
      always:
        - name: Release the deploy lock
          app_release:
            path: "{{ rel_args.path }}"
            action: unlock
            lock_owner: tester
            lock_host: ctl
            lock_pid: 4242
          changed_when: false

        - name: List the releases
          app_release:
            path: "{{ rel_args.path }}"
            action: list
"""


def _env(log: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "TRADEOPS_"))}
    env.update(ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_CALLBACKS_ENABLED="tradeops_summary",
               TRADEOPS_SUMMARY_LOG=str(log), ANSIBLE_NOCOLOR="1", ANSIBLE_DEPRECATION_WARNINGS="0")
    return env


def _playbook(book: Path, log: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """ansible-playbook on localhost, from the repository root so ansible.cfg's paths apply."""
    return subprocess.run([str(PLAYBOOK_BIN), "-i", "localhost,", "-c", "local", str(book), *extra],
                          cwd=ROOT, env=_env(log), capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture(scope="module")
def deploys(tmp_path_factory):
    """Two real runs of one playbook: 1.0 (gate passes), then 2.0 (gate fails, rolled back)."""
    if not os.path.exists(HOST_PYTHON):
        pytest.skip("needs /usr/bin/python3")
    from plugin_testlib import build_wheelhouse

    tmp = tmp_path_factory.mktemp("summary")
    book = tmp / "deploy.yml"
    book.write_text(PLAYBOOK % {"secret": SECRET, "root": tmp / "opt" / "tiny", "python": HOST_PYTHON})
    log = tmp / "logs" / "nested" / "summary.jsonl"
    runs = []
    for version, fail_gate in (("1.0", False), ("2.0", True)):
        wheelhouse = build_wheelhouse(tmp / f"wh-{version}", version)
        runs.append(_playbook(book, log, "-e", f"version={version}", "-e", f"wheelhouse={wheelhouse}",
                              "-e", f"fail_gate={fail_gate}"))
    records = [json.loads(line) for line in log.read_text().splitlines()]
    return SimpleNamespace(runs=runs, records=records, log=log, root=tmp / "opt" / "tiny")


def _check_timing(record):
    phases = record["phases"]
    assert all(seconds >= 0 for seconds in phases.values()), phases
    assert record["total_s"] > 0
    assert sum(phases.values()) == pytest.approx(record["total_s"], abs=0.02)


def test_deploy_summary_printed_and_recorded(deploys):
    first = deploys.runs[0]
    assert first.returncode == 0, first.stdout + first.stderr
    assert len(deploys.records) == 2
    record = deploys.records[0]
    assert record["host"] == "localhost" and record["playbook"] == "deploy.yml"
    assert record["outcome"] == "deployed" and record["version"] == "1.0"
    assert record["release"].startswith("1.0-") and record["new_release"] == record["release"]
    assert record["previous"] is None and record["failed_task"] is None
    for phase in ("lock", "wheelhouse", "unpack", "venv", "migrate", "switch", "restart", "health", "prune", "other"):
        assert phase in record["phases"], record["phases"]
    assert record["phases"]["wheelhouse"] >= 0.3 and record["phases"]["migrate"] >= 0.2
    assert record["phases"]["venv"] > 0  # the create's own virtualenv timings
    _check_timing(record)
    actions = [entry["action"] for entry in record["ledger"]]
    assert actions == ["create", "activate", "mark", "unlock"]  # the no_log lock's entry is not kept
    assert record["ledger"][0]["release"] == record["release"]

    out = first.stdout
    assert "TRADEOPS SUMMARY" in out
    assert f"localhost: deployed 1.0 ({record['release']})" in out
    assert f"release {record['release']}  previous -" in out
    table = next(line for line in out.splitlines() if line.startswith("  lock "))
    assert "venv" in table and "health" in table and f"total {record['total_s']:.2f} s" in table
    assert f"summary appended to {deploys.log}" in out


def test_failed_gate_is_rolled_back_and_recorded(deploys):
    second = deploys.runs[1]
    assert second.returncode == 2, second.stdout + second.stderr
    first, record = deploys.records
    assert record["outcome"] == "rolled-back-after-failed-gate"
    assert record["release"] == first["release"] and record["version"] == "1.0"
    assert record["previous"] == first["release"]
    assert record["new_version"] == "2.0" and record["new_release"].startswith("2.0-")
    assert record["failed_task"] == "Health gate of tiny-web"
    _check_timing(record)
    assert [e["action"] for e in record["ledger"]] == ["create", "activate", "mark", "rollback", "unlock"]
    assert record["ledger"][2]["outcome"] == "bad"
    assert (deploys.root / "current").readlink().name == first["release"]
    assert (f"localhost: rolled back to 1.0 ({first['release']}) after failed gate of 2.0 "
            f"({record['new_release']}) at 'Health gate of tiny-web'") in second.stdout


def test_no_secret_and_private_file(deploys):
    for proc in deploys.runs:
        assert SECRET not in proc.stdout and SECRET not in proc.stderr
    text = deploys.log.read_text()
    assert SECRET not in text
    assert "lock_reason" not in text and "argv" not in text  # no module arguments
    # the module's own ledger does hold the reason: the callback is what filtered it out
    assert SECRET in (deploys.root / "ledger.jsonl").read_text()
    assert stat.S_IMODE(deploys.log.stat().st_mode) == 0o600


def test_failure_before_any_release_task_is_recorded(tmp_path):
    """The play contains app_release tasks but fails before the first one: still a record."""
    book = tmp_path / "early.yml"
    book.write_text(f"""
- name: Deploy that stops at its preflight
  hosts: all
  gather_facts: false
  vars:
    ansible_python_interpreter: "{{{{ ansible_playbook_python }}}}"
  tasks:
    - name: Assert a release version was given
      ansible.builtin.assert:
        that: false
        fail_msg: no version
    - name: Take the deploy lock
      app_release:
        path: {tmp_path / "opt"}
        action: lock
""")
    log = tmp_path / "summary.jsonl"
    proc = _playbook(book, log)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "localhost: failed at 'Assert a release version was given'; nothing was switched" in proc.stdout
    (record,) = [json.loads(line) for line in log.read_text().splitlines()]
    assert record["outcome"] == "failed" and record["ledger"] == [] and record["release"] is None
    assert set(record["phases"]) == {"other", "overhead"}
    _check_timing(record)
    assert not (tmp_path / "opt").exists()


# -- app_deploy ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("duration", "timings", "expected"),
    [
        (2.0, {"lock": 0.1, "venv": 0.5, "health": 0.9, "other": 0.1}, {"lock": 0.1, "venv": 0.5, "health": 0.9,
                                                                       "other": 0.5}),
        (1.0, {"unpack": 1.5, "restart": 0.5, "bogus": 9}, {"unpack": 0.75, "restart": 0.25, "other": 0.0}),
        (0.5, None, {"other": 0.5}),
    ],
)
def test_split_timings(duration, timings, expected):
    got = summary.split_timings(duration, timings)
    assert got == pytest.approx(expected)
    assert sum(got.values()) == pytest.approx(duration)


def _deploy_run(*deploys, failures=()):
    run = summary.HostRun()
    run.deploys = [{"action": "deploy", "outcome": None, "release": None, "version": None, "previous": None,
                    "current": None, "rolled_back_to": None, "changed": True, "msg": "", "seq": 1, "failed": False}
                   | d for d in deploys]
    run.failures = [summary.Failure(*f) for f in failures]
    return run


NEW_D = {"release": NEW["release"], "version": "2.0"}


@pytest.mark.parametrize(
    ("run", "failed", "outcome", "words"),
    [
        (_deploy_run(NEW_D | {"outcome": "deployed"}), False, "deployed", f"deployed 2.0 ({NEW['release']})"),
        (_deploy_run(NEW_D | {"outcome": "unchanged", "changed": False}), False, "unchanged", "re-deployed 2.0"),
        (_deploy_run(NEW_D | {"outcome": "rolled-back", "rolled_back_to": OLD, "failed": True, "seq": 2},
                     failures=[(2, "Deploy 2.0, gated on health", "app_deploy")]), True,
         "rolled-back-after-failed-gate", f"rolled back to {OLD} after failed gate of 2.0"),
        (_deploy_run(NEW_D | {"outcome": "rollback-failed", "failed": True, "msg": "THE ROLLBACK FAILED"},
                     failures=[(1, "Deploy", "app_deploy")]), True, "failed", "deploy failed: THE ROLLBACK FAILED"),
        (_deploy_run({"action": "rollback", "outcome": "rolled-back", "release": OLD, "version": "1.0"}), False,
         "rollback", f"rollback to 1.0 ({OLD})"),
        (_deploy_run({"action": "rollback", "outcome": "unchanged", "release": OLD, "version": "1.0"}), False,
         "rollback", "already current"),
        (_deploy_run(NEW_D | {"outcome": "deployed"}, NEW_D | {"action": "restart", "outcome": "restarted", "seq": 3},
                     failures=[(4, "Drain at the load balancer", "command")]), True, "failed",
         "deploy deployed, then failed at 'Drain at the load balancer'"),
        # the soak after the gate: a failed one is the host's outcome, a passed one leaves the deploy's
        (_deploy_run(NEW_D | {"outcome": "deployed"},
                     NEW_D | {"action": "soak", "outcome": "rolled-back", "rolled_back_to": OLD, "failed": True,
                              "seq": 3}, failures=[(3, "Watch the new release under traffic", "app_deploy")]), True,
         "rolled-back-after-failed-gate", f"rolled back to {OLD} after 2.0 ({NEW['release']}) failed its soak"),
        (_deploy_run(NEW_D | {"outcome": "deployed"}, NEW_D | {"action": "soak", "outcome": "soaked", "seq": 3}),
         False, "deployed", f"deployed 2.0 ({NEW['release']})"),
        (_deploy_run(NEW_D | {"action": "restart", "outcome": "restarted"}), False, "restarted", "restarted 2.0"),
        (_deploy_run(NEW_D | {"action": "verify", "outcome": "healthy"}), False, "ok", "verify: healthy 2.0"),
    ],
)
def test_deploy_outcome(run, failed, outcome, words):
    got, sentence = summary.CallbackModule.outcome(run, failed)
    assert got == outcome
    assert words in sentence


DEPLOY_BOOK = """
- name: One-call deploys under test
  hosts: all
  gather_facts: false
  vars:
    ansible_python_interpreter: "{{ ansible_playbook_python }}"
  tasks:
    - name: Deploy, gated on health
      app_deploy:
        path: "%(root)s"
        action: "{{ act }}"
        version: "{{ version | default(omit) }}"
        wheelhouse: "{{ wheelhouse | default(omit) }}"
        package: tiny-app
        python: %(python)s
        lock_owner: tester
        lock_host: ctl
        lock_pid: 4242
"""


def test_app_deploy_runs_are_summarised(tmp_path):
    """Real app_deploy runs (no services: nothing to restart on this machine): 1.0, 2.0,
    2.0 again, then a rollback — each one record with the module's phases and ledger lines."""
    if not os.path.exists(HOST_PYTHON):
        pytest.skip("needs /usr/bin/python3")
    from plugin_testlib import build_wheelhouse

    book = tmp_path / "deploy.yml"
    root = tmp_path / "opt" / "tiny"
    book.write_text(DEPLOY_BOOK % {"root": root, "python": HOST_PYTHON})
    log = tmp_path / "summary.jsonl"
    houses = {v: build_wheelhouse(tmp_path / f"wh-{v}", v) for v in ("1.0", "2.0")}
    for version in ("1.0", "2.0", "2.0"):
        proc = _playbook(book, log, "-e", "act=deploy", "-e", f"version={version}", "-e",
                         f"wheelhouse={houses[version]}")
        assert proc.returncode == 0, proc.stdout + proc.stderr
    proc = _playbook(book, log, "-e", "act=rollback")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    one, two, again, back = [json.loads(line) for line in log.read_text().splitlines()]
    assert one["outcome"] == "deployed" and one["version"] == "1.0" and one["previous"] is None
    assert two["outcome"] == "deployed" and two["previous"] == one["release"] and two["new_version"] == "2.0"
    assert again["outcome"] == "unchanged" and again["release"] == two["release"] and again["ledger"] == []
    assert back["outcome"] == "rollback" and back["release"] == one["release"] and back["version"] == "1.0"
    assert f"localhost: rollback to 1.0 ({one['release']})" in proc.stdout
    for record in (one, two, back):
        _check_timing(record)
        assert record["phases"]["lock"] >= 0 and "switch" in record["phases"]
    assert one["phases"]["venv"] > 0 and one["phases"]["unpack"] > 0
    assert [e["action"] for e in two["ledger"]] == ["create", "activate", "mark", "summary"]
    assert [e["action"] for e in back["ledger"]] == ["rollback", "summary"]
    ledger = (root / "ledger.jsonl").read_text()
    proc = _playbook(book, log, "-e", "act=deploy", "-e", "version=2.0", "-e", f"wheelhouse={houses['2.0']}", "--check")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "localhost: check mode, would be: deployed 2.0" in proc.stdout, proc.stdout
    assert "check mode: nothing was changed" in proc.stdout and (root / "ledger.jsonl").read_text() == ledger


TWO_APPS_BOOK = """
- name: A service application and a batch-only one on the same host
  hosts: all
  gather_facts: false
  vars:
    ansible_python_interpreter: "{{ ansible_playbook_python }}"
    common: {package: tiny-app, python: %(python)s, lock_owner: tester, lock_host: ctl, lock_pid: 4242}
  tasks:
    - name: Deploy the web application
      app_deploy: "{{ common | combine({'path': '%(root)s/web', 'version': version, 'wheelhouse': wheelhouse}) }}"
    - name: Deploy the batch-only application, gated by a command from the release
      app_deploy: >-
        {{ common | combine({'path': '%(root)s/screener', 'version': version, 'wheelhouse': wheelhouse,
                             'gate': [{'kind': 'command', 'name': 'app_gate', 'argv': ['python', '--version']}]}) }}
"""


def test_two_applications_of_one_host_are_never_mixed(tmp_path):
    """One run deploys two applications on a host: the record is the last one's (app, release, previous all its
    own), and the printed line names it and the other."""
    if not os.path.exists(HOST_PYTHON):
        pytest.skip("needs /usr/bin/python3")
    from plugin_testlib import build_wheelhouse

    book = tmp_path / "deploy.yml"
    book.write_text(TWO_APPS_BOOK % {"root": tmp_path / "opt", "python": HOST_PYTHON})
    log = tmp_path / "summary.jsonl"
    for version in ("1.0", "2.0"):
        wheelhouse = build_wheelhouse(tmp_path / f"wh-{version}", version)
        proc = _playbook(book, log, "-e", f"version={version}", "-e", f"wheelhouse={wheelhouse}")
        assert proc.returncode == 0, proc.stdout + proc.stderr
    first, second = [json.loads(line) for line in log.read_text().splitlines()]
    batch = sorted(os.listdir(tmp_path / "opt" / "screener" / "releases"))
    assert first["app"] == second["app"] == "screener" and first["previous"] is None
    assert second["previous"] == batch[0] and second["release"] == batch[1] and second["version"] == "2.0"
    assert f"localhost: screener: deployed 2.0 ({batch[1]}) (also ran: web)" in proc.stdout
