"""Extraction that cannot leave its target, on the controller's Python and on the hosts' (Debian 12's
3.11, without ``tarfile.data_filter``): a link planted in the target after the backup is never followed,
a chain of links inside the archive cannot write outside, and verify refuses what restore refuses."""

from __future__ import annotations

import io
import json
import os
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from ansible.module_utils import tradeops_backup as tb


def _archive(path: Path, members: list[tuple[str, str, str]]) -> Path:
    """A tar.gz of ``(kind, name, data-or-link-target)``: kind file, dir, symlink, hardlink, fifo."""
    with tarfile.open(path, "w:gz") as tar:
        for kind, name, value in members:
            info = tarfile.TarInfo(name)
            info.mode = 0o755 if kind == "dir" else 0o644
            data = None
            if kind == "file":
                data = value.encode()
                info.size = len(data)
            elif kind == "dir":
                info.type = tarfile.DIRTYPE
            elif kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, value
            elif kind == "hardlink":
                info.type, info.linkname = tarfile.LNKTYPE, value
            elif kind == "fifo":
                info.type = tarfile.FIFOTYPE
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


# (kind, name, value) lists. "out" is a sibling of the target (tmp/out); the target is tmp/target.
CHAIN = [("dir", "d", ""), ("dir", "e", ""), ("symlink", "d/S", "../e"), ("symlink", "L", "d/S/../../out"),
         ("file", "L/pwned", "written through a chain of links")]
CHAIN_LATE = [("dir", "d", ""), ("symlink", "L", "d/S/../../out"), ("dir", "e", ""), ("symlink", "d/S", "../e")]
EVIL = {
    "chain of links": CHAIN,
    "chain of links, the inner one last": CHAIN_LATE,
    "through a link of the archive": [("symlink", "l", "sub"), ("dir", "sub", ""), ("file", "l/x", "x")],
    "dot-dot": [("file", "../out/pwned", "x")],
    "absolute": [("file", "/tmp/pwned-by-tradeops-test", "x")],
    "absolute link": [("symlink", "etc", "/etc")],
    "link out": [("symlink", "up", "../out")],
    "hard link out": [("hardlink", "h", "../out/victim")],
    "hard link to a link": [("symlink", "s", "x"), ("hardlink", "h", "s")],
    "fifo": [("fifo", "f", "")],
}


@pytest.fixture
def site(tmp_path: Path) -> dict[str, Path]:
    out = tmp_path / "out"
    out.mkdir()
    (out / "victim").write_text("precious")
    target = tmp_path / "target"
    target.mkdir()
    (target / "kept.txt").write_text("not in the archive")
    return {"tmp": tmp_path, "out": out, "target": target}


def _outside_untouched(site: dict[str, Path]) -> None:
    assert sorted(p.name for p in site["out"].iterdir()) == ["victim"]
    assert (site["out"] / "victim").read_text() == "precious"
    assert not Path("/tmp/pwned-by-tradeops-test").exists()


Extract = Callable[[Path, Path], dict[str, Any]]


@pytest.fixture(params=["controller", "host"])
def extract(request: pytest.FixtureRequest, on_host: Callable[[str, dict[str, Any]], Any]) -> Extract:
    """extract_archive(archive, target, confirm=True) -> its result or {"error": message}, in this process
    (the controller's Python) or under the hosts' Python 3.11 as the ops agent runs it."""
    if request.param == "host":
        return lambda archive, target: on_host(
            "from pathlib import Path\n"
            "result = backup.extract_archive(Path(args['a']), Path(args['t']), None, confirm=True)",
            {"a": str(archive), "t": str(target)})

    def here(archive: Path, target: Path) -> dict[str, Any]:
        try:
            return tb.extract_archive(archive, target, None, confirm=True)
        except Exception as exc:  # what matters is the message and that nothing was written
            return {"error": f"{type(exc).__name__}: {exc}"}

    return here


@pytest.mark.parametrize("case", sorted(EVIL))
def test_an_unsafe_archive_is_refused_and_nothing_is_written(case: str, site: dict[str, Path],
                                                             extract: Extract) -> None:
    archive = _archive(site["tmp"] / "evil.tar.gz", EVIL[case])
    before = sorted(str(p.relative_to(site["target"])) for p in site["target"].rglob("*"))
    result = extract(archive, site["target"])
    assert "error" in result and "BackupError" in result["error"] and "unsafe member" in result["error"], result
    _outside_untouched(site)
    assert sorted(str(p.relative_to(site["target"])) for p in site["target"].rglob("*")) == before
    assert not [p for p in site["tmp"].iterdir() if ".restore-" in p.name]  # the staging directory is gone


def test_links_planted_in_the_target_after_the_backup_are_never_followed(site: dict[str, Path],
                                                                        extract: Extract) -> None:
    archive = _archive(site["tmp"] / "good.tar.gz", [
        ("dir", "sub", ""), ("file", "sub/payload", "restored"), ("file", "config.ini", "restored"),
        ("symlink", "latest", "sub/payload")])
    target = site["target"]
    (target / "sub").symlink_to(site["out"], target_is_directory=True)  # planted by the app's user
    (target / "config.ini").symlink_to(site["out"] / "victim")
    result = extract(archive, target)
    assert result.get("members") == 4, result
    _outside_untouched(site)
    assert not (target / "sub").is_symlink() and (target / "sub" / "payload").read_text() == "restored"
    assert not (target / "config.ini").is_symlink() and (target / "config.ini").read_text() == "restored"
    assert os.readlink(target / "latest") == "sub/payload"
    assert (target / "kept.txt").read_text() == "not in the archive"  # files not in the archive stay


def test_verify_refuses_what_restore_refuses(site: dict[str, Path]) -> None:
    """A backup whose archive holds a chain of links, signed with the set's key (an attacker holding the bucket
    cannot sign: tests/security/hostile/test_backup_auth.py; this is the layer under the signature, for a bug or a
    compromised host): verify names the unsafe member instead of passing, and restore writes nothing."""
    data = site["tmp"] / "data"
    data.mkdir()
    (data / "a.txt").write_text("a")
    key = site["tmp"] / "set.key"
    key.write_text("k" * 40)
    key.chmod(0o600)
    cfg = tb.load_config({"backup_root": str(site["tmp"] / "backups"), "paths": [{"name": "data", "path": str(data)}],
                          "verify": {"max_age_hours": None}, "encryption": {"key_file": str(key)}})
    tb.run_backup(cfg)
    directory = next(p for p in (site["tmp"] / "backups").iterdir() if not p.name.startswith("."))
    manifest = json.loads((directory / "manifest.json").read_text())
    stored = directory / manifest["files"][0]["path"]
    plain = site["tmp"] / "chain.tar.gz"
    _archive(plain, CHAIN)
    tb.encrypt_file(plain, stored, tb._keys(cfg))
    manifest["files"][0].update(size=stored.stat().st_size, sha256=tb.sha256_file(stored),
                                plain_sha256=tb.sha256_file(plain))
    manifest["items"][0]["members"] = len(CHAIN)
    (directory / "manifest.json").write_text(json.dumps(tb.auth.sign(manifest, tb._keys(cfg).key)))
    report = tb.verify_backup(cfg, scratch_restore=False, offsite=False, record=False)
    assert report["status"] == "failed", report
    assert any("unsafe member" in c["detail"] for c in report["checks"] if c["status"] == "failed"), report
    with pytest.raises(tb.BackupError, match="unsafe member"):
        tb.restore_item(cfg, None, "data", target=str(site["target"]), confirm=True)
    _outside_untouched(site)


# -- wheels: install_wheel unpacks the app's wheel into a fresh venv, whose bin/python* are links ----------------


@pytest.mark.parametrize(("files", "scripts"), [
    ({}, {"python": "tinyapp:main"}),  # a console script named like the venv's interpreter link
    ({"tiny_app-1.0.data/scripts/python3": "#!python\nprint('x')\n"}, {}),  # a data script of that name
    ({"tiny_app-1.0.data/data/../../out/pwned": "x"}, {}),  # '..' after the data directory's key
    ({"tiny_app-1.0.data/purelib/../../../out/pwned": "x"}, {}),
], ids=["console-script", "data-script", "data-dot-dot", "purelib-dot-dot"])
def test_a_wheel_never_writes_through_a_link_or_out_of_its_scheme(tmp_path: Path, files: dict[str, str],
                                                                  scripts: dict[str, str]) -> None:
    from ansible.module_utils import tradeops_release as tr
    from plugin_testlib import make_wheel

    out = tmp_path / "out"
    out.mkdir()
    victim = out / "python3.11"
    victim.write_text("the system's interpreter")
    venv = tmp_path / "release" / "venv"
    scheme = {k: str(venv / v) for k, v in {"purelib": "lib/site-packages", "platlib": "lib/site-packages",
                                            "scripts": "bin", "data": ".", "headers": "include"}.items()}
    (venv / "bin").mkdir(parents=True)
    for name in ("python", "python3"):
        (venv / "bin" / name).symlink_to(victim)  # as `python -m venv` makes them
    wheel = make_wheel(tmp_path, "tiny-app", "1.0", {"tinyapp/__init__.py": "def main(): pass\n", **files},
                       scripts=scripts)
    with pytest.raises(tr.ReleaseError, match=r"refusing|link"):
        tr.install_wheel(str(wheel), scheme, "/usr/bin/python3")
    assert victim.read_text() == "the system's interpreter"
    assert sorted(p.name for p in out.iterdir()) == ["python3.11"]
