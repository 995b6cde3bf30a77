"""Every option typed and checked: a value that used to be silently changed, misread or end in a
traceback is refused with a message naming the option (or accepted with its real meaning), and
nothing is written. One test per value the review named, through the modules where they take it."""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

import app_deploy
import app_files
import app_health
import app_release
import pytest
from ansible.module_utils import tradeops_backup as tb
from ansible.module_utils import tradeops_maintenance as tm
from ansible.module_utils import tradeops_release as tr


def _failed(result: dict[str, Any], *words: str) -> str:
    assert result["_rc"] == 1 and result.get("failed"), result
    msg = result["msg"]
    assert "Traceback" not in result["_raw"] and "internal error" not in msg, result
    for word in words:
        assert word in msg, (word, msg)
    return msg


# -- app_files -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("mode", "words"), [
    (416, ("mode", "416", "quote")),  # YAML's unquoted 0640
    (0o644, ("mode", "quote")),
    ("0640\n", ("mode",)),
    ("0o640x", ("mode",)),
    ("rw-r-----", ("mode",)),
    (True, ("mode",)),
])
def test_app_files_refuses_a_mode_that_is_not_an_octal_string(tmp_path: Path, run_module: Any, mode: Any,
                                                               words: tuple[str, ...]) -> None:
    target = tmp_path / "cfg" / ".env"
    target.parent.mkdir()
    result = run_module(app_files, {"files": [{"path": str(target), "content": "x", "mode": mode}],
                                    "daemon_reload": "never"})
    _failed(result, *words)
    assert not target.exists()


def test_app_files_refuses_a_unit_name_with_a_trailing_newline(tmp_path: Path, run_module: Any,
                                                               fake_systemd: Path) -> None:
    result = run_module(app_files, {"files": [], "enable_units": ["refapp-web.service\n"]})
    _failed(result, "enable_units", "refapp-web.service")
    assert fake_systemd.read_text() == ""


def test_app_files_refuses_an_owner_with_a_nul(tmp_path: Path, run_module: Any) -> None:
    target = tmp_path / "x"
    result = run_module(app_files, {"files": [{"path": str(target), "content": "x", "owner": "ro\0ot"}],
                                    "daemon_reload": "never"})
    _failed(result, "owner")
    assert not target.exists()


# -- app_release / app_deploy: keep, lock_stale_after, version, units, seconds -------------------------------


def test_keep_zero_is_refused_not_made_five(tmp_path: Path, capsys: Any) -> None:
    app = tmp_path / "app"
    assert tr.main_cli(["--path", str(app), "init"]) == 0
    assert tr.main_cli(["--path", str(app), "prune", "--keep", "0"]) == 1
    assert "keep must be >= 1" in capsys.readouterr().err


def _foreign_lock(app: Path, **fields: Any) -> None:
    app.mkdir(parents=True, exist_ok=True)
    lock = {"owner": "alice", "host": "elsewhere", "pid": 77, "time": "2026-01-01T00:00:00Z",
            "epoch": time.time() - 60, "reason": "deploy 1.0", **fields}
    (app / "deploy.lock").write_text(json.dumps(lock))


def test_lock_stale_after_zero_means_zero_seconds(tmp_path: Path, run_module: Any, fake_systemd: Path) -> None:
    app = tmp_path / "app"
    _foreign_lock(app)
    result = run_module(app_release, {"path": str(app), "action": "lock", "lock_stale_after": 0})
    assert _failed(result, "stale") and result["stale"] is True, result
    result = run_module(app_deploy, {"path": str(app), "action": "restart", "lock_stale_after": 0, "deadline": 0.1})
    assert _failed(result, "stale (older than 0 s)"), result
    result = run_module(app_release, {"path": str(app), "action": "lock", "lock_stale_after": -5})
    _failed(result, "lock_stale_after")


@pytest.mark.parametrize("epoch", [math.inf, -math.inf, math.nan, "soon", 1e300])
def test_a_lock_file_with_a_bad_epoch_is_named_not_a_traceback(tmp_path: Path, run_module: Any,
                                                               epoch: Any) -> None:
    app = tmp_path / "app"
    _foreign_lock(app, epoch=epoch)
    result = run_module(app_release, {"path": str(app), "action": "lock"})
    _failed(result, "epoch")
    assert json.loads((app / "deploy.lock").read_text())["owner"] == "alice"


@pytest.mark.parametrize("lock", [[], "x", {"owner": ["a"], "host": "h", "epoch": 1.0}, {"owner": "a", "host": "h",
                                                                                         "epoch": 1.0, "pid": 1e30}])
def test_a_lock_file_of_the_wrong_shape_is_named_not_a_traceback(tmp_path: Path, run_module: Any, lock: Any) -> None:
    app = tmp_path / "app"
    app.mkdir()
    (app / "deploy.lock").write_text(json.dumps(lock))
    result = run_module(app_release, {"path": str(app), "action": "lock"})
    _failed(result, "deploy lock")


def test_a_version_with_a_trailing_newline_is_refused() -> None:
    with pytest.raises(tr.ReleaseError, match="version"):
        tr.validate_version("1.0\n")
    assert tr.RELEASE_ID_RE.match("1.0-20260101T000000Z\n") is None


@pytest.mark.parametrize("unit", ["*", "refapp-*.service", "sshd.service", "refapp-web.service\n", "-refapp.service"])
def test_app_deploy_only_touches_the_apps_own_units(tmp_path: Path, run_module: Any, fake_systemd: Path,
                                                    unit: str) -> None:
    result = run_module(app_deploy, {"path": str(tmp_path / "refapp"), "action": "restart", "deadline": 0.1,
                                     "services": [{"unit": unit}]})
    _failed(result, "unit", repr(unit))
    assert fake_systemd.read_text() == ""  # refused before any systemctl call


@pytest.mark.parametrize(("args", "words"), [
    ({"services": [{"unit": "refapp-web.service", "deadline": 0}]}, ("deadline",)),
    ({"migrate": {"argv": ["refapp"], "timeout": 0}}, ("migrate.timeout",)),
    ({"deadline": math.nan}, ("deadline",)),
    ({"deadline": math.inf}, ("deadline",)),
    ({"soak_memory_horizon": math.nan}, ("soak_memory_horizon",)),
    ({"delay": 1e300}, ("delay",)),
    ({"lock_pid": -1}, ("lock_pid",)),
    ({"shared_links": {"data": 5}}, ("shared_links",)),
])
def test_app_deploy_refuses_a_zero_or_non_finite_number_it_used_to_replace(tmp_path: Path, run_module: Any,
                                                                           fake_systemd: Path, args: dict[str, Any],
                                                                           words: tuple[str, ...]) -> None:
    base = {"path": str(tmp_path / "refapp"), "action": "restart", "deadline": 0.1}
    result = run_module(app_deploy, {**base, **args})
    _failed(result, *words)
    assert fake_systemd.read_text() == ""


# -- app_health ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("args", "words"), [
    ({"http": [{"url": "http://[::1"}]}, ("url",)),
    ({"http": [{"url": "http://127.0.0.1:99999/"}]}, ("url",)),
    ({"http": [{"url": "http:///nohost"}]}, ("url",)),
    ({"http": [{"url": "http://127.0.0.1:1/", "status": []}]}, ("status",)),
    ({"http": [{"url": "http://127.0.0.1:1/", "headers": {"X-A": "v\r\nInjected: 1"}}]}, ("headers",)),
    ({"http": [{"url": "http://127.0.0.1:1/", "timeout": math.nan}]}, ("timeout",)),
    ({"tcp": ["127.0.0.1:1"], "timeout": 0}, ("timeout",)),
    ({"postgresql": [{"host": "127.0.0.1", "port": 0}]}, ("port",)),
    ({"redis": [{"host": "127.0.0.1", "port": 70000}]}, ("port",)),
    ({"systemd_units": ["*"]}, ("systemd_units",)),
    ({"thresholds": {"cpu": {"interval": 0}}}, ("interval",)),
    ({"thresholds": {"disk": {"paths": []}}}, ("paths",)),
    ({"tcp": ["127.0.0.1:1"], "deadline": math.nan}, ("deadline",)),
    ({"tcp": ["127.0.0.1:1"], "delay": 1e300}, ("delay",)),
])
def test_app_health_names_a_bad_option(run_module: Any, fake_systemd: Path, args: dict[str, Any],
                                       words: tuple[str, ...]) -> None:
    result = run_module(app_health, {"deadline": 1.0, **args})
    msg = _failed(result, *words)
    assert msg.startswith("could not check"), msg


# -- backups and maintenance configuration -------------------------------------------------------------------


@pytest.mark.parametrize(("settings", "words"), [
    ({"postgresql": [{"name": "appdb", "exclude_tables": "audit"}]}, ("exclude_tables", "audit")),
    ({"paths": [{"name": "data", "path": "/srv/data", "exclude": "*.tmp"}]}, ("exclude",)),
    ({"redis": [{"name": "cache", "port": "six"}]}, ("port",)),
    ({"sqlite": [{"name": "db", "path": "/srv/app.db", "secret": "no"}]}, ("secret",)),
    ({"paths": [{"name": "data\n", "path": "/srv/data"}]}, ("name",)),
    ({"set": "default\n"}, ("set",)),
    ({"retention": {"keep_days": math.nan}}, ("keep_days",)),
    ({"retention": {"keep_count": True}}, ("keep_count",)),
    ({"verify": {"max_age_hours": math.nan}}, ("max_age_hours",)),
    ({"timeouts": {"tool": 0}}, ("timeouts.tool",)),
])
def test_backup_configuration_names_a_bad_value(tmp_path: Path, settings: dict[str, Any],
                                                words: tuple[str, ...]) -> None:
    with pytest.raises(tb.ConfigError) as raised:
        tb.load_config({"backup_root": str(tmp_path / "backups"), **settings})
    for word in words:
        assert word in str(raised.value), (word, str(raised.value))


def test_cleanup_refuses_a_nan_age_that_would_remove_everything(tmp_path: Path) -> None:
    cache = tmp_path / "app" / "cache"
    cache.mkdir(parents=True)
    (cache / "fresh.bin").write_text("written a second ago")
    with pytest.raises(tm.MaintenanceError, match="max_age_days"):
        tm.load_config({"cleanup": [{"path": str(cache), "max_age_days": math.nan}]})
    assert (cache / "fresh.bin").exists()
    assert os.listdir(cache) == ["fresh.bin"]
