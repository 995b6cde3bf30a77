"""app_release: action=init (the tree alone) and create's free-space refusal."""
from __future__ import annotations

import getpass
import grp
import os
import shutil

import pytest
from ansible.module_utils.tradeops_release import ReleaseError, ReleaseStore, check_free_space, run_action


def test_init_makes_the_tree_once(tmp_path):
    root = tmp_path / "app"
    store = ReleaseStore(str(root))
    me, group = getpass.getuser(), grp.getgrgid(os.getgid()).gr_name
    first = run_action(store, "init", {"owner": me, "group": group}, check_mode=False)
    assert first["changed"]
    for d in ("releases", "deps", "shared/data", "shared/logs", "shared/config"):
        assert (root / d).is_dir(), d
    assert oct((root / "shared" / "data").stat().st_mode & 0o777) == "0o750"
    again = run_action(store, "init", {"owner": me, "group": group}, check_mode=False)
    assert not again["changed"] and again["made"] == []


def test_init_in_check_mode_writes_nothing(tmp_path):
    root = tmp_path / "app"
    result = run_action(ReleaseStore(str(root)), "init", {}, check_mode=True)
    assert result["changed"]
    assert not root.exists()


def test_free_space_refusal_names_the_variable(tmp_path):
    free_mb = shutil.disk_usage(tmp_path).free // (1024 * 1024)
    check_free_space(str(tmp_path / "not" / "yet"), 1)  # walks up to an existing parent
    with pytest.raises(ReleaseError, match="min_free_mb"):
        check_free_space(str(tmp_path), free_mb + 10_000_000)


def test_create_is_refused_before_anything_is_written(tmp_path):
    root = tmp_path / "app"
    with pytest.raises(ReleaseError, match="MB free"):
        run_action(ReleaseStore(str(root)), "create",
                   {"version": "1.0.0", "wheelhouse": str(tmp_path / "wh"), "min_free_mb": 10**12}, check_mode=False)
    assert not root.exists()


def test_lock_of_a_killed_controller_run_is_reported_stale(tmp_path):
    store = ReleaseStore(str(tmp_path / "app"))
    run_action(store, "lock", {"lock_owner": "ops@ctl", "lock_host": "ctl", "lock_pid": 4242,
                               "lock_reason": "deploy 1.0.0"}, check_mode=False)
    # the same controller asks again; its live playbook processes no longer include 4242
    with pytest.raises(ReleaseError, match=r"stale \(process 4242 on ctl is gone\).*force_unlock"):
        run_action(store, "lock", {"lock_owner": "ops@ctl", "lock_host": "ctl", "lock_pid": 5000,
                                   "lock_peer_pids": [5000, 5001]}, check_mode=False)
    # while 4242 still runs there, it is a live lock, not a stale one
    with pytest.raises(ReleaseError, match="Wait for that deploy"):
        run_action(store, "lock", {"lock_owner": "ops@ctl", "lock_host": "ctl", "lock_pid": 5000,
                                   "lock_peer_pids": [4242, 5000]}, check_mode=False)
    # another controller cannot judge ctl's processes: live until the age limit
    with pytest.raises(ReleaseError, match="Wait for that deploy"):
        run_action(store, "lock", {"lock_owner": "eve@other", "lock_host": "other", "lock_pid": 1,
                                   "lock_peer_pids": [1]}, check_mode=False)
    broken = run_action(store, "lock", {"lock_owner": "ops@ctl", "lock_host": "ctl", "lock_pid": 5000,
                                        "lock_peer_pids": [5000], "force_unlock": True}, check_mode=False)
    assert broken["stale"] and broken["broken"]["pid"] == 4242
