"""The API's Prometheus metrics (served at `GET /metrics`, see `events.runtime.metrics`).
Both are labelled, so in multiprocess mode neither opens a value file before its first request."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

http_requests = Counter(
    "assessments_http_requests_total",
    "HTTP requests answered, by method, route (the URL rule, not the raw path) and status.",
    ["method", "route", "status"],
)
http_request_seconds = Histogram(
    "assessments_http_request_duration_seconds",
    "Time to answer an HTTP request, by method, route and status.",
    ["method", "route", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
