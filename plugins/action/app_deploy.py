# Copyright: tradeops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin of app_deploy: ships a controller-side wheelhouse (``wheelhouse_src``) to a
temporary directory on the host with the connection's own file transfer (one put per file,
no module round trip per file, unlike ``ansible.builtin.copy`` of a directory), then runs the
module once with ``wheelhouse`` and ``wheelhouse_name`` set; the temporary directory is
removed afterwards. Without ``wheelhouse_src`` it only runs the module.

``wheelhouse_build`` (source, version, out, python_version, requirements) builds that wheelhouse
first, here on the controller, with ``scripts/build_wheelhouse.py`` (a reused build takes about
0.1 s): a separate ``delegate_to: localhost`` command task cost about 0.8 s per host and deploy,
most of it Ansible starting a module locally. The build's seconds count in the result's
``timings`` as ``wheelhouse``, with the shipping."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

MAX_FILES = 500  # a wheelhouse is a few dozen wheels; more means a wrong directory
BUILD_SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "build_wheelhouse.py"
BUILD_KEYS = {"source", "version", "out", "python_version", "requirements"}


class ActionModule(ActionBase):
    TRANSFERS_FILES = True

    def run(self, tmp: Any = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        result = super().run(tmp, task_vars)
        del tmp  # unused: the shell plugin's tmpdir is used
        args = dict(self._task.args)
        source = args.pop("wheelhouse_src", None)
        build = args.pop("wheelhouse_build", None)
        started = time.monotonic()
        if build:
            if source or args.get("wheelhouse"):
                raise AnsibleActionFail("app_deploy: give one of wheelhouse_build (built here), wheelhouse_src (a "
                                        "directory on the controller) or wheelhouse (a directory on the host)")
            source = self._build_wheelhouse(build)
        if not source:
            result.update(self._execute_module(module_name="app_deploy", module_args=args, task_vars=task_vars))
            return result
        if args.get("wheelhouse"):
            raise AnsibleActionFail("app_deploy: give wheelhouse (a directory on the host) or wheelhouse_src "
                                    "(a directory on the controller), not both")
        source = os.path.realpath(os.path.expanduser(str(source)))
        files = self._wheelhouse_files(source)
        remote_tmp = self._connection._shell.tmpdir or self._make_tmp_path()
        try:
            remote_dir = self._connection._shell.join_path(remote_tmp, "wheelhouse")
            made = self._low_level_execute_command(f"mkdir -m 0700 {shlex.quote(remote_dir)}", sudoable=True)
            if made.get("rc") != 0:
                raise AnsibleActionFail(f"app_deploy: could not create {remote_dir} on the host: "
                                        f"{made.get('stderr') or made.get('stdout')}")
            remote_files = []
            for path in files:
                remote = self._connection._shell.join_path(remote_dir, os.path.basename(path))
                self._transfer_file(path, remote)
                remote_files.append(remote)
            self._fixup_perms2([remote_dir, *remote_files])
            args.update(wheelhouse=remote_dir, wheelhouse_name=os.path.basename(source))
            shipped = time.monotonic() - started
            result.update(self._execute_module(module_name="app_deploy", module_args=args, task_vars=task_vars))
            if isinstance(result.get("timings"), dict):
                result["timings"]["wheelhouse"] = round(result["timings"].get("wheelhouse", 0) + shipped, 3)
        finally:
            self._remove_tmp_path(remote_tmp)
        return result

    @staticmethod
    def _build_wheelhouse(build: Any) -> str:
        """scripts/build_wheelhouse.py with these inputs; the wheelhouse directory it printed."""
        if not isinstance(build, dict) or not {"source", "version", "out"} <= set(build) or set(build) - BUILD_KEYS:
            raise AnsibleActionFail(f"app_deploy: wheelhouse_build takes {sorted(BUILD_KEYS)} (source, version and "
                                    f"out required), got {sorted(build) if isinstance(build, dict) else build!r}")
        requirements = build.get("requirements") or []
        if not isinstance(requirements, list):
            raise AnsibleActionFail("app_deploy: wheelhouse_build.requirements must be a list of requirement strings")
        # --opt=value: a value that starts with '-' stays a value.
        argv = [sys.executable, str(BUILD_SCRIPT), f"--source={build['source']}", f"--version={build['version']}",
                f"--out={build['out']}"]
        if build.get("python_version"):
            argv.append(f"--python-version={build['python_version']}")
        argv += [f"--requirement={r}" for r in requirements]
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=3600, check=False)
        except subprocess.TimeoutExpired:
            raise AnsibleActionFail(f"app_deploy: building the wheelhouse of {build['version']} took more than "
                                    "an hour; stopped") from None
        if proc.returncode != 0:
            raise AnsibleActionFail(f"app_deploy: building the wheelhouse of {build['version']} on the controller "
                                    f"failed (build_wheelhouse.py exit {proc.returncode}): "
                                    f"{(proc.stderr or proc.stdout).strip()[-3000:]}")
        lines = proc.stdout.strip().splitlines()
        if not lines:
            raise AnsibleActionFail("app_deploy: build_wheelhouse.py printed no wheelhouse directory")
        return lines[-1].strip()

    @staticmethod
    def _wheelhouse_files(source: str) -> list[str]:
        if not os.path.isdir(source):
            raise AnsibleActionFail(f"app_deploy: wheelhouse_src {source} is not a directory on the controller; "
                                    "build it with scripts/build_wheelhouse.py (deploy.yml does)")
        files = sorted(os.path.join(source, n) for n in os.listdir(source)
                       if os.path.isfile(os.path.join(source, n)) and not n.startswith("."))
        if not any(f.endswith(".whl") for f in files):
            raise AnsibleActionFail(f"app_deploy: wheelhouse_src {source} holds no .whl file")
        if len(files) > MAX_FILES:
            raise AnsibleActionFail(f"app_deploy: wheelhouse_src {source} holds {len(files)} files (more than "
                                    f"{MAX_FILES}): is it really a wheelhouse?")
        return files
