"""g. app2 made unreachable mid-rollout (its container frozen with docker pause: every process
stops, Ansible's docker connection fails, its name still resolves), once app1 has switched.

(docker stop instead removes app2's name from the lab's DNS: lb1's `nginx -t` then refuses
every upstream change ("host not found in upstream app2:8000") and app1 stays drained.)

Pass: the play fails and the rollout stops, app1 is consistent (a complete new release,
serving, lock released, ledger says deployed, back in lb1's upstream), lb1 keeps serving;
app2 unfrozen still serves the previous release, and a re-run converges both.
"""
from __future__ import annotations

import subprocess
import time

from chaoslab import (
    APP_ROOT,
    PREFIX,
    ROOT,
    State,
    ansible_env,
    current_release,
    ledger,
    playbook,
    playbook_cmd,
    record,
    served_version,
    sh,
)


def test_app2_unreachable_mid_rollout(state: State, wheels: dict[str, str]) -> None:
    version = "3.4.0"
    seen = len(state.ledgers["app1"])
    proc = subprocess.Popen(playbook_cmd("deploy.yml", f"app_version={version}", f"app_source={wheels[version]}"),
                            cwd=ROOT, env=ansible_env(), text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    stopped = False
    t_start = time.monotonic()
    try:
        deadline = time.monotonic() + 400
        while time.monotonic() < deadline and proc.poll() is None:
            done = [e for e in ledger("app1")[seen:] if e["action"] == "summary" and e["version"] == version]
            if done:
                subprocess.run(["docker", "pause", PREFIX + "app2"], check=True, capture_output=True)
                stopped = True
                break
            time.sleep(0.3)
        text, _ = proc.communicate(timeout=600)
        rollout_s = time.monotonic() - t_start
    finally:
        if proc.poll() is None:
            proc.kill()
        if stopped:
            subprocess.run(["docker", "unpause", PREFIX + "app2"], check=True, capture_output=True)
    print(text[-5000:])
    assert stopped, "app1's deploy was never recorded: app2 could not be stopped mid-rollout"
    flat = " ".join(text.split())
    assert proc.returncode != 0, "a rollout with an unreachable host must fail"
    assert "UNREACHABLE" in flat or "unreachable" in flat.lower(), flat[-3000:]
    # app1: consistent on the new release
    assert current_release("app1").rsplit("/", 1)[-1].startswith(version + "-")
    assert served_version("app1") == version
    assert sh("app1", f"test -e {APP_ROOT}/deploy.lock", check=False).returncode != 0, "app1 kept its lock"
    # app2 once it runs again: the previous release, complete and serving
    t0 = time.monotonic()
    while sh("app2", "systemctl is-active refapp-web.service", check=False).stdout.strip() != "active":
        assert time.monotonic() - t0 < 120, "app2's service did not come back after the pause"
        time.sleep(1)
    assert current_release("app2") == state.releases["app2"]
    again = playbook("deploy.yml", f"app_version={version}", f"app_source={wheels[version]}")
    assert again.returncode == 0, again.text[-3000:]
    record("g_app2_unreachable", rollout_s=round(rollout_s, 1), rerun_s=round(again.seconds, 1))
    state.check(version=version)
