#!/usr/bin/env python3
"""Scale benchmark (issue 9): deploy.yml and an idempotent site.yml on 1, 2, 4, 8 application hosts, and
the Ansible settings that move them.

Starts its own lab (LAB_ID=bench-scale: lb1 and app1..appN, the reference app on SQLite, never the main
lab). For each host count N (the load balancer always included):

  converge   site.yml then deploy.yml of the current version on the N hosts (not timed: new hosts)
  site       site.yml again: nothing to change (the cost of keeping N hosts converged)
  deploy     deploy.yml of a new version: health-gated, one host at a time (app_serial 1), drained at lb1
             (N=1: nginx_backend_force, as draining the only backend is refused otherwise)

It prints each median, seconds per application host and the growth against N=1. Then, at one host count,
an idempotent site.yml under each setting, as a ratio of ansible.cfg's (measured in the same run):
pipelining off, forks 5 and 20, the free strategy. A persistent connection is not measured: the
community.docker.docker connection used by the lab has none (each task is a docker exec).

    tests/bench/scale.py [--counts 1,2,4,8] [--runs 3] [--settings-at 4] [--settings-runs 3] [--keep-lab]

Figures also go to .cache/results/scale.json (scripts/results.py: docs/results.md).
Slow: about (counts x runs) site.yml runs.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from benchlib import LAB, ansible_env, lab_env, median, playbook, save_results, sh, timed, write_inventory

LAB_ID = "bench-scale"
SETTINGS = {
    "ansible.cfg (pipelining on, forks 10, linear)": {},
    "pipelining off": {"ANSIBLE_PIPELINING": "false"},
    "forks 5": {"ANSIBLE_FORKS": "5"},
    "forks 20": {"ANSIBLE_FORKS": "20"},
    "strategy free": {"ANSIBLE_STRATEGY": "free"},
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--counts", default="1,2,4,8", help="application host counts (1,2,4,8)")
    ap.add_argument("--runs", type=int, default=3, help="timed runs per count and kind; medians printed (3)")
    ap.add_argument("--settings-at", type=int, help="host count of the settings comparison (the largest)")
    ap.add_argument("--settings-runs", type=int, default=3, help="runs per setting (3); 0 skips the comparison")
    ap.add_argument("--keep-lab", action="store_true", help="leave the bench lab running")
    args = ap.parse_args()
    counts = sorted({int(c) for c in args.counts.split(",")})
    if counts[0] < 1 or args.runs < 1:
        ap.error("--counts must be positive and --runs at least 1")
    at = args.settings_at or counts[-1]
    if at not in counts:
        ap.error("--settings-at must be one of --counts")
    apps = [f"app{i}" for i in range(1, counts[-1] + 1)]
    tmp = Path(tempfile.mkdtemp(prefix="tradeops-bench-scale-"))
    env = ansible_env(tmp)
    figures: dict[str, dict[str, list[float]]] = {}
    settings: dict[str, list[float]] = {}
    version = "1.0.0"
    serial = 0
    try:
        sh([str(LAB), "up"], lab_env(LAB_ID, ["lb1", *apps]))
        for n in counts:
            inv = write_inventory(tmp / f"n{n}", LAB_ID, {"lb": ["lb1"], "app": apps[:n]})
            # One host behind the LB: draining it leaves no backend, which deploy.yml refuses unless
            # forced; forced, the same steps run (and are timed) as with more hosts.
            force = ["-e", "nginx_backend_force=true"] if n == 1 else []
            playbook(inv, env, "playbooks/site.yml")
            playbook(inv, env, "playbooks/deploy.yml", "-e", f"app_version={version}", *force)
            kinds = figures.setdefault(str(n), {"site": [], "deploy": []})
            for _ in range(args.runs):
                kinds["site"].append(timed(playbook, inv, env, "playbooks/site.yml")[0])
                serial += 1
                version = f"1.1.{serial}"
                kinds["deploy"].append(timed(playbook, inv, env, "playbooks/deploy.yml", "-e",
                                             f"app_version={version}", *force)[0])
            print(f"  {n} app host(s): site {median(kinds['site']):.1f} s, deploy {median(kinds['deploy']):.1f} s",
                  flush=True)
            if n == at:
                # Round-robin: each round runs every setting once, so a change of the machine's load
                # during the comparison moves all settings alike instead of favouring the later ones.
                for _ in range(args.settings_runs):
                    for name, extra in SETTINGS.items():
                        settings.setdefault(name, []).append(
                            timed(playbook, inv, {**env, **extra}, "playbooks/site.yml")[0])
    finally:
        if not args.keep_lab:
            sh([str(LAB), "down"], lab_env(LAB_ID, []), check=False)

    print(f"scale benchmark: lb1 + N application hosts, median of {args.runs} run(s) each")
    base = {k: median(v) for k, v in figures[str(counts[0])].items()}
    print(f"  {'hosts':>5}  {'site.yml (idempotent)':>30}  {'deploy.yml (serial 1)':>30}")
    for n in counts:
        row = []
        for kind in ("site", "deploy"):
            m = median(figures[str(n)][kind])
            row.append(f"{m:7.1f} s {m / n:5.1f} s/host x{m / base[kind]:4.2f}")
        print(f"  {n:>5}  {row[0]:>30}  {row[1]:>30}")
    if settings:
        ref = median(next(iter(settings.values())))
        print(f"  settings, idempotent site.yml on {at} app host(s), median of {args.settings_runs}:")
        for name, values in settings.items():
            print(f"    {name:46s} {median(values):7.1f} s  x{median(values) / ref:4.2f}")
        print("    persistent connection: not applicable (community.docker.docker has none)")
    table = {f"{n} app host(s)": {f"{kind} median s": round(median(figures[str(n)][kind]), 1) for kind in
                                  ("site", "deploy")}
             | {f"{kind} x N=1": round(median(figures[str(n)][kind]) / base[kind], 2) for kind in ("site", "deploy")}
             for n in counts}
    if settings:
        ref = median(next(iter(settings.values())))
        table |= {f"site.yml on {at}: {name}": {"median s": round(median(v), 1), "x ansible.cfg": round(
            median(v) / ref, 2)} for name, v in settings.items()}
    save_results("scale", f"Scale: lb1 + N app hosts, median of {args.runs} run(s)", table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
