"""Parse the database and Redis URLs of the configuration, and redact them for output."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, quote, unquote, urlsplit

REDACTED = "***"


class UrlError(ValueError):
    """The URL is not one this application understands (the message holds no secret)."""


@dataclass(frozen=True)
class SqliteTarget:
    path: str

    @property
    def scheme(self) -> str:
        return "sqlite"


@dataclass(frozen=True)
class PostgresTarget:
    host: str
    port: int
    user: str
    password: str | None = field(repr=False)
    database: str
    options: dict[str, str] = field(default_factory=dict)

    @property
    def scheme(self) -> str:
        return "postgresql"


@dataclass(frozen=True)
class RedisTarget:
    host: str
    port: int
    username: str | None
    password: str | None = field(repr=False)
    db: int = 0


DatabaseTarget = SqliteTarget | PostgresTarget


def _split_netloc(netloc: str) -> tuple[str | None, str | None, str]:
    """Return (user, password, hostport) with user and password percent-decoded."""
    userinfo, at, hostport = netloc.rpartition("@")
    if not at:
        return None, None, netloc
    user, colon, password = userinfo.partition(":")
    return unquote(user), (unquote(password) if colon else None), hostport


def _split_hostport(hostport: str, default_port: int, what: str) -> tuple[str, int]:
    if hostport.startswith("["):  # [IPv6]:port
        host, _, rest = hostport[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port_text = hostport.rpartition(":") if ":" in hostport else (hostport, "", "")
    host = unquote(host)
    if not port_text:
        return host or "localhost", default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise UrlError(f"{what} URL has an invalid port")
    return host or "localhost", int(port_text)


def parse_database_url(url: str) -> DatabaseTarget:
    """``sqlite:////abs/path.db`` or ``postgresql://user:password@host:port/dbname``."""
    url = url.strip()
    if url.startswith("sqlite:"):
        rest = url[len("sqlite:") :]
        if not rest.startswith("///") or not rest[3:].startswith("/"):
            raise UrlError("sqlite URL must name an absolute path: sqlite:////abs/path.db")
        return SqliteTarget(path=unquote(rest[3:]))
    scheme, sep, _ = url.partition("://")
    if not sep or scheme not in ("postgresql", "postgres"):
        raise UrlError("database URL must start with sqlite:/// or postgresql://")
    parts = urlsplit(url)
    user, password, hostport = _split_netloc(parts.netloc)
    if not user:
        raise UrlError("postgresql URL needs a user: postgresql://user:password@host:port/dbname")
    host, port = _split_hostport(hostport, 5432, "postgresql")
    database = unquote(parts.path.lstrip("/")) or user
    return PostgresTarget(host, port, user, password, database, dict(parse_qsl(parts.query)))


def parse_redis_url(url: str) -> RedisTarget:
    """``redis://[user]:password@host:port/db``."""
    url = url.strip()
    if not url.startswith("redis://"):
        raise UrlError("redis URL must start with redis://")
    parts = urlsplit(url)
    user, password, hostport = _split_netloc(parts.netloc)
    host, port = _split_hostport(hostport, 6379, "redis")
    db_text = parts.path.lstrip("/") or "0"
    if not db_text.isdigit():
        raise UrlError("redis URL database must be a number: redis://:password@host:6379/0")
    return RedisTarget(host, port, user or None, password, int(db_text))


_URL_CREDENTIALS = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:@/\s]*):(?P<pw>[^\s/]*)@")


def redact_url(url: str | None) -> str | None:
    """Replace the password of a URL by ``***`` (``postgresql://user:***@host:5432/db``)."""
    if url is None:
        return None
    return _URL_CREDENTIALS.sub(lambda m: f"{m['scheme']}{m['user']}:{REDACTED}@", url)


def scrub(text: str, *secrets: str | None) -> str:
    """Remove every given secret (raw and percent-encoded) and URL password from ``text``."""
    text = redact_url(text) or ""
    for secret in secrets:
        if secret:
            for form in {secret, quote(secret, safe="")}:
                text = text.replace(form, REDACTED)
    return text
