"""Helpers shared by the molecule scenarios' testinfra tests (one copy for every scenario, as
prometheus-community's ``.testinfra/testinfra_helpers.py``). A test module finds it with
``sys.path.insert(0, str(Path(os.environ["MOLECULE_PROJECT_DIRECTORY"]) / "molecule" / ".testinfra"))``.

The molecule verifier runs the tests with the scenario's environment: MOLECULE_PROJECT_DIRECTORY (the project's
root) and MOLECULE_INVENTORY_FILE (the scenario's inventory).
"""
from __future__ import annotations

import os
import subprocess
import sys
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
