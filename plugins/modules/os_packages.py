#!/usr/bin/python
# Copyright: tradeops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: os_packages
short_description: Install Debian packages correctly on a host whose package lists are empty or stale
version_added: "0.4.0"
description:
  - Runs M(ansible.builtin.apt) with O(cache_valid_time) as a role would. When that run fails because the host's
    package lists do not describe the mirror (C(No package matching), C(has no installation candidate),
    C(Failed to fetch), C(404 Not Found)), it refreshes the lists whatever their age says and runs it once more.
  - Minimal, container and cloud images are built with C(/var/lib/apt/lists) emptied; apt reads that
    directory's fresh mtime as "updated less than an hour ago" and, with O(cache_valid_time) alone, would
    skip the update and fail for the first hour after the image was built. This is the one way tradeops'
    roles and molecule scenarios install packages, so none of them depends on another role having run first.
  - The common path (lists fresh, or packages already installed) is one apt call.
author:
  - tradeops contributors
attributes:
  action:
    support: full
    details: The work is done by the action plugin, which runs M(ansible.builtin.apt) on the host.
  check_mode:
    support: full
    description: >-
      Reports what apt would install. Lists are never refreshed in check mode: where they are empty or
      stale, the result is C(changed) with a warning that says so, instead of a failure.
  platform:
    platforms: debian
options:
  name:
    description: Package names (a version may be pinned as C(name=version), as with M(ansible.builtin.apt)).
    type: list
    elements: str
    required: true
  state:
    description: C(present) installs what is missing; C(absent) removes (needs no package list).
    type: str
    default: present
    choices: [present, absent]
  cache_valid_time:
    description: Refresh the lists first when apt says they are older than this many seconds (0 every run).
      Empty or stale lists are refreshed whatever this says.
    type: int
    default: 3600
  install_recommends:
    description: Install recommended packages too; unset keeps apt's configuration.
    type: bool
notes:
  - Debian and Ubuntu hosts only (apt). Logic in C(plugins/action/os_packages.py).
"""

EXAMPLES = r"""
- name: Install nginx and openssl
  os_packages:
    name: [nginx, openssl]

- name: Install the exporters, no recommends
  os_packages:
    name: [prometheus-node-exporter]
    install_recommends: false
"""

RETURN = r"""
lists_refreshed:
  description: True when the first apt run found the lists empty or stale and they were refreshed for a second one.
  returned: always
  type: bool
stale_lists:
  description: What the first apt run said about the lists, when they were refreshed.
  returned: when lists_refreshed
  type: str
cache_updated:
  description: As M(ansible.builtin.apt) returns it.
  returned: success
  type: bool
"""

from ansible.module_utils.basic import AnsibleModule


def main() -> None:
    module = AnsibleModule(argument_spec={}, bypass_checks=True, supports_check_mode=True)
    module.fail_json(msg="os_packages runs through its action plugin (plugins/action/os_packages.py): call it as "
                         "a task with the project's ansible.cfg (action_plugins = plugins/action)")


if __name__ == "__main__":
    main()
