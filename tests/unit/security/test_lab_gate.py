"""Unit tests of the lab security gate's logic (tests/security/labsec.py) and of its on-host secret
scanner (tests/security/scan_secrets.py, run here on planted files)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "tests" / "security"))
import labsec  # noqa: E402

SCANNER = ROOT / "tests" / "security" / "scan_secrets.py"

SS = """\
udp   UNCONN 0      0         127.0.0.11:44326      0.0.0.0:*
tcp   LISTEN 0      4096      127.0.0.11:33297      0.0.0.0:*
tcp   LISTEN 0      244        127.0.0.1:5432       0.0.0.0:*    users:(("postgres",pid=88,fd=6))
tcp   LISTEN 0      244       172.18.0.3:5432       0.0.0.0:*    users:(("postgres",pid=88,fd=7))
tcp   LISTEN 0      511       172.18.0.3:6379       0.0.0.0:*    users:(("redis-server",pid=90,fd=6))
tcp   LISTEN 0      4096               *:9100             *:*    users:(("prometheus-node",pid=70,fd=3))
tcp   LISTEN 0      511             [::]:443           [::]:*    users:(("nginx",pid=5,fd=7))
tcp   LISTEN 0      511    [fe80::1]%eth0:8443         [::]:*
"""


def test_parse_ss():
    got = labsec.parse_ss(SS)
    assert got[2] == labsec.Listener("tcp", "127.0.0.1", 5432, "postgres")
    assert got[5] == labsec.Listener("tcp", "*", 9100, "prometheus-node")
    assert got[6].address == "::" and got[6].port == 443
    assert got[7].address == "fe80::1" and got[7].port == 8443


def test_ports_equal_declared_set():
    listeners = labsec.parse_ss(SS)[:6]
    external = {("tcp", 5432), ("tcp", 6379), ("tcp", 9100)}
    assert labsec.port_problems(listeners, external, {5432}) == []
    # an undeclared port on every address, a declared one nobody listens on, an undeclared loopback one
    problems = labsec.port_problems(listeners, {("tcp", 5432), ("tcp", 6379), ("tcp", 9187)}, set())
    assert any("tcp/9100 listens on * (prometheus-node) but no firewall rule" in p for p in problems), problems
    assert any("tcp/9187 is declared" in p for p in problems), problems
    assert any("tcp/5432 listens on 127.0.0.1 (postgres) but no role variable" in p for p in problems), problems
    assert len(problems) == 3  # Docker's DNS on 127.0.0.11 is the platform's, never a finding


def test_wildcard_bind_of_a_data_service():
    listeners = labsec.parse_ss("tcp LISTEN 0 511 0.0.0.0:6379 0.0.0.0:*\n")
    assert labsec.wildcard_problems(listeners, 6379, ["127.0.0.1", "eth0"], "Redis")
    assert not labsec.wildcard_problems(listeners, 6379, ["0.0.0.0"], "Redis")
    assert not labsec.wildcard_problems(labsec.parse_ss(SS), 6379, ["eth0"], "Redis")


def test_firewall_ports():
    rules = [{"port": [80, 443], "sources": ["any"]}, {"port": 9100, "sources": ["mon1"]},
             {"port": 53, "proto": "udp", "sources": ["any"]}, {"port": 9999, "proto": ["tcp", "udp"], "sources": []}]
    assert labsec.firewall_ports(rules) == {("tcp", 80), ("tcp", 443), ("tcp", 9100), ("udp", 53), ("tcp", 9999),
                                            ("udp", 9999)}


def test_role_ports():
    values = {"postgresql_port": 5432, "nginx_status_listen": "127.0.0.1:8081", "prometheus_port": "9090",
              "app_services": [{"name": "web", "port": 8000}, {"name": "worker"}], "redis_password": "1234",
              "nginx_listen_ipv6": True}
    assert labsec.role_ports(values) == {5432, 8081, 9090, 8000}


def test_roles_from_the_playbooks():
    mapping = labsec.group_roles(ROOT)
    assert {"common", "firewall", "monitoring"} <= set(mapping["linux"])
    assert {"postgresql", "redis"} <= set(mapping["db"])
    assert "app" in mapping["app"] and "nginx" not in mapping["app"]  # deploy.yml delegates nginx to the LB
    assert labsec.roles_of(["linux", "lb"], mapping)[-1] == "nginx"


def test_secrets_from_the_roles_declarations():
    roles = labsec.roles_of(["linux", "db", "app", "lb", "monitoring"], labsec.group_roles(ROOT))
    paths = labsec.secret_paths(ROOT, roles)
    for path in [("redis_password",), ("postgresql_users", "password"), ("backup_encryption_key",),
                 ("prometheus_alertmanager_slack_url",), ("nginx_tls_key_content",), ("app_secret_env", "*")]:
        assert path in paths
    values = {"redis_password": "r" * 32, "postgresql_users": [{"name": "a", "password": "p" * 32}],
              "app_secret_env": {"APP_HEALTH_TOKEN": "t" * 32},
              "backup_postgresql": [{"name": "x", "password": "b" * 32, "port": 5432}],
              "backup_postgresql_role": {"name": "y", "password": "c" * 32}, "nginx_tls_key_content": ""}
    got = labsec.secrets(values, paths)
    assert set(got.values()) == {"r" * 32, "p" * 32, "t" * 32, "b" * 32, "c" * 32}
    assert got["backup_postgresql[0].password"] == "b" * 32


def test_merged_values_inventory_first_templates_dropped():
    merged = labsec.merged_values({"a_port": 1, "b": "{{ x }}", "c": 3}, {"c": 4})
    assert merged == {"a_port": 1, "c": 4}


@pytest.mark.parametrize(("mode", "uid", "owner", "members", "bad"), [
    ("0600", 0, "root", {"root": 0}, False), ("0400", 108, "redis", {"redis": 108}, False),
    ("0640", 0, "root", {"prometheus": 110}, False),  # the service's own group
    ("0640", 0, "root", {"postgres": 105, "nginx": 33}, True),  # a group several services share
    ("0640", 0, "root", {"alice": 1000}, True), ("0640", 0, "root", {}, True),
    ("0604", 0, "root", {"root": 0}, True), ("0600", 1000, "alice", {"alice": 1000}, True),
    ("0600", 65534, "nobody", {"nogroup": 65534}, True)])
def test_file_problems(mode, uid, owner, members, bad):
    f = {"path": "/etc/x", "mode": mode, "uid": uid, "owner": owner, "group": "g", "holds": ["redis_password"],
         "group_members": members}
    assert bool(labsec.file_problems([f])) is bad


@pytest.mark.parametrize(("cipher", "weak"), [
    ("TLS_AES_256_GCM_SHA384", False), ("ECDHE-RSA-AES128-GCM-SHA256", False),
    ("ECDHE-RSA-CHACHA20-POLY1305", False), ("DHE-RSA-AES256-GCM-SHA384", False),
    ("ECDHE-RSA-AES128-SHA", True), ("AES128-GCM-SHA256", True), ("ECDHE-RSA-AES256-SHA384", True),
    ("DES-CBC3-SHA", True), ("ADH-AES128-GCM-SHA256", True)])
def test_weak_cipher(cipher, weak):
    assert labsec.weak_cipher(cipher) is weak


def test_tls_outcome():
    assert labsec.tls_outcome("New, TLSv1.3, Cipher is TLS_AES_256_GCM_SHA384") == ("TLSv1.3", "TLS_AES_256_GCM_SHA384")
    assert labsec.tls_outcome("New, (NONE), Cipher is (NONE)") is None
    assert labsec.tls_outcome("no handshake") is None
    # a TLS 1.1 session with a cipher that exists since TLS 1.0: the session's protocol counts
    assert labsec.tls_outcome("New, TLSv1.0, Cipher is ECDHE-RSA-AES256-SHA     Protocol  : TLSv1.1 ") == (
        "TLSv1.1", "ECDHE-RSA-AES256-SHA")


def test_scanner_finds_planted_secrets(tmp_path):
    (tmp_path / "etc").mkdir()
    env = tmp_path / "etc" / "app.env"
    env.write_text("APP_TOKEN=s3cr3tvalue-0123456789\n")  # pragma: allowlist secret
    env.chmod(0o644)
    key = tmp_path / "etc" / "tls.key"
    key.write_text("-----BEGIN PRIVATE KEY-----\nabc\n-----END PRIVATE KEY-----\n")  # pragma: allowlist secret
    key.chmod(0o600)
    (tmp_path / "etc" / "plain.conf").write_text("nothing here\n")
    library = tmp_path / "venv" / "lib" / "site-packages" / "moto"
    library.mkdir(parents=True)
    published = "-----BEGIN PRIVATE KEY-----\npublished\n-----END PRIVATE KEY-----\n"  # pragma: allowlist secret
    (library / "ca.key").write_text(published)
    (tmp_path / "etc" / "link").symlink_to(env)
    doc = {"secrets": {"app_token": "s3cr3tvalue-0123456789", "short": "abc"}, "roots": [str(tmp_path)]}
    proc = subprocess.run([sys.executable, str(SCANNER)], input=json.dumps(doc), capture_output=True, text=True,
                          check=True)
    assert "s3cr3t" not in proc.stdout  # names only, never a value
    report = json.loads(proc.stdout)
    got = {Path(f["path"]).name: (f["mode"], f["holds"]) for f in report["files"]}
    assert got == {"app.env": ("0644", ["app_token"]), "tls.key": ("0600", ["PEM private key"])}
    assert report["scanned"] == 4
    problems = labsec.file_problems(report["files"])
    expected_owner_problem = os.getuid() > 999
    assert len(problems) == 1 + (2 if expected_owner_problem else 0)
    assert "app.env (holds app_token) is mode 0644" in problems[0] and "other can read it" in problems[0]


def test_scanner_bad_input():
    proc = subprocess.run([sys.executable, str(SCANNER)], input="{}", capture_output=True, text=True, check=False)
    assert proc.returncode == 2 and "JSON document" in proc.stderr
