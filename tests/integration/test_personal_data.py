"""Crypto-shredding of candidates' personal data (`events.personal`) on the real PostgreSQL and
RabbitMQ: the events table, the keys view and a `pg_dump` hold tokens, never an email or a
name; erasing one candidate leaves the others readable; a rebuild and a republish after an
erasure show it erased, with no personal data in any message.

(Master key rotation and sealing old events: `test_personal_upgrades.py`; erasure under
concurrency, retention and the whole-database scan: `test_personal_erasure.py`.)"""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid

import pytest

from events import messages
from events.crypto.cipher import is_token
from events.model import (
    CandidateErased,
)
from events.rabbitmq.republish import republish
from events.sql.engine import libpq_url
from projections import default_projections
from projections.rebuild import rebuild
from tests.conftest import RUN_ID
from tests.integration.helpers import rows, scalar
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


# --- nothing readable at rest ------------------------------------------------------------------


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


# --- one erased, the others intact -------------------------------------------------------------


def test_erasing_one_candidate_leaves_the_others_readable_in_the_key_list_and_the_history(scene):
    ada, alan, grace = person("ada"), person("alan"), person("grace")
    first, second = scene.assessment(), scene.assessment()
    keys_one = scene.issue(first, [ada, alan])
    keys_two = scene.issue(second, [ada, grace])  # ada again: another key, found by the same email
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
    # every key is its own subject: one CandidateErased for each of ada's two keys
    assert scalar(scene.engine, "SELECT count(*) FROM events WHERE type = 'CandidateErased'") == 2
    assert scalar(scene.engine, "SELECT count(*) FROM subject_keys") == 2  # alan's, grace's


# --- rebuild and republish after an erasure ---------------------------------------------------


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
