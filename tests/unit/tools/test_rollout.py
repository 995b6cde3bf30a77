"""plugins/filter/rollout.py: the batches of a rolling deploy, and batches that would empty a pool."""
from __future__ import annotations

import importlib.util
from pathlib import Path
from types import SimpleNamespace

import pytest
from ansible.errors import AnsibleFilterError
from ansible.executor.playbook_executor import PlaybookExecutor

_spec = importlib.util.spec_from_file_location(
    "rollout", Path(__file__).resolve().parents[3] / "plugins" / "filter" / "rollout.py")
rollout = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(rollout)

TEN = [f"app{i}" for i in range(1, 11)]


def ansible_batches(hosts: list[str], serial: list) -> list[list[str]]:
    """What ansible-core itself cuts for a play's serial list (its executor, with a stand-in inventory)."""
    executor = PlaybookExecutor.__new__(PlaybookExecutor)
    executor._inventory = SimpleNamespace(get_hosts=lambda pattern, order=None: list(hosts))
    return executor._get_serialized_batches(SimpleNamespace(hosts="app", order=None, serial=serial))


@pytest.mark.parametrize("serial, sizes", [
    (1, [1] * 10),
    ([1, "25%", "50%"], [1, 2, 5, 2]),  # a canary, then growing batches; the last entry repeats
    (["30%"], [3, 3, 3, 1]),
    ("2", [2] * 5),
    ([1, 3], [1, 3, 3, 3]),
    ("1%", [1] * 10),  # a share that rounds down to no host is one host, as in Ansible
    (["100%"], [10]),
    ([20], [10]),
])
def test_batches_are_those_ansible_cuts(serial, sizes):
    batches = rollout.rollout_batches(TEN, serial)
    assert [len(b) for b in batches] == sizes
    assert [h for b in batches for h in b] == TEN
    listed = serial if isinstance(serial, list) else [serial]
    assert batches == ansible_batches(TEN, listed)


@pytest.mark.parametrize("serial, words", [
    (0, "at least 1"), (-1, "at least 1"), ("0", "at least 1"), ([1, 0], "at least 1"),
    ("150%", "between 1% and 100%"), ("0%", "between 1% and 100%"),
    ([], "an empty plan"), ("[1, '25%']", "as JSON"), ("two", "host count"), (True, "host count"),
    (1.5, "host count"), ({"a": 1}, "host count"), ([1, None], "host count"),
])
def test_a_plan_ansible_would_misread_is_refused_naming_app_serial(serial, words):
    with pytest.raises(AnsibleFilterError, match="app_serial") as err:
        rollout.rollout_batches(TEN, serial)
    assert words in str(err.value)


def test_a_batch_holding_every_backend_of_a_pool_is_named():
    pools = {"lb1": ["app1", "app2"], "lb2": ["app3", "app4", "app5"]}
    # lb1's backends fall in batches 1 and 2; lb2's all in batch 2
    assert rollout.rollout_empty_pools(rollout.rollout_batches(TEN, [1, "50%"]), pools) == [
        "batch 2 (app2, app3, app4, app5, app6) holds every backend of lb2 (app3, app4, app5): they would restart "
        "together and lb2 would serve nothing"]
    assert rollout.rollout_empty_pools(rollout.rollout_batches(TEN, 1), pools) == []
    two = rollout.rollout_empty_pools(rollout.rollout_batches(["app1", "app2"], ["100%"]), {"lb1": ["app1", "app2"]})
    assert len(two) == 1 and "every backend of lb1 (app1, app2)" in two[0]
    # a pool whose other backends are outside the play (--limit) keeps serving
    assert rollout.rollout_empty_pools([["app1"]], {"lb1": ["app1", "app2"]}) == []
    assert rollout.rollout_empty_pools([["app1", "app2"]], {"lb1": []}) == []


def test_a_pool_whose_backends_in_the_batch_are_all_forced_is_accepted():
    """nginx_backend_force (molecule/monitoring's single app host): draining the last backend is accepted."""
    assert rollout.rollout_empty_pools([["app1"]], {"lb1": ["app1"]}, ["app1"]) == []
    assert len(rollout.rollout_empty_pools([["app1"]], {"lb1": ["app1"]}, [])) == 1
    assert len(rollout.rollout_empty_pools([["app1", "app2"]], {"lb1": ["app1", "app2"]}, ["app1"])) == 1
