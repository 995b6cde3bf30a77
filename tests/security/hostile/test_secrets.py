"""Secrets stay secret (issue 20): a probe's credentials never follow a redirect to another origin,
``tradeops-health`` takes tokens from a file or the environment and refuses them in argv, and the
throw-away redis-server that loads a production RDB copy listens on no TCP port and wants a password
that is in no command line."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from ansible.module_utils import tradeops_backup as tb
from ansible.module_utils import tradeops_health as th
from ansible.module_utils import tradeops_probes as probes
from plugin_testlib import start_http_server

TOKEN = "Bearer s3cret-token"  # pragma: allowlist secret


@pytest.fixture
def two_origins():
    here, there = start_http_server(), start_http_server()  # two ports: two origins
    yield here, there
    here.stop()
    there.stop()


def sent(server, path: str) -> list[dict[str, str]]:
    return [headers for got, headers in server.server.requests if got == path]


def test_credentials_follow_a_redirect_on_the_same_origin_only(two_origins):
    here, there = two_origins
    here.route("/same", status=302, headers={"Location": here.url("/landing")})
    here.route("/landing", body="ok")
    here.route("/away", status=302, headers={"Location": there.url("/landing")})
    there.route("/landing", body="ok")
    headers = {"Authorization": TOKEN, "X-Api-Key": "k3y"}  # pragma: allowlist secret

    assert probes.check_http(here.url("/same"), headers=headers).status == probes.HEALTHY
    assert sent(here, "/landing")[0].get("Authorization") == TOKEN  # same origin: still authorised

    assert probes.check_http(here.url("/away"), headers=headers).status == probes.HEALTHY
    landed = sent(there, "/landing")[0]
    assert "Authorization" not in landed and "X-Api-Key" not in landed, landed


def test_no_redirect_followed_when_told_so(two_origins):
    here, there = two_origins
    here.route("/away", status=302, headers={"Location": there.url("/landing")})
    result = probes.check_http(here.url("/away"), headers={"Authorization": TOKEN}, follow_redirects=False, status=302)
    assert result.status == probes.HEALTHY and sent(there, "/landing") == []


@pytest.mark.parametrize("name", ["Authorization", "cookie", "X-Api-Key", "X-Auth-Token", "X-Secret"])
def test_cli_refuses_a_credential_in_argv(name, capsys):
    code = th.main_cli(["--url", "http://127.0.0.1:9/", "--header", f"{name}: v"])
    err = capsys.readouterr()
    assert code == 3
    assert "--header-file" in err.out + err.err and "--header-env" in err.out + err.err


def test_cli_takes_tokens_from_a_private_file_or_the_environment(tmp_path, monkeypatch, capsys):
    server = start_http_server()
    try:
        url = server.route("/private", require_header=("Authorization", TOKEN))
        token_file = tmp_path / "token"
        token_file.write_text(f"# the probe's token\nAuthorization: {TOKEN}\n")
        token_file.chmod(0o644)
        assert th.main_cli(["--url", url, "--header-file", str(token_file)]) == 3
        assert "chmod 600" in "".join(capsys.readouterr())
        token_file.chmod(0o600)
        assert th.main_cli(["--url", url, "--header-file", str(token_file)]) == 0
        monkeypatch.setenv("HEALTH_TOKEN", TOKEN)
        assert th.main_cli(["--url", url, "--header-env", "Authorization=HEALTH_TOKEN"]) == 0
        monkeypatch.delenv("HEALTH_TOKEN")
        assert th.main_cli(["--url", url, "--header-env", "Authorization=HEALTH_TOKEN"]) == 3
        assert "HEALTH_TOKEN is not set" in "".join(capsys.readouterr())
        assert th.main_cli(["--url", url, "--header", "X-Request-Source: cron"]) == 2  # plain header: allowed
    finally:
        server.stop()
    assert TOKEN not in "".join(capsys.readouterr())


def _child_redis() -> int | None:
    """PID of a redis-server that this process started."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat_fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if int(stat_fields[1]) == os.getpid() and b"redis-server" in cmdline:
            return int(entry.name)
    return None


def make_rdb(directory: Path, keys: int) -> Path:
    """A real RDB with ``keys`` keys, written by a redis-server on a Unix socket."""
    sock = directory / "make.sock"
    proc = subprocess.Popen(
        [
            tb.shutil.which("redis-server"),
            "--port",
            "0",
            "--unixsocket",
            str(sock),
            "--dir",
            str(directory),
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(500):
            if sock.exists():
                break
            time.sleep(0.01)
        with tb.Resp("", 0, unix_socket=str(sock)) as r:
            for n in range(keys):
                r.call("SET", f"k{n}", n)
            r.call("SAVE")
            with contextlib.suppress(tb.BackupError, OSError):
                r.call("SHUTDOWN", "NOSAVE")
    finally:
        if proc.poll() is None:  # SHUTDOWN never sent (a failure above): never leave the server running
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
            proc.kill()
            proc.wait()
    return directory / "dump.rdb"


def test_scratch_redis_has_no_tcp_port_and_a_password_in_no_argv(tmp_path, monkeypatch):
    if tb.shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    rdb = make_rdb(tmp_path, 2)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    seen: dict[str, Any] = {}
    counts = tb.keyspace_counts

    def spy(info: dict[str, str]) -> dict[str, int]:  # runs while the scratch server holds the data
        pid = _child_redis()
        assert pid is not None
        seen["argv"] = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")  # what ps shows every user
        conf = next(scratch.glob("redis-*/redis.conf"))
        text = conf.read_text()
        seen["conf_mode"] = conf.stat().st_mode & 0o777
        seen["password"] = re.search(r"^requirepass (\S+)$", text, re.M).group(1)
        seen["port"] = re.search(r"^port (\d+)$", text, re.M).group(1)
        seen["sock"] = sock = re.search(r"^unixsocket (\S+)$", text, re.M).group(1)
        with pytest.raises(tb.RedisReplyError, match="NOAUTH"), tb.Resp("", 0, unix_socket=sock) as anonymous:
            anonymous.call("DBSIZE")
        with tb.Resp("", 0, password=seen["password"], unix_socket=sock) as admin:
            seen["live_port"] = admin.call("CONFIG", "GET", "port")
        seen["sock_dir_mode"] = Path(sock).parent.stat().st_mode & 0o777
        return counts(info)

    monkeypatch.setattr(tb, "keyspace_counts", spy)
    assert sum(tb.load_rdb_keys(rdb, scratch, timeout=60).values()) == 2
    assert seen["port"] == "0" and seen["live_port"] == ["port", "0"]
    assert seen["conf_mode"] == 0o600 and seen["sock_dir_mode"] == 0o700
    assert all(seen["password"].encode() not in arg for arg in seen["argv"])
    assert not Path(seen["sock"]).parent.exists()  # the socket's directory goes with the server


@pytest.mark.parametrize("plant, words", [
    ("fifo", "is not a regular file"),  # a blocking open would hang the backup for good
    ("group-readable", "readable by group or others (mode 0640)"),
    ("directory", "is not a regular file"),
    ("empty", "is empty"),
    ("missing", "cannot read"),
])
def test_backup_secret_files_are_read_by_the_one_private_reader(tmp_path, plant, words):
    """The backups read their passwords and keys as the health probes read tokens (tradeops_probes.read_private_file):
    mode judged on the opened descriptor, no FIFO, no directory. Each plant fails at once, naming the file."""
    path = tmp_path / "secret"
    if plant == "fifo":
        os.mkfifo(path, 0o600)
    elif plant == "directory":
        path.mkdir(mode=0o700)
    elif plant != "missing":
        path.write_text("" if plant == "empty" else "pw\n")
        path.chmod(0o640 if plant == "group-readable" else 0o600)
    t0 = time.monotonic()
    with pytest.raises(tb.ConfigError, match=re.escape(words)) as err:
        tb._read_secret_file(str(path), "postgresql refapp password_file")
    assert str(path) in str(err.value) and "postgresql refapp password_file" in str(err.value)
    assert time.monotonic() - t0 < 5
    path2 = tmp_path / "good"
    path2.write_text("pw\n")
    path2.chmod(0o600)
    assert tb._read_secret_file(str(path2), "x") == "pw"
