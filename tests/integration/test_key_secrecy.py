"""Candidate keys never leave the service: no published message, republished message or
history entry holds an issued key, and neither does the keys projection. The key string lives
only in its reservation, from which the reviewer's listing shows it and a candidate's key is
authenticated; keys recorded in clear by older releases (version 1 and 2 events) are upcast,
and after migration 0003 still authenticate and list."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import timedelta

import pytest
from sqlalchemy import text

from cli.migrate import upgrade
from events import codec
from events.keys import key_hint
from events.model import AssessmentCreated, utcnow, uuid7
from events.service import KEY_SCOPE, CandidateRefused
from events.sql.engine import make_engine
from projections import default_projections
from projections.rebuild import rebuild
from tests.conftest import RUN_ID, new_org
from tests.e2e.helpers import create, issue_keys, listed_keys
from tests.integration.helpers import (
    BrokerClient,
    candidates,
    insert_old_stream,
    metadata,
    outbox_count,
    pending_count,
    rows,
    run_cli,
    scalar,
)
from tests.integration.helpers import create as create_with
from tests.support.system import Client, System
from tests.support.wait import wait_for


def queue_name(what: str) -> str:
    return f"test-{RUN_ID}-{uuid.uuid4().hex[:6]}.{what}"


def leaked(keys: Iterable[str], *texts: str | bytes) -> set[str]:
    """The keys found in any of the texts, whole or without their dashes."""
    found = set()
    for raw in texts:
        haystack = raw.decode() if isinstance(raw, bytes) else raw
        for key in keys:
            if key in haystack or key.removeprefix("PST-").replace("-", "") in haystack:
                found.add(key)
    return found


def everything_in(message) -> str:
    """A message's body, properties and headers, as text to scan."""
    _, properties, body = message
    return f"{body.decode()} {vars(properties)!r}"


def settled(system: System, revocations: int) -> bool:
    revoked = scalar(system.engine, "SELECT count(*) FROM events WHERE type = 'CandidateKeyRevoked'")
    return revoked == revocations and outbox_count(system.engine) == 0 and pending_count(system.engine) == 0


# --- nothing leaves -----------------------------------------------------------------------------


def test_no_published_or_republished_message_and_no_history_entry_holds_an_issued_key(system):
    system.start_relay()
    system.start_worker()
    system.start_api()
    broker = BrokerClient(system.settings.broker_url, system.settings.exchange)
    try:
        tap = broker.tap(queue_name("tap"))
        with Client(system.api.url, new_org(system.settings.database_url).token) as client:
            kept, gone = create(client), create(client)
            issued = issue_keys(
                client,
                kept["id"],
                count=3,
                candidateEmails=["a@example.com", "b@example.com", "c@example.com"],
            )
            issued += issue_keys(client, gone["id"], count=2, orgName="Acme")
            assert client.delete(f"/v1/assessments/{kept['id']}/keys/{issued[0]['id']}").status_code == 200
            assert client.delete(f"/v1/assessments/{gone['id']}").status_code == 200
            wait_for(lambda: settled(system, 1 + 2), 15, "the workload and its cascade published")
            histories = [client.get(f"/v1/assessments/{a['id']}/events") for a in (kept, gone)]
        total = scalar(system.engine, "SELECT count(*) FROM events")
        published = broker.take(tap, total)
        direct = queue_name("direct")
        broker.channel.queue_declare(direct)
        try:
            done = run_cli(system.settings, "events", "republish", "--from-position", "1", "--queue", direct)
            assert done.returncode == 0, done.stderr
            republished = broker.take(direct, total)
        finally:
            broker.channel.queue_delete(direct)
    finally:
        broker.close()

    keys = [key["key"] for key in issued]
    assert len(set(keys)) == 5
    assert [response.status_code for response in histories] == [200, 200]
    assert leaked(keys, *map(everything_in, published)) == set()
    assert leaked(keys, *map(everything_in, republished)) == set()
    assert leaked(keys, *(response.text for response in histories)) == set()
    hints = [
        json.loads(body)["data"]["keyHint"] for _, p, body in published if p.type == "CandidateKeyIssued"
    ]
    assert sorted(hints) == sorted(key_hint(key) for key in keys)
    history_hints = [
        event["data"]["keyHint"]
        for response in histories
        for event in response.json()["events"]
        if event["type"] == "CandidateKeyIssued"
    ]
    assert sorted(history_hints) == sorted(hints)


def test_the_keys_projection_holds_no_key_and_the_reservations_know_each_keys_id(system, service, org_id):
    stream = create_with(service, org_id).stream_id
    issued = service.issue_keys(org_id, stream, candidates(3), metadata(org_id))
    system.start_worker()
    system.start_relay()
    wait_for(lambda: pending_count(system.engine) == 0, 10, "the keys projected")

    strings = service.key_strings([r.event.key_id for r in issued])

    assert set(strings) == {r.event.key_id for r in issued}
    for key_id, key in strings.items():
        assert system.store.reservation(KEY_SCOPE, key).subject_id == key_id
    projected = rows(system.engine, "SELECT * FROM candidate_keys_view")
    assert len(projected) == 3
    assert leaked(strings.values(), repr(projected)) == set()


def test_a_key_whose_reservation_does_not_name_it_is_refused(system, service, org_id):
    """Fail closed: only a reservation that names the key's id says which key a string is."""
    stream = create_with(service, org_id).stream_id
    (issued,) = service.issue_keys(org_id, stream, candidates(1), metadata(org_id))
    (key,) = service.key_strings([issued.event.key_id]).values()
    assert service.authorise_candidate(key, stream).id == stream
    with system.engine.begin() as conn:
        conn.execute(text("UPDATE reservations SET subject_id = NULL WHERE key = :k"), {"k": key})

    with pytest.raises(CandidateRefused):
        service.authorise_candidate(key, stream)


# --- keys an older release recorded in clear, through migration 0003 --------------------------------


@dataclass
class OldKey:
    key_id: uuid.UUID
    key: str


@dataclass
class OldData:
    """What releases before migration 0003 left: events with the keys in clear (versions 1
    and 2), reservations that do not name their key, outbox and pending rows."""

    org_token: str
    assessment: uuid.UUID
    usable: OldKey
    revoked: OldKey
    other_assessment: uuid.UUID
    version_1: OldKey
    events: int

    def keys(self) -> list[str]:
        return [self.usable.key, self.revoked.key, self.version_1.key]


def write_old_data(database_url: str) -> OldData:
    org = new_org(database_url)
    engine = make_engine(database_url, pool_size=1)
    now = utcnow()
    try:
        with engine.begin() as conn:
            assessment, other = uuid7(), uuid7()
            usable, revoked = OldKey(uuid7(), "PST-ABCD-EF7K"), OldKey(uuid7(), "PST-WXYZ-2345")
            version_1 = OldKey(uuid7(), "PST-MNPQ-RS89")
            streams = {
                assessment: [
                    ("AssessmentCreated", 1, codec.encode(_created(assessment, org.org_id, now))),
                    ("CandidateKeyIssued", 2, _issued_v2(assessment, org.org_id, usable, now)),
                    ("CandidateKeyIssued", 2, _issued_v2(assessment, org.org_id, revoked, now)),
                    ("CandidateKeyRevoked", 1, _revoked(assessment, org.org_id, revoked, now)),
                ],
                other: [
                    ("AssessmentCreated", 1, codec.encode(_created(other, org.org_id, now))),
                    ("CandidateKeyIssued", 1, _issued_v1(other, org.org_id, version_1, now)),
                ],
            }
            for stream_id, events in streams.items():
                insert_old_stream(conn, stream_id, org.org_id, events)
            for stream_id, key in [(assessment, usable), (assessment, revoked), (other, version_1)]:
                conn.execute(
                    text("INSERT INTO reservations (scope, key, stream_id) VALUES ('candidate_key', :k, :s)"),
                    {"k": key.key, "s": stream_id},
                )
    finally:
        engine.dispose()
    return OldData(org.token, assessment, usable, revoked, other, version_1, events=6)


def _created(stream_id: uuid.UUID, org_id: str, now) -> AssessmentCreated:
    return AssessmentCreated(
        assessment_id=stream_id,
        org_id=org_id,
        title="From 2026",
        role="Backend",
        task_brief="Old brief",
        expires_in_days=30,
        created_at=now,
    )


def _issued_v2(stream_id: uuid.UUID, org_id: str, key: OldKey, now) -> dict:
    return {
        "keyId": str(key.key_id),
        "assessmentId": str(stream_id),
        "orgId": org_id,
        "key": key.key,
        "candidateEmail": "ada@example.com",
        "candidateName": "Ada",
        "orgName": None,
        "expiresAt": codec.format_time(now + timedelta(days=30)),
        "issuedAt": codec.format_time(now),
    }


def _issued_v1(stream_id: uuid.UUID, org_id: str, key: OldKey, now) -> dict:
    data = _issued_v2(stream_id, org_id, key, now)
    data["email"], data["name"] = data.pop("candidateEmail"), data.pop("candidateName")
    return data


def _revoked(stream_id: uuid.UUID, org_id: str, key: OldKey, now) -> dict:
    return {
        "keyId": str(key.key_id),
        "assessmentId": str(stream_id),
        "orgId": org_id,
        "reason": "revoked",
        "revokedAt": codec.format_time(now),
    }


@pytest.fixture
def upgraded(databases, make_settings) -> Iterator[tuple[System, OldData]]:
    """Old data written at revision 0002, then the database migrated to the head."""
    url = databases.at_revision("0002")
    old = write_old_data(url)
    upgrade(url)
    system = System(make_settings(database_url=url))
    yield system, old
    system.stop()


def test_the_migration_names_each_old_keys_id_in_its_reservation_and_drops_the_projections_copy(upgraded):
    system, old = upgraded

    reserved = dict(rows(system.engine, "SELECT key, subject_id FROM reservations"))
    columns = rows(
        system.engine,
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'candidate_keys_view'",
    )

    assert reserved == {k.key: k.key_id for k in (old.usable, old.revoked, old.version_1)}
    assert "key" not in {name for (name,) in columns}


def test_old_keys_are_published_upcast_without_the_key_and_still_authenticate_and_list(upgraded):
    system, old = upgraded
    broker = BrokerClient(system.settings.broker_url, system.settings.exchange)
    try:
        tap = broker.tap(queue_name("tap"))
        system.start_relay()
        system.start_worker()
        system.start_api()
        published = broker.take(tap, old.events)
    finally:
        broker.close()
    wait_for(lambda: pending_count(system.engine) == 0, 10, "the old events projected")

    issued = [json.loads(body) for _, p, body in published if p.type == "CandidateKeyIssued"]
    assert [(e["schemaversion"], e["data"]["keyHint"]) for e in issued] == [
        (4, "PST-****-**7K"),
        (4, "PST-****-**45"),
        (4, "PST-****-**89"),
    ]
    assert leaked(old.keys(), *map(everything_in, published)) == set()
    with Client(system.api.url, old.org_token) as reviewer, Client(system.api.url) as candidate:
        listed = {str(a): listed_keys(reviewer, str(a)) for a in (old.assessment, old.other_assessment)}
        history = reviewer.get(f"/v1/assessments/{old.assessment}/events")

        def read_as(key: str, assessment: uuid.UUID) -> int:
            return candidate.get(f"/v1/assessments/{assessment}", headers={"X-API-Key": key}).status_code

        assert read_as(old.usable.key, old.assessment) == 200
        assert read_as(old.version_1.key, old.other_assessment) == 200
        assert read_as(old.revoked.key, old.assessment) == 401
        assert read_as(old.usable.key, old.other_assessment) == 401
        assert (
            reviewer.delete(f"/v1/assessments/{old.assessment}/keys/{old.usable.key_id}").status_code == 200
        )
        assert read_as(old.usable.key, old.assessment) == 401
    assert {a: [(k["id"], k["key"]) for k in keys] for a, keys in listed.items()} == {
        str(old.assessment): [(str(old.usable.key_id), old.usable.key)],
        str(old.other_assessment): [(str(old.version_1.key_id), old.version_1.key)],
    }
    assert history.status_code == 200
    assert leaked(old.keys(), history.text) == set()


def test_a_rebuild_over_old_keys_equals_the_live_views(upgraded):
    system, _ = upgraded
    system.start_relay()
    system.start_worker()
    wait_for(lambda: pending_count(system.engine) == 0, 10, "the old events projected")

    report = rebuild(system.engine, default_projections(), dry_run=True, workers=1)

    assert report.events == 6
    assert report.differences == {}
