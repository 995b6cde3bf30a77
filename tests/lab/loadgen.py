#!/usr/bin/env python3
"""Bounded HTTP(S) load for lab experiments: GET URL at a fixed rate until a stop file
appears or a time limit passes, then print one JSON line with the outcome.

    loadgen.py URL [--rate 20] [--max-seconds 180] [--stop-file /run/tradeops-loadgen.stop]
               [--timeout 5] [--concurrency 8]

Runs on a lab host (standard library only). Every request counts as ok (HTTP 2xx/3xx),
or failed with its status or error; the JSON has totals, failures by kind, the first
few failure times, and latency percentiles; ``unsent`` counts the requests still queued behind
the --concurrency busy workers when the run ended (not sent, not counted). Exit 0 always (the
caller judges).
"""
from __future__ import annotations

import argparse
import json
import os
import ssl
import statistics
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("url")
    ap.add_argument("--rate", type=float, default=20.0, help="requests per second (max 200)")
    ap.add_argument("--max-seconds", type=float, default=180.0, help="hard time limit (max 900)")
    ap.add_argument("--stop-file", default="/run/tradeops-loadgen.stop")
    ap.add_argument("--timeout", type=float, default=5.0)
    ap.add_argument("--concurrency", type=int, default=8)
    args = ap.parse_args()
    rate, limit = min(args.rate, 200.0), min(args.max_seconds, 900.0)
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the lab's self-signed certificate
    lock = threading.Lock()
    failures: Counter[str] = Counter()
    first_failures: list[dict[str, object]] = []
    latencies: list[float] = []
    ok = 0
    started = time.monotonic()

    def one() -> None:
        nonlocal ok
        t0 = time.monotonic()
        kind = None
        try:
            with urllib.request.urlopen(args.url, timeout=args.timeout, context=context) as reply:
                reply.read()
                if reply.status >= 400:
                    kind = f"http {reply.status}"
        except urllib.error.HTTPError as exc:
            kind = f"http {exc.code}"
        except (urllib.error.URLError, OSError) as exc:
            kind = f"error {getattr(exc, 'reason', exc)}"
        took = time.monotonic() - t0
        with lock:
            latencies.append(took)
            if kind is None:
                ok += 1
            else:
                failures[kind] += 1
                if len(first_failures) < 10:
                    first_failures.append({"at_s": round(t0 - started, 2), "kind": kind})

    if os.path.exists(args.stop_file):
        os.unlink(args.stop_file)
    sent = 0
    pool = ThreadPoolExecutor(max_workers=max(1, args.concurrency))
    futures = []
    while time.monotonic() - started < limit and not os.path.exists(args.stop_file):
        futures.append(pool.submit(one))
        sent += 1
        next_at = started + sent / rate
        time.sleep(max(0.0, next_at - time.monotonic()))
    # Requests still queued behind busy workers when the run ends (an overloaded target) are not
    # sent: the run ends within one --timeout of its stop, however long the queue.
    pool.shutdown(wait=True, cancel_futures=True)
    unsent = sum(1 for f in futures if f.cancelled())
    sent -= unsent
    ordered = sorted(latencies)

    def pct(p: float) -> float | None:
        return round(ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000, 1) if ordered else None

    print(json.dumps({
        "url": args.url, "seconds": round(time.monotonic() - started, 2), "sent": sent, "unsent": unsent, "ok": ok,
        "failed": sum(failures.values()), "failures": dict(failures), "first_failures": first_failures,
        "p50_ms": pct(0.5), "p95_ms": pct(0.95), "max_ms": pct(1.0),
        "mean_ms": round(statistics.fmean(latencies) * 1000, 1) if latencies else None,
    }))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
