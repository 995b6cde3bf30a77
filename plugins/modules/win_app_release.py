#!/usr/bin/python
# Copyright: tradeops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# Documentation only: the module is win_app_release.ps1 (PowerShell runs on Windows targets).

from __future__ import annotations

DOCUMENTATION = r"""
---
module: win_app_release
short_description: Create, activate, roll back, mark and prune releases on Windows, with the Linux ledger format
version_added: "0.1.0"
description:
  - Windows twin of M(app_release). Releases live in C(<path>\releases\<version>-<UTC yyyyMMddTHHmmssZ>), each with
    its own virtualenv installed offline (C(pip install --no-index --find-links <wheelhouse>)) from a wheelhouse
    already on the host.
  - C(<path>\current) is a junction. The first activation creates it; later switches rewrite its reparse data in
    place with one C(FSCTL_SET_REPARSE_POINT), so the junction always points at the old or the new release, never at
    nothing.
  - Every action appends one JSON line to C(<path>\ledger.jsonl) with the fields of the Linux ledger
    (C(time action user host version release wheelhouse_sha256 outcome duration_s reason previous)); release order is
    the order of the ledger's C(create) lines; status is the latest C(mark) of a release.
  - The deploy lock C(<path>\deploy.lock) holds its holder as JSON (C(owner host pid time epoch reason)); it is
    created exclusively, refused while held, reported stale after O(lock_stale_after) seconds or when its process is
    gone.
author:
  - tradeops contributors
attributes:
  check_mode:
    support: full
    description: Every state reports what it would do and changes nothing in check mode.
  diff_mode:
    support: full
  platform:
    platforms: windows
options:
  path:
    description: The application root, e.g. C(C:\TradingEngine).
    type: path
    required: true
  state:
    description: The action.
    type: str
    default: list
    choices: [create, activate, rollback, mark, prune, list, lock, unlock]
  version:
    description: Version to create, or to activate / roll back to / mark (its newest good release).
    type: str
  release:
    description: Release id to activate, roll back to or mark.
    type: str
  wheelhouse:
    description: Directory on the host holding the app wheel and its dependency wheels (state=create).
    type: path
  package:
    description: Distribution name of the application installed from the wheelhouse (state=create).
    type: str
  python:
    description: python.exe that creates the release's virtualenv (state=create).
    type: path
  keep:
    description: Releases to keep on state=prune (current, the last good and the rollback target are always kept).
    type: int
    default: 5
  outcome:
    description: Mark given to the release (state=mark).
    type: str
    choices: [good, bad]
  reason:
    description: Reason written into the ledger.
    type: str
  allow_bad:
    description: Allow activating or rolling back to a release marked bad.
    type: bool
    default: false
  actor:
    description: User written into the ledger (default the connection's user).
    type: str
  lock_owner:
    description: Owner of the deploy lock (default O(actor)).
    type: str
  lock_host:
    description: Host of the lock's holder, normally the controller.
    type: str
  lock_pid:
    description: Process id of the lock's holder (the playbook's).
    type: int
  lock_reason:
    description: Why the lock is taken.
    type: str
  lock_stale_after:
    description: Seconds after which a held lock is reported stale.
    type: int
    default: 1800
  force_unlock:
    description: Break a lock held by somebody else (recorded in the ledger).
    type: bool
    default: false
  record:
    description:
      - Write a ledger line for an ordinary lock / unlock (false for a caller that records its run itself, as the
        deploy does). Breaking somebody else's lock is always recorded.
    type: bool
    default: true
notes:
  - Nothing of this module has run on a real Windows host yet; its syntax is checked by C(scripts/check_powershell.py).
seealso:
  - module: app_release
  - module: win_app_health
"""

EXAMPLES = r"""
- name: Create a release from the wheelhouse copied to the host
  win_app_release:
    path: C:\TradingEngine
    state: create
    version: 1.4.2
    wheelhouse: C:\TradingEngine\wheelhouses\1.4.2
    package: trading-engine
    python: C:\Program Files\Python311\python.exe
  register: release

- name: Switch current to it
  win_app_release:
    path: C:\TradingEngine
    state: activate
    release: "{{ release.release }}"

- name: Back to the previous good release
  win_app_release:
    path: C:\TradingEngine
    state: rollback
    reason: health gate failed
"""

RETURN = r"""
release:
  description: The release created, activated, rolled back to or marked.
  returned: create, activate, rollback, mark
  type: str
  sample: 1.4.2-20260115T020000Z
release_path:
  description: Its directory.
  returned: create, activate, rollback
  type: str
previous:
  description: The release that was current before.
  returned: activate, rollback
  type: str
version:
  description: Version of the release.
  returned: create, activate, rollback
  type: str
wheelhouse_sha256:
  description: Digest of the wheelhouse the release was installed from.
  returned: create
  type: str
ledger_entry:
  description: The ledger line written.
  returned: when something changed
  type: dict
releases:
  description: Every release (id, version, created, status, wheelhouse_sha256, python, current), oldest first.
  returned: list
  type: list
  elements: dict
current:
  description: The current release.
  returned: list
  type: str
last_good:
  description: The newest release marked good.
  returned: list
  type: str
previous_good:
  description: Where a rollback would go.
  returned: list
  type: str
kept:
  description: Releases kept by prune.
  returned: prune
  type: list
  elements: str
removed:
  description: Releases removed by prune.
  returned: prune
  type: list
  elements: str
lock:
  description: The lock's holder.
  returned: lock, unlock
  type: dict
"""
