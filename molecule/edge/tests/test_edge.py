"""edge scenario: nginx on lb1 in front of app1/app2, nftables on all three, checked by behaviour.

The tests run in file order and build on each other: traffic first, then draining,
then a broken configuration, then the firewall seen from the other hosts.
"""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
import testinfra
import yaml

PROJECT = Path(os.environ["MOLECULE_PROJECT_DIRECTORY"])
SCENARIO = Path(__file__).resolve().parent.parent
INVENTORY = Path(os.environ["MOLECULE_INVENTORY_FILE"]).parent
ACCESS_LOG = "/var/log/nginx/access.log"
LIVE = ["/etc/nginx/nginx.conf", "/etc/nginx/tradeops.d/upstream.conf", "/etc/nginx/tradeops.d/site.conf"]

testinfra_hosts = ["ansible://lb1"]


@pytest.fixture(scope="module")
def hosts():
    return {n: testinfra.get_host(f"ansible://{n}?ansible_inventory={INVENTORY}") for n in ("lb1", "app1", "app2")}


def playbook(path: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [str(Path(sys.executable).with_name("ansible-playbook")), "-i", str(INVENTORY), str(path), *args]
    env = {**os.environ, "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_NOCOLOR": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=PROJECT, check=False, env=env)
    print(proc.stdout[-6000:], proc.stderr[-2000:])
    proc.text = " ".join((proc.stdout + proc.stderr).split())  # the callback folds long messages
    return proc


def backend(name: str, state: str) -> subprocess.CompletedProcess:
    return playbook(SCENARIO / "backend.yml", "-e", f"edge_hosts={name}", "-e", f"edge_state={state}")


def curl(host, url: str, *opts: str):
    return host.run(f"curl -sk --max-time 4 {' '.join(opts)} {shlex.quote(url)}")


def served_by(hosts, count: int = 12) -> Counter:
    """Send `count` HTTPS requests from app2 through lb1; count the backend of each (lb1's access log)."""
    probe = uuid.uuid4().hex
    for i in range(count):
        r = curl(hosts["app2"], f"https://lb1/api/version?probe={probe}-{i}", "-o /dev/null -w '%{http_code}'")
        assert r.stdout == "200", (r.stdout, r.stderr, journal(hosts["lb1"], "nginx"))
    lines = hosts["lb1"].check_output(f"grep {probe} {ACCESS_LOG}").splitlines()
    assert len(lines) == count
    ips = {n: hosts["lb1"].check_output(f"getent ahostsv4 {n} | awk 'NR==1{{print $1}}'") for n in ("app1", "app2")}
    by_ip = {v: k for k, v in ips.items()}
    return Counter(by_ip.get(re.search(r"upstream=([0-9.]+):", line).group(1), "?") for line in lines)


def journal(host, unit: str) -> str:
    return host.run(f"journalctl -u {unit} --no-pager -n 30").stdout


def master_pid(lb) -> str:
    return lb.check_output("cat /run/nginx.pid")


def checksums(lb) -> str:
    return lb.check_output(f"sha256sum {' '.join(LIVE)}")


# -- nginx -------------------------------------------------------------------------------------

def test_https_through_lb_reaches_both_instances(hosts):
    assert hosts["lb1"].service("nginx").is_running
    assert served_by(hosts) == Counter({"app1": 6, "app2": 6})


def test_http_redirects_to_https(hosts):
    r = curl(hosts["app1"], "http://lb1/api/version?x=1", "-o /dev/null -w '%{http_code} %{redirect_url}'")
    assert r.stdout == "301 https://lb1/api/version?x=1"


def test_tls_security_headers_and_no_version(hosts):
    headers = curl(hosts["app1"], "https://lb1/api/version", "-D - -o /dev/null").stdout.lower()
    assert "server: nginx\r\n" in headers  # server_tokens off: no version
    for h in ("strict-transport-security: max-age=", "x-content-type-options: nosniff", "x-frame-options: deny"):
        assert h in headers
    cert = hosts["lb1"].check_output("openssl x509 -noout -subject -in /etc/nginx/tradeops.d/tls/server.crt")
    assert "CN = lb1" in cert
    assert hosts["lb1"].file("/etc/nginx/tradeops.d/tls/server.key").mode == 0o600


def test_stub_status_on_loopback_only(hosts):
    lb = hosts["lb1"]
    assert "Active connections" in lb.check_output("curl -s http://127.0.0.1:8081/stub_status")
    assert lb.socket("tcp://127.0.0.1:8081").is_listening
    assert not lb.socket("tcp://0.0.0.0:8081").is_listening
    assert curl(hosts["app1"], "http://lb1:8081/stub_status").rc != 0


def test_drain_sends_everything_to_the_other_instance_and_inflight_requests_finish(hosts):
    app2, lb = hosts["app2"], hosts["lb1"]
    probe = uuid.uuid4().hex
    for i in range(4):  # slow requests on both instances, in flight while app1 is drained
        app2.check_output(
            f"systemd-run --unit edge-inflight-{probe}-{i} sh -c \"curl -sk --max-time 30 -o /dev/null "
            f"-w '%{{http_code}}' 'https://lb1/api/work?ms=6000&probe={probe}' > /tmp/{probe}-{i}\"")
    time.sleep(1)
    proc = backend("app1", "drained")
    assert proc.returncode == 0 and "changed: [app1 -> lb1]" in proc.text
    assert "down;" in lb.check_output("grep '# app1' /etc/nginx/tradeops.d/upstream.conf")
    assert served_by(hosts) == Counter({"app2": 12})
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and app2.run(f"cat /tmp/{probe}-*").stdout.count("200") < 4:
        time.sleep(1)
    assert app2.check_output(f"cat /tmp/{probe}-*") == "200" * 4  # the reload let them finish
    upstreams = lb.check_output(f"grep {probe} {ACCESS_LOG}")
    assert upstreams.count(" 200 ") == 4


def test_drain_is_idempotent_and_survives_the_main_entry_point(hosts):
    again = backend("app1", "drained")
    assert again.returncode == 0 and "changed=0" in again.text
    converge = playbook(SCENARIO / "converge.yml", "--tags", "nginx")
    assert converge.returncode == 0
    assert "lb1 : ok=" in converge.text and "changed=0" in converge.text.split("lb1 : ok=")[1][:40]
    assert served_by(hosts, 6) == Counter({"app2": 6})


def test_draining_the_last_active_instance_is_refused(hosts):
    proc = backend("app2", "drained")
    assert proc.returncode != 0 and "no active backend" in proc.text
    assert "down" not in hosts["lb1"].check_output("grep '# app2' /etc/nginx/tradeops.d/upstream.conf")


def test_reactivation_brings_the_instance_back(hosts):
    proc = backend("app1", "active")
    assert proc.returncode == 0
    assert not hosts["lb1"].file("/etc/nginx/tradeops/state/app1.drained").exists
    assert served_by(hosts) == Counter({"app1": 6, "app2": 6})


# -- a backend cut off the network ------------------------------------------------------------
# nginx resolves upstream names when it loads its configuration: with names, one backend that
# stops resolving makes nginx -t (so every drain, re-render, restart) fail. The role renders IPs.

def upstream_lines(lb) -> dict[str, str]:
    """Inventory name -> server line of the live upstream."""
    lines = lb.check_output("grep -E '^\\s*server ' /etc/nginx/tradeops.d/upstream.conf").splitlines()
    return {line.rsplit("#", 1)[1].strip(): line.strip() for line in lines}


def address_of(host) -> str:
    return host.check_output("ip -4 -o addr show scope global | awk 'NR==1{split($4, a, \"/\"); print a[1]}'")


def served_from_lb(lb, count: int) -> Counter:
    """`count` requests from lb1 itself through nginx; the backend that finally answered each one."""
    probe = uuid.uuid4().hex
    for i in range(count):
        r = lb.run(f"curl -sk --max-time 30 -o /dev/null -w '%{{http_code}}' 'https://127.0.0.1/api/version?probe={probe}-{i}'")
        assert r.stdout == "200", (r.stdout, r.stderr, journal(lb, "nginx"))
    names = {line.split()[1].rsplit(":", 1)[0]: name for name, line in upstream_lines(lb).items()}
    last = [re.search(r"upstream=(.*?) us=", line).group(1).split(", ")[-1].rsplit(":", 1)[0]
            for line in lb.check_output(f"grep {probe} {ACCESS_LOG}").splitlines()]
    return Counter(names.get(a, a) for a in last)


def docker(*args: str) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture()
def app2_cut_off(hosts):
    """app2's container disconnected from the lab network (its name no longer resolves), put back after."""
    config = yaml.safe_load(Path(os.environ["MOLECULE_INSTANCE_CONFIG"]).read_text())
    container = next(i["address"] for i in config if i["instance"] == "app2")
    networks = docker("inspect", "-f", "{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}", container)
    network = networks.split()[0]
    docker("network", "disconnect", network, container)
    try:
        yield
    finally:
        docker("network", "connect", "--alias", "app2", network, container)


def test_upstream_has_each_backends_ip_address_and_name(hosts):
    lines = upstream_lines(hosts["lb1"])
    assert set(lines) == {"app1", "app2"}
    for name in ("app1", "app2"):
        assert lines[name].startswith(f"server {address_of(hosts[name])}:8000 "), lines[name]


def test_a_backend_cut_off_blocks_neither_serving_nor_reconfiguring_the_lb(hosts, app2_cut_off):
    lb = hosts["lb1"]
    assert lb.run("getent hosts app2").rc != 0  # the fault is real: app2's name is gone
    assert lb.run("nginx -t").rc == 0
    assert served_from_lb(lb, 4) == Counter({"app1": 4})  # the other instance serves

    # the role's default: the run passes and changes nothing (app2 keeps its live address)
    before = checksums(lb)
    converge = playbook(SCENARIO / "converge.yml", "--tags", "nginx")
    assert converge.returncode == 0 and "kept at" in converge.text
    assert "changed=0" in converge.text.split("lb1 : ok=")[1][:40]
    assert checksums(lb) == before

    # the old behaviour (names), for contrast: nginx -t refuses all of it, nothing live changes
    names = playbook(SCENARIO / "converge.yml", "--tags", "nginx", "-e", "nginx_upstream_address_source=name")
    assert names.returncode != 0 and "host not found in upstream" in names.text
    assert checksums(lb) == before

    # a rolling deploy's drain and put-back of app1 still work
    drained = backend("app1", "drained")
    assert drained.returncode == 0 and "changed: [app1 -> lb1]" in drained.text
    assert "down;" in upstream_lines(lb)["app1"]
    active = backend("app1", "active")
    assert active.returncode == 0 and "changed: [app1 -> lb1]" in active.text
    assert "down" not in upstream_lines(lb)["app1"]
    assert served_from_lb(lb, 4) == Counter({"app1": 4})

    # and nginx starts again from the files on disk (a restart or a reboot of lb1)
    lb.check_output("systemctl restart nginx")
    assert lb.service("nginx").is_running
    assert served_from_lb(lb, 4) == Counter({"app1": 4})


def test_after_reconnecting_app2_serves_again_at_its_current_address(hosts):
    lb, app2 = hosts["lb1"], hosts["app2"]
    deadline = time.monotonic() + 30
    while lb.run("getent hosts app2").rc != 0 and time.monotonic() < deadline:
        time.sleep(1)
    converge = playbook(SCENARIO / "converge.yml", "--tags", "nginx")  # picks up a changed address
    assert converge.returncode == 0
    assert upstream_lines(lb)["app2"].startswith(f"server {address_of(app2)}:8000 ")
    deadline = time.monotonic() + 30  # passive health: app2 may still sit out its fail_timeout
    while served_from_lb(lb, 6)["app2"] == 0 and time.monotonic() < deadline:
        time.sleep(2)
    assert served_by(hosts) == Counter({"app1": 6, "app2": 6})


@pytest.mark.parametrize("bad", [
    "nginx_proxy_read_timeout=forever",                 # a bad value: invalid nginx syntax
    "nginx_site_extra_config='no_such_directive on;'",  # an unknown directive
])
def test_broken_config_fails_and_old_config_keeps_serving(hosts, bad):
    lb = hosts["lb1"]
    before, pid = checksums(lb), master_pid(lb)
    proc = playbook(SCENARIO / "converge.yml", "--tags", "nginx", "-e", bad)
    assert proc.returncode != 0
    assert "nginx -t rejected the new configuration" in proc.text
    assert checksums(lb) == before  # live files untouched
    assert master_pid(lb) == pid and lb.service("nginx").is_running
    assert served_by(hosts, 4) == Counter({"app1": 2, "app2": 2})
    # and nginx would still start from the files on disk
    assert lb.run("nginx -t").rc == 0


def test_bad_input_fails_before_any_change(hosts):
    before = checksums(hosts["lb1"])
    proc = playbook(SCENARIO / "converge.yml", "--tags", "nginx", "-e", "nginx_tls_cert_src=/etc/hostname")
    assert proc.returncode != 0 and "nginx_tls_key_src" in proc.text
    assert checksums(hosts["lb1"]) == before


# -- firewall ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def listener(hosts):
    lb = hosts["lb1"]
    lb.run("systemctl stop edge-listener; systemctl reset-failed edge-listener")
    lb.check_output("systemd-run --unit edge-listener python3 -m http.server --bind 0.0.0.0 9999")
    for _ in range(20):
        if lb.socket("tcp://0.0.0.0:9999").is_listening:
            break
        time.sleep(0.5)
    yield
    lb.run("systemctl stop edge-listener")


def test_lb_443_answers_from_app1_but_an_unopened_port_does_not(hosts, listener):
    assert curl(hosts["app1"], "https://lb1/api/version", "-o /dev/null -w '%{http_code}'").stdout == "200"
    assert hosts["lb1"].run("curl -s --max-time 3 -o /dev/null http://127.0.0.1:9999/").rc == 0  # it listens
    r = hosts["app1"].run("curl -s --max-time 3 -o /dev/null http://lb1:9999/")
    assert r.rc == 28, f"port 9999 must be dropped (timeout), curl rc {r.rc}"


def test_app_port_answers_from_lb_only(hosts):
    assert curl(hosts["lb1"], "http://app1:8000/api/version", "-o /dev/null -w '%{http_code}'").stdout == "200"
    assert hosts["app2"].run("curl -s --max-time 3 -o /dev/null http://app1:8000/api/version").rc == 28
    assert hosts["app1"].run("curl -s --max-time 3 -o /dev/null http://app2:8000/api/version").rc == 28


@pytest.mark.parametrize("name", ["lb1", "app1", "app2"])
def test_own_table_with_policy_drop_and_others_untouched(hosts, name):
    h = hosts[name]
    ruleset = h.check_output("nft list ruleset")
    table = h.check_output("nft list table inet tradeops")
    assert "hook input priority filter; policy drop;" in table
    assert "table ip nat" in ruleset  # Docker's own table in the container is left alone
    assert h.service("nftables").is_enabled
    if name == "lb1":
        assert 'tcp dport { 80, 443 } accept comment "web"' in table
    else:
        lb_ip = h.check_output("getent ahostsv4 lb1 | awk 'NR==1{print $1}'")
        assert f'ip saddr {lb_ip} tcp dport 8000 accept' in table


def test_restarting_nftables_restores_the_table_and_keeps_other_tables(hosts):
    h = hosts["app1"]
    h.check_output("systemctl restart nftables")
    assert "policy drop" in h.check_output("nft list table inet tradeops")
    assert "table ip nat" in h.check_output("nft list ruleset")
    assert hosts["app2"].run("curl -s --max-time 3 -o /dev/null http://app1:8000/api/version").rc == 28


def test_bad_firewall_rule_fails_before_any_change(hosts):
    before = hosts["app1"].check_output("nft list table inet tradeops")
    bad = '{"firewall_allow": [{"port": 70000, "sources": ["any"]}, {"port": 22, "sources": ["nohost"]}]}'
    proc = playbook(SCENARIO / "converge.yml", "--tags", "firewall", "-e", bad)
    assert proc.returncode != 0
    assert "port 70000 is not a port 1-65535" in proc.text and "source 'nohost' is neither" in proc.text
    assert hosts["app1"].check_output("nft list table inet tradeops") == before
