"""inventory/examples/: every example inventory (a directory with a hosts.yml) is one a user can run.

For each of them:

- ``ansible-playbook --syntax-check`` of ``playbooks/site.yml`` and ``playbooks/deploy.yml`` passes, with an
  inventory that does not parse made fatal (Ansible only warns and goes on with no host by default);
- every host's variables, as ``ansible-inventory --list`` resolves them (group_vars and host_vars merged per host),
  pass the roles' ``meta/argument_specs.yml`` with Ansible's own ``ArgumentSpecValidator``, the check Ansible runs
  when a role starts. Beyond it, what Ansible never reports: a variable named like a role's option (``app_*``,
  ``nginx_*`` ...) that is no option of that role is a mistake (Ansible would ignore it without a word), unless it is
  one of the few variables a playbook or a role template reads outside the specs (``OUTSIDE_SPECS``, each checked to
  be read where it says). A value that is still a template (``"{{ vault_db_password }}"``) is checked by type only
  where a string is expected; the roles check the rest at run time;
- ``app_services`` passes the filters role app's preflight runs: the health contracts
  (``plugins/filter/health_contract.py``) and the dependency graph (``plugins/filter/service_graph.py``);
  ``maintenance_health_checks`` passes the ops agent's own check (``tradeops_health.HealthSpec``);
- a secret is never in clear: every option the specs mark ``no_log`` holds a template (a vault variable), and every
  ``vault_*`` variable used is listed for the user (a ``vault.yml.example`` or the README).

Fast: two processes for all the examples, started together, once per session: one ``--syntax-check`` with every
inventory (``-i`` each; the playbooks and roles are parsed once) and ``hostvars.py`` beside it (ansible-inventory's
own calls, one interpreter for all). The whole file costs about 11 s of CPU. The tests at the end prove that each
check fails on a wrong type, an unknown option, a bad health contract, a broken graph, a secret in clear and an
inventory that does not parse (which a plain --syntax-check passes: it only warns).
"""

from __future__ import annotations

import copy
import functools
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from ansible.errors import AnsibleFilterError
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.module_utils.tradeops_health import CheckError, HealthSpec

ROOT = Path(__file__).resolve().parents[3]
HERE = Path(__file__).resolve().parent
EXAMPLES = ROOT / "inventory" / "examples"
BIN = Path(sys.executable).parent
PLAYBOOKS = ["playbooks/site.yml", "playbooks/deploy.yml"]
# The seed systems (shared/seeds) and the example each must keep.
SEED_EXAMPLES = ["seed001-single", "seed001-many", "seed002", "seed003", "seed004"]
TEMPLATE = re.compile(r"{{|{%")
VAULT_NAME = re.compile(r"\bvault_[A-Za-z0-9_]+")
SECRET_KEY = re.compile(r"pass|secret|token|key", re.IGNORECASE)
FIX = "reference a vault variable instead, e.g. '{{ vault_db_password }}'"

# Read by a playbook or a role's template or filter from the inventory, outside the roles' argument specs:
# name -> (type, the file that reads it). test_outside_specs_are_read_where_they_say keeps the list honest.
OUTSIDE_SPECS: dict[str, tuple[str, str]] = {
    "app_serial": ("int", "playbooks/deploy.yml"),
    "app_drain_at_lb": ("bool", "playbooks/vars/app_lbs.yml"),
    "nginx_backend_address": ("str", "roles/nginx/filter_plugins/nginx_backends.py"),
    "nginx_backend_port": ("int", "roles/nginx/filter_plugins/nginx_backends.py"),
    "prometheus_address": ("str", "roles/prometheus/templates/prometheus.yml.j2"),
}
# firewall_allow__<anything> lists are added to firewall_allow (roles/firewall/meta/argument_specs.yml).
MERGED_PREFIXES = {"firewall_allow__": ("firewall", "firewall_allow")}


def _load_filter(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, ROOT / "plugins" / "filter" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


health_contract = _load_filter("health_contract")
service_graph = _load_filter("service_graph")


def examples() -> list[Path]:
    return sorted(p.parent for p in EXAMPLES.glob("*/hosts.yml"))


# --------------------------------------------------------------------------- the roles' specs


@functools.cache
def role_options() -> dict[str, dict[str, Any]]:
    """Role name -> its options (every entry point's, main first)."""
    out: dict[str, dict[str, Any]] = {}
    for spec_file in sorted((ROOT / "roles").glob("*/meta/argument_specs.yml")):
        entry_points = (yaml.safe_load(spec_file.read_text()) or {}).get("argument_specs") or {}
        options: dict[str, Any] = {}
        for name in sorted(entry_points, key=lambda n: n != "main"):
            for option, spec in ((entry_points[name] or {}).get("options") or {}).items():
                options.setdefault(option, spec)
        out[spec_file.parents[1].name] = options
    return out


def owner_role(name: str) -> str | None:
    """The role whose prefix the variable carries (the longest: windows_app_ before app_), or None."""
    roles = [role for role in role_options() if name.startswith(role + "_")]
    return max(roles, key=len) if roles else None


def _is_template(value: Any) -> bool:
    return isinstance(value, str) and bool(TEMPLATE.search(value))


def _as_checked(spec: dict[str, Any]) -> dict[str, Any]:
    """An option's spec as it applies to a value the inventory sets: no top-level default or required."""
    spec = copy.deepcopy(spec)
    spec.pop("default", None)
    spec.pop("required", None)
    return spec


def check_vars(hostvars: dict[str, Any]) -> list[str]:
    """What is wrong in one host's variables, against the roles' argument specs."""
    errors: list[str] = []
    specs: dict[str, dict[str, Any]] = {}
    params: dict[str, Any] = {}
    for name, value in sorted(hostvars.items()):
        merged = next((target for prefix, target in MERGED_PREFIXES.items() if name.startswith(prefix)), None)
        if name in OUTSIDE_SPECS:
            spec: dict[str, Any] | None = {"type": OUTSIDE_SPECS[name][0]}
        elif merged:
            spec = role_options()[merged[0]][merged[1]]
        else:
            role = owner_role(name)
            if role is None:
                continue  # the inventory's own variable (vault_*, market_exchange, ansible_* ...)
            spec = role_options()[role].get(name)
            if spec is None:
                errors.append(f"{name}: no option of role {role} (roles/{role}/meta/argument_specs.yml) is named so: "
                              f"fix the name, or give your own variable a name that starts with no role's name")
                continue
        spec = _as_checked(spec)
        if _is_template(value) and (spec.get("type", "str") not in ("str", "path", "raw") or "choices" in spec):
            continue  # a template where a list, dict, number or choice is expected: the role checks it at run time
        specs[name], params[name] = spec, value
    result = ArgumentSpecValidator(specs).validate(params)
    errors += [str(message) for message in result.error_messages]
    return errors


def literal_secrets(spec: dict[str, Any], value: Any, where: str) -> list[str]:
    """Values of no_log options (at any depth) that are not templates: secrets in clear. In a no_log mapping or list
    without a spec of its items (app_secret_env, backup_postgresql_role ...), the secret leaves are those whose key
    names a secret (password, secret, token, key) or an environment variable (app_secret_env's UPPER_CASE)."""
    if value in (None, "", [], {}):
        return []
    if spec.get("no_log") and not spec.get("options"):
        if not isinstance(value, dict | list):
            return [] if _is_template(value) else [f"{where} is in clear: {FIX}"]
        items = value if isinstance(value, list) else [value]
        return [f"{where}.{key} is in clear: {FIX}" for item in items if isinstance(item, dict)
                for key, leaf in item.items()
                if (SECRET_KEY.search(key) or key.isupper()) and not isinstance(leaf, dict | list)
                and leaf not in (None, "") and not _is_template(leaf)]
    out = []
    items = value if isinstance(value, list) else [value]
    for index, item in enumerate(items):
        if isinstance(item, dict):
            for key, sub in (spec.get("options") or {}).items():
                if key in item:
                    out += literal_secrets(sub, item[key], f"{where}[{index}].{key}")
    return out


def check_secrets(hostvars: dict[str, Any]) -> list[str]:
    errors = []
    for name, value in sorted(hostvars.items()):
        role = owner_role(name)
        spec = role_options().get(role or "", {}).get(name) if role else None
        if spec:
            errors += literal_secrets(spec, value, name)
    return errors


def check_services(hostvars: dict[str, Any]) -> list[str]:
    """app_services as role app's preflight filters see it; maintenance_health_checks as the ops agent does."""
    errors: list[str] = []
    services = hostvars.get("app_services")
    if isinstance(services, list):
        errors += health_contract.health_contract_errors(services)
        try:
            service_graph.service_order(services)
        except AnsibleFilterError as exc:
            errors.append(str(exc))
    checks = hostvars.get("maintenance_health_checks")
    if isinstance(checks, dict) and checks and not _is_template(json.dumps(checks)):
        try:
            HealthSpec.from_params(checks).validate()
        except CheckError as exc:
            errors.append(f"maintenance_health_checks: {exc}")
    return errors


# --------------------------------------------------------------------------- the ansible runs


def _env() -> dict[str, str]:
    return {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "ANSIBLE_INJECT_FACT_VARS": "false",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "ANSIBLE_CACHE_PLUGIN": "memory",
        # An inventory that does not parse is an error, not a warning and zero hosts.
        "ANSIBLE_INVENTORY_UNPARSED_FAILED": "true",
        "ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED": "true",
    }


def _tool(name: str) -> str:
    return str(BIN / name) if (BIN / name).exists() else name


def _start(argv: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(argv, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait(proc: subprocess.Popen[str]) -> subprocess.CompletedProcess[str]:
    stdout, stderr = proc.communicate(timeout=180)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def syntax_check(inventories: list[Path]) -> subprocess.Popen[str]:
    """One --syntax-check of both playbooks with every inventory given (-i each): the playbooks and roles are parsed
    once, and any inventory that does not parse fails the run (test_syntax_check re-runs an inventory alone to say
    which)."""
    sources = [arg for inventory in inventories for arg in ("-i", str(inventory))]
    return _start([_tool("ansible-playbook"), "--syntax-check", *sources, *PLAYBOOKS])


def run_all(inventories: list[Path], syntax: list[Path]) -> dict[str, Any]:
    """The host variables of ``inventories`` (tests/unit/inventory/hostvars.py: ansible-inventory --list's calls, one
    interpreter for all) beside one syntax check of ``syntax``."""
    procs = {"hostvars": _start([sys.executable, str(HERE / "hostvars.py"), *map(str, inventories)])}
    if syntax:
        procs["syntax"] = syntax_check(syntax)
    done = {key: _wait(proc) for key, proc in procs.items()}
    assert done["hostvars"].returncode == 0, done["hostvars"].stderr
    found = json.loads(done["hostvars"].stdout)
    return {"syntax": done.get("syntax"), "hostvars": {Path(k): v for k, v in found.items()}}


@functools.cache
def runs() -> dict[str, Any]:
    return run_all(examples(), syntax=examples())


def hostvars_of(inventory: Path, done: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    found = (done or runs())["hostvars"][inventory]
    assert "error" not in found, f"{inventory.name}: {found.get('error')}"
    return found["hostvars"]


def by_host(check, hostvars: dict[str, dict[str, Any]]) -> dict[str, list[str]]:
    found = {host: check(variables) for host, variables in sorted(hostvars.items())}
    return {host: errors for host, errors in found.items() if errors}


def ids(paths: list[Path]) -> list[str]:
    return [p.name for p in paths]


# --------------------------------------------------------------------------- the examples


def test_every_seed_has_an_example() -> None:
    names = ids(examples())
    assert [name for name in SEED_EXAMPLES if name not in names] == []
    for inventory in examples():
        assert (inventory / "README.md").is_file(), f"{inventory.name}: README.md (what it models, the commands)"


@pytest.mark.parametrize("inventory", examples(), ids=ids(examples()))
def test_syntax_check(inventory: Path) -> None:
    if runs()["syntax"].returncode == 0:
        return  # every example passed the shared run
    proc = _wait(syntax_check([inventory]))
    assert proc.returncode == 0, f"{' '.join(proc.args)}:\n{proc.stdout}\n{proc.stderr}"


@pytest.mark.parametrize("inventory", examples(), ids=ids(examples()))
def test_variables_pass_the_role_specs(inventory: Path) -> None:
    hostvars = hostvars_of(inventory)
    assert hostvars, f"{inventory.name} has no host"
    assert by_host(check_vars, hostvars) == {}


@pytest.mark.parametrize("inventory", examples(), ids=ids(examples()))
def test_services_and_health_contracts(inventory: Path) -> None:
    assert by_host(check_services, hostvars_of(inventory)) == {}


@pytest.mark.parametrize("inventory", examples(), ids=ids(examples()))
def test_no_secret_in_clear_and_every_vault_key_listed(inventory: Path) -> None:
    hostvars = hostvars_of(inventory)
    assert by_host(check_secrets, hostvars) == {}
    used = set(VAULT_NAME.findall(json.dumps(hostvars)))
    listed = set()
    for example in inventory.rglob("vault.yml.example"):
        listed |= set(yaml.safe_load(example.read_text()) or {})
    listed |= set(VAULT_NAME.findall((inventory / "README.md").read_text()))
    assert sorted(used - listed) == [], "list them in a vault.yml.example (or the README) for the user"


def test_readme_example_of_your_own_application() -> None:
    """The YAML of README.md's "Your own application" is an app group's variables that pass the same checks."""
    section = (ROOT / "README.md").read_text().split("## Your own application", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```yaml\n(.*?)```", section, re.DOTALL)
    assert block, "README.md: the section 'Your own application' shows its YAML in a ```yaml block"
    variables = yaml.safe_load(block.group(1))
    assert {"app_name", "app_package", "app_console_script", "app_services"} <= set(variables)
    assert check_vars(variables) + check_services(variables) + check_secrets(variables) == []


def test_outside_specs_are_read_where_they_say() -> None:
    for name, (_, reader) in OUTSIDE_SPECS.items():
        assert owner_role(name) and name not in role_options()[owner_role(name)], f"{name} is an option now"
        assert name in (ROOT / reader).read_text(), f"{reader} no longer reads {name}: drop it from OUTSIDE_SPECS"
    for prefix, (role, option) in MERGED_PREFIXES.items():
        assert prefix in (ROOT / "roles" / role / "meta" / "argument_specs.yml").read_text()
        assert option in role_options()[role]


# --------------------------------------------------------------------------- the checks fail on bad input

SERVICES = [
    {"name": "api", "args": ["serve"], "port": 8000, "readiness": {"path": "/health"}},
    {"name": "worker", "args": ["work"], "requires": ["api"], "liveness": {"kind": "none"}},
]


@pytest.mark.parametrize(("variables", "expected"), [
    ({"app_keep_releases": "many"}, "'app_keep_releases' is of type str and we were unable to convert to int"),
    ({"app_helth_deadline": 30}, "app_helth_deadline: no option of role app"),
    ({"redis_default_password": "{{ vault_redis }}"}, "redis_default_password: no option of role redis"),
    ({"app_services": [{"name": "api", "args": ["serve"], "prot": 8000}]}, "app_services.prot"),
    ({"app_services": [{"name": "api"}]}, "missing required arguments: args found in app_services"),
    ({"schedule_scheduler": "anacron"}, "schedule_scheduler must be one of: systemd, cron"),
    ({"firewall_allow__web": [{"port": 443}]}, "missing required arguments: sources found in firewall_allow__web"),
    ({"app_drain_at_lb": "maybe"}, "'app_drain_at_lb' is of type str and we were unable to convert to bool"),
    ({"app_env": "{{ my_env }}", "app_memory_max": "{{ x }}"}, None),  # templates: the role checks them at run time
])
def test_check_vars_fails_on_bad_input(variables: dict[str, Any], expected: str | None) -> None:
    errors = check_vars({"ansible_user": "deploy", "vault_x": "1", "market_exchange": "NYSE", **variables})
    if expected is None:
        assert errors == []
    else:
        assert any(expected in e for e in errors), errors


@pytest.mark.parametrize(("variables", "expected"), [
    ({"app_services": [SERVICES[0] | {"readiness": {"kind": "grpc"}}]}, "readiness.kind is 'grpc'"),
    ({"app_services": [SERVICES[1] | {"liveness": {"kind": "tcp"}}]}, "has no port"),
    ({"app_services": [SERVICES[1]]}, "worker"),  # requires an undeclared service
    ({"app_services": [SERVICES[0] | {"requires": ["worker"]}, SERVICES[1]]}, "cycle"),
    ({"maintenance_health_checks": {"tcp": ["localhost"]}}, "host:port"),
    ({"app_services": SERVICES, "maintenance_health_checks": {"tcp": ["127.0.0.1:8000"]}}, None),
])
def test_check_services_fails_on_bad_input(variables: dict[str, Any], expected: str | None) -> None:
    errors = check_services(variables)
    if expected is None:
        assert errors == []
    else:
        assert any(expected in e for e in errors), errors


@pytest.mark.parametrize(("variables", "expected"), [
    ({"redis_password": "s3cr3t-in-clear-0001"}, ["redis_password is in clear"]),  # pragma: allowlist secret
    ({"postgresql_users": [{"name": "a", "password": "clear-text-pw-01"}]},  # pragma: allowlist secret
     ["postgresql_users[0].password is in clear"]),
    ({"app_secret_env": {"TOKEN": "clear", "DB": "postgresql://u:{{ vault_pw }}@db/x"}},
     ["app_secret_env.TOKEN is in clear"]),
    ({"backup_postgresql_role": {"name": "backup", "password": "clear-text-pw-02"}},  # pragma: allowlist secret
     ["backup_postgresql_role.password is in clear"]),
    ({"backup_redis": [{"name": "r", "host": "127.0.0.1", "password": "{{ vault_r }}"}]}, []),
    ({"redis_password": "{{ vault_redis_password }}", "app_env": {"A": "b"}}, []),
])
def test_check_secrets_fails_on_clear_text(variables: dict[str, Any], expected: list[str]) -> None:
    assert [e.split(":")[0] for e in check_secrets(variables)] == expected


@pytest.fixture(scope="module")
def broken(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """Copies of an example, made wrong on purpose, through the same ansible commands."""
    tmp = tmp_path_factory.mktemp("examples")
    source = EXAMPLES / "seed003"
    wrong_vars = tmp / "wrong-vars"
    shutil.copytree(source, wrong_vars)
    host = next(iter(yaml.safe_load((source / "hosts.yml").read_text())["all"]["children"]["app"]["hosts"]))
    (wrong_vars / "host_vars").mkdir(exist_ok=True)
    with (wrong_vars / "host_vars" / f"{host}.yml").open("w") as fh:  # host_vars: over every group's value
        yaml.safe_dump({"app_keep_releases": "many", "app_helth_deadline": 30,
                        "app_services": [{"name": "api", "args": ["serve"], "port": 8000,
                                          "readiness": {"kind": "grpc"}, "requires": ["db"]}]}, fh)
    unparsable = tmp / "unparsable"
    shutil.copytree(source, unparsable)
    (unparsable / "hosts.yml").write_text("all:\n  children:\n    app: [\n")
    yield {"wrong-vars": wrong_vars, "unparsable": unparsable}


def test_a_wrong_copy_fails(broken: dict[str, Path]) -> None:
    done = run_all(list(broken.values()), syntax=[broken["unparsable"]])
    hostvars = hostvars_of(broken["wrong-vars"], done)
    errors = [e for host in hostvars.values() for e in check_vars(host) + check_services(host)]
    for expected in ["'app_keep_releases' is of type str and we were unable to convert to int",
                     "app_helth_deadline: no option of role app", "readiness.kind is 'grpc'", "'db'"]:
        assert any(expected in e for e in errors), (expected, errors)
    assert done["syntax"].returncode != 0, f"--syntax-check passed an inventory that does not parse:\n{done['syntax']}"
    assert "unparsable" in done["syntax"].stderr
    assert "error" in done["hostvars"][broken["unparsable"]]
