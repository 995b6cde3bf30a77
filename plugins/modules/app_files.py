#!/usr/bin/python
# Copyright: tradeops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: app_files
short_description: Write rendered files atomically, reload systemd when a unit changed, enable units — in one call
version_added: "0.3.0"
description:
  - Writes each of O(files) whose content, owner, group or mode differ (a temporary file in the same directory,
    owner and mode set before the content, fsync, rename over the path), fixes only owner/mode where only those
    differ, runs C(systemctl daemon-reload) when a unit file changed, and C(systemctl enable)s the units of
    O(enable_units) that are not enabled.
  - One round trip for what a template task per file plus a systemd task per unit did. Contents are rendered on
    the controller (e.g. with the C(ansible.builtin.template) lookup) and never shown in results or diffs (they
    may hold secrets); results and diffs name paths and what differed.
author:
  - tradeops contributors
attributes:
  check_mode:
    support: full
    description:
      - Reports which files would change and which units would be enabled; writes nothing.
      - An owner, group or directory that does not exist yet is reported among the file's RV(reasons), not refused
        (an earlier task of the same run, which only reported, would have created it).
  diff_mode:
    support: full
    description: Paths and what differs (content, owner, mode), never the content.
  platform:
    platforms: posix
options:
  files:
    description: Files to have, each exactly as given.
    type: list
    elements: dict
    required: true
    suboptions:
      path:
        description: Absolute path; its directory must exist (in check mode, a missing one is reported).
        type: path
        required: true
      content:
        description: The whole content (UTF-8). Never logged.
        type: str
        required: true
      owner:
        description: Owner; one that does not exist on the host is refused (in check mode, reported).
        type: str
        default: root
      group:
        description: Group.
        type: str
        default: root
      mode:
        description:
          - Octal mode as a string, e.g. C('0600') (3 or 4 octal digits, an optional leading 0).
          - A number is refused with the fix. YAML reads an unquoted C(0640) as the decimal 416, which would be
            written as the mode C(0416); quote it.
        type: raw
        default: "0644"
  enable_units:
    description: systemd units to enable (after the daemon-reload), e.g. C(refapp-web.service).
    type: list
    elements: str
    default: []
  daemon_reload:
    description: C(auto) reloads systemd when a file under a systemd unit directory changed; C(always); C(never).
    type: str
    default: auto
    choices: [auto, always, never]
notes:
  - Runs as root on the target. Logic in C(module_utils/tradeops_files.py) (standard library only).
"""

EXAMPLES = r"""
- name: Environment file and units of the app, units enabled
  app_files:
    files:
      - path: /opt/refapp/shared/config/.env
        content: "{{ lookup('ansible.builtin.template', 'env.j2') }}"
        owner: refapp
        group: refapp
        mode: "0600"
      - path: /etc/systemd/system/refapp-web.service
        content: "{{ lookup('ansible.builtin.template', 'app.service.j2') }}"
    enable_units: [refapp-web.service]
  notify: restart app services
"""

RETURN = r"""
changed_files:
  description: Paths written or whose owner/mode were fixed (or would be, in check mode).
  returned: always
  type: list
  elements: str
reasons:
  description:
    - Per changed path, what differed (C(missing), C(content), C(owner), C(mode), C(not a regular file)).
    - In check mode also what does not exist yet, e.g. C(owner 'refapp' does not exist yet),
      C(directory /opt/refapp/shared/config does not exist yet).
  returned: always
  type: dict
daemon_reloaded:
  description: True when C(systemctl daemon-reload) ran.
  returned: always
  type: bool
enabled:
  description: Units enabled by this call (or that would be, in check mode).
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.tradeops_files import FilesError, sync


def argument_spec() -> dict:
    return dict(
        files=dict(type="list", elements="dict", required=True, options=dict(
            path=dict(type="path", required=True),
            content=dict(type="str", required=True, no_log=True),
            owner=dict(type="str", default="root"),
            group=dict(type="str", default="root"),
            mode=dict(type="raw", default="0644"),
        )),
        enable_units=dict(type="list", elements="str", default=[]),
        daemon_reload=dict(type="str", default="auto", choices=["auto", "always", "never"]),
    )


def main() -> None:
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    params = module.params
    try:
        result = sync(params["files"], params["enable_units"], params["daemon_reload"], check_mode=module.check_mode)
    except (FilesError, OSError) as exc:
        module.fail_json(msg=f"app_files: {exc}")
    if not module._diff:
        result.pop("diff", None)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
