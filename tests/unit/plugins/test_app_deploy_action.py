"""app_deploy's action plugin: a controller-side wheelhouse (wheelhouse_src) shipped with the
connection's file transfer and kept as wheelhouses/<name> by the module — through real
ansible-playbook runs on localhost."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from plugin_testlib import HOST_PYTHON, build_wheelhouse, make_wheel

ROOT = Path(__file__).resolve().parents[3]
PLAYBOOK_BIN = Path(sys.executable).with_name("ansible-playbook")

BOOK = """
- name: Deploy from a controller wheelhouse
  hosts: all
  gather_facts: false
  vars:
    ansible_python_interpreter: "{{ ansible_playbook_python }}"
  tasks:
    - name: Deploy
      app_deploy:
        path: "%(root)s"
        version: "{{ version }}"
        %(wheelhouse)s
        package: tiny-app
        python: %(python)s
        owner: "{{ owner | default(omit) }}"
        group: "{{ group | default(omit) }}"
      register: deployed

    - name: Show the result
      ansible.builtin.debug:
        msg: "RESULT={{ deployed | to_json }}"
"""


def play(book: Path, *extra: str, check: bool = False) -> tuple[subprocess.CompletedProcess[str], dict]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update(ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               TRADEOPS_SUMMARY_LOG=str(book.parent / "summary.jsonl"),
               ANSIBLE_STDOUT_CALLBACK="ansible.builtin.default", ANSIBLE_CALLBACK_RESULT_FORMAT="json")
    cmd = [str(PLAYBOOK_BIN), "-i", "localhost,", "-c", "local", str(book), *extra] + (["--check"] if check else [])
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)
    marker = next((line for line in proc.stdout.splitlines() if '"msg": "RESULT=' in line), None)
    result = json.loads(json.loads("{" + marker.strip().rstrip(",") + "}")["msg"][len("RESULT="):]) if marker else {}
    return proc, result


@pytest.fixture
def setup(tmp_path):
    if not os.path.exists(HOST_PYTHON):
        pytest.skip("needs /usr/bin/python3")
    root = tmp_path / "opt" / "tiny"
    book = tmp_path / "deploy.yml"
    book.write_text(BOOK % {"root": root, "python": HOST_PYTHON, "wheelhouse": 'wheelhouse_src: "{{ src }}"'})
    return book, root, tmp_path


def test_wheelhouse_src_is_shipped_and_kept(setup):
    book, root, tmp = setup
    src = Path(build_wheelhouse(tmp / "build" / "tiny-app-1.0-abc", "1.0"))
    proc, result = play(book, "-e", "version=1.0", "-e", f"src={src}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    kept = root / "wheelhouses" / src.name
    assert result["outcome"] == "deployed" and result["changed"]
    assert sorted(p.name for p in kept.iterdir()) == sorted(p.name for p in src.iterdir() if p.is_file())
    assert stat.S_IMODE(kept.stat().st_mode) == 0o750
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o640 for p in kept.iterdir())
    meta = json.loads((root / "current" / "release.json").read_text())
    assert meta["wheelhouse"] == str(kept)

    proc, again = play(book, "-e", "version=1.0", "-e", f"src={src}")
    assert proc.returncode == 0 and again["changed"] is False and again["outcome"] == "unchanged"

    src2 = Path(build_wheelhouse(tmp / "build" / "tiny-app-2.0-def", "2.0"))
    before = sorted(p.name for p in root.rglob("*"))
    proc, predicted = play(book, "-e", "version=2.0", "-e", f"src={src2}", check=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert predicted["changed"] and "would" in predicted["msg"]
    assert sorted(p.name for p in root.rglob("*")) == before  # check mode wrote nothing


def test_first_deploy_in_check_mode_with_an_owner_that_does_not_exist_yet(setup):
    """deploy.yml --check on a host with nothing deployed: the wheelhouse is shipped to the temporary
    directory only, the plan names the accounts, nothing is written; a real run fails clearly."""
    book, root, tmp = setup
    src = Path(build_wheelhouse(tmp / "build" / "tiny-app-1.0-abc", "1.0"))
    accounts = ("-e", "owner=no-such-user-here", "-e", "group=no-such-group-here")
    proc, predicted = play(book, "-e", "version=1.0", "-e", f"src={src}", *accounts, check=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert predicted["changed"] and predicted["outcome"] == "deployed"
    assert predicted["msg"].startswith("check mode: would create release 1.0-")
    assert predicted["missing_accounts"] == ["owner 'no-such-user-here' does not exist yet",
                                             "group 'no-such-group-here' does not exist yet"]
    assert not root.exists()
    proc, _ = play(book, "-e", "version=1.0", "-e", f"src={src}", *accounts)
    assert proc.returncode != 0
    # the shipped wheelhouse is kept root:group first: the group is the first name a real run resolves
    assert "group 'no-such-group-here' does not exist on this host; create the app group first" in proc.stdout
    assert not (root / "releases").exists()


def test_bad_wheelhouse_src_is_a_clear_error(setup):
    book, root, tmp = setup
    proc, _ = play(book, "-e", "version=1.0", "-e", f"src={tmp / 'missing'}")
    assert proc.returncode != 0
    assert "is not a directory on the controller" in proc.stdout and "build_wheelhouse.py" in proc.stdout
    empty = tmp / "empty"
    empty.mkdir()
    proc, _ = play(book, "-e", "version=1.0", "-e", f"src={empty}")
    assert proc.returncode != 0 and "holds no .whl file" in proc.stdout
    assert not root.exists()


def test_wheelhouse_build_runs_on_the_controller_then_ships(setup):
    """Role app's deploy: the action plugin builds the wheelhouse with scripts/build_wheelhouse.py (a
    ready wheel here: no index is asked), ships it and counts the build in timings; the same inputs
    reuse the build; a source whose version differs is refused by the build, before the host changes."""
    _, root, tmp = setup
    book = tmp / "build.yml"
    book.write_text(BOOK % {"root": root, "python": HOST_PYTHON, "wheelhouse": 'wheelhouse_build: "{{ build }}"'})
    (tmp / "src").mkdir()
    wheel = make_wheel(tmp / "src", "tiny-app", "1.0", {"tinyapp/__init__.py": "def main():\n    print('1.0')\n"},
                       scripts={"tinyapp": "tinyapp:main"})
    out = tmp / "cache" / "tiny"
    build = {"source": str(wheel), "version": "1.0", "out": str(out), "python_version": "3.11.2"}
    proc, result = play(book, "-e", "version=1.0", "-e", json.dumps({"build": build}))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert result["outcome"] == "deployed" and result["timings"]["wheelhouse"] > 0
    (built,) = list(out.iterdir())
    assert sorted(p.name for p in (root / "wheelhouses" / built.name).iterdir()) == sorted(
        p.name for p in built.iterdir())
    proc, again = play(book, "-e", "version=1.0", "-e", json.dumps({"build": build}))
    assert proc.returncode == 0 and again["outcome"] == "unchanged" and list(out.iterdir()) == [built]

    before = sorted(p.name for p in root.rglob("*"))
    proc, _ = play(book, "-e", "version=2.0", "-e", json.dumps({"build": {**build, "version": "2.0"}}))
    assert proc.returncode != 0
    assert "building the wheelhouse of 2.0 on the controller failed (build_wheelhouse.py exit" in proc.stdout
    assert sorted(p.name for p in root.rglob("*")) == before  # refused before anything reached the host
    proc, _ = play(book, "-e", "version=2.0", "-e", json.dumps({"build": {"source": str(wheel)}}))
    assert proc.returncode != 0 and "wheelhouse_build takes" in proc.stdout
