"""Role nginx's preflight under ansible-playbook: the backends' address settings fail before the role
changes anything, with a message naming the variable; good ones give the expected `server` endpoints.

Runs on localhost only (the preflight only asserts and computes); the upstream hosts are
inventory hosts that are never contacted (sources `var` and `name`, and nginx_backend_address,
read no facts).
"""
from __future__ import annotations

import pytest
import yaml
from play_report import check_case, failures_by_play, preflight_play, run_plays

INVENTORY = {"all": {"hosts": {
    "localhost": {"ansible_connection": "local"},
    "app1": {"lan_ip": "10.0.0.1", "wan_ip": "192.0.2.1"},
    "app2": {"wan_ip": "192.0.2.2"},
    "app3": {"wan_ip": "192.0.2.3", "nginx_backend_address": "fd00::3", "nginx_backend_port": 9000},
    "batch1": {"app_services": []},  # a batch-only application (role app): no port
    "web1": {"app_services": [{"name": "web", "args": ["serve"], "port": 8000}]},
}}}
HOSTS = ["app1", "app2", "app3"]


def case_play(name: str, extra: dict) -> dict:
    return preflight_play(name, "nginx", {"nginx_upstream_hosts": HOSTS, **extra}, "Endpoints",
                          "{{ __nginx_backends | map(attribute='endpoint') | list }}")


CASES = {
    "var without its name": ({"nginx_upstream_address_source": "var"}, "set both or neither"),
    "a name without source var": ({"nginx_upstream_address_var": "lan_ip"}, "set both or neither"),
    "unknown source": ({"nginx_upstream_address_source": "dns"}, "nginx_upstream_address_source"),
    "bad interface": ({"nginx_upstream_interface": "eth0;"}, "nginx_upstream_interface must be"),
    "hostvar missing on app2": ({"nginx_upstream_address_source": "var", "nginx_upstream_address_var": "lan_ip"},
                                "backend app2: nginx_upstream_address_source is 'var' but hostvar 'lan_ip'"),
    "source var": ({"nginx_upstream_address_source": "var", "nginx_upstream_address_var": "wan_ip"},
                   ["192.0.2.1:8000", "192.0.2.2:8000", "[fd00::3]:9000"]),
    "source name": ({"nginx_upstream_address_source": "name", "nginx_upstream_port": 8080},
                    ["app1:8080", "app2:8080", "[fd00::3]:9000"]),
    "a batch-only backend": ({"nginx_upstream_address_source": "name", "nginx_upstream_hosts": ["web1", "batch1"]},
                             "backend batch1: its app_services declare no port (a batch-only application: nothing "
                             "listens for nginx there). Remove batch1 from nginx_upstream_hosts"),
    "an unknown failure condition": ({"nginx_proxy_next_upstream": ["error", "http_418"]},
                                     "nginx_proxy_next_upstream [\"error\", \"http_418\"]: give a list of"),
    "off with others": ({"nginx_proxy_next_upstream": ["off", "error"]}, "'off' alone"),
    "a backend whose app listens": ({"nginx_upstream_address_source": "name", "nginx_upstream_hosts": ["web1"]},
                                    ["web1:8000"]),
}


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict[str, tuple[list[str], object]]:
    """{case: (failure messages, endpoints shown or None)} from ONE ansible-playbook run."""
    d = tmp_path_factory.mktemp("nginx-preflight")
    (d / "inventory.yml").write_text(yaml.safe_dump(INVENTORY))
    stdout = run_plays(d, [case_play(name, extra) for name, (extra, _) in CASES.items()], str(d / "inventory.yml"))
    return failures_by_play(stdout, "Endpoints")


@pytest.mark.parametrize("case", list(CASES))
def test_preflight(results, case):
    check_case(*results[case], CASES[case][1])
