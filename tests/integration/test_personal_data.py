"""Crypto-shredding of candidates' personal data (`events.personal`) on the real PostgreSQL and
RabbitMQ: the events table, the keys view and a `pg_dump` hold tokens, never an email or a
name; erasing one candidate leaves the others readable; a master key rotation re-wraps the data
keys and touches no event; old clear-text events are sealed in place and stay readable; and a
rebuild and a republish after an erasure show it erased, with no personal data in any message.

(Erasure under concurrency, retention and the whole-database scan: `test_personal_erasure.py`.)"""

from __future__ import annotations

import base64
import dataclasses
import json
import shutil
import subprocess
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import text

from events import codec, messages
from events.crypto.cipher import MasterKeys, UnknownMasterKey, is_token, new_data_key
from events.model import (
    AssessmentCreated,
    CandidateErased,
    CandidateKeyIssued,
    CandidateKeyRedeemed,
    utcnow,
    uuid7,
)
from events.personal import revealed_event, subjects_in
from events.rabbitmq.republish import republish
from events.sql.engine import libpq_url
from events.sql.vault import SqlVault
from projections import default_projections
from projections.rebuild import rebuild
from projections.seal import seal_clear_events
from tests.conftest import RUN_ID
from tests.integration.helpers import rows, run_cli, scalar
from tests.integration.personal_scene import (
    PERSONAL_FIELDS,
    all_tokens,
    issued_data,
    person,
    personal_values_stored,
    raw_events,
    readable,
    running_scene,
    shown,
    view_personal_values,
)
from tests.support.system import ApiServer, Client, System


@pytest.fixture
def scene(system):
    return running_scene(system)


def pg_dump(engine) -> str:
    if shutil.which("pg_dump") is None:
        pytest.skip("pg_dump is not installed: the dump half of this test cannot run")
    done = subprocess.run(
        ["pg_dump", "--data-only", "--no-owner", "--dbname", libpq_url(engine)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


# --- 1. nothing readable at rest ------------------------------------------------------------------


def test_the_events_table_the_keys_view_and_a_dump_hold_tokens_never_an_email_or_a_name(scene):
    ada, alan, grace = person("ada"), person("alan"), person("grace")
    solo, redeemer, late = person("solo")[1], person("redeemer")[1], person("late")[1]
    assessment = scene.assessment()
    emailed = scene.issue(assessment, [ada, alan]) + scene.issue(assessment, [(grace[0], None)])
    (named_only,) = scene.issue_by_service(assessment, [(None, solo)])
    (bare,) = scene.issue_by_service(assessment, [(None, None)])
    scene.redeem(emailed[2]["key"], redeemer)  # grace's key had no name: she gives one
    scene.redeem(scene.key_string(bare.event.key_id), late)  # a key of its own subject
    scene.quiet()
    secrets = [*ada, *alan, grace[0], solo, redeemer, late]

    # The service shows them, so they were stored ...
    keys = scene.keys(assessment)
    assert shown(keys[emailed[0]["id"]]) == (*ada, False)
    assert shown(keys[emailed[2]["id"]]) == (grace[0], redeemer, False)
    assert shown(keys[str(named_only.event.key_id)]) == (None, solo, False)
    assert shown(keys[str(bare.event.key_id)]) == (None, late, False)
    # ... but sealed: the raw events and the keys view hold tokens only.
    assert readable([data for _, _, data in raw_events(scene.engine)], secrets) == []
    stored = personal_values_stored(scene.engine)
    assert all_tokens(stored) and len(stored) == 2 + 2 + 1 + 1 + 2  # emailed keys, solo, two redeems
    assert all_tokens(view_personal_values(scene.engine))
    assert readable([str(r) for r in rows(scene.engine, "SELECT * FROM candidate_keys_view")], secrets) == []
    columns = rows(
        scene.engine,
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'subject_keys' ORDER BY 1",
    )
    assert [c for (c,) in columns] == [
        "created_at",
        "lookup",
        "master_key_id",
        "org_id",
        "subject_id",
        "wrapped_key",
    ]
    assert scalar(scene.engine, "SELECT count(*) FROM subject_keys") == 3 + 2  # three emails, two own

    dump = pg_dump(scene.engine)

    assert scene.org_id in dump and "pd1." in dump  # the dump has the data ...
    assert readable(dump, secrets) == []  # ... and no email or name in it


# --- 2. one erased, the others intact -------------------------------------------------------------


def test_erasing_one_candidate_leaves_the_others_readable_in_the_key_list_and_the_history(scene):
    ada, alan, grace = person("ada"), person("alan"), person("grace")
    first, second = scene.assessment(), scene.assessment()
    keys_one = scene.issue(first, [ada, alan])
    keys_two = scene.issue(second, [ada, grace])  # ada again: the same subject
    scene.redeem(keys_one[1]["key"], "Alan Redeemed")
    scene.quiet()

    scene.erase(ada[0].upper())

    listed_one, listed_two = scene.keys(first), scene.keys(second)
    assert shown(listed_one[keys_one[0]["id"]]) == (None, None, True)
    assert shown(listed_two[keys_two[0]["id"]]) == (None, None, True)
    assert shown(listed_one[keys_one[1]["id"]]) == (*alan, False)
    assert shown(listed_two[keys_two[1]["id"]]) == (*grace, False)
    history_one, history_two = issued_data(scene.history(first)), issued_data(scene.history(second))
    assert (history_one[keys_one[0]["id"]]["candidateEmail"], history_one[keys_one[0]["id"]]["erased"]) == (
        None,
        True,
    )
    assert history_two[keys_two[0]["id"]]["erased"] is True
    assert (
        history_one[keys_one[1]["id"]]["candidateEmail"],
        history_one[keys_one[1]["id"]]["candidateName"],
    ) == alan
    assert "erased" not in history_one[keys_one[1]["id"]]
    assert (
        history_two[keys_two[1]["id"]]["candidateEmail"],
        history_two[keys_two[1]["id"]]["candidateName"],
    ) == grace
    (redeemed,) = [e["data"] for e in scene.history(first) if e["type"] == "CandidateKeyRedeemed"]
    assert redeemed["candidateName"] == "Alan Redeemed"
    assert scalar(scene.engine, "SELECT count(*) FROM events WHERE type = 'CandidateErased'") == 1
    assert scalar(scene.engine, "SELECT count(*) FROM subject_keys") == 2  # alan's, grace's


# --- 4. master key rotation -----------------------------------------------------------------------


def master_keys_text(*pairs: tuple[str, bytes]) -> str:
    return ",".join(f"{key_id}:{base64.b64encode(secret).decode()}" for key_id, secret in pairs)


@pytest.fixture
def key_a_and_b() -> tuple[tuple[str, bytes], tuple[str, bytes]]:
    return ("A", new_data_key()), ("B", new_data_key())


@pytest.fixture
def system_on_key_a(make_settings, key_a_and_b):
    built = System(make_settings(master_keys=master_keys_text(key_a_and_b[0])))
    yield built
    built.stop()


def revealed_personal(vault: SqlVault, system: System) -> dict[tuple[uuid.UUID, str], str | None]:
    """Every personal field of the store, revealed by `vault`: by (event id, field)."""
    events = list(system.store.read_all())
    keys = vault.reader(subjects_in(r.event for r in events))
    found = {}
    for recorded in events:
        shown_event, _ = revealed_event(keys, recorded)
        for name in shown_event.event.personal:
            found[(recorded.event_id, name)] = getattr(shown_event.event, name)
    return found


def test_rotating_the_master_key_rewraps_every_data_key_and_touches_no_event(
    system_on_key_a, key_a_and_b, monkeypatch
):
    key_a, key_b = key_a_and_b
    scene = running_scene(system_on_key_a)
    people = [person(f"p{n}") for n in range(4)]
    assessment = scene.assessment()
    emailed = scene.issue(assessment, people)
    scene.issue_by_service(assessment, [(None, "Solo Rotated")])
    scene.redeem(emailed[0]["key"], "Redeemed Rotated")
    scene.quiet()
    events_before = raw_events(scene.engine)
    subjects = scalar(scene.engine, "SELECT count(*) FROM subject_keys")
    assert subjects == 4 + 1
    assert {m for (m,) in rows(scene.engine, "SELECT master_key_id FROM subject_keys")} == {"A"}
    expected = revealed_personal(
        SqlVault(scene.engine, MasterKeys.parse(master_keys_text(key_a))), scene.system
    )
    assert {v for v in expected.values() if v} == {
        *(v for p in people for v in p),
        "Solo Rotated",
        "Redeemed Rotated",
    }
    with pytest.raises(UnknownMasterKey):  # before the rotation, B alone cannot unwrap
        SqlVault(scene.engine, MasterKeys.parse(master_keys_text(key_b))).reader(
            [row.subject_id for row in rows(scene.engine, "SELECT subject_id FROM subject_keys")]
        )

    monkeypatch.setenv("ASSESSMENTS_MASTER_KEYS", master_keys_text(key_b, key_a))
    done = run_cli(scene.system.settings, "candidates", "rotate-master-key")
    again = run_cli(scene.system.settings, "candidates", "rotate-master-key")

    assert done.returncode == 0, done.stderr
    assert f"re-wrapped {subjects} data key(s) with master key 'B'" in done.stdout
    assert "re-wrapped 0 data key(s)" in again.stdout
    assert {m for (m,) in rows(scene.engine, "SELECT master_key_id FROM subject_keys")} == {"B"}
    assert raw_events(scene.engine) == events_before  # byte for byte
    only_b = SqlVault(scene.engine, MasterKeys.parse(master_keys_text(key_b)))
    assert revealed_personal(only_b, scene.system) == expected
    with pytest.raises(UnknownMasterKey):
        revealed_personal(SqlVault(scene.engine, MasterKeys.parse(master_keys_text(key_a))), scene.system)
    # The API on B alone shows every key as before.
    api = ApiServer(dataclasses.replace(scene.system.settings, master_keys=master_keys_text(key_b)))
    try:
        with Client(api.url, scene.org.token) as client:
            listed = client.get(f"/v1/assessments/{assessment}/keys").json()["keys"]
    finally:
        api.stop()
    assert {(k["candidateEmail"], k["candidateName"]) for k in listed if k["candidateEmail"]} == {
        (people[0][0], people[0][1]),
        *people[1:],
    }


# --- 5. old clear-text events, sealed in place ------------------------------------------------------


@dataclasses.dataclass
class ClearStream:
    stream_id: uuid.UUID
    org_id: str
    emailed_key: uuid.UUID
    named_key: uuid.UUID
    email: str
    name: str
    redeemed_name: str
    solo_name: str


def insert_clear_stream(engine, org_id: str) -> ClearStream:
    """An assessment as writers before sealing stored it, raw rows like
    `test_rebuild.insert_version_1_stream`: a version-3 `CandidateKeyIssued` with an email and a
    name, another with a name only, and a version-1 `CandidateKeyRedeemed` naming the first."""
    stream_id, emailed_key, named_key, now = uuid7(), uuid7(), uuid7(), utcnow()
    email, name = person("old")
    old = ClearStream(
        stream_id, org_id, emailed_key, named_key, email, name, person("oldr")[1], person("olds")[1]
    )
    created = AssessmentCreated(
        assessment_id=stream_id,
        org_id=org_id,
        title="From before sealing",
        role="Backend",
        task_brief="Old brief",
        repo_url=None,
        time_limit_minutes=None,
        expires_in_days=30,
        issue_id=None,
        rubric_id=None,
        created_at=now,
    )

    def issued_v3(key_id: uuid.UUID, hint: str, email: str | None, name: str | None) -> dict:
        event = CandidateKeyIssued(
            key_id, stream_id, org_id, hint, email, name, None, now + timedelta(days=30), now
        )
        data = codec.encode(event)
        del data["subjectId"]
        return data

    redeemed = codec.encode(
        CandidateKeyRedeemed(
            key_id=emailed_key,
            assessment_id=stream_id,
            org_id=org_id,
            session_id=uuid7(),
            candidate_name=old.redeemed_name,
            redeemed_at=now,
            deadline=now + timedelta(days=1),
        )
    )
    del redeemed["subjectId"]
    written = [
        ("AssessmentCreated", 1, codec.encode(created)),
        ("CandidateKeyIssued", 3, issued_v3(emailed_key, "PST-…-AAAA", email, name)),
        ("CandidateKeyIssued", 3, issued_v3(named_key, "PST-…-BBBB", None, old.solo_name)),
        ("CandidateKeyRedeemed", 1, redeemed),
    ]
    meta = json.dumps({"orgId": org_id, "actor": "token:old", "correlationId": "old", "causationId": None})
    with engine.begin() as conn:
        for version, (type_name, schema_version, data) in enumerate(written, start=1):
            position = conn.scalar(
                text(
                    "INSERT INTO events "
                    "(event_id, stream_id, stream_version, type, schema_version, data, metadata) "
                    "VALUES (:id, :stream, :version, :type, :schema, "
                    "CAST(:data AS jsonb), CAST(:meta AS jsonb)) RETURNING position"
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
                text(
                    "INSERT INTO projection_pending (position, org_id, stream_id) VALUES (:p, :org, :stream)"
                ),
                {"p": position, "org": org_id, "stream": stream_id},
            )
        for key, key_id in (
            (f"PST-{uuid.uuid4().hex[:4]}-AAAA", emailed_key),
            (f"PST-{uuid.uuid4().hex[:4]}-BBBB", named_key),
        ):
            conn.execute(
                text(
                    "INSERT INTO reservations (scope, key, stream_id, subject_id) "
                    "VALUES ('candidate_key', :key, :stream, :key_id)"
                ),
                {"key": key, "stream": stream_id, "key_id": key_id},
            )
        conn.execute(text("SELECT pg_notify('assessments_outbox', '')"))
    return old


def test_old_clear_events_are_readable_then_sealed_in_place_and_stay_readable_and_erasable(system, broker):
    tap = broker.tap(f"test-{RUN_ID}-{uuid.uuid4().hex[:6]}.tap")
    scene = running_scene(system)
    old = insert_clear_stream(scene.engine, scene.org_id)
    assessment = str(old.stream_id)
    secrets = [old.email, old.name, old.redeemed_name, old.solo_name]
    published = broker.take(tap, 4)
    scene.quiet()

    def what_the_api_shows():
        keys, history = scene.keys(assessment), scene.history(assessment)
        (redeemed,) = [e["data"]["candidateName"] for e in history if e["type"] == "CandidateKeyRedeemed"]
        return (
            shown(keys[str(old.emailed_key)]),
            shown(keys[str(old.named_key)]),
            {k: (d["candidateEmail"], d["candidateName"]) for k, d in issued_data(history).items()},
            redeemed,
        )

    before = what_the_api_shows()
    assert before == (
        (old.email, old.name, False),
        (None, old.solo_name, False),
        {str(old.emailed_key): (old.email, old.name), str(old.named_key): (None, old.solo_name)},
        old.redeemed_name,
    )
    assert readable([body.decode() for _, _, body in published], secrets) == []
    assert len(readable([data for _, _, data in raw_events(scene.engine)], secrets)) == 4  # in clear
    others_before = [
        {k: v for k, v in json.loads(data).items() if k not in (*PERSONAL_FIELDS.get(t, ()), "subjectId")}
        for t, _, data in raw_events(scene.engine)
    ]

    sealed = run_cli(scene.system.settings, "candidates", "seal")

    assert sealed.returncode == 0, sealed.stderr
    assert "sealed 3 event(s)" in sealed.stdout
    stored = raw_events(scene.engine)
    assert [(t, v) for t, v, _ in stored] == [
        ("AssessmentCreated", 1),
        ("CandidateKeyIssued", CandidateKeyIssued.schema_version),
        ("CandidateKeyIssued", CandidateKeyIssued.schema_version),
        ("CandidateKeyRedeemed", CandidateKeyRedeemed.schema_version),
    ]
    assert readable([data for _, _, data in stored], secrets) == []
    assert all_tokens(personal_values_stored(scene.engine))
    others_after = [
        {k: v for k, v in json.loads(data).items() if k not in (*PERSONAL_FIELDS.get(t, ()), "subjectId")}
        for t, _, data in stored
    ]
    assert others_after == others_before  # nothing else of them changed
    subject_ids = [json.loads(data).get("subjectId") for _, _, data in stored[1:]]
    assert subject_ids[1] == str(old.named_key)  # a name only: the key's own subject
    assert subject_ids[2] == subject_ids[0] != str(old.emailed_key)  # the redeem: the email's subject
    assert all_tokens(view_personal_values(scene.engine))
    assert what_the_api_shows() == before
    assert seal_clear_events(scene.engine, scene.system.store, scene.system.store.personal) == 0
    with pytest.raises(Exception, match="events are facts"), scene.engine.begin() as conn:
        conn.execute(text("UPDATE events SET data = data WHERE stream_id = :s"), {"s": old.stream_id})

    scene.erase(old.email)

    after = what_the_api_shows()
    assert after[0] == (None, None, True)
    assert after[1] == (None, old.solo_name, False)
    assert after[2][str(old.emailed_key)] == (None, None) and after[3] is None


def test_sealing_in_batches_seals_every_clear_event_and_leaves_the_events_table_immutable(system):
    org_id = str(uuid7())
    streams = [insert_clear_stream(system.engine, org_id) for _ in range(3)]
    secrets = [v for old in streams for v in (old.email, old.name, old.redeemed_name, old.solo_name)]

    assert seal_clear_events(system.engine, system.store, system.store.personal, batch=2) == 9

    assert readable([data for _, _, data in raw_events(system.engine)], secrets) == []
    assert all_tokens(personal_values_stored(system.engine))
    assert all_tokens(view_personal_values(system.engine))
    for statement in ("UPDATE events SET data = data", "DELETE FROM events"):
        with pytest.raises(Exception, match="events are facts"), system.engine.begin() as conn:
            conn.execute(text(statement))


# --- 7. rebuild and republish after an erasure ---------------------------------------------------


def keys_view(engine) -> dict[str, dict]:
    """The keys view by key id, each row as JSON (a rebuilt table orders its columns anew)."""
    return {r["id"]: r for (r,) in rows(engine, "SELECT row_to_json(v) FROM candidate_keys_view v")}


def test_a_rebuild_and_a_republish_after_an_erasure_show_it_erased_and_carry_no_personal_data(system, broker):
    tap = broker.tap(f"test-{RUN_ID}-{uuid.uuid4().hex[:6]}.tap")
    scene = running_scene(system)
    ada, alan = person("ada"), person("alan")
    assessment = scene.assessment()
    ada_key, alan_key = scene.issue(assessment, [ada, alan])
    scene.redeem(ada_key["key"], "Ada Redeemed")
    scene.erase(ada[0])
    scene.quiet()
    live_keys = scene.keys(assessment)
    live_view = keys_view(scene.engine)
    assert all_tokens(view_personal_values(scene.engine))
    count = scalar(scene.engine, "SELECT count(*) FROM events")
    relayed = broker.take(tap, count)
    (erased_subject,) = [
        json.loads(d)["subjectId"] for t, _, d in raw_events(scene.engine) if t == "CandidateErased"
    ]

    report = rebuild(scene.engine, default_projections(), workers=1)

    assert report.swapped
    assert keys_view(scene.engine) == live_view
    assert scene.keys(assessment) == live_keys
    assert shown(live_keys[ada_key["id"]]) == (None, None, True)
    assert shown(live_keys[alan_key["id"]]) == (*alan, False)

    sent = republish(
        scene.system.store.read_all(), system.settings.broker_url, system.settings.exchange, queue=tap
    )
    republished = broker.take(tap, count)

    assert sent == count
    secrets = [*ada, *alan, "Ada Redeemed"]
    for _, _, body in relayed + republished:
        assert readable(body.decode(), secrets) == []
        envelope = json.loads(body)
        assert not set(PERSONAL_FIELDS.get(envelope["type"], ())) & set(envelope["data"])
    erasures = [
        messages.decode(body).event
        for _, _, body in republished
        if json.loads(body)["type"] == "CandidateErased"
    ]
    assert [(e.subject_id, e.reason) for e in erasures] == [(uuid.UUID(erased_subject), "request")]
    assert isinstance(erasures[0], CandidateErased)
    assert not is_token(erased_subject)
