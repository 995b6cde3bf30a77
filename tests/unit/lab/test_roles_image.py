"""The <platform>-roles lab image (lab/image/Dockerfile.roles) carries exactly the Debian packages
the roles install: a package a role adds but the list lacks would be installed on every host of
every scenario that uses the image (slower, silently), and one the roles dropped would stay in
the image, where a test could pass only because of it."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[3]
LIST = ROOT / "lab" / "image" / "roles-packages.txt"


def listed() -> list[str]:
    return [line.strip() for line in LIST.read_text().splitlines() if line.strip() and not line.startswith("#")]


def role_var(role: str, name: str, where: str = "defaults"):
    return yaml.safe_load((ROOT / "roles" / role / where / "main.yml").read_text())[name]


def roles_packages() -> set[str]:
    exporters = role_var("monitoring", "__monitoring_exporters", "vars")
    return {
        *role_var("common", "common_packages"),
        *role_var("postgresql", "postgresql_packages"),
        *role_var("postgresql", "__postgresql_python_packages", "vars"),
        *role_var("redis", "redis_packages"),
        *role_var("nginx", "__nginx_packages", "vars"),
        *role_var("prometheus", "prometheus_packages"),
        *(e["unit"] for e in exporters),
        *role_var("backup", "backup_packages"),
        "nftables",  # roles/firewall/tasks/main.yml names it in the task
    }


def test_the_list_is_the_roles_packages_once_each():
    names = listed()
    assert len(names) == len(set(names)), names
    assert set(names) == roles_packages()


def test_every_os_packages_task_of_the_roles_is_accounted_for():
    """A role that installs a package this test does not read must be added to roles_packages()."""
    known = {"common", "postgresql", "redis", "nginx", "prometheus", "monitoring", "backup", "firewall",
             "schedule"}  # schedule: cron, only with its cron jobs (not in the image, as cron for backups)
    found = {p.parts[-3] for p in (ROOT / "roles").glob("*/tasks/*.yml")
             if re.search(r"^\s+os_packages:", p.read_text(), re.M)}
    assert found <= known, found - known


def test_the_images_a_scenario_names_are_platforms_lab_sh_builds():
    names = set()
    for f in (ROOT / "molecule").glob("*/molecule.yml"):
        for p in yaml.safe_load(f.read_text()).get("platforms", []):
            names.add(p.get("image", "debian12"))
    names.discard("windows")
    for name in names:
        out = subprocess.run([str(ROOT / "scripts" / "lab.sh"), "image-tag", name], capture_output=True, text=True)
        assert out.returncode == 0 and out.stdout.startswith(f"tradeops-lab:{name}-"), (name, out.stderr)

