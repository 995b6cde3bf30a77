"""k. app2's network cut mid-rollout (a variant of g): `docker network disconnect` of app2 from the
lab's network once app1's deploy is on its ledger, then `docker network connect` (same alias,
same address) after the play. Ansible still reaches app2 (the docker connection needs no
network), but app2 reaches nothing (db1, lb1) and its name leaves the lab's DNS.

Pass (the right behaviour): the play fails and the rollout stops (app2 does not switch to a
release it cannot serve), app1 is consistent (complete new release, serving, lock released)
and back in lb1's upstream, lb1 keeps serving through app1 while app2 is cut off, and a re-run
after the reconnect converges both hosts on the new release.

Runs last (its name). Until 8bd4942 (roles/nginx: upstream servers by IP address from the
backends' facts) lb1's `nginx -t` refused every change once app2's name stopped resolving
("host not found in upstream"), so app1 could not be put back; this experiment was written as a
strict xfail for that and flipped (XPASS) on the first run with the change. The assertions come
after the reconnect and the re-run, so the lab is put right whatever fails.
"""
from __future__ import annotations

import json
import subprocess
import time

from chaoslab import (
    APP_ROOT,
    PREFIX,
    ROOT,
    State,
    ansible_env,
    current_release,
    lb_drained,
    ledger_has,
    out,
    playbook,
    playbook_cmd,
    record,
    served_version,
    sh,
    wait_on,
)

VERSION = "3.7.0"
NETWORK = "tradeops-chaos-net"  # scripts/lab.sh: tradeops-<LAB_ID>-net
def lb_serves(version: str) -> bool:
    code = ("import json,ssl,urllib.request as u;"
            "r=u.urlopen('https://lb1/api/version',timeout=5,context=ssl._create_unverified_context());"
            "print(json.load(r)['version'])")
    proc = sh("db1", f"python3 -c \"{code}\"", check=False)
    return proc.returncode == 0 and proc.stdout.strip() == version


def address(host: str) -> str:
    return subprocess.run(["docker", "inspect", "-f", "{{json .NetworkSettings.Networks}}", PREFIX + host],
                          capture_output=True, text=True, check=True).stdout


def test_app2_network_cut_mid_rollout(state: State, wheels: dict[str, str]) -> None:
    seen = len(state.ledgers["app1"])
    ip_before = json.loads(address("app2"))[NETWORK]["IPAddress"]
    proc = subprocess.Popen(playbook_cmd("deploy.yml", f"app_version={VERSION}", f"app_source={wheels[VERSION]}",
                                         "app_health_deadline=20"),
                            cwd=ROOT, env=ansible_env(), text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    cut = False
    t_start = time.monotonic()
    try:
        wait_on("app1", ledger_has(after=seen, action="summary", version=VERSION), timeout=600, poll=0.2)
        subprocess.run(["docker", "network", "disconnect", NETWORK, PREFIX + "app2"], check=True, capture_output=True)
        cut = True
        cut_at_s = time.monotonic() - t_start
        text, _ = proc.communicate(timeout=900)
        rollout_s = time.monotonic() - t_start
        # While app2 is still cut off: app1 consistent and back at lb1, lb1 serving through it.
        app1_release = current_release("app1")
        drained_while_cut = lb_drained()
        serving_while_cut = lb_serves(VERSION)
        app2_release = current_release("app2")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if cut:
            subprocess.run(["docker", "network", "connect", "--alias", "app2", NETWORK, PREFIX + "app2"],
                           check=True, capture_output=True)
    print(text[-5000:])
    flat = " ".join(text.split())
    ip_after = json.loads(address("app2"))[NETWORK]["IPAddress"]
    app1_lock = sh("app1", f"test -e {APP_ROOT}/deploy.lock", check=False).returncode == 0
    app1_serves = served_version("app1")
    nginx_refused = "host not found in upstream" in flat
    # After the reconnect: a re-run converges both (and puts back whatever was left drained).
    again = playbook("deploy.yml", f"app_version={VERSION}", f"app_source={wheels[VERSION]}")
    record("k_app2_network_cut", cut_after_s=round(cut_at_s, 1), rollout_s=round(rollout_s, 1),
           rerun_s=round(again.seconds, 1), rerun_rc=again.returncode, drained_while_cut=drained_while_cut,
           lb_served_while_cut=serving_while_cut, nginx_t_refused_upstream=nginx_refused,
           app2_failed_at=next((t for t, m in (("migration", "migration refapp migrate failed"),
                                               ("health gate", "failed its health gate"),
                                               ("nginx -t", "nginx -t")) if m in flat), "other"))
    assert ip_after == ip_before, f"app2 came back as {ip_after}, not {ip_before}: the firewalls name the old one"
    assert proc.returncode != 0, "a rollout to a host that lost its network must fail"
    assert app1_release.rsplit("/", 1)[-1].startswith(VERSION + "-"), app1_release
    assert app1_serves == VERSION, f"app1 served {app1_serves} after the rollout stopped"
    assert not app1_lock, "app1 kept its lock"
    assert app2_release == state.releases["app2"], f"app2 switched to {app2_release} while cut off"
    assert again.returncode == 0, again.text[-3000:]
    state.check(version=VERSION)
    assert "app1" not in drained_while_cut and not nginx_refused, \
        f"app1 left drained at lb1 while app2 was cut off ({drained_while_cut}; nginx -t refused: {nginx_refused})"
    assert serving_while_cut, f"lb1 did not serve {VERSION} (through app1) while app2 was cut off"
    assert out("lb1", "nginx -t 2>&1; echo rc=$?").endswith("rc=0")
