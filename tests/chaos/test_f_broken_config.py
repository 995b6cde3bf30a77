"""f. A broken nginx template (an invalid directive through nginx_site_extra_config) and a
Prometheus rule with a syntax error (prometheus_extra_rules), applied with site.yml.

Pass: the play fails naming the check that refused it, nothing is reloaded and the running
configuration is intact: same checksum of the live files, same master/main PID, the service
still answers (through lb1, and Prometheus's last reload time unchanged).
"""
from __future__ import annotations

import json

from chaoslab import State, get_json, main_pid, out, playbook, record, sh, tree_sum

NGINX_STAGING = "/etc/nginx/tradeops"  # roles/nginx: staging (the candidate nginx -t tests), state, scratch
PROMETHEUS_STAGING = "/etc/prometheus/tradeops-staging"  # roles/prometheus: what promtool checks


def test_broken_nginx_config_nothing_reloaded(state: State) -> None:
    before = {"sum": tree_sum("lb1", "/etc/nginx", NGINX_STAGING), "pid": main_pid("lb1", "nginx.service"),
              "workers": out("lb1", "pgrep -d, -xf 'nginx: worker process'")}
    extra = json.dumps({"nginx_site_extra_config": "chaos_not_a_directive on;"})
    proc = playbook("site.yml", extra, args=("--limit", "lb1", "--tags", "nginx"))
    assert proc.returncode != 0, "a configuration nginx -t rejects must fail the play"
    assert "nginx -t" in proc.text and "chaos_not_a_directive" in proc.text, proc.text[-3000:]
    after = {"sum": tree_sum("lb1", "/etc/nginx", NGINX_STAGING), "pid": main_pid("lb1", "nginx.service"),
             "workers": out("lb1", "pgrep -d, -xf 'nginx: worker process'")}
    assert after == before, f"nginx was changed or reloaded: {before} -> {after}"
    assert sh("db1", "python3 -c \"import ssl,urllib.request as u;"
              "u.urlopen('https://lb1/api/version',timeout=5,context=ssl._create_unverified_context())\"",
              check=False).returncode == 0, "lb1 no longer serves"
    record("f_broken_nginx", playbook_s=round(proc.seconds, 1), master_pid=before["pid"])
    state.check()


def test_broken_prometheus_rule_nothing_reloaded(state: State) -> None:
    def reload_time() -> float:
        data = get_json("mon1", "http://127.0.0.1:9090/api/v1/query?query="
                        "prometheus_config_last_reload_success_timestamp_seconds")
        return float(data["data"]["result"][0]["value"][1])

    def snapshot() -> dict[str, object]:
        return {"sum": tree_sum("mon1", "/etc/prometheus", PROMETHEUS_STAGING),
                "pid": main_pid("mon1", "prometheus.service"), "reload": reload_time()}

    before = snapshot()
    rules = json.dumps({"prometheus_extra_rules": [{"alert": "ChaosBroken", "expr": "rate(up[5m] > 1",
                                                     "for": "1m"}]})
    proc = playbook("site.yml", rules, args=("--limit", "mon1", "--tags", "prometheus"))
    assert proc.returncode != 0, "a rule promtool rejects must fail the play"
    assert "promtool" in proc.text and "ChaosBroken" in proc.text and "parse error" in proc.text, proc.text[-3000:]
    after = snapshot()
    assert after == before, f"Prometheus was changed or reloaded: {before} -> {after}"
    rules_now = get_json("mon1", "http://127.0.0.1:9090/api/v1/rules")
    assert "ChaosBroken" not in json.dumps(rules_now)
    record("f_broken_prometheus_rule", playbook_s=round(proc.seconds, 1), main_pid=before["pid"])
    state.check()
