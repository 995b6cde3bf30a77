"""Security gate over every host of a molecule scenario (testinfra; run by the verify steps of
molecule/monitoring, hosts mon1, app1, db1, lb1, and molecule/cluster, hosts lb1, app1, app2, db1:
every host of the lab, each of them once with its full set of neighbours).

What a host must look like comes from what the project declares (tests/security/labsec.py,
tests/security/declared.yml: the roles each host runs, their argument specs and defaults, the
inventory's values and firewall rules), not from a hand list:

- no file holding a secret (any declared secret's value, on any host, or a PEM private key) is
  readable by other, or by a group that is not one service account's own, or owned by anyone but
  root or a system account;
- the listening sockets equal the declared ports: exactly the firewall's ports on addresses other
  hosts reach, only the roles' ports on loopback, PostgreSQL and Redis not on every address unless
  declared;
- PostgreSQL and Redis on the db host refuse a client of an app host (the one the firewall lets
  in) without a password and with a wrong one, accept the app's own credentials; hosts the
  firewall does not let in cannot connect at all;
- /api/health/detailed refuses without its token and with a wrong one, answers with it;
- nginx completes TLS 1.2 and 1.3 handshakes only (1.0 and 1.1 refused by the server: the client
  allows them) and negotiates forward-secret AEAD ciphers only (every TLS 1.2 cipher tried; this gate
  found nginx's default list accepting CBC and non-forward-secret ones: roles/nginx now sets
  nginx_tls_ciphers).

Secrets travel to the hosts on standard input of ``docker exec -i``, never on a command line or in
the output. The figures go to .cache/results/security.json (scripts/results.py renders them).
"""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
import testinfra
from testinfra.utils.ansible_runner import AnsibleRunner

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "bench"))
import labsec  # noqa: E402
from benchlib import machine  # noqa: E402

PROJECT = Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", HERE.parents[1]))
INVENTORY = os.environ["MOLECULE_INVENTORY_FILE"]
RUNNER = AnsibleRunner(INVENTORY)
HOSTS = sorted(RUNNER.get_hosts("all"))
# Each app host is checked from its own side (a missing one fails the check, not skipped).
APPS = sorted(RUNNER.get_hosts("app")) or ["(no app host in the inventory)"]
SCENARIO = os.environ.get("MOLECULE_SCENARIO_NAME", "lab")
RESULTS = PROJECT / ".cache" / "results" / f"security-{SCENARIO}.json"
# Where secrets may land on a host: configuration, applications, state, backups, scratch space.
SCAN_ROOTS = ["/etc", "/opt", "/srv", "/var/lib", "/var/backups", "/var/tmp", "/var/log", "/tmp", "/root",
              "/home", "/usr/local", "/run"]
# Inventory variables that hold secrets (the lab's generated passwords and keys).
SECRET_VARS = "password|secret|token|private_key|encryption_key"  # pragma: allowlist secret
FIGURES: dict[str, Any] = {}


class Secretive(dict):
    """A mapping that holds secrets: pytest prints a test's arguments when it fails, never this one's content."""

    def __repr__(self) -> str:
        return f"<{len(self)} entries, not shown: they hold secrets>"


def host_of(name: str) -> Any:
    return testinfra.get_host(f"ansible://{name}?ansible_inventory={INVENTORY}")


def container(name: str) -> str:
    return str(RUNNER.get_variables(name).get("ansible_host", name))


def exec_stdin(name: str, argv: list[str], doc: Secretive, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run argv on a lab host with doc as JSON on its standard input (secrets never on a command line;
    a Secretive, because pytest prints every frame's arguments when a test fails)."""
    return subprocess.run(["docker", "exec", "-i", container(name), *argv], input=json.dumps(doc),
                          capture_output=True, text=True, timeout=timeout, check=False)


def python_on(name: str, code: str, doc: Secretive, python: str = "python3") -> dict[str, Any]:
    """Run Python code on a host, the JSON document on its standard input; its JSON output."""
    proc = exec_stdin(name, [python, "-c", code], doc)
    assert proc.returncode == 0, f"{name}: {proc.stderr[-3000:]}"
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def declared() -> Secretive:
    """Per host: groups, address, firewall rules, the role variables (inventory over literal role
    defaults), the roles, the secrets {name: value}. From ONE ansible-playbook run of declared.yml."""
    mapping = labsec.group_roles(PROJECT)
    all_roles = sorted({r for roles in mapping.values() for r in roles})
    names = labsec.declared_variables(PROJECT, all_roles)
    names += [p[0] for p in labsec.secret_paths(PROJECT, all_roles) if p[0] not in names]
    names += ["postgresql_listen_addresses", "redis_bind", "redis_bind_interfaces"]
    extra = {"security_names": names, "security_secret_pattern": SECRET_VARS}
    env = {**os.environ, "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.json", "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1",
           "ANSIBLE_NOCOLOR": "1"}
    proc = subprocess.run([str(Path(sys.executable).with_name("ansible-playbook")), "-i", INVENTORY,
                           str(HERE / "declared.yml"), "-e", json.dumps(extra)], capture_output=True, text=True,
                          cwd=PROJECT, env=env, check=False)
    # The output holds secrets: only the error's tail of stderr, never stdout.
    assert proc.returncode == 0, f"declared.yml failed (rc {proc.returncode}): {proc.stderr[-2000:]}"
    # Every host's result of the last task. The json callback lists a task once with every host under
    # Ansible's linear strategy, but once per host under Mitogen's (make molecule): merge them.
    tasks = json.loads(proc.stdout)["plays"][0]["tasks"]
    task = {h: r for t in tasks if t["task"]["name"] == tasks[-1]["task"]["name"] for h, r in t["hosts"].items()}
    out = Secretive()
    for name in HOSTS:
        doc = json.loads(task[name]["msg"])
        roles = labsec.roles_of(doc["groups"], mapping)
        values = labsec.merged_values(labsec.role_defaults(PROJECT, roles), doc["values"])
        found = labsec.secrets(values, labsec.secret_paths(PROJECT, roles))
        found |= {k: str(v) for k, v in doc["values"].items() if labsec.SECRET_NAME.search(k) and v}
        out[name] = doc | {"roles": roles, "values": values, "secrets": found}
    return out


@pytest.fixture(scope="module", autouse=True)
def results():
    yield
    if FIGURES:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps({
            "title": f"Lab security gate (testinfra over every host of the {SCENARIO} scenario)",
            "command": f"molecule test -s {SCENARIO}  (verify: tests/security/test_lab_security.py)",
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": machine(),
            "figures": FIGURES}, indent=2) + "\n")


@pytest.mark.parametrize("name", HOSTS)
def test_secret_files_private(name, declared):
    # Every host's secrets (one of db1's may land on app1), each value once, under its first name (this
    # host's own names first).
    order = [name] + [h for h in HOSTS if h != name]
    names = {v: f"{h}:{k}" for h in reversed(order) for k, v in reversed(declared[h]["secrets"].items())}
    every_secret = {label: value for value, label in names.items()}
    assert every_secret, "no secret declared anywhere: the roles' argument specs were not read"
    started = time.monotonic()
    report = python_on(name, (HERE / "scan_secrets.py").read_text(),
                       Secretive(secrets=every_secret, roots=SCAN_ROOTS, max_bytes=64 << 20))
    elapsed = time.monotonic() - started
    for f in report["files"]:
        print(f"{name}: {f['mode']} {f['owner']}:{f['group']} {f['path']}  holds {', '.join(f['holds'])}")
    problems = labsec.file_problems(report["files"])
    FIGURES.setdefault(name, {}).update({
        "files_scanned": report["scanned"], "secret_files": len(report["files"]), "secret_file_problems": len(problems),
        "scan_seconds": round(elapsed, 1)})
    # Every host runs a role that writes a secret (app env, database passwords, receivers, TLS key):
    # a scan that finds none missed them.
    assert report["files"], f"{name}: no file with a secret found under {SCAN_ROOTS}: the scan is blind"
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("name", HOSTS)
def test_listening_ports_are_the_declared_ones(name, declared):
    host, mine = host_of(name), declared[name]
    listeners = labsec.parse_ss(host.check_output("ss -Hlntup"))
    external = labsec.firewall_ports(mine["firewall"])
    local = labsec.role_ports(mine["values"])
    values = mine["values"]
    print(f"{name}: listening {sorted({(s.proto, s.address, s.port, s.process) for s in listeners})}")
    print(f"{name}: firewall {sorted(external)}, role ports {sorted(local)}")
    problems = labsec.port_problems(listeners, external, local)
    if "postgresql" in mine["roles"]:
        problems += labsec.wildcard_problems(listeners, int(values["postgresql_port"]),
                                             values.get("postgresql_listen_addresses", []), "PostgreSQL")
    if "redis" in mine["roles"]:
        problems += labsec.wildcard_problems(listeners, int(values["redis_port"]),
                                             [*values.get("redis_bind", []), *values.get("redis_bind_interfaces", [])],
                                             "Redis")
    FIGURES.setdefault(name, {}).update({
        "listening_sockets": len(listeners), "firewall_ports": " ".join(f"{n}/{p}" for p, n in sorted(external)),
        "port_problems": len(problems)})
    assert not problems, f"{name}:\n" + "\n".join(problems)


AUTH_CHECK = r'''
import json, sys
import psycopg, redis
doc = json.load(sys.stdin)
out = {}
def attempt(what, fn):
    try:
        out[what] = {"ok": True, "reply": str(fn())}
    except Exception as exc:
        out[what] = {"ok": False, "error": type(exc).__name__ + ": " + str(exc).replace(doc["pg_password"], "***")}
def pg_query(password, sslmode=None):
    options = {**doc["pg_options"], **({"sslmode": sslmode} if sslmode else {})}
    with psycopg.connect(host=doc["pg_host"], port=doc["pg_port"], user=doc["pg_user"], dbname=doc["pg_db"],
                         connect_timeout=10, **({"password": password} if password is not None else {}),
                         **options) as conn:
        return conn.execute("select current_user").fetchall()
attempt("pg_no_password", lambda: pg_query(None))
attempt("pg_wrong_password", lambda: pg_query(doc["pg_password"] + "x"))
attempt("pg_right_password", lambda: pg_query(doc["pg_password"]))
attempt("pg_right_password_without_tls", lambda: pg_query(doc["pg_password"], "disable"))
def redis_call(user, password):
    with redis.Redis(doc["redis_host"], doc["redis_port"], username=user, password=password, socket_timeout=10,
                     protocol=2) as client:
        return "PONG" if client.ping() is True else "no PONG"
attempt("redis_no_password", lambda: redis_call(None, None))
attempt("redis_wrong_password", lambda: redis_call(doc["redis_user"], doc["redis_password"] + "x"))
attempt("redis_right_password", lambda: redis_call(doc["redis_user"], doc["redis_password"]))
print(json.dumps(out))
'''

CONNECT = r'''
import json, socket, sys
out = {}
for target in json.load(sys.stdin)["targets"]:
    try:
        socket.create_connection((target[0], target[1]), timeout=3).close()
        out[f"{target[0]}:{target[1]}"] = "connected"
    except OSError as exc:
        out[f"{target[0]}:{target[1]}"] = type(exc).__name__
print(json.dumps(out))
'''


def assert_app_host(declared, app: str) -> None:
    """APPS (the inventory's app group) agrees with what declared.yml rendered for the host."""
    assert "app" in declared.get(app, {}).get("groups", []), f"{app} is not an app host of the scenario"


def app_credentials(declared, app: str) -> Secretive:
    """The data tier credentials the app of this host uses (app_secret_env's URLs)."""
    env = declared[app]["values"]["app_secret_env"]
    pgu, redu = urllib.parse.urlsplit(env["APP_DATABASE_URL"]), urllib.parse.urlsplit(env["APP_REDIS_URL"])
    return Secretive(pg_host=pgu.hostname, pg_port=pgu.port or 5432, pg_user=pgu.username,
                     pg_password=urllib.parse.unquote(pgu.password or ""), pg_db=pgu.path.lstrip("/"),
                     pg_options=dict(urllib.parse.parse_qsl(pgu.query)),
                     redis_host=redu.hostname, redis_port=redu.port or 6379, redis_user=redu.username,
                     redis_password=urllib.parse.unquote(redu.password or ""))


@pytest.mark.parametrize("app", APPS)
def test_data_tier_refuses_wrong_credentials_from_another_host(declared, app):
    assert_app_host(declared, app)
    creds = app_credentials(declared, app)
    python = host_of(app).check_output("readlink -f /opt/refapp/current") + "/venv/bin/python"
    got = python_on(app, AUTH_CHECK, creds, python)
    print(f"from {app} to {creds['pg_host']}: {json.dumps(got, indent=1)}")
    FIGURES[f"data tier from {app}"] = {k: "accepted" if v["ok"] else "refused" for k, v in got.items()}
    assert got["pg_right_password"]["ok"] and got["pg_right_password"]["reply"] == f"[('{creds['pg_user']}',)]", got
    assert got["redis_right_password"] == {"ok": True, "reply": "PONG"}, got
    for case in ("pg_no_password", "pg_wrong_password", "pg_right_password_without_tls"):
        assert not got[case]["ok"], f"{case}: PostgreSQL let the client in: {got[case]}"
    assert "password authentication failed" in got["pg_wrong_password"]["error"], got["pg_wrong_password"]
    # redis-py names NOAUTH and WRONGPASS replies by their text.
    assert not got["redis_no_password"]["ok"] and "Authentication required" in got["redis_no_password"]["error"], got
    assert not got["redis_wrong_password"]["ok"], got
    assert "invalid username-password pair" in got["redis_wrong_password"]["error"], got
    # Hosts the firewall does not let in cannot even connect.
    targets = [[creds["pg_host"], creds["pg_port"]], [creds["redis_host"], creds["redis_port"]]]
    for other in (h for h in HOSTS if not {"app", "db"} & set(declared[h]["groups"])):
        reached = python_on(other, CONNECT, Secretive(targets=targets))
        print(f"from {other}: {reached}")
        FIGURES[f"data tier from {app}"][f"tcp from {other}"] = " ".join(f"{t} {r}" for t, r in reached.items())
        assert "connected" not in reached.values(), f"{other} reaches the data tier: {reached}"


HEALTH = r'''
import json, sys, urllib.error, urllib.request
doc = json.load(sys.stdin)
out = {}
for case, token in (("no token", None), ("wrong token", doc["token"] + "x"), ("token", doc["token"])):
    req = urllib.request.Request(doc["url"], headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            out[case] = {"status": resp.status, "body": json.loads(resp.read())}
    except urllib.error.HTTPError as exc:
        out[case] = {"status": exc.code, "body": exc.read().decode()[:200]}
print(json.dumps(out))
'''


@pytest.mark.parametrize("app", APPS)
def test_detailed_health_needs_its_token(declared, app):
    assert_app_host(declared, app)
    token = declared[app]["values"]["app_secret_env"]["APP_HEALTH_TOKEN"]
    port = next(s["port"] for s in declared[app]["values"]["app_services"] if s.get("port"))
    # A host the firewall lets in: the monitoring host (it scrapes the app), else the load balancer.
    prober = next((h for h in HOSTS if "monitoring" in declared[h]["groups"]), None) or next(
        h for h in HOSTS if "lb" in declared[h]["groups"])
    got = python_on(prober, HEALTH, Secretive(url=f"http://{app}:{port}/api/health/detailed", token=token))
    print({case: r["status"] for case, r in got.items()})
    FIGURES[f"detailed health, {prober} to {app}"] = {case: r["status"] for case, r in got.items()}
    assert got["no token"]["status"] == 401, got["no token"]
    assert got["wrong token"]["status"] == 401, got["wrong token"]
    assert got["token"]["status"] == 200 and got["token"]["body"]["status"] == "ready", got["token"]
    assert "pid" in got["token"]["body"]  # the detailed document, not the public probe


TLS_PROBE = r'''
lb=$1; port=$2
old='ALL:COMPLEMENTOFALL:@SECLEVEL=0'
try() {
  echo | timeout 10 openssl s_client -connect "$lb:$port" -servername "$lb" "$@" 2>&1 \
    | grep -E -m2 'Cipher is|Protocol *:' | tr '\n' ' ' | grep . || echo 'no handshake'
}
for p in tls1 tls1_1 tls1_2; do echo "proto $p $(try -$p -cipher "$old")"; done
echo "proto tls1_3 $(try -tls1_3)"
for c in $(openssl ciphers -tls1_2 "$old" | tr ':' ' '); do
  case $c in TLS_*) continue;; esac
  echo "cipher $c $(try -tls1_2 -cipher "$c:@SECLEVEL=0")"
done
'''


@pytest.fixture(scope="module")
def tls(declared) -> dict[str, Any]:
    """openssl s_client from another host to the LB: each protocol, then every TLS 1.2 cipher alone."""
    lb = next(h for h in HOSTS if "lb" in declared[h]["groups"])
    port = int(declared[lb]["values"].get("nginx_https_port", 443))
    client = next(h for h in HOSTS if h != lb)
    out = host_of(client).check_output(f"bash -c {shlex.quote(TLS_PROBE)} probe {lb} {port}")
    protocols, accepted, tried = {}, [], 0
    for line in out.splitlines():
        kind, name, rest = line.split(" ", 2)
        outcome = labsec.tls_outcome(rest)
        if kind == "proto":
            protocols[name] = outcome[0] if outcome else "refused"
        else:
            tried += 1
            if outcome:
                accepted.append(outcome[1])
    weak = [c for c in accepted if labsec.weak_cipher(c)]
    print(f"{client} -> {lb}:{port}: protocols {protocols}; {len(accepted)} of {tried} TLS 1.2 ciphers accepted: "
          f"{accepted}")
    FIGURES[f"nginx TLS, {client} to {lb}"] = protocols | {
        "tls12_ciphers_tried": tried, "tls12_ciphers_accepted": len(accepted), "weak_accepted": " ".join(weak)}
    assert tried > 20, f"only {tried} ciphers tried: {out[-2000:]}"
    return {"protocols": protocols, "accepted": accepted, "weak": weak}


def test_nginx_tls_modern_protocols_only(tls):
    assert tls["protocols"] == {"tls1": "refused", "tls1_1": "refused", "tls1_2": "TLSv1.2",
                                "tls1_3": "TLSv1.3"}, tls["protocols"]


# Found by this gate: without ssl_ciphers nginx's default HIGH:!aNULL:!MD5 accepted 22 weak TLS 1.2
# ciphers (ECDHE-RSA-AES128-SHA, AES128-GCM-SHA256, ...); roles/nginx now sets nginx_tls_ciphers.
def test_nginx_tls_no_weak_ciphers(tls):
    assert tls["accepted"], "no TLS 1.2 cipher accepted at all"
    assert not tls["weak"], f"weak ciphers accepted: {tls['weak']}"
