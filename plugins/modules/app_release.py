#!/usr/bin/python
# Copyright: tradeops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: app_release
short_description: Create, activate, roll back and prune releases of a Python application
version_added: "0.1.0"
description:
  - Manages the release tree of one application on a Linux host,
    C(releases/<version>-<UTC timestamp>/) (code and its own virtualenv, read-only),
    C(shared/{data,logs,config}), the C(current) symlink, C(ledger.jsonl) and the deploy lock.
  - A release is installed offline from a wheelhouse built on the controller. The
    dependencies are installed once into a layer C(deps/<sha256>/) keyed by the dependency
    wheels, the requirements and the interpreter, and linked into each release's virtualenv
    with a C(.pth) file, so a deploy whose dependencies did not change only installs the app wheel.
  - Releases are built under a temporary name and renamed into place; C(current) is switched
    with a new symlink renamed over it. Killing the play at any moment leaves C(current)
    pointing to a complete release.
  - Release order comes from the ledger (never from file times). C(status) of a release is the
    latest C(mark) in the ledger, C(good), C(bad) or C(unknown).
  - Every action that changes something appends one JSON line to C(ledger.jsonl)
    (time, action, user, host, version, release, wheelhouse_sha256, outcome, duration_s,
    reason, previous).
author:
  - tradeops contributors
attributes:
  check_mode:
    support: full
    description: Reports what would change (the release a create would make, the switch of C(current)), writes nothing.
  diff_mode:
    support: full
    description: C(activate) and C(rollback) show the target of C(current) before and after; C(mark) the status.
  platform:
    platforms: posix
extends_documentation_fragment:
  - tradeops_lock
  - tradeops_requirements
options:
  path:
    description: Root of the application tree, for example C(/opt/refapp).
    type: path
    required: true
  action:
    description:
      - C(init) makes the tree (releases/, deps/, shared/{data,logs,config} owned by O(owner):O(group)), nothing else.
      - C(create) builds a release from O(wheelhouse) (idempotent for the same version, wheelhouse and interpreter).
      - C(activate) points C(current) at O(release) (or the newest release of O(version)).
      - C(rollback) goes back to the previous good release, or to O(release) / O(version).
      - C(mark) records O(outcome) (good or bad) of a release (default the current one) in the ledger.
      - C(prune) keeps the O(keep) newest releases plus C(current), the last good and the previous good release.
      - C(list) reports the releases (read only).
      - C(lock) takes the deploy lock, C(unlock) releases it.
    type: str
    required: true
    choices: [init, create, activate, rollback, prune, list, mark, lock, unlock]
  version:
    description:
      - Version label of the release (letters, digits, C(. _ + ! -)).
      - Required by C(create). For C(activate), C(rollback) and C(mark), selects the newest release
        of that version (a good one when there is one).
    type: str
  release:
    description: A release id (C(<version>-<YYYYmmddTHHMMSSZ>)), for C(activate), C(rollback) and C(mark).
    type: str
  wheelhouse:
    description:
      - Directory on the host with the app wheel and all its dependency wheels. Required by C(create).
      - When it holds the controller's C(wheelhouse.json), every file must match it (a partial copy is refused),
        and its C(version) must be O(version).
    type: path
  package:
    description:
      - Distribution name of the application (its C([project] name)), to find its wheel in O(wheelhouse).
      - Defaults to the C(name) in the wheelhouse's C(wheelhouse.json) (written by C(scripts/build_wheelhouse.py)).
    type: str
  python:
    description: Interpreter the release virtualenvs are made with (C(init) reports its version, RV(python_version)).
    type: path
    default: /usr/bin/python3
  account:
    description:
      - For C(init), the app user's expected C(shell), C(home) and C(comment) (those given are compared).
      - C(init) then reports RV(account_in_place) (O(owner) exists with O(group) as its primary group and these
        attributes, and O(group) exists), so role app runs its group and user tasks only when they have work to do.
      - When O(owner) or O(group) does not exist yet, C(init) makes nothing and returns RV(tree_pending) (outside
        check mode); call it again once they exist.
    type: dict
    suboptions:
      shell:
        description: Login shell.
        type: str
      home:
        description: Home directory.
        type: path
      comment:
        description: GECOS comment.
        type: str
  shared_links:
    description:
      - Symlinks made in each release, path inside the release -> path under C(shared/).
      - Both sides are relative paths without C(..).
    type: dict
    default: {data: data, logs: logs, config: config}
  owner:
    description:
      - Owner of C(shared/data), C(shared/logs) and C(shared/config) (the app user).
      - A user that does not exist is refused before anything is made; in check mode it is reported
        (RV(missing_accounts)), as the run's earlier task that creates it only reported too.
    type: str
  group:
    description:
      - Group of the shared directories and of the release tree (the app group).
      - Release trees are owned by the user running the module and are never writable by group or others.
    type: str
  keep:
    description: Number of newest releases C(prune) keeps (besides the protected ones); at least 1 (C(0) is refused).
    type: int
    default: 5
  min_free_mb:
    description:
      - For C(create), free disk (MB) needed under O(path); the create is refused before anything is written when short.
    type: int
    default: 0
  outcome:
    description: Result to record with C(mark).
    type: str
    choices: [good, bad]
  reason:
    description: Free text recorded in the ledger with C(mark), C(activate) and C(rollback).
    type: str
  allow_bad:
    description: Allow C(activate) or C(rollback) to a release marked bad.
    type: bool
    default: false
notes:
  - Runs as root on the target. The logic lives in C(module_utils/tradeops_release.py) (standard library only).
  - Dependency layers are built with pip (C(--no-index --find-links) the wheelhouse, C(--target) the layer); the app
    wheel itself is installed without pip (RECORD hashes checked, console scripts written), which saves pip's start-up.
seealso:
  - module: app_health
"""

EXAMPLES = r"""
- name: Take the deploy lock
  app_release:
    path: /opt/refapp
    action: lock
    lock_owner: "{{ lookup('env', 'USER') }}"
    lock_host: "{{ lookup('pipe', 'hostname') }}"
    lock_reason: "deploy {{ app_version }}"
    force_unlock: "{{ force_unlock | default(false) | bool }}"

- name: Create the release from the wheelhouse copied to the host
  app_release:
    path: /opt/refapp
    action: create
    version: "{{ app_version }}"
    wheelhouse: /opt/refapp/wheelhouse/{{ app_version }}
    package: tradeops-refapp
    owner: refapp
    group: refapp
  register: app_release_created

- name: Switch current to it
  app_release:
    path: /opt/refapp
    action: activate
    release: "{{ app_release_created.release }}"

- name: Record the result of the health gate
  app_release:
    path: /opt/refapp
    action: mark
    release: "{{ app_release_created.release }}"
    outcome: bad
    reason: readiness probe failed

- name: Roll back to the previous good release
  app_release:
    path: /opt/refapp
    action: rollback

- name: Keep five releases
  app_release:
    path: /opt/refapp
    action: prune
    keep: 5
"""

RETURN = r"""
action:
  description: The action run.
  returned: always
  type: str
current:
  description: Release id C(current) points to after the action (null when there is none).
  returned: always
  type: str
release:
  description: The release created, activated, rolled back to or marked.
  returned: create, activate, rollback, mark
  type: str
  sample: 1.4.2-20250301T101500Z
release_path:
  description: Directory of that release.
  returned: create, activate, rollback
  type: str
previous:
  description: Release C(current) pointed to before the switch.
  returned: activate, rollback
  type: str
version:
  description: Version of the release.
  returned: create, activate, rollback
  type: str
status:
  description: Ledger status of the release (good, bad, unknown); a re-created existing release keeps its status.
  returned: create
  type: str
existed:
  description: True when create found the same version, wheelhouse and interpreter already released.
  returned: create
  type: bool
wheelhouse_sha256:
  description: Checksum of the wheelhouse, sha256 of the sorted C(<wheel name> <sha256>) lines (as in wheelhouse.json).
  returned: create
  type: str
deps_sha256:
  description:
    - Key of the dependency layer (null when the app has no dependencies), sha256 of the dependency wheels' contents
      (their RECORDs, so zip timestamps do not matter), the app's requirements and the interpreter's ABI.
  returned: create
  type: str
deps_path:
  description: Directory of the dependency layer.
  returned: create
  type: str
deps_reused:
  description: True when the dependency layer already existed and was linked, not rebuilt.
  returned: create
  type: bool
changed_dirs:
  description: Directories of the tree that create made or gave to owner/group (empty when the tree was in place).
  returned: create
  type: list
  elements: str
python_version:
  description: Version (X.Y.Z) of O(python), "" when it is not installed.
  returned: init
  type: str
  sample: 3.11.2
account_in_place:
  description: Whether O(owner) and O(group) exist as O(account) describes.
  returned: init, with O(account)
  type: bool
tree_pending:
  description: True when the tree was not made because O(owner) or O(group) does not exist yet (O(account) given).
  returned: init
  type: bool
missing_accounts:
  description:
    - The owner or group that does not exist yet, e.g. C(owner 'refapp' does not exist yet).
    - Outside check mode that is an error.
  returned: init and create in check mode, when the owner or group does not exist on the host
  type: list
  elements: str
timings:
  description: Seconds per phase (wheelhouse_s, inspect_s, deps_s, venv_s, install_s, compile_s, finalize_s, total_s).
  returned: create
  type: dict
outcome:
  description: Outcome recorded by mark.
  returned: mark
  type: str
kept:
  description: Release ids kept by prune, oldest first.
  returned: prune
  type: list
  elements: str
removed:
  description: Release ids removed (or, in check mode, that would be removed) by prune.
  returned: prune
  type: list
  elements: str
removed_layers:
  description: Dependency layers no kept release uses, removed by prune.
  returned: prune
  type: list
  elements: str
removed_wheelhouses:
  description: Shipped wheelhouses (C(wheelhouses/)) no kept release was built from, older than 10 min, pruned.
  returned: prune
  type: list
  elements: str
releases:
  description: Releases newest first (id, version, created, status, reason, current, wheelhouse_sha256, deps_sha256).
  returned: list
  type: list
  elements: dict
last_good:
  description: Newest release marked good.
  returned: list
  type: str
previous_good:
  description: Release a rollback without a name would go to.
  returned: list
  type: str
lock:
  description: Holder of the lock (owner, host, pid, time, epoch, reason) taken, released, or refusing.
  returned: lock, unlock, and on a refused lock
  type: dict
stale:
  description: Whether the existing lock is stale (older than lock_stale_after, or its process on this host is gone).
  returned: lock, and on a refused lock
  type: bool
broken:
  description: Previous holder of a lock broken with force_unlock.
  returned: lock
  type: dict
forced:
  description: True when unlock released somebody else's lock (force_unlock).
  returned: unlock
  type: bool
removed_partial:
  description: Leftovers of interrupted creates (older than 10 minutes) removed by prune.
  returned: prune
  type: list
  elements: str
candidates:
  description: Releases to choose from when a rollback or activate cannot proceed.
  returned: failure of rollback / activate
  type: list
ledger_entry:
  description: The line appended to the ledger.
  returned: when something changed
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.tradeops_release import (
    DEFAULT_SHARED_LINKS,
    ReleaseError,
    ReleaseStore,
    lock_argument_spec,
    run_action,
)

ACTIONS = ["init", "create", "activate", "rollback", "prune", "list", "mark", "lock", "unlock"]


def argument_spec() -> dict:
    return dict(
        path=dict(type="path", required=True),
        action=dict(type="str", required=True, choices=ACTIONS),
        version=dict(type="str"),
        release=dict(type="str"),
        wheelhouse=dict(type="path"),
        package=dict(type="str"),
        python=dict(type="path", default="/usr/bin/python3"),
        shared_links=dict(type="dict", default=dict(DEFAULT_SHARED_LINKS)),
        requirements=dict(type="list", elements="str", default=[]),
        owner=dict(type="str"),
        group=dict(type="str"),
        keep=dict(type="int", default=5),
        min_free_mb=dict(type="int", default=0),
        outcome=dict(type="str", choices=["good", "bad"]),
        reason=dict(type="str"),
        allow_bad=dict(type="bool", default=False),
        account=dict(type="dict", options=dict(shell=dict(type="str"), home=dict(type="path"),
                                               comment=dict(type="str"))),
        **lock_argument_spec(),
    )


def main() -> None:
    module = AnsibleModule(
        argument_spec=argument_spec(),
        required_if=[
            ("action", "create", ("version", "wheelhouse")),
            ("action", "activate", ("release", "version"), True),
            ("action", "mark", ("outcome",)),
        ],
        supports_check_mode=True,
    )
    params = module.params
    if params["keep"] < 1:
        module.fail_json(msg=f"keep={params['keep']}: keep at least 1 release (default 5)")
    try:
        store = ReleaseStore(params["path"], actor=params["actor"])
        result = run_action(store, params["action"], params, module.check_mode)
    except ReleaseError as exc:
        module.fail_json(msg=str(exc), action=params["action"], **exc.details)
    except OSError as exc:
        module.fail_json(
            msg=f"app_release {params['action']} on {params['path']}: {exc}; check that the module runs as root "
                "(become: true) and that the filesystem is writable",
            action=params["action"])
    if not module._diff:
        result.pop("diff", None)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
