"""No follow-the-symlink as root: app_files fixes owner and mode on the file it checked (a link swapped
in between is replaced, never followed) and tradeops-maintenance cleanup walks on directory descriptors
(a directory swapped for a link mid-walk is not entered, a link on the way to its root not followed).
The swaps are made at the worst moment, deterministically, by wrapping the call that comes right before."""

from __future__ import annotations

import os
import pwd
import stat
import time
from pathlib import Path
from typing import Any

import pytest
from ansible.module_utils import tradeops_files as tf
from ansible.module_utils import tradeops_maintenance as tm

NOBODY = pwd.getpwnam("nobody")


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """A root-only file outside every configured path (think /etc/shadow)."""
    out = tmp_path / "outside"
    out.mkdir()
    path = out / "shadow"
    path.write_text("root:secret\n")
    path.chmod(0o600)
    return path


def _unchanged(path: Path) -> None:
    st = path.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, 0, 0o600)
    assert path.read_text() == "root:secret\n"


@pytest.mark.parametrize("wrong", ["mode", "owner"])
def test_app_files_fixes_metadata_on_the_file_it_checked(tmp_path: Path, victim: Path, monkeypatch: Any,
                                                          wrong: str) -> None:
    config = tmp_path / "shared" / "config"  # the app's user owns it
    config.mkdir(parents=True)
    os.chown(config, NOBODY.pw_uid, NOBODY.pw_gid)
    env = config / ".env"
    env.write_text("TOKEN=x\n")
    env.chmod(0o644 if wrong == "mode" else 0o640)
    item = {"path": str(env), "content": "TOKEN=x\n", "mode": "0640", "owner": "nobody", "group": "nogroup"}
    if wrong == "mode":
        os.chown(env, NOBODY.pw_uid, NOBODY.pw_gid)
    checked = tf.differences

    def then_swap(spec: Any, check_mode: bool = False) -> list[str]:
        found = checked(spec, check_mode)
        env.unlink()
        env.symlink_to(victim)  # the app's user, right after the check
        return found

    monkeypatch.setattr(tf, "differences", then_swap)
    result = tf.sync([item], daemon_reload="never")
    assert result["changed_files"] == [str(env)]
    _unchanged(victim)
    assert not env.is_symlink() and env.read_text() == "TOKEN=x\n"  # replaced by the rendered file
    st = env.lstat()
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (NOBODY.pw_uid, 0o640)


def test_app_files_does_not_write_into_a_directory_reached_through_a_planted_link(tmp_path: Path,
                                                                                  victim: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chown(shared, NOBODY.pw_uid, NOBODY.pw_gid)
    (shared / "config").symlink_to(victim.parent, target_is_directory=True)  # planted by the app's user
    with pytest.raises(tf.FilesError, match="symbolic link"):
        tf.sync([{"path": str(shared / "config" / "shadow"), "content": "pwned\n", "mode": "0644"}],
                daemon_reload="never")
    _unchanged(victim)
    assert sorted(p.name for p in victim.parent.iterdir()) == ["shadow"]


def _old(path: Path, now: float) -> None:
    os.utime(path, (now - 30 * 86400,) * 2, follow_symlinks=False)


def test_cleanup_does_not_enter_a_directory_swapped_for_a_link_mid_walk(tmp_path: Path, victim: Path,
                                                                        monkeypatch: Any) -> None:
    now = time.time()
    root = tmp_path / "app" / "cache"
    (root / "z").mkdir(parents=True)
    (root / "z" / "old.bin").write_text("stale cache")
    (victim.parent / "old.bin").write_text("precious, and old")
    for path in (root / "z" / "old.bin", victim.parent / "old.bin", victim):
        _old(path, now)
    listing = os.scandir
    swapped: list[str] = []

    def swap_then_list(target: Any = ".") -> Any:
        where = os.readlink(f"/proc/self/fd/{target}") if isinstance(target, int) else os.fspath(target)
        if os.path.normpath(where) == str(root / "z") and not swapped:
            os.rename(root / "z", root / "z.moved")
            (root / "z").symlink_to(victim.parent, target_is_directory=True)  # the app's user, mid-walk
            swapped.append(where)
        return listing(target)

    monkeypatch.setattr(os, "scandir", swap_then_list)
    result = tm.cleanup_dir(root, 7, now=now)
    monkeypatch.undo()
    assert swapped, "the walk never listed the directory"
    assert (victim.parent / "old.bin").read_text() == "precious, and old"
    _unchanged(victim)
    assert not [r for r in result["removed"] if "outside" in r], result


def test_cleanup_does_not_follow_a_planted_link_on_the_way_to_its_root(tmp_path: Path, victim: Path) -> None:
    now = time.time()
    app = tmp_path / "app"
    app.mkdir()
    os.chown(app, NOBODY.pw_uid, NOBODY.pw_gid)
    (victim.parent / "cache").mkdir()
    (victim.parent / "cache" / "old.bin").write_text("precious, and old")
    _old(victim.parent / "cache" / "old.bin", now)
    (app / "shared").symlink_to(victim.parent, target_is_directory=True)  # a directory when it was configured
    result = tm.cleanup_dir(app / "shared" / "cache", 7, now=now)
    assert (victim.parent / "cache" / "old.bin").read_text() == "precious, and old"
    assert result["status"] in ("skipped", "failed") and not result["removed"], result
    assert "symbolic link" in result.get("detail", "") + " ".join(result["errors"]), result


def test_a_backup_never_reads_through_a_link_swapped_in_mid_walk(tmp_path: Path, victim: Path,
                                                                 monkeypatch: Any) -> None:
    """The app's user swaps a file of its data directory for a link to a root-only file right after the
    backup looked at it: the archive (readable by whoever holds the bucket) must not get that file's content."""
    import tarfile

    from ansible.module_utils import tradeops_backup as tb

    data = tmp_path / "shared" / "data"
    data.mkdir(parents=True)
    os.chown(data, NOBODY.pw_uid, NOBODY.pw_gid)
    (data / "report.csv").write_text("a,b\n")
    (data / "z.txt").write_text("z\n")
    looked: list[str] = []
    real_stat, real_lstat = os.stat, os.lstat

    def then_swap(real: Any) -> Any:
        def look(path: Any, *args: Any, **kwargs: Any) -> Any:
            result = real(path, *args, **kwargs)
            if str(path).endswith("report.csv") and not looked and stat.S_ISREG(result.st_mode):
                looked.append(os.fspath(path))
                (data / "report.csv").unlink()
                (data / "report.csv").symlink_to(victim)  # the app's user, right after the look
            return result
        return look

    monkeypatch.setattr(os, "stat", then_swap(real_stat))
    monkeypatch.setattr(os, "lstat", then_swap(real_lstat))
    out = tmp_path / "data.tar.gz"
    tb.backup_paths({"name": "data", "path": str(data)}, out, None, set())
    monkeypatch.undo()
    assert looked, "the backup never looked at report.csv"
    with tarfile.open(out) as tar:
        contents = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]
    assert contents.get("report.csv", b"a,b\n") == b"a,b\n", contents  # the old content, or not at all
    assert b"root" not in b"".join(contents.values()) and contents.get("z.txt") == b"z\n", contents


def test_a_sqlite_restore_does_not_write_through_a_planted_link(tmp_path: Path, victim: Path) -> None:
    """The app's user replaces its database file by a link to a root-only file before a restore: the restore
    refuses it, the file behind the link stays as it was."""
    import sqlite3

    from ansible.module_utils import tradeops_backup as tb

    source = tmp_path / "backup.sqlite3"
    with sqlite3.connect(source) as conn:
        conn.execute("CREATE TABLE t (x)")
    conn.close()
    data = tmp_path / "shared" / "data"
    data.mkdir(parents=True)
    os.chown(data, NOBODY.pw_uid, NOBODY.pw_gid)
    empty = victim.parent / "empty.conf"  # a root-only file SQLite would take for an empty database
    empty.write_bytes(b"")
    empty.chmod(0o600)
    (data / "app.db").symlink_to(empty)
    with pytest.raises(tb.BackupError, match="symbolic link"):
        tb.restore_sqlite(source, data / "app.db", confirm=True)
    assert empty.read_bytes() == b"" and stat.S_IMODE(empty.stat().st_mode) == 0o600


def test_placing_an_rdb_fixes_mode_and_owner_on_the_file_it_wrote(tmp_path: Path, victim: Path,
                                                                  monkeypatch: Any) -> None:
    """Redis's directory belongs to its user, who swaps the temporary RDB for a link right after it is written:
    root's chmod/chown must not follow it, and the link is not put in place of dump.rdb."""
    from ansible.module_utils import tradeops_backup as tb

    source = tmp_path / "backup.rdb"
    source.write_bytes(b"REDIS0009\xff" + bytes(8))  # an empty RDB (no keys, no checksum)
    redis_dir = tmp_path / "redis"
    redis_dir.mkdir()
    os.chown(redis_dir, NOBODY.pw_uid, NOBODY.pw_gid)
    target = redis_dir / "dump.rdb"
    target.write_bytes(b"old")
    os.chown(target, NOBODY.pw_uid, NOBODY.pw_gid)
    target.chmod(0o660)
    synced: list[int] = []
    real_fsync = os.fsync

    def then_swap(fd: int) -> None:
        real_fsync(fd)
        tmp = next((p for p in redis_dir.iterdir() if p.name.startswith(".dump.rdb.")), None)
        if tmp is not None and not synced:
            synced.append(fd)
            tmp.unlink()
            tmp.symlink_to(victim)  # redis's user, right after the RDB was written

    monkeypatch.setattr(os, "fsync", then_swap)
    with pytest.raises(tb.BackupError, match="replaced"):
        tb.place_redis_rdb(source, target, confirm=True)
    monkeypatch.undo()
    assert synced
    _unchanged(victim)
    assert not target.is_symlink() and target.read_bytes() == b"old"
