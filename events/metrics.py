"""Prometheus metrics of the API, the relay and the worker, and how each process exposes them.

The metric objects live in the process-wide default registry, as `prometheus_client` intends:
creating one opens nothing. With `PROMETHEUS_MULTIPROC_DIR` set (the API under several
gunicorn workers) `prometheus_client` keeps every value in a file of that directory, and
`exposition()` merges the files of all the processes; otherwise each process answers for itself.
The relay and the worker are single processes and serve their metrics on a port of their own
(`serve()`); the API serves them at `GET /metrics`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from datetime import UTC, datetime

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    start_http_server,
)

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = CONTENT_TYPE_LATEST

if os.environ.get(MULTIPROCESS_ENV):
    # In multiprocess mode the metrics below open their value files as they are created.
    os.makedirs(os.environ[MULTIPROCESS_ENV], exist_ok=True)

# --- API ------------------------------------------------------------------------------------

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

# --- relay ----------------------------------------------------------------------------------

relay_published = Counter(
    "assessments_relay_published_total",
    "Events the broker confirmed (and the relay removed from the outbox), by event type.",
    ["type"],
)
relay_outbox_backlog = Gauge(
    "assessments_relay_outbox_backlog",
    "Outbox rows not yet confirmed by the broker, as last counted by the active relay.",
    multiprocess_mode="livemax",
)
relay_confirm_seconds = Histogram(
    "assessments_relay_confirm_seconds",
    "Time from publishing an event to the broker's confirm.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
relay_active = Gauge(
    "assessments_relay_active",
    "1 while this relay holds the leadership lock and publishes, 0 while it stands by.",
    multiprocess_mode="livemax",
)

# --- worker ---------------------------------------------------------------------------------

worker_applied = Counter(
    "assessments_worker_events_applied_total",
    "Events applied to a projection (gap fills included), by projection.",
    ["projection"],
)
worker_duplicates = Counter(
    "assessments_worker_duplicates_skipped_total",
    "Redelivered events a projection already reflected, by projection.",
    ["projection"],
)
worker_gaps_filled = Counter(
    "assessments_worker_gaps_filled_total",
    "Streams re-read from the store because a message was missing or out of order, by projection.",
    ["projection"],
)
worker_dead_lettered = Counter(
    "assessments_worker_dead_lettered_total",
    "Messages moved to the dead-letter queue, by reason (undecodable, failing).",
    ["reason"],
)
worker_lag_seconds = Histogram(
    "assessments_worker_lag_seconds",
    "Time from an event's recording in the store to its projection being committed.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0),
)


def observe_lag(recorded_at: Iterable[datetime]) -> None:
    """Lag of events applied just now; a naive time (SQLite) is taken as UTC."""
    now = time.time()
    for moment in recorded_at:
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        worker_lag_seconds.observe(max(0.0, now - moment.timestamp()))


def dead_letter_reason(reason: str) -> str:
    """The label for a dead-letter reason (the full reason is in the message's headers)."""
    return "undecodable" if reason.startswith("undecodable") else "failing"


# --- exposition -----------------------------------------------------------------------------


def multiprocess() -> bool:
    return bool(os.environ.get(MULTIPROCESS_ENV))


def exposition() -> bytes:
    """The text exposition of this process, or of every process sharing the multiprocess
    directory."""
    if not multiprocess():
        return generate_latest(REGISTRY)
    from prometheus_client import multiprocess as mp

    registry = CollectorRegistry()
    mp.MultiProcessCollector(registry)
    return generate_latest(registry)


def serve(port: int, addr: str = "0.0.0.0"):
    """Serve `/metrics` on `port` from a daemon thread; returns the server (call `shutdown()`
    and `server_close()` to stop it)."""
    server, _thread = start_http_server(port, addr)
    return server


def clear_multiprocess_dir() -> None:
    """Remove the value files of earlier runs: prometheus_client expects an empty directory
    when the first process starts (gunicorn's master calls this before forking)."""
    directory = os.environ.get(MULTIPROCESS_ENV)
    if not directory:
        return
    os.makedirs(directory, exist_ok=True)
    for name in os.listdir(directory):
        if name.endswith(".db"):
            os.remove(os.path.join(directory, name))


def mark_process_dead(pid: int) -> None:
    """Forget a gunicorn worker's live gauges when it exits."""
    if multiprocess():
        from prometheus_client import multiprocess as mp

        mp.mark_process_dead(pid)
