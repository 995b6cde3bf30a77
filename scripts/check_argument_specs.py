#!/usr/bin/env python3
"""Keep every role's meta/argument_specs.yml in step with its defaults and README.

For each role: the options of the `main` entry point must be exactly the keys of
defaults/main.yml, every option needs a description, and README.md must name
every option. Exit 1 listing each difference, 0 when all roles agree.
"""
from __future__ import annotations

import sys
from pathlib import Path

import yaml


def problems(role: Path) -> list[str]:
    spec_file = role / "meta" / "argument_specs.yml"
    if not spec_file.is_file():
        return [f"{role.name}: meta/argument_specs.yml is missing"]
    defaults_file = role / "defaults" / "main.yml"
    defaults = yaml.safe_load(defaults_file.read_text()) if defaults_file.is_file() else {}
    spec = (yaml.safe_load(spec_file.read_text()) or {}).get("argument_specs", {})
    options = (spec.get("main") or {}).get("options") or {}
    out = [f"{role.name}: default '{k}' is not in argument_specs" for k in sorted(set(defaults or {}) - set(options))]
    out += [f"{role.name}: option '{k}' has no default in defaults/main.yml"
            for k in sorted(set(options) - set(defaults or {})) if not options[k].get("required")]
    out += [f"{role.name}: option '{k}' has no description" for k, v in sorted(options.items())
            if not v.get("description")]
    readme = role / "README.md"
    text = readme.read_text() if readme.is_file() else ""
    if not text:
        out.append(f"{role.name}: README.md is missing")
    out += [f"{role.name}: README.md does not mention '{k}'" for k in sorted(options) if text and f"`{k}`" not in text]
    return out


def main() -> int:
    roles = sorted(p for p in Path(sys.argv[1] if len(sys.argv) > 1 else "roles").iterdir() if p.is_dir())
    found = [msg for role in roles for msg in problems(role)]
    for msg in found:
        print(f"argument specs: {msg}", file=sys.stderr)
    print(f"argument specs: {len(roles)} roles checked, {len(found)} problems")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
