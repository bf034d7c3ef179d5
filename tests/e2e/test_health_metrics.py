"""Operating the service over HTTP: health endpoints, Prometheus metrics, one access-log line
per request, the request id followed through the event store, the broker, the relay and the
worker, no secrets in any log line, and the real `assessments api` / `worker` processes (JSON
logs, metrics, clean exit on SIGTERM)."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from events.runtime.settings import Settings
from tests.e2e.helpers import body, create, issue_keys, listed_keys
from tests.integration.helpers import BrokerClient
from tests.support.system import Client, System
from tests.support.wait import wait_for

ROOT = Path(__file__).resolve().parents[2]
OUR_LOGGERS = ("api", "events", "worker", "projections")


def scraped(exposition: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return 0.0


def with_request_id(client: Client, method: str, url: str, **kwargs) -> tuple[str, requests.Response]:
    request_id = str(uuid.uuid4())
    response = client.request(method, url, headers={"X-Request-Id": request_id}, **kwargs)
    return request_id, response


@pytest.fixture
def tap(shared_system: System) -> Iterator[tuple[BrokerClient, str]]:
    """A queue of the test's own bound to the shared system's exchange."""
    broker = BrokerClient(shared_system.settings.broker_url, shared_system.settings.exchange)
    queue = broker.tap(f"{shared_system.settings.exchange}.tap-{uuid.uuid4().hex[:8]}")
    yield broker, queue
    broker.close()


@pytest.fixture
def debug_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Every record of our own packages, DEBUG included (third-party ones stay at WARNING)."""
    for name in OUR_LOGGERS:
        caplog.set_level(logging.DEBUG, logger=name)
    return caplog


def about(caplog: pytest.LogCaptureFixture, logger: str, correlation_id: str) -> list[logging.LogRecord]:
    return [
        record
        for record in caplog.records
        if record.name == logger
        and correlation_id
        in (getattr(record, "correlation_id", None), *getattr(record, "correlation_ids", ()))
    ]


# --- health and metrics -------------------------------------------------------------------


def test_healthz_and_readyz_answer_without_authentication(anonymous):
    alive = anonymous.get("/healthz")
    ready = anonymous.get("/readyz")

    assert (alive.status_code, alive.json()) == (200, {"status": "ok"})
    assert ready.status_code == 200, ready.text
    assert ready.json()["status"] == "ready"
    assert set(ready.json()["checks"]) == {"database", "broker", "migrations"}


def test_metrics_are_exposed_in_the_prometheus_format_and_count_requests(client, anonymous):
    labels = {"method": "GET", "route": "/v1/assessments", "status": "200"}
    before = scraped(anonymous.get("/metrics").text, "assessments_http_requests_total", **labels)

    client.get("/v1/assessments")
    scrape = anonymous.get("/metrics")

    assert scrape.status_code == 200
    assert scrape.headers["Content-Type"].startswith("text/plain")
    assert scraped(scrape.text, "assessments_http_requests_total", **labels) >= before + 1


# --- request id ---------------------------------------------------------------------------


def test_the_request_id_becomes_the_correlation_id_of_the_stored_event_and_the_message(
    client, shared_system, tap
):
    broker, queue = tap

    request_id, response = with_request_id(client, "POST", "/v1/assessments", json=body())

    assert response.status_code == 201, response.text
    assert response.headers["X-Request-Id"] == request_id
    stream = shared_system.store.load(uuid.UUID(response.json()["assessment"]["id"]))
    assert [event.metadata["correlationId"] for event in stream] == [request_id]

    def published() -> tuple | None:
        while (message := broker.get(queue)) is not None:
            if message[1].message_id == str(stream[0].event_id):
                return message
        return None

    _, properties, _ = wait_for(published, 10, "the event's message on the tap queue")
    assert properties.correlation_id == request_id
    assert properties.headers["correlation_id"] == request_id


def test_relay_and_worker_log_the_request_id_of_the_events_they_handle(client, debug_logs):
    request_id, response = with_request_id(client, "POST", "/v1/assessments", json=body())
    assert response.status_code == 201, response.text

    wait_for(lambda: about(debug_logs, "events.rabbitmq.relay", request_id), 10, "the relay's line")
    wait_for(lambda: about(debug_logs, "worker.handler", request_id), 10, "the worker's line")


def test_the_cascade_logs_the_request_id_of_the_deletion(client, debug_logs):
    assessment = create(client)
    issue_keys(client, assessment["id"], count=2)

    request_id, response = with_request_id(client, "DELETE", f"/v1/assessments/{assessment['id']}")
    assert response.status_code == 200, response.text

    def cascade_logged() -> list[logging.LogRecord]:
        lines = about(debug_logs, "worker.handler", request_id)
        return [record for record in lines if record.getMessage().startswith("cascade revoked 2 key(s)")]

    assert wait_for(cascade_logged, 10, "the cascade's line")


# --- logs ---------------------------------------------------------------------------------


def test_each_request_writes_one_access_line_with_route_status_duration_and_request_id(client, caplog):
    assessment = create(client)

    with caplog.at_level(logging.INFO, logger="api.access"):
        request_id, response = with_request_id(client, "GET", f"/v1/assessments/{assessment['id']}")

    assert response.status_code == 200
    lines = [r for r in caplog.records if getattr(r, "request_id", None) == request_id]
    assert len(lines) == 1
    line = lines[0]
    assert (line.name, line.method, line.route, line.status) == (
        "api.access",
        "GET",
        "/v1/assessments/<assessment_id>",
        200,
    )
    assert line.duration_ms > 0
    assert line.org_id == assessment["orgId"]


def test_no_log_record_holds_a_token_or_a_candidate_key(client, org, candidate, shared_system, debug_logs):
    assessment = create(client)
    request_id, issued = with_request_id(
        client, "POST", f"/v1/assessments/{assessment['id']}/keys", json={"count": 2}
    )
    keys = [key["key"] for key in issued.json()["keys"]]
    assert candidate(keys[0]).get(f"/v1/assessments/{assessment['id']}").status_code == 200
    assert candidate("PST-AAAA-BBBB").get(f"/v1/assessments/{assessment['id']}").status_code == 401
    with Client(shared_system.api.url, f"{org.token}x") as wrong_token:
        assert wrong_token.get("/v1/assessments").status_code == 401
    listed_keys(client, assessment["id"])  # waits until the worker applied the keys
    relay_lines = lambda: about(debug_logs, "events.rabbitmq.relay", request_id)  # noqa: E731
    wait_for(relay_lines, 10, "the relay's lines about the keys")

    secrets = [org.token, *keys, "PST-AAAA-BBBB"]
    logged = [
        f"{record.getMessage()} {record.__dict__} {record.exc_text or ''}" for record in debug_logs.records
    ]
    assert sum("api.access" in line for line in logged) >= 5, "the requests were logged"
    leaks = [(secret, line) for line in logged for secret in secrets if secret in line]
    assert leaks == []


# --- the real processes -------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Process:
    """`python -m cli ARGS` with the settings in its environment; stderr kept in a file."""

    def __init__(self, args: list[str], settings: Settings, directory: Path, **env: str) -> None:
        inherited = {k: v for k, v in os.environ.items() if not k.startswith(("ASSESSMENTS_", "PROMETHEUS_"))}
        environment = {
            **inherited,
            "ASSESSMENTS_DATABASE_URL": settings.database_url,
            "ASSESSMENTS_BROKER_URL": settings.broker_url,
            "ASSESSMENTS_EXCHANGE": settings.exchange,
            "ASSESSMENTS_WORKER_QUEUE": settings.worker_queue,
            **env,
        }
        self.stderr_path = directory / f"{args[0]}.stderr"
        with self.stderr_path.open("w") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "cli", *args], cwd=ROOT, env=environment, stderr=stderr
            )

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise

    def log_lines(self) -> list[dict]:
        """Every line of stderr, each of which must be one JSON object."""
        return [json.loads(line) for line in self.stderr_path.read_text().splitlines() if line.strip()]


def answers(url: str) -> requests.Response | None:
    try:
        return requests.get(url, timeout=2)
    except requests.ConnectionError:
        return None


def test_the_api_process_logs_json_lines_merges_its_workers_metrics_and_stops_on_sigterm(
    make_settings, tmp_path
):
    port = free_port()
    api = Process(
        ["api", "--bind", f"127.0.0.1:{port}", "--workers", "2"],
        make_settings(),
        tmp_path,
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "prometheus"),
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: answers(f"{base}/readyz"), 20, "the API to answer")
        for _ in range(20):  # a new connection each: both workers take some
            assert requests.get(f"{base}/v1/assessments", timeout=5).status_code == 401
        exposition = requests.get(f"{base}/metrics", timeout=5).text
    finally:
        code = api.stop()

    labels = {"method": "GET", "route": "/v1/assessments", "status": "401"}
    assert scraped(exposition, "assessments_http_requests_total", **labels) == 20
    assert code == 0
    lines = api.log_lines()
    access = [line for line in lines if line["logger"] == "api.access" and line["status"] == 401]
    assert len(access) == 20
    assert {"method", "route", "path", "duration_ms", "request_id"} <= set(access[0])
    assert any(line["logger"].startswith("gunicorn") for line in lines), "gunicorn's lines as JSON too"


def test_the_worker_process_serves_metrics_on_its_port_and_stops_on_sigterm(make_settings, tmp_path):
    metrics_port = free_port()
    worker = Process(["worker"], make_settings(), tmp_path, ASSESSMENTS_METRICS_PORT=str(metrics_port))
    try:
        scrape = wait_for(lambda: answers(f"http://127.0.0.1:{metrics_port}/metrics"), 20, "the metrics port")
    finally:
        code = worker.stop()

    assert "# TYPE assessments_worker_events_applied_total counter" in scrape.text
    assert code == 0
    messages = [line["message"] for line in worker.log_lines()]
    assert any(message.startswith("worker consuming") for message in messages)
    assert "worker stopped" in messages


def test_the_notifier_process_serves_metrics_on_its_port_logs_json_and_stops_on_sigterm(
    make_settings, tmp_path
):
    from tests.support.smtp import SmtpServer

    metrics_port = free_port()
    smtp = SmtpServer()  # not started: the notifier connects only when it has a mail to send
    settings = make_settings()
    notifier = Process(
        ["notifier"],
        settings,
        tmp_path,
        ASSESSMENTS_METRICS_PORT=str(metrics_port),
        ASSESSMENTS_SMTP_URL=smtp.url,
        ASSESSMENTS_NOTIFIER_QUEUE=settings.notifier_queue,
    )
    try:
        scrape = wait_for(lambda: answers(f"http://127.0.0.1:{metrics_port}/metrics"), 20, "the metrics port")
    finally:
        code = notifier.stop()

    for name in ("mails_sent", "send_failures", "retries", "dead_lettered", "skipped", "duplicates"):
        assert f"# TYPE assessments_notifier_{name}_total counter" in scrape.text
    assert "# TYPE assessments_notifier_queue_depth gauge" in scrape.text
    assert code == 0
    messages = [line["message"] for line in notifier.log_lines()]
    assert f"notifier consuming {settings.notifier_queue}" in messages
    assert "notifier stopped" in messages


def test_the_notifier_refuses_to_start_without_an_smtp_url(make_settings, tmp_path):
    notifier = Process(["notifier"], make_settings(), tmp_path)
    assert notifier.process.wait(30) == 78
    assert "ASSESSMENTS_SMTP_URL" in notifier.stderr_path.read_text()
