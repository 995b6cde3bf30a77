"""Readiness checks: the database answers a real query, Redis answers PING after AUTH.

Every check returns a dict with ``ok`` and, when it failed, ``error``; nothing in it
contains a password. Checks run concurrently, each bounded by the check timeout.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

import redis

from refapp.config import Settings, redis_client
from refapp.db import DatabaseError, open_database
from refapp.errors import describe
from refapp.schema import SchemaError, current_version, require_current
from refapp.urls import SqliteTarget, redact_url, scrub

Check = dict[str, object]

_POOL = ThreadPoolExecutor(max_workers=8, thread_name_prefix="check")


def _elapsed_ms(start: float) -> float:
    return round((time.monotonic() - start) * 1000, 1)


def check_database(settings: Settings) -> Check:
    """SQLite: open, ``SELECT 1``, schema present. PostgreSQL: connect (every statement bounded
    by the check timeout, server-side), ``SELECT 1``, and whether TLS carries the session."""
    if not settings.database_url:
        return {"ok": False, "error": "not configured (set APP_DATABASE_URL)"}
    target = settings.database
    result: Check = {
        "backend": target.scheme if target else "unknown",
        "url": redact_url(settings.database_url),
    }
    start = time.monotonic()
    try:
        with open_database(target or settings.database_url, timeout=settings.check_timeout,
                           statement_timeout=settings.check_timeout) as db:
            db.query("SELECT 1")
            if isinstance(target, SqliteTarget):
                result["schema_version"] = require_current(db)
            else:
                result["schema_version"] = current_version(db)
            result.update(db.details())
    except (DatabaseError, SchemaError) as exc:
        return {**result, "ok": False, "error": str(exc), "latency_ms": _elapsed_ms(start)}
    return {**result, "ok": True, "latency_ms": _elapsed_ms(start)}


def check_redis(settings: Settings) -> Check | None:
    """``PING`` after AUTH and SELECT; None when Redis is not configured."""
    target = settings.redis
    if target is None:
        return None
    result: Check = {"url": redact_url(settings.redis_url)}
    start = time.monotonic()
    try:
        with redis_client(settings) as client:
            reply = client.ping()
        if reply is not True:
            raise redis.RedisError(f"unexpected PING reply {reply!r}")
    except (redis.RedisError, OSError) as exc:
        error = f"redis {target.host}:{target.port}: {describe(exc)}"
        return {
            **result,
            "ok": False,
            "error": scrub(error, target.password),
            "latency_ms": _elapsed_ms(start),
        }
    return {**result, "ok": True, "latency_ms": _elapsed_ms(start)}


def readiness(settings: Settings, fault: str | None = None) -> tuple[bool, dict[str, Check]]:
    """Run every check; return (ready, checks by name)."""
    futures = {
        "database": _POOL.submit(check_database, settings),
        "redis": _POOL.submit(check_redis, settings),
    }
    checks: dict[str, Check] = {}
    for name, future in futures.items():
        try:
            outcome = future.result(timeout=settings.check_timeout + 1.0)
        except FutureTimeout:
            outcome = {"ok": False, "error": f"timed out after {settings.check_timeout:g}s"}
        except Exception as exc:  # a bug in a check must not crash the probe
            outcome = {"ok": False, "error": scrub(f"check failed: {describe(exc)}", _password(settings))}
        if outcome is not None:
            checks[name] = outcome
    if fault == "unready":
        checks["fault"] = {"ok": False, "error": "injected"}
    return all(check["ok"] for check in checks.values()), checks


def _password(settings: Settings) -> str | None:
    try:
        target = settings.database
    except ValueError:
        return None
    return getattr(target, "password", None)
