"""The scheduled jobs. Each writes to the database and returns a JSON-able summary."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from refapp.db import Database
from refapp.schema import require_current, utcnow

DEFAULT_SYMBOLS = ("SPY", "QQQ", "IWM", "AAPL", "MSFT")
JOB_NAMES = ("daily-scan", "weekly-analysis", "cleanup")


def _record_run(db: Database, job: str, summary: str) -> None:
    db.execute(
        "INSERT INTO kv (key, value, updated_at) VALUES (?, ?, ?)"
        " ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
        (f"last_run:{job}", summary, utcnow()),
    )


def daily_scan(db: Database, symbols: Sequence[str] = DEFAULT_SYMBOLS) -> dict[str, object]:
    """Insert one ``scans`` row of kind ``daily`` with the scanned symbols."""
    require_current(db)
    cleaned = sorted({s.strip().upper() for s in symbols if s.strip()})
    if not cleaned:
        raise ValueError("no symbols to scan")
    with db.transaction():
        scan_id = db.insert(
            "INSERT INTO scans (kind, created_at, symbols) VALUES (?, ?, ?)",
            ("daily", utcnow(), ",".join(cleaned)),
        )
        _record_run(db, "daily-scan", f"scan {scan_id}")
    return {"scan_id": scan_id, "symbols": len(cleaned)}


def weekly_analysis(db: Database, now: datetime | None = None) -> dict[str, object]:
    """Summarise the last seven days of scans into one ``analyses`` row."""
    require_current(db)
    now = now or datetime.now(UTC)
    start = (now - timedelta(days=7)).isoformat(timespec="microseconds")
    with db.transaction():
        rows = db.query("SELECT symbols FROM scans WHERE created_at >= ?", (start,))
        distinct = {s for (symbols,) in rows for s in str(symbols).split(",") if s}
        analysis_id = db.insert(
            "INSERT INTO analyses (created_at, period_start, scans_counted, symbols_distinct) VALUES (?, ?, ?, ?)",
            (now.isoformat(timespec="microseconds"), start, len(rows), len(distinct)),
        )
        _record_run(db, "weekly-analysis", f"analysis {analysis_id}")
    return {"analysis_id": analysis_id, "scans_counted": len(rows), "symbols_distinct": len(distinct)}


def cleanup(db: Database, days: int, now: datetime | None = None) -> dict[str, object]:
    """Delete scans and analyses created more than ``days`` days ago."""
    if days < 0:
        raise ValueError("--days must be >= 0")
    require_current(db)
    cutoff = ((now or datetime.now(UTC)) - timedelta(days=days)).isoformat(timespec="microseconds")
    with db.transaction():
        scans = db.execute("DELETE FROM scans WHERE created_at < ?", (cutoff,))
        analyses = db.execute("DELETE FROM analyses WHERE created_at < ?", (cutoff,))
        _record_run(db, "cleanup", f"deleted {scans} scans, {analyses} analyses")
    return {"days": days, "cutoff": cutoff, "deleted_scans": scans, "deleted_analyses": analyses}
