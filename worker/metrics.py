"""The worker's Prometheus metrics (served on `--metrics-port`, see `events.runtime.metrics`)."""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import UTC, datetime

from prometheus_client import Counter, Histogram

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
