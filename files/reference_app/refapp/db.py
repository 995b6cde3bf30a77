"""One small interface over the two database backends: sqlite3 and psycopg 3.

SQL uses ``?`` placeholders for both; the PostgreSQL backend turns them into psycopg's
``%s`` and binds the values server-side. Every failure is raised as :class:`DatabaseError`
whose message carries no password.
"""

from __future__ import annotations

import math
import sqlite3
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path

import psycopg

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
        self._begin(lock)
        try:
            yield
        except BaseException:
            with suppress(DatabaseError):
                self.execute("ROLLBACK")
            raise
        self.execute("COMMIT")

    def _begin(self, lock: bool) -> None:
        self.execute("BEGIN")

    def details(self) -> dict[str, object]:
        """What a readiness check reports about the connection beyond reachability."""
        return {}

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

    def _begin(self, lock: bool) -> None:
        self.execute("BEGIN IMMEDIATE" if lock else "BEGIN")

    def close(self) -> None:
        self._conn.close()


def to_pyformat(sql: str) -> str:
    """``?`` placeholders outside quotes as psycopg's ``%s``; a literal ``%`` doubled.

    The values themselves never enter the SQL text: psycopg sends them apart from the
    statement (server-side binding), so PostgreSQL parses and types them.
    """
    out: list[str] = []
    quote: str | None = None
    for ch in sql:
        if ch == "%":
            out.append("%%")
        elif quote:
            if ch == quote:
                quote = None
            out.append(ch)
        elif ch in ("'", '"'):
            quote = ch
            out.append(ch)
        else:
            out.append("%s" if ch == "?" else ch)
    return "".join(out)


#: Serialises concurrent migrations across hosts (pg_advisory_xact_lock key).
MIGRATION_LOCK_KEY = 0x7261_6170  # "raap"
DEFAULT_APPLICATION_NAME = "refapp"


def connection_parameters(target: PostgresTarget, timeout: float,
                          statement_timeout: float | None = None) -> dict[str, str]:
    """libpq connection parameters: the URL's host, port, user, password and database, its query
    options as they are (``sslmode``, ``sslrootcert``, ``application_name``, ...), a connect
    timeout, and ``statement_timeout`` set for the session at start-up (``options=-c ...``).

    An option libpq does not know fails the connection with a message that names it.
    """
    params = {
        "host": target.host,
        "port": str(target.port),
        "user": target.user,
        "dbname": target.database,
        "connect_timeout": str(max(2, math.ceil(timeout))),  # libpq: whole seconds, at least 2
        "application_name": DEFAULT_APPLICATION_NAME,
        **target.options,
    }
    if target.password is not None:
        params["password"] = target.password
    if statement_timeout:
        setting = f"-c statement_timeout={max(1, round(statement_timeout * 1000))}"
        params["options"] = f"{params.get('options', '')} {setting}".strip()
    return params


class PostgresDatabase(Database):
    """PostgreSQL through psycopg 3: autocommit (transactions are explicit), values bound
    server-side, server-side settings (application_name, statement_timeout) at start-up."""

    dialect = "postgresql"

    def __init__(self, target: PostgresTarget, timeout: float, statement_timeout: float | None = None) -> None:
        self._password = target.password
        self.description = f"postgresql://{target.user}@{target.host}:{target.port}/{target.database}"
        try:
            self._conn = psycopg.connect(autocommit=True, **connection_parameters(target, timeout, statement_timeout))
        except psycopg.Error as exc:
            raise DatabaseError(self._safe(f"postgresql {target.host}:{target.port}: {_pg_message(exc)}")) from None

    def _safe(self, text: str) -> str:
        return scrub(text, self._password)

    def _run(self, sql: str, params: Sequence[Param]) -> psycopg.Cursor:
        try:
            if params:
                return self._conn.execute(to_pyformat(sql), tuple(params))
            return self._conn.execute(sql)
        except psycopg.Error as exc:
            raise DatabaseError(self._safe(f"postgresql: {_pg_message(exc)}")) from None

    def query(self, sql: str, params: Sequence[Param] = ()) -> list[Row]:
        return [tuple(row) for row in self._run(sql, params).fetchall()]

    def execute(self, sql: str, params: Sequence[Param] = ()) -> int:
        return self._run(sql, params).rowcount

    def insert(self, sql: str, params: Sequence[Param] = ()) -> int:
        row = self._run(sql + " RETURNING id", params).fetchone()
        assert row is not None
        return int(row[0])

    def table_exists(self, name: str) -> bool:
        rows = self.query("SELECT to_regclass(?) IS NOT NULL", (name,))
        return rows[0][0] is True

    def _begin(self, lock: bool) -> None:
        self.execute("BEGIN")
        if lock:
            self.execute("SELECT pg_advisory_xact_lock(?)", (MIGRATION_LOCK_KEY,))

    def details(self) -> dict[str, object]:
        """TLS in use, the server's version and the session's server-side settings."""
        info = self._conn.info
        settings = self.query("SELECT current_setting('application_name'), current_setting('statement_timeout')")
        return {
            "tls": bool(self._conn.pgconn.ssl_in_use),
            "server_version": info.server_version,
            "application_name": settings[0][0],
            "statement_timeout": settings[0][1],
        }

    def close(self) -> None:
        self._conn.close()


def _pg_message(exc: psycopg.Error) -> str:
    """One line: the server's message and SQLSTATE; for a connection libpq refused or could not
    make, the reason of its last attempt (``connection refused``, ``FATAL: password
    authentication failed for user "app"``, ``SSL error: certificate verify failed``, ...)."""
    primary = exc.diag.message_primary if exc.sqlstate else None
    if primary:
        return f"{primary} (SQLSTATE {exc.sqlstate})"
    attempts = [line.rpartition(" failed: ")[2] for line in str(exc).splitlines() if " failed: " in line]
    reason = " ".join((attempts[-1] if attempts else str(exc)).split()) or type(exc).__name__
    if reason[:1].isupper() and reason[1:2].islower():  # "Connection refused", not "SSL error"
        reason = reason[0].lower() + reason[1:]
    return reason


def open_database(url_or_target: str | DatabaseTarget, timeout: float = 5.0, create: bool = False,
                  statement_timeout: float | None = None) -> Database:
    """Connect to the database. ``create`` lets SQLite create a missing file (for migrate);
    ``statement_timeout`` (seconds) bounds every PostgreSQL statement of the session."""
    target = parse_database_url(url_or_target) if isinstance(url_or_target, str) else url_or_target
    if isinstance(target, SqliteTarget):
        return SqliteDatabase(target, timeout, create)
    return PostgresDatabase(target, timeout, statement_timeout)
