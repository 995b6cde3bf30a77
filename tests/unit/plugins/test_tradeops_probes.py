"""module_utils/tradeops_probes.py: the probes of a service's health contract against real things (an HTTP
server on 127.0.0.1, real processes, real accounts), and the tradeops-health options that reach them."""

from __future__ import annotations

import json
import os
import pwd
import sys
import time
from pathlib import Path

import pytest
from ansible.module_utils import tradeops_health as th
from ansible.module_utils import tradeops_probes as tp
from ansible.module_utils.tradeops_probes import HEALTHY, UNHEALTHY, CheckError

# -- HTTP status ranges and response headers ---------------------------------------------


@pytest.mark.parametrize(("value", "ranges"), [
    (200, [(200, 200)]), ("204", [(204, 204)]), ("200-299", [(200, 299)]), ([200, "301-302"], [(200, 200), (301, 302)]),
    (["200 - 204"], [(200, 204)]),
])  # fmt: skip
def test_parse_status(value, ranges):
    assert tp.parse_status(value) == ranges


@pytest.mark.parametrize("value", ["abc", 99, 600, "300-200", True, [], [200, None], "2xx", 200.5])
def test_parse_status_refuses_what_is_not_a_status(value):
    with pytest.raises(CheckError, match="status"):
        tp.parse_status(value)


def test_http_status_range(http_server):
    created = http_server.route("/created", status=201, body="{}")
    missing = http_server.route("/gone", status=404, body="no")
    assert tp.check_http(created, status="200-299").status == HEALTHY
    assert tp.check_http(created).status == UNHEALTHY  # 200 only, by default
    bad = tp.check_http(missing, status=["200-299", 304])
    assert bad.status == UNHEALTHY and bad.detail.startswith("expected HTTP 200-299/304, got 404")


def test_http_response_header(http_server):
    url = http_server.route("/v", body="{}", headers={"X-Version": " 1.2.0 "})
    present = tp.check_http(url, header="x-version")
    assert present.status == HEALTHY and present.data["header_value"].strip() == "1.2.0"
    assert tp.check_http(url, header="X-Version", header_value="1.2.0").status == HEALTHY
    wrong = tp.check_http(url, header="X-Version", header_value="1.3.0")
    assert wrong.status == UNHEALTHY and "expected '1.3.0'" in wrong.detail
    absent = tp.check_http(url, header="X-Build")
    assert absent.status == UNHEALTHY and "no header 'X-Build'" in absent.detail
    with pytest.raises(CheckError, match="not an HTTP header name"):
        tp.check_http(url, header="X Version: 1")


def test_http_header_and_json_field_both_checked(http_server):
    url = http_server.route("/both", body=json.dumps({"build": {"version": "2.0"}}), headers={"X-Version": "2.0"})
    assert tp.check_http(url, json_field="build.version", json_value="2.0", header="X-Version",
                         header_value="2.0").status == HEALTHY
    assert tp.check_http(url, json_field="build.version", json_value="2.0", header="X-Version",
                         header_value="1.0").status == UNHEALTHY


# -- commands ----------------------------------------------------------------------------


def py(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_command_exit_code_and_expected_output():
    assert tp.check_command(py("print('v 1.4.2')"), expect_output="1.4.2").status == HEALTHY
    failed = tp.check_command(py("import sys; print('db down'); sys.exit(3)"))
    assert failed.status == UNHEALTHY and failed.data["rc"] == 3 and "exited 3: db down" in failed.detail
    other = tp.check_command(py("print('v 1.4.1')"), expect_output="1.4.2", name="readiness")
    assert other.status == UNHEALTHY and other.name == "readiness" and "does not contain '1.4.2'" in other.detail
    missing = tp.check_command(["no-such-program-here"], env={"PATH": "/nonexistent"})
    assert missing.status == UNHEALTHY and "no such program (PATH /nonexistent)" in missing.detail
    assert missing.name == "command:no-such-program-here"


def test_a_hanging_command_and_its_children_are_killed_at_the_timeout(tmp_path):
    marker = tmp_path / "child.pid"
    code = (f"import subprocess, time; p = subprocess.Popen(['sleep', '30']); open({str(marker)!r}, 'w')"
            ".write(str(p.pid)); print('started', flush=True); time.sleep(30)")
    started = time.monotonic()
    result = tp.check_command(py(code), timeout=1.0)
    assert time.monotonic() - started < 5
    assert result.status == UNHEALTHY and "did not finish within 1 s (killed): started" in result.detail
    child = int(marker.read_text())
    time.sleep(0.2)
    assert not Path(f"/proc/{child}").exists() or "Z" in Path(f"/proc/{child}/stat").read_text().split()[2]


def test_command_output_is_truncated_and_secrets_masked():
    secret = "s3cr3t-token-value"  # pragma: allowlist secret (a made-up value)
    result = tp.check_command(py(f"print('x' * 5000); print('token={secret} short=abc')"), secrets=[secret, "abc"])
    assert len(result.data["output"]) == tp.OUTPUT_LIMIT
    assert secret not in json.dumps(result.as_dict()) and "token=***" in result.data["output"]
    assert "short=abc" in result.data["output"]  # values under MASK_MIN_LENGTH are not masked
    assert "argv" not in result.data and "env" not in result.data


def test_command_argv_must_be_a_list_of_strings():
    for argv, message in [("myapp --version", "non-empty list"), ([], "non-empty list"),
                          (["myapp", 5], r"argv\[1\] is 5 \(int\)"), ([" "], r"argv\[0\] is empty")]:
        with pytest.raises(CheckError, match=message):
            tp.check_command(argv)


def test_env_file_as_systemd_reads_it(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text("# comment\n; other\n\nA=1\n B = two words \nC=\"quoted\"\nD='single'\nnot a line\nE=\n")
    assert tp.read_env_file(str(env_file)) == {"A": "1", "B": "two words", "C": "quoted", "D": "single", "E": ""}


@pytest.mark.skipif(os.geteuid() != 0, reason="the file must be owned by root or the probe's user")
def test_env_file_planted_by_the_app_user_is_refused(tmp_path):
    """The env file sits in a directory the app user owns: a link to a root-only file (symlink or
    hard link) or a file owned by someone else must never reach the probe's environment."""
    secret = tmp_path / "shadow"
    secret.write_text("ROOT_ONLY=hash\n")
    link = tmp_path / "symlink.env"
    link.symlink_to(secret)
    hard = tmp_path / "hard.env"
    os.link(secret, hard)
    other = tmp_path / "other.env"
    other.write_text("A=1\n")
    os.chown(other, pwd.getpwnam("nobody").pw_uid, -1)
    for path in (link, hard, other):
        with pytest.raises(OSError):
            tp.read_env_file(str(path))
    with pytest.raises(CheckError, match="env_file"):
        tp.release_command("/", env_file=str(link))
    assert tp.read_env_file(str(other), owners=(0, pwd.getpwnam("nobody").pw_uid)) == {"A": "1"}


def test_release_command_runs_from_the_release_with_its_venv_and_env_file(tmp_path):
    release = tmp_path / "releases" / "1.0-20260101T000000Z"
    (release / "venv" / "bin").mkdir(parents=True)
    tool = release / "venv" / "bin" / "mytool"
    tool.write_text("#!/bin/sh\necho \"cwd=$(pwd) token=$APP_TOKEN venv=$VIRTUAL_ENV\"\n")
    tool.chmod(0o755)
    env_file = tmp_path / ".env"
    env_file.write_text("APP_TOKEN=very-secret-token\nPATH=/usr/bin:/bin\n")
    context = tp.release_command(str(release), env_file=str(env_file))
    assert context["env"]["PATH"] == f"{release}/venv/bin:/usr/bin:/bin"
    result = tp.check_command(["mytool"], **context)
    assert result.status == HEALTHY, result.detail
    assert result.data["output"] == f"cwd={release} token=*** venv={release}/venv"
    with pytest.raises(CheckError, match=r"env_file .*role app writes it"):
        tp.release_command(str(release), env_file=str(tmp_path / "missing.env"))


@pytest.mark.skipif(os.geteuid() != 0, reason="switching user needs root (the module runs as root)")
def test_release_command_runs_as_the_user_with_its_own_groups_only(tmp_path):
    nobody = pwd.getpwnam("nobody")
    context = tp.release_command("/", user="nobody")
    assert context["user"] == nobody.pw_uid and 0 not in context["groups"]
    result = tp.check_command(["sh", "-c", "echo $(id -u) $(id -G) $HOME"], **context)
    uid, *groups, home = result.data["output"].split()
    assert int(uid) == nobody.pw_uid and "0" not in groups and home == nobody.pw_dir
    with pytest.raises(CheckError, match="does not exist"):
        tp.release_command("/", user="no-such-user-here")


# -- HealthSpec and tradeops-health ------------------------------------------------------


@pytest.mark.parametrize(("spec", "message"), [
    (th.HealthSpec(http=[{"url": "http://127.0.0.1:1/", "status": ["2xx"]}]), "status"),
    (th.HealthSpec(commands=[{"argv": "app --version"}]), "non-empty list"),
    (th.HealthSpec(commands=[{"argv": ["app"], "timeout": -1}]), "timeout must be > 0"),
    (th.HealthSpec(tcp=[{"port": 70000, "name": "liveness"}]), "tcp probe liveness: port 70000"),
])  # fmt: skip
def test_spec_validation(spec, message):
    with pytest.raises(CheckError, match=message):
        spec.validate()


def test_spec_runs_tcp_and_command_probes_with_their_names(http_server):
    spec = th.HealthSpec(tcp=[{"host": "127.0.0.1", "port": http_server.port, "name": "liveness"}],
                         commands=[{"argv": py("print('2.0')"), "name": "readiness", "expect_output": "2.0"}])
    report = th.evaluate(spec)
    assert report.status == HEALTHY
    assert [(c.name, c.kind) for c in report.checks] == [("liveness", "tcp"), ("readiness", "command")]


def test_cli_status_range_response_header_and_command(http_server, capsys):
    url = http_server.route("/healthz", status=204, body="", headers={"X-Version": "2.0.1"})
    assert th.main_cli(["--url", url, "--expect-status", "200-299", "--expect-header", "X-Version: 2.0.1"]) == 0
    assert th.main_cli(["--url", url, "--expect-header", "X-Version: 2.0.0"]) == 2  # 204 is not 200 either
    capsys.readouterr()
    assert th.main_cli(["--command", f"{sys.executable} -c 'print(\"2.0.1\")'", "--expect-output", "2.0.1",
                        "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    checks = [(c["kind"], c["status"], c["data"]["output"]) for c in report["checks"]]
    assert checks == [("command", "healthy", "2.0.1")]
    assert th.main_cli(["--command", "sh -c 'exit 4'"]) == 2
    assert th.main_cli(["--command", "unbalanced 'quote"]) == 3
    assert th.main_cli(["--url", url, "--expect-status", "2xx"]) == 3
