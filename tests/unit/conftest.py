"""Set-up shared by every unit test: the project's plugins are importable the way
ansible.cfg makes them available to Ansible (``module_utils = plugins/module_utils``,
``library = plugins/modules``), so module code and tests use the same imports:
``from ansible.module_utils.tradeops_release import ...`` and ``import app_release``.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODULE_UTILS = str(ROOT / "plugins" / "module_utils")
MODULES = str(ROOT / "plugins" / "modules")

try:
    import ansible.module_utils
except ImportError:  # tests that do not need Ansible still run
    pass
else:
    if MODULE_UTILS not in ansible.module_utils.__path__:
        ansible.module_utils.__path__.append(MODULE_UTILS)

if MODULES not in sys.path:
    sys.path.insert(0, MODULES)
