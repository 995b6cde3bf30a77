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
