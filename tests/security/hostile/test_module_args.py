"""Property-based: every Linux module's argument spec (plugins/modules/*.py) fed random and hostile
values (hypothesis). Whatever it gets, a module ends in a clean result or a fail_json with a message,
never a traceback (an exception out of main(), or app_deploy's "internal error"), and it writes nothing
outside the sandbox it was given.

The strategies are built from each module's own ``argument_spec()`` (a new option is fed too), with
pools of hostile values by type and by name: paths only inside a sandbox (these modules run as root
here), URLs and hosts that fail fast on loopback, units and systemctl through a fake that fails.
Values that would make a valid run slow (a deadline of an hour) are not generated; the fast, valid
ones are. Not generated either, because ansible-core's own argument validation ends in a traceback
for them before the module's code runs (AnsibleModule() raises; nothing a module can catch):
an infinity for an int option (check_type_int's OverflowError, fixed upstream in
ansible/ansible#87253, not in the ansible-core pinned here), and a number or a bool for a dict
option with suboptions or as an item of a list of dicts (set_fallbacks' TypeError,
ansible/ansible#81631, open)."""

from __future__ import annotations

import contextlib
import math
import os
import re
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import app_deploy
import app_files
import app_health
import app_release
import backup_run
import backup_verify
import os_packages
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

NAN, INF = math.nan, math.inf
VALID_TEXT = ["good", "tiny-web.service", "root", "1.0"]
TEXT = ["", " ", "*", "x\n", "\0", "../../etc/passwd", "a" * 300, "-rf", "$(id)", "\u00e9\U0001f600", "0640",
        "1.0\n", "nobody", "nogroup", "a,b"]
SECONDS = [0.05, 0.2]  # valid and fast
NUMBERS = [0, -1, -0.5, NAN, INF, -INF, 1e300, 10**12]  # numbers, each one refused or meant as it is
INTS = [0, -1, 65535, 65536, 10**12, -(10**12)]
WRONG = ["x", [1], {"k": 1}]  # not of the option's type: Ansible's own check refuses them
URLS = ["http://127.0.0.1:1/", "http://[::1", "ftp://127.0.0.1/", "http://127.0.0.1:99999/", "http:///x", "",
        "http://u:p@127.0.0.1:1/h", "http://127.0.0.1:1/\n", "http://127.0.0.1:0/", "https://127.0.0.1:1/", 5]
HOSTS = ["127.0.0.1", "", "::1", "a b", "localhost\n", "x" * 300, 5]
UNITS = ["tiny-web.service", "tiny-api@1.service", "*", "sshd.service", "tiny-web.service\n", "-x", "", 5, None]
STATUS = [200, "200-299", [200, 301], [], "2xx", ["abc"], 99, True, [600]]
HEADERS = [{"Authorization": "Bearer x"}, {"X-A": "v\r\nB: c"}, {"bad name": "v"}, {"X": 5}, {"X": ["l"]}, "x", {}]
TCP = ["127.0.0.1:1", "x", "[::1]:1", "h:0", "h:99999", ":1", "127.0.0.1:1\n", 5]
DURATIONS = {"deadline", "delay", "max_delay", "timeout", "soak", "soak_memory_horizon", "interval",
             "lock_stale_after", "max_age_hours", "warning", "critical"}
EXAMPLE_SECONDS = 10  # one module run; the valid values generated take well under a second
MOST_OPTIONS = 4  # optional options given at once: more would mostly end in Ansible's refusal of one of them
ALWAYS = {"deadline"}  # given every time: its default (60 s) with failing checks would only be slow
ANSIBLE_REFUSAL = re.compile(r"argument '|is of type|missing required|value of '|Unsupported parameters|mutually "
                             r"exclusive|must be one of|is required|elements value|found in|one of the following")


class Hung(BaseException):
    """A module run that took longer than EXAMPLE_SECONDS (a BaseException: no module catches it)."""


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    def expire(signum: int, frame: Any) -> None:
        raise Hung(f"the module was still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def paths(sandbox: Path) -> list[Any]:
    return [str(sandbox / "tiny"), str(sandbox / "tiny" / ".." / "tiny"), str(sandbox / "missing" / "deeper"),
            str(sandbox / "afile"), str(sandbox / "link"), "relative/path", "", "x\0y", str(sandbox / "tiny") + "\n",
            5]


def backup_settings(sandbox: Path) -> st.SearchStrategy[Any]:
    pools: dict[str, list[Any]] = {
        "postgresql": [[{"name": "appdb", "host": "127.0.0.1", "port": 1, "exclude_tables": "audit"}],
                       [{"name": "appdb", "host": "127.0.0.1", "port": 1, "connect_timeout": 1}], "x", [5]],
        "sqlite": [[{"path": str(sandbox / "app.db")}], [{"path": 5}], [{}]],
        "redis": [[{"name": "cache", "host": "127.0.0.1", "port": 1}], [{"name": "cache", "port": "six"}]],
        "paths": [[{"name": "data", "path": str(sandbox / "data")}],
                  [{"name": "data", "path": str(sandbox / "data"), "exclude": "*.tmp"}],
                  [{"name": "data\n", "path": str(sandbox / "data")}],
                  [{"path": str(sandbox / "data"), "secret": "no"}]],
        "retention": [{"keep_days": NAN}, {"keep_count": True}, {"keep_count": 2}, "x", {"keep_days": -1}],
        "verify": [{"max_age_hours": NAN}, {"scratch_restore": "yes"}, {"max_age_hours": 1}, 5],
        "timeouts": [{"tool": 0}, {"tool": 5, "redis_bgsave": 1}, {"tool": NAN}, {"tool": "x"}],
        "offsite": [None, "x", {"bucket": ""}, 5],  # a valid bucket would reach out to S3: never generated
        "set": ["default", "x\n", 5, ""],
        "host": ["h", "h h", 5, ["x"]],
        "encryption": [{"key_file": str(sandbox / "nokey")}, {"key_file": 5}, "x"],
        "metrics_dir": [str(sandbox / "metrics"), 5],
        "unknown_key": [1],
    }
    roots = st.sampled_from([str(sandbox / "backups"), "", 5, ["x"], None, str(sandbox / "backups") + "\n"])
    return st.one_of(st.fixed_dictionaries({"backup_root": roots},
                                           optional={k: st.sampled_from(v) for k, v in pools.items()}),
                     st.sampled_from(["x", 5, [], None]))


def strategy(name: str, spec: dict[str, Any], sandbox: Path) -> st.SearchStrategy[Any]:
    """Values for one option: its type's hostile pool (or its name's), valid and invalid alike."""
    kind = spec.get("type", "str")
    by_name: dict[str, list[Any]] = {"url": URLS, "host": HOSTS, "unit": UNITS, "status": STATUS,
                                     "headers": HEADERS, "tcp": [TCP], "systemd_units": [UNITS[:4], UNITS[4:], "*"],
                                     "python": ["/usr/bin/python3", str(sandbox / "nopython"), "python", 5]}
    if name == "settings":
        return backup_settings(sandbox)
    if name == "tcp":
        return st.one_of(st.lists(st.sampled_from(TCP), max_size=2), st.sampled_from(["x", 5]))
    if name == "systemd_units":
        return st.one_of(st.lists(st.sampled_from(UNITS), max_size=2), st.sampled_from(["*", 5]))
    if name in by_name:
        return st.sampled_from(by_name[name])
    if "choices" in spec:
        return st.one_of(st.sampled_from(spec["choices"]), st.sampled_from(spec["choices"]),
                         st.sampled_from(["nope", "", 1]))
    if kind == "dict" and "options" in spec:  # not a number or a bool: see the module docstring
        return st.one_of(options(spec["options"], sandbox), st.sampled_from(["x", [], None]))
    if kind == "list":
        element = {"type": spec.get("elements", "str"), **({"options": spec["options"]} if "options" in spec else {})}
        return st.one_of(st.lists(strategy(name, element, sandbox), max_size=2), st.sampled_from(["a", "a,b", 5]))
    if kind == "path":
        return st.sampled_from(paths(sandbox))
    if name in DURATIONS and kind == "int":  # ansible-core's own int check ends in a traceback for an infinity
        return mixed([1, 2], [v for v in NUMBERS if not (isinstance(v, float) and math.isinf(v))])
    if name in DURATIONS or kind == "float":
        return mixed(SECONDS, NUMBERS)
    if kind == "int":
        return mixed([1, 2, 3], INTS)
    if kind == "bool":
        return mixed([True, False], ["yes", 0])
    if kind == "dict":
        return st.one_of(st.dictionaries(st.sampled_from(["data", "logs", "../x", "", "k"]),
                                         st.sampled_from(["data", "../../etc", "", 5, None]), max_size=2),
                         st.sampled_from(["x", 5, []]))
    if kind == "raw":
        return mixed(["0640", *VALID_TEXT], [*TEXT, *NUMBERS, 416, 0o755, True])
    return mixed(VALID_TEXT, [*TEXT, 5, 2.5, True])


def mixed(valid: list[Any], hostile: list[Any]) -> st.SearchStrategy[Any]:
    """Valid values and hostile ones of the right type as often, a value of the wrong type more rarely."""
    return st.one_of(st.sampled_from(valid), st.sampled_from(hostile), st.sampled_from(hostile),
                     st.sampled_from([*WRONG, None]))


def options(spec: dict[str, dict[str, Any]], sandbox: Path) -> st.SearchStrategy[dict[str, Any]]:
    """The required options (and ALWAYS) every time, up to MOST_OPTIONS others."""
    strategies = {k: strategy(k, v, sandbox) for k, v in spec.items()}
    always = {k: s for k, s in strategies.items() if k in ALWAYS or spec[k].get("required")}
    others = sorted(set(strategies) - set(always))
    return st.tuples(st.fixed_dictionaries(always), st.lists(st.sampled_from(others), max_size=MOST_OPTIONS,
                                                             unique=True) if others else st.just([])
                     ).flatmap(lambda picked: st.fixed_dictionaries(
                         {**{k: st.just(v) for k, v in picked[0].items()},
                          **{k: strategies[k] for k in picked[1]}}))


@pytest.fixture
def sandbox(tmp_path: Path) -> Path:
    root = tmp_path / "sandbox"
    (root / "tiny").mkdir(parents=True)
    (root / "tiny2").mkdir()
    (root / "link").symlink_to(root / "tiny2", target_is_directory=True)
    (root / "afile").write_text("a file where a directory is expected\n")
    (root / "data").mkdir()
    (root / "data" / "a.txt").write_text("a")
    return root


@pytest.fixture
def canary(tmp_path: Path) -> Callable[[], None]:
    """A directory beside the sandbox that no generated value names: it must stay as it is."""
    (tmp_path / "canary").mkdir()
    (tmp_path / "canary" / "precious").write_text("keep")

    def check() -> None:
        assert sorted(os.listdir(tmp_path / "canary")) == ["precious"]
        assert (tmp_path / "canary" / "precious").read_text() == "keep"

    return check


MODULES = [app_files, app_release, app_deploy, app_health, backup_run, backup_verify, os_packages]


@pytest.mark.parametrize("module", MODULES, ids=[m.__name__ for m in MODULES])
def test_any_arguments_end_in_a_result_or_a_clean_failure(module: Any, sandbox: Path, canary: Callable[[], None],
                                                          fake_systemd: Path, run_module: Any) -> None:
    spec = module.argument_spec() if hasattr(module, "argument_spec") else {}

    @settings(max_examples=100, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(options(spec, sandbox))
    def run(args: dict[str, Any]) -> None:
        with time_limit(EXAMPLE_SECONDS):
            result = run_module(module, args)  # an exception out of main() fails here, with the arguments
        assert result["_rc"] in (0, 1), result
        if result["_rc"] == 1:
            assert isinstance(result.get("msg"), str) and result["msg"], result
            assert "internal error" not in result["msg"] and "exception" not in result, result
        assert "Traceback" not in result["_raw"], result
        event("done" if result["_rc"] == 0 else "refused by Ansible's argument spec"
              if ANSIBLE_REFUSAL.search(result["msg"]) else "refused or failed by the module, with its message")

    run()
    canary()
