"""Personal data through upgrades, on the real PostgreSQL and RabbitMQ: a master key rotation
re-wraps every data key and touches no event (a vault on the new key alone reveals everything,
one on the old key alone nothing); and events stored in clear before sealing existed are
readable, published without personal data, then sealed in place (`assessments candidates
seal`) at the newest schema versions, still readable, and erasable."""

from __future__ import annotations

import base64
import dataclasses
import json
import threading
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import text

from events import codec
from events.crypto.cipher import MasterKeys, UnknownMasterKey, new_data_key
from events.model import (
    AssessmentCreated,
    CandidateKeyIssued,
    CandidateKeyRedeemed,
    utcnow,
    uuid7,
)
from events.personal import revealed_event, subjects_in
from events.sql.tables import subject_keys_table
from events.sql.vault import SqlVault
from projections.seal import seal_clear_events
from tests.conftest import RUN_ID
from tests.integration.helpers import insert_old_stream, rows, run_cli, scalar
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
from tests.support.wait import wait_for

# --- master key rotation -----------------------------------------------------------------------


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


def test_an_api_without_the_master_key_of_stored_data_answers_503_naming_the_key_in_its_log(
    system_on_key_a, key_a_and_b, caplog
):
    key_a, key_b = key_a_and_b
    scene = running_scene(system_on_key_a)
    assessment = scene.assessment()
    scene.issue(assessment, [person("p0")])
    scene.quiet()
    # A process given only the new key, as if A were removed before the rotation ran.
    api = ApiServer(dataclasses.replace(scene.system.settings, master_keys=master_keys_text(key_b)))
    try:
        with Client(api.url, scene.org.token) as client:
            refused = client.get(f"/v1/assessments/{assessment}/keys")
            detail = client.get(f"/v1/assessments/{assessment}")
    finally:
        api.stop()

    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "unavailable"
    assert refused.headers["Retry-After"] == "30"
    assert "Traceback" not in refused.text
    assert detail.status_code == 200  # what holds no personal data is served as ever
    missing = [r for r in caplog.records if "lacks master key 'A'" in r.getMessage()]
    assert missing and missing[0].levelname == "ERROR"
    assert all(base64.b64encode(key_a[1]).decode() not in r.getMessage() for r in caplog.records)


def test_rotating_without_the_old_master_key_refuses_with_a_clear_message_and_changes_nothing(
    system_on_key_a, key_a_and_b, monkeypatch
):
    _, key_b = key_a_and_b
    scene = running_scene(system_on_key_a)
    scene.issue(scene.assessment(), [person("p0"), person("p1")])
    scene.quiet()
    wrapped_before = rows(scene.engine, "SELECT subject_id, master_key_id, wrapped_key FROM subject_keys")

    monkeypatch.setenv("ASSESSMENTS_MASTER_KEYS", master_keys_text(key_b))  # A left out
    refused = run_cli(scene.system.settings, "candidates", "rotate-master-key")

    assert refused.returncode == 1
    assert "master key 'A', which ASSESSMENTS_MASTER_KEYS lacks" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert sorted(wrapped_before) == sorted(
        rows(scene.engine, "SELECT subject_id, master_key_id, wrapped_key FROM subject_keys")
    )


# --- old clear-text events, sealed in place ------------------------------------------------------


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
    with engine.begin() as conn:
        insert_old_stream(conn, stream_id, org_id, written)
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
    assert subject_ids[1] == str(old.named_key)  # every key is its own subject
    assert subject_ids[2] == subject_ids[0] == str(old.emailed_key)  # the redeem: its key's
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


def test_a_rotation_waits_for_a_data_key_locked_meanwhile_and_leaves_none_on_the_old_master_key(
    system_on_key_a, key_a_and_b
):
    """A row locked by another transaction (an erasure, say) is re-wrapped once it is free,
    never skipped: the old master key is removed afterwards."""
    key_a, key_b = key_a_and_b
    vault_a = system_on_key_a.store.personal
    org_id = str(uuid7())
    subjects = [vault_a._new_row(org_id, None, uuid7())[0] for _ in range(3)]
    with system_on_key_a.engine.begin() as conn:
        conn.execute(subject_keys_table.insert(), subjects)
    locked = subjects[0]["subject_id"]
    rotating = SqlVault(system_on_key_a.engine, MasterKeys.parse(master_keys_text(key_b, key_a)))
    result: list[int] = []

    with system_on_key_a.engine.connect() as holder:
        holder.execute(text("SELECT 1 FROM subject_keys WHERE subject_id = :s FOR UPDATE"), {"s": locked})
        rotation = threading.Thread(target=lambda: result.append(rotating.rotate()))
        rotation.start()
        waiting = (
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock' AND query LIKE '%subject_keys%'"
        )
        wait_for(
            lambda: not rotation.is_alive() or scalar(system_on_key_a.engine, waiting) > 0, 10, "the rotation"
        )
        holder.rollback()
    rotation.join(10)

    assert result == [3]
    assert {m for (m,) in rows(system_on_key_a.engine, "SELECT master_key_id FROM subject_keys")} == {"B"}
