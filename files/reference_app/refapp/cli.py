"""Command line: ``refapp serve | migrate | check | daily-scan | weekly-analysis | cleanup``."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence

import redis

from refapp import _build
from refapp.config import ENVIRONMENT, ConfigError, Settings, redis_client, settings_from_env
from refapp.db import Database, DatabaseError, open_database
from refapp.envfile import EnvFileError, load_env_file
from refapp.errors import describe
from refapp.logs import setup_logging
from refapp.schema import LATEST_VERSION, SchemaError, migrate
from refapp.urls import redact_url, scrub

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
JOB_DB_TIMEOUT = 10.0
# Every statement of a scheduled job (not of migrate: it may wait for another host's lock).
JOB_STATEMENT_TIMEOUT = 300.0

EPILOG = (
    "environment (set directly, by systemd's EnvironmentFile, or by --env-file):\n"
    + "".join(f"  {key:<20} {text}\n" for key, text in ENVIRONMENT.items())
    + "\ncommand-line flags override the environment; --env-file only sets variables that\n"
    "are not already set. Passwords and the token are never printed: URLs are shown as\n"
    "postgresql://user:***@host:5432/db.\n"
    "\nexit codes:\n"
    "  0  success (serve: stopped by SIGTERM/SIGINT after draining in-flight requests)\n"
    "  1  failure: database or Redis unreachable, query failed, port in use,\n"
    "     'check' found the service not ready, or an injected crash fault\n"
    "  2  usage or configuration error (bad flag, bad APP_* value, unreadable --env-file,\n"
    "     APP_DATABASE_URL missing for a command that needs it)\n"
)


def _parser() -> argparse.ArgumentParser:
    env_file = argparse.ArgumentParser(add_help=False)
    env_file.add_argument(
        "--env-file",
        metavar="PATH",
        default=argparse.SUPPRESS,
        help="read KEY=VALUE lines (# comments) and set the variables not already in the environment",
    )
    parser = argparse.ArgumentParser(
        prog="refapp",
        description="tradeops reference application: an HTTP service with health, readiness and "
        "Prometheus metrics, plus database migrations and scheduled jobs (SQLite or PostgreSQL).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[env_file],
    )
    parser.add_argument("--version", action="version", version=_build.VERSION, help="print the version and exit")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, text: str) -> argparse.ArgumentParser:
        return commands.add_parser(
            name,
            help=text,
            description=text,
            parents=[env_file],
            epilog=EPILOG,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    serve = command(
        "serve",
        "run the HTTP service until SIGTERM/SIGINT. Routes: /health, /api/health, /api/health/liveness, "
        "/api/health/readiness, /api/health/detailed (bearer token), /metrics, /api/work?ms=N, "
        "/api/version. On SIGTERM the listening socket closes at once and in-flight requests get "
        "APP_SHUTDOWN_GRACE seconds.",
    )
    serve.add_argument("--service", help="service name (overrides APP_SERVICE)")
    serve.add_argument("--port", type=int, help="listen port, 0 for any free port (overrides APP_PORT)")
    serve.add_argument("--bind", help="listen address (overrides APP_BIND)")
    command("migrate", "create or upgrade the database schema (idempotent); prints a JSON summary")
    command("check", "run the readiness checks once; prints them as JSON, exit 0 when ready, 1 when not")
    scan = command("daily-scan", "record a scan of the given symbols (one row in 'scans'); prints a JSON summary")
    scan.add_argument("--symbols", default="SPY,QQQ,IWM,AAPL,MSFT", help="comma-separated symbols to scan")
    command("weekly-analysis", "summarise the last 7 days of scans into one 'analyses' row; prints a JSON summary")
    cleanup = command("cleanup", "delete scans and analyses older than --days; prints a JSON summary")
    cleanup.add_argument("--days", type=int, default=30, help="keep rows newer than this many days (default 30)")
    return parser


def _emit(payload: dict[str, object]) -> None:
    print(json.dumps(payload, separators=(",", ":"), default=str), flush=True)


def _error(command: str, message: str) -> None:
    print(f"refapp {command}: error: {message}", file=sys.stderr, flush=True)


def _open(settings: Settings, create: bool = False, statement_timeout: float | None = None) -> Database:
    assert settings.database_url is not None
    return open_database(settings.database_url, timeout=JOB_DB_TIMEOUT, create=create,
                         statement_timeout=statement_timeout)


def _cmd_serve(settings: Settings) -> int:
    from refapp.server import serve

    return serve(settings, _build.VERSION, _build.FAULT)


def _cmd_check(settings: Settings) -> int:
    from refapp.checks import readiness

    ready, checks = readiness(settings, _build.FAULT)
    _emit({"status": "ready" if ready else "not ready", "checks": checks, "version": _build.VERSION})
    return EXIT_OK if ready else EXIT_FAILURE


def _cmd_migrate(settings: Settings) -> int:
    start = time.monotonic()
    try:
        with _open(settings, create=True) as db:
            before, after, applied = migrate(db)
    except (DatabaseError, SchemaError) as exc:
        _error("migrate", f"cannot migrate {redact_url(settings.database_url)}: {exc}")
        return EXIT_FAILURE
    _emit(
        {
            "command": "migrate",
            "ok": True,
            "database": redact_url(settings.database_url),
            "from_version": before,
            "to_version": after,
            "applied": applied,
            "latest": LATEST_VERSION,
            "duration_ms": round((time.monotonic() - start) * 1000, 1),
        }
    )
    return EXIT_OK


def _note_in_redis(settings: Settings, job: str) -> str | None:
    """Count the run in Redis when it is configured (best effort; the database is the record)."""
    target = settings.redis
    if target is None:
        return None
    try:
        with redis_client(settings) as client:
            client.incr(f"refapp:{settings.service}:runs:{job}")
            client.set(f"refapp:{settings.service}:last_run:{job}", str(int(time.time())))
    except (redis.RedisError, OSError) as exc:
        return scrub(f"error: {describe(exc)}", target.password)
    return "ok"


def _run_job(name: str, settings: Settings, job: Callable[[Database], dict[str, object]]) -> int:
    start = time.monotonic()
    summary: dict[str, object] = {"job": name, "service": settings.service, "version": _build.VERSION}
    try:
        with _open(settings, statement_timeout=JOB_STATEMENT_TIMEOUT) as db:
            summary.update(job(db))
    except (DatabaseError, SchemaError, ValueError) as exc:
        summary.update(ok=False, error=scrub(str(exc), getattr(settings.database, "password", None)))
        summary["duration_ms"] = round((time.monotonic() - start) * 1000, 1)
        _emit(summary)
        return EXIT_FAILURE
    redis_note = _note_in_redis(settings, name)
    if redis_note is not None:
        summary["redis"] = redis_note
    summary.update(ok=True, database=redact_url(settings.database_url))
    summary["duration_ms"] = round((time.monotonic() - start) * 1000, 1)
    _emit(summary)
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if getattr(args, "env_file", None):
            load_env_file(args.env_file)
        settings = settings_from_env()
        if args.command == "serve":
            settings = settings.with_overrides(service=args.service, port=args.port, bind=args.bind)
    except (EnvFileError, ConfigError) as exc:
        _error(args.command, str(exc))
        return EXIT_USAGE
    setup_logging(settings.log_format)
    if args.command == "serve":
        return _cmd_serve(settings)
    if args.command == "check":
        return _cmd_check(settings)
    if not settings.database_url:
        _error(args.command, "APP_DATABASE_URL is not set")
        return EXIT_USAGE
    if args.command == "migrate":
        return _cmd_migrate(settings)
    from refapp import jobs

    if args.command == "daily-scan":
        symbols = args.symbols.split(",")
        return _run_job(args.command, settings, lambda db: jobs.daily_scan(db, symbols))
    if args.command == "weekly-analysis":
        return _run_job(args.command, settings, jobs.weekly_analysis)
    if args.command == "cleanup":
        if args.days < 0:
            _error(args.command, "--days must be >= 0")
            return EXIT_USAGE
        return _run_job(args.command, settings, lambda db: jobs.cleanup(db, args.days))
    raise AssertionError(f"unhandled command {args.command}")


if __name__ == "__main__":
    sys.exit(main())
