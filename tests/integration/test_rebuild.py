"""`projections rebuild`: every view rebuilt from the event store alone equals the live one; a
rebuild swaps atomically while the API serves, never appends, publishes or cascades; and old
(version-1) events are upcast on the way."""

from __future__ import annotations

import bisect
import json
import random
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import timedelta

import psycopg
import pytest
import requests
from sqlalchemy import text

from events import codec, messages
from events.aggregate import rebuild as fold_assessment
from events.keys import key_hint
from events.model import AssessmentCreated, CandidateKeyIssued, utcnow, uuid7
from events.rabbitmq.republish import republish
from events.runtime.settings import Settings
from events.sql.engine import libpq_url
from events.sql.store import PostgresEventStore
from projections import default_projections
from projections.candidate_keys import CandidateKeysProjection
from projections.rebuild import rebuild
from tests.conftest import RUN_ID, new_org
from tests.e2e.helpers import create, issue_keys, listed_ids
from tests.integration.helpers import (
    BrokerClient,
    insert_old_stream,
    outbox_count,
    pending_count,
    rows,
    run_cli,
    scalar,
)
from tests.support.system import Client, System
from tests.support.wait import wait_for

VIEWS = ("assessments_view", "candidate_keys_view", "candidate_keys_versions")


# --- a workload through HTTP -------------------------------------------------------------------


@dataclass
class Workload:
    """What a randomized run of reviewers did, so the test knows what the store must hold."""

    owner: dict[str, Client] = field(default_factory=dict)  # assessment id -> its org's client
    deleted: set[str] = field(default_factory=set)
    active_keys: dict[str, list[str]] = field(default_factory=dict)
    revocations: int = 0  # CandidateKeyRevoked events the store must end up with

    def active(self) -> list[str]:
        return [a for a in self.owner if a not in self.deleted]


def run_workload(clients: list[Client], rng: random.Random, steps: int) -> Workload:
    """Creates, key issues (with and without candidates), revokes and deletes (whose keys the
    worker's cascade revokes) across the organisations of `clients`."""
    done = Workload()
    for step in range(steps):
        active = done.active()
        with_keys = [a for a in active if done.active_keys[a]]
        choice = rng.choices(["create", "issue", "revoke", "delete"], [4, 3, 2, 1])[0]
        if step < len(clients) or not active or choice == "create":
            client = clients[step % len(clients)] if step < len(clients) else rng.choice(clients)
            optional = {"repoUrl": "https://example.com/r", "timeLimitMinutes": rng.randint(10, 600)}
            extra = {k: v for k, v in optional.items() if rng.random() < 0.5}
            made = create(client, expiresInDays=rng.randint(1, 30), **extra)
            done.owner[made["id"]] = client
            done.active_keys[made["id"]] = []
        elif choice == "issue" or (choice == "revoke" and not with_keys):
            assessment = rng.choice(active)
            count = rng.randint(1, 3)
            named = {}
            if rng.random() < 0.5:
                named = {
                    "candidateEmails": [f"c{uuid.uuid4().hex[:8]}@example.com" for _ in range(count)],
                    "candidateNames": [f"Candidate {n}" for n in range(count)],
                }
            keys = issue_keys(done.owner[assessment], assessment, count=count, **named)
            done.active_keys[assessment] += [k["id"] for k in keys]
        elif choice == "revoke":
            assessment = rng.choice(with_keys)
            key_id = done.active_keys[assessment].pop(rng.randrange(len(done.active_keys[assessment])))
            response = done.owner[assessment].delete(f"/v1/assessments/{assessment}/keys/{key_id}")
            assert response.status_code == 200, response.text
            done.revocations += 1
        else:
            assessment = rng.choice(active)
            response = done.owner[assessment].delete(f"/v1/assessments/{assessment}")
            assert response.status_code == 200, response.text
            done.deleted.add(assessment)
            done.revocations += len(done.active_keys[assessment])
            done.active_keys[assessment] = []
    return done


def revoked_events(engine) -> int:
    return scalar(engine, "SELECT count(*) FROM events WHERE type = 'CandidateKeyRevoked'")


def wait_until_settled(engine, revocations: int, timeout: float = 20.0) -> None:
    """The cascade's revocations appended, everything published and projected."""
    wait_for(
        lambda: (
            revoked_events(engine) == revocations and outbox_count(engine) == 0 and pending_count(engine) == 0
        ),
        timeout,
        f"{revocations} revocations, an empty outbox and no pending projection work",
    )


@pytest.fixture
def reviewers(system: System) -> Iterator[list[Client]]:
    """Clients of three organisations on the test's system, started: API, relay and worker."""
    start_everything(system)
    with ExitStack() as stack:
        yield [
            stack.enter_context(Client(system.api.url, new_org(system.settings.database_url).token))
            for _ in range(3)
        ]


def start_everything(system: System) -> System:
    system.start_relay()
    system.start_worker()
    system.start_api()
    return system


# --- one settled system shared by the equality tests -----------------------------------------


@dataclass
class Settled:
    system: System
    workload: Workload
    indexes_before: set[tuple[str, str, str]]


def index_definitions(engine) -> set[tuple[str, str, str]]:
    return {
        tuple(row)
        for row in rows(
            engine,
            "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE tablename = ANY(:tables)",
            tables=list(VIEWS),
        )
    }


def rebuild_tables(engine) -> list[str]:
    return [r[0] for r in rows(engine, "SELECT tablename FROM pg_tables WHERE tablename LIKE '%\\_rebuild%'")]


@pytest.fixture(scope="module")
def settled(databases, broker_url, broker_names) -> Iterator[Settled]:
    """A system that ran a seeded random workload across three organisations and projected it."""
    prefix = f"test-{RUN_ID}-{uuid.uuid4().hex[:6]}"
    names = (f"{prefix}.assessments.events", f"{prefix}.assessments.worker")
    broker_names.append(names)
    system = start_everything(
        System(
            Settings(
                database_url=databases.fresh(),
                broker_url=broker_url,
                exchange=names[0],
                worker_queue=names[1],
                read_wait_seconds=3.0,
            )
        )
    )
    try:
        with ExitStack() as stack:
            clients = [
                stack.enter_context(Client(system.api.url, new_org(system.settings.database_url).token))
                for _ in range(3)
            ]
            workload = run_workload(clients, random.Random(20261128), steps=60)
        wait_until_settled(system.engine, workload.revocations)
        yield Settled(system, workload, index_definitions(system.engine))
    finally:
        system.stop()


def views_as_json(engine) -> dict[str, list]:
    """Every row of every view, in a stable order (for before/after comparisons)."""
    return {
        table: sorted(json.dumps(list(row), default=str) for row in rows(engine, f"TABLE {table}"))
        for table in VIEWS
    }


# --- rebuild equals live -----------------------------------------------------------------------


@pytest.mark.parametrize("workers", [1, 2])
def test_a_dry_run_after_a_random_workload_finds_the_rebuilt_views_equal_to_the_live_ones(settled, workers):
    engine = settled.system.engine
    assert len(settled.workload.owner) >= 20 and settled.workload.deleted and settled.workload.revocations

    report = rebuild(engine, default_projections(), dry_run=True, workers=workers)

    assert report.differences == {}
    assert not report.swapped
    assert report.events == scalar(engine, "SELECT count(*) FROM events")
    assert report.streams == len(settled.workload.owner)
    assert rebuild_tables(engine) == []


FIRST_ASSESSMENT = "SELECT id FROM assessments_view ORDER BY id LIMIT 1"
FIRST_KEY = "SELECT id FROM candidate_keys_view ORDER BY id LIMIT 1"


@pytest.mark.parametrize(
    ("corruption", "found"),
    [
        (
            f"UPDATE assessments_view SET title = 'x' WHERE id = ({FIRST_ASSESSMENT})",
            {"assessments_view": {"onlyRebuilt": 1, "onlyLive": 1}},
        ),
        (
            f"DELETE FROM candidate_keys_view WHERE id = ({FIRST_KEY})",
            {"candidate_keys_view": {"onlyRebuilt": 1, "onlyLive": 0}},
        ),
    ],
    ids=["changed-row", "missing-row"],
)
def test_a_dry_run_reports_a_corrupted_live_view_and_leaves_it_alone(settled, corruption, found):
    engine = settled.system.engine
    with engine.begin() as conn:
        conn.execute(text(corruption))
    corrupted = views_as_json(engine)
    try:
        report = rebuild(engine, default_projections(), dry_run=True, workers=1)

        assert report.differences == found
        assert views_as_json(engine) == corrupted
        assert rebuild_tables(engine) == []
    finally:
        rebuild(engine, default_projections(), workers=1)  # repair for the other tests


@pytest.mark.parametrize("workers", [1, 2])
def test_a_rebuild_swaps_in_the_true_views_and_a_following_dry_run_is_clean(settled, workers):
    engine = settled.system.engine
    truth = views_as_json(engine)
    with engine.begin() as conn:
        conn.execute(text("UPDATE assessments_view SET title = 'x', version = version + 7"))
        conn.execute(text(f"DELETE FROM candidate_keys_view WHERE id = ({FIRST_KEY})"))

    report = rebuild(engine, default_projections(), workers=workers)

    assert report.swapped
    assert views_as_json(engine) == truth
    assert rebuild(engine, default_projections(), dry_run=True, workers=workers).differences == {}


def test_a_rebuild_reports_progress_up_to_the_total(settled):
    engine = settled.system.engine
    seen: list[tuple[int, int]] = []

    rebuild(engine, default_projections(), dry_run=True, workers=2, on_progress=lambda *p: seen.append(p))

    total = scalar(engine, "SELECT count(*) FROM events")
    assert seen and seen[-1] == (total, total)
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)


def test_the_swap_keeps_every_index_name_and_definition_and_leaves_no_rebuild_table(settled):
    engine = settled.system.engine

    rebuild(engine, default_projections(), workers=2)

    after = index_definitions(engine)
    assert after == settled.indexes_before
    assert {
        ("assessments_view", "assessments_view_pkey"),
        ("assessments_view", "assessments_view_active_idx"),
    } <= {(table, name) for table, name, _ in after}
    assert rebuild_tables(engine) == []
    constraints = {
        r[0]
        for r in rows(
            engine, "SELECT conname FROM pg_constraint WHERE conrelid = 'assessments_view'::regclass"
        )
    }
    assert constraints == {"assessments_view_pkey"}


def test_one_projection_can_be_rebuilt_alone(settled):
    engine = settled.system.engine
    before = views_as_json(engine)
    with engine.begin() as conn:
        conn.execute(text("UPDATE candidate_keys_view SET candidate_name = 'x'"))
        conn.execute(text("UPDATE assessments_view SET role = 'x'"))

    report = rebuild(engine, [CandidateKeysProjection()], workers=1)

    assert report.projections == ["candidate_keys"]
    after = views_as_json(engine)
    assert after["candidate_keys_view"] == before["candidate_keys_view"]
    assert after["assessments_view"] != before["assessments_view"]  # not this rebuild's business
    rebuild(engine, default_projections(), workers=1)
    assert views_as_json(engine) == before


def cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(settings, "projections", "rebuild", *args)


def test_the_cli_dry_run_exits_1_naming_what_differs_and_a_rebuild_repairs_it(settled):
    engine, settings = settled.system.engine, settled.system.settings
    truth = views_as_json(engine)
    total = scalar(engine, "SELECT count(*) FROM events")
    with engine.begin() as conn:
        conn.execute(text(f"UPDATE assessments_view SET title = 'x' WHERE id = ({FIRST_ASSESSMENT})"))

    checked = cli(settings, "--all", "--dry-run")
    repaired = cli(settings, "assessments")

    assert checked.returncode == 1, checked.stderr
    assert "assessments_view: 1 rows only in the rebuilt view, 1 only in the live one" in checked.stdout
    assert f"{total:,}/{total:,} events" in checked.stderr  # progress, logged when not on a terminal
    assert repaired.returncode == 0, repaired.stderr
    assert "swapped in" in repaired.stdout
    assert views_as_json(engine) == truth


def test_the_cli_wants_one_projection_or_all(settled):
    done = cli(settled.system.settings)

    assert done.returncode == 2
    assert "--all" in done.stderr


# --- rebuild under traffic ---------------------------------------------------------------------


@dataclass
class Read:
    started: float
    ended: float
    status: int
    ids: frozenset[str] = frozenset()


class Traffic:
    """Reviewers of one organisation reading and writing through HTTP until told to stop."""

    def __init__(self, url: str, token: str, existing: list[str], deadline: float) -> None:
        self.url, self.token, self.existing, self.deadline = url, token, existing, deadline
        self.stop = threading.Event()
        self.reads: list[Read] = []
        self.gets: list[Read] = []
        self.key_reads: list[Read] = []
        self.writes: list[int] = []
        self.created: list[str] = []
        self.errors: list[BaseException] = []
        self.threads = [
            threading.Thread(target=self._guard, args=(fn,), daemon=True) for fn in (self._read, self._write)
        ]

    def __enter__(self) -> Traffic:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(20)
        assert not any(t.is_alive() for t in self.threads), "traffic did not stop"

    def _running(self, count: int) -> bool:
        return not self.stop.is_set() and time.monotonic() < self.deadline and count < 2000

    def _guard(self, loop) -> None:
        try:
            with Client(self.url, self.token) as client:
                loop(client)
        except BaseException as error:
            self.errors.append(error)

    def _read(self, client: Client) -> None:
        rng = random.Random(1)
        while self._running(len(self.reads)):
            started = time.monotonic()
            response = client.get("/v1/assessments")
            ids = frozenset(a["id"] for a in response.json()["assessments"]) if response.ok else frozenset()
            self.reads.append(Read(started, time.monotonic(), response.status_code, ids))
            started = time.monotonic()
            one = client.get(f"/v1/assessments/{rng.choice(self.existing)}")
            self.gets.append(Read(started, time.monotonic(), one.status_code))
            started = time.monotonic()
            keys = client.get(f"/v1/assessments/{self.existing[0]}/keys")
            key_ids = frozenset(k["id"] for k in keys.json()["keys"]) if keys.ok else frozenset()
            self.key_reads.append(Read(started, time.monotonic(), keys.status_code, key_ids))

    def _write(self, client: Client) -> None:
        while self._running(len(self.writes)):
            response = client.post("/v1/assessments", json={"title": "T", "role": "R", "taskBrief": "B"})
            self.writes.append(response.status_code)
            if response.status_code == 201:
                self.created.append(made := response.json()["assessment"]["id"])
                if len(self.created) % 3 == 0:
                    issued = client.post(f"/v1/assessments/{made}/keys", json={"count": 1})
                    self.writes.append(issued.status_code)

    def reads_after(self, moment: float) -> int:
        return sum(1 for r in self.reads if r.started > moment)


def lists_that_lost_something(reads: list[Read]) -> list[tuple[Read, set[str]]]:
    """Reads missing an assessment that an earlier read (one that ended before it started)
    had listed: nothing is deleted here, so a listed assessment must stay listed."""
    by_end = sorted(reads, key=lambda r: r.ended)
    ends = [r.ended for r in by_end]
    seen_before: list[frozenset[str]] = []
    union: frozenset[str] = frozenset()
    for read in by_end:
        union |= read.ids
        seen_before.append(union)
    lost = []
    for read in reads:
        earlier = bisect.bisect_left(ends, read.started)
        if earlier and (missing := seen_before[earlier - 1] - read.ids):
            lost.append((read, missing))
    return lost


def test_reads_during_a_rebuild_never_fail_nor_miss_an_assessment_that_existed_before(system, reviewers):
    clients = reviewers[:2]
    existing = {client: [create(client)["id"] for _ in range(8)] for client in clients}
    for client in clients:
        issue_keys(client, existing[client][0], count=2)
    wait_until_settled(system.engine, 0)
    for client in clients:  # past psycopg's prepare threshold: the swap must not break prepared reads
        for _ in range(12):
            assert client.get("/v1/assessments").status_code == 200
            assert client.get(f"/v1/assessments/{existing[client][1]}").status_code == 200
            assert client.get(f"/v1/assessments/{existing[client][0]}/keys").status_code == 200
    tokens = [client.headers["Authorization"].removeprefix("Bearer ") for client in clients]
    deadline = time.monotonic() + 30

    with ExitStack() as stack:
        traffic = [
            stack.enter_context(Traffic(system.api.url, token, existing[client], deadline))
            for client, token in zip(clients, tokens, strict=True)
        ]
        wait_for(
            lambda: all(len(t.reads) >= 3 and len(t.writes) >= 3 for t in traffic), 15, "traffic flowing"
        )
        began = time.monotonic()
        report = rebuild(system.engine, default_projections(), workers=2)
        ended = time.monotonic()
        wait_for(lambda: all(t.reads_after(ended) >= 2 for t in traffic), 15, "reads after the rebuild")

    assert report.swapped
    for t, client in zip(traffic, clients, strict=True):
        assert t.errors == []
        assert {r.status for r in t.reads} == {200}, [r.status for r in t.reads]
        assert {r.status for r in t.gets} == {200}, [r.status for r in t.gets]
        assert {(r.status, len(r.ids)) for r in t.key_reads} == {(200, 2)}
        assert set(t.writes) == {201}, t.writes
        assert any(r.started < ended and r.ended > began for r in t.reads), "no read overlapped the rebuild"
        missing_existing = [r for r in t.reads if not set(existing[client]) <= r.ids]
        assert missing_existing == []
        assert lists_that_lost_something(t.reads) == []
    wait_until_settled(system.engine, 0)
    assert rebuild(system.engine, default_projections(), dry_run=True).differences == {}
    created = sum(len(t.created) for t in traffic)
    assert scalar(system.engine, "SELECT count(*) FROM assessments_view") == 16 + created


def swap_waiting_for_a_lock(engine) -> bool:
    return bool(
        scalar(
            engine,
            "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
            "WHERE c.relname = 'assessments_view' AND l.mode = 'AccessExclusiveLock' AND NOT l.granted",
        )
    )


def test_a_long_transaction_on_a_view_does_not_stall_the_api_while_a_rebuild_waits_to_swap(system, reviewers):
    client = reviewers[0]
    made = create(client)
    wait_until_settled(system.engine, 0)
    report: list = []
    with psycopg.connect(libpq_url(system.engine)) as report_query:  # e.g. an analyst's session
        report_query.execute("SELECT count(*) FROM assessments_view").fetchone()
        rebuilding = threading.Thread(
            target=lambda: report.append(rebuild(system.engine, default_projections(), workers=1)),
            daemon=True,
        )
        rebuilding.start()
        try:
            wait_for(lambda: swap_waiting_for_a_lock(system.engine), 15, "the swap waiting for its lock")
            started = time.monotonic()
            try:
                status = client.get("/v1/assessments", timeout=3).status_code
            except requests.Timeout:
                status = None
            waited = time.monotonic() - started
        finally:
            report_query.rollback()
        rebuilding.join(30)

    assert (status, waited < 3) == (200, True), f"the list answered {status} after {waited:.1f}s"
    assert report and report[0].swapped
    assert listed_ids(client) == [made["id"]]


def test_rebuilding_an_empty_store_gives_empty_views(system):
    report = rebuild(system.engine, default_projections(), workers=2)

    assert (report.events, report.streams, report.swapped) == (0, 0, True)
    assert all(rows(system.engine, f"TABLE {table}") == [] for table in VIEWS)
    assert rebuild_tables(system.engine) == []


# --- replay is pure ----------------------------------------------------------------------------


def test_a_rebuild_appends_no_event_and_publishes_nothing(system, reviewers):
    broker = BrokerClient(system.settings.broker_url, system.settings.exchange)
    try:
        tap = broker.tap(f"test-{RUN_ID}-{uuid.uuid4().hex[:6]}.tap")
        workload = run_workload(reviewers, random.Random(7), steps=25)
        wait_until_settled(system.engine, workload.revocations)
        events = scalar(system.engine, "SELECT count(*) FROM events")
        published = broker.take(tap, events)
        system.stop_relay()  # what a rebuild might put in the outbox would stay there
        pending_before = pending_count(system.engine)

        rebuild(system.engine, default_projections(), workers=2)

        assert scalar(system.engine, "SELECT count(*) FROM events") == events
        assert outbox_count(system.engine) == 0
        assert pending_count(system.engine) == pending_before
        broker.channel.basic_publish("", tap, b"sentinel")  # after anything the rebuild sent
        (sentinel,) = broker.take(tap, 1)
        assert sentinel[2] == b"sentinel"
        assert len({m[1].message_id for m in published}) == events
    finally:
        broker.close()


def test_a_rebuild_never_runs_the_cascade(system, reviewers):
    client = reviewers[0]
    assessment = create(client)
    issue_keys(client, assessment["id"], count=3)
    wait_until_settled(system.engine, 0)
    system.stop_worker()
    assert client.delete(f"/v1/assessments/{assessment['id']}").status_code == 200
    wait_for(lambda: outbox_count(system.engine) == 0, 10, "the deletion published")

    report = rebuild(system.engine, default_projections(), workers=1)

    assert report.swapped
    assert revoked_events(system.engine) == 0
    assert scalar(system.engine, "SELECT count(*) FROM candidate_keys_view WHERE revoked_at IS NOT NULL") == 0
    assert scalar(system.engine, "SELECT count(*) FROM assessments_view WHERE deleted_at IS NOT NULL") == 1
    system.start_worker()  # the worker, and only the worker, cascades
    wait_until_settled(system.engine, 3)


# --- old events: version 1 of CandidateKeyIssued (`email`, `name`) ---------------------------------


@dataclass
class OldStream:
    stream_id: uuid.UUID
    org_id: str
    key_id: uuid.UUID
    key: str
    email: str
    name: str


#: The candidate fields of a version-1 key event. The first release wrote the version-2 names
#: already (with schema version 1), so those must keep decoding too.
V1_NAMES = ("email", "name")
FIRST_RELEASE_NAMES = ("candidateEmail", "candidateName")


def insert_version_1_stream(engine, org_id: str, names: tuple[str, str] = V1_NAMES) -> OldStream:
    """An assessment and a key as a version-1 writer recorded them: raw rows, with outbox and
    pending rows as the store's own append writes them, and the key's reservation as migration
    0003 leaves it (naming the key's id; `test_key_secrecy` runs that migration itself)."""
    stream_id, key_id, now = uuid7(), uuid7(), utcnow()
    old = OldStream(
        stream_id, org_id, key_id, "PST-ABCD-EFGH", f"old{uuid.uuid4().hex[:6]}@example.com", "Old One"
    )
    created = AssessmentCreated(
        assessment_id=stream_id,
        org_id=org_id,
        title="From 2025",
        role="Backend",
        task_brief="Old brief",
        repo_url=None,
        time_limit_minutes=None,
        expires_in_days=30,
        issue_id=None,
        rubric_id=None,
        created_at=now,
    )
    issued_v1 = {
        "keyId": str(key_id),
        "assessmentId": str(stream_id),
        "orgId": org_id,
        "key": old.key,
        names[0]: old.email,
        names[1]: old.name,
        "orgName": None,
        "expiresAt": codec.format_time(now + timedelta(days=30)),
        "issuedAt": codec.format_time(now),
    }
    with engine.begin() as conn:
        insert_old_stream(
            conn,
            stream_id,
            org_id,
            [("AssessmentCreated", 1, codec.encode(created)), ("CandidateKeyIssued", 1, issued_v1)],
        )
        conn.execute(
            text(
                "INSERT INTO reservations (scope, key, stream_id, subject_id) "
                "VALUES ('candidate_key', :key, :stream, :key_id)"
            ),
            {"key": old.key, "stream": stream_id, "key_id": key_id},
        )
        conn.execute(text("SELECT pg_notify('assessments_outbox', '')"))
    return old


@pytest.fixture
def old_stream(system: System) -> OldStream:
    org = new_org(system.settings.database_url)
    return insert_version_1_stream(system.engine, org.org_id)


@pytest.mark.parametrize("names", [V1_NAMES, FIRST_RELEASE_NAMES], ids=["email-name", "first-release"])
def test_a_version_1_key_event_is_read_from_the_store_with_the_version_2_names(system, names):
    old_stream = insert_version_1_stream(system.engine, new_org(system.settings.database_url).org_id, names)

    loaded = PostgresEventStore(system.engine).load(old_stream.stream_id)

    issued = loaded[1].event
    assert isinstance(issued, CandidateKeyIssued)
    assert (issued.candidate_email, issued.candidate_name) == (old_stream.email, old_stream.name)
    assert issued.key_hint == key_hint(old_stream.key)
    assert (
        scalar(system.engine, "SELECT schema_version FROM events WHERE position = :p", p=loaded[1].position)
        == 1
    )


def test_the_aggregate_folds_version_1_events(system, old_stream):
    state = fold_assessment(old_stream.stream_id, [r.event for r in system.store.load(old_stream.stream_id)])

    assert state.exists and state.version == 2
    key = state.keys[old_stream.key_id]
    assert (key.id, key.candidate_email, key.candidate_name) == (
        old_stream.key_id,
        old_stream.email,
        old_stream.name,
    )


def test_a_rebuilt_keys_view_shows_the_email_of_a_version_1_event(system, old_stream):
    report = rebuild(system.engine, [CandidateKeysProjection()], workers=1)

    assert report.events == 2
    assert rows(system.engine, "SELECT candidate_email, candidate_name FROM candidate_keys_view") == [
        (old_stream.email, old_stream.name)
    ]
    assert old_stream.key not in str(rows(system.engine, "SELECT * FROM candidate_keys_view"))


def test_the_history_shows_a_version_1_event_with_the_version_2_names(system):
    system.start_api()
    org = new_org(system.settings.database_url)
    old = insert_version_1_stream(system.engine, org.org_id)

    with Client(system.api.url, org.token) as client:
        response = client.get(f"/v1/assessments/{old.stream_id}/events")

    issued = response.json()["events"][1]["data"]
    assert (issued["candidateEmail"], issued["candidateName"]) == (old.email, old.name)
    assert not {"email", "name", "key"} & set(issued)


def test_the_relay_and_republish_publish_a_version_1_event_as_the_newest_version(system):
    broker = BrokerClient(system.settings.broker_url, system.settings.exchange)
    try:
        tap = broker.tap(f"test-{RUN_ID}-{uuid.uuid4().hex[:6]}.tap")
        old = insert_version_1_stream(system.engine, new_org(system.settings.database_url).org_id)
        system.start_relay()
        relayed = broker.take(tap, 2)
        republish(system.store.read_all(), system.settings.broker_url, system.settings.exchange, queue=tap)
        republished = broker.take(tap, 2)
    finally:
        broker.close()

    for _, properties, body in (relayed[1], republished[1]):
        envelope = json.loads(body)
        assert envelope["type"] == "CandidateKeyIssued"
        assert envelope["schemaversion"] == CandidateKeyIssued.schema_version == 4
        assert properties.headers["schema_version"] == 4
        data = envelope["data"]
        # Stored in clear before sealing existed, published without the personal data.
        assert not {"email", "name", "key", "candidateEmail", "candidateName"} & set(data)
        assert data["keyHint"] == key_hint(old.key)
        assert old.key.encode() not in body
        assert old.email.encode() not in body and old.name.encode() not in body
        assert messages.decode(body).event.candidate_email is None
    assert relayed[1][2] == republished[1][2]


def test_the_worker_projects_version_1_events_with_the_version_2_names(system):
    org = new_org(system.settings.database_url)
    old = insert_version_1_stream(system.engine, org.org_id)
    start_everything(system)
    wait_until_settled(system.engine, 0)

    with Client(system.api.url, org.token) as client:
        assert listed_ids(client) == [str(old.stream_id)]
        (key,) = client.get(f"/v1/assessments/{old.stream_id}/keys").json()["keys"]

    assert (key["candidateEmail"], key["candidateName"], key["key"]) == (old.email, old.name, old.key)
