"""What the benchmarks under tests/bench share: their own lab (a LAB_ID of their own, never the main lab),
an inventory for it, commands that fail loudly, timing and medians.

Benchmarks report figures (medians of several runs, ratios against a baseline measured in the same run);
they do not assert speed."""
from __future__ import annotations

import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
LAB = ROOT / "scripts" / "lab.sh"


class StepFailed(Exception):
    """A command of the benchmark failed: its output tail is in the message."""


def sh(cmd: list[str], env: Mapping[str, str] | None = None, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=ROOT, env={**os.environ, **(env or {})}, capture_output=True, text=True,
                          check=False)
    if check and proc.returncode != 0:
        raise StepFailed(f"{shlex.join(cmd)[:300]} exited {proc.returncode}:\n{proc.stdout[-3000:]}"
                         f"\n{proc.stderr[-2000:]}")
    return proc


def timed(func: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[float, Any]:
    t0 = time.monotonic()
    out = func(*args, **kwargs)
    return time.monotonic() - t0, out


def median(values: Iterable[float]) -> float:
    return statistics.median(list(values))


def lab_env(lab_id: str, hosts: Iterable[str]) -> dict[str, str]:
    """scripts/lab.sh's environment for a benchmark's own lab."""
    return {"LAB_ID": lab_id, "LAB_PUBLISH": "0", "LAB_HOSTS": " ".join(hosts)}


def container(lab_id: str, host: str) -> str:
    return f"tradeops-{lab_id}-{host}"


def write_inventory(directory: Path, lab_id: str, groups: Mapping[str, Iterable[str]],
                    connection: str = "community.docker.docker") -> Path:
    """An inventory of the benchmark's lab: ``groups`` maps a group (app, db, lb, monitoring) to its hosts;
    every host is also in ``linux``; group_vars are the lab's own. ``connection`` "docker" is what molecule's
    instances use: Ansible routes it to community.docker.docker, Mitogen's strategy to mitogen_docker."""
    inv = directory / "inventory"
    inv.mkdir(parents=True, exist_ok=True)
    children: dict[str, Any] = {
        group: {"hosts": {h: {"ansible_host": container(lab_id, h)} for h in hosts}} for group, hosts in groups.items()}
    children["linux"] = {"children": {group: {} for group in groups}}
    (inv / "hosts.yml").write_text(json.dumps({"all": {
        "vars": {"ansible_connection": connection, "ansible_user": "root",
                 "ansible_python_interpreter": "/usr/bin/python3"},
        "children": children}}))
    link = inv / "group_vars"
    if not link.exists():
        link.symlink_to(ROOT / "inventory" / "lab" / "group_vars")
    return inv


def ansible_env(tmp: Path, **extra: str) -> dict[str, str]:
    """Plain output, a fact cache of the benchmark's own, the venv's tools first."""
    return {"ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_CACHE_PLUGIN_CONNECTION": str(tmp / "facts"),
            "PATH": f"{VENV_BIN}:{os.environ['PATH']}", **extra}


def playbook(inventory: Path, env: Mapping[str, str], *args: str) -> subprocess.CompletedProcess:
    return sh([str(VENV_BIN / "ansible-playbook"), "-i", str(inventory), *args], env)


def timed_playbook(inventory: Path, env: Mapping[str, str], *args: str) -> float:
    """Wall time of one ansible-playbook run; a failed run ends the benchmark with its output's tail."""
    t0 = time.monotonic()
    proc = sh([str(VENV_BIN / "ansible-playbook"), "-i", str(inventory), *args], env, check=False)
    took = time.monotonic() - t0
    if proc.returncode != 0:
        sys.exit(f"bench: ansible-playbook {' '.join(args)} failed:\n{proc.stdout[-3000:]}{proc.stderr[-1000:]}")
    return took


def machine() -> dict[str, Any]:
    """The machine a figure was measured on."""
    import platform

    mem_kib = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    except OSError:
        pass
    return {"host": platform.node(), "os": platform.platform(terse=True), "cpus": os.cpu_count(),
            "memory_gib": round(mem_kib / 2**20, 1), "load_1m": round(os.getloadavg()[0], 1),
            "python": platform.python_version()}


def save_results(name: str, title: str, figures: Mapping[str, Any]) -> Path:
    """``.cache/results/<name>.json``: the figures with the command that produced them, the machine and the
    date; scripts/results.py turns every such file into docs/results.md."""
    out = ROOT / ".cache" / "results" / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    command = " ".join(shlex.quote(a) for a in [str(Path(sys.argv[0]).resolve().relative_to(ROOT)), *sys.argv[1:]])
    doc = {"title": title, "command": command, "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "machine": machine(), "figures": dict(figures)}
    out.write_text(json.dumps(doc, indent=2) + "\n")
    return out
