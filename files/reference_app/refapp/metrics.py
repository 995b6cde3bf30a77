"""HTTP request metrics in the Prometheus text exposition format (version 0.0.4)."""

from __future__ import annotations

import math
import threading
import time
from collections import Counter, defaultdict

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})


def escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(pairs: dict[str, str]) -> str:
    return "{" + ",".join(f'{key}="{escape_label(value)}"' for key, value in pairs.items()) + "}"


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


class _Histogram:
    def __init__(self) -> None:
        self.counts = [0] * len(BUCKETS)
        self.total = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        for index, bound in enumerate(BUCKETS):
            if value <= bound:
                self.counts[index] += 1
        self.total += 1
        self.sum += value


class Metrics:
    """Thread-safe request counters and duration histograms for one service."""

    def __init__(self, service: str, version: str, routes: frozenset[str]) -> None:
        self.service = service
        self.version = version
        self.routes = routes
        self.started = time.time()
        self._lock = threading.Lock()
        self._requests: Counter[tuple[str, str, str]] = Counter()
        self._errors = 0
        self._durations: defaultdict[str, _Histogram] = defaultdict(_Histogram)
        self._in_flight = 0

    def route(self, path: str) -> str:
        """The path label: a known route, or ``other`` (bounds the label cardinality)."""
        return path if path in self.routes else "other"

    def started_request(self) -> None:
        with self._lock:
            self._in_flight += 1

    def finished_request(self, method: str, path: str, status: int, seconds: float) -> None:
        method = method if method in METHODS else "OTHER"
        route = self.route(path)
        with self._lock:
            self._in_flight -= 1
            self._requests[(method, route, str(status))] += 1
            if status >= 500:
                self._errors += 1
            self._durations[route].observe(seconds)

    def counters(self) -> dict[str, object]:
        """Totals for /api/health/detailed."""
        with self._lock:
            by_status: Counter[str] = Counter()
            for (_method, _route, status), count in self._requests.items():
                by_status[status] += count
            return {
                "total": sum(self._requests.values()),
                "errors_5xx": self._errors,
                "in_flight": self._in_flight,
                "by_status": dict(sorted(by_status.items())),
            }

    def render(self) -> str:
        """The exposition text; every family has HELP and TYPE lines."""
        service = {"service": self.service}
        with self._lock:
            requests = sorted(self._requests.items())
            errors = self._errors
            in_flight = self._in_flight
            durations = sorted((route, list(h.counts), h.total, h.sum) for route, h in self._durations.items())
        lines = [
            "# HELP refapp_up 1 while the service answers.",
            "# TYPE refapp_up gauge",
            f"refapp_up{_labels(service)} 1",
            "# HELP refapp_build_info Build of the running service; the value is always 1.",
            "# TYPE refapp_build_info gauge",
            f"refapp_build_info{_labels({**service, 'version': self.version})} 1",
            "# HELP refapp_process_start_time_seconds Start time of the process since the Unix epoch.",
            "# TYPE refapp_process_start_time_seconds gauge",
            f"refapp_process_start_time_seconds{_labels(service)} {self.started:.3f}",
            "# HELP refapp_http_requests_in_flight HTTP requests being served.",
            "# TYPE refapp_http_requests_in_flight gauge",
            f"refapp_http_requests_in_flight{_labels(service)} {in_flight}",
            "# HELP refapp_http_requests_total HTTP requests served, by method, route and status.",
            "# TYPE refapp_http_requests_total counter",
        ]
        for (method, route, status), count in requests:
            labels = {**service, "method": method, "path": route, "status": status}
            lines.append(f"refapp_http_requests_total{_labels(labels)} {count}")
        lines += [
            "# HELP refapp_http_request_errors_total HTTP requests answered with a 5xx status.",
            "# TYPE refapp_http_request_errors_total counter",
            f"refapp_http_request_errors_total{_labels(service)} {errors}",
            "# HELP refapp_http_request_duration_seconds Time to serve an HTTP request, by route.",
            "# TYPE refapp_http_request_duration_seconds histogram",
        ]
        for route, counts, total, seconds in durations:
            labels = {**service, "path": route}
            for bound, count in zip(BUCKETS, counts, strict=True):
                bucket = _labels({**labels, "le": _number(bound)})
                lines.append(f"refapp_http_request_duration_seconds_bucket{bucket} {count}")
            lines.append(f"refapp_http_request_duration_seconds_bucket{_labels({**labels, 'le': '+Inf'})} {total}")
            lines.append(f"refapp_http_request_duration_seconds_sum{_labels(labels)} {seconds:.6f}")
            lines.append(f"refapp_http_request_duration_seconds_count{_labels(labels)} {total}")
        return "\n".join(lines) + "\n"
