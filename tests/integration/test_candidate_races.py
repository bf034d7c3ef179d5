"""The candidate's side under concurrency, on the real PostgreSQL: every decision is taken on
the assessment's stream and appended with the version it was taken on, so racers that decide
on the same state cannot both land. Each race is run for many rounds, its racers started
together by a barrier, and judged by what the stream holds:

- concurrent redeems of one key start one session, which every caller resumes;
- a redeem racing the assessment's delete, or the key's revoke, either lands first (and is
  then revoked with the rest) or is refused: no session survives, no redeem follows;
- a complete racing the deadline (and the expiry step) ends the key once, by one or the other,
  judged by the time it was decided at; and the window the rounds reach only now and then (one
  decision landing between the other's decision and its append) is also held open on purpose;
- several expiry steps at once (separate engines, as separate worker processes) record each
  expiry once, a restart records nothing more, and a deleted assessment's keys are revoked,
  never expired.

Time is the service's `MovableClock`, moved, never slept through."""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any

import pytest

from cli import bootstrap
from events.aggregate import (
    REVOKED_BY_CASCADE,
    REVOKED_BY_REVIEWER,
    AssessmentDetails,
    CandidateRefused,
    DeadlinePassed,
)
from events.candidates import CandidateService, Redemption
from events.model import (
    DEADLINE_PASSED,
    KEY_EXPIRED,
    AssessmentDeleted,
    CandidateKeyCompleted,
    CandidateKeyExpired,
    CandidateKeyRedeemed,
    CandidateKeyRevoked,
    CandidateSessionResumed,
    RecordedEvent,
    utcnow,
)
from events.ports import ConcurrencyConflict
from events.service import AssessmentService, StreamTurns
from events.sql.engine import make_engine
from events.sql.store import PostgresEventStore
from projections import default_projections, queries
from projections.projector import apply_batch
from tests.integration.helpers import metadata, rows, separate_processes
from tests.support.system import MovableClock, System
from tests.support.wait import wait_for
from worker.expiry import Expiry

ROUNDS = 15
TIME_LIMIT_MINUTES = 30


# --- the parts: a service on the system's movable clock, and the candidate's side over it -----


class ConflictCountingStore(PostgresEventStore):
    """The real store, counting the appends that lost a race (`ConcurrencyConflict`): a test
    that races and never saw one did not race."""

    def __init__(self, engine) -> None:
        super().__init__(engine)
        self.conflicts: list[uuid.UUID] = []

    def append(self, stream_id, *args, **kwargs) -> list[RecordedEvent]:
        try:
            return super().append(stream_id, *args, **kwargs)
        except ConcurrencyConflict:
            self.conflicts.append(stream_id)  # list.append: safe across threads
            raise


class InterleavingStore(ConflictCountingStore):
    """`before[EventType]` runs once, just before the next append that starts with an event of
    that type: another writer's decision landing between this one's decision and its append,
    the narrowest window of a race, opened on purpose."""

    def __init__(self, engine) -> None:
        super().__init__(engine)
        self.before: dict[type, Callable[[], None]] = {}

    def append(self, stream_id, expected_version, events, *args, **kwargs) -> list[RecordedEvent]:
        if events and (interleave := self.before.pop(type(events[0]), None)):
            interleave()
        return super().append(stream_id, expected_version, events, *args, **kwargs)


@dataclass
class Parts:
    system: System
    store: InterleavingStore
    service: AssessmentService
    candidates: CandidateService

    @property
    def clock(self) -> MovableClock:
        return self.system.clock


@pytest.fixture
def parts(system: System) -> Parts:
    store = InterleavingStore(system.engine)
    # The racers of these tests stand for requests in separate API processes.
    service = bootstrap.assessment_service(system.engine, store, clock=system.clock, turns=separate_processes)
    return Parts(system, store, service, bootstrap.candidate_service(system.settings, service))


@contextmanager
def expiry_processes(system: System, count: int) -> Iterator[list[Expiry]]:
    """`count` expiry steps as separate worker processes run them: each with an engine, a store
    (counting its lost races) and a service of its own, on the system's clock."""
    engines = [make_engine(system.settings.database_url, pool_size=2) for _ in range(count)]
    try:
        yield [
            Expiry(
                engine,
                bootstrap.assessment_service(
                    engine, ConflictCountingStore(engine), clock=system.clock, turns=StreamTurns()
                ),
            )
            for engine in engines
        ]
    finally:
        for engine in engines:
            engine.dispose()


def lost_races(steps: Iterable[Expiry]) -> int:
    return sum(len(step.service.store.conflicts) for step in steps)


# --- writing the scene --------------------------------------------------------------------------


def correlation() -> str:
    return str(uuid.uuid4())


def invite(
    parts: Parts,
    org_id: str,
    keys: int = 1,
    time_limit_minutes: int | None = TIME_LIMIT_MINUTES,
    expires_in_days: int = 7,
) -> tuple[uuid.UUID, dict[uuid.UUID, str]]:
    """An assessment with `keys` keys: its stream, and each key's string by key id."""
    details = AssessmentDetails(
        title="Backend API",
        role="Backend engineer",
        task_brief="Build the thing",
        time_limit_minutes=time_limit_minutes,
        expires_in_days=expires_in_days,
    )
    stream = parts.service.create(org_id, details, metadata(org_id)).recorded.stream_id
    issued = parts.service.issue_keys(
        org_id, stream, [(f"c{n}@example.com", f"Candidate {n}") for n in range(keys)], metadata(org_id)
    )
    key_ids = [r.event.key_id for r in issued]
    strings = parts.service.key_strings(key_ids)
    return stream, {key_id: strings[key_id] for key_id in key_ids}


def consented(parts: Parts, key: str) -> str:
    parts.candidates.consent(key, parts.candidates.disclosure.hash, correlation())
    return key


def redeemed(parts: Parts, key: str) -> Redemption:
    return parts.candidates.redeem(consented(parts, key), correlation())


def one_key(parts: Parts, org_id: str, **options: Any) -> tuple[uuid.UUID, uuid.UUID, str]:
    stream, keys = invite(parts, org_id, 1, **options)
    ((key_id, key),) = keys.items()
    return stream, key_id, key


# --- racing -------------------------------------------------------------------------------------


def race(*racers: Callable[[], Any], action: Callable[[], None] | None = None) -> list[Any]:
    """Run the racers on threads released together by a barrier (after `action`, run by the
    last to arrive); each one's result, or the exception it raised, in the racers' order."""
    barrier = threading.Barrier(len(racers), action=action)
    outcomes: list[Any] = [None] * len(racers)

    def run(index: int, racer: Callable[[], Any]) -> None:
        barrier.wait(20)
        try:
            outcomes[index] = racer()
        except Exception as error:  # the outcome of this racer, judged by the test
            outcomes[index] = error

    threads = [threading.Thread(target=run, args=(n, r), daemon=True) for n, r in enumerate(racers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not any(thread.is_alive() for thread in threads), "a racer never finished"
    return outcomes


# --- reading the stream -------------------------------------------------------------------------


def events_of(parts: Parts, stream: uuid.UUID) -> list[Any]:
    return [r.event for r in parts.store.load(stream)]


def counted(events: Iterable[Any], key_id: uuid.UUID | None = None) -> Counter[str]:
    """Events by type, of one key when `key_id` is given."""
    return Counter(type(e).__name__ for e in events if key_id is None or getattr(e, "key_id", None) == key_id)


def after_first(events: Sequence[Any], kind: type, key_id: uuid.UUID | None = None) -> list[Any]:
    """The events after the first of `kind` (of the key, when given); none when there is none."""
    for index, event in enumerate(events):
        if isinstance(event, kind) and (key_id is None or event.key_id == key_id):
            return list(events[index + 1 :])
    return []


def refused(call: Callable[[], Any]) -> bool:
    try:
        call()
    except CandidateRefused:
        return True
    return False


# --- 1. concurrent redeems ------------------------------------------------------------------------


@pytest.mark.parametrize("racers", [2, 4])
def test_concurrent_redeems_of_one_key_start_one_session_which_every_caller_resumes(parts, org_id, racers):
    for _ in range(ROUNDS):
        stream, key_id, key = one_key(parts, org_id)
        consented(parts, key)

        outcomes = race(*[partial(parts.candidates.redeem, key, correlation()) for _ in range(racers)])

        assert all(isinstance(o, Redemption) for o in outcomes), outcomes
        events = events_of(parts, stream)
        assert counted(events, key_id)["CandidateKeyRedeemed"] == 1
        assert counted(events, key_id)["CandidateSessionResumed"] == racers - 1
        (started,) = [e for e in events if isinstance(e, CandidateKeyRedeemed)]
        assert {o.key.session_id for o in outcomes} == {started.session_id}
        resumed = {e.session_id for e in events if isinstance(e, CandidateSessionResumed)}
        assert resumed <= {started.session_id}
        tokens = {o.session_token for o in outcomes}
        assert len(tokens) == racers
        for token in tokens:
            session = parts.candidates.in_session(token)
            assert (session.key.id, session.key.session_id) == (key_id, started.session_id)
    assert parts.store.conflicts, "no redeem ever lost a race: the racers never overlapped"


# --- 2. and 3. a redeem racing the end of its key ---------------------------------------------


def delete_until_done(parts: Parts, org_id: str, stream: uuid.UUID, behind: bool = False) -> None:
    """A reviewer's delete, retried on a 409. `behind`: after one read of the stream, so that
    it starts a step later than a redeem (which reads a reservation before the stream)."""
    if behind:
        parts.service.load(stream)
    for _ in range(20):
        try:
            parts.service.delete(org_id, stream, metadata(org_id))
            return
        except ConcurrencyConflict:
            continue
    raise AssertionError("the delete kept losing races")


def revoke_until_done(
    parts: Parts, org_id: str, stream: uuid.UUID, key_id: uuid.UUID, behind: bool = False
) -> None:
    """A reviewer's revoke, retried on a 409; `behind` as for `delete_until_done`."""
    if behind:
        parts.service.load(stream)
    for _ in range(20):
        try:
            parts.service.revoke_key(org_id, stream, key_id, metadata(org_id))
            return
        except ConcurrencyConflict:
            continue
    raise AssertionError("the revoke kept losing races")


def redeem_racing_delete(parts: Parts, org_id: str, behind: bool) -> str:
    """One round; its outcome for the redeem."""
    stream, key_id, key = one_key(parts, org_id)
    consented(parts, key)

    redeem, delete = race(
        partial(parts.candidates.redeem, key, correlation()),
        partial(delete_until_done, parts, org_id, stream, behind),
    )

    assert delete is None, delete
    assert isinstance(redeem, Redemption | CandidateRefused), redeem
    events = events_of(parts, stream)
    assert counted(events)["AssessmentDeleted"] == 1
    assert counted(after_first(events, AssessmentDeleted)) == Counter()
    if isinstance(redeem, Redemption):
        assert counted(events, key_id)["CandidateKeyRedeemed"] == 1
        assert refused(partial(parts.candidates.in_session, redeem.session_token)), "before the cascade"
    else:
        assert counted(events, key_id)["CandidateKeyRedeemed"] == 0

    parts.service.cascade_deletion(stream, metadata(org_id))

    events = events_of(parts, stream)
    revoked = [e for e in events if isinstance(e, CandidateKeyRevoked)]
    assert [(e.key_id, e.reason) for e in revoked] == [(key_id, REVOKED_BY_CASCADE)]
    assert counted(after_first(events, AssessmentDeleted)) == Counter(CandidateKeyRevoked=1)
    if isinstance(redeem, Redemption):
        assert refused(partial(parts.candidates.in_session, redeem.session_token))
    assert refused(partial(parts.candidates.redeem, key, correlation()))
    return type(redeem).__name__


def test_a_redeem_racing_the_assessments_delete_never_leaves_an_active_session(parts, org_id):
    outcomes = Counter(redeem_racing_delete(parts, org_id, behind=n % 2 == 1) for n in range(ROUNDS))

    assert outcomes.total() == ROUNDS


def redeem_racing_revoke(
    parts: Parts, org_id: str, stream: uuid.UUID, key_id: uuid.UUID, key: str, behind: bool
):
    consented(parts, key)

    redeem, revoke = race(
        partial(parts.candidates.redeem, key, correlation()),
        partial(revoke_until_done, parts, org_id, stream, key_id, behind),
    )

    assert revoke is None, revoke
    assert isinstance(redeem, Redemption | CandidateRefused), redeem
    events = events_of(parts, stream)
    revoked = [e for e in events if isinstance(e, CandidateKeyRevoked) and e.key_id == key_id]
    assert [e.reason for e in revoked] == [REVOKED_BY_REVIEWER]
    assert counted(after_first(events, CandidateKeyRevoked, key_id), key_id) == Counter()
    assert counted(events, key_id)["CandidateKeyRedeemed"] == (1 if isinstance(redeem, Redemption) else 0)
    if isinstance(redeem, Redemption):
        assert refused(partial(parts.candidates.in_session, redeem.session_token))
    assert refused(partial(parts.candidates.redeem, key, correlation()))
    return type(redeem).__name__


def test_a_redeem_racing_the_keys_revoke_never_leaves_an_active_session(parts, org_id):
    stream, keys = invite(parts, org_id, ROUNDS)

    outcomes = Counter(
        redeem_racing_revoke(parts, org_id, stream, key_id, key, behind=n % 2 == 1)
        for n, (key_id, key) in enumerate(keys.items())
    )

    assert outcomes.total() == ROUNDS


# --- 4. a complete racing the deadline ------------------------------------------------------


def expire_until_ended(parts: Parts, stream: uuid.UUID, key_id: uuid.UUID, within: float = 10.0):
    """The expiry step, run over and over (as fast as it goes) until it recorded the key's
    expiry or finds the key completed; fails after `within` seconds of real time."""
    give_up = utcnow() + timedelta(seconds=within)
    while utcnow() < give_up:
        recorded = parts.service.expire_keys(stream)
        if recorded:
            return [r.event for r in recorded]
        if parts.service.load(stream).keys[key_id].completed_at is not None:
            return []
    raise AssertionError("the key neither expired nor completed")


#: How long before the deadline the racers start, per round: from well before (the complete
#: wins) through a few milliseconds (either may) to exactly at it (the expiry wins).
MARGINS_MS = [500, 20, 10, 8, 6, 5, 4, 3, 2, 2, 1, 1, 0.5, 0, 0]


def complete_racing_the_deadline(parts: Parts, org_id: str, margin_ms: float) -> str:
    """One round; which of the two ended the key."""
    stream, key_id, key = one_key(parts, org_id)
    session = redeemed(parts, key).key
    deadline = session.deadline

    complete, expiry = race(
        partial(parts.candidates.complete, key, session.session_id, correlation()),
        partial(expire_until_ended, parts, stream, key_id),
        action=partial(set_clock, parts.clock, deadline - timedelta(milliseconds=margin_ms)),
    )
    parts.clock.reset()

    events = events_of(parts, stream)
    ended = counted(events, key_id)
    assert ended["CandidateKeyCompleted"] + ended["CandidateKeyExpired"] == 1, ended
    if ended["CandidateKeyCompleted"]:
        (completed,) = [e for e in events if isinstance(e, CandidateKeyCompleted)]
        assert completed.completed_at < deadline
        assert complete == completed.completed_at
        assert expiry == []
        return "completed"
    (expired,) = [e for e in events if isinstance(e, CandidateKeyExpired)]
    assert (expired.expired_at, expired.reason, expired.session_id) == (
        deadline,
        DEADLINE_PASSED,
        session.session_id,
    )
    assert isinstance(complete, DeadlinePassed), complete
    assert expiry == [expired]
    return "expired"


def test_a_complete_racing_its_deadline_and_the_expiry_step_ends_the_key_once(parts, org_id):
    outcomes = Counter(complete_racing_the_deadline(parts, org_id, margin) for margin in MARGINS_MS)

    assert outcomes["completed"] and outcomes["expired"], f"both ends were not seen: {outcomes}"


def set_clock(clock: MovableClock, moment: datetime) -> None:
    clock.offset = moment - utcnow()


def test_a_complete_decided_before_the_deadline_that_loses_its_append_to_the_expiry_is_refused(parts, org_id):
    """The window the racing rounds above reach only now and then, held open."""
    stream, key_id, key = one_key(parts, org_id)
    session = redeemed(parts, key).key
    deadline = session.deadline

    def the_expiry_lands_first() -> None:
        set_clock(parts.clock, deadline)
        assert len(parts.service.expire_keys(stream)) == 1

    parts.store.before[CandidateKeyCompleted] = the_expiry_lands_first
    set_clock(parts.clock, deadline - timedelta(seconds=1))
    with pytest.raises(DeadlinePassed):
        parts.candidates.complete(key, session.session_id, correlation())

    assert parts.store.conflicts == [stream], "the complete's first append did not lose the race"
    events = events_of(parts, stream)
    assert counted(events, key_id)["CandidateKeyCompleted"] == 0
    (expired,) = [e for e in events if isinstance(e, CandidateKeyExpired)]
    assert (expired.expired_at, expired.reason) == (deadline, DEADLINE_PASSED)


def test_an_expiry_that_loses_its_append_to_a_complete_decided_before_the_deadline_records_nothing(
    parts, org_id
):
    stream, key_id, key = one_key(parts, org_id)
    session = redeemed(parts, key).key
    deadline = session.deadline
    completed: list[datetime] = []

    def the_complete_lands_first() -> None:
        set_clock(parts.clock, deadline - timedelta(seconds=1))
        completed.append(parts.candidates.complete(key, session.session_id, correlation()))
        set_clock(parts.clock, deadline)

    parts.store.before[CandidateKeyExpired] = the_complete_lands_first
    set_clock(parts.clock, deadline)
    assert parts.service.expire_keys(stream) == []

    assert parts.store.conflicts == [stream], "the expiry's first append did not lose the race"
    events = events_of(parts, stream)
    assert counted(events, key_id)["CandidateKeyExpired"] == 0
    (event,) = [e for e in events if isinstance(e, CandidateKeyCompleted)]
    assert event.completed_at == completed[0] < deadline
    assert parts.service.expire_keys(stream) == []


# --- 5. expiry exactly once -----------------------------------------------------------------


def project(system: System, streams: Iterable[uuid.UUID]) -> None:
    """Apply the streams to the projections as the worker does, without its cascade: what the
    expiry step reads (`queries.due_to_expire`)."""
    for stream in streams:
        with system.engine.begin() as conn:
            apply_batch(
                conn,
                default_projections(),
                system.store.load(stream),
                system.store.load,
                lock=True,
                clear_pending=True,
                commit=True,
            )


@dataclass
class Scene:
    """One round's assessments: the keys that must expire once each (with when and why), the
    keys that must never expire, and the deleted assessments (before or while the steps ran)."""

    live: list[uuid.UUID]
    due: dict[uuid.UUID, tuple[datetime, str]]
    never: set[uuid.UUID]
    deleted_before: list[uuid.UUID]
    deleted_during: list[uuid.UUID]

    @property
    def streams(self) -> list[uuid.UUID]:
        return self.live + self.deleted_before + self.deleted_during


def set_the_scene(parts: Parts, org_id: str) -> Scene:
    """Live assessments whose keys are pending (with and without consent), active (one with a
    device check), completed and revoked; and assessments with pending and active keys that
    get deleted."""
    scene = Scene([], {}, set(), [], [])
    for _ in range(4):
        stream, keys = invite(parts, org_id, 6, expires_in_days=1)
        scene.live.append(stream)
        (fresh, pending, active, checked, completed, revoked) = keys.items()
        consented(parts, pending[1])
        for _, key in (active, completed):
            redeemed(parts, key)
        session = parts.candidates.in_session(redeemed(parts, checked[1]).session_token)
        parts.candidates.check_device(session, "start", {"os": "linux"}, correlation())
        completed_session = parts.service.load(stream).keys[completed[0]].session_id
        parts.candidates.complete(completed[1], completed_session, correlation())
        parts.service.revoke_key(org_id, stream, revoked[0], metadata(org_id))
        state = parts.service.load(stream)
        for key_id in (fresh[0], pending[0]):
            scene.due[key_id] = (state.keys[key_id].expires_at, KEY_EXPIRED)
        for key_id in (active[0], checked[0]):
            scene.due[key_id] = (state.keys[key_id].deadline, DEADLINE_PASSED)
        scene.never |= {completed[0], revoked[0]}
    for deleted in (scene.deleted_before, scene.deleted_during):
        for _ in range(2):
            stream, keys = invite(parts, org_id, 2, expires_in_days=1)
            (pending, active) = keys.items()
            consented(parts, pending[1])
            redeemed(parts, active[1])
            deleted.append(stream)
    project(parts.system, scene.streams)
    for stream in scene.deleted_before:
        parts.service.delete(org_id, stream, metadata(org_id))
    project(parts.system, scene.deleted_before)  # deleted, not yet cascaded
    return scene


def expired_of(parts: Parts, streams: Iterable[uuid.UUID]) -> list[CandidateKeyExpired]:
    return [e for s in streams for e in events_of(parts, s) if isinstance(e, CandidateKeyExpired)]


def stream_lengths(parts: Parts, streams: Iterable[uuid.UUID]) -> dict[uuid.UUID, int]:
    return {s: len(parts.store.load(s)) for s in streams}


def restart(system: System, count: int) -> list[int]:
    """A restart: `count` new expiry steps of separate processes at once; what each recorded."""
    with expiry_processes(system, count) as steps:
        return race(*steps)


def delete_during(parts: Parts, org_id: str, scene: Scene, late: bool) -> None:
    """The deletions racing the steps; `late`: only once the steps are under way, so that the
    deletions land before, between and after the steps' decisions on those streams."""
    if late:
        wait_for(lambda: expired_of(parts, scene.live), 10, "the steps under way")
    for stream in scene.deleted_during:
        delete_until_done(parts, org_id, stream)


def test_expiry_steps_of_three_processes_at_once_record_each_expiry_once(parts, org_id):
    system = parts.system
    lost = 0
    for round_ in range(6):
        scene = set_the_scene(parts, org_id)
        parts.clock.advance(days=2)  # past every key's end: pending keys' and sessions' alike
        with system.engine.connect() as conn:
            due = set(queries.due_to_expire(conn, parts.clock(), 1000))
        assert due == set(scene.streams) - set(scene.deleted_before)  # the cascade's, not the step's

        with expiry_processes(system, 3) as steps:
            *counts, deleting = race(*steps, partial(delete_during, parts, org_id, scene, round_ % 2 == 1))
            lost += lost_races(steps)

        assert all(isinstance(c, int) for c in counts), counts
        assert deleting is None, deleting
        live_expired = expired_of(parts, scene.live)
        assert Counter(e.key_id for e in live_expired) == Counter(list(scene.due))
        assert {e.key_id: (e.expired_at, e.reason) for e in live_expired} == scene.due
        assert expired_of(parts, scene.deleted_before) == [], "a deleted assessment's key expired"
        for stream in scene.deleted_during:
            assert counted(after_first(events_of(parts, stream), AssessmentDeleted)) == Counter()
            assert set(Counter(e.key_id for e in expired_of(parts, [stream])).values()) <= {1}
        assert sum(counts) == len(expired_of(parts, scene.streams))

        # a restart before the worker projected anything: the stale view names the same
        # streams, and the steps decide nothing on any of them
        lengths = stream_lengths(parts, scene.streams)
        assert restart(system, 2) == [0, 0]
        assert stream_lengths(parts, scene.streams) == lengths

        # the cascade, then the projections: nothing is due, and a restart adds nothing
        for stream in scene.deleted_before + scene.deleted_during:
            parts.service.cascade_deletion(stream, metadata(org_id))
        project(system, scene.streams)
        with system.engine.connect() as conn:
            assert queries.due_to_expire(conn, parts.clock(), 1000) == []
        lengths = stream_lengths(parts, scene.streams)
        assert restart(system, 3) == [0, 0, 0]
        assert stream_lengths(parts, scene.streams) == lengths

        for stream in scene.deleted_before + scene.deleted_during:
            revoked = [e for e in events_of(parts, stream) if isinstance(e, CandidateKeyRevoked)]
            assert sorted(e.key_id for e in revoked) == sorted(parts.service.load(stream).keys)
            assert {e.reason for e in revoked} == {REVOKED_BY_CASCADE}
        assert not scene.never & {e.key_id for e in live_expired}
        projected = rows(
            system.engine,
            "SELECT id, expired_at FROM candidate_keys_view WHERE assessment_id = ANY(:a)",
            a=scene.live,
        )
        assert {r.id: r.expired_at for r in projected if r.expired_at} == {
            key_id: at for key_id, (at, _) in scene.due.items()
        }
    assert lost, "no expiry step ever lost a race: the steps never overlapped"
