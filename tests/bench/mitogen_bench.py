#!/usr/bin/env python3
"""Mitogen for Ansible against plain Ansible, A/B interleaved in one run, on two lab app hosts.

Is mitogen's strategy (mitogen_linear, its connection mitogen_docker) worth offering as an opt-in? Each
arm runs the same ansible-core from the same venv, on the same hosts, with the same fact cache and
secrets; only the strategy and the connection differ:

  plain     the project's settings (linear strategy, community.docker.docker, pipelining)
  mitogen   ANSIBLE_STRATEGY=mitogen_linear, ansible_connection: mitogen_docker (mitogen does not
            take over community.docker.docker: under its strategy that name runs Ansible's own
            connection, so it would measure nothing)

Starts its own lab (LAB_ID=benchmitogen unless --lab-id, hosts app1 and app2 on debian12-roles),
converges it (lab.yml) and deploys 1.0.0 with the plain arm, then each arm once more as a warm-up
(mitogen's first run pays its bootstrap), then RUNS rounds, the arm that goes first alternating
round by round (a busy shared machine slows both alike), of:

  lab       an idempotent playbooks/lab.yml on both hosts (nothing changes: the cost of a
            converge is the cost of its module round trips)
  deploy    deploy.yml of a version never deployed before (wheelhouse built on the controller,
            shipped, new release venv, switch, restart, health gate; serial 1, so one host after
            the other), app_soak_seconds=0 (the soak is a fixed wait, a policy not a cost)
  baseline  a one-task play (ping) on both hosts: the floor of any play, connection setup included

Prints the medians of each arm and the ratio mitogen / plain (below 1: mitogen is faster).
Needs mitogen importable by the Python that runs it (its venv's ansible-playbook is used for both
arms) and the collections of the project (ANSIBLE_COLLECTIONS_PATH when they are elsewhere).

    tests/bench/mitogen_bench.py [--runs 3] [--lab-id benchmitogen] [--keep-lab]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

from benchlib import LAB, ansible_env, lab_env, save_results, sh, timed_playbook, write_inventory

HOSTS = ["app1:debian12-roles", "app2:debian12-roles"]
KINDS = ("lab", "deploy", "baseline")
ARMS = ("plain", "mitogen")


def mitogen_strategy_dir() -> Path:
    try:
        import ansible_mitogen  # optional: only this benchmark needs it
    except ImportError:
        sys.exit(f"bench: mitogen is not installed for {sys.executable}: pip install mitogen into the venv "
                 "that runs this benchmark (its ansible-playbook runs both arms)")
    return Path(ansible_mitogen.__file__).parent / "plugins" / "strategy"


def arm_inventory(tmp: Path, arm: str, lab_id: str) -> Path:
    """tmp/<arm>/inventory: both at the same depth, so that the lab's secrets (inventory_dir/../../.cache/
    lab-secrets) are the same files for both arms and no run rewrites the other's configuration."""
    inv = write_inventory(tmp / arm, lab_id, {"app": [h.split(":")[0] for h in HOSTS]})
    if arm == "mitogen":
        hosts = inv / "hosts.yml"
        doc = json.loads(hosts.read_text())
        doc["all"]["vars"]["ansible_connection"] = "mitogen_docker"
        hosts.write_text(json.dumps(doc))
    return inv


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--lab-id", default="benchmitogen", help="LAB_ID of the benchmark's lab (default %(default)s)")
    ap.add_argument("--keep-lab", action="store_true", help="leave the bench lab running")
    args = ap.parse_args()
    strategy_dir = mitogen_strategy_dir()
    lab = lab_env(args.lab_id, HOSTS)
    tmp = Path(tempfile.mkdtemp(prefix="tradeops-bench-"))
    inv = {arm: arm_inventory(tmp, arm, args.lab_id) for arm in ARMS}
    common = ansible_env(tmp, TRADEOPS_SUMMARY_LOG=str(tmp / "summary.jsonl"))
    env = {"plain": common,
           "mitogen": {**common, "ANSIBLE_STRATEGY_PLUGINS": str(strategy_dir), "ANSIBLE_STRATEGY": "mitogen_linear"}}
    one = tmp / "one.yml"
    one.write_text(json.dumps([{"name": "One task", "hosts": "app", "gather_facts": False,
                                "tasks": [{"name": "Ping", "ansible.builtin.ping": {}}]}]))
    deploy = ["playbooks/deploy.yml", "-e", "app_soak_seconds=0"]

    def play(arm: str, *a: str) -> float:
        return timed_playbook(inv[arm], env[arm], *a)

    times: dict[str, dict[str, list[float]]] = {arm: {k: [] for k in KINDS} for arm in ARMS}
    sh([str(LAB), "up"], lab)
    try:
        play("plain", "playbooks/lab.yml")
        play("plain", *deploy, "-e", "app_version=1.0.0")
        for arm in ARMS:  # warm-up: facts cached, mitogen's first bootstrap paid, wheelhouse deps resolved
            play(arm, "playbooks/lab.yml")
            play(arm, str(one))
        version = 0
        for i in range(args.runs):
            for arm in ARMS if i % 2 == 0 else ARMS[::-1]:
                version += 1
                times[arm]["lab"].append(play(arm, "playbooks/lab.yml"))
                times[arm]["deploy"].append(play(arm, *deploy, "-e", f"app_version=1.3.{version}"))
                times[arm]["baseline"].append(play(arm, str(one)))
    finally:
        if not args.keep_lab:
            sh([str(LAB), "down"], lab, check=False)
    med = {arm: {k: statistics.median(v) for k, v in times[arm].items()} for arm in ARMS}
    print(f"mitogen benchmark: 2 lab app hosts, A/B interleaved, median of {args.runs} runs per arm")
    print(f"  {'':9s} {'plain':>8s} {'mitogen':>8s}   mitogen/plain   (runs: plain | mitogen)")
    for kind in KINDS:
        p, m = med["plain"][kind], med["mitogen"][kind]
        runs = " ".join(f"{t:.1f}" for t in times["plain"][kind]) + " | " + \
            " ".join(f"{t:.1f}" for t in times["mitogen"][kind])
        print(f"  {kind:9s} {p:7.2f}s {m:7.2f}s   {m / p:5.2f}x          ({runs})")
    save_results("mitogen", f"Mitogen (mitogen_linear + mitogen_docker) vs plain Ansible on 2 lab app hosts, "
                            f"interleaved, median of {args.runs} runs",
                 {kind: {"plain median s": round(med["plain"][kind], 2),
                         "mitogen median s": round(med["mitogen"][kind], 2),
                         "mitogen / plain": round(med["mitogen"][kind] / med["plain"][kind], 2)}
                  for kind in KINDS})
    return 0


if __name__ == "__main__":
    sys.exit(main())
