"""Small tools the integration tests share: writing through the real service, reading the real
tables, and talking to the real broker with pika."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pika
import psycopg
from sqlalchemy import func, select, text
from sqlalchemy.engine import Engine

from events import messages
from events.aggregate import AssessmentDetails
from events.model import Metadata, RecordedEvent, uuid7
from events.rabbitmq.connection import message_properties
from events.runtime.settings import Settings
from events.service import AssessmentService
from events.sql.engine import libpq_url
from events.sql.tables import events_table, outbox_table, projection_pending_table
from tests.support.wait import wait_for


def separate_processes(stream_id: uuid.UUID) -> contextlib.AbstractContextManager:
    """Turns (`events.service.StreamTurns`) for racers that stand for requests in separate
    processes: no racer waits for another, so they race at the database as such requests do."""
    return contextlib.nullcontext()


def new_org_id() -> str:
    return f"org-{uuid.uuid4().hex[:12]}"


def metadata(org_id: str, actor: str = "reviewer:test") -> Metadata:
    return Metadata(org_id=org_id, actor=actor, correlation_id=str(uuid.uuid4()))


def details(title: str = "Backend API") -> AssessmentDetails:
    return AssessmentDetails(title=title, role="Backend engineer", task_brief="Build the thing")


def create(service: AssessmentService, org_id: str, title: str = "Backend API") -> RecordedEvent:
    return service.create(org_id, details(title), metadata(org_id)).recorded


def candidates(count: int) -> list[tuple[str | None, str | None]]:
    return [(f"candidate{n}@example.com", f"Candidate {n}") for n in range(count)]


def kill_sessions(engine: Engine) -> list[int]:
    """Terminate every session of the engine's database but our own (as a restart or a
    failover would), wait until they are gone, and return their pids."""
    with psycopg.connect(libpq_url(engine), autocommit=True) as admin:
        killed = [
            pid
            for (pid, _) in admin.execute(
                "SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (engine.url.database,),
            )
        ]
        still_there = "SELECT 1 FROM pg_stat_activity WHERE pid = ANY(%s)"
        wait_for(lambda: not admin.execute(still_there, (killed,)).fetchall(), 5, "the killed sessions gone")
    return killed


# --- reading the tables ------------------------------------------------------------------


def scalar(engine: Engine, sql: str, **params: Any) -> Any:
    with engine.connect() as conn:
        return conn.execute(text(sql), params).scalar()


def rows(engine: Engine, sql: str, **params: Any) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(text(sql), params))


def pending_count(engine: Engine) -> int:
    return scalar(engine, "SELECT count(*) FROM projection_pending")


def outbox_count(engine: Engine) -> int:
    return scalar(engine, "SELECT count(*) FROM outbox")


def stream_rows(engine: Engine, stream_id: uuid.UUID) -> dict[str, int]:
    """How many events, outbox rows and pending rows a stream has (on either database)."""
    events, outbox, pending = events_table, outbox_table, projection_pending_table
    queries = {
        "events": select(func.count()).where(events.c.stream_id == stream_id),
        "outbox": select(func.count())
        .select_from(outbox.join(events, events.c.position == outbox.c.position))
        .where(events.c.stream_id == stream_id),
        "pending": select(func.count()).where(pending.c.stream_id == stream_id),
    }
    with engine.connect() as conn:
        return {name: conn.scalar(query) for name, query in queries.items()}


def stream_versions(engine: Engine) -> dict[uuid.UUID, int]:
    return dict(rows(engine, "SELECT stream_id, max(stream_version) FROM events GROUP BY stream_id"))


def assessment_versions(engine: Engine) -> dict[uuid.UUID, int]:
    return dict(rows(engine, "SELECT id, version FROM assessments_view"))


def key_versions(engine: Engine) -> dict[uuid.UUID, int]:
    return dict(rows(engine, "SELECT stream_id, version FROM candidate_keys_versions"))


def assert_projected_exactly(engine: Engine) -> None:
    """Every stream's projections reflect its last event, and every key of the store is
    projected once: nothing lost, nothing applied twice."""
    expected = stream_versions(engine)
    assert assessment_versions(engine) == expected
    assert key_versions(engine) == expected
    issued = scalar(engine, "SELECT count(*) FROM events WHERE type = 'CandidateKeyIssued'")
    assert scalar(engine, "SELECT count(*) FROM candidate_keys_view") == issued


def wait_until_quiet(engine: Engine, timeout: float = 15.0) -> None:
    """Every committed event published by the relay and applied by the worker."""
    wait_for(
        lambda: outbox_count(engine) == 0 and pending_count(engine) == 0,
        timeout,
        "an empty outbox and no pending projection work",
    )


# --- the broker ----------------------------------------------------------------------------


class BrokerClient:
    """A test's own pika connection: publish crafted messages, read a queue of its own."""

    def __init__(self, broker_url: str, exchange: str) -> None:
        self.exchange = exchange
        self.connection = pika.BlockingConnection(pika.URLParameters(broker_url))
        self.channel = self.connection.channel()
        self.channel.confirm_delivery()
        self.channel.exchange_declare(exchange=exchange, exchange_type="topic", durable=True)
        self._own_queues: list[str] = []

    def close(self) -> None:
        with contextlib.suppress(pika.exceptions.AMQPError):
            for queue in self._own_queues:
                self.channel.queue_delete(queue)
        if self.connection.is_open:
            self.connection.close()

    def tap(self, queue: str) -> str:
        """A queue of the test's own that sees every event on the exchange; deleted on close."""
        self.channel.queue_declare(queue=queue, durable=False, auto_delete=False)
        self.channel.queue_bind(queue=queue, exchange=self.exchange, routing_key="#")
        self._own_queues.append(queue)
        return queue

    def publish(
        self,
        body: bytes,
        routing_key: str = "assessment.created",
        properties: pika.BasicProperties | None = None,
    ) -> None:
        self.channel.basic_publish(
            self.exchange,
            routing_key,
            body,
            properties or pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent),
            mandatory=True,
        )

    def publish_event(self, recorded: RecordedEvent) -> None:
        """Exactly what the relay would publish for this event."""
        self.publish(messages.encode(recorded), recorded.event.routing_key, message_properties(recorded))

    def publish_events(self, events: Iterable[RecordedEvent]) -> None:
        for recorded in events:
            self.publish_event(recorded)

    def get(self, queue: str) -> tuple[Any, pika.BasicProperties, bytes] | None:
        method, properties, body = self.channel.basic_get(queue, auto_ack=True)
        return None if method is None else (method, properties, body)

    def take(self, queue: str, count: int, timeout: float = 10.0) -> list[tuple[Any, Any, bytes]]:
        """Wait until `count` messages arrived on `queue` and return them in arrival order."""
        taken: list[tuple[Any, Any, bytes]] = []

        def enough() -> bool:
            while len(taken) < count and (message := self.get(queue)) is not None:
                taken.append(message)
            return len(taken) >= count

        wait_for(enough, timeout, f"{count} messages on {queue} (got {len(taken)})")
        return taken

    def take_events(self, queue: str, event_ids: Iterable[uuid.UUID], timeout: float = 10.0) -> list[Any]:
        """Wait until every one of `event_ids` arrived on `queue` (duplicates allowed: delivery
        is at-least-once) and return the decoded messages in arrival order."""
        missing = set(event_ids)
        received: list[RecordedEvent] = []

        def all_arrived() -> bool:
            while missing and (message := self.get(queue)) is not None:
                decoded = messages.decode(message[2])
                received.append(decoded)
                missing.discard(decoded.event_id)
            return not missing

        wait_for(all_arrived, timeout, f"events on {queue} ({len(missing)} missing)")
        return received

    def message_count(self, queue: str) -> int:
        return self.channel.queue_declare(queue=queue, passive=True).method.message_count

    def consumer_count(self, queue: str) -> int:
        return self.channel.queue_declare(queue=queue, passive=True).method.consumer_count


def envelope_with(recorded: RecordedEvent, **changes: Any) -> bytes:
    """A well-formed envelope of an event with some attributes changed."""
    return json.dumps({**messages.envelope(recorded), **changes}).encode()


def shuffled_chunks(items: Sequence[Any], rng, max_size: int) -> list[list[Any]]:
    items = list(items)
    rng.shuffle(items)
    chunks = []
    while items:
        size = rng.randint(1, max_size)
        chunks.append(items[:size])
        items = items[size:]
    return chunks


PROJECT = Path(__file__).resolve().parents[2]


def run_cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    """`assessments ARGS...` as an operator would run it, configured for the test's system."""
    env = {
        **os.environ,
        "ASSESSMENTS_DATABASE_URL": settings.database_url,
        "ASSESSMENTS_BROKER_URL": settings.broker_url,
        "ASSESSMENTS_EXCHANGE": settings.exchange,
        "ASSESSMENTS_WORKER_QUEUE": settings.worker_queue,
        "ASSESSMENTS_QUEUE_TYPE": settings.queue_type,
    }
    return subprocess.run(
        [sys.executable, "-m", "cli", *args],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@contextlib.contextmanager
def worker_process(settings: Settings, log_file: Path, **env: str) -> Iterator[subprocess.Popen]:
    """`python -m cli worker`, configured like production: by environment variables (`env`
    adds or overrides some). Killed on leaving if it is still running."""
    environment = {
        **os.environ,
        "ASSESSMENTS_DATABASE_URL": settings.database_url,
        "ASSESSMENTS_BROKER_URL": settings.broker_url,
        "ASSESSMENTS_EXCHANGE": settings.exchange,
        "ASSESSMENTS_WORKER_QUEUE": settings.worker_queue,
        "ASSESSMENTS_LOG_LEVEL": "WARNING",
        **env,
    }
    with log_file.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "cli", "worker"],
            cwd=PROJECT,
            env=environment,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(10)


def insert_old_stream(
    conn, stream_id: uuid.UUID, org_id: str, events: Sequence[tuple[str, int, dict]]
) -> None:
    """Write a stream as an older release stored it: each (type, schema version, payload) as
    given, with its outbox and pending rows, bypassing the store (which writes only the newest
    versions). For the tests of upcasting and of migrating old events."""
    meta = json.dumps(
        {"orgId": org_id, "actor": "token:old", "correlationId": "old-request", "causationId": None}
    )
    for version, (type_name, schema_version, data) in enumerate(events, start=1):
        position = conn.scalar(
            text(
                "INSERT INTO events "
                "(event_id, stream_id, stream_version, type, schema_version, data, metadata) "
                "VALUES (:id, :stream, :version, :type, :schema, CAST(:data AS jsonb), CAST(:meta AS jsonb)) "
                "RETURNING position"
            ),
            {
                "id": uuid7(),
                "stream": stream_id,
                "version": version,
                "type": type_name,
                "schema": schema_version,
                "data": json.dumps(data),
                "meta": meta,
            },
        )
        conn.execute(text("INSERT INTO outbox (position) VALUES (:p)"), {"p": position})
        conn.execute(
            text("INSERT INTO projection_pending (position, org_id, stream_id) VALUES (:p, :org, :stream)"),
            {"p": position, "org": org_id, "stream": stream_id},
        )
