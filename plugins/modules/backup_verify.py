#!/usr/bin/python
# Copyright: tradeops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: backup_verify
short_description: Prove that a tradeops backup can be restored
version_added: "0.1.0"
description:
  - Verifies one backup of a backup set made by C(tradeops-backup) (the same logic, in
    C(module_utils/tradeops_backup.py)) and returns a per-item report.
  - First the authenticity of the backup's C(manifest.json) (check C(authenticity)), an HMAC-SHA256 made with the
    set's key (C(encryption.key_file), role variable C(backup_encryption_key)), which lives only on the hosts and in
    the vault. A manifest that does not verify (altered, planted by whoever can write the bucket, signed with
    another key, copied under another backup id or set) fails the backup, named in RV(failed_items), and nothing
    else is read from it. A backup made before manifests were signed (format 1) fails the same way unless
    O(allow_unsigned=true).
  - Every item of the manifest must be one the configuration names, as the same kind (check C(configuration));
    a restore refuses any other.
  - Checksums of every file against the manifest (size and sha256); a damaged or missing
    file is named exactly and not checked further.
  - Archive integrity, C(pg_restore --list) for PostgreSQL dumps, a full read of every C(tar.gz), each file
    decrypted with C(age) (which authenticates every chunk).
  - A scratch restore, compared with the counts recorded at backup time. PostgreSQL, into a temporary database
    with a unique C(tradeops_verify_) name that is dropped afterwards, also on failure; table row counts
    compared. SQLite, a copy through the backup API, C(PRAGMA integrity_check) and row counts. Redis,
    C(redis-check-rdb) and a load into a throw-away C(redis-server) on a spare loopback port, key count compared.
  - The offsite copy (S3), present with the size and sha256 of the manifest, and freshness (age within a limit).
  - Scratch restores never touch production data. They only create and drop their own temporary database,
    files and server. So the module runs its checks in check mode too.
  - The task fails when a check fails, and its message names the bad items.
author:
  - tradeops contributors
attributes:
  check_mode:
    support: full
    description:
      - The checks are read-only for production data, so they run in check mode too. In check mode the result
        is not recorded (no C(verify.json), no metrics).
  diff_mode:
    support: none
  platform:
    platforms: posix
options:
  config:
    description:
      - Path on the host of the backup set's JSON configuration (the file C(tradeops-backup --config) reads).
    type: path
  settings:
    description:
      - The configuration as a dictionary, merged over O(config) (top-level keys replace the file's).
      - Secrets are never given here, only files that hold them (C(password_file), C(key_file),
        C(secret_access_key_file)).
      - One of O(config) and O(settings) is required; C(backup_root) must be set in one of them.
    type: dict
  backup_id:
    description:
      - The backup to verify, C(latest) (the newest complete backup) or C(latest-verified).
      - An unknown id fails with the list of available ids.
    type: str
    default: latest
  scratch_restore:
    description: Restore into temporary databases and servers. When false only checksums and archives are checked.
    type: bool
    default: true
  offsite:
    description: Compare the offsite copy; default from the configuration (when it has C(offsite)).
    type: bool
  max_age_hours:
    description: Freshness limit of the backup in hours; default from the configuration (C(verify.max_age_hours)).
    type: float
  record:
    description:
      - Record the result in C(verify.json) next to the manifest, signed with the set's key and bound to the
        manifest (only such a record makes a backup verified; the newest verified backup is never pruned),
        in the node_exporter metrics of the set (when C(metrics_dir) is configured), and, when it passed, upload
        C(verify.json) next to the offsite copy. Never in check mode.
    type: bool
    default: true
  allow_unsigned:
    description:
      - Accept a backup made before manifests were signed (format 1, C(openssl)-encrypted secret items) for this
        verification. Anyone who can write the bucket can forge such a backup, so this is never the default; set it
        only for a backup you know is yours. Its record never makes it verified for C(restore.yml)'s choice.
      - A manifest that is signed and does not verify is refused even so.
    type: bool
    default: false
notes:
  - Needs C(pg_restore) and C(psql) (postgresql-client), C(redis-server) and C(redis-check-rdb), C(age) (and
    C(openssl) for format-1 backups), and boto3 (python3-boto3) for the offsite check, on the host that runs it.
  - The PostgreSQL user of the item must be allowed to create databases (C(CREATEDB)) for the scratch restore.
seealso:
  - module: app_health
"""

EXAMPLES = r"""
- name: Prove the newest backup restorable (scratch restores, offsite copy, at most 26 hours old)
  backup_verify:
    config: /etc/tradeops/backup.json
    max_age_hours: 26
  register: backup_verify_report

- name: Checksums and archives only, of a named backup, in check mode as well
  backup_verify:
    config: /etc/tradeops/backup.json
    backup_id: 20250101T020000Z-db1
    scratch_restore: false
    offsite: false
  check_mode: true

- name: Inline settings (a backup fetched from offsite onto a fresh host)
  backup_verify:
    settings:
      backup_root: /var/backups/tradeops
      set: refapp
      postgresql:
        - name: appdb
          host: 127.0.0.1
          user: postgres
          password_file: /etc/tradeops/pg-backup.pw
      encryption:
        key_file: /etc/tradeops/backup.key
"""

RETURN = r"""
status:
  description: C(passed), C(failed) (a check failed, see RV(failed_items)) or C(error) (a check could not run).
  returned: always
  type: str
  sample: passed
backup_id:
  description: The backup that was verified.
  returned: when a backup was found
  type: str
  sample: 20250101T020000Z-db1
checks:
  description: One entry per check, with C(item) (the stored file, e.g. C(postgresql/appdb.dump), or the backup id),
    C(check) (authenticity, configuration, freshness, checksum, archive, restore, integrity, offsite),
    C(status) (ok, failed, error, skipped)
    and C(detail).
  returned: when a backup was found
  type: list
  elements: dict
  sample:
    - item: postgresql/appdb.dump
      check: restore
      status: ok
      detail: "restored into scratch database tradeops_verify_appdb_1a2b3c4d (dropped): 3 tables, 1200 rows equal"
failed_items:
  description: The items whose checks failed (the bad files).
  returned: when a backup was found
  type: list
  elements: str
  sample: [sqlite/app.sqlite3]
error_items:
  description: The items that could not be checked.
  returned: when a backup was found
  type: list
  elements: str
verified_at:
  description: UTC time of the verification (ISO 8601).
  returned: when a backup was found
  type: str
  sample: "2025-01-01T02:10:00Z"
elapsed:
  description: Seconds the verification took.
  returned: when a backup was found
  type: float
"""


from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.tradeops_backup import (
    PASSED,
    BackupError,
    module_config,
    publish_verification,
    verify_backup,
)


def argument_spec() -> dict:
    return dict(
        config=dict(type="path"),
        settings=dict(type="dict"),
        backup_id=dict(type="str", default="latest"),
        scratch_restore=dict(type="bool", default=True),
        offsite=dict(type="bool"),
        max_age_hours=dict(type="float"),
        record=dict(type="bool", default=True),
        allow_unsigned=dict(type="bool", default=False),
    )


def main() -> None:
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True,
                           required_one_of=[("config", "settings")])
    params = module.params
    try:
        cfg = module_config(params["config"], params["settings"])
        record = params["record"] and not module.check_mode
        report = verify_backup(cfg, params["backup_id"], scratch_restore=params["scratch_restore"],
                               offsite=params["offsite"], max_age_hours=params["max_age_hours"], record=record,
                               allow_unsigned=params["allow_unsigned"])
        if record:
            publish_verification(cfg, report, offsite=params["offsite"] is not False)
    except (OSError, ValueError) as exc:
        module.fail_json(msg=f"could not verify: cannot read the configuration {params['config']}: {exc}",
                         status="error")
    except BackupError as exc:
        module.fail_json(msg=f"could not verify: {exc}", status="error")
    message = report.pop("message")
    result = dict(changed=False, **report)
    if report["status"] != PASSED:
        module.fail_json(msg=message, **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
