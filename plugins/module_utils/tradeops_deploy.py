# Copyright: tradeops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Host-side orchestration of a health-gated release switch, in one call (the ``app_deploy`` module).

The steps a deploy took as some twenty tasks of the role (lock, create, migrate, activate, stop in
reverse order, reset-failed, start each unit behind its health gate, mark, prune, unlock; on a failed
gate: mark bad, roll back, restart and gate the previous release) run here, on the host, over the
existing logic: ``tradeops_release`` (the store, its ledger and lock) and ``tradeops_health`` (the
probes, retries inside a deadline, aggregation). Nothing of theirs is re-implemented here.

Pure Python standard library; importable without Ansible (the module_utils files side by side on
``sys.path``). Every ``systemctl`` and ``systemd-run`` call goes through ``Systemd.call``, so tests
run the whole flow with a fake service manager (the controller has no systemd).

Ledger: the lock is taken and released without a ledger line of its own (breaking somebody's lock
is still recorded). The store writes its usual lines (create, activate, mark, rollback, prune), and a
run that changed anything ends with one ``summary`` line (the run, its outcome, the lock holder and
the timings). A re-deploy that changes nothing writes nothing to the ledger.

Metrics (option ``metrics_dir``): a deploy or rollback that writes a summary line also publishes its
outcome for node_exporter's textfile collector through the one shared writer (``tradeops_metrics``),
in ``<metrics_dir>/tradeops_deploy.prom``: ``tradeops_deploy_last_outcome{app, outcome}`` (1 for the
run's outcome among ``success``, ``failed``, ``rolled_back``, 0 for the other two),
``tradeops_deploy_last_timestamp_seconds{app}`` and ``tradeops_deploy_last_duration_seconds{app}``.
The Prometheus rule DeployFailed reads the first. A metric that cannot be written is a warning, never
a failed deploy.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

try:
    from ansible.module_utils import tradeops_checks as checks
    from ansible.module_utils.tradeops_health import (
        HEALTHY,
        UNHEALTHY,
        CheckError,
        CheckResult,
        HealthReport,
        HealthSpec,
        evaluate,
        unit_name,
    )
    from ansible.module_utils.tradeops_metrics import update_textfile
    from ansible.module_utils.tradeops_probes import release_command
    from ansible.module_utils.tradeops_release import (
        DEFAULT_KEEP,
        VENV_DIR,
        ReleaseError,
        ReleaseStore,
        check_console_script,
        check_relative,
        lock_options,
        option,
        previous_good,
        run_action,
    )
except ImportError:  # on a host without Ansible: the module_utils files side by side on sys.path
    import tradeops_checks as checks  # type: ignore[no-redef]
    from tradeops_health import (  # type: ignore[no-redef]
        HEALTHY,
        UNHEALTHY,
        CheckError,
        CheckResult,
        HealthReport,
        HealthSpec,
        evaluate,
        unit_name,
    )
    from tradeops_metrics import update_textfile  # type: ignore[no-redef]
    from tradeops_probes import release_command  # type: ignore[no-redef]
    from tradeops_release import (  # type: ignore[no-redef]
        DEFAULT_KEEP,
        VENV_DIR,
        ReleaseError,
        ReleaseStore,
        check_console_script,
        check_relative,
        lock_options,
        option,
        previous_good,
        run_action,
    )

ACTIONS = ("deploy", "rollback", "restart", "verify", "soak")
# Phases of ``timings``: the phase names of the tradeops_summary callback (its PHASES), so that a
# run's timings line up with the per-task phases of the task-based flow. "unpack" and "venv" are
# the release create, split as the callback splits an app_release create (VENV_TIMINGS below);
# "other" is the rest of the run (marks, the no-op check), so the phases add up to ``elapsed``.
PHASES = ("lock", "unpack", "venv", "migrate", "switch", "restart", "health", "prune", "other")
VENV_TIMINGS = ("deps_s", "venv_s", "install_s", "compile_s")
SYSTEMCTL_TIMEOUT = 120.0  # a stop waits for the unit's graceful shutdown (TimeoutStopSec)
DEFAULT_MIGRATE_TIMEOUT = 600
QUICK_DEADLINE = 10.0  # one pass of the checks: is the serving release healthy as it is?
TAIL_LINES = 15
# soak: one pass of the checks every SOAK_INTERVAL seconds; a unit that restarts, stops or fails fails the soak at
# once, HTTP probes only after SOAK_PROBE_MISSES failed passes in a row (one slow answer under load is not a fault).
SOAK_INTERVAL = 1.0
SOAK_PROBE_MISSES = 3
# soak, memory: each unit's MemoryCurrent over the second half of the window (the first half is the warm-up of a
# host just put back) is fitted to a line; a release whose memory would reach the unit's MemoryMax within
# ``soak_memory_horizon`` seconds at that rate fails the soak (a leak slower than the window, caught before the OOM
# kill). Fewer samples than SOAK_TREND_SAMPLES, or a rise under SOAK_TREND_MIN_RISE in all, is no trend.
SOAK_TREND_SAMPLES = 5
SOAK_TREND_MIN_RISE = 4 * 1024 * 1024
DEFAULT_SOAK_MEMORY_HORIZON = 300.0
MIB = 1024 * 1024
NOT_STARTED = "not-started"
# Key of the application's own gate (option ``gate``) in ``health``, beside the units (keyed by unit name).
GATE = "gate"
METRICS_STEM = "tradeops_deploy"
METRICS = {
    "last_outcome": "Outcome of the last deploy or rollback that changed the application: 1 for it "
                    "(success, failed or rolled_back), 0 for the others.",
    "last_timestamp_seconds": "When the last deploy or rollback that changed the application ended (Unix time).",
    "last_duration_seconds": "How long the last deploy or rollback that changed the application took.",
}
METRIC_OUTCOMES = ("success", "failed", "rolled_back")


def metric_outcome(action: str, outcome: str | None, failed: bool) -> str:
    """The metric's outcome of a deploy or rollback run: ``rolled_back`` when a deploy's gate failed
    and the previous release serves again (the run failed, yet a healthy release serves), else
    ``failed`` when the run failed (a rollback that failed included), ``rolled_back`` for a
    rollback that succeeded (a deliberate one too: an older release serves), else ``success``."""
    if outcome == "rolled-back" and (failed or action == "rollback"):
        return "rolled_back"
    if failed or outcome in ("failed", "rollback-failed"):
        return "failed"
    return "rolled_back" if action == "rollback" else "success"


MetricSeries = list[tuple[dict[str, str], dict[str, float]]]


def deploy_metric_series(app: str, outcome: str, ended: float, duration: float) -> MetricSeries:
    """The series ``update_textfile`` merges for one run: every outcome (one at 1), then the times."""
    if outcome not in METRIC_OUTCOMES:
        raise ValueError(f"deploy metric outcome {outcome!r}: one of {', '.join(METRIC_OUTCOMES)}")
    series: MetricSeries = [
        ({"app": app, "outcome": name}, {"last_outcome": 1.0 if name == outcome else 0.0})
        for name in METRIC_OUTCOMES]
    series.append(({"app": app}, {"last_timestamp_seconds": ended, "last_duration_seconds": duration}))
    return series



def memory_trend(samples: Sequence[tuple[float, int]], limit: int | None, horizon: float) -> dict[str, Any]:
    """One unit's memory over a soak: ``samples`` are (seconds into the soak, MemoryCurrent bytes). The second half
    of the window (from half the last sample's time on) is fitted to a line by least squares; ``failing`` says why
    the release fails when, at that rate, memory reaches ``limit`` (MemoryMax) within ``horizon`` seconds (0: it
    never fails). No limit, too few samples or a rise under SOAK_TREND_MIN_RISE is no trend."""
    out: dict[str, Any] = {"start_mib": None, "end_mib": None, "max_mib": round(limit / MIB, 1) if limit else None,
                           "mib_per_s": None, "reaches_max_in_s": None, "failing": ""}
    if not samples:
        return out
    out["start_mib"], out["end_mib"] = round(samples[0][1] / MIB, 1), round(samples[-1][1] / MIB, 1)
    tail = [(t, m) for t, m in samples if t >= samples[-1][0] / 2]
    mean_t = sum(t for t, _ in tail) / len(tail)
    spread = sum((t - mean_t) ** 2 for t, _ in tail)
    if len(tail) < SOAK_TREND_SAMPLES or spread <= 0:
        return out
    mean_m = sum(m for _, m in tail) / len(tail)
    slope = sum((t - mean_t) * (m - mean_m) for t, m in tail) / spread  # bytes per second
    out["mib_per_s"] = round(slope / MIB, 2)
    if not limit or slope <= 0 or slope * (tail[-1][0] - tail[0][0]) < SOAK_TREND_MIN_RISE:
        return out
    eta = max(0.0, (limit - tail[-1][1]) / slope)
    out["reaches_max_in_s"] = round(eta)
    if horizon > 0 and eta <= horizon:
        out["failing"] = (f"memory grows {slope / MIB:.1f} MiB/s under traffic ({tail[0][1] / MIB:.0f} -> "
                          f"{tail[-1][1] / MIB:.0f} MiB in the last {tail[-1][0] - tail[0][0]:.0f} s): at this rate "
                          f"it reaches MemoryMax {limit / MIB:.0f} MiB in about {eta:.0f} s, within "
                          f"soak_memory_horizon {horizon:g} s (a leak: the kernel would OOM-kill it)")
    return out


class DeployFailed(Exception):
    """The run failed after it started changing things; ``str()`` is the message for the user."""


# --------------------------------------------------------------------------- the service manager


@dataclass
class CommandResult:
    rc: int
    stdout: str = ""
    stderr: str = ""

    def tail(self, lines: int = TAIL_LINES) -> str:
        text = (self.stderr or "").strip() or (self.stdout or "").strip()
        return "\n".join(text.splitlines()[-lines:])


class Systemd:
    """The host's service manager. Every ``systemctl`` and ``systemd-run`` call goes through
    ``call``: a test injects a subclass that overrides it."""

    def call(self, argv: list[str], timeout: float) -> CommandResult:
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False,
                                  stdin=subprocess.DEVNULL)
        except FileNotFoundError as exc:
            return CommandResult(127, "", f"{argv[0]} not found ({exc.strerror}): this host does not run systemd")
        except subprocess.TimeoutExpired:
            return CommandResult(124, "", f"{' '.join(argv[:3])}: timed out after {timeout:g} s")
        return CommandResult(proc.returncode, proc.stdout or "", proc.stderr or "")

    def systemctl(self, *args: str, timeout: float = SYSTEMCTL_TIMEOUT) -> CommandResult:
        return self.call(["systemctl", *args], timeout)

    def show_runner(self, cmd: list[str], timeout: float) -> str:
        """``tradeops_health.check_units``' runner: its ``systemctl show`` through ``call``."""
        result = self.call(cmd, timeout)
        if result.rc != 0:
            raise OSError(result.tail() or f"systemctl exited {result.rc}")
        return result.stdout


# --------------------------------------------------------------------------- what to run


@dataclass
class Service:
    unit: str
    probes: list[dict[str, Any]]
    deadline: float


@dataclass
class GateSettings:
    retries: int = 1000
    delay: float = 0.5
    max_delay: float = 2.0
    deadline: float = 60.0
    version_field: str | None = "version"


@dataclass
class Migration:
    argv: list[str]
    user: str | None = None
    group: str | None = None
    env_file: str | None = None
    timeout: int = DEFAULT_MIGRATE_TIMEOUT

    def command(self, release_path: str) -> list[str]:
        """The role's way: a transient unit as the app user, with the units' environment file,
        from the release directory; ``RuntimeMaxSec`` makes systemd kill a migration that hangs."""
        cmd = ["systemd-run", "--wait", "--pipe", "--quiet", "--collect"]
        if self.user:
            cmd.append(f"--uid={self.user}")
        if self.group:
            cmd.append(f"--gid={self.group}")
        if self.env_file:
            cmd.append(f"--property=EnvironmentFile={self.env_file}")
        cmd += [f"--property=RuntimeMaxSec={int(self.timeout)}", f"--working-directory={release_path}",
                os.path.join(release_path, "venv", "bin", self.argv[0]), *self.argv[1:]]
        return cmd


APP_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")


def app_name(params: dict[str, Any], path: str) -> str:
    """The application whose units app_deploy may touch: ``app_name``, else ``metrics_app``, else the last
    component of ``path`` (role app: /opt/<app_name>)."""
    name = params.get("app_name") or params.get("metrics_app") or os.path.basename(os.path.normpath(path))
    if not isinstance(name, str) or not APP_NAME.fullmatch(name):
        raise ReleaseError(f"app_name {name!r} must be the application's name: letters, digits, '.', '_' and '-'")
    return name


def _below(value: Any, bound: float, equal: bool = False) -> bool:
    """A number (not a bool) below ``bound`` (or equal to it): the values whose message says more than 'must be'."""
    number = isinstance(value, int | float) and not isinstance(value, bool)
    return number and (value < bound or (equal and value == bound))


def _seconds(params: dict[str, Any], name: str, default: float | None, zero: bool = False,
             maximum: float = checks.MAX_SECONDS) -> float | None:
    """A duration option: its default when not given, else a finite number of seconds > 0 (>= 0 with ``zero``)."""
    value = option(params, name, default, minimum=0 if zero else None, above=None if zero else 0, maximum=maximum,
                   unit="seconds")
    return None if value is None else float(value)


def expects_version(probe: dict[str, Any], version_field: str | None) -> bool:
    """A probe gated on the version being started: its ``expect_version``, else (unset) one whose
    ``json_field`` is ``version_field``."""
    if probe.get("expect_version") is not None:
        return bool(probe["expect_version"])
    return bool(version_field) and probe.get("json_field") == version_field


def probe_spec(probes: list[dict[str, Any]], unit: str | None, version: str | None = None,
               version_field: str | None = None, release_path: str | None = None) -> HealthSpec:
    """A service's checks: its unit (none for the application's own gate) and its probes by kind. Probes gated on
    the version (``expects_version``) expect ``version``: an HTTP probe in its JSON field (and in its header when
    no value is given for it), a command probe in its output. Command probes run from ``release_path``
    (``release_command``)."""
    spec = HealthSpec(systemd_units=[unit] if unit else [])
    for probe in probes:
        kind = probe.get("kind") or "http"
        expected = version if version and expects_version(probe, version_field) else None
        if kind == "http":
            http = {k: v for k, v in probe.items() if k not in ("kind", "expect_version", "expect_output", "host",
                                                                   "port", "argv", "user", "group", "env_file")}
            # an explicit expect_version fills what has no value; the version_field rule always replaces it
            if expected is not None and http.get("json_field") and (http.get("json_value") is None
                                                                     or probe.get("expect_version") is None):
                http["json_value"] = expected
            if expected is not None and http.get("header") and http.get("header_value") is None:
                http["header_value"] = expected
            spec.http.append(http)
        elif kind == "tcp":
            spec.tcp.append({"host": probe.get("host") or "127.0.0.1", "port": probe.get("port"),
                             "name": probe.get("name"), "timeout": probe.get("timeout")})
        elif kind == "command":
            command = {"argv": probe.get("argv"), "name": probe.get("name"), "timeout": probe.get("timeout"),
                       "expect_output": probe.get("expect_output"), "expect_version": expected}
            if release_path is not None:
                command.update(release_command(release_path, user=probe.get("user"), group=probe.get("group"),
                                               env_file=probe.get("env_file")))
            spec.commands.append(command)
        else:
            raise CheckError(f"probe {probe.get('name') or ''}: kind {kind!r} is not one of http, tcp, command")
    return spec


def parse_services(items: list[dict[str, Any]] | None, default_deadline: float, app: str | None = None
                   ) -> list[Service]:
    """``services`` in start order, each one of ``app``'s own units (when given); every probe checked as
    app_health checks its ``http`` option."""
    services: list[Service] = []
    seen: set[str] = set()
    for index, item in enumerate(items or []):
        where = f"services[{index}]"
        if not isinstance(item, dict):
            raise ReleaseError(f"{where}: give a dict with unit and probes")
        unit = unit_name(item.get("unit"), where, app, error=ReleaseError)
        if unit in seen:
            raise ReleaseError(f"{where}: unit {unit} is listed twice; list each unit once, in start order")
        seen.add(unit)
        probes = [dict(p) for p in item.get("probes") or []]
        try:
            probe_spec(probes, unit).validate()
        except CheckError as exc:
            raise ReleaseError(f"{where} ({unit}): {exc}") from exc
        deadline = default_deadline if item.get("deadline") is None else \
            checks.seconds(item["deadline"], f"{where} ({unit}): deadline", error=ReleaseError)
        services.append(Service(unit, probes, deadline))
    return services


def parse_gate(items: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """``gate``: the application's own probes (typically one command run from the release), checked like a
    service's probes."""
    probes = [dict(p) for p in items or []]
    if probes:
        try:
            probe_spec(probes, None).validate()
        except CheckError as exc:
            raise ReleaseError(f"gate: {exc}") from exc
    return probes


def parse_migration(item: dict[str, Any] | None, owner: str | None, group: str | None) -> Migration | None:
    """``migrate`` -> Migration, None when there is nothing to run (no argv or an empty one)."""
    if not item or not item.get("argv"):
        return None
    argv = [str(a) for a in item["argv"]]
    if not argv[0] or "/" in argv[0] or argv[0] in (".", ".."):
        raise ReleaseError(f"migrate.argv[0] {argv[0]!r} must be the name of a program in the release's venv/bin, "
                           "e.g. refapp (run as <release>/venv/bin/refapp)")
    timeout = DEFAULT_MIGRATE_TIMEOUT if item.get("timeout") is None else int(checks.number(
        item["timeout"], "migrate.timeout", error=ReleaseError, integer=True, minimum=1, maximum=checks.MAX_SECONDS,
        unit="seconds"))
    return Migration(argv=argv, user=item.get("user") or owner, group=item.get("group") or group,
                     env_file=item.get("env_file"), timeout=timeout)


@dataclass
class GateResult:
    ok: bool
    unit: str | None = None
    failing: str = ""


# --------------------------------------------------------------------------- the run


@dataclass
class Deployer:
    """One run of ``action`` on one application tree; ``run()`` returns the module result
    (``failed`` and ``msg`` set on failure) and never raises for a failure the user can act on."""

    store: ReleaseStore
    params: dict[str, Any]
    systemd: Systemd = field(default_factory=Systemd)
    check_mode: bool = False

    def __post_init__(self) -> None:
        self.timings = dict.fromkeys(PHASES, 0.0)
        self.ledger: list[dict[str, Any]] = []
        self.health: dict[str, dict[str, Any]] = {}
        self.warnings: list[str] = []
        self.changed = False
        self.restarted = False
        self.result: dict[str, Any] = {}
        self.services: list[Service] = []
        self.app_gate: list[dict[str, Any]] = []  # option gate: the application's own probes
        self.gate = GateSettings()
        self.migration: Migration | None = None
        self.predicted: str | None = None  # check mode: the release current would point to
        self.lock: dict[str, Any] = {}  # lock_options of the parameters (parse)

    # ------------------------------------------------------------------ helpers

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        started = time.monotonic()
        try:
            yield
        finally:
            self.timings[name] += time.monotonic() - started

    def keep(self, result: dict[str, Any]) -> dict[str, Any]:
        """A store result: remember its ledger line."""
        entry = result.get("ledger_entry")
        if entry:
            self.ledger.append(entry)
            self.changed = True
        return result

    def version_of(self, release: str | None) -> str | None:
        return self.store.read_meta(release).get("version") if release else None

    def parse(self) -> None:
        p = self.params
        action = p.get("action") or "deploy"
        if action not in ACTIONS:
            raise ReleaseError(f"action={action!r}: use one of {', '.join(ACTIONS)}")
        retries = option(p, "retries", GateSettings.retries, integer=True, minimum=0, maximum=1_000_000)
        delay = _seconds(p, "delay", GateSettings.delay, zero=True)
        max_delay = _seconds(p, "max_delay", GateSettings.max_delay, zero=True)
        deadline = _seconds(p, "deadline", GateSettings.deadline)
        assert delay is not None and max_delay is not None and deadline is not None
        field_name = p.get("version_field", GateSettings.version_field)
        self.gate = GateSettings(retries, delay, max(max_delay, delay), deadline, field_name or None)
        self.services = parse_services(p.get("services"), deadline, app_name(p, self.store.path))
        self.app_gate = parse_gate(p.get("gate"))
        self.migration = parse_migration(p.get("migrate"), p.get("owner"), p.get("group"))
        for item in p.get("console_scripts") or []:
            check_console_script(item.get("name"), item.get("setting") or "console_scripts[].name")
        self.lock = lock_options(p)
        if action == "deploy":
            missing = [k for k in ("version", "wheelhouse") if not p.get(k)]
            if missing:
                raise ReleaseError(f"action=deploy needs {' and '.join(missing)}")
        soak, horizon = p.get("soak"), p.get("soak_memory_horizon")
        if action == "soak" and (soak is None or _below(soak, 0, True)):
            raise ReleaseError(f"action=soak needs soak > 0 (seconds to watch), got {soak!r}")
        _seconds(p, "soak", None)
        if _below(horizon, 0):
            raise ReleaseError(f"soak_memory_horizon={horizon:g}: seconds ahead a memory trend may reach MemoryMax "
                               f"(default {DEFAULT_SOAK_MEMORY_HORIZON:g}), 0 to skip the check")
        _seconds(p, "soak_memory_horizon", DEFAULT_SOAK_MEMORY_HORIZON, zero=True, maximum=30 * 86400)
        if p.get("keep") is not None and option(p, "keep", DEFAULT_KEEP, integer=True) < 1:
            raise ReleaseError(f"keep={p['keep']}: keep at least 1 release (default 5)")
        option(p, "min_free_mb", 0, integer=True, minimum=0)
        if p.get("shared_links") is not None:
            if not isinstance(p["shared_links"], dict):
                raise ReleaseError("shared_links must be a mapping of release path: path under shared/")
            for key, target in p["shared_links"].items():
                check_relative(key, "shared_links key")
                check_relative(target, f"shared_links[{key!r}]")

    # ------------------------------------------------------------------ services

    def check(self, service: Service, version: str | None, quick: bool = False) -> HealthReport:
        """The service's checks on the serving release (``current``: the gated one in every action)."""
        release_path = None
        if any(p.get("kind") == "command" for p in service.probes):
            current = self.store.current()
            if current is None:
                raise CheckError(f"{service.unit}: its command probes run from the current release, and nothing "
                                 f"is current under {self.store.path}")
            release_path = self.store.release_path(current)
        spec = probe_spec(service.probes, service.unit, version, self.gate.version_field, release_path)
        if quick:
            return evaluate(spec, retries=0, deadline=min(service.deadline, QUICK_DEADLINE),
                            unit_runner=self.systemd.show_runner)
        return evaluate(spec, retries=self.gate.retries, delay=self.gate.delay, max_delay=self.gate.max_delay,
                        deadline=service.deadline, unit_runner=self.systemd.show_runner)

    def record_health(self, service: Service, version: str | None, report: HealthReport) -> None:
        self.health[service.unit] = {"version": version, **report.as_dict()}

    def run_gate(self, release: str | None, version: str | None) -> GateResult:
        """The application's own gate (option ``gate``), run once from ``release`` (its directory, venv and env
        file), within ``deadline``: a batch-only application's whole gate (before the switch), else run once every
        service passed its own. Recorded in ``health`` under GATE; no gate, nothing to fail."""
        if not self.app_gate:
            return GateResult(True)
        if release is None:
            raise CheckError(f"the gate runs from a release, and nothing is current under {self.store.path}")
        spec = probe_spec(self.app_gate, None, version, self.gate.version_field, self.store.release_path(release))
        with self.phase("health"):
            report = evaluate(spec, retries=0, deadline=self.gate.deadline, unit_runner=self.systemd.show_runner)
        self.health[GATE] = {"version": version, "release": release, **report.as_dict()}
        return GateResult(True) if report.status == HEALTHY else GateResult(False, None, f"{GATE}: {report.summary()}")

    def gate_text(self) -> str:
        """What the gate runs, for messages: ``refapp check`` (a command's argv), else the probe's name."""
        return ", ".join(" ".join(p["argv"]) if p.get("kind") == "command" else str(p.get("name") or p.get("kind"))
                         for p in self.app_gate)

    def serving_healthy(self, version: str | None) -> bool:
        """One pass of every service's checks, then the gate: does the serving release answer as it should?"""
        self.health = {}
        healthy = True
        with self.phase("health"):
            for service in self.services:
                report = self.check(service, version, quick=True)
                self.record_health(service, version, report)
                healthy = healthy and report.status == HEALTHY
        return healthy and self.run_gate(self.store.current(), version).ok

    def stop_all(self) -> list[str]:
        """``systemctl stop`` every unit, in reverse start order; the failures, as text."""
        errors = []
        for service in reversed(self.services):
            result = self.systemd.systemctl("stop", service.unit)
            if result.rc != 0:
                errors.append(f"systemctl stop {service.unit} failed (exit {result.rc}): {result.tail(3)}")
        return errors

    def restart_and_gate(self, version: str | None) -> GateResult:
        """Stop every unit in reverse order, clear their failed state, then start each in order
        behind its health gate; a unit whose gate fails stops the sequence (later ones stay stopped).
        Then the application's gate, from ``current``. No services: the gate only, nothing restarted."""
        self.health = {}
        if not self.services:
            return self.run_gate(self.store.current(), version)
        self.restarted = self.changed = True
        units = [s.unit for s in self.services]
        with self.phase("restart"):
            errors = self.stop_all()
            # A unit that hit its start limit (a crashing release) refuses to start until reset.
            self.systemd.systemctl("reset-failed", *units)
        if errors:
            return GateResult(False, None, "; ".join(errors))
        for index, service in enumerate(self.services):
            with self.phase("restart"):
                started = self.systemd.systemctl("start", service.unit)
            with self.phase("health"):
                if started.rc != 0:
                    report = self.check(service, version, quick=True)
                    detail = f"systemctl start failed (exit {started.rc}): {started.tail(5)}"
                    report.checks.insert(0, CheckResult(f"start:{service.unit}", "systemd", UNHEALTHY, detail))
                    report.status = UNHEALTHY
                else:
                    report = self.check(service, version)
            self.record_health(service, version, report)
            if report.status != HEALTHY:
                for later in self.services[index + 1:]:
                    self.health[later.unit] = {"version": version, "status": NOT_STARTED, "checks": [],
                                               "failed_checks": []}
                return GateResult(False, service.unit, f"{service.unit}: {report.summary()}")
        return self.run_gate(self.store.current(), version)

    def migrate(self, release: str, release_path: str, before: str | None) -> None:
        assert self.migration is not None
        cmd = self.migration.command(release_path)
        with self.phase("migrate"):
            result = self.systemd.call(cmd, float(self.migration.timeout) + 30)
        self.changed = True
        self.result["migration"] = {"command": cmd, "rc": result.rc,
                                    "stdout": "\n".join(result.stdout.strip().splitlines()[-TAIL_LINES:]),
                                    "stderr": "\n".join(result.stderr.strip().splitlines()[-TAIL_LINES:])}
        if result.rc != 0:
            self.not_switched(release, before, f"migration {' '.join(self.migration.argv)} failed (exit {result.rc}): "
                                               f"{result.tail()}")

    def check_console_scripts(self, release: str, release_path: str, before: str | None) -> None:
        """Every program the services and the migration run is in the new release's venv/bin (a console script of
        the app or of any distribution installed with it): else the release is refused before the switch, naming
        the setting, instead of units that fail with status 203/EXEC after it."""
        bin_dir = os.path.join(release_path, VENV_DIR, "bin")
        absent = [item for item in self.params.get("console_scripts") or []
                  if not os.path.isfile(os.path.join(bin_dir, item["name"]))]
        if not absent:
            return
        have = sorted(n for n in os.listdir(bin_dir) if not n.startswith(("python", "activate", "pip"))
                      and not n.endswith(".pth")) if os.path.isdir(bin_dir) else []
        named = "; ".join(f"{item['setting']} = {item['name']!r}" for item in absent)
        self.not_switched(release, before, f"no console script {named} is installed in the release (its venv/bin "
                                           f"has: {', '.join(have) or 'nothing'}). Fix the name, or add the "
                                           "distribution that provides it to app_requirements")

    def not_switched(self, release: str, before: str | None, reason: str) -> None:
        """A release refused before the switch (its migration or, for a batch-only app, its gate failed): marked
        bad; nothing was switched or restarted, so the release that was current still is (deploy.yml puts the host
        back at the load balancers on this outcome). Always ends in DeployFailed."""
        with self.phase("other"):
            self.keep(self.store.mark(release=release, outcome="bad", reason=reason[:1000]))
        self.result["outcome"] = "not-switched" if before else "failed"
        if self.services:
            serving = f"{before} still serves" if before else "nothing was serving before either"
        else:
            serving = f"{before} is still current" if before else "nothing was current before either"
        raise DeployFailed(f"deploy of {self.params['version']} ({release}): {reason}\nNothing was switched: "
                           f"{serving}. {release} is marked bad in {self.store.ledger_path}.")

    # ------------------------------------------------------------------ actions

    def do_deploy(self) -> None:
        p, store = self.params, self.store
        version = p["version"]
        if p.get("wheelhouse_name"):  # shipped to a temporary directory (the action plugin): keep it in the tree
            with self.phase("unpack"):
                placed = store.place_wheelhouse(p["wheelhouse"], p["wheelhouse_name"], p.get("group"),
                                                check_mode=self.check_mode)
            p = self.params = {**p, "wheelhouse": placed["wheelhouse"]}
            self.changed = self.changed or bool(placed["changed"])
        create_started = time.monotonic()
        created = self.keep(run_action(store, "create", p, self.check_mode))
        spent = time.monotonic() - create_started
        sub = created.get("timings") or {}
        venv = min(sum(float(sub.get(k) or 0) for k in VENV_TIMINGS), spent)
        self.timings["venv"] += venv
        self.timings["unpack"] += spent - venv
        self.result["create_timings"] = sub
        self.changed = self.changed or bool(created.get("changed"))
        release, before = created["release"], store.current()
        self.result.update(release=release, version=version, previous=before, release_path=created["release_path"],
                           existed=bool(created.get("existed")), deps_reused=created.get("deps_reused"))
        is_current = release == before
        # A batch-only application (no services): its gate runs from the new release BEFORE the switch, so a job
        # that starts meanwhile never runs a release that fails it; a failure switches nothing.
        gate_first = not self.services and not is_current
        if is_current and created.get("status") == "good":
            if self.check_mode:
                self.result["msg"] = (f"check mode: {release} is current and marked good; health is not probed in "
                                      "check mode, a real run restarts it only if it is unhealthy")
                self.result["outcome"] = "unchanged"
                return
            if self.serving_healthy(version):
                self.result.update(outcome="unchanged", msg=f"{version} ({release}) is current and healthy: nothing "
                                                            "to do")
                return
            self.warnings.append(f"{release} is current but not healthy ({self.failing_health()}); restarting it")
        if self.check_mode:
            steps = [f"{'use the existing' if created.get('existed') else 'create'} release {release}"]
            if self.migration and not is_current:
                steps.append(f"run {' '.join(self.migration.argv)} from it")
            if gate_first and self.app_gate:
                steps.append(f"gate it ({self.gate_text()})")
            if not is_current:
                steps.append(f"switch current from {before or 'nothing'} to it")
            if self.services:
                steps.append(f"restart {', '.join(s.unit for s in self.services)} behind the health gate")
            if self.app_gate and not gate_first:
                steps.append(f"run the gate ({self.gate_text()})")
            missing = created.get("missing_accounts") or []
            if missing:  # a first deploy: role app's user and group tasks only reported, in check mode
                self.result["missing_accounts"] = missing
            accounts = f"; {', '.join(missing)} (a real run needs them first)" if missing else ""
            self.changed, self.predicted = True, release
            self.result.update(outcome="deployed",
                               msg=f"check mode: would {', '.join(steps)}{accounts}. Nothing was changed.")
            return
        if not is_current:
            self.check_console_scripts(release, created["release_path"], before)
        if self.migration and not is_current:  # idempotent by contract: also after an interrupted run
            self.migrate(release, created["release_path"], before)
        if gate_first:
            gate = self.run_gate(release, version)
            if not gate.ok:
                self.result["failed_gate"] = {"release": release, "version": version, "unit": None,
                                              "health": self.health}
                self.not_switched(release, before, f"its gate failed before the switch: {gate.failing}")
        with self.phase("switch"):
            self.keep(store.activate(release=release, allow_bad=True, reason=f"deploy {version}"))
        gate = GateResult(True) if gate_first else self.restart_and_gate(version)
        if gate.ok:
            with self.phase("other"):
                self.keep(store.mark(release=release, outcome="good"))
            with self.phase("prune"):
                try:
                    self.keep(store.prune(keep=option(p, "keep", DEFAULT_KEEP, integer=True, minimum=1)))
                except (ReleaseError, OSError) as exc:
                    self.warnings.append(f"{release} is deployed and healthy, but pruning old releases failed: {exc}")
            self.result.update(outcome="deployed", msg=f"deployed {version} ({release}), healthy; previous "
                                                       f"{before or 'none'}")
            return
        self.gate_failed(release, version, gate)

    def failing_health(self) -> str:
        return "; ".join(f"{unit}: {', '.join(h.get('failed_checks') or [h['status']])}"
                         for unit, h in self.health.items() if h["status"] != HEALTHY) or "-"

    def gate_failed(self, release: str, version: str, gate: GateResult) -> None:
        """Mark the release bad, roll back to the release that served before (or the previous
        good one), restart and gate that; always ends in DeployFailed."""
        store = self.store
        before = self.result.get("previous")
        self.result["failed_gate"] = {"release": release, "version": version, "unit": gate.unit,
                                      "health": self.health}
        with self.phase("other"):
            self.keep(store.mark(release=release, outcome="bad", reason=f"health gate failed: {gate.failing}"[:1000]))
        head = f"deploy of {version} ({release}) failed its health gate: {gate.failing}."
        # The release that served before this run, else the newest good one before ``release`` (a soak runs after
        # the deploy that switched: nothing "before" it in this run).
        order, status, _, _ = store.state()
        target = before if before and before != release and status.get(before) != "bad" else None
        target = target or previous_good(order, status, release)
        if target is None:
            with self.phase("restart"):
                errors = self.stop_all()
            self.result["outcome"] = "failed"
            if not self.services:  # a batch-only application: nothing runs, its jobs start the bad release
                raise DeployFailed(f"{head} There is no previous good release to roll back to: {release} stays "
                                   "current, marked bad, and its scheduled jobs run it. Fix the release and deploy "
                                   "again.")
            units = f"stopping its units failed: {'; '.join(errors)}" if errors else "its units are stopped"
            raise DeployFailed(
                f"{head} There is no previous good release to roll back to: NOTHING SERVES. {release} stays current, "
                f"marked bad, and {units}. Fix the release and deploy again.")
        try:
            with self.phase("switch"):
                back = self.keep(store.rollback(release=target, reason=f"health gate of {version} failed"))
        except (ReleaseError, OSError) as exc:
            self.result["outcome"] = "rollback-failed"
            raise DeployFailed(f"{head} Rolling back to {target} FAILED: {exc}. {release} is current, marked bad, "
                               "and may not serve: roll back by hand (tradeops-release rollback).") from exc
        back_version = back.get("version")
        self.result["rolled_back_to"] = target
        again = self.restart_and_gate(back_version)
        if again.ok:
            self.result["outcome"] = "rolled-back"
            raise DeployFailed(f"{head} Rolled back to {target} ({back_version}), which is healthy. {release} is "
                               f"marked bad in {store.ledger_path}.")
        self.result["outcome"] = "rollback-failed"
        journal = f" (journalctl -u {again.unit})" if again.unit else ""
        raise DeployFailed(
            f"{head} Rolled back to {target} ({back_version}), but THE ROLLBACK FAILED ITS HEALTH GATE TOO: "
            f"{again.failing}. Nothing healthy serves on this host: look at the units' journal{journal}. "
            f"{release} is marked bad in {store.ledger_path}.")

    def do_soak(self) -> None:
        """Watch the serving release for ``soak`` seconds while it takes traffic (deploy.yml runs this once the
        host is back at its load balancers: a release that fails only under load, e.g. over MemoryMax, is not
        seen by the gate of a drained host). A unit that restarts (NRestarts), stops or fails ends the soak at
        once; HTTP probes after SOAK_PROBE_MISSES failed passes in a row. A failed soak is a failed health gate:
        the release is marked bad and the previous good release restarted behind the gate."""
        p, store = self.params, self.store
        current = store.current()
        if current is None:
            raise ReleaseError(f"action=soak: nothing is current under {store.path}: deploy a release first")
        version = self.version_of(current)
        if p.get("version") and p["version"] != version:
            raise ReleaseError(f"action=soak version={p['version']}: the current release {current} is version "
                               f"{version}; soak the version that was deployed (the deploy did not switch?)")
        seconds = float(p["soak"])
        units = ", ".join(s.unit for s in self.services)
        self.result.update(release=current, version=version, previous=None)
        if not self.services:  # a batch-only application takes no traffic: its gate ran before the switch
            self.result.update(outcome="soaked", msg=f"{current} ({version}) has no service to watch under traffic: "
                                                     "nothing to soak")
            return
        if self.check_mode:
            self.result.update(outcome="soaked", msg=f"check mode: would watch {units} of {current} ({version}) for "
                                                     f"{seconds:g} s under traffic. Nothing was changed.")
            return
        horizon = p.get("soak_memory_horizon")
        horizon = DEFAULT_SOAK_MEMORY_HORIZON if horizon is None else float(horizon)
        started = time.monotonic()
        failing, unit, passes, misses = "", None, 0, 0
        memory: dict[str, list[tuple[float, int]]] = {}  # unit -> (seconds into the soak, MemoryCurrent)
        limits: dict[str, int | None] = {}  # unit -> MemoryMax
        with self.phase("health"):
            while True:
                self.health, http_bad = {}, []
                for service in self.services:
                    report = self.check(service, version, quick=True)
                    self.record_health(service, version, report)
                    for c in report.checks:
                        if c.kind == "systemd" and c.data.get("memory_current") is not None:
                            memory.setdefault(service.unit, []).append((time.monotonic() - started,
                                                                        c.data["memory_current"]))
                            limits[service.unit] = c.data.get("memory_max")
                    units_bad = [c for c in report.checks if c.kind == "systemd" and c.status != HEALTHY]
                    if units_bad:
                        failing, unit = "; ".join(f"{c.name}: {c.detail}" for c in units_bad), service.unit
                        break
                    if report.status != HEALTHY:
                        http_bad.append((service.unit, report.summary()))
                passes += 1
                misses = misses + 1 if http_bad else 0
                if not failing and misses >= SOAK_PROBE_MISSES:
                    unit = http_bad[0][0]  # this pass's first failing unit, not an earlier pass's
                    failing = f"{misses} checks in a row failed: {' | '.join(f'{u}: {w}' for u, w in http_bad)}"
                elapsed = time.monotonic() - started
                if failing or elapsed >= seconds:
                    break
                time.sleep(min(SOAK_INTERVAL, seconds - elapsed))
        watched = time.monotonic() - started
        trends = {u: memory_trend(samples, limits.get(u), horizon) for u, samples in memory.items()}
        leaking = [(u, t["failing"]) for u, t in trends.items() if t["failing"]]
        if leaking and not failing:
            unit, failing = leaking[0][0], "; ".join(f"{u}: {why}" for u, why in leaking)
        self.result["soak"] = {"seconds": seconds, "watched_s": round(watched, 1), "passes": passes,
                               "failing": failing or None, "memory_horizon_s": horizon,
                               "memory": {u: {k: v for k, v in t.items() if k != "failing"}
                                          for u, t in trends.items()}}
        if not failing:
            self.result.update(outcome="soaked", msg=f"{current} ({version}) stayed healthy under traffic for "
                                                     f"{watched:.0f} s ({passes} checks of {units})")
            return
        self.gate_failed(current, version, GateResult(False, unit, f"soak under traffic, after {watched:.0f} s of "
                                                                   f"{seconds:g}: {failing}"))

    def gate_before_rollback(self, before: str | None) -> None:
        """A batch-only application's rollback: the target's gate runs from it before the switch; a failure
        switches nothing (the release that was current stays) and ends in DeployFailed."""
        p = self.params
        planned = self.store.rollback(release=p.get("release"), version=p.get("version"), check_mode=True)
        if not planned["changed"]:
            return  # the target is current already: gated as the serving release below
        target, version = planned["release"], planned.get("version")
        gate = self.run_gate(target, version)
        if gate.ok:
            return
        self.result.update(release=target, version=version, previous=before, outcome="not-switched",
                           failed_gate={"release": target, "version": version, "unit": None, "health": self.health})
        raise DeployFailed(f"rollback to {target} ({version}) failed its gate: {gate.failing}. Nothing was switched: "
                           f"{before} ({self.version_of(before)}) is still current.")

    def do_rollback(self) -> None:
        p, store = self.params, self.store
        before = store.current()
        gate_first = not self.services and not self.check_mode
        if gate_first:
            self.gate_before_rollback(before)
        with self.phase("switch"):
            back = self.keep(store.rollback(release=p.get("release"), version=p.get("version"),
                                            reason=p.get("reason") or "manual rollback", check_mode=self.check_mode))
        target, version = back["release"], back.get("version")
        self.result.update(release=target, version=version, previous=before,
                           rolled_back_to=target if back["changed"] else None)
        if self.check_mode:
            self.changed, self.predicted = bool(back["changed"]), target
            if self.services:
                then = f" and restart {', '.join(s.unit for s in self.services)} behind the health gate"
            else:
                then = f" once its gate ({self.gate_text()}) passes from it" if self.app_gate else ""
            self.result.update(outcome="rolled-back" if back["changed"] else "unchanged",
                               msg=f"check mode: would switch current from {before or 'nothing'} to {target}"
                                   f"{then if back['changed'] else ''}. Nothing was changed.")
            return
        if not back["changed"] and self.serving_healthy(version):
            self.result.update(outcome="unchanged", msg=f"{target} ({version}) is already current and healthy")
            return
        gate = GateResult(True) if gate_first and back["changed"] else self.restart_and_gate(version)
        if gate.ok:
            self.result.update(outcome="rolled-back" if back["changed"] else "restarted",
                               msg=f"current is {target} ({version}), healthy; was {before or 'nothing'}")
            return
        head = f"rollback to {target} ({version}) failed its health gate: {gate.failing}."
        self.result["failed_gate"] = {"release": target, "version": version, "unit": gate.unit,
                                      "health": self.health}
        if not before or before == target:
            if not before:
                with self.phase("restart"):
                    self.stop_all()
            self.result["outcome"] = "failed"
            what = "NOTHING SERVES: its units are stopped" if not before else f"{target} stays current"
            raise DeployFailed(f"{head} There is no other release that served before: {what}.")
        try:
            with self.phase("switch"):
                self.keep(store.activate(release=before, allow_bad=True,
                                         reason=f"rollback to {target} failed its health gate"))
        except (ReleaseError, OSError) as exc:
            self.result["outcome"] = "failed"
            raise DeployFailed(f"{head} Switching forward again to {before} FAILED: {exc}.") from exc
        before_version = self.version_of(before)
        self.result["rolled_back_to"] = None
        again = self.restart_and_gate(before_version)
        self.result["outcome"] = "switched-forward"
        if again.ok:
            raise DeployFailed(f"{head} Switched forward again to {before} ({before_version}), the release that "
                               "served before, which is healthy.")
        self.result["outcome"] = "failed"
        raise DeployFailed(f"{head} Switched forward again to {before} ({before_version}), but IT FAILS ITS HEALTH "
                           f"GATE TOO: {again.failing}. Nothing healthy serves on this host.")

    def do_restart(self) -> None:
        current = self.store.current()
        if current is None:  # a host converged before its first deploy (a config handler): nothing runs yet
            self.result.update(outcome="unchanged", msg=f"nothing is current under {self.store.path} (no release "
                                                        "deployed yet): nothing to restart")
            return
        version = self.version_of(current)
        self.result.update(release=current, version=version, previous=current)
        # A batch-only application (no services): nothing to restart, its gate says whether it still works.
        units, restarts = ", ".join(s.unit for s in self.services), bool(self.services)
        done = "restarted" if restarts else "unchanged"
        if self.check_mode:
            self.changed = restarts
            what = (f"restart {units} behind the health gate" if restarts else
                    f"run the gate ({self.gate_text() or 'none'}) of {current} ({version}); no service to restart")
            self.result.update(outcome=done, msg=f"check mode: would {what}")
            return
        gate = self.restart_and_gate(version)
        self.result.update(outcome=done if gate.ok else "failed",
                           msg=f"restarted {current} ({version}), healthy" if restarts else
                               f"no service to restart; {current} ({version}) passes its gate")
        if not gate.ok:
            what = (f"restart of {current} ({version}) failed its health gate" if restarts else
                    f"{current} ({version}) fails its gate now")
            nothing = "" if restarts else " Nothing was restarted (no services), and"
            raise DeployFailed(f"{what}: {gate.failing}.{nothing} action=restart does not roll back: "
                               f"{'' if restarts else 'fix the configuration, or '}use action=rollback to go to the "
                               "previous good release.")

    def do_verify(self) -> None:
        current = self.store.current()
        if current is None:
            raise ReleaseError(f"nothing is current under {self.store.path}: deploy a release first")
        version = self.version_of(current)
        self.result.update(release=current, version=version, previous=current)
        failing = []
        with self.phase("health"):
            for service in self.services:
                report = self.check(service, version)
                self.record_health(service, version, report)
                if report.status != HEALTHY:
                    failing.append(f"{service.unit}: {report.summary()}")
        gate = self.run_gate(current, version)
        if not gate.ok:
            failing.append(gate.failing)
        self.result.update(outcome="unhealthy" if failing else "healthy", msg=f"{current} ({version}) is healthy")
        if failing:
            raise DeployFailed(f"{current} ({version}) is not healthy: {' | '.join(failing)}")

    # ------------------------------------------------------------------ the whole run

    def lock_args(self) -> dict[str, Any]:
        p = self.params
        return {"owner": p.get("lock_owner"), "host": p.get("lock_host"), "pid": p.get("lock_pid")}

    def run(self) -> dict[str, Any]:
        started = time.monotonic()
        p, store = self.params, self.store
        action = p.get("action") or "deploy"
        self.result = {"action": action, "app": self.app_label()}
        failure: str | None = None
        details: dict[str, Any] = {}
        locked = False
        try:
            self.parse()
            if action != "verify":  # verify only reads
                what = p.get("version") or p.get("release") or ""
                with self.phase("lock"):
                    taken = store.lock(**self.lock, reason=p.get("lock_reason") or f"{action} {what}".strip(),
                                       check_mode=self.check_mode, record=False)
                self.keep(taken)
                self.result["lock"] = taken.get("lock")
                locked = bool(taken.get("changed")) and not self.check_mode
            getattr(self, f"do_{action}")()
        except DeployFailed as exc:
            failure = str(exc)
        except ReleaseError as exc:
            failure, details = str(exc), dict(exc.details)
        except CheckError as exc:
            failure = f"could not check: {exc}"
        except OSError as exc:
            failure = (f"app_deploy {action} on {store.path}: {exc}; check that the module runs as root (become: true) "
                       "and that the filesystem is writable")
        finally:
            self.finish(started, failure, locked)
        result = {**self.result, **details}
        if failure is not None:
            result.update(failed=True, msg=failure)
            result.setdefault("outcome", "failed")
        return result

    def finish(self, started: float, failure: str | None, locked: bool) -> None:
        """Summary ledger line (when the run changed anything), then the lock released: always."""
        store = self.store
        elapsed = time.monotonic() - started
        self.timings["other"] += max(elapsed - sum(self.timings.values()), 0.0)
        timings = {k: round(v, 3) for k, v in self.timings.items()}
        current = None
        with contextlib.suppress(ReleaseError, OSError):
            current = store.current()
        self.result.update(changed=self.changed, restarted=self.restarted, current=current, health=self.health,
                           timings=timings, elapsed=round(elapsed, 3))
        before = self.result.get("previous")
        after = self.predicted or current
        self.result["diff"] = {"before": f"current -> {before or 'absent'}\n",
                               "after": f"current -> {after or 'absent'}\n"}
        if self.changed and not self.check_mode:
            lock = self.result.get("lock") or {}
            outcome = self.result.get("outcome") or ("failed" if failure else "done")
            try:
                self.ledger.append(store.record(
                    "summary", run=self.params.get("action") or "deploy", version=self.result.get("version"),
                    release=self.result.get("release"), outcome=outcome, duration_s=round(elapsed, 3),
                    reason=failure[:1000] if failure else self.params.get("reason"), previous=before, current=current,
                    rolled_back_to=self.result.get("rolled_back_to"), lock_owner=lock.get("owner"),
                    lock_host=lock.get("host"), lock_pid=lock.get("pid"), timings=timings))
            except OSError as exc:
                self.warnings.append(f"could not write the summary line to {store.ledger_path}: {exc}")
            self.write_metrics(failure is not None, elapsed)
        if locked:
            try:
                store.unlock(**self.lock_args(), record=False)
            except (ReleaseError, OSError) as exc:
                self.warnings.append(f"could not release the deploy lock {store.lock_path}: {exc}")
        self.result["ledger_entries"] = self.ledger
        self.result["warnings"] = self.warnings

    def app_label(self) -> str:
        """The application's name: ``metrics_app``, else the last component of ``path``."""
        return self.params.get("metrics_app") or os.path.basename(os.path.normpath(self.store.path))

    def write_metrics(self, failed: bool, elapsed: float) -> None:
        """Publish this deploy's or rollback's outcome under ``metrics_dir`` (before the lock is
        released, so two runs publish in the order they ran). Off without ``metrics_dir``; a
        failure to write is a warning."""
        p = self.params
        action = p.get("action") or "deploy"
        directory = p.get("metrics_dir")
        if not directory or action not in ("deploy", "rollback", "soak"):
            return
        app = self.app_label()
        outcome = metric_outcome(action, self.result.get("outcome"), failed)
        try:
            path = update_textfile(directory, METRICS_STEM, METRICS,
                                   deploy_metric_series(app, outcome, time.time(), elapsed))
        except (OSError, ValueError) as exc:
            self.warnings.append(f"could not write the deploy metrics under metrics_dir={directory}: {exc}; the "
                                 f"{action} itself is unaffected (check that the directory is writable by root)")
            return
        self.result["metrics"] = {"path": str(path), "app": app, "outcome": outcome}


def run_deploy(store: ReleaseStore, params: dict[str, Any], *, systemd: Systemd | None = None,
               check_mode: bool = False) -> dict[str, Any]:
    """One ``app_deploy`` run with the module's parameter names; the module result."""
    return Deployer(store, params, systemd or Systemd(), check_mode).run()
