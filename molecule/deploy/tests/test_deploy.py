"""deploy scenario: 1.0.0 then 2.0.0 deployed by playbooks/deploy.yml, checked by behaviour."""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = "/opt/refapp"


def http(host, path, token=None):
    """GET from inside the host; returns (status, body)."""
    hdr = f", headers={{'Authorization': 'Bearer ' + {token!r}}}" if token else ""
    code = (
        "import urllib.request, urllib.error, sys\n"
        f"req = urllib.request.Request('http://127.0.0.1:8000{path}'{hdr})\n"
        "try:\n r = urllib.request.urlopen(req, timeout=5); print(r.status); print(r.read().decode())\n"
        "except urllib.error.HTTPError as e:\n print(e.code); print(e.read().decode())\n"
    )
    out = host.check_output(f"python3 -c {shlex.quote(code)}")
    status, _, body = out.partition("\n")
    return int(status), body


def journal(host):
    return host.run("journalctl -u refapp-web --no-pager -n 40").stdout


def ledger(host):
    return [json.loads(line) for line in host.file(f"{ROOT}/ledger.jsonl").content_string.splitlines()]


def test_new_release_serves(host):
    status, body = http(host, "/api/health/readiness")
    assert status == 200, journal(host)
    assert json.loads(body)["version"] == "2.0.0"
    assert host.service("refapp-web").is_running
    assert host.socket("tcp://0.0.0.0:8000").is_listening


def test_current_is_atomic_symlink_to_v2_and_v1_kept(host):
    current = host.file(f"{ROOT}/current")
    assert current.is_symlink
    assert re.fullmatch(r"releases/2\.0\.0-\d{8}T\d{6}Z", current.linked_to.replace(ROOT + "/", ""))
    releases = host.check_output(f"ls {ROOT}/releases").split()
    assert any(r.startswith("1.0.0-") for r in releases)


def test_ledger_records_both_deploys_good(host):
    marks = [(e["version"], e["outcome"]) for e in ledger(host) if e["action"] == "mark"]
    assert ("1.0.0", "good") in marks and ("2.0.0", "good") in marks
    activations = [e for e in ledger(host) if e["action"] == "activate"]
    assert activations[-1]["version"] == "2.0.0"
    assert all(len(e["wheelhouse_sha256"]) == 64 for e in activations)


def test_release_tree_is_read_only_for_the_app(host):
    release = host.file(f"{ROOT}/current").linked_to
    assert host.run(f"runuser -u refapp -- touch {release}/venv/probe").rc != 0
    assert host.run(f"runuser -u refapp -- touch {ROOT}/shared/data/probe").rc == 0


def test_env_file_private_and_token_enforced(host):
    env = host.file(f"{ROOT}/shared/config/.env")
    assert (env.user, env.mode) == ("refapp", 0o600)
    token = re.search(r"^APP_HEALTH_TOKEN=(\S+)$", env.content_string, re.M).group(1)
    assert http(host, "/api/health/detailed")[0] == 401
    assert http(host, "/api/health/detailed", token="wrong" + token)[0] == 401
    status, body = http(host, "/api/health/detailed", token=token)
    assert status == 200 and json.loads(body)["version"] == "2.0.0"
    assert token not in journal(host)  # the secret never reaches the logs


def test_unit_exposure_on_the_host(host):
    # systemd 252 on Debian 12, the running unit (PrivateUsers off in containers: 1.3)
    out = host.check_output("systemd-analyze security refapp-web.service | tail -1")
    score = float(re.search(r"exposure level for refapp-web.service: ([\d.]+)", out).group(1))
    assert score <= 2.0, out


@pytest.mark.parametrize("prop, value", [
    ("Restart", "on-failure"), ("MemoryMax", str(512 * 1024 * 1024)), ("User", "refapp"),
    ("ProtectSystem", "strict"), ("NoNewPrivileges", "yes"),
])
def test_unit_properties_in_force(host, prop, value):
    assert host.check_output(f"systemctl show -P {prop} refapp-web.service") == value


def test_ops_agent_health_cli_on_the_host(host):
    """site.yml shipped the ops agent: the same health logic as app_health, as a CLI.
    (Runs before the kill -9 test: a restarted unit reports degraded, exit 1.)"""
    base = ("tradeops-health --url http://127.0.0.1:8000/api/health/readiness --json-field version "
            "--unit refapp-web.service --json --json-value ")
    ok = host.run(base + "2.0.0")
    assert ok.rc == 0, ok.stdout + ok.stderr
    assert json.loads(ok.stdout)["status"] == "healthy"
    wrong = host.run(base + "9.9.9")
    assert wrong.rc == 2  # unhealthy: another version serves
    assert host.run("tradeops-health --no-such-flag").rc == 3  # could not check
    listing = host.run("tradeops-release --path /opt/refapp list")
    assert listing.rc == 0 and "2.0.0" in listing.stdout


def test_kill_9_is_restarted_by_systemd(host):
    pid = host.check_output("systemctl show -P MainPID refapp-web.service")
    host.run_expect([0], f"kill -9 {pid}")
    # RestartSec=2 + start: readiness back within the health gate's budget
    probe = "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/api/health/readiness', timeout=2)"
    host.run_expect([0], f"for i in $(seq 1 40); do python3 -c {shlex.quote(probe)} 2>/dev/null && exit 0; "
                         "sleep 0.5; done; exit 1")
    assert host.check_output("systemctl show -P MainPID refapp-web.service") != pid
    assert int(host.check_output("systemctl show -P NRestarts refapp-web.service")) >= 1


def test_check_mode_deploy_changes_nothing(host):
    """deploy.yml --check reports what it would do and leaves the host as it was."""
    before = (host.check_output(f"ls {ROOT}/releases"), host.file(f"{ROOT}/current").linked_to,
              host.file(f"{ROOT}/ledger.jsonl").content_string)
    inventory = str(Path(os.environ["MOLECULE_INVENTORY_FILE"]).parent)
    project = Path(os.environ["MOLECULE_PROJECT_DIRECTORY"])
    proc = subprocess.run([str(Path(sys.executable).with_name("ansible-playbook")), "-i", inventory,
                           "--check", "--limit", host.backend.host, str(project / "playbooks" / "deploy.yml"),
                           "-e", "app_version=9.0.0"], capture_output=True, text=True, cwd=project, check=False,
                          env={**os.environ, "ANSIBLE_FORCE_COLOR": "0"})
    assert proc.returncode == 0, proc.stdout[-3000:]
    text = " ".join(proc.stdout.split())
    assert "check mode: would create release 9.0.0-" in text and "Nothing was changed" in text
    after = (host.check_output(f"ls {ROOT}/releases"), host.file(f"{ROOT}/current").linked_to,
             host.file(f"{ROOT}/ledger.jsonl").content_string)
    assert after == before

