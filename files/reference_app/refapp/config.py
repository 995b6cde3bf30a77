"""Settings from the environment (APP_*), overridden by command-line flags."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from refapp.urls import DatabaseTarget, RedisTarget, UrlError, parse_database_url, parse_redis_url

DEFAULT_BIND = "127.0.0.1"
DEFAULT_PORT = 8000
DEFAULT_SERVICE = "refapp"
DEFAULT_SHUTDOWN_GRACE = 25.0
DEFAULT_CHECK_TIMEOUT = 2.0

#: Every variable the application reads, with a one-line description (shown by --help).
ENVIRONMENT = {
    "APP_DATABASE_URL": "sqlite:////abs/path.db or postgresql://user:password@host:port/dbname",
    "APP_REDIS_URL": "optional redis://[user]:password@host:port/db, checked by readiness when set",
    "APP_HEALTH_TOKEN": "bearer token required by /api/health/detailed",
    "APP_BIND": f"listen address (default {DEFAULT_BIND})",
    "APP_PORT": f"listen port (default {DEFAULT_PORT})",
    "APP_SERVICE": f"service name in responses, logs and metrics (default {DEFAULT_SERVICE})",
    "APP_SHUTDOWN_GRACE": f"seconds in-flight requests get on SIGTERM (default {DEFAULT_SHUTDOWN_GRACE:g})",
    "APP_CHECK_TIMEOUT": f"seconds each readiness check may take (default {DEFAULT_CHECK_TIMEOUT:g})",
    "APP_LOG_FORMAT": "plain (default) or json: the format of log lines on stderr",
}


class ConfigError(ValueError):
    """A setting is invalid; the message names the variable, never its secret value."""


@dataclass(frozen=True)
class Settings:
    database_url: str | None = field(default=None, repr=False)
    redis_url: str | None = field(default=None, repr=False)
    health_token: str | None = field(default=None, repr=False)
    bind: str = DEFAULT_BIND
    port: int = DEFAULT_PORT
    service: str = DEFAULT_SERVICE
    shutdown_grace: float = DEFAULT_SHUTDOWN_GRACE
    check_timeout: float = DEFAULT_CHECK_TIMEOUT
    log_format: str = "plain"

    @property
    def database(self) -> DatabaseTarget | None:
        return parse_database_url(self.database_url) if self.database_url else None

    @property
    def redis(self) -> RedisTarget | None:
        return parse_redis_url(self.redis_url) if self.redis_url else None

    def with_overrides(self, **overrides: object) -> Settings:
        """Return a copy with the given non-None values (command-line flags) applied."""
        changes = {key: value for key, value in overrides.items() if value is not None}
        settings = replace(self, **changes)  # type: ignore[arg-type]
        settings.validate()
        return settings

    def validate(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigError("APP_PORT / --port must be between 0 and 65535")
        if not self.service or any(ch.isspace() or ch == '"' for ch in self.service):
            raise ConfigError("APP_SERVICE / --service must be a non-empty name without spaces or quotes")
        if self.shutdown_grace < 0:
            raise ConfigError("APP_SHUTDOWN_GRACE must be >= 0")
        if self.check_timeout <= 0:
            raise ConfigError("APP_CHECK_TIMEOUT must be > 0")
        if self.log_format not in ("plain", "json"):
            raise ConfigError("APP_LOG_FORMAT must be plain or json")
        try:
            _ = self.database
        except UrlError as exc:
            raise ConfigError(f"APP_DATABASE_URL: {exc}") from None
        try:
            _ = self.redis
        except UrlError as exc:
            raise ConfigError(f"APP_REDIS_URL: {exc}") from None


def _number(env: Mapping[str, str], key: str, default: float, kind: type) -> float:
    raw = env.get(key, "").strip()
    if not raw:
        return default
    try:
        return kind(raw)
    except ValueError:
        raise ConfigError(f"{key} must be a number, got {raw!r}") from None


def settings_from_env(env: Mapping[str, str] | None = None) -> Settings:
    """Build and validate Settings from APP_* variables (empty values count as unset)."""
    env = os.environ if env is None else env

    def text(key: str) -> str | None:
        value = env.get(key, "").strip()
        return value or None

    settings = Settings(
        database_url=text("APP_DATABASE_URL"),
        redis_url=text("APP_REDIS_URL"),
        health_token=text("APP_HEALTH_TOKEN"),
        bind=text("APP_BIND") or DEFAULT_BIND,
        port=int(_number(env, "APP_PORT", DEFAULT_PORT, int)),
        service=text("APP_SERVICE") or DEFAULT_SERVICE,
        shutdown_grace=float(_number(env, "APP_SHUTDOWN_GRACE", DEFAULT_SHUTDOWN_GRACE, float)),
        check_timeout=float(_number(env, "APP_CHECK_TIMEOUT", DEFAULT_CHECK_TIMEOUT, float)),
        log_format=(text("APP_LOG_FORMAT") or "plain").lower(),
    )
    settings.validate()
    return settings


def redis_client(settings: Settings) -> redis.Redis:
    """A redis-py client of the configured Redis (settings.redis must be set). It connects on
    its first command (AUTH as the URL's user, SELECT of its database), each network step
    bounded by the check timeout and tried once: a failure is the caller's to report."""
    target = settings.redis
    if target is None:
        raise ConfigError("APP_REDIS_URL is not set")
    return redis.Redis(
        host=target.host,
        port=target.port,
        db=target.db,
        username=target.username,
        password=target.password,
        socket_timeout=settings.check_timeout,
        socket_connect_timeout=settings.check_timeout,
        retry=Retry(NoBackoff(), 0),
        client_name=settings.service,
        decode_responses=True,
    )
