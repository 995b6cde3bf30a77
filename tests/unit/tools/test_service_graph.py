"""plugins/filter/service_graph.py: start order of services from their dependency graph."""
from __future__ import annotations

import importlib.util
import random
from pathlib import Path

import pytest
from ansible.errors import AnsibleFilterError

_spec = importlib.util.spec_from_file_location(
    "service_graph", Path(__file__).resolve().parents[3] / "plugins" / "filter" / "service_graph.py")
service_graph = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(service_graph)
service_order = service_graph.service_order

# Seed 003's seven services: orchestration needs news, scanner and pattern, etc.
SEVEN = [
    {"name": "orchestration", "requires": ["scanner", "news"], "wants": ["reporting"]},
    {"name": "news"},
    {"name": "scanner", "requires": ["news"]},
    {"name": "pattern", "requires": ["scanner"]},
    {"name": "technical", "requires": ["pattern"]},
    {"name": "trading", "requires": ["technical", "scanner"]},
    {"name": "reporting", "wants": ["trading"]},
]


def assert_topological(services, order):
    pos = {n: i for i, n in enumerate(order)}
    assert sorted(order) == sorted(s["name"] for s in services)
    for s in services:
        for dep in (s.get("requires") or []) + (s.get("wants") or []):
            assert pos[dep] < pos[s["name"]], (dep, s["name"], order)


def test_seven_services_start_after_their_dependencies():
    order = service_order(SEVEN)
    assert_topological(SEVEN, order)
    assert order[0] == "news"


def test_independent_services_keep_declaration_order():
    assert service_order([{"name": "b"}, {"name": "a"}, {"name": "c"}]) == ["b", "a", "c"]


@pytest.mark.parametrize("services, words", [
    ([{"name": "a", "requires": ["b"]}, {"name": "b", "requires": ["a"]}], ["cycle", "a -> b -> a"]),
    ([{"name": "a", "wants": ["a"]}], ["cycle", "a -> a"]),
    ([{"name": "a", "requires": ["ghost"]}], ["'ghost'", "not declared", "app_services"]),
    ([{"name": "a"}, {"name": "a"}], ["more than once"]),
    ([{"requires": []}], ["no 'name'"]),
])
def test_bad_graphs_name_the_problem(services, words):
    with pytest.raises(AnsibleFilterError) as exc:
        service_order(services)
    for w in words:
        assert w in str(exc.value)


def test_random_dags_are_ordered():
    rng = random.Random(7)
    for _ in range(200):
        n = rng.randint(1, 12)
        names = [f"s{i}" for i in range(n)]
        # edges only to lower indices: always acyclic; shuffle declaration order
        services = [{"name": nm, "requires": rng.sample(names[:i], rng.randint(0, i))} for i, nm in enumerate(names)]
        rng.shuffle(services)
        assert_topological(services, service_order(services))
