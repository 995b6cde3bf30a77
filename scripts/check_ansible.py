#!/usr/bin/env python3
"""ansible-lint, with its check of imported playbooks done once per playbook.

For every ``import_playbook`` ansible-lint runs ``ansible-playbook --syntax-check`` on the target
(ansible-compat's ``Runtime.has_playbook``), in its main thread, and caches the answer under the
path as written: ``molecule/deploy/../../playbooks/site.yml`` and
``molecule/backup/../../playbooks/site.yml`` are two entries, so the same playbook was
syntax-checked once per scenario that imports it (26 runs of ~1.1 s for 6 playbooks, a third
of make lint). Here the cache key is the resolved path; the check itself is unchanged.

Arguments are ansible-lint's (``--help``); exit codes are ansible-lint's: 0 passed, 2 violations
or a failure to load, anything else an ansible-lint error.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any


def resolve_imported_playbooks_once() -> bool:
    """Patch Runtime.has_playbook to key its cache on the resolved path; False when this
    ansible-compat has no such method (then ansible-lint runs as shipped)."""
    try:
        from ansible_compat.runtime import Runtime
    except ImportError:
        return False
    original = getattr(Runtime, "has_playbook", None)
    if original is None or getattr(original, "_tradeops_resolved", False):
        return original is not None

    def has_playbook(self: Any, playbook: str, *, basedir: Path | None = None) -> bool:
        if basedir is None and not playbook.startswith(("/", "~")) and os.path.exists(playbook):
            playbook = os.path.relpath(os.path.realpath(playbook))
        return original(self, playbook, basedir=basedir)

    has_playbook._tradeops_resolved = True  # type: ignore[attr-defined]
    Runtime.has_playbook = has_playbook  # type: ignore[method-assign]
    return True


def main() -> int:
    resolve_imported_playbooks_once()
    from ansiblelint.__main__ import _run_cli_entrypoint

    sys.argv[0] = "ansible-lint"
    return _run_cli_entrypoint()


if __name__ == "__main__":
    sys.exit(main())
