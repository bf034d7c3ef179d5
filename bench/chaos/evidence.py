"""Once the load is over: wait for the pipeline to drain, then gather what the checks judge (the
event store, the audit queue, the dead letters, a dry-run rebuild and a real one)."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

import pika
import psycopg
from pika.exceptions import AMQPError

from bench.chaos import AUDIT_QUEUE, DEAD_LETTER_QUEUE, QUIESCENCE_TIMEOUT_SECONDS, WORKER_QUEUE
from bench.chaos.records import FaultWindow, ProcessExit, RequestRecord
from bench.chaos.sandbox import Sandbox, libpq


def queue_depth(box: Sandbox, queue: str) -> int:
    """Messages ready in a queue (a worker's unacknowledged batch is not counted: quiescence asks
    for two quiet looks in a row, and a batch a killed worker held is ready again)."""
    connection = pika.BlockingConnection(pika.URLParameters(box.vhost_url))
    try:
        return connection.channel().queue_declare(queue=queue, passive=True).method.message_count
    finally:
        connection.close()


def pipeline_backlog(box: Sandbox) -> dict[str, int]:
    with psycopg.connect(libpq(box.database_url), autocommit=True) as conn:
        outbox = conn.execute("SELECT count(*) FROM outbox").fetchone()[0]
        pending = conn.execute("SELECT count(*) FROM projection_pending").fetchone()[0]
    return {
        "outbox": outbox,
        "projection_pending": pending,
        "worker queue": queue_depth(box, WORKER_QUEUE),
    }


def wait_for_quiescence(box: Sandbox) -> tuple[float | None, dict[str, int]]:
    """Seconds until the outbox, the pending projections and the worker's queue are empty twice
    in a row (a cascade appends after its delete is applied); None past the deadline."""
    started = time.monotonic()
    quiet_once = False
    backlog: dict[str, int] = {}
    while time.monotonic() - started < QUIESCENCE_TIMEOUT_SECONDS:
        try:
            backlog = pipeline_backlog(box)
        except (psycopg.Error, AMQPError) as error:
            backlog = {"error": repr(error)}  # type: ignore[dict-item]
        quiet = not any(backlog.values())
        if quiet and quiet_once:
            return time.monotonic() - started, backlog
        quiet_once = quiet
        time.sleep(1.0)
    return None, backlog


@dataclass(frozen=True)
class StoredRow:
    event_id: str
    stream_id: str
    type: str
    key_id: str | None
    correlation_id: str | None


def read_store(box: Sandbox) -> list[StoredRow]:
    query = (
        "SELECT event_id::text, stream_id::text, type, data->>'keyId', metadata->>'correlationId' "
        "FROM events ORDER BY position"
    )
    with psycopg.connect(libpq(box.database_url), autocommit=True) as conn:
        return [StoredRow(*row) for row in conn.execute(query)]


def read_audit_queue(box: Sandbox) -> list[str]:
    """The message ids of everything the relays published (duplicates included)."""
    connection = pika.BlockingConnection(pika.URLParameters(box.vhost_url))
    ids = []
    try:
        channel = connection.channel()
        expected = channel.queue_declare(queue=AUDIT_QUEUE, passive=True).method.message_count
        for method, properties, _ in channel.consume(AUDIT_QUEUE, auto_ack=True, inactivity_timeout=2):
            if method is None:
                break
            ids.append(properties.message_id)
            if len(ids) >= expected:
                break
        channel.cancel()
    finally:
        connection.close()
    return ids


def rebuild_projections(box: Sandbox, dry_run: bool) -> tuple[dict[str, int], str | None]:
    """What `assessments projections rebuild --all [--dry-run]` does, in this process and on one
    core (a fresh interpreter costs seconds on a busy machine): per table, the rows only in the
    rebuilt or only in the live view (dry runs); and the error, if it failed."""
    from events.sql.engine import make_engine
    from projections import default_projections
    from projections.rebuild import rebuild

    engine = make_engine(box.database_url, pool_size=2)
    try:
        report = rebuild(engine, default_projections(), dry_run=dry_run, workers=1)
    except Exception as error:
        return {}, repr(error)
    finally:
        engine.dispose()
    return {table: sum(counts.values()) for table, counts in report.differences.items()}, None


@dataclass
class DryRun:
    differences: dict[str, int]  # table -> rows in one of the two views only
    error: str | None


def dry_run_rebuild(box: Sandbox) -> DryRun:
    return DryRun(*rebuild_projections(box, dry_run=True))


def projection_tables() -> list[str]:
    from projections import default_projections

    return [table.name for projection in default_projections() for table in projection.tables]


def snapshot_projections(box: Sandbox) -> Counter:
    """Every row of every projection table, as (table, row as JSON)."""
    rows: Counter = Counter()
    with psycopg.connect(libpq(box.database_url), autocommit=True) as conn:
        for table in projection_tables():
            for (row,) in conn.execute(f'SELECT to_jsonb(t)::text FROM "{table}" t'):
                rows[(table, row)] += 1
    return rows


@dataclass
class RebuildComparison:
    differing: list[tuple[str, str]]  # (table, row) in one snapshot only
    error: str | None


def rebuild_and_compare(box: Sandbox) -> RebuildComparison:
    before = snapshot_projections(box)
    _, error = rebuild_projections(box, dry_run=False)
    after = snapshot_projections(box)
    return RebuildComparison(list(((before - after) + (after - before)).elements()), error)


@dataclass
class Evidence:
    requests: list[RequestRecord]
    windows: list[FaultWindow]
    exits: list[ProcessExit]
    unclean_stops: list[str]
    idempotency: dict[str, list[str]]
    quiescent_after: float | None = None
    backlog: dict[str, int] = field(default_factory=dict)
    store: list[StoredRow] = field(default_factory=list)
    published: list[str] = field(default_factory=list)
    dead_letters: int = 0
    dry_run: DryRun | None = None
    rebuild: RebuildComparison | None = None


def gather(box: Sandbox, evidence: Evidence) -> None:
    evidence.store = read_store(box)
    evidence.published = read_audit_queue(box)
    evidence.dead_letters = queue_depth(box, DEAD_LETTER_QUEUE)
    evidence.dry_run = dry_run_rebuild(box)
    evidence.rebuild = rebuild_and_compare(box)
