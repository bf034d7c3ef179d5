"""Endpoints for operators: `/healthz` (the process answers), `/readyz` (it can do its work,
with the outbox backlog, the projection lag and the webhook deliveries waiting)
and `/metrics` (Prometheus). No authentication and nothing secret in the bodies.

`/readyz` is meant to be polled every second by a load balancer or an orchestrator, so it costs
one pooled database round trip for the figures, one for the schema revision, and at most one
bare TCP connect to the broker per second (the result is kept that long; a TCP connect, unlike
an AMQP handshake, leaves no line in RabbitMQ's log). The migrations' head revision is read
from the scripts once, on the first call.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import socket
import threading
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from flask import Flask, Response, current_app, jsonify
from sqlalchemy import func, select, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from api.http import services
from events.runtime import metrics
from events.runtime.settings import broker_urls
from events.sql import invitations
from events.sql.dialect import dialect_of
from events.sql.tables import outbox_table, projection_pending_table
from events.sql.webhooks import PENDING, webhook_deliveries

log = logging.getLogger(__name__)

EXTENSION = "assessments.health"
BROKER_CHECK_SECONDS = 1.0
BROKER_TIMEOUT_SECONDS = 0.5
AMQP_PORTS = {"amqp": 5672, "amqps": 5671}
PROBE_ROUTES = frozenset({"/healthz", "/readyz", "/metrics", "/v1/health"})

Check = dict[str, Any]


def register(app: Flask) -> None:
    app.extensions[EXTENSION] = Readiness()
    app.add_url_rule("/healthz", "healthz", healthz)
    app.add_url_rule("/v1/health", "health", healthz)  # the candidate client's reachability check
    app.add_url_rule("/readyz", "readyz", readyz)
    app.add_url_rule("/metrics", "metrics", metrics_view)


def healthz():
    """Alive: answers without touching the database or the broker."""
    return jsonify({"status": "ok"})


def readyz():
    body = current_app.extensions[EXTENSION].report(services().engine, services().settings.broker_url)
    return jsonify(body), 200 if body["status"] == "ready" else 503


def metrics_view():
    return Response(metrics.exposition(), headers={"Content-Type": metrics.CONTENT_TYPE})


class Readiness:
    """Per app: the cached broker probe, and the last verdict (a change is logged once)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._broker: Check | None = None
        self._broker_checked = 0.0
        self._last_ready: bool | None = None

    def report(self, engine: Engine, broker_url: str) -> dict[str, Any]:
        database, figures = _database(engine)
        checks = {
            "database": database,
            "broker": self.broker(broker_url),
            "migrations": figures.pop("migrations"),
        }
        ready = all(check["status"] in ("ok", "skipped") for check in checks.values())
        self._log_change(ready, checks)
        return {"status": "ready" if ready else "unready", "checks": checks, **figures}

    def broker(self, broker_url: str) -> Check:
        with self._lock:  # one probe at a time; concurrent callers get its result
            if self._broker is None or time.monotonic() - self._broker_checked >= BROKER_CHECK_SECONDS:
                self._broker = probe_broker(broker_url)
                self._broker_checked = time.monotonic()
            return self._broker

    def _log_change(self, ready: bool, checks: dict[str, Check]) -> None:
        if ready == self._last_ready:
            return
        self._last_ready = ready
        if ready:
            log.info("ready")
        else:
            failing = {name: check for name, check in checks.items() if check["status"] == "failing"}
            log.warning("unready: %s", failing, extra={"checks": failing})


def probe_broker(broker_url: str) -> Check:
    """Whether the broker accepts TCP connections. Another kind of broker (the in-process one
    of `assessments dev`) has nothing to probe."""
    parts = urlsplit(broker_url)
    if parts.scheme not in AMQP_PORTS:
        return {"status": "skipped", "reason": f"no network broker ({parts.scheme}://)"}
    started = time.perf_counter()
    failure: OSError | None = None
    for node in broker_urls(broker_url):  # a cluster's nodes: one that answers is enough
        address = urlsplit(node)
        try:
            with socket.create_connection(
                (address.hostname or "localhost", address.port or AMQP_PORTS[address.scheme]),
                BROKER_TIMEOUT_SECONDS,
            ):
                return {"status": "ok", "latencyMs": _ms_since(started)}
        except OSError as error:
            failure = error
    return {"status": "failing", "error": type(failure).__name__}


def _database(engine: Engine) -> tuple[Check, dict[str, Any]]:
    """The database check, the migrations check, the outbox backlog and the projection lag."""
    started = time.perf_counter()
    try:
        with engine.connect() as conn:
            backlog, pending, oldest, webhooks_pending, webhooks_oldest_due, *mail = conn.execute(
                _FIGURES
            ).one()
            latency = _ms_since(started)
            migrations = _migrations(conn)
    except SQLAlchemyError as error:
        unknown = {"status": "unknown", "reason": "the database did not answer"}
        return {"status": "failing", "error": type(getattr(error, "orig", None) or error).__name__}, {
            "migrations": unknown,
            "outboxBacklog": None,
            "projectionLag": None,
            "invitations": None,
            "webhookBacklog": None,
        }
    return {"status": "ok", "latencyMs": latency}, {
        "migrations": migrations,
        "outboxBacklog": backlog,
        "projectionLag": {"pendingEvents": pending, "oldestPendingSeconds": _seconds_since(oldest)},
        "webhookBacklog": {
            "pendingDeliveries": webhooks_pending,
            "oldestDueSeconds": _seconds_since(webhooks_oldest_due),
        },
        "invitations": _invitations(*mail),
    }


def _invitations(pending: int, sending: int, failed: int, oldest_due: datetime | None) -> dict[str, Any]:
    """The notifier's progress, from its table: mails waiting (new, or after a transient
    failure), being sent, failed for good, and how long the most overdue has been due (it
    grows while no notifier runs or the SMTP server keeps failing)."""
    return {
        "pending": pending,
        "sending": sending,
        "failed": failed,
        "overdueSeconds": _seconds_since(oldest_due),
    }


_FIGURES = select(
    select(func.count()).select_from(outbox_table).scalar_subquery(),
    select(func.count()).select_from(projection_pending_table).scalar_subquery(),
    select(func.min(projection_pending_table.c.recorded_at)).scalar_subquery(),
    select(func.count()).where(webhook_deliveries.c.status == PENDING).scalar_subquery(),
    # Due and not sent yet: how far the dispatcher is behind (future retries are not lag).
    select(func.min(webhook_deliveries.c.next_attempt_at))
    .where(webhook_deliveries.c.status == PENDING, webhook_deliveries.c.next_attempt_at <= func.now())
    .scalar_subquery(),
    *invitations.figures(),
)


def _migrations(conn: Connection) -> Check:
    if not dialect_of(conn).migrated:
        return {"status": "skipped", "reason": "schema created from the models (assessments dev)"}
    head = sorted(head_revisions())
    try:
        current = sorted(conn.scalars(text("SELECT version_num FROM alembic_version")))
    except SQLAlchemyError:
        current = []
    status = "ok" if current and current == head else "failing"
    return {"status": status, "current": current, "head": head}


@functools.cache
def head_revisions() -> tuple[str, ...]:
    """The head revision(s) of the migration scripts shipped with this code. Located by module
    spec, not imported: the API does not depend on the migrations package."""
    from alembic.script import ScriptDirectory

    spec = importlib.util.find_spec("migrations")
    if spec is None or not spec.submodule_search_locations:
        return ()
    return tuple(ScriptDirectory(next(iter(spec.submodule_search_locations))).get_heads())


def _seconds_since(moment: datetime | None) -> float:
    if moment is None:
        return 0.0
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return round(max(0.0, (datetime.now(UTC) - moment).total_seconds()), 3)


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)
