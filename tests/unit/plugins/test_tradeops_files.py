"""app_files' logic: only files that differ are written (atomically, owner and mode first),
metadata-only fixes, systemd reloaded only for a changed unit, units enabled once; check mode
writes nothing. systemd does not run on the controller: a recording `systemctl` on PATH
stands in for it here (the molecule scenarios run the real one)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from ansible.module_utils.tradeops_files import FilesError, sync

SYSTEMCTL = """#!/bin/sh
echo "$*" >> "$SYSTEMCTL_LOG"
if [ "$1" = is-enabled ]; then
  shift
  for u in "$@"; do if grep -qx "enable .*$u.*" "$SYSTEMCTL_LOG"; then echo enabled; else echo disabled; fi; done
fi
exit 0
"""


@pytest.fixture
def env(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "systemctl").write_text(SYSTEMCTL)
    (bin_dir / "systemctl").chmod(0o755)
    log = tmp_path / "systemctl.log"
    log.write_text("")
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("SYSTEMCTL_LOG", str(log))
    monkeypatch.setattr("ansible.module_utils.tradeops_files.UNIT_DIRS", (str(tmp_path / "units") + "/",))
    (tmp_path / "units").mkdir()
    (tmp_path / "cfg").mkdir()
    return tmp_path, log


def files(tmp: Path, env_value: str = "s3cret", unit: str = "[Service]\nExecStart=/bin/true\n") -> list[dict]:
    return [{"path": str(tmp / "cfg" / ".env"), "content": f"TOKEN={env_value}\n", "mode": "0600"},
            {"path": str(tmp / "units" / "x-web.service"), "content": unit}]


def test_writes_only_what_differs_and_reloads_for_units(env):
    tmp, log = env
    first = sync(files(tmp), ["x-web.service"])
    assert first["changed"] and sorted(first["changed_files"]) == sorted(f["path"] for f in files(tmp))
    assert first["daemon_reloaded"] and first["enabled"] == ["x-web.service"]
    envfile = tmp / "cfg" / ".env"
    assert envfile.read_text() == "TOKEN=s3cret\n" and stat.S_IMODE(envfile.stat().st_mode) == 0o600
    assert "s3cret" not in str(first)  # paths and reasons only, never content
    calls = log.read_text().splitlines()
    assert calls == ["is-enabled x-web.service", "daemon-reload", "enable x-web.service"] or \
        calls == ["daemon-reload", "is-enabled x-web.service", "enable x-web.service"]

    log.write_text(log.read_text())  # keep the enable record
    again = sync(files(tmp), ["x-web.service"])
    assert again["changed"] is False and again["changed_files"] == [] and not again["daemon_reloaded"]

    inode = envfile.stat().st_ino
    secret_only = sync(files(tmp, env_value="rotated"), ["x-web.service"])
    assert secret_only["changed_files"] == [str(envfile)] and not secret_only["daemon_reloaded"]
    assert envfile.stat().st_ino != inode  # replaced by rename, never rewritten in place
    assert not [p for p in (tmp / "cfg").iterdir() if p.name.startswith(".env.")]  # no temporary left


def test_mode_only_difference_is_fixed_in_place(env):
    tmp, _ = env
    sync(files(tmp))
    envfile = tmp / "cfg" / ".env"
    envfile.chmod(0o644)
    inode = envfile.stat().st_ino
    fixed = sync(files(tmp))
    assert fixed["reasons"] == {str(envfile): ["mode"]}
    assert stat.S_IMODE(envfile.stat().st_mode) == 0o600 and envfile.stat().st_ino == inode


def test_check_mode_writes_nothing(env):
    tmp, log = env
    predicted = sync(files(tmp), ["x-web.service"], check_mode=True)
    assert predicted["changed"] and predicted["enabled"] == ["x-web.service"] and not predicted["daemon_reloaded"]
    assert not (tmp / "cfg" / ".env").exists() and log.read_text() == ""


def test_check_mode_names_an_owner_group_and_directory_that_do_not_exist_yet(env):
    """A first deploy in check mode: role app's user, group and tree tasks only reported, so the
    account and shared/config are not there; the file is reported with them, nothing is written.
    A real call is refused, as ever, before anything is written."""
    tmp, log = env
    config = tmp / "opt" / "shared" / "config"
    item = {"path": str(config / ".env"), "content": "TOKEN=s3cret\n", "owner": "no-such-user-here",
            "group": "no-such-group-here", "mode": "0600"}
    predicted = sync([item], ["x-web.service"], check_mode=True)
    assert predicted["changed"] and predicted["changed_files"] == [item["path"]]
    assert predicted["reasons"] == {item["path"]: [
        "missing", "owner 'no-such-user-here' does not exist yet", "group 'no-such-group-here' does not exist yet",
        f"directory {config} does not exist yet"]}  # fmt: skip
    assert not (tmp / "opt").exists() and log.read_text() == "is-enabled x-web.service\n"  # read only
    log.write_text("")
    with pytest.raises(FilesError, match=r"\.env: owner 'no-such-user-here' does not exist on this host; create"):
        sync([item], ["x-web.service"])
    config.mkdir(parents=True)
    with pytest.raises(FilesError, match="owner 'no-such-user-here' does not exist on this host"):
        sync([item], ["x-web.service"])
    assert list(config.iterdir()) == [] and log.read_text() == ""
    item["owner"] = "root"
    with pytest.raises(FilesError, match="group 'no-such-group-here' does not exist on this host"):
        sync([item])
    with pytest.raises(FilesError, match="does not exist \\(create it first\\)"):  # a real run: no directory
        sync([{**item, "group": "root", "path": str(tmp / "none" / ".env")}])


def test_check_mode_names_the_owner_of_an_existing_file_that_does_not_exist_yet(env):
    tmp, _ = env
    sync(files(tmp))
    envfile = tmp / "cfg" / ".env"
    before = (envfile.read_bytes(), envfile.stat())
    item = {**files(tmp)[0], "owner": "no-such-user-here"}
    predicted = sync([item], check_mode=True)
    assert predicted["reasons"] == {str(envfile): ["owner", "owner 'no-such-user-here' does not exist yet"]}
    with pytest.raises(FilesError, match="owner 'no-such-user-here' does not exist on this host"):
        sync([item])
    assert (envfile.read_bytes(), envfile.stat()) == before


@pytest.mark.parametrize(("item", "message"), [
    ({"path": "relative/.env", "content": "x"}, "absolute"),
    ({"path": "/etc/../etc/x", "content": "x"}, "normalised"),
    ({"path": "/tmp/x", "content": "x", "mode": "rw"}, "not octal"),
    ({"path": "/tmp/x", "content": "x", "owner": "no-such-user-here"}, "owner 'no-such-user-here' does not exist"),
    ({"path": "/no/such/dir/x", "content": "x"}, "does not exist (create it first)"),
])
def test_bad_input_is_named_and_nothing_is_written(env, item, message):
    tmp, _ = env
    good = files(tmp)[0]
    with pytest.raises(FilesError, match=message.replace("(", r"\(").replace(")", r"\)")):
        sync([good, item])
    assert not Path(good["path"]).exists()


def test_unknown_unit_name_is_refused(env):
    tmp, _ = env
    with pytest.raises(FilesError, match="not a unit name"):
        sync(files(tmp), ["web; rm -rf /"])
