"""The notifier's Prometheus metrics (served on `--metrics-port`, see `events.runtime.metrics`)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

mails_sent = Counter("assessments_notifier_mails_sent_total", "Invitations the SMTP server accepted.")
skipped = Counter(
    "assessments_notifier_skipped_total",
    "Invitations not mailed, by reason (assessment_deleted, key_revoked, key_expired, key_used, ...).",
    ["reason"],
)
duplicates = Counter(
    "assessments_notifier_duplicates_total",
    "Deliveries of a key already mailed, skipped, failed or held by another notifier (nothing sent).",
)
send_failures = Counter(
    "assessments_notifier_send_failures_total",
    "Failed sends, by kind (transient: tried again later; permanent: dead-lettered).",
    ["kind"],
)
retries = Counter(
    "assessments_notifier_retries_total",
    "Invitations scheduled for another attempt after a transient failure.",
)
dead_lettered = Counter(
    "assessments_notifier_dead_lettered_total",
    "Messages moved to the notifier's dead-letter queue, by reason (undecodable, refused, gave_up).",
    ["reason"],
)
queue_depth = Gauge(
    "assessments_notifier_queue_depth", "Messages ready in the notifier's queue (read every few seconds)."
)
send_seconds = Histogram(
    "assessments_notifier_send_seconds",
    "Time the SMTP server took to accept one invitation.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
