# Copyright: tradeops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin of os_packages: Debian packages installed by ``ansible.builtin.apt``, correct on
a host whose package lists are empty or stale whatever their age says.

Why not ``ansible.builtin.apt`` with ``update_cache`` and ``cache_valid_time`` alone: apt judges
the lists' age by the mtime of ``/var/lib/apt/lists`` (or of apt's update-success stamp). Minimal,
container and cloud images are built with that directory emptied, so for the first hour after
the image was made apt reads "updated less than an hour ago" over empty lists and fails with
"No package matching '...' is available"; lists kept from an old update fail the same way, or with
"404 Not Found" once the mirror has moved to a newer point release. This plugin runs the apt module
exactly as a role would; only when that run fails in one of those ways (and its lists were not
refreshed just now) does it refresh the lists and run it once more. The common path (lists fresh
or packages already there) stays one module call, as before.

Check mode never touches the host, lists included: where the packages could not be judged
because the lists are empty or stale, the result says what would be refreshed and installed
(changed, with a warning) instead of failing.
"""

from __future__ import annotations

from typing import Any

from ansible.plugins.action import ActionBase

APT = "ansible.builtin.apt"

# apt module failures that mean "these package lists do not describe the mirror": no lists
# at all, lists from before a package or a version existed, or files the mirror no longer has.
STALE_LIST_SIGNS = (
    "No package matching",
    "has no installation candidate",
    "Unable to locate package",
    "Unable to fetch some archives",
    "Failed to fetch",
    "404  Not Found",
    "404 Not Found",
)

ARGUMENT_SPEC: dict[str, Any] = {
    "name": {"type": "list", "elements": "str", "required": True},
    "state": {"type": "str", "default": "present", "choices": ["present", "absent"]},
    "cache_valid_time": {"type": "int", "default": 3600},
    "install_recommends": {"type": "bool"},
}


def apt_args(args: dict[str, Any], cache_valid_time: int) -> dict[str, Any]:
    """The apt module's arguments for one attempt (present: lists refreshed when older than
    ``cache_valid_time``; absent: no list is needed to remove a package)."""
    out: dict[str, Any] = {"name": list(args["name"]), "state": args["state"]}
    if args["state"] == "present":
        out.update(update_cache=True, cache_valid_time=cache_valid_time)
    if args.get("install_recommends") is not None:
        out["install_recommends"] = args["install_recommends"]
    return out


def lists_look_stale(result: dict[str, Any]) -> bool:
    """True when a failed apt result says its package lists do not describe the mirror."""
    if not result.get("failed"):
        return False
    text = " ".join(str(result.get(key) or "") for key in ("msg", "stderr", "stdout"))
    return any(sign in text for sign in STALE_LIST_SIGNS)


def check_mode_report(args: dict[str, Any], first: dict[str, Any]) -> dict[str, Any]:
    """Check mode over lists that cannot tell: report the refresh and the install, fail nothing."""
    names = ", ".join(args["name"])
    return {
        "changed": True,
        "cache_updated": True,
        "lists_refreshed": False,
        "msg": f"would refresh the package lists and install {names}",
        "warnings": [f"os_packages: the host's package lists are empty or stale ({first.get('msg', '').strip()}); "
                     "check mode does not refresh them, so whether each package is already installed was not "
                     "judged: a real run refreshes the lists first"],
    }


def explain_failure(args: dict[str, Any], result: dict[str, Any], refreshed: bool) -> dict[str, Any]:
    """The apt failure, with what was already tried and what to change."""
    msg = str(result.get("msg", "")).strip()
    if refreshed:
        msg = (f"{msg} (after refreshing the package lists): check the package names "
               f"({', '.join(args['name'])}) and the host's apt sources for this Debian release")
    return {**result, "msg": f"os_packages: {msg}", "lists_refreshed": refreshed}


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(ARGUMENT_SPEC)

    def run(self, tmp: Any = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        result = super().run(tmp, task_vars)
        del tmp  # unused
        validation, args = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)
        del validation
        if args["cache_valid_time"] < 0:
            return {**result, "failed": True,
                    "msg": "os_packages: cache_valid_time must be 0 or more seconds (0 refreshes the lists every run)"}
        result.update(self.install(args, task_vars or {}))
        return result

    def install(self, args: dict[str, Any], task_vars: dict[str, Any]) -> dict[str, Any]:
        first = self._execute_module(module_name=APT, module_args=apt_args(args, args["cache_valid_time"]),
                                     task_vars=task_vars)
        if not lists_look_stale(first) or args["state"] != "present":
            if first.get("failed"):
                return explain_failure(args, first, refreshed=False)
            return {**first, "lists_refreshed": False}
        if self._task.check_mode:
            return check_mode_report(args, first)
        if args["cache_valid_time"] == 0:  # the lists were refreshed by that very attempt
            return explain_failure(args, first, refreshed=True)
        # cache_valid_time 0: apt refreshes whatever the directory's mtime says.
        second = self._execute_module(module_name=APT, module_args=apt_args(args, 0), task_vars=task_vars)
        if second.get("failed"):
            return explain_failure(args, second, refreshed=True)
        return {**second, "lists_refreshed": True,
                "stale_lists": f"the package lists were empty or stale although their age said fresh "
                               f"({str(first.get('msg', '')).strip()}): refreshed, then installed"}
