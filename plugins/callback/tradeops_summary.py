# Copyright: tradeops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# ruff: noqa: E402 -- Ansible plugins keep the documented layout: DOCUMENTATION first, then imports.

from __future__ import annotations

DOCUMENTATION = r"""
---
name: tradeops_summary
type: aggregate
short_description: Deploy / rollback summary with per-phase timing and the ledger record
version_added: "0.1.0"
description:
  - Times every task per host and attributes it to a phase of a release
    (C(lock), C(wheelhouse), C(unpack), C(venv), C(migrate), C(switch), C(restart), C(health),
    C(prune), C(other)); C(overhead) is the rest of the host's wall time, spent between tasks
    (Ansible's own scheduling, forks, waiting for the other hosts of the batch), so the phases of a
    host add up to its total.
  - "A task's phase comes from its module first: M(app_release) by its action (C(lock)/C(unlock) -> lock,
    C(create) -> unpack, C(activate)/C(rollback) -> switch, C(prune) -> prune, C(mark)/C(list) -> other),
    M(app_health) -> health, a systemd/service task that starts, stops, restarts or reloads -> restart.
    Otherwise from its name (first match wins: lock, wheelhouse, migrat, venv, unpack, switch/activate/roll back,
    restart/start service/stop service, health/verify/readiness/liveness, prune), and last from the role
    file it comes from (C(restart.yml), C(start_one.yml) -> restart; C(health.yml), C(verify.yml) -> health)."
  - The virtualenv part of an M(app_release) C(create) (its C(timings) C(deps_s), C(venv_s), C(install_s),
    C(compile_s)) is counted as C(venv); the rest of that task is C(unpack).
  - An M(app_deploy) task (the whole deploy, rollback, restart or verify on the host in one call) is split by the
    C(timings) it returns (the same phases); the rest of that task's wall time (shipping and starting the module)
    is C(other). Its C(outcome), releases and C(ledger_entries) make the record.
  - At the end of a playbook that ran (or contains) M(app_release) or M(app_deploy) tasks it prints, for every
    host that ran one or failed, the outcome (deployed,
    re-deployed unchanged, rolled back after a failed health gate, rollback, failed), the release, the
    previous release and a one-line phase table, and appends the same as one JSON line per host to O(log_path).
  - Results of C(no_log) tasks are never read beyond their timing, and module arguments are never printed or stored.
requirements:
  - enable it with C(callbacks_enabled = tradeops_summary) in C(ansible.cfg) (C([defaults]))
    or C(ANSIBLE_CALLBACKS_ENABLED=tradeops_summary)
author:
  - tradeops contributors
options:
  log_path:
    description:
      - JSON lines file the records are appended to (created mode 0600 with its parent directories).
      - "One record per host per run: C(time), C(playbook), C(host), C(outcome), C(version), C(release),
        C(previous), C(app), C(new_release), C(new_version), C(failed_task), C(check_mode), C(phases) (seconds per
        phase), C(total_s) and C(ledger) (the C(ledger_entry) records M(app_release) returned and the
        C(ledger_entries) of M(app_deploy), in order)."
      - "A host that ran M(app_deploy) for two applications (a service and a batch-only one) is recorded for the
        one its outcome is about (C(app), its last deploy or rollback), with that application's own C(release) and
        C(previous); the printed line names it and the others."
      - A relative path is relative to the current directory (from C(ansible.cfg), to the directory of that file).
    type: path
    default: .cache/deploy-summary.jsonl
    env:
      - name: TRADEOPS_SUMMARY_LOG
    ini:
      - section: callback_tradeops_summary
        key: log_path
notes:
  - "Outcomes in the record: C(deployed), C(unchanged), C(rolled-back-after-failed-gate), C(rollback),
    C(restarted), C(failed), C(ok) (the play ran M(app_release) or M(app_deploy) on the host but neither created
    nor switched a release)."
"""

EXAMPLES = r"""
# ansible.cfg
# [defaults]
# callbacks_enabled = tradeops_summary
# [callback_tradeops_summary]
# log_path = .cache/deploy-summary.jsonl

# or for one run:
# ANSIBLE_CALLBACKS_ENABLED=tradeops_summary TRADEOPS_SUMMARY_LOG=/tmp/deploys.jsonl \
#   ansible-playbook -i inventory/lab playbooks/deploy.yml -e app_version=1.2.3
"""

import json
import os
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ansible.plugins.callback import CallbackBase

PHASES = ("lock", "wheelhouse", "unpack", "venv", "migrate", "switch", "restart", "health", "prune", "other")
OVERHEAD = "overhead"

# 1. By module. app_release by its action; None means "decide by the task's name".
RELEASE_ACTION_PHASES = {
    "lock": "lock",
    "unlock": "lock",
    "create": "unpack",
    "activate": "switch",
    "rollback": "switch",
    "prune": "prune",
    "mark": "other",
    "list": "other",
}
MODULE_PHASES = {"app_health": "health"}
RELEASE_MODULES = frozenset({"app_release", "app_deploy"})
SERVICE_MODULES = frozenset({"systemd_service", "systemd", "service", "sysvinit"})
SERVICE_STATES = frozenset({"started", "stopped", "restarted", "reloaded"})

# 2. By task name: first match wins (case-insensitive search).
NAME_PHASES: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (phase, re.compile(pattern, re.IGNORECASE))
    for phase, pattern in (
        ("lock", r"\b(un)?lock\b"),
        ("wheelhouse", r"wheelhouse|\bwheels?\b|\bartifacts?\b"),
        ("migrate", r"migrat"),
        ("venv", r"\bvenv\b|virtualenv|\bpip install\b"),
        ("unpack", r"\bunpack|\bunarchive|\bextract"),
        ("switch", r"\bswitch|\bactivate|\broll ?back\b|\brolls back\b"),
        ("restart", r"\brestart\b|\bstart services?\b|\bstop services?\b|reset-failed|clear failed state|\breload"),
        ("health", r"health|\bverify|readiness|liveness|\bprobe"),
        ("prune", r"\bprune"),
    )
)

# 3. By the tasks file the task comes from.
FILE_PHASES = {"restart.yml": "restart", "start_one.yml": "restart", "health.yml": "health", "verify.yml": "health"}

# The part of app_release create's ``timings`` that builds the virtualenv (the rest is unpack).
VENV_TIMINGS = ("deps_s", "venv_s", "install_s", "compile_s")


def short_module(action: str | None) -> str:
    """``ansible.builtin.systemd_service`` -> ``systemd_service``; ``app_release`` stays."""
    return (action or "").rsplit(".", 1)[-1]


def phase_of(module: str | None, action: str | None = None, name: str = "", path: str = "",
             state: str | None = None) -> str:
    """The phase of a task: by module (and app_release's action / a service's state), then by
    task name, then by the tasks file (``path`` as ``Task.get_path()`` gives it), else other."""
    mod = short_module(module)
    if mod == "app_release" and action in RELEASE_ACTION_PHASES:
        return RELEASE_ACTION_PHASES[action]
    if mod in MODULE_PHASES:
        return MODULE_PHASES[mod]
    if mod in SERVICE_MODULES and state in SERVICE_STATES:
        return "restart"
    for phase, pattern in NAME_PHASES:
        if name and pattern.search(name):
            return phase
    base = os.path.basename((path or "").rsplit(":", 1)[0])
    return FILE_PHASES.get(base, "other")


def split_timings(duration: float, timings: Any) -> dict[str, float]:
    """Wall time of an app_deploy task -> its own per-phase ``timings`` (known phases only,
    scaled down if they exceed the task's duration); the rest of the task is ``other``."""
    parts: dict[str, float] = {}
    if isinstance(timings, dict):
        for key, value in timings.items():
            if key in PHASES and isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
                parts[key] = float(value)
    duration = max(duration, 0.0)
    spent = sum(parts.values())
    if spent > duration and spent > 0:
        parts = {k: v * duration / spent for k, v in parts.items()}
        spent = duration
    parts["other"] = parts.get("other", 0.0) + duration - spent
    return parts


def split_create(duration: float, timings: Any) -> dict[str, float]:
    """Wall time of an app_release create -> {unpack, venv}: venv is the module's own
    virtualenv timings (capped at the task's duration), unpack the rest."""
    venv = 0.0
    if isinstance(timings, dict):
        for key in VENV_TIMINGS:
            value = timings.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
                venv += float(value)
    venv = min(venv, max(duration, 0.0))
    return {"unpack": max(duration - venv, 0.0), "venv": venv}


@dataclass
class Switch:
    seq: int
    action: str
    release: str | None
    version: str | None
    previous: str | None
    changed: bool


@dataclass
class Failure:
    seq: int
    task: str
    module: str


@dataclass
class HostRun:
    """What one host did in this run, as seen from task results."""

    first_start: float | None = None
    last_end: float | None = None
    task_time: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)
    ran_release: bool = False
    baseline: str | None = None  # release current pointed to before the run
    baseline_known: bool = False
    current: str | None = None
    created: dict[str, Any] | None = None
    switches: list[Switch] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    unreachable: bool = False
    ledger: list[dict[str, Any]] = field(default_factory=list)
    deploys: list[dict[str, Any]] = field(default_factory=list)  # app_deploy results, in order
    # app_deploy's app -> (current before its first call, current after its last): a host may run two applications
    # (a service and a batch-only one) in one playbook; their releases are never mixed.
    apps: dict[str, list[str | None]] = field(default_factory=dict)

    def add(self, phase: str, seconds: float) -> None:
        self.phases[phase] = self.phases.get(phase, 0.0) + seconds


def _is_no_log(task: Any, result: dict[str, Any]) -> bool:
    """True when the task or any of its results is no_log (any truthy or unrendered value counts)."""
    if result.get("_ansible_no_log") or "censored" in result:
        return True
    if getattr(task, "no_log", False):
        return True
    items = result.get("results")
    return isinstance(items, list) and any(isinstance(i, dict) and (i.get("_ansible_no_log") or "censored" in i)
                                           for i in items)


def _plain_arg(task: Any, key: str) -> str | None:
    """A literal argument used for the phase mapping only (never stored): None when templated."""
    value = (getattr(task, "args", None) or {}).get(key)
    if isinstance(value, str) and "{{" not in value and "{%" not in value:
        return value
    return None


def _iter_tasks(blocks: Any) -> Any:
    for item in blocks or ():
        children = [getattr(item, part, None) for part in ("block", "rescue", "always")]
        if any(c is not None for c in children) and not hasattr(item, "action"):
            for child in children:
                yield from _iter_tasks(child)
        else:
            yield item


def play_uses_release(play: Any) -> bool:
    """Best effort: does the play (statically, with imported roles) contain app_release/app_deploy tasks?"""
    try:
        blocks = [*play.pre_tasks, *play.tasks, *play.post_tasks]
        for role in play.get_roles():
            blocks.extend(role.get_task_blocks())
        return any(short_module(getattr(t, "action", "")) in RELEASE_MODULES for t in _iter_tasks(blocks))
    except Exception:  # a summary must never break a play
        return False


def fmt_s(seconds: float) -> str:
    return f"{seconds:.2f}"


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "tradeops_summary"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, display: Any = None, options: Any = None) -> None:
        super().__init__(display=display, options=options)
        self.hosts: dict[str, HostRun] = {}
        self.starts: dict[tuple[str, str], float] = {}
        self.playbook = ""
        self.run_start = time.monotonic()
        self.run_started_at = datetime.now(UTC)
        self.uses_release = False
        self.seq = 0

    # ------------------------------------------------------------------ events

    def v2_playbook_on_start(self, playbook: Any) -> None:
        self.playbook = os.path.basename(getattr(playbook, "_file_name", "") or "")
        self.run_start = time.monotonic()
        self.run_started_at = datetime.now(UTC)

    def v2_playbook_on_play_start(self, play: Any) -> None:
        if play_uses_release(play):
            self.uses_release = True

    def v2_runner_on_start(self, host: Any, task: Any) -> None:
        self.starts[(host.get_name(), task._uuid)] = time.monotonic()

    def v2_runner_on_ok(self, result: Any) -> None:
        self._finish(result, "ok")

    def v2_runner_on_failed(self, result: Any, ignore_errors: bool = False) -> None:
        self._finish(result, "ignored" if ignore_errors else "failed")

    def v2_runner_on_skipped(self, result: Any) -> None:
        self._finish(result, "skipped")

    def v2_runner_on_unreachable(self, result: Any) -> None:
        self._finish(result, "unreachable")

    # ------------------------------------------------------------------ per task

    def _finish(self, result: Any, status: str) -> None:
        try:
            self._record_task(result, status)
        except Exception as exc:  # a summary must never break a play
            self._display.warning(f"tradeops_summary: could not record a task: {exc}")

    def _record_task(self, result: Any, status: str) -> None:
        now = time.monotonic()
        task, host_name = result.task, result.host.get_name()
        started = self.starts.pop((host_name, task._uuid), None)
        if started is None:  # no start event seen: count nothing, the gap goes to overhead
            started = now
        duration = max(now - started, 0.0)
        run = self.hosts.setdefault(host_name, HostRun())
        run.first_start = started if run.first_start is None else min(run.first_start, started)
        run.last_end = now if run.last_end is None else max(run.last_end, now)
        run.task_time += duration
        self.seq += 1

        module = short_module(task.action)
        data = result.result
        no_log = _is_no_log(task, data)
        action = None
        if module in RELEASE_MODULES:
            self.uses_release = True
            run.ran_release = True
            action = (data.get("action") if not no_log else None) or _plain_arg(task, "action")
        phase = phase_of(module, action, task.get_name(), task.get_path() or "", _plain_arg(task, "state"))

        reported = not no_log and status in ("ok", "failed", "ignored")
        if module == "app_release" and action == "create" and not no_log and status == "ok":
            for part, seconds in split_create(duration, data.get("timings")).items():
                run.add(part, seconds)
        elif module == "app_deploy" and reported and isinstance(data.get("timings"), dict):
            for part, seconds in split_timings(duration, data.get("timings")).items():
                run.add(part, seconds)
        else:
            run.add(phase, duration)

        if status == "failed":
            run.failures.append(Failure(self.seq, task.get_name(), module))
        elif status == "unreachable":
            run.unreachable = True
            run.failures.append(Failure(self.seq, task.get_name(), module))
        if module == "app_release" and reported:
            self._record_release(run, action, data, status)
        elif module == "app_deploy" and reported:
            self._record_deploy(run, data, status)

    def _record_deploy(self, run: HostRun, data: dict[str, Any], status: str) -> None:
        entries = data.get("ledger_entries")
        if isinstance(entries, list):
            run.ledger.extend(e for e in entries if isinstance(e, dict))
        if status != "ok" and not data.get("outcome"):
            return  # failed before it could say anything (bad arguments): counted as a failed task
        if not run.baseline_known and "previous" in data:
            run.baseline, run.baseline_known = data.get("previous"), True
        if "current" in data:
            run.current = data.get("current")
        app = data.get("app")
        if app is not None and "previous" in data:
            run.apps.setdefault(app, [data.get("previous"), None])
        if app in run.apps and "current" in data:
            run.apps[app][1] = data.get("current")
        run.deploys.append({k: data.get(k) for k in ("action", "outcome", "release", "version", "previous",
                                                      "current", "rolled_back_to", "changed", "msg", "app")}
                           | {"seq": self.seq, "failed": status != "ok"})

    def _record_release(self, run: HostRun, action: str | None, data: dict[str, Any], status: str) -> None:
        items = data.get("results") if isinstance(data.get("results"), list) else [data]
        for item in items:
            if not isinstance(item, dict):
                continue
            entry = item.get("ledger_entry")
            if isinstance(entry, dict):
                run.ledger.append(entry)
            if status != "ok" or item.get("failed"):
                continue
            act = item.get("action") or action
            if not run.baseline_known:
                run.baseline = item.get("previous") if act in ("activate", "rollback") else item.get("current")
                run.baseline_known = True
            if "current" in item:
                run.current = item.get("current")
            if act == "create" and item.get("release"):
                run.created = {"release": item.get("release"), "version": item.get("version"),
                               "existed": bool(item.get("existed"))}
            elif act in ("activate", "rollback") and item.get("release"):
                run.switches.append(Switch(self.seq, act, item.get("release"), item.get("version"),
                                           item.get("previous"), bool(item.get("changed"))))

    # ------------------------------------------------------------------ summary

    @staticmethod
    def outcome(run: HostRun, counted_failure: bool) -> tuple[str, str]:
        """(outcome for machines, sentence for people)."""
        if run.deploys:
            return CallbackModule.deploy_outcome(run, counted_failure)
        created = run.created
        new = f"{created['version']} ({created['release']})" if created else ""
        gate_back = next((s for s in run.switches if s.action == "rollback" and s.changed), None) if created else None
        failed_at = f" at '{run.failures[0].task}'" if run.failures else ""
        if gate_back is not None:
            after = [f for f in run.failures if f.seq > gate_back.seq and f.module != "fail"]
            if after:
                return ("failed", f"failed: gate of {new} failed{failed_at}, switched back to {gate_back.release}, "
                                  f"then failed at '{after[0].task}'")
            return ("rolled-back-after-failed-gate",
                    f"rolled back to {gate_back.version} ({gate_back.release}) after failed gate of {new}{failed_at}")
        if counted_failure or run.unreachable:
            switched = any(s.changed for s in run.switches)
            note = "" if switched else "; nothing was switched"
            return "failed", f"failed{failed_at}{note}"
        changed = [s for s in run.switches if s.changed]
        if created:
            if changed:
                return "deployed", f"deployed {new}"
            return "unchanged", f"re-deployed {new} unchanged"
        rollbacks = [s for s in run.switches if s.action == "rollback"]
        if rollbacks:
            last = rollbacks[-1]
            if last.changed:
                return "rollback", f"rollback to {last.version} ({last.release})"
            return "rollback", f"rollback: {last.version} ({last.release}) already current"
        if changed:
            last = changed[-1]
            return "deployed", f"switched to {last.version} ({last.release})"
        return "ok", "no release created or switched"

    @staticmethod
    def deploy_outcome(run: HostRun, counted_failure: bool) -> tuple[str, str]:
        """The outcome of a host whose release work was app_deploy's: its last deploy or rollback, or
        a soak after it that failed (a restart, verify or passed soak after it does not hide it), else its
        last call."""
        main = CallbackModule.main_deploy(run)
        action, outcome = main["action"], main["outcome"] or ("failed" if main["failed"] else "ok")
        new = f"{main['version']} ({main['release']})"
        later = [f for f in run.failures if f.seq > main["seq"] and f.module != "fail"]
        if action == "soak" and outcome == "rolled-back":
            return ("rolled-back-after-failed-gate",
                    f"rolled back to {main['rolled_back_to']} after {new} failed its soak under traffic")
        if action == "deploy" and outcome == "rolled-back":
            back = main["rolled_back_to"]
            if later:
                return "failed", (f"failed: gate of {new} failed, rolled back to {back}, "
                                  f"then failed at '{later[0].task}'")
            return "rolled-back-after-failed-gate", f"rolled back to {back} after failed gate of {new}"
        if main["failed"]:
            return "failed", f"{action} failed: {main['msg'] or '?'}"[:600]
        if later or run.unreachable:
            task = (later or run.failures)[0].task if (later or run.failures) else "?"
            return "failed", f"{action} {outcome}, then failed at '{task}'"
        if action == "deploy":
            if outcome == "deployed":
                return "deployed", f"deployed {new}"
            return "unchanged", f"re-deployed {new} unchanged"
        if action == "rollback":
            if outcome == "unchanged":
                return "rollback", f"rollback: {new} already current"
            return "rollback", f"rollback to {new}"
        if action == "restart" and outcome == "restarted":
            return "restarted", f"restarted {new}"
        return "ok", f"{action}: {outcome} {new}" if main["release"] else f"{action}: {outcome}"

    @staticmethod
    def main_deploy(run: HostRun) -> dict[str, Any]:
        """The app_deploy call a host's outcome is about: its last deploy or rollback, or a failed soak after it
        (a passed soak: its deploy), else its last call."""
        return next((d for d in reversed(run.deploys) if d["action"] in ("deploy", "rollback")
                     or (d["action"] == "soak" and d["failed"])), run.deploys[-1])

    @staticmethod
    def app_of(run: HostRun) -> str | None:
        """The application the record is about (app_deploy's), when the host ran app_deploy."""
        return CallbackModule.main_deploy(run).get("app") if run.deploys else None

    def host_record(self, host: str, run: HostRun, counted_failure: bool) -> dict[str, Any]:
        outcome, _ = self.outcome(run, counted_failure)
        total = max((run.last_end or 0.0) - (run.first_start or 0.0), 0.0)
        phases = {p: round(run.phases[p], 3) for p in PHASES if p in run.phases}
        phases[OVERHEAD] = round(max(total - run.task_time, 0.0), 3)
        app = self.app_of(run)
        previous, release = run.apps.get(app, [run.baseline, run.current]) if app else (run.baseline, run.current)
        version = None
        for deploy in run.deploys:
            if deploy["release"] == release:
                version = deploy["version"]
            elif deploy["rolled_back_to"] == release and deploy["action"] == "deploy":
                version = None  # the rolled-back-to version is known only from the ledger
                for entry in run.ledger:
                    if entry.get("release") == release and entry.get("version"):
                        version = entry.get("version")
        for switch in run.switches:
            if switch.release == release:
                version = switch.version
        if version is None and run.created and run.created["release"] == release:
            version = run.created["version"]
        return {
            "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "started": self.run_started_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "playbook": self.playbook,
            "host": host,
            "outcome": outcome,
            "version": version,
            "release": release,
            "previous": previous,
            "app": app,
            "new_release": run.created["release"] if run.created else self._deployed(run, "release"),
            "new_version": run.created["version"] if run.created else self._deployed(run, "version"),
            "failed_task": run.failures[0].task if run.failures else None,
            "check_mode": self._check_mode(),
            "phases": phases,
            "total_s": round(total, 3),
            "ledger": run.ledger,
        }

    @staticmethod
    def _deployed(run: HostRun, key: str) -> Any:
        """Release (or version) an app_deploy deploy created or reused in this run."""
        deploys = [d for d in run.deploys if d["action"] == "deploy"]
        return deploys[-1][key] if deploys else None

    @staticmethod
    def _check_mode() -> bool:
        try:
            from ansible import context

            return bool(context.CLIARGS.get("check"))
        except Exception:  # no CLI context (unit tests)
            return False

    def v2_playbook_on_stats(self, stats: Any) -> None:
        if not self.uses_release:
            return
        records, lines = [], []
        would = "check mode, would be: " if self._check_mode() else ""
        for host in sorted(self.hosts):
            run = self.hosts[host]
            summary = stats.summarize(host) if hasattr(stats, "summarize") else {}
            counted = bool(summary.get("failures") or summary.get("unreachable"))
            if not (run.ran_release or counted or run.unreachable):
                continue  # a host of another play (a load balancer, ...) that touched no release
            record = self.host_record(host, run, counted)
            records.append(record)
            _, sentence = self.outcome(run, counted)
            others = sorted(set(run.apps) - {record["app"]})  # a host with more than one application: say which
            about = f"{record['app']}: " if others else ""
            lines.append(f"{host}: {would}{about}{sentence}" + (f" (also ran: {', '.join(others)})" if others else ""))
            lines.append(f"  release {record['release'] or '-'}  previous {record['previous'] or '-'}")
            table = "  ".join(f"{p} {fmt_s(s)}" for p, s in record["phases"].items())
            lines.append(f"  {table}  | total {fmt_s(record['total_s'])} s")
        wall = time.monotonic() - self.run_start
        check = ", check mode: nothing was changed" if self._check_mode() else ""
        lines.append(f"wall time {fmt_s(wall)} s ({self.playbook or 'playbook'}, {len(records)} host(s){check})")
        self._display.banner("TRADEOPS SUMMARY")
        for line in lines:
            self._display.display(line)
        self._write(records)

    def _write(self, records: list[dict[str, Any]]) -> None:
        if not records:
            return
        path = self.get_option("log_path")
        try:
            parent = os.path.dirname(os.path.abspath(path))
            os.makedirs(parent, mode=0o700, exist_ok=True)
            data = "".join(json.dumps(r, default=str) + "\n" for r in records).encode()
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "ab") as handle:
                handle.write(data)
        except OSError as exc:
            self._display.warning(f"tradeops_summary: could not write {path}: {exc}; set log_path "
                                  "([callback_tradeops_summary] in ansible.cfg or TRADEOPS_SUMMARY_LOG)")
            return
        self._display.display(f"summary appended to {path}")
