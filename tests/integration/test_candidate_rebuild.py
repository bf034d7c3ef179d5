"""A rebuild replays the candidate's events too: after a workload with every event type (consent,
redeem, resume, device checks, complete, both kinds of expiry, revokes by a reviewer and by the
cascade, deletes), projected live by the real relay and worker, the views rebuilt from the store
alone equal the live ones, and a dry run notices a live view that lost any of the candidate's
columns."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from sqlalchemy import text

from cli import bootstrap
from events.aggregate import AssessmentDetails
from events.candidates import CandidateService
from events.model import DEADLINE_PASSED, KEY_EXPIRED
from events.runtime.settings import Settings
from events.service import AssessmentService
from events.webhooks import subscribable
from projections import default_projections
from projections.rebuild import rebuild
from tests.conftest import RUN_ID
from tests.integration.helpers import (
    assert_projected_exactly,
    metadata,
    new_org_id,
    outbox_count,
    pending_count,
    rows,
    run_cli,
    scalar,
)
from tests.support.system import System
from tests.support.wait import wait_for
from worker.expiry import Expiry

VIEWS = ("assessments_view", "candidate_keys_view", "candidate_keys_versions")


# --- the workload --------------------------------------------------------------------------------


@dataclass
class Candidates:
    service: AssessmentService
    candidates: CandidateService

    def invite(self, org_id: str, keys: int, time_limit_minutes: int | None = 30, days: int = 1):
        details = AssessmentDetails(
            title="Backend API",
            role="Backend engineer",
            task_brief="Build the thing",
            time_limit_minutes=time_limit_minutes,
            expires_in_days=days,
        )
        stream = self.service.create(org_id, details, metadata(org_id)).recorded.stream_id
        issued = self.service.issue_keys(
            org_id, stream, [(f"c{n}@example.com", None) for n in range(keys)], metadata(org_id), "Acme"
        )
        strings = self.service.key_strings([r.event.key_id for r in issued])
        return stream, [(r.event.key_id, strings[r.event.key_id]) for r in issued]

    def consent(self, key: str) -> str:
        self.candidates.consent(key, self.candidates.disclosure.hash, str(uuid.uuid4()))
        return key

    def redeem(self, key: str, name: str | None = None):
        return self.candidates.redeem(self.consent(key), str(uuid.uuid4()), name, "c2lnbmluZy1rZXk=")

    def check(self, token: str, checkpoint: str, os_name: str) -> None:
        session = self.candidates.in_session(token)
        self.candidates.check_device(session, checkpoint, {"os": os_name, "cpus": 8}, str(uuid.uuid4()))


@dataclass
class Expected:
    expired: int = 0
    revoked: int = 0


def run_workload(system: System, side: Candidates, org_ids: list[str]) -> Expected:
    """Per organisation: keys completed (after a resume and two device checks, the second on
    another device), run past their session's deadline, left pending until they expire (with and
    without consent), revoked while pending and while active; an assessment without a time limit
    (its session ends when its key does); one deleted with live keys, and one deleted after its
    keys expired (the cascade revokes those too)."""
    expected = Expected()
    deleted_later: list[tuple[str, uuid.UUID]] = []
    for org_id in org_ids:
        stream, keys = side.invite(org_id, 6)
        done, late, _fresh, consented, pending_revoked, active_revoked = keys
        first = side.redeem(done[1], "Ada")
        again = side.redeem(done[1])
        side.check(first.session_token, "start", "linux")
        side.check(again.session_token, "end", "macos")
        side.candidates.complete(done[1], first.key.session_id, str(uuid.uuid4()))
        side.check(side.redeem(late[1]).session_token, "start", "linux")
        side.consent(consented[1])
        side.redeem(active_revoked[1])
        for key_id, _ in (pending_revoked, active_revoked):
            side.service.revoke_key(org_id, stream, key_id, metadata(org_id))
        expected.expired += 3  # late, fresh, consented
        expected.revoked += 2

        _, (unlimited, waiting) = side.invite(org_id, 2, time_limit_minutes=None, days=2)
        side.redeem(unlimited[1])
        side.consent(waiting[1])
        expected.expired += 2

        gone, (active, pending, _untouched) = side.invite(org_id, 3)
        side.redeem(active[1])
        side.consent(pending[1])
        side.service.delete(org_id, gone, metadata(org_id))
        expected.revoked += 3

        later, (active, pending) = side.invite(org_id, 2)
        side.redeem(active[1])
        side.consent(pending[1])
        deleted_later.append((org_id, later))
        expected.expired += 2
        expected.revoked += 2

    wait_until_settled(system.engine, expected.revoked - 2 * len(org_ids), 0)
    system.clock.advance(days=3)  # past every key's end
    Expiry(system.engine, side.service)()  # the worker's own step may record some of them first
    wait_until_settled(system.engine, expected.revoked - 2 * len(org_ids), expected.expired)
    for org_id, stream in deleted_later:
        side.service.delete(org_id, stream, metadata(org_id))
    wait_until_settled(system.engine, expected.revoked, expected.expired)
    return expected


def count_of(engine, event_type: str) -> int:
    return scalar(engine, "SELECT count(*) FROM events WHERE type = :t", t=event_type)


def wait_until_settled(engine, revoked: int, expired: int, timeout: float = 20.0) -> None:
    """The cascade's revocations and the expiries appended, everything published and projected."""
    wait_for(
        lambda: (
            count_of(engine, "CandidateKeyRevoked") == revoked
            and count_of(engine, "CandidateKeyExpired") == expired
            and outbox_count(engine) == 0
            and pending_count(engine) == 0
        ),
        timeout,
        f"{revoked} revocations, {expired} expiries, an empty outbox and no pending projection work",
    )


@dataclass
class Settled:
    system: System
    expected: Expected


@pytest.fixture(scope="module")
def settled(databases, broker_url, broker_names) -> Iterator[Settled]:
    """A system (relay and worker running, on a movable clock) that ran the workload for two
    organisations and projected it."""
    prefix = f"test-{RUN_ID}-{uuid.uuid4().hex[:6]}"
    names = (f"{prefix}.assessments.events", f"{prefix}.assessments.worker")
    broker_names.append(names)
    system = System(
        Settings(
            database_url=databases.fresh(),
            broker_url=broker_url,
            exchange=names[0],
            worker_queue=names[1],
            read_wait_seconds=3.0,
        )
    )
    try:
        system.start_relay()
        system.start_worker()
        service = bootstrap.assessment_service(system.engine, system.store, clock=system.clock)
        side = Candidates(service, bootstrap.candidate_service(system.settings, service))
        expected = run_workload(system, side, [new_org_id(), new_org_id()])
        yield Settled(system, expected)
    finally:
        system.stop()


def views_as_json(engine) -> dict[str, list[str]]:
    """Every row of every view by column name, in a stable order. By name, not position: a
    migrated view (0005 added its columns in its own order) and a rebuilt one (the columns in
    `CandidateKey`'s order) hold the same data in differently ordered columns."""
    return {
        table: sorted(
            json.dumps(dict(row._mapping), sort_keys=True, default=str)
            for row in rows(engine, f"TABLE {table}")
        )
        for table in VIEWS
    }


# --- the workload is what it should be ---------------------------------------------------------


def test_the_workload_recorded_every_event_type_and_the_worker_projected_it(settled):
    engine = settled.system.engine
    recorded = Counter(dict(rows(engine, "SELECT type, count(*) FROM events GROUP BY type")))
    # every type of an assessment's stream (an erasure's is a stream of its own)
    assert set(recorded) == set(subscribable()) - {"CandidateErased"}
    assert recorded["CandidateSessionResumed"] == 2 and recorded["AssessmentDeleted"] == 4
    reasons = Counter(
        r[0] for r in rows(engine, "SELECT data->>'reason' FROM events WHERE type = 'CandidateKeyExpired'")
    )
    assert reasons == {KEY_EXPIRED: 8, DEADLINE_PASSED: 6}
    assert_projected_exactly(engine)
    live = rows(
        engine,
        "SELECT count(*) FILTER (WHERE consent_hash IS NOT NULL),"
        " count(*) FILTER (WHERE session_id IS NOT NULL),"
        " count(*) FILTER (WHERE device_changed), count(*) FILTER (WHERE completed_at IS NOT NULL),"
        " count(*) FILTER (WHERE expired_at IS NOT NULL),"
        " count(*) FILTER (WHERE expired_at IS NOT NULL AND revoked_at IS NOT NULL)"
        " FROM candidate_keys_view",
    )
    consented, in_session, changed, completed, expired, expired_and_revoked = live[0]
    assert (changed, completed, expired, expired_and_revoked) == (2, 2, settled.expected.expired, 4)
    assert consented >= in_session > completed


# --- rebuilt equals live ---------------------------------------------------------------------------


@pytest.mark.parametrize("workers", [1, 2])
def test_a_dry_run_finds_the_rebuilt_views_equal_to_the_live_ones(settled, workers):
    engine = settled.system.engine

    report = rebuild(engine, default_projections(), dry_run=True, workers=workers)

    assert report.differences == {}
    assert not report.swapped
    assert report.events == scalar(engine, "SELECT count(*) FROM events")
    assert report.streams == scalar(engine, "SELECT count(DISTINCT stream_id) FROM events")


def test_the_operators_dry_run_finds_nothing_to_repair(settled):
    checked = run_cli(settled.system.settings, "projections", "rebuild", "--all", "--dry-run")

    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "(dry run)" in checked.stdout
    assert "only in" not in checked.stdout


#: A change to one key's candidate column (of a key that has it set), as a lost or misapplied
#: event would leave it.
CORRUPTIONS = {
    "consent": "consent_hash = 'x' WHERE consent_hash IS NOT NULL",
    "session": "deadline = deadline + interval '1 minute' WHERE session_id IS NOT NULL",
    "device-check": "device_checks = device_checks + 1 WHERE device_checks > 0",
    "completion": "completed_at = NULL WHERE completed_at IS NOT NULL",
    "expiry": "expired_at = NULL WHERE expired_at IS NOT NULL",
}


@pytest.mark.parametrize("change", CORRUPTIONS.values(), ids=CORRUPTIONS.keys())
def test_a_dry_run_notices_a_live_key_that_lost_a_candidate_event_and_a_rebuild_repairs_it(settled, change):
    engine = settled.system.engine
    truth = views_as_json(engine)
    column, where = change.split(" WHERE ")
    with engine.begin() as conn:
        conn.execute(
            text(
                f"UPDATE candidate_keys_view SET {column} WHERE id = "
                f"(SELECT id FROM candidate_keys_view WHERE {where} ORDER BY id LIMIT 1)"
            )
        )

    checked = rebuild(engine, default_projections(), dry_run=True, workers=1)
    repaired = rebuild(engine, default_projections(), workers=1)

    assert checked.differences == {"candidate_keys_view": {"onlyRebuilt": 1, "onlyLive": 1}}
    assert repaired.swapped
    assert views_as_json(engine) == truth
