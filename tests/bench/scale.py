#!/usr/bin/env python3
"""Scale benchmark (issue 9): deploy.yml and an idempotent site.yml on 1, 2, 4, 8 application hosts, and
the Ansible settings that move them.

Starts its own lab (LAB_ID=bench-scale: lb1 and app1..appN, the reference app on SQLite, never the main
lab). For each host count N (the load balancer always included):

  converge   site.yml then deploy.yml of the current version on the N hosts (not timed: new hosts)
  site       site.yml again: nothing to change (the cost of keeping N hosts converged)
  deploy     deploy.yml of a new version: health-gated, one host at a time (app_serial 1, or --serial's plan),
             drained at lb1
             (N=1: nginx_backend_force, as draining the only backend is refused otherwise)
             without the soak (app_soak_seconds=0: a fixed wait per host, not a cost of Ansible)

It prints each median, seconds per application host and the growth against N=1, and the controller's CPU
seconds of each run (user + system of ansible-playbook and every process it waited for: its workers, the
modules run locally, the docker exec clients; not the hosts' side), the figure docs/scale.md extrapolates
from. ``--mitogen`` runs every playbook under Mitogen for Ansible (as make molecule does). Then, at one host count,
an idempotent site.yml under each setting, as a ratio of ansible.cfg's (measured in the same run, the
settings taking turns round by round): pipelining off, forks 5 (and 20 above 10 hosts), the free strategy,
and the community.docker.docker_api connection (a persistent Docker API client per host, where the lab's
community.docker.docker runs a docker exec per command).

    tests/bench/scale.py [--counts 1,2,4,8] [--runs 3] [--settings-at 4] [--settings-runs 3] [--mitogen]
                         [--keep-lab]

Figures also go to .cache/results/scale.json (scripts/results.py: docs/results.md).
Slow: about (counts x runs) site.yml runs.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
from pathlib import Path

from benchlib import LAB, StepFailed, ansible_env, lab_env, median, playbook, save_results, sh, timed, write_inventory

LAB_ID = "bench-scale"
CFG_FORKS = 10  # ansible.cfg's forks


def settings_for(hosts: int) -> dict[str, tuple[dict[str, str], list[str]]]:
    """The settings compared on ``hosts`` hosts (the LB included): name -> (environment, extra arguments).
    More forks than hosts changes nothing, so forks 20 is measured only where ansible.cfg's 10 makes a
    second batch. The persistent-connection candidate is community.docker.docker_api: one Docker API
    client per host instead of a ``docker exec`` process per command."""
    out: dict[str, tuple[dict[str, str], list[str]]] = {
        f"ansible.cfg (pipelining on, forks {CFG_FORKS}, linear)": ({}, []),
        "pipelining off": ({"ANSIBLE_PIPELINING": "false"}, []),
        "forks 5": ({"ANSIBLE_FORKS": "5"}, [])}
    if hosts > CFG_FORKS:
        out["forks 20"] = ({"ANSIBLE_FORKS": "20"}, [])
    out["strategy free"] = ({"ANSIBLE_STRATEGY": "free"}, [])
    out["connection docker_api"] = ({}, ["-e", "ansible_connection=community.docker.docker_api"])
    return out


def failure_reason(text: str) -> str:
    """The line of a failed ansible-playbook run that says why: its first fatal/ERROR line and what follows it on
    the same task, else its last non-empty line."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for index, line in enumerate(lines):
        if line.startswith(("fatal:", "ERROR!", "[ERROR]")) or "UNREACHABLE!" in line:
            return " ".join(lines[index:index + 4])[:400]
    return lines[-1][:400] if lines else "(no output)"


def children_cpu() -> float:
    """CPU seconds (user + system) of every child process this one has waited for so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def loaded(func, *args, cpu: list[float] | None = None):
    """(seconds, the machine's 1-minute load when the run started) of one timed run; its controller CPU
    seconds appended to ``cpu`` when given."""
    load = os.getloadavg()[0]
    before = children_cpu()
    secs = timed(func, *args)[0]
    if cpu is not None:
        cpu.append(children_cpu() - before)
    return secs, load


def mitogen_env() -> dict[str, str]:
    """The environment scripts/run_molecule.sh sets: Mitogen's strategy for every run."""
    import ansible_mitogen

    strategy = Path(ansible_mitogen.__file__).parent / "plugins" / "strategy"
    return {"ANSIBLE_STRATEGY_PLUGINS": str(strategy), "ANSIBLE_STRATEGY": "mitogen_linear"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--counts", default="1,2,4,8", help="application host counts (1,2,4,8)")
    ap.add_argument("--runs", type=int, default=3, help="timed runs per count and kind; medians printed (3)")
    ap.add_argument("--settings-at", type=int, help="host count of the settings comparison (the largest)")
    ap.add_argument("--settings-runs", type=int, default=3, help="runs per setting (3); 0 skips the comparison")
    ap.add_argument("--keep-lab", action="store_true", help="leave the bench lab running")
    ap.add_argument("--mitogen", action="store_true", help="every playbook under Mitogen for Ansible")
    ap.add_argument("--serial", default="1",
                    help='app_serial of the timed deploys as JSON: 1 (default), or a plan: \'[1, "25%%", "50%%"]\'')
    args = ap.parse_args()
    counts = sorted({int(c) for c in args.counts.split(",")})
    if counts[0] < 1 or args.runs < 1:
        ap.error("--counts must be positive and --runs at least 1")
    at = args.settings_at or counts[-1]
    if at not in counts:
        ap.error("--settings-at must be one of --counts")
    apps = [f"app{i}" for i in range(1, counts[-1] + 1)]
    tmp = Path(tempfile.mkdtemp(prefix="tradeops-bench-scale-"))
    env = ansible_env(tmp, **(mitogen_env() if args.mitogen else {}))
    connection = "docker" if args.mitogen else "community.docker.docker"
    figures: dict[str, dict[str, list[float]]] = {}
    settings: dict[str, list[float]] = {}
    loads: list[float] = []
    failed: dict[str, str] = {}
    version = "1.0.0"
    serial = 0
    try:
        sh([str(LAB), "up"], lab_env(LAB_ID, ["lb1", *apps]))
        for n in counts:
            inv = write_inventory(tmp / f"n{n}", LAB_ID, {"lb": ["lb1"], "app": apps[:n]}, connection)
            # One host behind the LB: draining it leaves no backend, which deploy.yml refuses unless
            # forced; forced, the same steps run (and are timed) as with more hosts.
            deploy_vars = ["-e", "nginx_backend_force=true"] if n == 1 else []
            deploy_vars += ["-e", "app_soak_seconds=0", "-e", json.dumps({"app_serial": json.loads(args.serial)})]
            playbook(inv, env, "playbooks/site.yml")
            playbook(inv, env, "playbooks/deploy.yml", "-e", f"app_version={version}", *deploy_vars)
            kinds = figures.setdefault(str(n), {"site": [], "deploy": [], "site cpu": [], "deploy cpu": []})
            for _ in range(args.runs):
                secs, load = loaded(playbook, inv, env, "playbooks/site.yml", cpu=kinds["site cpu"])
                kinds["site"].append(secs)
                loads.append(load)
                serial += 1
                version = f"1.1.{serial}"
                secs, load = loaded(playbook, inv, env, "playbooks/deploy.yml", "-e", f"app_version={version}",
                                    *deploy_vars, cpu=kinds["deploy cpu"])
                kinds["deploy"].append(secs)
                loads.append(load)
            print(f"  {n} app host(s): site {median(kinds['site']):.1f} s, deploy {median(kinds['deploy']):.1f} s"
                  f" (load {min(loads[-2 * args.runs:]):.1f}-{max(loads[-2 * args.runs:]):.1f})", flush=True)
            report(args, counts[:counts.index(n) + 1], figures, settings, at, loads)
            if n == at:
                # Round-robin: each round runs every setting once, so a change of the machine's load
                # during the comparison moves all settings alike instead of favouring the later ones.
                for _ in range(args.settings_runs):
                    for name, (extra, extra_args) in settings_for(n + 1).items():
                        if name in failed:
                            continue
                        try:
                            secs, load = loaded(playbook, inv, {**env, **extra}, "playbooks/site.yml", *extra_args)
                        except StepFailed as exc:  # a setting that does not work here is reported, not timed
                            failed[name] = failure_reason(str(exc))
                            print(f"    {name}: FAILED, not compared: {failed[name]}", flush=True)
                            continue
                        settings.setdefault(name, []).append(secs)
                        loads.append(load)
                        print(f"    {name}: {secs:.1f} s (load {load:.1f})", flush=True)
                report(args, counts[:counts.index(n) + 1], figures, settings, at, loads)
    finally:
        if not args.keep_lab:
            sh([str(LAB), "down"], lab_env(LAB_ID, []), check=False)
    return 0


def report(args: argparse.Namespace, counts: list[int], figures: dict[str, dict[str, list[float]]],
           settings: dict[str, list[float]], at: int, loads: list[float]) -> None:
    """Print the figures so far and save them (after every host count: a failure later keeps them)."""

    strategy = ("Mitogen (mitogen_linear)" if args.mitogen else "Ansible's linear strategy") + (
        f", deploys with app_serial {args.serial}" if args.serial != "1" else "")
    print(f"scale benchmark: lb1 + N application hosts, {strategy}, median of {args.runs} run(s) each")
    base = {k: median(v) for k, v in figures[str(counts[0])].items()}
    print(f"  {'hosts':>5}  {'site.yml (idempotent)':>30}  {'controller CPU':>22}  {'deploy.yml':>30}"
          f"  {'controller CPU':>22}")
    for n in counts:
        row = []
        for kind in ("site", "deploy"):
            m = median(figures[str(n)][kind])
            c = median(figures[str(n)][f"{kind} cpu"])
            row.append(f"{m:7.1f} s {m / n:5.1f} s/host x{m / base[kind]:4.2f}")
            row.append(f"{c:6.1f} s {c / (n + 1):5.2f} s/host")
        print(f"  {n:>5}  {row[0]:>30}  {row[1]:>22}  {row[2]:>30}  {row[3]:>22}")
    if settings:
        ref = median(next(iter(settings.values())))
        print(f"  settings, idempotent site.yml on {at} app host(s), median of {args.settings_runs}:")
        for name, values in settings.items():
            print(f"    {name:46s} {median(values):7.1f} s  x{median(values) / ref:4.2f}")
    table = {f"{n} app host(s)": {f"{kind} median s": round(median(figures[str(n)][kind]), 1) for kind in
                                  ("site", "deploy")}
             | {f"{kind} x N=1": round(median(figures[str(n)][kind]) / base[kind], 2) for kind in ("site", "deploy")}
             | {f"{kind} controller CPU s": round(median(figures[str(n)][f"{kind} cpu"]), 1)
                for kind in ("site", "deploy")}
             for n in counts}
    table["strategy"] = {"name": strategy}
    if settings:
        ref = median(next(iter(settings.values())))
        table |= {f"site.yml on {at}: {name}": {"median s": round(median(v), 1), "x ansible.cfg": round(
            median(v) / ref, 2)} for name, v in settings.items()}
    table["machine load (1 min) at the timed runs"] = {"min": round(min(loads), 1), "median": round(
        median(loads), 1), "max": round(max(loads), 1)}
    print(f"  load (1 min) at the timed runs: {min(loads):.1f}-{max(loads):.1f}, median {median(loads):.1f}")
    save_results("scale-mitogen" if args.mitogen else "scale",
                 f"Scale: lb1 + N app hosts, {strategy}, median of {args.runs} run(s)", table)


if __name__ == "__main__":
    sys.exit(main())
