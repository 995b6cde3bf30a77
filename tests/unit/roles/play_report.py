"""Reading the plays of a preflight test run: one play per case, run once with the json callback."""

from __future__ import annotations

import json
from typing import Any


def failures_by_play(stdout: str, shown_task: str) -> dict[str, tuple[list[str], Any]]:
    """Per play name: the messages of its failed tasks (loop items included, whitespace folded) and
    the ``msg`` of the task named ``shown_task`` when it ran (None when it was skipped or never ran)."""
    report = json.loads(stdout[stdout.index("{"):])
    out = {}
    for played in report["plays"]:
        messages, shown = [], None
        for task in played["tasks"]:
            result = task["hosts"].get("localhost", {})
            if task["task"]["name"] == shown_task and not result.get("skipped"):
                shown = result.get("msg")
            for item in result.get("results", [result]):
                if item.get("failed") or item.get("evaluated_to") is False:  # a looped assert's item: no "failed"
                    messages.append(" ".join(str(item.get("msg", "")).split()))
        out[played["play"]["name"]] = (messages, shown)
    return out
