"""A real run of the ops_agent role on this machine (connection local, every path under a
temporary directory), started in the background as soon as its test is collected so that its
ten-odd seconds of ansible-playbook overlap with the other tests (see conftest.py)."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[3]
_VENV_BIN = Path(os.environ.get("VIRTUAL_ENV") or REPO / ".venv") / "bin"
ANSIBLE_PLAYBOOK = _VENV_BIN / "ansible-playbook"
if not ANSIBLE_PLAYBOOK.is_file():
    ANSIBLE_PLAYBOOK = Path(shutil.which("ansible-playbook") or ANSIBLE_PLAYBOOK)
HOST_PYTHON = "/usr/bin/python3"
TEST_NAME = "test_role_installs_idempotently_on_this_machine"


@functools.cache
def blocker() -> str | None:
    """Why the role cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root (the role installs as root)"
    if not ANSIBLE_PLAYBOOK.is_file():
        return "ansible-playbook not found"
    if not shutil.which("dpkg-query") or not os.access(HOST_PYTHON, os.X_OK):
        return f"needs a Debian machine with {HOST_PYTHON}"
    status = subprocess.run(["dpkg-query", "--show", "--showformat=${Status}", "python3-venv"],
                            capture_output=True, text=True, timeout=30, check=False)  # fmt: skip
    if "install ok installed" not in status.stdout:
        return "needs python3-venv (apt-get install python3-venv)"
    return None


def role_vars(base: Path) -> dict[str, str]:
    return {
        "ops_agent_venv": str(base / "agent" / "venv"),
        "ops_agent_wheel_dir": str(base / "agent" / "wheels"),
        "ops_agent_bin_dir": str(base / "bin"),
        "ops_agent_python": HOST_PYTHON,
    }


def playbook(base: Path) -> list[dict[str, Any]]:
    """Three plays: bad input (must fail in preflight, rescued), install, the same again."""
    good = role_vars(base)
    bad = {**good, "ops_agent_venv": "/opt"}
    return [
        {"name": "bad input", "hosts": "localhost", "gather_facts": True, "gather_subset": ["min"], "tasks": [{
            "block": [{"ansible.builtin.include_role": {"name": "ops_agent"}, "vars": bad}],
            "rescue": [{"ansible.builtin.set_fact": {
                "failed_task": "{{ ansible_failed_task.name }}", "failed_msg": "{{ ansible_failed_result.msg }}"}}],
        }]},
        {"name": "install", "hosts": "localhost", "gather_facts": False, "vars": good, "roles": ["ops_agent"]},
        {"name": "again", "hosts": "localhost", "gather_facts": False, "vars": good, "roles": ["ops_agent"]},
    ]


class RoleRun:
    """ansible-playbook with the JSON stdout callback, running in the background."""

    def __init__(self) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="ops-agent-role-"))
        (self.base / "bin").mkdir()
        book = self.base / "play.yml"
        book.write_text(yaml.safe_dump(playbook(self.base), sort_keys=False))
        env = {**os.environ, "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json", "ANSIBLE_CACHE_PLUGIN": "memory",
               "TRADEOPS_SUMMARY_LOG": str(self.base / "summary.jsonl"), "ANSIBLE_INJECT_FACT_VARS": "false",
               "ANSIBLE_NOCOLOR": "1", "ANSIBLE_LOCALHOST_WARNING": "false",
               "ANSIBLE_INVENTORY_UNPARSED_WARNING": "false"}  # fmt: skip
        self.stdout = (self.base / "stdout.json").open("w+")
        self.stderr = (self.base / "stderr.txt").open("w+")
        command = [str(ANSIBLE_PLAYBOOK), "-i", "localhost,", "-c", "local",
                   "-e", f"ansible_python_interpreter={HOST_PYTHON}", str(book)]  # fmt: skip
        self.proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=self.stdout, stderr=self.stderr,
                                     stdin=subprocess.DEVNULL, start_new_session=True)  # fmt: skip

    def wait(self, timeout: float = 300) -> tuple[int, dict[str, Any], str]:
        """Exit code, the JSON callback's document, and stdout+stderr tails for messages."""
        code = self.proc.wait(timeout=timeout)
        self.stdout.seek(0)
        self.stderr.seek(0)
        out, err = self.stdout.read(), self.stderr.read()
        try:
            document = json.loads(out[out.index("{"):])
        except ValueError:
            document = {}
        return code, document, out[-4000:] + err[-4000:]

    def close(self) -> None:
        if self.proc.poll() is None:  # the session ended before the test: stop the run and its workers
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        self.stdout.close()
        self.stderr.close()
        shutil.rmtree(self.base, ignore_errors=True)
