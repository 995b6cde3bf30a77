"""module_utils/tradeops_release.py against real trees: real wheels, real offline pip and
virtualenvs made with the hosts' interpreter (/usr/bin/python3), real symlinks and locks."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from ansible.module_utils import tradeops_release as tr
from ansible.module_utils.tradeops_release import ReleaseError, ReleaseStore
from plugin_testlib import HOST_PYTHON, build_wheelhouse, make_wheel, tree_snapshot

pytestmark = pytest.mark.skipif(not os.path.exists(HOST_PYTHON), reason="needs the host interpreter /usr/bin/python3")


@pytest.fixture
def fresh_store(tmp_path: Path) -> ReleaseStore:
    """A host where nothing was deployed yet."""
    return ReleaseStore(str(tmp_path / "app"), actor="tester", host=socket.gethostname())


@pytest.fixture(scope="session")
def seeded_layer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The dependency layer of tinydep 1.0, built once by a real create."""
    root = tmp_path_factory.mktemp("seed")
    seed = ReleaseStore(str(root / "app"), actor="seed")
    wheelhouse = build_wheelhouse(root / "wh", "0.1")
    result = seed.create(version="0.1", wheelhouse=str(wheelhouse), package="tiny-app", python=HOST_PYTHON)
    return Path(result["deps_path"])


@pytest.fixture
def store(tmp_path: Path, seeded_layer: Path) -> ReleaseStore:
    """A host that already has the dependency layer of tinydep 1.0 (as after any earlier
    deploy), so that creates in most tests take the fast path; tests of the first build use
    ``fresh_store``."""
    path = tmp_path / "app"
    (path / "deps").mkdir(parents=True)
    shutil.copytree(seeded_layer, path / "deps" / seeded_layer.name, symlinks=True)
    return ReleaseStore(str(path), actor="tester", host=socket.gethostname())


def create(store: ReleaseStore, version: str, wheelhouse: str, **kwargs: object) -> dict:
    return store.create(version=version, wheelhouse=wheelhouse, package="tiny-app", python=HOST_PYTHON, **kwargs)


def run_in_release(store: ReleaseStore, release: str, *argv: str) -> str:
    proc = subprocess.run([os.path.join(store.release_path(release), "venv", "bin", *argv)],
                          capture_output=True, text=True, check=True, env={"PATH": "/usr/bin:/bin"})  # fmt: skip
    return proc.stdout.strip()


# -- create ------------------------------------------------------------------------------


def test_create_installs_app_and_dependency_offline_into_a_read_only_release(fresh_store, wheelhouses):
    store = fresh_store
    result = create(store, "1.0", wheelhouses("1.0"))
    rid = result["release"]
    assert result["changed"] and not result["existed"] and result["deps_reused"] is False
    assert rid.startswith("1.0-") and tr.RELEASE_ID_RE.match(rid)
    path = Path(result["release_path"])
    assert path == Path(store.path, "releases", rid)
    # the app's console script runs with the release's venv, importing the dependency layer
    assert run_in_release(store, rid, "tinyapp") == "tinyapp 1.0 tinydep 1.0"
    # a dependency's console script is in the release venv too
    assert run_in_release(store, rid, "tinydep-version") == "1.0"
    pth = next(path.glob("venv/lib/python3*/site-packages/_tradeops_deps.pth")).read_text().strip()
    assert pth == result["deps_path"] and os.path.isdir(pth)
    # no temporary path survives the rename into place
    for script in (path / "venv" / "bin").iterdir():
        if script.is_file() and not script.is_symlink():
            assert ".tmp-" not in script.read_text(errors="replace"), script
    # shared paths linked, shared tree made
    assert os.readlink(path / "data") == os.path.join(store.path, "shared", "data")
    for sub in ("data", "logs", "config"):
        assert os.path.isdir(os.path.join(store.path, "shared", sub))
    # read-only for everyone but the owner (root on hosts)
    for base, dirs, files in os.walk(path):
        for name in dirs + files:
            st = os.lstat(os.path.join(base, name))
            if not stat.S_ISLNK(st.st_mode):
                assert not st.st_mode & 0o022, os.path.join(base, name)
    meta = json.loads((path / "release.json").read_text())
    assert meta["version"] == "1.0" and meta["wheelhouse_sha256"] == result["wheelhouse_sha256"]
    assert meta["requires"] == ["tinydep>=1.0"]
    assert set(result["timings"]) >= {"deps_s", "venv_s", "install_s", "total_s"}
    assert not [n for n in os.listdir(store.releases_dir) if n.startswith(".")]


def test_second_create_with_same_dependencies_reuses_the_layer(fresh_store, wheelhouses, record_property):
    store = fresh_store
    first = create(store, "1.0", wheelhouses("1.0"))
    layer = first["deps_path"]
    layer_inode = os.stat(layer).st_ino
    second = create(store, "1.1", wheelhouses("1.1"))
    assert second["changed"] and second["deps_reused"] is True
    assert second["deps_sha256"] == first["deps_sha256"] and os.stat(layer).st_ino == layer_inode
    assert os.listdir(os.path.join(store.path, "deps")) == [first["deps_sha256"]]
    assert second["timings"]["deps_s"] * 10 < first["timings"]["deps_s"], "no install: a tenth of the first"
    assert second["timings"]["total_s"] < first["timings"]["total_s"]
    assert run_in_release(store, second["release"], "tinyapp") == "tinyapp 1.1 tinydep 1.0"
    record_property("create_without_reuse_s", first["timings"]["total_s"])
    record_property("create_with_reuse_s", second["timings"]["total_s"])
    print(f"create without reuse {first['timings']['total_s']} s, with reuse {second['timings']['total_s']} s")


def test_changed_dependency_builds_a_new_layer(store, wheelhouses):
    first = create(store, "1.0", wheelhouses("1.0", dep_version="1.0"))
    second = create(store, "2.0", wheelhouses("2.0", dep_version="2.0", requires=("tinydep>=2",)))
    assert second["deps_reused"] is False and second["deps_sha256"] != first["deps_sha256"]
    assert run_in_release(store, second["release"], "tinyapp") == "tinyapp 2.0 tinydep 2.0"
    assert run_in_release(store, first["release"], "tinyapp") == "tinyapp 1.0 tinydep 1.0"


def test_app_without_dependencies_needs_no_layer(fresh_store, wheelhouses):
    store = fresh_store
    result = create(store, "1.0", wheelhouses("1.0", requires=()))
    assert result["deps_sha256"] is None and result["deps_path"] is None
    assert not os.listdir(os.path.join(store.path, "deps"))


def test_requirements_the_app_does_not_declare_are_installed_with_their_console_scripts(store, wheelhouses):
    """An app that runs under a server it does not depend on (gunicorn for a Flask app): app_requirements."""
    wheelhouse = wheelhouses("1.0", requires=())  # holds tinydep's wheel, which the app does not require
    bare = create(store, "1.0", wheelhouse)
    assert bare["deps_sha256"] is None
    served = create(store, "1.1", wheelhouses("1.1", requires=()), requirements=["tinydep>=1.0"])
    assert served["deps_sha256"] and served["deps_reused"]  # the same layer as an app that requires tinydep
    assert run_in_release(store, served["release"], "tinydep-version") == "1.0"
    assert store.read_meta(served["release"])["requires"] == ["tinydep>=1.0"]


@pytest.mark.parametrize("requirement", ["--index-url=http://evil.invalid/simple", "tinydep @ https://x.invalid/t.whl",
                                         "./tinydep", "/tmp/tinydep.whl", "tinydep\n--pre", 3])
def test_a_requirement_that_is_no_specifier_is_refused_before_anything_is_written(fresh_store, wheelhouses,
                                                                                   requirement):
    with pytest.raises(ReleaseError, match="is not a requirement specifier"):
        create(fresh_store, "1.0", wheelhouses("1.0"), requirements=[requirement])
    assert not os.path.exists(os.path.join(fresh_store.path, "releases"))


def test_recreating_the_same_version_and_wheelhouse_changes_nothing(store, wheelhouses):
    wheelhouse = wheelhouses("1.0")
    first = create(store, "1.0", wheelhouse)
    ledger_before = Path(store.ledger_path).read_text()
    snapshot = tree_snapshot(store.path)
    again = create(store, "1.0", wheelhouse)
    assert again["changed"] is False and again["existed"] is True
    assert again["release"] == first["release"]
    assert tree_snapshot(store.path) == snapshot
    assert Path(store.ledger_path).read_text() == ledger_before
    # the same version from a different wheelhouse is a new release
    other = create(store, "1.0", wheelhouses("1.0", dep_version="1.1"))
    assert other["changed"] and other["release"] != first["release"]


def test_create_in_check_mode_writes_nothing(fresh_store, wheelhouses):
    store = fresh_store
    wheelhouse = wheelhouses("1.0")
    result = create(store, "1.0", wheelhouse, check_mode=True)
    assert result["changed"] and result["release"].startswith("1.0-") and result["deps_reused"] is False
    assert not os.path.exists(store.path)
    create(store, "1.0", wheelhouse)
    snapshot = tree_snapshot(store.path)
    predicted = create(store, "1.1", wheelhouses("1.1"), check_mode=True)
    assert predicted["changed"] and predicted["deps_reused"] is True
    assert tree_snapshot(store.path) == snapshot


def test_failed_create_leaves_no_release_and_records_the_failure(fresh_store, wheelhouses):
    store = fresh_store
    wheelhouse = Path(wheelhouses("1.0", requires=("tinydep>=1.0", "missingdep>=1")))
    with pytest.raises(ReleaseError) as failure:
        create(store, "1.0", str(wheelhouse))
    assert "missingdep" in str(failure.value) and "pip wheel" in str(failure.value)
    assert store.release_ids() == []
    assert not [n for n in os.listdir(store.releases_dir)]
    assert not [n for n in os.listdir(os.path.join(store.path, "deps"))]
    entry = store.ledger()[-1]
    assert entry["action"] == "create" and entry["outcome"] == "failed" and "missingdep" in entry["reason"]


@pytest.mark.parametrize(("wheelhouse_files", "package", "message"), [
    ({}, "tiny-app", "holds no .whl"),
    ({"other-1.0-py3-none-any.whl": None}, "tiny-app", "set package="),
])  # fmt: skip
def test_bad_wheelhouse_is_reported_before_any_change(fresh_store, tmp_path, wheelhouse_files, package, message):
    store = fresh_store
    wheelhouse = tmp_path / "wh"
    wheelhouse.mkdir()
    for name in wheelhouse_files:
        make_wheel(wheelhouse, name.split("-")[0], "1.0", {"x.py": ""})
    with pytest.raises(ReleaseError, match=message):
        store.create(version="1.0", wheelhouse=str(wheelhouse), package=package, python=HOST_PYTHON)
    assert not os.path.exists(store.path)


@pytest.mark.parametrize("version", ["", "../etc", "1.0/x", "-1", "a" * 101])
def test_unsafe_version_is_refused(store, wheelhouses, version):
    with pytest.raises(ReleaseError, match="not usable as a release name"):
        create(store, version, wheelhouses("1.0"))


def test_tampered_wheel_is_refused(fresh_store, tmp_path):
    store = fresh_store
    wheelhouse = tmp_path / "wh"
    wheelhouse.mkdir()
    wheel = make_wheel(wheelhouse, "tiny-app", "1.0", {"tinyapp/__init__.py": "X = 1\n"})
    import zipfile

    with zipfile.ZipFile(wheel, "a") as archive:
        archive.writestr("tinyapp/extra.py", "import os\n")  # not in RECORD
    with pytest.raises(ReleaseError, match="not listed in RECORD"):
        store.create(version="1.0", wheelhouse=str(wheelhouse), package="tiny-app", python=HOST_PYTHON)
    assert store.release_ids() == []


def test_kill_during_create_never_leaves_a_half_release(tmp_path, wheelhouses):
    """SIGKILL a create at different moments: a release under its final name is always complete."""
    wheelhouse = wheelhouses("1.0")
    path = tmp_path / "app"
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import tradeops_release as tr; "
        f"tr.ReleaseStore(sys.argv[2], actor='t').create(version='1.0', wheelhouse=sys.argv[3], "
        f"package='tiny-app', python={HOST_PYTHON!r})"
    )
    module_utils = str(Path(tr.__file__).parent)
    for delay in (0.1, 0.3, 0.5):
        proc = subprocess.Popen([sys.executable, "-c", code, module_utils, str(path), wheelhouse])
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        store = ReleaseStore(str(path), actor="t")
        for rid in store.release_ids():
            assert store.read_meta(rid)["version"] == "1.0"
            assert os.path.exists(os.path.join(store.release_path(rid), "venv", "bin", "tinyapp"))
    # the next run recovers: it finds the complete release or builds one
    store = ReleaseStore(str(path), actor="t")
    result = create(store, "1.0", wheelhouse)
    assert run_in_release(store, result["release"], "tinyapp") == "tinyapp 1.0 tinydep 1.0"


# -- activate / rollback / mark ----------------------------------------------------------


def test_activate_switches_current_atomically(store, wheelhouses):
    one = create(store, "1.0", wheelhouses("1.0"))["release"]
    two = create(store, "2.0", wheelhouses("2.0"))["release"]
    result = store.activate(release=one)
    assert result["changed"] and result["previous"] is None
    assert os.readlink(os.path.join(store.path, "current")) == f"releases/{one}"
    assert result["diff"]["before"] == "current absent\n" and result["diff"]["after"] == f"current -> releases/{one}\n"
    assert store.activate(release=one)["changed"] is False

    # readers never see a missing or broken current while it is switched back and forth
    seen: list[str] = []
    stop = threading.Event()

    def reader() -> None:
        link = os.path.join(store.path, "current")
        while not stop.is_set():
            try:
                seen.append(os.path.basename(os.readlink(link)))
            except OSError as exc:
                seen.append(f"ERROR {exc}")

    thread = threading.Thread(target=reader)
    thread.start()
    for index in range(100):
        store.switch(two if index % 2 == 0 else one, check_mode=False)
    stop.set()
    thread.join()
    assert seen and set(seen) <= {one, two}
    assert not [n for n in os.listdir(store.path) if ".tmp-" in n]


def test_activate_by_version_and_in_check_mode(store, wheelhouses):
    one = create(store, "1.0", wheelhouses("1.0"))["release"]
    two = create(store, "2.0", wheelhouses("2.0"))["release"]
    store.activate(release=one)
    snapshot = tree_snapshot(store.path)
    ledger = Path(store.ledger_path).read_text()
    result = store.activate(version="2.0", check_mode=True)
    assert result["changed"] and result["release"] == two and result["previous"] == one
    assert result["diff"] == {"before": f"current -> releases/{one}\n", "after": f"current -> releases/{two}\n",
                              "before_header": os.path.join(store.path, "current"),
                              "after_header": os.path.join(store.path, "current")}  # fmt: skip
    assert tree_snapshot(store.path) == snapshot and Path(store.ledger_path).read_text() == ledger
    assert store.current() == one


def test_activate_unknown_release_lists_the_candidates(store, wheelhouses):
    one = create(store, "1.0", wheelhouses("1.0"))["release"]
    with pytest.raises(ReleaseError) as failure:
        store.activate(release="9.9-20990101T000000Z")
    assert one in str(failure.value) and failure.value.details["candidates"] == [one]
    with pytest.raises(ReleaseError, match=r"no release of version .3\.0."):
        store.activate(version="3.0")


def test_rollback_goes_to_the_previous_good_release_by_ledger_order(store, wheelhouses):
    rel = {v: create(store, v, wheelhouses(v))["release"] for v in ("1.0", "2.0", "3.0", "4.0")}
    for version in ("1.0", "2.0"):
        store.activate(release=rel[version])
        store.mark(outcome="good")
    store.activate(release=rel["3.0"])
    store.mark(outcome="bad", reason="readiness failed")
    store.activate(release=rel["4.0"])
    # mtimes say nothing about release order: make the oldest release look the newest
    future = time.time() + 3600
    os.utime(store.release_path(rel["1.0"]), (future, future))

    result = store.rollback(reason="gate failed")
    assert result["changed"] and result["release"] == rel["2.0"] and result["previous"] == rel["4.0"]
    assert store.current() == rel["2.0"]
    entry = store.ledger()[-1]
    assert entry["action"] == "rollback" and entry["previous"] == rel["4.0"] and entry["reason"] == "gate failed"
    # again: skips the bad 3.0 (it is newer anyway) and goes to 1.0
    assert store.rollback()["release"] == rel["1.0"]
    with pytest.raises(ReleaseError) as failure:
        store.rollback()
    assert "no good release to roll back to" in str(failure.value)
    assert "-e rollback_to=" in str(failure.value)
    assert {c["release"] for c in failure.value.details["candidates"]} == set(rel.values())


def test_named_rollback_and_bad_releases(store, wheelhouses):
    rel = {v: create(store, v, wheelhouses(v))["release"] for v in ("1.0", "2.0", "3.0")}
    store.activate(release=rel["1.0"])
    store.mark(outcome="good")
    store.activate(release=rel["2.0"])
    store.mark(outcome="bad")
    store.activate(release=rel["3.0"])
    assert store.rollback(release=rel["1.0"])["release"] == rel["1.0"]
    assert store.rollback(version="3.0")["release"] == rel["3.0"]
    with pytest.raises(ReleaseError, match="marked bad") as failure:
        store.rollback(release=rel["2.0"])
    assert failure.value.details["candidates"] == [rel["1.0"]]
    with pytest.raises(ReleaseError, match="marked bad"):
        store.activate(release=rel["2.0"])
    assert store.activate(release=rel["2.0"], allow_bad=True)["changed"]


def test_mark_is_idempotent_and_defaults_to_current(store, wheelhouses):
    one = create(store, "1.0", wheelhouses("1.0"))["release"]
    with pytest.raises(ReleaseError, match="nothing is current"):
        store.mark(outcome="good")
    store.activate(release=one)
    first = store.mark(outcome="good")
    assert first["changed"] and first["release"] == one and first["previous_status"] == "unknown"
    assert store.mark(outcome="good")["changed"] is False
    assert store.mark(outcome="bad", check_mode=True)["changed"] is True
    assert [r.status for r in store.releases()] == ["good"]


# -- prune -------------------------------------------------------------------------------


def test_prune_keeps_newest_current_last_good_and_rollback_target(store, wheelhouses):
    deps = {3: "1.3", 4: "1.4"}  # the releases prune removes have dependency layers of their own
    rel = [create(store, f"{n}.0", wheelhouses(f"{n}.0", dep_version=deps.get(n, "1.0")))["release"]
           for n in range(1, 7)]  # fmt: skip
    store.activate(release=rel[0])
    store.mark(outcome="good")  # 1.0 good: the rollback target of 2.0
    store.activate(release=rel[1])  # 2.0 current (unknown status)
    for bad in rel[2:]:
        store.mark(release=bad, outcome="bad")
    check = store.prune(keep=2, check_mode=True)
    assert check["changed"] and os.path.isdir(store.release_path(rel[2]))
    result = store.prune(keep=2)
    assert result["removed"] == [rel[2], rel[3]] == check["removed"]
    assert result["kept"] == [rel[0], rel[1], rel[4], rel[5]]
    assert sorted(store.release_ids()) == sorted(result["kept"])
    # the dependency layers of removed releases went with them
    kept_layers = {store.read_meta(r)["deps_sha256"] for r in result["kept"]}
    assert set(os.listdir(os.path.join(store.path, "deps"))) == kept_layers
    assert len(result["removed_layers"]) == 2
    assert store.prune(keep=2)["changed"] is False
    assert store.ledger()[-1]["action"] == "prune"
    with pytest.raises(ReleaseError, match="keep at least 1"):
        store.prune(keep=0)


def test_prune_removes_shipped_wheelhouses_no_kept_release_uses(store, wheelhouses):
    shipped = os.path.join(store.path, "wheelhouses")
    os.makedirs(shipped, exist_ok=True)
    paths = {}
    for n in (1, 2, 3):
        paths[n] = os.path.join(shipped, f"tiny-app-{n}.0")
        shutil.copytree(wheelhouses(f"{n}.0"), paths[n])
    rel = {n: create(store, f"{n}.0", paths[n])["release"] for n in (1, 2, 3)}
    assert store.read_meta(rel[1])["wheelhouse"] == paths[1]
    for n in (1, 2, 3):
        store.activate(release=rel[n])
        store.mark(outcome="good")
    orphan = os.path.join(shipped, "tiny-app-9.0")  # shipped by a run that never created its release
    fresh = os.path.join(shipped, "tiny-app-10.0")  # shipped just now by a deploy waiting for the lock
    os.makedirs(orphan)
    os.makedirs(fresh)
    old = time.time() - 3600
    for path in (*paths.values(), orphan):
        os.utime(path, (old, old))
    result = store.prune(keep=2)
    assert result["removed"] == [rel[1]]
    assert result["removed_wheelhouses"] == [paths[1], orphan]
    assert sorted(os.listdir(shipped)) == ["tiny-app-10.0", "tiny-app-2.0", "tiny-app-3.0"]
    assert store.prune(keep=2)["changed"] is False


def test_prune_removes_leftovers_of_interrupted_creates(store, wheelhouses):
    create(store, "1.0", wheelhouses("1.0"))
    leftover = os.path.join(store.releases_dir, ".tmp-1.1-20990101T000000Z-abcd")
    os.makedirs(os.path.join(leftover, "venv"))
    assert store.prune(keep=5)["changed"] is False  # too young: may belong to a running create
    old = time.time() - 3600
    os.utime(leftover, (old, old))
    result = store.prune(keep=5)
    assert result["removed_partial"] == [leftover] and not os.path.exists(leftover)


@pytest.mark.parametrize(("order", "status", "current", "keep", "removed"), [
    (["a", "b", "c"], {}, "c", 5, []),
    (["a", "b", "c", "d"], {}, "d", 1, ["a", "b", "c"]),
    (["a", "b", "c", "d"], {"a": "good"}, "d", 1, ["b", "c"]),
    (["a", "b", "c", "d"], {"a": "good", "b": "good"}, "a", 1, ["c"]),  # after a rollback to a
    (["a", "b", "c", "d"], {"d": "bad", "c": "bad"}, "b", 2, ["a"]),  # bad ones counted like the others
])  # fmt: skip
def test_plan_prune(order, status, current, keep, removed):
    kept, gone = tr.plan_prune(order, status, current, keep)
    assert gone == removed and kept == [r for r in order if r not in removed]


# -- list and ledger ---------------------------------------------------------------------


def test_list_reports_versions_status_and_current(store, wheelhouses):
    one = create(store, "1.0", wheelhouses("1.0"))["release"]
    two = create(store, "2.0", wheelhouses("2.0"))["release"]
    store.activate(release=one)
    store.mark(outcome="good")
    store.activate(release=two)
    listing = store.listing()
    assert [r["id"] for r in listing["releases"]] == [two, one]
    assert [(r["version"], r["status"], r["current"]) for r in listing["releases"]] == [
        ("2.0", "unknown", True), ("1.0", "good", False)]  # fmt: skip
    assert listing["current"] == two and listing["last_good"] == one and listing["previous_good"] == one
    assert listing["releases"][0]["created"].endswith("Z")


def test_ledger_has_one_line_per_action_with_the_audit_fields(store, wheelhouses):
    wheelhouse = wheelhouses("1.0")
    one = create(store, "1.0", wheelhouse)
    store.lock(reason="deploy 1.0")
    store.activate(release=one["release"])
    store.mark(outcome="good", reason="health gate passed")
    store.unlock()
    lines = Path(store.ledger_path).read_text().splitlines()
    entries = [json.loads(line) for line in lines]
    assert [e["action"] for e in entries] == ["create", "lock", "activate", "mark", "unlock"]
    for entry in entries:
        assert {"time", "action", "user", "host", "version", "release", "wheelhouse_sha256", "outcome",
                "duration_s", "reason", "previous"} <= set(entry)  # fmt: skip
        assert entry["user"] == "tester" and entry["time"].endswith("Z")
    assert entries[0]["wheelhouse_sha256"] == one["wheelhouse_sha256"] and entries[0]["duration_s"] > 0
    assert entries[3]["outcome"] == "good" and entries[3]["reason"] == "health gate passed"
    assert stat.S_IMODE(os.stat(store.ledger_path).st_mode) == 0o640


def test_a_torn_ledger_line_is_skipped_not_fatal(store, wheelhouses):
    one = create(store, "1.0", wheelhouses("1.0"))["release"]
    with open(store.ledger_path, "a", encoding="utf-8") as handle:
        handle.write('{"action": "mark", "release": "')  # a kill in the middle of a write
    assert store.listing()["ledger_unreadable_lines"] == 1
    store.activate(release=one)
    assert store.mark(outcome="good")["changed"]
    assert store.listing()["releases"][0]["status"] == "good"


def test_release_order_falls_back_to_the_id_timestamp_for_releases_the_ledger_lacks():
    ledger = [{"action": "create", "outcome": "created", "release": r}
              for r in ("b-20250102T000000Z", "a-20250104T000000Z")]  # fmt: skip
    on_disk = ["a-20250104T000000Z", "b-20250102T000000Z", "c-20250101T000000Z", "d-20250103T000000Z"]
    assert tr.release_order(on_disk, ledger) == [
        "c-20250101T000000Z", "b-20250102T000000Z", "d-20250103T000000Z", "a-20250104T000000Z"]  # fmt: skip


# -- lock --------------------------------------------------------------------------------


def test_second_lock_is_refused_with_the_holders_details(store):
    first = store.lock(owner="alice", host="ctl1", pid=4242, reason="deploy 2.0")
    assert first["changed"] and first["lock"]["owner"] == "alice"
    holder = json.loads(Path(store.lock_path).read_text())
    assert holder["owner"] == "alice" and holder["host"] == "ctl1" and holder["pid"] == 4242
    assert holder["reason"] == "deploy 2.0" and holder["time"].endswith("Z")
    with pytest.raises(ReleaseError) as failure:
        store.lock(owner="bob", host="ctl2", pid=1, reason="deploy 3.0")
    message = str(failure.value)
    assert "alice@ctl1 pid 4242" in message and "deploy 2.0" in message and "force_unlock" in message
    assert failure.value.details["stale"] is False and failure.value.details["lock"]["owner"] == "alice"
    # the holder itself may re-take it (same owner, host and pid): no change
    assert store.lock(owner="alice", host="ctl1", pid=4242)["changed"] is False


def test_lock_older_than_the_limit_is_stale_and_broken_only_with_force(store):
    store.lock(owner="alice", host="ctl1", pid=4242, reason="deploy 2.0")
    later = ReleaseStore(store.path, actor="bob", clock=lambda: time.time() + 1801)
    with pytest.raises(ReleaseError) as failure:
        later.lock(owner="bob", host="ctl2", stale_after=1800)
    assert failure.value.details["stale"] is True
    assert "stale (older than 1800 s)" in str(failure.value) and "-e force_unlock=true" in str(failure.value)
    assert json.loads(Path(store.lock_path).read_text())["owner"] == "alice"
    broken = later.lock(owner="bob", host="ctl2", stale_after=1800, force=True)
    assert broken["changed"] and broken["stale"] and broken["broken"]["owner"] == "alice"
    assert json.loads(Path(store.lock_path).read_text())["owner"] == "bob"
    assert later.ledger()[-1]["outcome"] == "broken-and-acquired"


def test_lock_of_a_dead_process_on_this_host_is_stale(store):
    proc = subprocess.Popen(["true"])
    proc.wait()
    store.lock(owner="alice", host=socket.gethostname(), pid=proc.pid)
    with pytest.raises(ReleaseError) as failure:
        store.lock(owner="bob", host="ctl2")
    assert failure.value.details["stale"] is True and f"process {proc.pid}" in str(failure.value)
    # a live process on this host: not stale
    store.unlock(force=True)
    store.lock(owner="alice", host=socket.gethostname(), pid=os.getpid())
    with pytest.raises(ReleaseError) as failure:
        store.lock(owner="bob", host="ctl2")
    assert failure.value.details["stale"] is False


def test_lock_in_check_mode_and_unlock_rules(store):
    assert store.lock(owner="alice", host="ctl1", pid=7, check_mode=True)["changed"]
    assert not os.path.exists(store.lock_path)
    store.lock(owner="alice", host="ctl1", pid=7)
    with pytest.raises(ReleaseError, match="only its holder releases it"):
        store.unlock(owner="bob", host="ctl1", pid=7)
    assert store.unlock(owner="alice", host="ctl1", pid=7, check_mode=True)["changed"]
    assert os.path.exists(store.lock_path)
    released = store.unlock(owner="alice", host="ctl1", pid=7)
    assert released["changed"] and not released["forced"] and not os.path.exists(store.lock_path)
    assert store.unlock(owner="alice", host="ctl1", pid=7)["changed"] is False
    store.lock(owner="alice", host="ctl1", pid=7)
    assert store.unlock(owner="bob", host="ctl2", force=True)["forced"] is True
    assert not os.path.exists(store.lock_path)
    assert [n for n in os.listdir(store.path) if n.startswith("deploy.lock.")] == []


def test_only_one_of_many_concurrent_lockers_wins(tmp_path):
    path = str(tmp_path / "app")
    results: list[str] = []

    def take(index: int) -> None:
        try:
            ReleaseStore(path, actor=f"u{index}").lock(owner=f"u{index}", host="h", pid=index + 1)
            results.append("won")
        except ReleaseError:
            results.append("refused")

    threads = [threading.Thread(target=take, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results.count("won") == 1 and results.count("refused") == 15


def test_an_unreadable_lock_file_is_stale(store):
    os.makedirs(store.path, exist_ok=True)
    Path(store.lock_path).write_text("")
    with pytest.raises(ReleaseError) as failure:
        store.lock(owner="bob", host="h")
    assert failure.value.details["stale"] is True


def test_module_utils_run_on_the_hosts_python_without_ansible(tmp_path, wheelhouses):
    """The hosts run Debian's Python 3.11 (no Ansible): the store works there as a plain module."""
    code = (
        "import sys, json; sys.path.insert(0, sys.argv[1]); import tradeops_release as tr; "
        "s = tr.ReleaseStore(sys.argv[2], actor='t'); "
        "r = s.create(version='1.0', wheelhouse=sys.argv[3], package='tiny-app'); s.activate(release=r['release']); "
        "print(json.dumps(s.listing()['current']))"
    )
    out = subprocess.run([HOST_PYTHON, "-I", "-c", code, str(Path(tr.__file__).parent), str(tmp_path / "app"),
                          wheelhouses("1.0")], capture_output=True, text=True, check=True)  # fmt: skip
    assert json.loads(out.stdout).startswith("1.0-")


def test_app_user_reads_but_cannot_write_the_release_and_owns_shared(wheelhouses):
    """owner/group: shared/* belong to the app user; the release is the app group's, read-only."""
    import grp
    import pwd

    if os.geteuid() != 0:
        pytest.skip("needs root to chown, like the module on hosts")
    user, group = "nobody", grp.getgrgid(pwd.getpwnam("nobody").pw_gid).gr_name
    root = tempfile.mkdtemp(prefix="tradeops-own-")
    try:
        os.chmod(root, 0o755)  # noqa: S103 - the app user must reach the tree, as under /opt
        store = ReleaseStore(os.path.join(root, "app"), actor="t")
        result = create(store, "1.0", wheelhouses("1.0"), owner=user, group=group)
        data = os.stat(os.path.join(store.path, "shared", "data"))
        assert pwd.getpwuid(data.st_uid).pw_name == user and stat.S_IMODE(data.st_mode) == 0o750
        release = os.stat(result["release_path"])
        assert release.st_uid == 0 and grp.getgrgid(release.st_gid).gr_name == group
        venv_python = os.path.join(result["release_path"], "venv", "bin", "tinyapp")
        as_app = subprocess.run([venv_python], capture_output=True, text=True, user=user, check=False)
        assert as_app.stdout.strip() == "tinyapp 1.0 tinydep 1.0", as_app.stderr
        write = subprocess.run(["touch", os.path.join(result["release_path"], "x")], user=user, check=False,
                               capture_output=True)  # fmt: skip
        assert write.returncode != 0
        # same tree again: nothing to change
        assert create(store, "1.0", wheelhouses("1.0"), owner=user, group=group)["changed_dirs"] == []
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_dependency_layer_built_with_a_pip_wheel_when_the_interpreter_has_no_pip(tmp_path, wheelhouses):
    """Hosts with python3-venv but without python3-pip: pip runs from Debian's pip wheel."""
    bare = tmp_path / "bare"
    subprocess.run([HOST_PYTHON, "-m", "venv", "--without-pip", str(bare)], check=True)
    python = str(bare / "bin" / "python")
    pip = tr.find_pip(python)
    assert pip[-1].endswith(".whl/pip"), pip
    store = ReleaseStore(str(tmp_path / "app"), actor="t")
    result = store.create(version="1.0", wheelhouse=wheelhouses("1.0"), package="tiny-app", python=python)
    assert run_in_release(store, result["release"], "tinyapp") == "tinyapp 1.0 tinydep 1.0"


def write_manifest(wheelhouse: str, **overrides: object) -> None:
    """wheelhouse.json as scripts/build_wheelhouse.py writes it on the controller."""
    wheels = sorted(n for n in os.listdir(wheelhouse) if n.endswith(".whl"))
    files = {n: tr.sha256_file(os.path.join(wheelhouse, n)) for n in wheels}
    manifest = {"name": "tiny-app", "version": "1.0", "files": files, "sha256": tr.set_digest(files)} | overrides
    Path(wheelhouse, "wheelhouse.json").write_text(json.dumps(manifest))


def test_wheelhouse_manifest_gives_the_package_and_the_same_checksum(store, wheelhouses):
    wheelhouse = wheelhouses("1.0")
    write_manifest(wheelhouse)
    result = store.create(version="1.0", wheelhouse=wheelhouse, python=HOST_PYTHON)  # no package=
    manifest = json.loads(Path(wheelhouse, "wheelhouse.json").read_text())
    assert result["wheelhouse_sha256"] == manifest["sha256"]
    assert store.read_meta(result["release"])["package"] == "tiny-app"


@pytest.mark.parametrize(("change", "message"), [
    ("truncate", "different"),
    ("remove", "missing"),
    ("version", "built for version 9.9"),
])  # fmt: skip
def test_a_wheelhouse_that_does_not_match_its_manifest_is_refused(fresh_store, wheelhouses, change, message):
    wheelhouse = wheelhouses("1.0")
    write_manifest(wheelhouse, **({"version": "9.9"} if change == "version" else {}))
    dep = Path(wheelhouse, "tinydep-1.0-py3-none-any.whl")
    if change == "truncate":
        dep.write_bytes(dep.read_bytes()[:100])
    elif change == "remove":
        dep.unlink()
    with pytest.raises(ReleaseError, match=message):
        create(fresh_store, "1.0", wheelhouse)
    assert not os.path.exists(fresh_store.path)


def test_cli_rolls_back_on_the_host_without_ansible(store, wheelhouses):
    one = create(store, "1.0", wheelhouses("1.0"))["release"]
    two = create(store, "2.0", wheelhouses("2.0"))["release"]
    store.activate(release=one)
    store.mark(outcome="good")
    store.activate(release=two)
    cli = [HOST_PYTHON, "-I", tr.__file__, "--path", store.path, "--actor", "oncall"]
    proc = subprocess.run([*cli, "rollback", "--reason", "errors"], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["release"] == one and store.current() == one
    assert store.ledger()[-1]["user"] == "oncall"
    proc = subprocess.run([*cli, "rollback"], capture_output=True, text=True, check=False)
    assert proc.returncode == 1 and "no good release to roll back to" in proc.stderr
    proc = subprocess.run([*cli, "explode"], capture_output=True, text=True, check=False)
    assert proc.returncode == 2


def test_place_wheelhouse_reuses_replaces_and_refuses_bad_names(store, wheelhouses):
    shipped = wheelhouses("1.0")
    first = store.place_wheelhouse(shipped, "tiny-app-1.0")
    target = first["wheelhouse"]
    assert first["changed"] and target == os.path.join(store.path, "wheelhouses", "tiny-app-1.0")
    assert store.place_wheelhouse(shipped, "tiny-app-1.0") == {"changed": False, "wheelhouse": target}
    other = wheelhouses("1.1")  # same name, other content: replaced whole
    assert store.place_wheelhouse(other, "tiny-app-1.0", check_mode=True) == {"changed": True, "wheelhouse": other}
    assert store.place_wheelhouse(other, "tiny-app-1.0")["changed"]
    assert sorted(os.listdir(target)) == sorted(os.listdir(other))
    assert [n for n in os.listdir(os.path.dirname(target)) if n.startswith(".")] == []
    for bad in ("../etc", ".hidden", "a/b", ""):
        with pytest.raises(ReleaseError, match="not a plain directory name"):
            store.place_wheelhouse(shipped, bad)
