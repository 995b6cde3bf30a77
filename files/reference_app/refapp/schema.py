"""The database schema and its migrations (idempotent, ordered, one transaction each)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from refapp.db import Database


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    sqlite: tuple[str, ...]
    postgresql: tuple[str, ...]

    def statements(self, dialect: str) -> tuple[str, ...]:
        return self.sqlite if dialect == "sqlite" else self.postgresql


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "scans and key/value store",
        sqlite=(
            "CREATE TABLE IF NOT EXISTS scans (id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL,"
            " created_at TEXT NOT NULL, symbols TEXT NOT NULL)",
            "CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL, updated_at TEXT NOT NULL)",
        ),
        postgresql=(
            "CREATE TABLE IF NOT EXISTS scans (id BIGSERIAL PRIMARY KEY, kind TEXT NOT NULL,"
            " created_at TIMESTAMPTZ NOT NULL, symbols TEXT NOT NULL)",
            "CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL,"
            " updated_at TIMESTAMPTZ NOT NULL)",
        ),
    ),
    Migration(
        2,
        "weekly analyses, scans by date",
        sqlite=(
            "CREATE TABLE IF NOT EXISTS analyses (id INTEGER PRIMARY KEY AUTOINCREMENT,"
            " created_at TEXT NOT NULL, period_start TEXT NOT NULL, scans_counted INTEGER NOT NULL,"
            " symbols_distinct INTEGER NOT NULL)",
            "CREATE INDEX IF NOT EXISTS scans_created_at ON scans (created_at)",
        ),
        postgresql=(
            "CREATE TABLE IF NOT EXISTS analyses (id BIGSERIAL PRIMARY KEY, created_at TIMESTAMPTZ NOT NULL,"
            " period_start TIMESTAMPTZ NOT NULL, scans_counted INTEGER NOT NULL,"
            " symbols_distinct INTEGER NOT NULL)",
            "CREATE INDEX IF NOT EXISTS scans_created_at ON scans (created_at)",
        ),
    ),
)

LATEST_VERSION = MIGRATIONS[-1].version

_VERSION_TABLE = {
    "sqlite": "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY,"
    " description TEXT NOT NULL, applied_at TEXT NOT NULL)",
    "postgresql": "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY,"
    " description TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL)",
}


class SchemaError(Exception):
    """The schema is missing or newer than this release understands."""


def utcnow() -> str:
    """The current UTC time as ISO 8601 with offset (sorts and compares as text in SQLite)."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


def current_version(db: Database) -> int | None:
    """The applied schema version, or None when the database has never been migrated."""
    if not db.table_exists("schema_version"):
        return None
    rows = db.query("SELECT MAX(version) FROM schema_version")
    value = rows[0][0] if rows else None
    return None if value is None else int(value)  # type: ignore[call-overload]


def require_current(db: Database) -> int:
    """Return the schema version, or raise SchemaError when ``refapp migrate`` is needed."""
    version = current_version(db)
    if version is None:
        raise SchemaError("schema not migrated (run: refapp migrate)")
    if version < LATEST_VERSION:
        raise SchemaError(f"schema version {version} is older than {LATEST_VERSION} (run: refapp migrate)")
    return version


def migrate(db: Database) -> tuple[int | None, int, list[int]]:
    """Apply the missing migrations; return (version before, version after, versions applied).

    Each migration runs in its own transaction. The transaction takes a lock first
    (PostgreSQL advisory lock, SQLite ``BEGIN IMMEDIATE``) and re-reads the version, so
    hosts migrating the same database at once apply every migration exactly once.
    """
    before = current_version(db)
    applied: list[int] = []
    for migration in MIGRATIONS:
        with db.transaction(lock=True):
            db.execute(_VERSION_TABLE[db.dialect])
            version = current_version(db) or 0
            if migration.version <= version:  # also when the schema is newer (after a rollback)
                continue
            for statement in migration.statements(db.dialect):
                db.execute(statement)
            db.execute(
                "INSERT INTO schema_version (version, description, applied_at) VALUES (?, ?, ?)",
                (migration.version, migration.description, utcnow()),
            )
            applied.append(migration.version)
    return before, current_version(db) or 0, applied
