"""Role prometheus' scrape configuration (templates/prometheus.yml.j2) rendered with the role's defaults and
vars, as Ansible would: an application host whose inventory declares ``app_services`` with no port (role app's
batch-only application) gets no app scrape and no blackbox probe, but keeps its node_exporter target (its deploy
and job metrics come through the textfile collector)."""
from __future__ import annotations

from pathlib import Path

import jinja2
import yaml

ROLE = Path(__file__).resolve().parents[3] / "roles" / "prometheus"


def host(address: str, **hostvars: object) -> dict:
    return {"ansible_facts": {"default_ipv4": {"address": address}}, **hostvars}


HOSTVARS = {
    "app1": host("10.0.0.1"),  # app_services not in the inventory: role app's default (a web service)
    "web1": host("10.0.0.2", app_services=[{"name": "web", "args": [], "port": 8000}, {"name": "worker", "args": []}]),
    "batch1": host("10.0.0.3", app_services=[]),
    "batch2": host("10.0.0.4", app_services=[{"name": "worker", "args": []}]),
}


def render(app_hosts: list[str]) -> dict:
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)  # noqa: S701 - YAML
    defaults = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    role_vars = yaml.safe_load((ROLE / "vars" / "main.yml").read_text())
    values = {k: v for k, v in {**defaults, **role_vars}.items() if not (isinstance(v, str) and "{" in v)}
    values.update(prometheus_app_hosts=app_hosts, prometheus_node_hosts=app_hosts, prometheus_postgres_hosts=[],
                  prometheus_redis_hosts=[], prometheus_nginx_hosts=[], prometheus_lb_hosts=[], hostvars=HOSTVARS,
                  inventory_hostname="mon1", ansible_managed="managed")
    expression = role_vars["__prometheus_app_hosts"]
    values["__prometheus_app_hosts"] = yaml.safe_load(env.from_string(expression).render(values).replace("'", '"'))
    return yaml.safe_load(env.from_string((ROLE / "templates" / "prometheus.yml.j2").read_text()).render(values))


def targets(config: dict, job: str) -> list[str]:
    scrape = next((s for s in config["scrape_configs"] if s["job_name"] == job), {"static_configs": []})
    return [t for c in scrape["static_configs"] for t in c["targets"]]


def test_batch_only_hosts_get_no_app_scrape_nor_probe_but_keep_node_exporter():
    config = render(["app1", "web1", "batch1", "batch2"])
    assert targets(config, "app") == ["10.0.0.1:8000", "10.0.0.2:8000"]
    assert {t.split("/")[2] for t in targets(config, "blackbox")} == {"10.0.0.1:8000", "10.0.0.2:8000"}
    assert targets(config, "node") == ["10.0.0.1:9100", "10.0.0.2:9100", "10.0.0.3:9100", "10.0.0.4:9100"]


def test_only_batch_only_hosts_render_no_app_job_at_all():
    config = render(["batch1"])
    assert [s["job_name"] for s in config["scrape_configs"]] == ["prometheus", "node"]
