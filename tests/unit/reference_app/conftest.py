"""Fixtures for the reference app tests: the app as a real subprocess with its dependencies
(psycopg, redis-py) installed as a host installs them, and throwaway PostgreSQL 15 (with TLS
from a CA of its own) and Redis servers (real programs, no mocks).

PostgreSQL and Redis must be installed (``apt-get install postgresql redis-server``);
when they are missing the fixtures fail, they do not skip. The Debian-packaged services
are never used or started: each test session runs its own servers on random ports.
"""

from __future__ import annotations

import fcntl
import hashlib
import http.client
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import pytest

REPO = Path(__file__).resolve().parents[3]
SOURCE = REPO / "files" / "reference_app"
BUILD_TOOL = REPO / "scripts" / "build_refapp.py"
PYTHON = sys.executable
INSTALL_HINT = "apt-get install postgresql redis-server"

DEPS_CACHE = REPO / ".cache" / "refapp-deps"


def refapp_dependencies() -> tuple[Path, Path]:
    """(layer, wheels): the app's declared dependencies for this Python, as a host gets them.

    The wheels come from scripts/build_wheelhouse.py's fetch_dependencies (the binary wheels a
    release ships); ``pip install --no-index --target`` puts them into a directory, as the hosts'
    dependency layer (plugins/module_utils/tradeops_release.py). Built once per set of
    requirements and Python, under .cache/refapp-deps/, by one test process at a time.
    """
    requires = tomllib.loads((SOURCE / "pyproject.toml").read_text())["project"]["dependencies"]
    python = f"{sys.version_info[0]}.{sys.version_info[1]}"
    key = hashlib.sha256(json.dumps([requires, python, sys.implementation.cache_tag]).encode()).hexdigest()[:16]
    final = DEPS_CACHE / key
    if (final / "layer").is_dir():
        return final / "layer", final / "wheels"
    DEPS_CACHE.mkdir(parents=True, exist_ok=True)
    with (DEPS_CACHE / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (final / "layer").is_dir():
            sys.path.insert(0, str(REPO / "scripts"))
            from build_wheelhouse import fetch_dependencies

            work = Path(tempfile.mkdtemp(prefix=".building-", dir=DEPS_CACHE))
            try:
                (work / "wheels").mkdir()
                fetch_dependencies(requires, python, work / "wheels")
                subprocess.run(
                    [PYTHON, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-index",
                     "--find-links", str(work / "wheels"), "--target", str(work / "layer"), *requires],
                    check=True, capture_output=True, timeout=300,
                )  # fmt: skip
                work.rename(final)
            finally:
                shutil.rmtree(work, ignore_errors=True)
    return final / "layer", final / "wheels"


DEPS_LAYER, DEPS_WHEELS = refapp_dependencies()
# The tests also use the app's modules in-process (pure functions and the clients).
for _path in (DEPS_LAYER, SOURCE):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))


def pythonpath(first: Path | str = SOURCE) -> str:
    """PYTHONPATH of an app subprocess: the app (a source tree or a wheel), then its dependencies."""
    return os.pathsep.join([str(first), str(DEPS_LAYER)])


# -- helpers -----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")


def http_get(port: int, path: str, headers: dict[str, str] | None = None, method: str = "GET",
             timeout: float = 10.0) -> Response:  # fmt: skip
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        return Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
    finally:
        conn.close()


def base_env(**overrides: str) -> dict[str, str]:
    """The environment of an app subprocess: no inherited APP_*, the source tree importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("APP_")}
    env.update(PYTHONPATH=pythonpath(), PYTHONUNBUFFERED="1", PYTHONDONTWRITEBYTECODE="1")
    env.update(overrides)
    return env


def run_refapp(*args: str, env: dict[str, str] | None = None, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(
        [PYTHON, "-m", "refapp", *args], env=env or base_env(), capture_output=True, text=True,
        timeout=timeout, check=False,
    )  # fmt: skip


@dataclass
class AppProcess:
    """A running ``refapp serve`` subprocess; stderr goes to a file to be read later."""

    proc: subprocess.Popen
    port: int
    log_path: Path

    @property
    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def get(self, path: str, **kwargs: object) -> Response:
        return http_get(self.port, path, **kwargs)  # type: ignore[arg-type]

    def wait_listening(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"refapp exited with {self.proc.returncode}:\n{self.log}")
            if port_open(self.port):
                return
            time.sleep(0.02)
        raise AssertionError(f"refapp did not listen on {self.port} within {timeout}s:\n{self.log}")

    def signal(self, signum: int = signal.SIGTERM) -> None:
        self.proc.send_signal(signum)

    def wait(self, timeout: float = 10.0) -> int:
        return self.proc.wait(timeout=timeout)


@pytest.fixture
def start_app(tmp_path: Path) -> Iterator:
    """Factory: ``start_app(env={...}, args=[...], wait=True) -> AppProcess``."""
    started: list[AppProcess] = []

    def start(env: dict[str, str] | None = None, args: list[str] | None = None, wait: bool = True) -> AppProcess:
        port = free_port()
        environment = base_env(**{"APP_PORT": str(port), "APP_SHUTDOWN_GRACE": "10", **(env or {})})
        log_path = tmp_path / f"refapp-{port}.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [PYTHON, "-m", "refapp", "serve", *(args or [])],
                env=environment, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path,
            )  # fmt: skip
        app = AppProcess(proc, port, log_path)
        started.append(app)
        if wait:
            app.wait_listening()
        return app

    yield start
    for app in started:
        if app.proc.poll() is None:
            app.proc.kill()
            app.proc.wait(timeout=10)


def migrated_sqlite(path: Path) -> str:
    """Create and migrate an SQLite database in-process; return its URL."""
    from refapp.db import open_database
    from refapp.schema import migrate

    url = f"sqlite:///{path}"
    with open_database(url, create=True) as db:
        migrate(db)
    return url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return migrated_sqlite(tmp_path / "app.db")


# -- PostgreSQL --------------------------------------------------------------------------


def _pg_bindir() -> Path:
    candidates = [Path("/usr/lib/postgresql/15/bin")]
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    for path in candidates:
        if (path / "initdb").is_file() and (path / "pg_ctl").is_file() and (path / "postgres").is_file():
            return path
    pytest.fail(f"PostgreSQL server binaries (initdb, pg_ctl) not found under /usr/lib/postgresql: {INSTALL_HINT}")


def _run_as_user() -> tuple[list[str], pwd.struct_passwd | None]:
    """PostgreSQL refuses to run as root: as root, run it as 'postgres' (or 'nobody')."""
    if os.geteuid() != 0:
        return [], None
    for name in ("postgres", "nobody"):
        try:
            user = pwd.getpwnam(name)
        except KeyError:
            continue
        if not shutil.which("runuser"):
            pytest.fail("running as root needs runuser (util-linux) to start PostgreSQL as another user")
        return ["runuser", "-u", name, "--"], user
    pytest.fail("running as root and neither a 'postgres' nor a 'nobody' user exists to run PostgreSQL")


PG_SUPERUSER_PASSWORD = "super-secret-Pw1"
PG_APP_USER = "refapp_app"
PG_APP_PASSWORD = "s3cr3t p@ss/w:rd%&?"  # needs URL-encoding
PG_UNICODE_USER = "refapp_unicode"
PG_UNICODE_PASSWORD = "pa\u0308ssw\u00f6rd"  # decomposed ä: SASLprep normalises it
PG_MD5_USER = "refapp_md5"
PG_MD5_PASSWORD = "md5-Pw'with\\quote"
PG_CLEAR_USER = "refapp_clear"
PG_CLEAR_PASSWORD = "clear-Pw"
PG_TRUST_USER = "refapp_trust"


def write_tls_files(directory: Path, names: tuple[str, ...] = ("localhost",)) -> tuple[Path, Path, Path]:
    """A CA of its own and a server certificate it signed for ``names`` (DNS names only):
    (ca.crt, server.crt, server.key), the key mode 0600."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)

    def certificate(subject: str, key, issuer: str, issuer_key, ca: bool) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.DNSName(name) for name in names]), critical=False
            ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        else:
            builder = builder.add_extension(
                x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                              key_encipherment=False, data_encipherment=False, key_agreement=False,
                              encipher_only=False, decipher_only=False),
                critical=True,
            )  # fmt: skip
        return builder.sign(issuer_key, hashes.SHA256())

    ca_key, server_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = f"refapp test CA {os.urandom(4).hex()}"
    ca_cert = certificate(ca_name, ca_key, ca_name, ca_key, ca=True)
    server_cert = certificate(names[0], server_key, ca_name, ca_key, ca=False)
    paths = directory / "ca.crt", directory / "server.crt", directory / "server.key"
    paths[0].write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    paths[2].touch(mode=0o600)
    paths[2].write_bytes(server_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                  serialization.NoEncryption()))  # fmt: skip
    return paths


@dataclass
class PgServer:
    host: str
    port: int
    socket_dir: Path
    bindir: Path
    prefix: list[str]
    ca_file: Path  # the CA that signed the server's certificate (for localhost)
    dbs: list[str] = field(default_factory=list)

    def psql(self, sql: str, database: str = "postgres") -> str:
        proc = subprocess.run(
            [*self.prefix, str(self.bindir / "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
             "-h", str(self.socket_dir), "-p", str(self.port), "-U", "postgres", "-d", database, "-c", sql],
            capture_output=True, text=True, check=False, cwd=self.socket_dir, timeout=30,
        )  # fmt: skip
        if proc.returncode != 0:
            raise AssertionError(f"psql failed: {proc.stderr}")
        return proc.stdout.strip()

    def create_database(self, name: str, owner: str = PG_APP_USER) -> str:
        self.psql(f'CREATE DATABASE "{name}" OWNER "{owner}"')
        return name

    def url(self, user: str = PG_APP_USER, password: str | None = PG_APP_PASSWORD, database: str = "appdb",
            host: str | None = None, **options: str) -> str:  # fmt: skip
        auth = quote(user, safe="") + (f":{quote(password, safe='')}" if password is not None else "")
        query = "&".join(f"{key}={quote(value, safe='/')}" for key, value in options.items())
        return f"postgresql://{auth}@{host or self.host}:{self.port}/{database}" + (f"?{query}" if query else "")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PgServer]:
    bindir = _pg_bindir()
    prefix, user = _run_as_user()
    base = Path(tempfile.mkdtemp(prefix="refapp-pg-"))
    base.chmod(0o755)
    if user is not None:
        os.chown(base, user.pw_uid, user.pw_gid)
    pwfile = base / "superuser.pw"
    pwfile.write_text(PG_SUPERUSER_PASSWORD + "\n")
    if user is not None:
        os.chown(pwfile, user.pw_uid, user.pw_gid)
    data = base / "data"
    port = free_port()
    ca_file, cert_file, key_file = write_tls_files(base)
    if user is not None:
        os.chown(key_file, user.pw_uid, user.pw_gid)

    def run(*command: str) -> None:
        proc = subprocess.run([*prefix, *command], capture_output=True, text=True, cwd=base, timeout=60, check=False)
        if proc.returncode != 0:
            log = (base / "server.log").read_text() if (base / "server.log").exists() else ""
            pytest.fail(f"{' '.join(command)} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}\n{log}")

    run(str(bindir / "initdb"), "-D", str(data), "-U", "postgres", f"--pwfile={pwfile}", "-E", "UTF8",
        "--locale=C", "--auth-local=trust", "--auth-host=scram-sha-256", "--no-sync", "--no-instructions")  # fmt: skip
    (data / "pg_hba.conf").write_text(
        "local all all trust\n"
        f"host all {PG_MD5_USER} 127.0.0.1/32 md5\n"
        f"host all {PG_CLEAR_USER} 127.0.0.1/32 password\n"
        f"host all {PG_TRUST_USER} 127.0.0.1/32 trust\n"
        "host all all 127.0.0.1/32 scram-sha-256\n"
    )
    options = (
        f"-c port={port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={base} "
        "-c password_encryption=scram-sha-256 -c fsync=off -c synchronous_commit=off -c full_page_writes=off "
        f"-c ssl=on -c ssl_cert_file={cert_file} -c ssl_key_file={key_file}"
    )
    run(
        str(bindir / "pg_ctl"),
        "-D",
        str(data),
        "-l",
        str(base / "server.log"),
        "-w",
        "-t",
        "30",
        "-o",
        options,
        "start",
    )
    server = PgServer("127.0.0.1", port, base, bindir, prefix, ca_file)
    try:
        server.psql(f"CREATE ROLE {PG_APP_USER} LOGIN PASSWORD '{PG_APP_PASSWORD}'")
        server.psql(f"CREATE ROLE {PG_UNICODE_USER} LOGIN PASSWORD '{PG_UNICODE_PASSWORD}'")
        server.psql(f"CREATE ROLE {PG_CLEAR_USER} LOGIN PASSWORD '{PG_CLEAR_PASSWORD}'")
        server.psql(f"CREATE ROLE {PG_TRUST_USER} LOGIN")
        md5_literal = PG_MD5_PASSWORD.replace("'", "''")
        server.psql(f"SET password_encryption = 'md5'; CREATE ROLE {PG_MD5_USER} LOGIN PASSWORD '{md5_literal}'")
        server.create_database("appdb")
        yield server
    finally:
        subprocess.run([*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                       capture_output=True, cwd=base, timeout=60, check=False)  # fmt: skip
        shutil.rmtree(base, ignore_errors=True)


# -- Redis -------------------------------------------------------------------------------

REDIS_PASSWORD = "redis-Pw:with@chars"
REDIS_ACL_USER = "refapp"
REDIS_ACL_PASSWORD = "acl-user-Pw"


@dataclass
class RedisServer:
    host: str
    port: int
    password: str

    def url(self, password: str | None = None, user: str = "", db: int = 0) -> str:
        secret = quote(self.password if password is None else password, safe="")
        return f"redis://{quote(user, safe='')}:{secret}@{self.host}:{self.port}/{db}"


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    binary = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
    )
    if binary is None:
        pytest.fail(f"redis-server not found: {INSTALL_HINT}")
    base = Path(tempfile.mkdtemp(prefix="refapp-redis-"))
    port = free_port()
    log = (base / "redis.log").open("wb")
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--requirepass", REDIS_PASSWORD,
         "--save", "", "--appendonly", "no", "--daemonize", "no", "--dir", str(base),
         "--user", REDIS_ACL_USER, "on", f">{REDIS_ACL_PASSWORD}", "~*", "&*", "+@all"],
        stdout=log, stderr=subprocess.STDOUT, cwd=base,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while not port_open(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"redis-server did not start:\n{(base / 'redis.log').read_text()}")
            time.sleep(0.02)
        yield RedisServer("127.0.0.1", port, REDIS_PASSWORD)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        shutil.rmtree(base, ignore_errors=True)
