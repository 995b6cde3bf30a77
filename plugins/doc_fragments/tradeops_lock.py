# Copyright: tradeops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The deploy-lock options shared by app_release and app_deploy (one spec: lock_argument_spec
in module_utils/tradeops_release.py; one documentation: this fragment)."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  actor:
    description: Who acts, recorded in the ledger. Defaults to C($SUDO_USER) or the remote user.
    type: str
  lock_owner:
    description: Holder recorded in the lock (defaults to O(actor)).
    type: str
  lock_host:
    description: Host of the holder (the controller running the deploy). Defaults to this host's name.
    type: str
  lock_pid:
    description:
      - Process id of the holder. A lock whose O(lock_host) is this machine and whose process is gone is stale.
      - The lock is released only by the same owner, host and pid (unless O(force_unlock)).
    type: int
  lock_peer_pids:
    description:
      - The live playbook processes on O(lock_host) (the controller asking). A lock held from that host by a
        process not in this list is reported as stale (its run was killed); O(force_unlock) breaks it.
    type: list
    elements: int
  lock_reason:
    description: Why the lock is taken (shown to anyone refused by it).
    type: str
  lock_stale_after:
    description:
      - Age in seconds after which a lock is reported as stale; C(0) means any lock is (a negative value is
        refused). A stale lock is still only broken with O(force_unlock).
    type: int
    default: 1800
  force_unlock:
    description:
      - Break an existing lock (a broken lock is recorded in the ledger); for M(app_release) C(unlock), release
        somebody else's lock.
      - A stale lock is never broken without it; the failure says so and returns C(stale=true).
    type: bool
    default: false
"""
