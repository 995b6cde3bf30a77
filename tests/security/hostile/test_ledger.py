"""The ledger (one JSON line per deploy, rollback, mark): a torn last line, left by a kill or a full
disk, is skipped without swallowing the next complete entry, and a line with a field of the wrong JSON
type is reported by field instead of ending in a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from ansible.module_utils import tradeops_release as tr


def _store(tmp_path: Path) -> tr.ReleaseStore:
    app = tmp_path / "app"
    (app / "releases" / "1.0-20260101T000000Z").mkdir(parents=True)
    (app / "releases" / "2.0-20260102T000000Z").mkdir(parents=True)
    return tr.ReleaseStore(str(app), actor="tester")


def _line(**fields: object) -> str:
    return json.dumps(fields, sort_keys=True, separators=(",", ":")) + "\n"


def test_a_torn_last_line_does_not_swallow_the_next_entry(tmp_path: Path) -> None:
    store = _store(tmp_path)
    ledger = Path(store.ledger_path)
    ledger.write_text(_line(action="create", outcome="created", release="1.0-20260101T000000Z")
                      + _line(action="mark", outcome="good", release="1.0-20260101T000000Z")
                      + _line(action="create", outcome="created", release="2.0-20260102T000000Z")
                      + '{"action":"mark","outcome":"bad","rel')  # killed mid-write
    store.mark(release="2.0-20260102T000000Z", outcome="good", reason="healthy")
    listing = store.listing()
    assert {r["id"]: r["status"] for r in listing["releases"]} == {"2.0-20260102T000000Z": "good",
                                                                   "1.0-20260101T000000Z": "good"}
    assert listing["last_good"] == "2.0-20260102T000000Z"
    assert listing["ledger_unreadable_lines"] == 1


def test_an_entry_already_glued_to_a_torn_line_is_recovered(tmp_path: Path) -> None:
    store = _store(tmp_path)
    Path(store.ledger_path).write_text(
        _line(action="create", outcome="created", release="2.0-20260102T000000Z")
        + '{"action":"mark","outcome":"bad","rel' + _line(action="mark", outcome="good",
                                                          release="2.0-20260102T000000Z"))
    listing = store.listing()
    assert listing["last_good"] == "2.0-20260102T000000Z" and listing["ledger_unreadable_lines"] == 1


@pytest.mark.parametrize("entry", [
    {"action": "mark", "outcome": "good", "release": ["2.0-20260102T000000Z"]},
    {"action": "mark", "outcome": "good", "release": {"id": 1}},
    {"action": "create", "outcome": "created", "release": 20},
    {"action": ["mark"], "outcome": "good", "release": "2.0-20260102T000000Z"},
    {"action": "mark", "outcome": {"good": True}, "release": "2.0-20260102T000000Z"},
])
def test_a_field_of_the_wrong_type_is_named_not_a_traceback(tmp_path: Path, entry: dict[str, object]) -> None:
    store = _store(tmp_path)
    Path(store.ledger_path).write_text(_line(action="create", outcome="created", release="1.0-20260101T000000Z")
                                       + json.dumps(entry) + "\n")
    listing = store.listing()
    assert listing["ledger_unreadable_lines"] == 1
    field = next(k for k, v in entry.items() if not isinstance(v, str))
    assert any(f"'{field}'" in p for p in listing["ledger_problems"]), listing
    store.state()  # what activate, rollback and prune read: no traceback either
