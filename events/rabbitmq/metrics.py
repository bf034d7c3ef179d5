"""The relay's Prometheus metrics (served on `--metrics-port`, see `events.runtime.metrics`)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

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
