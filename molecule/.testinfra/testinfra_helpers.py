"""Helpers shared by the molecule scenarios' testinfra tests (one copy for every scenario, as
prometheus-community's ``.testinfra/testinfra_helpers.py``). A test module finds it with
``sys.path.insert(0, str(Path(os.environ["MOLECULE_PROJECT_DIRECTORY"]) / "molecule" / ".testinfra"))``.

The molecule verifier runs the tests with the scenario's environment: MOLECULE_PROJECT_DIRECTORY (the project's
root) and MOLECULE_INVENTORY_FILE (the scenario's inventory).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

PROJECT = Path(os.environ["MOLECULE_PROJECT_DIRECTORY"])
INVENTORY = Path(os.environ["MOLECULE_INVENTORY_FILE"]).parent


def playbook(path: str | Path, *args: str) -> subprocess.CompletedProcess:
    """``ansible-playbook -i <the scenario's inventory> <path> <args...>`` run from the project's root, as a user
    runs it (a relative ``path`` is one of the project's playbooks/). Prints the tails of its output (shown on a
    failed test) and sets ``text``: stdout and stderr on one line, white space folded, for substring checks (the
    result callback folds long messages over lines)."""
    target = Path(path) if Path(path).is_absolute() else PROJECT / "playbooks" / path
    cmd = [str(Path(sys.executable).with_name("ansible-playbook")), "-i", str(INVENTORY), str(target), *args]
    env = {**os.environ, "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_NOCOLOR": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=PROJECT, check=False, env=env)
    print(proc.stdout[-6000:], proc.stderr[-2000:])
    proc.text = " ".join((proc.stdout + proc.stderr).split())  # type: ignore[attr-defined]
    return proc


class Load:
    """Bounded load for as long as a block runs: tests/lab/loadgen.py (installed as /usr/local/bin/loadgen) in the
    scenario's container ``client`` GETs ``url`` at ``rate`` per second, never past ``max_seconds``. ``result`` is
    loadgen's summary (ok, failed, failures by kind, latency percentiles); each run is appended to
    ``.cache/<log>.jsonl`` for the record."""

    def __init__(self, client: str, url: str, rate: int = 20, max_seconds: int = 600, log: str = "load",
                 concurrency: int = 8) -> None:
        scenario = os.environ.get("MOLECULE_SCENARIO_NAME", "")
        self.container = f"tradeops-mol-{scenario}-{client}"
        self.argv = ["loadgen", url, "--rate", str(rate), "--max-seconds", str(max_seconds),
                     "--concurrency", str(concurrency)]
        self.log = PROJECT / ".cache" / f"{log}.jsonl"
        self.result: dict = {}

    def __enter__(self) -> Load:
        self.proc = subprocess.Popen(["docker", "exec", self.container, *self.argv],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(2)
        return self

    def __exit__(self, *exc: object) -> None:
        time.sleep(2)
        subprocess.run(["docker", "exec", self.container, "touch", "/run/tradeops-loadgen.stop"], check=True)
        out, err = self.proc.communicate(timeout=60)
        self.result = json.loads(out.strip().splitlines()[-1]) if out.strip() else {"error": err}
        print("load:", self.result)
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("a") as handle:
            handle.write(json.dumps({"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                     "url": self.argv[1], **self.result}) + "\n")
