"""One small interface over the two database backends: sqlite3 and refapp.pg.

SQL uses ``?`` placeholders for both; the PostgreSQL backend embeds the values with
:func:`refapp.pg.quote_literal`. Every failure is raised as :class:`DatabaseError`
whose message carries no password.
"""

from __future__ import annotations

import sqlite3
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path

from refapp import pg
from refapp.errors import describe
from refapp.urls import DatabaseTarget, PostgresTarget, SqliteTarget, parse_database_url, scrub

Param = str | int | float | None
Row = tuple[object, ...]


class DatabaseError(Exception):
    """Connecting or querying failed; the message is safe to log and to return."""


class Database(ABC):
    """A connection with ``?``-placeholder SQL, explicit transactions and a dialect name."""

    dialect: str
    description: str  # redacted, for messages

    @abstractmethod
    def query(self, sql: str, params: Sequence[Param] = ()) -> list[Row]:
        """Run a statement and return its rows."""

    @abstractmethod
    def execute(self, sql: str, params: Sequence[Param] = ()) -> int:
        """Run a statement and return the number of rows it changed."""

    @abstractmethod
    def insert(self, sql: str, params: Sequence[Param] = ()) -> int:
        """Run an INSERT into a table with an ``id`` key and return the new id."""

    @abstractmethod
    def table_exists(self, name: str) -> bool:
        """True when the table exists (in the current schema)."""

    @abstractmethod
    def close(self) -> None:
        """Close the connection (idempotent)."""

    @contextmanager
    def transaction(self, lock: bool = False) -> Iterator[None]:
        """BEGIN ... COMMIT, ROLLBACK on an exception. ``lock`` serialises concurrent writers."""
        self.execute(self._begin_sql(lock))
        try:
            yield
        except BaseException:
            with suppress(DatabaseError):
                self.execute("ROLLBACK")
            raise
        self.execute("COMMIT")

    def _begin_sql(self, lock: bool) -> str:
        return "BEGIN"

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SqliteDatabase(Database):
    dialect = "sqlite"

    def __init__(self, target: SqliteTarget, timeout: float, create: bool) -> None:
        self.description = f"sqlite:///{target.path}"
        path = Path(target.path)
        if not create and not path.exists():
            raise DatabaseError(f"database file not found: {path}")
        if create and not path.parent.is_dir():
            raise DatabaseError(f"directory of the database file does not exist: {path.parent}")
        mode = "rwc" if create else "rw"
        try:
            self._conn = sqlite3.connect(
                f"{path.as_uri()}?mode={mode}",
                uri=True,
                timeout=timeout,
                isolation_level=None,  # autocommit; transactions are explicit
                check_same_thread=False,
            )
            self._conn.execute("PRAGMA foreign_keys = ON")
        except sqlite3.Error as exc:
            raise DatabaseError(f"cannot open {path}: {exc}") from None

    def _run(self, sql: str, params: Sequence[Param]) -> sqlite3.Cursor:
        try:
            return self._conn.execute(sql, tuple(params))
        except sqlite3.Error as exc:
            raise DatabaseError(f"sqlite error: {exc}") from None

    def query(self, sql: str, params: Sequence[Param] = ()) -> list[Row]:
        return [tuple(row) for row in self._run(sql, params).fetchall()]

    def execute(self, sql: str, params: Sequence[Param] = ()) -> int:
        return self._run(sql, params).rowcount

    def insert(self, sql: str, params: Sequence[Param] = ()) -> int:
        rowid = self._run(sql, params).lastrowid
        assert rowid is not None
        return rowid

    def table_exists(self, name: str) -> bool:
        rows = self.query("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,))
        return bool(rows)

    def _begin_sql(self, lock: bool) -> str:
        return "BEGIN IMMEDIATE" if lock else "BEGIN"

    def close(self) -> None:
        self._conn.close()


def interpolate(sql: str, params: Sequence[Param]) -> str:
    """Replace each ``?`` outside quotes by the quoted literal of the next parameter."""
    out: list[str] = []
    values = iter(params)
    quote: str | None = None
    used = 0
    for ch in sql:
        if quote:
            if ch == quote:
                quote = None
            out.append(ch)
        elif ch in ("'", '"'):
            quote = ch
            out.append(ch)
        elif ch == "?":
            try:
                out.append(pg.quote_literal(next(values)))
            except StopIteration:
                raise ValueError("more ? placeholders than parameters") from None
            used += 1
        else:
            out.append(ch)
    if used != len(params):
        raise ValueError(f"{len(params)} parameters for {used} placeholders")
    return "".join(out)


#: Serialises concurrent migrations across hosts (pg_advisory_xact_lock key).
MIGRATION_LOCK_KEY = 0x7261_6170  # "raap"


class PostgresDatabase(Database):
    dialect = "postgresql"

    def __init__(self, target: PostgresTarget, timeout: float) -> None:
        self._password = target.password
        self.description = f"postgresql://{target.user}@{target.host}:{target.port}/{target.database}"
        try:
            self._conn = pg.connect(
                target.host,
                target.port,
                target.user,
                target.password,
                target.database,
                timeout=timeout,
                sslmode=target.options.get("sslmode", "disable"),
                application_name=target.options.get("application_name", "refapp"),
            )
        except pg.PgServerError as exc:
            raise DatabaseError(self._safe(f"postgresql: {exc.message}")) from None
        except (pg.PgError, OSError) as exc:
            raise DatabaseError(self._safe(f"postgresql {target.host}:{target.port}: {describe(exc)}")) from None

    def _safe(self, text: str) -> str:
        return scrub(text, self._password)

    def _run(self, sql: str, params: Sequence[Param]) -> pg.Result:
        try:
            return self._conn.query(interpolate(sql, params))
        except pg.PgServerError as exc:
            raise DatabaseError(self._safe(f"postgresql: {exc.message} (SQLSTATE {exc.code})")) from None
        except (pg.PgError, OSError) as exc:
            raise DatabaseError(self._safe(f"postgresql: {describe(exc)}")) from None

    def query(self, sql: str, params: Sequence[Param] = ()) -> list[Row]:
        return list(self._run(sql, params).rows)

    def execute(self, sql: str, params: Sequence[Param] = ()) -> int:
        return self._run(sql, params).rowcount

    def insert(self, sql: str, params: Sequence[Param] = ()) -> int:
        rows = self._run(sql + " RETURNING id", params).rows
        return int(rows[0][0])  # type: ignore[arg-type]

    def table_exists(self, name: str) -> bool:
        rows = self.query("SELECT to_regclass(?) IS NOT NULL", (name,))
        return rows[0][0] == "t"

    def _begin_sql(self, lock: bool) -> str:
        return f"BEGIN; SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY})" if lock else "BEGIN"

    def close(self) -> None:
        self._conn.close()


def open_database(url_or_target: str | DatabaseTarget, timeout: float = 5.0, create: bool = False) -> Database:
    """Connect to the database. ``create`` lets SQLite create a missing file (for migrate)."""
    target = parse_database_url(url_or_target) if isinstance(url_or_target, str) else url_or_target
    if isinstance(target, SqliteTarget):
        return SqliteDatabase(target, timeout, create)
    return PostgresDatabase(target, timeout)
