"""Several workers on one queue: every stream's projection equals the fold of its events, each
event is applied once, and each deletion's cascade revokes each key once (issue 14, item 5).

Why it holds: a worker's batch starts by taking a transaction-scoped advisory lock per stream
it touches (in stream-id order, so two batches never wait on each other in a cycle) and only
then reads the projections' states of those streams (`events.sql.dialect`). Two workers that
hold events of one stream therefore apply them one after the other, and the second reads what
the first committed (READ COMMITTED: a statement after the lock sees every commit before it):
its events at or below that version are skipped as duplicates, the next ones are applied, and a
gap is filled from the store. The cascade runs after the commit, through the aggregate with an
expected stream version: of two cascades of one deletion, the loser reloads and finds nothing
left to revoke. Two things these tests found broken: the lost race left its pooled connection
in autocommit, so the next batch on it held its locks for its reads only; and a gap fill read
by one projection only cleared the pending row of an event the other did not show yet.

The tests record every write of a projection's version row with a trigger of their own
(stream, version before, version after, which worker), so "applied once" is checked on the
writes themselves: per stream they must chain 0 -> ... -> the last version, each moving on.
"""

from __future__ import annotations

import contextlib
import json
import random
import signal
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest

from cli import bootstrap
from events.aggregate import REVOKED_BY_CASCADE
from events.model import (
    AssessmentCreated,
    AssessmentDeleted,
    CandidateKeyIssued,
    CandidateKeyRevoked,
    RecordedEvent,
)
from events.ports import ConcurrencyConflict
from events.rabbitmq.broker import ensure_topology
from events.sql.engine import libpq_url, make_engine
from projections import default_projections
from projections.projector import apply_batch
from projections.rebuild import rebuild
from tests.integration.helpers import (
    assert_projected_exactly,
    candidates,
    create,
    metadata,
    outbox_count,
    pending_count,
    rows,
    scalar,
    worker_process,
)
from tests.support.system import System
from tests.support.wait import wait_for

WORKERS = 4
#: Small batches, so that a stream's events land in several workers' batches.
PREFETCH = 20
STREAMS = 320
LOAD_THREADS = 4

#: A worker's lock on one stream, as `events.sql.dialect` takes it.
STREAM_LOCK_SQL = "SELECT pg_advisory_xact_lock(hashtextextended(%s::text, 0))"
WAITING_ON_ADVISORY_LOCKS_SQL = (
    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
    "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
)
HELD_ADVISORY_LOCKS_SQL = (
    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND pid <> pg_backend_pid() "
    "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
)

#: Every write of a projection's per-stream version row, in the order they happened (a writer
#: holds the stream's lock while it writes, so per stream the ids are in commit order).
WRITE_LOG_SQL = """
    CREATE TABLE test_projection_writes (
        id bigserial PRIMARY KEY,
        projection text NOT NULL,
        stream_id uuid NOT NULL,
        version_before integer NOT NULL,
        version_after integer NOT NULL,
        writer text NOT NULL
    );
    CREATE FUNCTION test_record_projection_write() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO test_projection_writes (projection, stream_id, version_before, version_after, writer)
        VALUES (
            TG_TABLE_NAME,
            CAST(to_jsonb(NEW) ->> TG_ARGV[0] AS uuid),
            CASE WHEN TG_OP = 'UPDATE' THEN OLD.version ELSE 0 END,
            NEW.version,
            current_setting('application_name')
        );
        RETURN NULL;
    END $$;
    CREATE TRIGGER test_writes AFTER INSERT OR UPDATE ON assessments_view
        FOR EACH ROW EXECUTE FUNCTION test_record_projection_write('id');
    CREATE TRIGGER test_writes AFTER INSERT OR UPDATE ON candidate_keys_versions
        FOR EACH ROW EXECUTE FUNCTION test_record_projection_write('stream_id');
"""


@dataclass(frozen=True)
class Write:
    projection: str
    stream_id: uuid.UUID
    before: int
    after: int
    writer: str


def record_projection_writes(system: System) -> None:
    with psycopg.connect(libpq_url(system.engine), autocommit=True) as conn:
        conn.execute(WRITE_LOG_SQL)


def projection_writes(system: System) -> list[Write]:
    return [
        Write(*row)
        for row in rows(
            system.engine,
            "SELECT projection, stream_id, version_before, version_after, writer "
            "FROM test_projection_writes ORDER BY id",
        )
    ]


def broken_chains(writes: list[Write], last_versions: dict[uuid.UUID, int]) -> list[str]:
    """Per projection and stream, the writes must go 0 -> v1 -> v2 ... -> the stream's last
    version, each one moving on from the one before: no event applied twice, none skipped,
    no newer state overwritten by an older one."""
    chains: dict[tuple[str, uuid.UUID], list[Write]] = defaultdict(list)
    for write in writes:
        chains[(write.projection, write.stream_id)].append(write)
    problems = []
    for projection in ("assessments_view", "candidate_keys_versions"):
        for stream_id, last in last_versions.items():
            chain = chains.pop((projection, stream_id), [])
            reached = 0
            for write in chain:
                if write.before != reached or write.after <= write.before:
                    problems.append(f"{projection} {stream_id}: {reached} then {write}")
                reached = write.after
            if reached != last:
                problems.append(f"{projection} {stream_id}: ends at {reached}, the stream at {last}")
    problems += [f"{projection} {stream_id}: a stream not in the store" for projection, stream_id in chains]
    return problems


def cascade_problems(history: list[RecordedEvent]) -> list[str]:
    """Each key still active when its assessment was deleted is revoked exactly once, by that
    deletion's cascade; a key a reviewer revoked before is not revoked again; no key has two
    revocations, no stream two creations or deletions."""
    problems = []
    facts = Counter()
    for recorded in history:
        event = recorded.event
        subject = (
            event.key_id
            if isinstance(event, CandidateKeyIssued | CandidateKeyRevoked)
            else recorded.stream_id
        )
        facts[(type(event).__name__, subject)] += 1
    problems += [f"{name} {subject} x{count}" for (name, subject), count in facts.items() if count > 1]
    by_stream: dict[uuid.UUID, list[RecordedEvent]] = defaultdict(list)
    for recorded in history:
        by_stream[recorded.stream_id].append(recorded)
    for stream_id, events in by_stream.items():
        deletions = [r for r in events if isinstance(r.event, AssessmentDeleted)]
        if not deletions:
            continue
        deletion = deletions[0]
        before = [r.event for r in events if r.stream_version < deletion.stream_version]
        after = [r for r in events if r.stream_version > deletion.stream_version]
        active = {e.key_id for e in before if isinstance(e, CandidateKeyIssued)} - {
            e.key_id for e in before if isinstance(e, CandidateKeyRevoked)
        }
        cascaded = Counter()
        for recorded in after:
            event = recorded.event
            if not isinstance(event, CandidateKeyRevoked) or event.reason != REVOKED_BY_CASCADE:
                problems.append(f"{stream_id}: {type(event).__name__} after the deletion")
            elif recorded.metadata.get("causationId") != str(deletion.event_id):
                problems.append(f"{stream_id}: a revocation not caused by the deletion")
            else:
                cascaded[event.key_id] += 1
        if cascaded != Counter(active):
            problems.append(f"{stream_id}: active at deletion {sorted(active)}, cascaded {dict(cascaded)}")
    return problems


# --- two workers, consecutive events of one stream, concurrent transactions ------------------


def test_two_workers_holding_consecutive_events_of_one_stream_apply_them_one_after_the_other(
    system, service, org_id
):
    """Worker one holds versions 1-3 of a stream, worker two version 4 (the deletion); both
    batches are in flight at once, held at the stream's lock (taken here first, as a third
    worker in the middle of a batch would). Released, they apply one after the other: no
    deadlock, no overwrite, no event applied twice, and the deletion cascades once."""
    record_projection_writes(system)
    created = create(service, org_id)
    stream = created.stream_id
    issued = service.issue_keys(org_id, stream, candidates(2), metadata(org_id))
    (deletion,) = service.delete(org_id, stream, metadata(org_id))
    engines = [make_engine(system.settings.database_url, pool_size=2) for _ in range(2)]
    handlers = [bootstrap.event_handler(engine) for engine in engines]
    batches = [[created, *issued], [deletion]]
    errors: list[BaseException] = []

    def handle(handler, batch) -> None:
        try:
            handler.handle(batch)
        except BaseException as error:
            errors.append(error)

    try:
        with psycopg.connect(libpq_url(system.engine)) as holder:
            holder.execute(STREAM_LOCK_SQL, (stream,))
            threads = [
                threading.Thread(target=handle, args=pair) for pair in zip(handlers, batches, strict=True)
            ]
            for thread in threads:
                thread.start()
            wait_for(
                lambda: scalar(system.engine, WAITING_ON_ADVISORY_LOCKS_SQL) == 2,
                10,
                "both workers waiting on the stream's lock",
            )
            holder.rollback()
        for thread in threads:
            thread.join(20)
    finally:
        for engine in engines:
            engine.dispose()

    assert not errors
    assert all(not thread.is_alive() for thread in threads)
    assert broken_chains(projection_writes(system), {stream: deletion.stream_version}) == []
    assert sum(h.totals.applied for h in handlers) == deletion.stream_version, "each event applied once"
    history = system.store.load(stream)
    assert cascade_problems(history) == []
    assert sum(h.totals.cascaded for h in handlers) == 2
    assert pending_count(system.engine) == 2, "only the cascade's two revocations wait for a worker"


def unreflected_but_not_pending(system: System) -> list[tuple]:
    """Events whose pending row is gone although a projection does not reflect them yet: a
    reader waiting for its writes would then read a stale view (read-your-writes broken)."""
    return rows(
        system.engine,
        """
        SELECT e.stream_id, e.stream_version, a.version, k.version FROM events e
        LEFT JOIN assessments_view a ON a.id = e.stream_id
        LEFT JOIN candidate_keys_versions k ON k.stream_id = e.stream_id
        WHERE NOT EXISTS (SELECT FROM projection_pending p WHERE p.position = e.position)
          AND (coalesce(a.version, 0) < e.stream_version OR coalesce(k.version, 0) < e.stream_version)
        """,
    )


def test_an_event_appended_while_a_batch_fills_a_gap_stays_pending_until_every_projection_has_it(
    system, service, handler, org_id
):
    """A worker that holds a stream's third event but not its second (another worker has it)
    reads the stream from the store, once per projection. An append between those reads (the
    deletion, here) is then in one projection's gap fill only: its pending row must stay until
    the other has it too, or a reader waiting for the deletion lists the assessment."""
    created = create(service, org_id)
    stream = created.stream_id
    service.issue_keys(org_id, stream, candidates(1), metadata(org_id))
    (third,) = service.issue_keys(org_id, stream, candidates(1), metadata(org_id))
    handler.handle([created])
    loads = []

    def load_then_delete(stream_id, after):
        loads.append(system.store.load(stream_id, after))
        if len(loads) == 1:
            service.delete(org_id, stream, metadata(org_id))
        return loads[-1]

    with system.engine.begin() as conn:
        apply_batch(
            conn, default_projections(), [third], load_then_delete, lock=True, clear_pending=True, commit=True
        )

    assert [len(loaded) for loaded in loads] == [2, 3], (
        "the projections read the store either side of the delete"
    )
    assert unreflected_but_not_pending(system) == []
    assert pending_count(system.engine) == 1, "the deletion waits for its message"


def test_a_lost_append_race_leaves_the_next_batch_on_its_connection_holding_its_stream_locks(
    system, service, org_id
):
    """Several workers cascading one deletion (a sweep and the message, a redelivery) lose
    append races. The append runs on a pooled connection switched to autocommit; a lost race
    must hand it back as it was, or the next batch on it runs outside a transaction: each of
    its stream locks is released as soon as taken, and a worker reading behind another's
    commit writes an older state over a newer one."""
    engine = make_engine(system.settings.database_url, pool_size=1)  # the append's is the batch's
    try:
        store = bootstrap.event_store(engine)
        created = create(service, org_id)
        with pytest.raises(ConcurrencyConflict):
            store.append(created.stream_id, 0, [created.event], metadata(org_id))
        with engine.begin() as conn:
            apply_batch(conn, default_projections(), [created], store.load, lock=True)
            held = scalar(system.engine, HELD_ADVISORY_LOCKS_SQL)
    finally:
        engine.dispose()

    assert held == 2, "the rebuild's swap lock (shared) and the stream's lock, until the commit"


# --- four worker processes under a mixed load -----------------------------------------------


@dataclass
class Load:
    """Per stream, the operations still to do: create, issue keys (a few times), perhaps a
    reviewer's revoke, perhaps a delete (last)."""

    rng: random.Random
    todo: dict[int, list[str]] = field(default_factory=dict)
    streams: dict[int, uuid.UUID] = field(default_factory=dict)

    @classmethod
    def planned(cls, seed: int, count: int) -> Load:
        rng = random.Random(seed)
        load = cls(rng)
        for n in range(count):
            steps = ["issue"] * rng.randint(2, 3)
            if rng.random() < 0.35:
                steps.insert(rng.randint(1, len(steps)), "revoke")
            if rng.random() < 0.45:
                steps.append("delete")
            load.todo[n] = ["create", *steps]
        return load

    def run(self, service, org_id: str) -> None:
        """The streams' steps interleaved at random, so consecutive events of one stream are
        apart in the queue and in different workers' batches."""
        while self.todo:
            n = self.rng.choice(list(self.todo))
            step = self.todo[n].pop(0)
            if not self.todo[n]:
                del self.todo[n]
            if step == "create":
                self.streams[n] = create(service, org_id).stream_id
            elif step == "issue":
                count = self.rng.randint(1, 3)
                service.issue_keys(org_id, self.streams[n], candidates(count), metadata(org_id))
            elif step == "revoke":
                keys = service.load(self.streams[n]).keys
                key_id = self.rng.choice(sorted(k for k, key in keys.items() if not key.revoked))
                service.revoke_key(org_id, self.streams[n], key_id, metadata(org_id))
            else:
                service.delete(org_id, self.streams[n], metadata(org_id))


def run_loads(service, org_id: str, seed: int, streams: int) -> None:
    """`streams` streams' steps from LOAD_THREADS threads at once (each its own streams)."""
    loads = [Load.planned(seed * 100 + n, streams // LOAD_THREADS) for n in range(LOAD_THREADS)]
    errors: list[BaseException] = []

    def run(load: Load) -> None:
        try:
            load.run(service, org_id)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=run, args=(load,)) for load in loads]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors


class LockWaits:
    """Samples, while the load runs, how many of the workers' transactions wait on a stream's
    lock: the evidence that they did hold one stream's events at once."""

    def __init__(self, system: System) -> None:
        self.conn = psycopg.connect(libpq_url(system.engine), autocommit=True)
        self.samples = 0
        self.waiting = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.samples += 1
            self.waiting += bool(self.conn.execute(WAITING_ON_ADVISORY_LOCKS_SQL).fetchone()[0])

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.conn.close()


@contextlib.contextmanager
def worker_processes(system: System, count: int, logs: Path) -> Iterator[list]:
    """`count` worker processes on the system's queue, each naming its database sessions
    (`application_name`) worker-N; killed on leaving if still running."""
    with contextlib.ExitStack() as stack:
        yield [
            stack.enter_context(
                worker_process(
                    system.settings,
                    logs / f"worker-{n}.log",
                    ASSESSMENTS_QUEUE_TYPE=system.settings.queue_type,
                    ASSESSMENTS_WORKER_PREFETCH=str(PREFETCH),
                    PGAPPNAME=f"worker-{n}",
                )
            )
            for n in range(1, count + 1)
        ]


def every_deleted_key_revoked(system: System) -> bool:
    """No key of a deleted assessment is left unrevoked in the store (the cascades are done)."""
    return not scalar(
        system.engine,
        """
        SELECT count(*) FROM events issued
        WHERE issued.type = 'CandidateKeyIssued'
          AND EXISTS (
              SELECT FROM events d WHERE d.stream_id = issued.stream_id AND d.type = 'AssessmentDeleted')
          AND NOT EXISTS (
              SELECT FROM events r WHERE r.stream_id = issued.stream_id AND r.type = 'CandidateKeyRevoked'
                AND r.data ->> 'keyId' = issued.data ->> 'keyId')
        """,
    )


def test_four_worker_processes_on_one_queue_keep_every_stream_its_fold_and_cascade_once(
    system, service, broker, org_id, tmp_path
):
    record_projection_writes(system)
    settings = system.settings
    queue = settings.worker_queue
    ensure_topology(settings.broker_url, settings.exchange, queue, settings.queue_type)
    with worker_processes(system, WORKERS, tmp_path) as workers:

        def all_consuming() -> bool:
            exited = [p.args for p in workers if p.poll() is not None]
            assert not exited, f"a worker exited: {logs_of(tmp_path)}"
            return broker.consumer_count(queue) == WORKERS

        wait_for(all_consuming, 60, f"{WORKERS} workers consuming")
        lock_waits = LockWaits(system)
        started = time.monotonic()
        # Live: the relay publishes as the load appends.
        system.start_relay()
        run_loads(service, org_id, seed=1, streams=STREAMS // 2)
        # A backlog: appended while the relay is away, then published at once, so whole
        # runs of the queue are taken by several workers together. Its events are made to
        # look late first: the workers' sweeps (for events pending over 5 s, whose message
        # was lost) re-read those streams from the store while their messages come too, so
        # a stream is applied, and its deletion cascaded, by several workers and both ways.
        system.stop_relay()
        run_loads(service, org_id, seed=2, streams=STREAMS // 2)
        with system.engine.begin() as conn:
            conn.exec_driver_sql("UPDATE projection_pending SET recorded_at = recorded_at - interval '10 s'")
        wait_for(lambda: "swept" in logs_of(tmp_path), 15, "a worker's sweep")
        system.start_relay()
        wait_for(
            lambda: (
                every_deleted_key_revoked(system)
                and outbox_count(system.engine) == 0
                and pending_count(system.engine) == 0
            ),
            60,
            "every cascade done, everything published and projected",
        )
        drained = time.monotonic() - started
        lock_waits.stop()
        for process in workers:
            process.send_signal(signal.SIGTERM)
        exits = [process.wait(30) for process in workers]

    system.stop_relay()
    assert exits == [0] * WORKERS, logs_of(tmp_path)
    assert outbox_count(system.engine) == 0 and pending_count(system.engine) == 0, "nothing came after"
    assert broker.message_count(queue) == 0
    assert broker.message_count(f"{queue}.dead") == 0, "nothing dead-lettered"
    assert errors_logged(tmp_path) == []
    assert (
        scalar(system.engine, "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()")
        == 0
    )

    history = list(system.store.read_all())
    last_versions = {r.stream_id: r.stream_version for r in history}
    assert len(last_versions) == STREAMS
    assert sum(isinstance(r.event, AssessmentCreated) for r in history) == STREAMS
    writes = projection_writes(system)
    assert broken_chains(writes, last_versions) == []
    assert_projected_exactly(system.engine)
    assert rebuild(system.engine, default_projections(), dry_run=True, workers=1).differences == {}
    assert cascade_problems(history) == []

    writers = defaultdict(set)
    for write in writes:
        writers[write.stream_id].add(write.writer)
    shared = sum(len(names) > 1 for names in writers.values())
    print(
        f"\n{len(history)} events of {STREAMS} streams drained in {drained:.1f}s by {WORKERS} workers; "
        f"{len(writes)} projection writes; {shared} streams written by more than one worker; "
        f"{lock_waits.waiting} of {lock_waits.samples} samples saw a worker waiting on a stream's lock; "
        f"{logs_of(tmp_path).count('swept')} sweeps"
    )
    assert {name for names in writers.values() for name in names} == {f"worker-{n}" for n in range(1, 5)}
    assert shared >= STREAMS // 4, "streams' events were spread over the workers"


def logs_of(folder: Path) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text()}" for p in sorted(folder.glob("worker-*.log")))


def errors_logged(folder: Path) -> list[str]:
    """The workers' log lines (JSON, one per line) at ERROR or above or with an exception, and
    any line that is not a log line (a crash's traceback)."""
    found = []
    for path in sorted(folder.glob("worker-*.log")):
        for line in path.read_text().splitlines():
            try:
                logged = json.loads(line)
            except ValueError:
                found.append(f"{path.name}: {line}")
                continue
            if logged.get("level") in ("ERROR", "CRITICAL") or "exception" in logged:
                found.append(f"{path.name}: {line}")
    return found
