"""j. A wrong vault password: site.yml with a vault-encrypted vars file (host_vars of app1 in a
copy of the chaos inventory, encrypted at test time with a generated password; nothing of it is
committed) and a --vault-password-file holding another generated password.

Pass: the encrypted file decrypts with its own password (control: ansible-inventory shows the
variable), and with the wrong one site.yml fails naming the decryption, before any task runs
on a host (no task result in its output); nothing changed on the hosts: the live
configuration trees (nginx, Prometheus, PostgreSQL, the app's units and environment) have the
same checksums, the main PIDs of nginx, Prometheus, PostgreSQL and refapp-web are the same, and
the "nothing lost" state (ledgers, releases, rows, backups) holds.
"""
from __future__ import annotations

import json
import re
import secrets
import shutil
import subprocess
from pathlib import Path

import pytest
from chaoslab import INVENTORY, ROOT, VENV_BIN, State, ansible_env, main_pid, playbook, record, tree_sum

WATCHED = {  # host: (config trees, units whose main PID must not change)
    "lb1": (["/etc/nginx"], ["nginx.service"]),
    "mon1": (["/etc/prometheus"], ["prometheus.service"]),
    "db1": (["/etc/postgresql"], ["postgresql@15-main.service"]),
    "app1": (["/etc/systemd/system", "/opt/refapp/shared/config"], ["refapp-web.service"]),
    "app2": (["/etc/systemd/system", "/opt/refapp/shared/config"], ["refapp-web.service"]),
}


def snapshot() -> dict[str, object]:
    return {f"{host}:{path}": tree_sum(host, path) for host, (paths, _) in WATCHED.items() for path in paths} | \
        {f"{host}:{unit}": main_pid(host, unit) for host, (_, units) in WATCHED.items() for unit in units}


def test_wrong_vault_password_fails_before_any_task(state: State, tmp_path: Path) -> None:
    inventory = tmp_path / "inventory"
    inventory.mkdir()
    shutil.copy(INVENTORY / "hosts.yml", inventory / "hosts.yml")
    (inventory / "group_vars").symlink_to(ROOT / "inventory" / "lab" / "group_vars")
    (inventory / "host_vars").mkdir()
    right, wrong = tmp_path / "vault-right", tmp_path / "vault-wrong"
    for path in (right, wrong):
        path.write_text(secrets.token_urlsafe(24) + "\n")
        path.chmod(0o600)
    vars_file = inventory / "host_vars" / "app1.yml"
    vars_file.write_text("chaos_vault_probe: decrypted\n")
    vars_file.chmod(0o600)
    subprocess.run([str(VENV_BIN / "ansible-vault"), "encrypt", "--vault-password-file", str(right), str(vars_file)],
                   check=True, capture_output=True, env=ansible_env())
    assert vars_file.read_text().startswith("$ANSIBLE_VAULT;"), "the vars file is not vault-encrypted"
    control = subprocess.run([str(VENV_BIN / "ansible-inventory"), "-i", str(inventory), "--host", "app1",
                              "--vault-password-file", str(right)], capture_output=True, text=True, check=False,
                             env=ansible_env(), cwd=ROOT)
    assert control.returncode == 0 and json.loads(control.stdout).get("chaos_vault_probe") == "decrypted", \
        control.stderr[-2000:]

    before = snapshot()
    proc = playbook("site.yml", args=("--vault-password-file", str(wrong)), inventory=inventory)
    after = snapshot()
    assert proc.returncode != 0, "site.yml with a wrong vault password must fail"
    assert re.search(r"[Dd]ecryption failed", proc.text), proc.text[-3000:]
    results = re.findall(r"^(ok|changed|fatal|skipping|failed): \[", proc.stdout, flags=re.MULTILINE)
    assert not results, f"tasks ran on hosts before the vault failure: {results[:10]}\n{proc.stdout[-3000:]}"
    assert after == before, {k: (before[k], after[k]) for k in before if before[k] != after[k]}
    record("j_wrong_vault_password", playbook_s=round(proc.seconds, 1), rc=proc.returncode,
           task_results=len(results), watched=sorted(before),
           error=(re.search(r"[^.]*[Dd]ecryption failed[^.]*", proc.text) or [""])[0][:200])
    state.check()


@pytest.fixture(autouse=True)
def _no_vault_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No vault password from the environment: only the file given on the command line counts."""
    for name in ("ANSIBLE_VAULT_PASSWORD_FILE", "ANSIBLE_VAULT_IDENTITY_LIST"):
        monkeypatch.delenv(name, raising=False)
