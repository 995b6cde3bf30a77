"""The modules end to end through their main() (patch_module_args), and their documentation
against their argument specs."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import app_deploy
import app_files
import app_health
import app_release
import pytest
import yaml
from plugin_testlib import HOST_PYTHON, free_port, tree_snapshot

FRAGMENTS = Path(__file__).resolve().parents[3] / "plugins" / "doc_fragments"

# -- app_release -------------------------------------------------------------------------


@pytest.mark.skipif(not os.path.exists(HOST_PYTHON), reason="needs /usr/bin/python3")
def test_release_create_activate_mark_bad_rollback(run_module, wheelhouses, tmp_path):
    path = str(tmp_path / "opt" / "refapp")
    base = {"path": path, "python": HOST_PYTHON, "actor": "deployer"}

    def release(action: str, check_mode: bool = False, diff: bool = False, **args: object) -> dict:
        return run_module(app_release, {**base, "action": action, **args}, check_mode=check_mode, diff=diff)

    lock = release("lock", lock_owner="deployer", lock_host="ctl", lock_pid=101, lock_reason="deploy 1.0")
    assert lock["changed"] and lock["lock"]["owner"] == "deployer" and lock["_rc"] == 0
    refused = release("lock", lock_owner="other", lock_host="ctl2", lock_pid=7)
    assert refused["failed"] and "deployer@ctl pid 101" in refused["msg"] and refused["stale"] is False
    assert refused["lock"]["reason"] == "deploy 1.0" and refused["_rc"] == 1

    one = release("create", version="1.0", wheelhouse=wheelhouses("1.0"), package="tiny-app")
    assert one["changed"] and one["release"].startswith("1.0-") and one["deps_reused"] is False
    assert one["release_path"] == os.path.join(path, "releases", one["release"])
    assert one["ledger_entry"]["action"] == "create" and one["current"] is None
    first = release("activate", diff=True, release=one["release"])
    assert first["changed"] and first["current"] == one["release"]
    assert first["diff"]["after"] == f"current -> releases/{one['release']}\n"
    assert release("mark", outcome="good")["release"] == one["release"]

    two = release("create", version="2.0", wheelhouse=wheelhouses("2.0"), package="tiny-app")
    assert two["deps_reused"] is True
    predicted = release("activate", check_mode=True, diff=True, version="2.0")
    assert predicted["changed"] and predicted["current"] == one["release"]
    assert predicted["diff"]["before"] == f"current -> releases/{one['release']}\n"
    switched = release("activate", release=two["release"])
    assert switched["changed"] and switched["previous"] == one["release"] and "diff" not in switched
    bad = release("mark", outcome="bad", reason="readiness probe failed")
    assert bad["changed"] and bad["release"] == two["release"]
    back = release("rollback", diff=True, reason="health gate failed")
    assert back["changed"] and back["release"] == one["release"] and back["previous"] == two["release"]
    assert back["current"] == one["release"]
    assert os.readlink(os.path.join(path, "current")) == f"releases/{one['release']}"
    assert release("rollback")["failed"]  # nothing good before 1.0

    listing = release("list")
    assert listing["changed"] is False
    assert [(r["version"], r["status"], r["current"]) for r in listing["releases"]] == [
        ("2.0", "bad", False), ("1.0", "good", True)]  # fmt: skip
    assert release("unlock", lock_owner="deployer", lock_host="ctl", lock_pid=101)["changed"]

    ledger = [json.loads(line) for line in Path(path, "ledger.jsonl").read_text().splitlines()]
    assert [e["action"] for e in ledger] == [
        "lock", "create", "activate", "mark", "create", "activate", "mark", "rollback", "unlock"]  # fmt: skip
    assert all(e["user"] == "deployer" and e["host"] == socket.gethostname() for e in ledger)


@pytest.mark.skipif(not os.path.exists(HOST_PYTHON), reason="needs /usr/bin/python3")
def test_release_check_mode_changes_nothing_on_disk(run_module, wheelhouses, tmp_path):
    path = str(tmp_path / "app")
    args = {"path": path, "python": HOST_PYTHON, "package": "tiny-app"}
    created = run_module(app_release, {**args, "action": "create", "version": "1.0", "wheelhouse": wheelhouses("1.0")})
    run_module(app_release, {**args, "action": "activate", "release": created["release"]})
    snapshot = tree_snapshot(path)
    wheelhouse = wheelhouses("2.0")
    for action, extra in [("create", {"version": "2.0", "wheelhouse": wheelhouse}), ("mark", {"outcome": "bad"}),
                          ("prune", {"keep": 1}), ("lock", {}), ("unlock", {"force_unlock": True}),
                          ("activate", {"release": created["release"]})]:  # fmt: skip
        result = run_module(app_release, {**args, "action": action, **extra}, check_mode=True)
        assert not result.get("failed"), result
        assert "ledger_entry" not in result
    assert tree_snapshot(path) == snapshot


def test_release_init_with_an_owner_that_does_not_exist_yet(run_module, tmp_path):
    """A first deploy in check mode (the user and group tasks only reported): init reports the tree
    and names the accounts, writes nothing; a real init is refused before anything is made."""
    path = tmp_path / "opt" / "refapp"
    args = {"path": str(path), "action": "init", "owner": "no-such-user-here", "group": "no-such-group-here"}
    predicted = run_module(app_release, args, check_mode=True)
    assert predicted["_rc"] == 0 and predicted["changed"]
    assert str(path / "shared" / "config") in predicted["made"]
    assert predicted["missing_accounts"] == ["owner 'no-such-user-here' does not exist yet",
                                             "group 'no-such-group-here' does not exist yet"]
    assert "owner 'no-such-user-here' does not exist yet" in predicted["msg"]
    assert not (tmp_path / "opt").exists()
    refused = run_module(app_release, args)
    assert refused["_rc"] == 1 and refused["failed"]
    assert refused["msg"] == "owner 'no-such-user-here' does not exist on this host; create the app user first"
    assert not (tmp_path / "opt").exists()  # refused before anything is made
    (path / "shared" / "data").mkdir(parents=True)  # a tree without its account: re-owned, in check mode only
    snapshot = tree_snapshot(str(path))
    again = run_module(app_release, args, check_mode=True)
    assert again["_rc"] == 0 and str(path / "shared" / "data") in again["made"] and again["missing_accounts"]
    refused = run_module(app_release, {**args, "owner": "root"})
    assert refused["failed"] and refused["msg"].startswith("group 'no-such-group-here' does not exist on this host")
    assert tree_snapshot(str(path)) == snapshot


def test_release_init_says_whether_the_account_is_in_place(run_module, tmp_path):
    """role app's install step: one init call tells whether its group and user tasks have work to do
    (the account as the user task makes it), and the version of the venvs' Python; when the owner does
    not exist yet, nothing is made and the tree is left for the call after the accounts' tasks."""
    import grp
    import pwd
    import sys

    me = pwd.getpwuid(os.getuid())
    group = grp.getgrgid(me.pw_gid).gr_name
    path = tmp_path / "opt" / "refapp"
    args = {"path": str(path), "action": "init", "owner": me.pw_name, "group": group, "python": sys.executable,
            "account": {"shell": me.pw_shell, "home": me.pw_dir, "comment": me.pw_gecos}}
    same = run_module(app_release, args)
    assert same["_rc"] == 0 and same["account_in_place"] is True and same["tree_pending"] is False
    assert same["python_version"] == ".".join(str(n) for n in sys.version_info[:3])
    assert (path / "shared" / "config").is_dir() and same["changed"]
    assert run_module(app_release, args)["changed"] is False
    for key, other in (("shell", "/bin/false"), ("home", "/nonexistent/home"), ("comment", "someone else")):
        drift = run_module(app_release, {**args, "account": {**args["account"], key: other}})
        assert drift["account_in_place"] is False and drift["tree_pending"] is False, key  # the user task fixes it
    another_group = next(g.gr_name for g in grp.getgrall() if g.gr_gid != me.pw_gid)
    drift = run_module(app_release, {**args, "group": another_group})
    assert drift["account_in_place"] is False  # not the user's primary group: the user task sets it
    fresh = tmp_path / "opt" / "newapp"
    missing = run_module(app_release, {**args, "path": str(fresh), "owner": "no-such-user-here"})
    assert missing["_rc"] == 0 and not missing["changed"] and missing["tree_pending"] is True
    assert missing["account_in_place"] is False and "does not exist yet" in missing["msg"]
    assert not fresh.exists()  # nothing made before the account exists
    predicted = run_module(app_release, {**args, "path": str(fresh), "owner": "no-such-user-here"}, check_mode=True)
    assert predicted["tree_pending"] is False and predicted["missing_accounts"] and not fresh.exists()
    other_python = run_module(app_release, {**args, "python": "/usr/bin/python3"})
    if os.path.exists("/usr/bin/python3"):
        import subprocess

        expected = subprocess.run(["/usr/bin/python3", "-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"],
                                  capture_output=True, text=True, check=True).stdout.strip()
        assert other_python["python_version"] == expected
    gone = run_module(app_release, {**args, "python": str(tmp_path / "no-python")})
    assert gone["python_version"] == ""


def test_files_with_an_owner_that_does_not_exist_yet(run_module, tmp_path):
    """role app's configure step of a first deploy in check mode: the .env file is reported with its
    owner and directory not there yet, nothing is written; a real call fails with the clear message."""
    env = tmp_path / "opt" / "refapp" / "shared" / "config" / ".env"
    args = {"files": [{"path": str(env), "content": "TOKEN=s3cret\n", "owner": "no-such-user-here",
                       "group": "no-such-group-here", "mode": "0600"}]}
    predicted = run_module(app_files, args, check_mode=True, diff=True)
    assert predicted["_rc"] == 0 and predicted["changed"] and predicted["changed_files"] == [str(env)]
    assert "owner 'no-such-user-here' does not exist yet" in predicted["reasons"][str(env)]
    assert predicted["diff"]["before"].startswith(f"{env}: missing, owner 'no-such-user-here' does not exist yet")
    assert "s3cret" not in predicted["_raw"] and not (tmp_path / "opt").exists()
    env.parent.mkdir(parents=True)
    refused = run_module(app_files, args)
    assert refused["_rc"] == 1 and refused["msg"] == (
        f"app_files: {env}: owner 'no-such-user-here' does not exist on this host; create the app user first")
    assert list(env.parent.iterdir()) == []


@pytest.mark.parametrize(("args", "message"), [
    ({"action": "create", "version": "1.0"}, "missing: wheelhouse"),
    ({"action": "activate"}, "release, version"),
    ({"action": "mark"}, "outcome"),
    ({"action": "prune", "keep": 0}, "keep at least 1"),
    ({"action": "explode"}, "value of action must be one of"),
    ({"action": "activate", "release": "nope-20250101T000000Z"}, "does not exist"),
])  # fmt: skip
def test_release_bad_arguments_fail_with_a_message(run_module, tmp_path, args, message):
    result = run_module(app_release, {"path": str(tmp_path / "app"), **args})
    assert result["failed"] and message in result["msg"], result["msg"]


def test_release_stale_lock_is_reported_and_broken_with_force_unlock(run_module, tmp_path):
    path = str(tmp_path / "app")
    base = {"path": path, "action": "lock", "lock_owner": "bob", "lock_host": "ctl"}
    run_module(app_release, {**base, "lock_owner": "alice"})
    lock_file = Path(path, "deploy.lock")
    holder = json.loads(lock_file.read_text())
    holder["epoch"] -= 3600  # taken an hour ago
    lock_file.write_text(json.dumps(holder))
    stale = run_module(app_release, base)
    assert stale["failed"] and stale["stale"] is True and "-e force_unlock=true" in stale["msg"]
    broken = run_module(app_release, {**base, "force_unlock": True})
    assert broken["changed"] and broken["broken"]["owner"] == "alice" and broken["lock"]["owner"] == "bob"


# -- app_health --------------------------------------------------------------------------


def test_health_healthy_result(run_module, http_server):
    url = http_server.route("/ready", body='{"version": "2.0"}')
    result = run_module(app_health, {
        "http": [{"url": url, "json_field": "version", "json_value": "2.0"}],
        "thresholds": {"disk": {"paths": ["/"], "warning": 100, "critical": 100}},
    })
    assert result["_rc"] == 0 and result["changed"] is False and result["status"] == "healthy"
    assert [c["kind"] for c in result["checks"]] == ["http", "disk"]
    assert result["attempts"] == 1 and result["failed_checks"] == []
    assert {"name", "kind", "status", "detail", "duration"} <= set(result["checks"][0])


def test_health_failure_names_the_failing_checks_and_hides_header_values(run_module, http_server):
    url = http_server.route("/ready", status=503, body="warming up", require_header=("X-Token", "t0ps3cret"))
    closed = f"127.0.0.1:{free_port()}"
    result = run_module(app_health, {"http": [{"url": url, "headers": {"X-Token": "t0ps3cret"}}], "tcp": [closed],
                                     "retries": 2, "delay": 0.05, "deadline": 5})  # fmt: skip
    assert result["failed"] and result["_rc"] == 1 and result["status"] == "unhealthy"
    assert url in result["msg"] and f"tcp:{closed}" in result["msg"] and "got 503" in result["msg"]
    assert result["msg"].startswith("health is unhealthy, worse than min_status=healthy, after 3 attempt(s)")
    assert result["attempts"] == 3
    assert "t0ps3cret" not in result["_raw"]
    assert http_server.server.requests[-1][1].get("X-Token") == "t0ps3cret"


def test_health_min_status_degraded_accepts_degraded(run_module, http_server):
    args = {"http": [{"url": http_server.route("/")}], "thresholds": {"memory": {"warning": 0, "critical": 100}}}
    assert run_module(app_health, args)["failed"]
    result = run_module(app_health, {**args, "min_status": "degraded"})
    assert not result.get("failed") and result["status"] == "degraded" and result["failed_checks"] == ["memory"]


def test_health_runs_in_check_mode(run_module, http_server):
    result = run_module(app_health, {"http": [{"url": http_server.route("/")}]}, check_mode=True)
    assert result["status"] == "healthy" and not result.get("skipped")


def test_health_nothing_to_check_is_an_error(run_module):
    result = run_module(app_health, {})
    assert result["failed"] and "could not check: nothing to check" in result["msg"]


# -- documentation = argument spec ---------------------------------------------------------


def _doc_options(options: dict) -> dict:
    out = {}
    for name, spec in options.items():
        entry = {"type": spec.get("type", "str"), "default": spec.get("default"), "choices": spec.get("choices"),
                 "required": spec.get("required", False), "elements": spec.get("elements")}  # fmt: skip
        if "suboptions" in spec:
            entry["options"] = _doc_options(spec["suboptions"])
        out[name] = entry
    return out


def _spec_options(spec: dict) -> dict:
    out = {}
    for name, item in spec.items():
        entry = {"type": item.get("type", "str"), "default": item.get("default"), "choices": item.get("choices"),
                 "required": item.get("required", False), "elements": item.get("elements")}  # fmt: skip
        if "options" in item:
            entry["options"] = _spec_options(item["options"])
        out[name] = entry
    return out


def _with_fragments(doc: dict) -> dict:
    """The module's options plus those of its doc fragments (plugins/doc_fragments/<name>.py)."""
    options = dict(doc["options"])
    for name in doc.get("extends_documentation_fragment") or []:
        source = FRAGMENTS / f"{name}.py"
        scope: dict = {}
        exec(compile(source.read_text(), str(source), "exec"), scope)  # noqa: S102 -- our own plugin file
        fragment = yaml.safe_load(scope["ModuleDocFragment"].DOCUMENTATION)
        assert not set(fragment["options"]) & set(options), f"{name} repeats options the module documents"
        options.update(fragment["options"])
    return options


@pytest.mark.parametrize("module", [app_release, app_health, app_deploy, app_files])
def test_documentation_matches_the_argument_spec(module):
    doc = yaml.safe_load(module.DOCUMENTATION)
    assert _doc_options(_with_fragments(doc)) == _spec_options(module.argument_spec())
    assert doc["attributes"]["check_mode"]["support"] == "full"
    yaml.safe_load(module.EXAMPLES)
    assert yaml.safe_load(module.RETURN)
