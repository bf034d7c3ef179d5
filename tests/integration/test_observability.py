"""Health, metrics and logs of the API, relay and worker on the real PostgreSQL and RabbitMQ:
`/healthz` and `/readyz` through the app, counters that move when the work is done, and the
correlation id in the worker's log lines."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator

import pika
import pytest
import requests
from flask import Flask
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from cli import bootstrap
from events.runtime import metrics
from events.runtime.settings import Settings
from tests.integration.helpers import create, metadata, outbox_count, pending_count
from tests.support.wait import wait_for

CLOSED_PORT_BROKER = "amqp://guest:guest@127.0.0.1:1/%2F"
CLOSED_PORT_DATABASE = "postgresql+psycopg://root@127.0.0.1:1/nothing"


@pytest.fixture
def build_app() -> Iterator:
    """Apps on the test's settings, driven with Flask's test client; engines disposed after."""
    built: list[Flask] = []

    def build(settings: Settings) -> Flask:
        app = bootstrap.api_app(settings)
        built.append(app)
        return app

    yield build
    for app in built:
        app.extensions["assessments"].close()


def value(name: str, **labels: str) -> float:
    """A sample of this process's default registry (0 when the series does not exist yet)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


def scraped(exposition: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return 0.0


# --- health -------------------------------------------------------------------------------


def test_healthz_answers_ok_without_touching_the_database_or_the_broker(build_app):
    app = build_app(Settings(database_url=CLOSED_PORT_DATABASE, broker_url=CLOSED_PORT_BROKER))

    response = app.test_client().get("/healthz")

    assert response.status_code == 200
    assert response.json == {"status": "ok"}


def test_readyz_is_ready_when_database_broker_and_migrations_are_fine(build_app, make_settings):
    response = build_app(make_settings()).test_client().get("/readyz")

    assert response.status_code == 200, response.json
    body = response.json
    assert body["status"] == "ready"
    assert {name: check["status"] for name, check in body["checks"].items()} == {
        "database": "ok",
        "broker": "ok",
        "migrations": "ok",
    }
    assert body["checks"]["migrations"]["current"] == body["checks"]["migrations"]["head"] != []
    assert body["outboxBacklog"] == 0
    assert body["projectionLag"] == {"pendingEvents": 0, "oldestPendingSeconds": 0.0}


def test_readyz_is_unready_with_503_when_the_broker_does_not_answer(build_app, make_settings):
    response = build_app(make_settings(broker_url=CLOSED_PORT_BROKER)).test_client().get("/readyz")

    assert response.status_code == 503
    assert response.json["status"] == "unready"
    assert response.json["checks"]["broker"]["status"] == "failing"
    assert response.json["checks"]["database"]["status"] == "ok"


def test_readyz_is_unready_when_the_database_does_not_answer(build_app):
    app = build_app(Settings(database_url=CLOSED_PORT_DATABASE, broker_url=CLOSED_PORT_BROKER))

    response = app.test_client().get("/readyz")

    assert response.status_code == 503
    assert response.json["checks"]["database"]["status"] == "failing"
    assert response.json["outboxBacklog"] is None


def test_readyz_is_unready_when_the_schema_is_not_at_the_migrations_head(build_app, make_settings):
    settings = make_settings()
    app = build_app(settings)
    with app.extensions["assessments"].engine.connect() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = 'an_older_revision'"))

    response = app.test_client().get("/readyz")

    assert response.status_code == 503
    migrations = response.json["checks"]["migrations"]
    assert migrations["status"] == "failing"
    assert migrations["current"] == ["an_older_revision"]


def test_readyz_reports_the_outbox_backlog_and_the_projection_lag(build_app, system, service, org_id):
    for _ in range(3):
        create(service, org_id)  # no relay and no worker running: all three wait

    body = build_app(system.settings).test_client().get("/readyz").json

    assert body["outboxBacklog"] == outbox_count(system.engine) == 3
    assert body["projectionLag"]["pendingEvents"] == pending_count(system.engine) == 3
    assert body["projectionLag"]["oldestPendingSeconds"] >= 0


# --- metrics ------------------------------------------------------------------------------


def test_api_metrics_count_requests_by_route_and_status(build_app, make_settings):
    client = build_app(make_settings()).test_client()
    labels = {"method": "GET", "route": "/v1/assessments/<assessment_id>", "status": "401"}
    before = scraped(client.get("/metrics").text, "assessments_http_requests_total", **labels)

    for _ in range(3):
        assert client.get(f"/v1/assessments/{uuid.uuid4()}").status_code == 401

    after = client.get("/metrics").text
    assert scraped(after, "assessments_http_requests_total", **labels) == before + 3
    assert scraped(after, "assessments_http_request_duration_seconds_count", **labels) == before + 3


def test_unknown_paths_are_counted_under_one_route_label(build_app, make_settings):
    client = build_app(make_settings()).test_client()
    labels = {"method": "GET", "route": "<unmatched>", "status": "404"}
    before = value("assessments_http_requests_total", **labels)

    client.get(f"/no/such/{uuid.uuid4()}")

    assert value("assessments_http_requests_total", **labels) == before + 1


def test_worker_counts_applied_events_and_observes_their_lag(handler, service, org_id):
    applied_before = value("assessments_worker_events_applied_total", projection="assessments")
    lag_before = value("assessments_worker_lag_seconds_count")
    events = [create(service, org_id) for _ in range(4)]

    handler.handle(events)

    assert value("assessments_worker_events_applied_total", projection="assessments") == applied_before + 4
    assert value("assessments_worker_lag_seconds_count") == lag_before + 4


def test_worker_counts_duplicates_skipped(handler, service, org_id):
    events = [create(service, org_id) for _ in range(2)]
    handler.handle(events)
    before = value("assessments_worker_duplicates_skipped_total", projection="assessments")
    lag_before = value("assessments_worker_lag_seconds_count")

    handler.handle(events)

    assert value("assessments_worker_duplicates_skipped_total", projection="assessments") == before + 2
    assert value("assessments_worker_lag_seconds_count") == lag_before, "duplicates have no lag"


def test_worker_counts_gaps_filled_from_the_store(handler, service, org_id):
    stream = create(service, org_id).stream_id
    issued = service.issue_keys(org_id, stream, [(None, None)], metadata(org_id))
    before = value("assessments_worker_gaps_filled_total", projection="assessments")

    handler.handle(issued)  # version 2 without version 1

    assert value("assessments_worker_gaps_filled_total", projection="assessments") == before + 1


def test_worker_counts_and_logs_dead_letters_with_the_correlation_id(broker, start_worker, caplog):
    worker = start_worker()
    correlation_id = str(uuid.uuid4())
    before = value("assessments_worker_dead_lettered_total", reason="undecodable")

    with caplog.at_level(logging.ERROR, logger="worker.consumer"):
        broker.publish(
            b"not json",
            properties=pika.BasicProperties(message_id=str(uuid.uuid4()), correlation_id=correlation_id),
        )
        wait_for(lambda: worker.dead_lettered == 1, 10, "the message dead-lettered")

    assert value("assessments_worker_dead_lettered_total", reason="undecodable") == before + 1
    logged = [r for r in caplog.records if getattr(r, "correlation_id", None) == correlation_id]
    assert [r.levelno for r in logged] == [logging.ERROR]
    assert correlation_id in logged[0].getMessage()


def test_relay_counts_published_events_and_confirm_latency(system, service, org_id):
    published_before = value("assessments_relay_published_total", type="AssessmentCreated")
    confirms_before = value("assessments_relay_confirm_seconds_count")
    for _ in range(3):
        create(service, org_id)

    system.start_relay()
    wait_for(lambda: outbox_count(system.engine) == 0, 10, "the outbox published")

    assert value("assessments_relay_published_total", type="AssessmentCreated") >= published_before + 3
    assert value("assessments_relay_confirm_seconds_count") >= confirms_before + 3


def test_metrics_are_served_on_a_port_of_their_own():
    server = metrics.serve(0, "127.0.0.1")
    try:
        response = requests.get(f"http://127.0.0.1:{server.server_port}/metrics", timeout=5)
    finally:
        server.shutdown()
        server.server_close()

    assert response.status_code == 200
    assert "# TYPE assessments_worker_events_applied_total counter" in response.text
    assert "# TYPE assessments_relay_outbox_backlog gauge" in response.text


# --- logs ---------------------------------------------------------------------------------


def test_the_worker_logs_applied_batches_with_their_correlation_ids(handler, service, org_id, caplog):
    recorded = create(service, org_id)

    with caplog.at_level(logging.DEBUG, logger="worker.handler"):
        handler.handle([recorded])

    correlation_id = recorded.metadata["correlationId"]
    assert any(correlation_id in getattr(r, "correlation_ids", []) for r in caplog.records)


def test_the_cascade_logs_the_correlation_id_of_the_deletion(handler, service, org_id, caplog):
    stream = create(service, org_id).stream_id
    service.issue_keys(org_id, stream, [(None, None)] * 2, metadata(org_id))
    deletion = service.delete(org_id, stream, metadata(org_id))

    with caplog.at_level(logging.INFO, logger="worker.handler"):
        handler.cascade(deletion)

    correlation_id = deletion[0].metadata["correlationId"]
    cascade = [r for r in caplog.records if getattr(r, "correlation_id", None) == correlation_id]
    assert len(cascade) == 1
    assert "revoked 2 key(s)" in cascade[0].getMessage()


def test_readyz_reports_the_invitations_waiting_being_sent_and_failed(build_app, system):
    from datetime import timedelta

    from events.sql.invitations import Invitations

    invitations = Invitations(system.engine, timedelta(minutes=5))
    ids = [uuid.uuid4() for _ in range(4)]
    for key_id in ids:
        invitations.record_and_claim(key_id, uuid.uuid4(), "org-1")
    claims = [invitations.claim(key_id) for key_id in ids]
    assert claims == [None] * 4  # each already claimed when recorded
    with system.engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE invitations SET status = 'pending', next_attempt_at = now() - interval '7 seconds' "
                "WHERE key_id = :k"
            ),
            {"k": ids[0]},
        )
        conn.execute(text("UPDATE invitations SET status = 'failed' WHERE key_id = :k"), {"k": ids[1]})

    body = build_app(system.settings).test_client().get("/readyz").json

    assert body["invitations"]["pending"] == 1
    assert body["invitations"]["sending"] == 2
    assert body["invitations"]["failed"] == 1
    assert body["invitations"]["overdueSeconds"] >= 7
