"""Role backup's preflight under ansible-playbook (issue 20): the set's key is required whatever the items, since
every backup is encrypted (age) and its manifest signed with it; ONE ansible-playbook run."""
from __future__ import annotations

import pytest
from play_report import check_case, failures_by_play, preflight_play, run_plays

KEY = "k" * 48  # pragma: allowlist secret - a made-up key of the right length
ITEMS = {"backup_sqlite": [{"name": "app", "path": "/opt/refapp/shared/data/app.db"}]}  # no item is secret
CASES = {
    "a key from the vault": (KEY, ["key ok"]),
    "no key, no secret item": ("", "backup_encryption_key is empty: set it from ansible-vault"),
    "a short key": ("k" * 20, "backup_encryption_key is shorter than 32 characters"),
}


def case_play(name: str, key: str) -> dict:
    return preflight_play(name, "backup", {"backup_encryption_key": key, **ITEMS}, "Key", ["key ok"])


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict[str, tuple[list[str], object]]:
    stdout = run_plays(tmp_path_factory.mktemp("backup-preflight"), [case_play(n, k) for n, (k, _) in CASES.items()])
    return failures_by_play(stdout, "Key")


@pytest.mark.parametrize("case", list(CASES))
def test_the_backup_key_is_required(results, case):
    check_case(*results[case], CASES[case][1])
