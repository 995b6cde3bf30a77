"""Role nginx: the address each upstream backend gets (filter `nginx_backends`), the upstream
template rendered with it, and the drain command reading what the template wrote.

nginx resolves names in an upstream when it loads its configuration and refuses all of it when
one does not resolve, so the default must be an IP address from the backend's facts; names only
on request; an unreachable backend keeps its live address instead of blocking the run.
"""
from __future__ import annotations

import importlib.util
from importlib.machinery import SourceFileLoader
from pathlib import Path

import jinja2
import pytest

ROOT = Path(__file__).resolve().parents[3]
ROLE = ROOT / "roles" / "nginx"


def load(name: str, path: Path):
    loader = SourceFileLoader(name, str(path))
    spec = importlib.util.spec_from_loader(name, loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


nb = load("nginx_backends_filter", ROLE / "filter_plugins" / "nginx_backends.py")
drain = load("tradeops_nginx_backend", ROLE / "files" / "tradeops-nginx-backend")


def facts(default: str | None = None, **ifaces: str) -> dict:
    out: dict = {f: {"ipv4": {"address": a}} for f, a in ifaces.items()}
    if default:
        out["default_ipv4"] = {"address": default, "interface": "eth0"}
    return {"ansible_facts": out}


HOSTVARS = {
    "app1": facts("172.18.0.3", eth1="10.0.0.3"),
    "app2": facts("172.18.0.4", eth1="10.0.0.4"),
}


def by_name(result: list[dict]) -> dict[str, dict]:
    return {b["name"]: b for b in result}


def test_default_is_the_default_route_address_from_facts():
    got = by_name(nb.nginx_backends(["app1", "app2"], HOSTVARS))
    assert got["app1"]["endpoint"] == "172.18.0.3:8000" and got["app2"]["endpoint"] == "172.18.0.4:8000"
    assert all(not b["error"] and not b["needs_facts"] for b in got.values())


@pytest.mark.parametrize(("services", "error"), [
    (None, False),  # role app's default, not in the inventory
    ([{"name": "web", "args": [], "port": 8000}], False),
    ([{"name": "worker", "args": []}, {"name": "web", "args": [], "port": 8000}], False),
    ([], True),  # a batch-only application
    ([{"name": "worker", "args": []}], True),
])  # fmt: skip
def test_a_backend_whose_app_services_declare_no_port_is_refused(services, error):
    hostvars = {"app1": {**HOSTVARS["app1"], **({"app_services": services} if services is not None else {})}}
    got = nb.nginx_backends(["app1"], hostvars)[0]
    if error:
        assert got["error"].startswith("backend app1: its app_services declare no port (a batch-only application")
        assert "Remove app1 from nginx_upstream_hosts" in got["error"]
    else:
        assert got["error"] == "" and got["endpoint"] == "172.18.0.3:8000"


def test_a_named_interface_is_used_when_given():
    got = by_name(nb.nginx_backends(["app1"], HOSTVARS, "fact", "", "eth1"))
    assert got["app1"]["address"] == "10.0.0.3"


def test_interface_names_with_dashes_and_dots_match_the_fact_keys():
    hv = {"app1": facts(None, br_lan="10.1.0.3", eth0_100="10.2.0.3")}
    assert nb.nginx_backends(["app1"], hv, "fact", "", "br-lan")[0]["address"] == "10.1.0.3"
    assert nb.nginx_backends(["app1"], hv, "fact", "", "eth0.100")[0]["address"] == "10.2.0.3"


def test_own_backend_address_and_port_win_over_every_source():
    hv = {"app1": {**HOSTVARS["app1"], "nginx_backend_address": "fd00::3", "nginx_backend_port": 9000,
                   "ansible_host": "10.9.9.9"}}
    for source, var in (("fact", ""), ("var", "ansible_host"), ("name", "")):
        b = nb.nginx_backends(["app1"], hv, source, var)[0]
        assert (b["address"], b["endpoint"], b["origin"]) == ("fd00::3", "[fd00::3]:9000", "nginx_backend_address")


def test_var_and_name_sources():
    hv = {"app1": {**HOSTVARS["app1"], "ansible_host": "10.9.9.3"}}
    assert nb.nginx_backends(["app1"], hv, "var", "ansible_host")[0]["endpoint"] == "10.9.9.3:8000"
    assert nb.nginx_backends(["app1"], hv, "name", "", "", 8080)[0]["endpoint"] == "app1:8080"


def test_var_source_without_the_hostvar_names_the_variables_to_set():
    b = nb.nginx_backends(["app1"], HOSTVARS, "var", "ansible_host")[0]
    assert b["address"] == "" and "nginx_upstream_address_var" in b["error"] and "nginx_backend_address" in b["error"]


def test_missing_facts_ask_for_gathering_then_fail_naming_the_fix():
    hv = {"app1": HOSTVARS["app1"], "app2": {}}
    got = by_name(nb.nginx_backends(["app1", "app2"], hv))
    assert not got["app1"]["needs_facts"]
    assert got["app2"]["needs_facts"] and "nginx_backend_address for app2" in got["app2"]["error"]
    eth9 = nb.nginx_backends(["app1"], HOSTVARS, "fact", "", "eth9")[0]
    assert "interface eth9" in eth9["error"] and "nginx_upstream_interface" in eth9["error"]


def render_upstream(backends: list[dict], drained: list[str], last_resort: bool = True) -> str:
    # as Ansible renders templates: nginx configuration, not HTML
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(ROLE / "templates")),
                             keep_trailing_newline=True, autoescape=False)  # noqa: S701
    return env.get_template("upstream.conf.j2").render(
        ansible_managed="managed", __nginx_state_dir="/state", __nginx_upstream_name="tradeops_app",
        __nginx_backends=backends, __nginx_drained=drained, nginx_upstream_max_fails=3,
        nginx_upstream_fail_timeout="10s", nginx_upstream_keepalive=16, nginx_upstream_last_resort=last_resort)


def test_unreachable_backend_keeps_its_live_address_and_the_render_is_stable():
    """app2 cut off: its facts have no default route. The live file still has its address."""
    live = render_upstream(nb.nginx_backends(["app1", "app2"], HOSTVARS), drained=["app1"])
    cut = {"app1": HOSTVARS["app1"], "app2": {"ansible_facts": {"lo": {"ipv4": {"address": "127.0.0.1"}}}}}
    got = by_name(nb.nginx_backends(["app1", "app2"], cut, live_upstream=live))
    assert got["app2"]["address"] == "172.18.0.4" and got["app2"]["needs_facts"] and not got["app2"]["error"]
    assert "live upstream" in got["app2"]["origin"]
    assert render_upstream(list(got.values()), drained=["app1"]) == live  # nothing changes on the LB


def test_live_addresses_reads_ipv4_ipv6_names_and_drained_lines():
    text = render_upstream([
        {"name": "a", "endpoint": "10.0.0.1:8000"}, {"name": "b", "endpoint": "[fd00::2]:8000"},
        {"name": "c", "endpoint": "c.example:8000"}], drained=["b"])
    assert nb.live_addresses(text) == {"a": "10.0.0.1", "b": "fd00::2", "c": "c.example"}
    assert nb.live_addresses("") == {}


def test_drain_command_finds_every_rendered_backend_by_its_comment():
    """The drain command edits the file the template wrote: it must match every server line."""
    text = render_upstream(nb.nginx_backends(["app1", "app2"], HOSTVARS), drained=[])
    new, states, unknown = drain.edit(text, ["app1"], True)
    assert states == {"app1": "drained", "app2": "active"} and unknown == []
    assert "server 172.18.0.3:8000 max_fails=3 fail_timeout=10s down;  # app1" in new
    assert nb.live_addresses(new) == {"app1": "172.18.0.3", "app2": "172.18.0.4"}
    assert render_upstream(nb.nginx_backends(["app1", "app2"], HOSTVARS), drained=["app1"]) == new


def test_last_resort_lists_each_backend_again_as_backup_and_the_drain_takes_both_lines():
    """Passive health never empties the pool: every backend is a backup too (max_fails=0); a drained backend is
    down in both places, whether the drain command or the role wrote the file."""
    text = render_upstream(nb.nginx_backends(["app1", "app2"], HOSTVARS), drained=[])
    servers = [line.strip() for line in text.splitlines() if line.strip().startswith("server")]
    assert servers == ["server 172.18.0.3:8000 max_fails=3 fail_timeout=10s;  # app1",
                       "server 172.18.0.4:8000 max_fails=3 fail_timeout=10s;  # app2",
                       "server 172.18.0.3:8000 backup max_fails=0;  # app1",
                       "server 172.18.0.4:8000 backup max_fails=0;  # app2"]
    new, states, _ = drain.edit(text, ["app1"], True)
    assert "server 172.18.0.3:8000 backup max_fails=0 down;  # app1" in new and states["app1"] == "drained"
    assert render_upstream(nb.nginx_backends(["app1", "app2"], HOSTVARS), drained=["app1"]) == new
    assert drain.edit(new, ["app1"], False)[0] == text
    plain = render_upstream(nb.nginx_backends(["app1", "app2"], HOSTVARS), drained=[], last_resort=False)
    assert "backup" not in plain


def test_unknown_source_is_refused():
    with pytest.raises(ValueError, match="nginx_upstream_address_source"):
        nb.nginx_backends(["app1"], HOSTVARS, "dns")


def test_drain_command_check_mode_writes_nothing_not_even_its_lock(tmp_path, monkeypatch, capsys):
    """deploy.yml --check plans the drain on the load balancer: no lock file, directory or marker."""
    upstream = tmp_path / "tradeops.d" / "upstream.conf"
    upstream.parent.mkdir()
    text = render_upstream(nb.nginx_backends(["app1", "app2"], HOSTVARS), drained=[])
    upstream.write_text(text)
    home = tmp_path / "tradeops"
    monkeypatch.setattr(drain, "HOME", home)
    monkeypatch.setattr(drain, "STATE", home / "state")
    monkeypatch.setattr(drain, "UPSTREAM", upstream)
    monkeypatch.setattr("sys.argv", ["tradeops-nginx-backend", "--state", "drained", "--check", "--json", "app1"])
    assert drain.main() == 0
    assert '"changed": true' in capsys.readouterr().out
    assert not home.exists() and upstream.read_text() == text
