"""Chaos suite fixtures: the session's lab (see chaoslab.py), built releases, the state before
each experiment, and the final line ``chaos: N passed, N failed``."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from chaoslab import (
    BASE_VERSION,
    CACHE,
    INVENTORY,
    LAB_ENV,
    PREFIX,
    RESULTS,
    ROOT,
    State,
    backup_list,
    playbook,
    psql,
    record,
    write_inventory,
)

# -- session ----------------------------------------------------------------------------------------

def _lab(cmd: str) -> None:
    proc = subprocess.run([str(ROOT / "scripts" / "lab.sh"), cmd], cwd=ROOT, env={**os.environ, **LAB_ENV},
                          capture_output=True, text=True, check=False)
    print(proc.stdout, proc.stderr)
    if proc.returncode != 0:
        raise RuntimeError(f"scripts/lab.sh {cmd} (LAB_ID=chaos) failed: {proc.stderr[-2000:]}")


@pytest.fixture(scope="session")
def lab() -> Iterator[Path]:
    """The chaos lab converged with lab.yml, 1.0.0 deployed, a canary table and one backup."""
    t0 = time.monotonic()
    _lab("up")
    write_inventory()
    try:
        for host in ("db1",):  # bounded load runs from db1 (the firewall lets it reach lb1)
            subprocess.run(["docker", "cp", str(ROOT / "tests" / "lab" / "loadgen.py"),
                            f"{PREFIX}{host}:/usr/local/bin/loadgen"], check=True)
        if os.environ.get("CHAOS_REUSE") != "1":  # CHAOS_REUSE=1: a lab kept by CHAOS_KEEP=1, as it is
            # A new lab: no facts of an earlier one. With gathering=smart and a 1 h cache, site.yml used
            # the previous lab's addresses when the network came back on another subnet (172.19 -> 172.31):
            # the app hosts' firewalls let only the old lb1 and mon1 in, and lb1 answered 502 (seen here).
            shutil.rmtree(CACHE / "facts", ignore_errors=True)
            # no time limit worth the name: a shared machine at load 15-19 took over 15 min (timed out at 900 s)
            site = playbook("lab.yml", timeout=3600)  # site.yml and the lab S3
            assert site.returncode == 0, f"lab.yml failed on the chaos lab: {site.text[-3000:]}"
            deploy = playbook("deploy.yml", f"app_version={BASE_VERSION}")
            assert deploy.returncode == 0, f"deploy of {BASE_VERSION} failed: {deploy.text[-3000:]}"
        psql("CREATE TABLE IF NOT EXISTS chaos_canary (id int PRIMARY KEY, note text)")
        psql("INSERT INTO chaos_canary SELECT g, md5(g::text) FROM generate_series(1, 5000) g ON CONFLICT DO NOTHING")
        if not [b for b in backup_list() if b.get("complete")]:
            first = playbook("backup.yml")
            assert first.returncode == 0, f"first backup.yml failed: {first.text[-3000:]}"
        record("setup", seconds=round(time.monotonic() - t0, 1))
        yield INVENTORY
    finally:
        if os.environ.get("CHAOS_KEEP") != "1":
            _lab("down")


@pytest.fixture(scope="session")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Reference-app releases built with scripts/build_refapp.py, faults baked in."""
    built_dir = tmp_path_factory.mktemp("wheels")
    built = {}
    for version, fault in [("2.0.0", "unready"), ("2.1.0", "crash"), ("2.2.0", "hang"),
                           ("3.0.0", None), ("3.1.0", None), ("3.2.0", None), ("3.3.0", None), ("3.4.0", None),
                           ("3.5.1", None), ("3.6.0", "leak"), ("3.7.0", None)]:
        args = [sys.executable, str(ROOT / "scripts" / "build_refapp.py"), "--version", version,
                "--out", str(built_dir)]
        if fault:
            args += ["--fault", fault]
        built[version] = subprocess.run(args, capture_output=True, text=True, check=True).stdout.strip()
    return built


@pytest.fixture
def state(lab: Path) -> State:
    """The lab's state before the experiment (every app host serving the same release)."""
    return State()


# -- the final line -------------------------------------------------------------------------------

def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    stats = terminalreporter.stats
    passed = len([r for r in stats.get("passed", []) if r.when == "call"])
    failed = len({r.nodeid for key in ("failed", "error") for r in stats.get(key, [])})
    # a strict xfail that passes (a known gap fixed) is reported failed by pytest: counted above
    xfailed = len(stats.get("xfailed", []))
    if RESULTS.exists():
        terminalreporter.write_line(f"chaos figures: {RESULTS}")
    gaps = f", {xfailed} xfailed (known gaps, strict)" if xfailed else ""
    terminalreporter.write_line(f"chaos: {passed} passed, {failed} failed{gaps}")
