#!/usr/bin/python
# Copyright: tradeops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: backup_run
short_description: Back up a tradeops backup set now (local, offsite, verified)
version_added: "0.1.0"
description:
  - Does what a scheduled C(tradeops-backup backup) run does (the same logic, in C(module_utils/tradeops_backup.py)).
    It backs up PostgreSQL (C(pg_dump -Fc)), SQLite (online backup API), Redis (C(BGSAVE) and a copy of the RDB)
    and directories (C(tar.gz)) into a new C(<backup_root>/<backup_id>/) with a manifest. Every file is encrypted
    with C(age) and the manifest signed (HMAC-SHA256) with keys derived from the set's C(encryption.key_file), which
    is therefore required (role variable C(backup_encryption_key)); without it the task fails naming it.
  - It then uploads every local backup whose offsite copy is missing (S3), optionally verifies the new backup
    with scratch restores, applies the retention (the newest verified backup is never deleted) and writes the
    node_exporter metrics.
  - When the backup fails, its partial files are removed and the task fails; earlier backups are untouched.
  - When the backup was made but the offsite copy, the verification or the retention failed, the task fails with
    RV(backup_id) set. The local backup is kept and the next run uploads what is missing.
author:
  - tradeops contributors
attributes:
  check_mode:
    support: full
    description: In check mode nothing is backed up; the module reports the items it would back up (and fails, as
      a real run would, when the set's key is missing).
  diff_mode:
    support: none
  platform:
    platforms: posix
options:
  config:
    description: Path on the host of the backup set's JSON configuration (the file C(tradeops-backup --config) reads).
    type: path
  settings:
    description:
      - The configuration as a dictionary, merged over O(config) (top-level keys replace the file's).
      - Secrets are never given here, only files that hold them.
    type: dict
  upload:
    description: Upload what is missing offsite (when the configuration has C(offsite)).
    type: bool
    default: true
  verify:
    description: Verify the new backup (checksums, archives, scratch restores, offsite copy).
    type: bool
    default: false
  prune:
    description: Apply the retention afterwards.
    type: bool
    default: true
notes:
  - Timers and cron call C(tradeops-backup) directly; this module is for playbooks (C(backup.yml), the emergency
    backup of C(restore.yml)).
seealso:
  - module: backup_verify
"""

EXAMPLES = r"""
- name: Back up now, upload, verify
  backup_run:
    config: /etc/tradeops/backup.json
    verify: true
  register: backup_run_result

- name: Emergency backup of the current state before a restore (local only, nothing pruned)
  backup_run:
    config: /etc/tradeops/backup.json
    upload: false
    prune: false
"""

RETURN = r"""
backup_id:
  description: The new backup (also set when a later step failed; the local backup is then kept).
  returned: when the backup was made
  type: str
  sample: 20250101T020000Z-db1
path:
  description: Directory of the new backup.
  returned: when the backup was made
  type: str
bytes:
  description: Bytes stored.
  returned: when the backup was made
  type: int
duration:
  description: Seconds the backup took.
  returned: when the backup was made
  type: float
offsite:
  description: What was uploaded (C(uploaded), C(errors), C(status)).
  returned: when uploading
  type: dict
verify:
  description: The verification report (see M(backup_verify)).
  returned: when O(verify=true)
  type: dict
prune:
  description: Local backups kept and deleted.
  returned: when pruning
  type: dict
problems:
  description: What failed after the local backup was made.
  returned: when the backup was made
  type: list
  elements: str
items:
  description: In check mode, the items that would be backed up (C(kind), C(name)).
  returned: in check mode
  type: list
  elements: dict
"""


from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.tradeops_backup import BackupError, backup_now, check_key, module_config


def argument_spec() -> dict:
    return dict(
        config=dict(type="path"),
        settings=dict(type="dict"),
        upload=dict(type="bool", default=True),
        verify=dict(type="bool", default=False),
        prune=dict(type="bool", default=True),
    )


def main() -> None:
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True,
                           required_one_of=[("config", "settings")])
    params = module.params
    try:
        cfg = module_config(params["config"], params["settings"])
        check_key(cfg)  # every backup is encrypted and signed with it: say so before anything, in check mode too
        if module.check_mode:
            items = [dict(kind=kind, name=item["name"]) for kind in ("postgresql", "sqlite", "redis", "paths")
                     for item in cfg[kind]]
            module.exit_json(changed=True, items=items)
        result = backup_now(cfg, upload=params["upload"], verify=params["verify"], prune=params["prune"])
    except (OSError, ValueError) as exc:
        module.fail_json(msg=f"cannot read the configuration {params['config']}: {exc}")
    except BackupError as exc:
        module.fail_json(msg=str(exc))
    if result["problems"]:
        module.fail_json(msg=f"backup {result['backup_id']} was made and kept locally, but: "
                             + "; ".join(result["problems"]), changed=True, **result)
    module.exit_json(changed=True, **result)


if __name__ == "__main__":
    main()
