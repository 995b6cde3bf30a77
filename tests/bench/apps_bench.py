#!/usr/bin/env python3
"""Re-deploy of an unchanged third-party application with a 40-package dependency tree, against the
reference app's re-deploy on the same lab host, in the same run.

Starts its own one-host lab (LAB_ID=benchapps, never the main lab), converges it with site.yml, deploys the
reference app and datasette 0.65.5 from PyPI with three plugins (app_requirements: datasette-graphql,
datasette-cluster-map, datasette-vega: 40 distributions, PyYAML/MarkupSafe compiled), then times RUNS
repetitions of:

  refapp      deploy.yml of the serving reference-app release again (nothing changes)
  datasette   the same for datasette (its wheelhouse rebuilt? no: reused; shipped? no: already there)
  baseline    a one-task play against the same host (the floor of any play)

Prints medians, the ratio datasette / refapp (issue 19's bound: 1.5) and both against the baseline.

    tests/bench/apps_bench.py [--runs 5] [--keep-lab]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

from benchlib import LAB, ROOT, VENV_BIN, ansible_env, lab_env, save_results, sh, timed_playbook, write_inventory

LAB_ID = "benchapps"
LAB_ENV = lab_env(LAB_ID, ["app1"])
WHEELS = ROOT / ".cache" / "pypi-apps"
DATASETTE = "0.65.5"
PLUGINS = ["datasette-graphql", "datasette-cluster-map", "datasette-vega"]


def datasette_wheel() -> Path:
    found = sorted(WHEELS.glob(f"datasette-{DATASETTE}-*.whl"))
    if not found:
        sh([str(VENV_BIN / "python"), "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
            "--disable-pip-version-check", "--dest", str(WHEELS), f"datasette=={DATASETTE}"])
        found = sorted(WHEELS.glob(f"datasette-{DATASETTE}-*.whl"))
    return found[0]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--keep-lab", action="store_true", help="leave the bench lab running")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="tradeops-bench-"))
    inv = write_inventory(tmp, LAB_ID, {"app": ["app1"]})
    env = ansible_env(tmp)
    (tmp / "one.yml").write_text(json.dumps([{"name": "One task", "hosts": "app", "gather_facts": False,
                                              "tasks": [{"name": "Ping", "ansible.builtin.ping": {}}]}]))
    ds_vars = ["-e", f"@{ROOT / 'molecule' / 'apps' / 'apps' / 'datasette.yml'}",
               "-e", json.dumps({"app_requirements": PLUGINS, "app_version": DATASETTE,
                                 "app_source": str(datasette_wheel())})]

    def play(*a: str) -> float:
        return timed_playbook(inv, env, *a)

    sh([str(LAB), "up"], LAB_ENV)
    try:
        play("playbooks/site.yml")
        play("playbooks/deploy.yml", "-e", "app_version=1.0.0")
        first = play("playbooks/deploy.yml", *ds_vars)
        wheelhouses = sorted((ROOT / ".cache" / "wheelhouse" / "datasette").glob(f"{DATASETTE}-*/wheelhouse.json"))
        packages = len(json.loads(wheelhouses[-1].read_text())["files"]) if wheelhouses else 0
        times: dict[str, list[float]] = {"refapp": [], "datasette": [], "baseline": []}
        for _ in range(args.runs):
            times["refapp"].append(play("playbooks/deploy.yml", "-e", "app_version=1.0.0"))
            times["datasette"].append(play("playbooks/deploy.yml", *ds_vars))
            times["baseline"].append(play(str(tmp / "one.yml")))
    finally:
        if not args.keep_lab:
            sh([str(LAB), "down"], LAB_ENV, check=False)
    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = med["datasette"] / med["refapp"]
    print(f"apps benchmark: re-deploy of an unchanged release on one lab host, median of {args.runs} runs")
    print(f"  datasette first deploy ({packages} wheels, wheelhouse built cold): {first:.1f} s")
    for kind in ("refapp", "datasette", "baseline"):
        print(f"  {kind:9s} {med[kind]:6.2f} s   {med[kind] / med['baseline']:5.1f}x one-task play")
    print(f"  datasette / refapp re-deploy: {ratio:.2f}x (bound 1.5x): {'met' if ratio <= 1.5 else 'NOT met'}")
    save_results("apps", f"Re-deploy of an unchanged {packages}-package app vs the reference app, median of "
                         f"{args.runs} runs",
                 {"datasette first deploy s": round(first, 1), "wheels": packages,
                  **{f"{k} median s": round(v, 2) for k, v in med.items()},
                  "datasette / refapp": round(ratio, 2)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
