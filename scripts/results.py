#!/usr/bin/env python3
"""docs/results.md from the figures the suites wrote: every benchmark's .cache/results/<name>.json
(tests/bench/benchlib.save_results: title, command, date, machine, figures), the chaos suite's
.cache/chaos/results.json and the systemd hardening gate's .cache/security/systemd-units.json.

    scripts/results.py [--out docs/results.md]      (make results)

Only what was measured is written. A section this checkout has no new figures for (a fresh clone has no
.cache) is kept from the existing page as it was written, with its own command, date and machine; new
figures replace the section of the same title. Files without their own date and machine (the chaos and
security JSON) get the file's modification time and this machine, marked as such. Exit 0 written; 1 nothing to write.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
EXTRA = {
    "chaos": (ROOT / ".cache" / "chaos" / "results.json", "Chaos suite (faults injected on the lab)", "make chaos"),
    "security": (ROOT / ".cache" / "security" / "systemd-units.json",
                 "systemd-analyze security --offline=yes of every unit tradeops installs",
                 "scripts/run_pytest.sh tests/unit/security"),
}


sys.path.insert(0, str(ROOT / "tests" / "bench"))
from benchlib import machine  # noqa: E402  (the benchmarks' description of a machine, one definition)


def this_machine() -> dict[str, Any]:
    """This machine as the benchmarks describe theirs, without the load (not when the figures were made)."""
    return {k: v for k, v in machine().items() if k != "load_1m"}


def cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (dict, list)):
        return "`" + json.dumps(value, separators=(",", ":"))[:120] + "`"
    return str(value).replace("|", "\\|").replace("\n", " ")


def table(figures: Any) -> list[str]:
    """Rows of a mapping of mappings as a Markdown table; anything else as JSON."""
    if isinstance(figures, dict) and figures and all(isinstance(v, dict) for v in figures.values()):
        columns: list[str] = []
        for row in figures.values():
            columns += [c for c in row if c not in columns]
        if len(columns) > 8:  # rows with different figures each (the chaos experiments): one list per row
            out = []
            for name, row in figures.items():
                out += [f"- **{cell(name)}**: " + "; ".join(f"{k} {cell(v)}" for k, v in row.items())]
            return out
        out = ["| | " + " | ".join(columns) + " |", "| --- |" + " --- |" * len(columns)]
        out += [f"| {cell(name)} | " + " | ".join(cell(row.get(c, "")) for c in columns) + " |"
                for name, row in figures.items()]
        return out
    return ["```json", json.dumps(figures, indent=2)[:6000], "```"]


def section(doc: dict[str, Any]) -> list[str]:
    m = doc["machine"]
    where = ", ".join(f"{k} {v}" for k, v in m.items())
    return [f"## {doc['title']}", "", f"- command: `{doc['command']}`", f"- date: {doc['date']}",
            f"- machine: {where}", "", *table(doc["figures"]), ""]


def collect() -> list[dict[str, Any]]:
    docs = []
    for path in sorted((ROOT / ".cache" / "results").glob("*.json")):
        docs.append(json.loads(path.read_text()))
    for path, title, command in EXTRA.values():
        if path.is_file():
            data = json.loads(path.read_text())
            figures = (data.get("units") or data.get("experiments") or data) if isinstance(data, dict) else data
            mtime = dt.datetime.fromtimestamp(path.stat().st_mtime, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            docs.append({"title": title, "command": command, "date": f"{mtime} (file time)",
                         "machine": this_machine() | {"note": "the machine that wrote this page"},
                         "figures": figures})
    return docs


def kept_sections(page: Path) -> dict[str, list[str]]:
    """The existing page's sections by title (``## title`` up to the next), in the page's order."""
    if not page.is_file():
        return {}
    sections: dict[str, list[str]] = {}
    title = None
    for line in page.read_text().splitlines():
        if line.startswith("## "):
            title = line[3:].strip()
            sections[title] = []
        if title is not None:
            sections[title].append(line)
    for lines in sections.values():
        while lines and not lines[-1].strip():
            lines.pop()
        lines.append("")
    return sections


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / "docs" / "results.md"))
    args = ap.parse_args()
    docs = collect()
    out = Path(args.out)
    sections = kept_sections(out)
    kept = len(sections)
    for doc in docs:
        kept -= doc["title"] in sections
        sections[doc["title"]] = section(doc)
    if not sections:
        print("results: no figures under .cache (run make bench, make chaos, make unit first)", file=sys.stderr)
        return 1
    lines = ["# Measured results", "",
             "Generated by `scripts/results.py` (`make results`) from the figures the suites wrote; each section "
             "names the command, the date and the machine. Benchmarks print medians and ratios against a baseline "
             "measured in the same run; figures from a loaded machine are marked by its load.", ""]
    for body in sections.values():
        lines += body
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))
    print(f"results: {len(docs)} section(s) measured in this checkout, {kept} kept from the page, written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
