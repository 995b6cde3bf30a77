"""Property test of the release store: random sequences of create / mark / activate /
rollback / prune on a real tree never delete ``current``, the last good release or the
rollback target, and ``current`` never dangles.

Releases here are made by ``fast_release``: a real release directory with its
release.json and its ledger line, without the virtualenv (prune, rollback and activate
never look inside a release). The virtualenv path is covered by test_tradeops_release.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time

from ansible.module_utils import tradeops_release as tr
from ansible.module_utils.tradeops_release import ReleaseError, ReleaseStore
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule


def fast_release(store: ReleaseStore, version: str) -> str:
    rid = store.new_release_id(version)
    os.makedirs(store.release_path(rid))
    with open(os.path.join(store.release_path(rid), tr.RELEASE_META), "w", encoding="utf-8") as handle:
        json.dump({"release": rid, "version": version, "created": tr.utc_iso(time.time())}, handle)
    store.record("create", version=version, release=rid, outcome="created")
    return rid


class ReleaseMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.root = tempfile.mkdtemp(prefix="tradeops-prop-")
        self.tick = 1_700_000_000.0
        self.store = ReleaseStore(os.path.join(self.root, "app"), actor="prop", clock=self.clock)
        self.created: list[str] = []
        self.counter = 0

    def clock(self) -> float:
        self.tick += 1.0
        return self.tick

    def teardown(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    def alive(self) -> list[str]:
        return [r for r in self.created if os.path.isdir(self.store.release_path(r))]

    @rule()
    def create(self) -> None:
        self.counter += 1
        self.created.append(fast_release(self.store, f"1.{self.counter}"))

    @rule(outcome=st.sampled_from(["good", "bad", "unknown"]))
    def deploy(self, outcome: str) -> None:
        """What deploy.yml does: create, switch, health gate; a failed gate rolls back."""
        self.create()
        self.store.activate(release=self.created[-1])
        if outcome == "good":
            self.store.mark(outcome="good")
        elif outcome == "bad":
            self.store.mark(outcome="bad", reason="gate failed")
            with contextlib.suppress(ReleaseError):
                self.store.rollback()

    @precondition(lambda self: self.alive())
    @rule(index=st.integers(min_value=0, max_value=4))
    def activate(self, index: int) -> None:
        alive = self.alive()
        self.store.activate(release=alive[index % len(alive)], allow_bad=True)

    @precondition(lambda self: self.alive())
    @rule(index=st.integers(min_value=0, max_value=4), outcome=st.sampled_from(["good", "bad"]))
    def mark(self, index: int, outcome: str) -> None:
        alive = self.alive()
        self.store.mark(release=alive[index % len(alive)], outcome=outcome)

    @rule()
    def rollback(self) -> None:
        before = self.store.current()
        try:
            result = self.store.rollback()
        except ReleaseError:
            assert self.store.current() == before
            return
        order, status, _, _ = self.store.state()
        target = result["release"]
        assert status.get(target) == "good"
        if before in order:
            assert order.index(target) < order.index(before)

    @rule(keep=st.integers(min_value=1, max_value=3), check=st.booleans())
    def prune(self, keep: int, check: bool) -> None:
        order, status, current, _ = self.store.state()
        protected = {current, tr.last_good(order, status), tr.previous_good(order, status, current)} - {None}
        result = self.store.prune(keep=keep, check_mode=check)
        remaining = self.store.release_ids()
        if check:
            assert sorted(remaining) == sorted(order)
            return
        assert protected <= set(remaining)
        assert set(order[-keep:]) <= set(remaining)
        assert len(remaining) >= min(keep, len(order))
        for gone in result["removed"]:
            assert gone not in protected and gone not in order[-keep:]
        assert sorted(result["removed"] + result["kept"]) == sorted(order)

    @invariant()
    def current_never_dangles(self) -> None:
        link = os.path.join(self.store.path, tr.CURRENT_LINK)
        if os.path.islink(link):
            assert os.path.isdir(os.path.realpath(link))

ReleaseMachine.TestCase.settings = settings(
    max_examples=150, stateful_step_count=20, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
TestReleaseMachine = ReleaseMachine.TestCase
