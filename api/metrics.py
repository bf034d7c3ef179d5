"""The API's Prometheus metrics (served at `GET /metrics`, see `events.runtime.metrics`).
Every one is labelled, so in multiprocess mode none opens a value file before its first request."""

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
candidate_auth_failures = Counter(
    "assessments_candidate_auth_failures_total",
    "Candidate authentications refused (401) and counted against the caller's address, by route.",
    ["route"],
)
candidate_auth_limited = Counter(
    "assessments_candidate_auth_limited_total",
    "Candidate requests refused (429) because their address failed too often, by route.",
    ["route"],
)
