"""Erasing candidates on the real PostgreSQL and RabbitMQ: an erasure racing key issuance for
the same email (each subject erased once, never half-written, keys issued later readable); the
retention step on the movable clock (ended keys only, after the period, once); and, after an
erasure with every part of the system running, a scan of every table, every log record, every
message and the dead-letter queues that finds the candidate's email and name nowhere."""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
import uuid
from collections import Counter

import pika
import pytest

from cli import bootstrap
from events.model import ERASED_BY_RETENTION
from events.rabbitmq.broker import declare_consumer_queue
from events.sql.vault import SqlVault, lookup_of
from tests.conftest import RUN_ID
from tests.integration.helpers import metadata, rows, scalar
from tests.integration.personal_scene import (
    all_tokens,
    issued_data,
    person,
    personal_values_stored,
    readable,
    running_scene,
    shown,
)
from tests.support.receiver import Receiver
from tests.support.smtp import SmtpServer
from tests.support.system import Client, Running
from tests.support.wait import wait_for


def erasures(engine) -> Counter:
    """How many `CandidateErased` events each subject has."""
    return Counter(
        uuid.UUID(s)
        for (s,) in rows(engine, "SELECT data->>'subjectId' FROM events WHERE type = 'CandidateErased'")
    )


def subject_rows(engine) -> set[uuid.UUID]:
    return {s for (s,) in rows(engine, "SELECT subject_id FROM subject_keys")}


def view_subjects(engine) -> dict[str, uuid.UUID | None]:
    return {str(k): s for k, s in rows(engine, "SELECT id, subject_id FROM candidate_keys_view")}


# --- an erasure racing key issuance ----------------------------------------------------------


@dataclasses.dataclass
class Issued:
    email: str
    key_id: str
    started: float
    ended: float


@dataclasses.dataclass
class Race:
    issued: list[Issued] = dataclasses.field(default_factory=list)
    statuses: list[int] = dataclasses.field(default_factory=list)
    erase_started: float = 0.0
    erase_returned: float = 0.0
    errors: list[BaseException] = dataclasses.field(default_factory=list)


def race(scene, assessment: str, target: str, others: list[str], issuers: int = 3, erasers: int = 2) -> Race:
    """Threads issuing one key at a time (`issuers` for `target`, one per other email) while
    `erasers` erase `target` together, once a few of its keys exist; the issuers go on a
    little after the erasure returned."""
    done = Race()
    erased = threading.Event()
    lock = threading.Lock()
    start_erasing = threading.Barrier(erasers)

    def guarded(work):
        def run():
            try:
                work()
            except BaseException as error:  # surfaced below
                done.errors.append(error)
                erased.set()

        return run

    def issuer(email: str) -> None:
        with Client(scene.system.api.url, scene.org.token) as client:
            after = 0
            while after < 3:
                started = time.monotonic()
                response = client.post(
                    f"/v1/assessments/{assessment}/keys", json={"count": 1, "candidateEmails": [email]}
                )
                ended = time.monotonic()
                with lock:
                    done.statuses.append(response.status_code)
                    if response.status_code == 201:
                        done.issued.append(Issued(email, response.json()["keys"][0]["id"], started, ended))
                if erased.is_set():
                    after += 1

    def eraser() -> None:
        wait_for(lambda: sum(i.email == target for i in done.issued) >= 3, 20, "a few keys of the target")
        with Client(scene.system.api.url, scene.org.token) as client:
            start_erasing.wait(10)
            started = time.monotonic()
            response = client.delete("/v1/candidates", params={"email": target})
            ended = time.monotonic()
        with lock:
            done.statuses.append(response.status_code)
            done.erase_started = min(done.erase_started or started, started)
            done.erase_returned = max(done.erase_returned, ended)
            if len([s for s in done.statuses if s == 200]) == erasers:
                erased.set()

    emails = [target] * issuers + others
    threads = [threading.Thread(target=guarded(lambda e=e: issuer(e))) for e in emails]
    threads += [threading.Thread(target=guarded(eraser)) for _ in range(erasers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(t.is_alive() for t in threads), "a racer did not finish"
    assert not done.errors, done.errors
    return done


def test_an_erasure_racing_key_issuance_erases_what_came_before_once_and_nothing_after(system):
    scene = running_scene(system)
    assessment = scene.assessment()
    rounds = [(person("target")[0], [person("other")[0], person("bystander")[0]]) for _ in range(3)]

    overlapping_rounds = 0
    for target, others in rounds:
        done = race(scene, assessment, target, others)
        scene.quiet()
        keys, subjects = scene.keys(assessment), view_subjects(scene.engine)
        erased_subjects = set(erasures(scene.engine))

        assert set(done.statuses) <= {200, 201}, Counter(done.statuses)
        mine = [i for i in done.issued if i.email == target]
        before = [i for i in mine if i.ended < done.erase_started]
        after = [i for i in mine if i.started > done.erase_returned]
        assert len(before) >= 3 and len(after) >= 3
        assert {shown(keys[i.key_id]) for i in before} == {(None, None, True)}
        assert {shown(keys[i.key_id]) for i in after} == {(target, None, False)}
        assert {subjects[i.key_id] for i in after} == {uuid.UUID(i.key_id) for i in after}  # own ...
        assert not {subjects[i.key_id] for i in after} & erased_subjects  # ... live subject
        assert {subjects[i.key_id] for i in before} <= erased_subjects
        in_flight = [i for i in mine if i not in before and i not in after]
        overlapping_rounds += bool(in_flight)
        for overlapping in in_flight:
            erased = subjects[overlapping.key_id] in erased_subjects
            assert shown(keys[overlapping.key_id]) == (
                (None, None, True) if erased else (target, None, False)
            )
        bystanders = [i for i in done.issued if i.email != target]
        assert bystanders and {shown(keys[i.key_id])[:2] for i in bystanders} == {
            (i.email, None) for i in bystanders
        }

    counts = erasures(scene.engine)
    assert set(counts.values()) == {1}  # each subject erased once, whoever raced
    assert len(counts) >= len(rounds)
    assert not set(counts) & subject_rows(scene.engine)  # no erasure half-written
    remaining: dict[bytes, set] = {}
    for lookup, subject in rows(scene.engine, "SELECT lookup, subject_id FROM subject_keys"):
        remaining.setdefault(bytes(lookup), set()).add(subject)
    for target, _ in rounds:  # each target's email has live subjects again: the keys issued after
        assert remaining[lookup_of(scene.org_id, target)] and not remaining[
            lookup_of(scene.org_id, target)
        ] & set(counts)
    assert overlapping_rounds, "no issuance was ever in flight during an erasure: nothing raced"


# --- retention ----------------------------------------------------------------------------------


def expire(handler, engine, key_id: uuid.UUID) -> None:
    """The worker's expiry step now (its own housekeeping may have been first), until the key
    shows it expired."""
    handler.expire()
    expired = "SELECT expired_at IS NOT NULL FROM candidate_keys_view WHERE id = :k"
    wait_for(lambda: scalar(engine, expired, k=key_id), 10, f"key {key_id} expired")


def test_retention_erases_candidates_whose_keys_all_ended_long_enough_ago_once(system):
    scene = running_scene(system)
    clock = system.clock
    retention = bootstrap.retention(
        dataclasses.replace(system.settings, candidate_retention_days=30), system.engine, system.store, clock
    )
    org, stream = scene.org_id, uuid.UUID(scene.assessment())  # keys expire 7 days after issue
    done_early, busy, late, own = person("done"), person("busy"), person("late"), person("own")[1]
    completed, revoked, busy_revoked, late_pending = scene.issue_by_service(
        str(stream), [done_early, done_early, busy, late]
    )
    (own_revoked,) = scene.issue_by_service(str(stream), [(None, own)])
    key_string = scene.key_string(completed.event.key_id)
    scene.candidates.consent(key_string, None, "c0")
    redemption = scene.candidates.redeem(key_string, "c1", "Done Redeemed")
    scene.candidates.complete(key_string, redemption.key.session_id, "c2")
    for key in (revoked, busy_revoked, own_revoked):
        scene.service.revoke_key(org, stream, key.event.key_id, metadata(org))
    scene.quiet()
    handler = system.handlers[-1]

    assert retention() == 0  # nothing is past the period yet

    clock.advance(days=29)
    expire(handler, system.engine, late_pending.event.key_id)  # it ran out at issue + 7 days
    (busy_pending,) = scene.issue_by_service(str(stream), [(busy[0], None)])  # pending until day 36
    scene.quiet()
    assert retention() == 0  # 29 days after the first keys ended

    clock.advance(days=2)
    assert retention() == 3  # the completed and the revoked key of one candidate, and the own subject
    assert retention() == 0

    clock.advance(days=7)  # day 38: the late key ended 31 days ago; busy's last ends on day 36
    expire(handler, system.engine, busy_pending.event.key_id)
    scene.quiet()
    assert retention() == 1
    assert retention() == 0

    issued = {  # the history: it shows revoked keys too, which the key list leaves out
        uuid.UUID(k): (d["candidateEmail"], d["candidateName"], d.get("erased", False))
        for k, d in issued_data(scene.history(str(stream))).items()
    }
    assert {issued[k.event.key_id] for k in (completed, revoked, own_revoked, late_pending)} == {
        (None, None, True)
    }
    assert issued[busy_revoked.event.key_id] == (*busy, False)
    assert issued[busy_pending.event.key_id] == (busy[0], None, False)
    assert shown(scene.keys(str(stream))[str(busy_pending.event.key_id)]) == (busy[0], None, False)
    reasons = rows(
        system.engine, "SELECT data->>'subjectId', data->>'reason' FROM events WHERE type = 'CandidateErased'"
    )
    assert len(reasons) == 4 and {r for _, r in reasons} == {ERASED_BY_RETENTION}
    assert set(erasures(system.engine).values()) == {1}
    assert {uuid.UUID(s) for s, _ in reasons} == {  # every key is its own subject
        completed.event.subject_id,
        revoked.event.subject_id,
        own_revoked.event.subject_id,
        late_pending.event.subject_id,
    }
    assert own_revoked.event.subject_id == own_revoked.event.key_id


# --- nothing readable anywhere after an erasure --------------------------------------------------


def table_texts(engine) -> dict[str, str]:
    """Every table of the public schema, each row as JSON text."""
    tables = [t for (t,) in rows(engine, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
    return {
        table: scalar(
            engine, f"SELECT coalesce(string_agg(row_to_json(t)::text, E'\\n'), '') FROM \"{table}\" t"
        )
        for table in tables
    }


def drain(broker_url: str, queue: str) -> list[bytes]:
    """Every message waiting on `queue` (absent: none), taken off it."""
    connection = pika.BlockingConnection(pika.URLParameters(broker_url))
    try:
        channel = connection.channel()
        try:
            channel.queue_declare(queue, passive=True)
        except pika.exceptions.ChannelClosedByBroker:
            return []
        bodies = []
        while (message := channel.basic_get(queue, auto_ack=True))[0] is not None:
            bodies.append(message[2])
        return bodies
    finally:
        connection.close()


@pytest.fixture
def smtp():
    server = SmtpServer().start()
    yield server
    server.stop()


@pytest.fixture
def webhook_receiver():
    found = Receiver()
    yield found
    found.close()


def test_after_an_erasure_no_table_log_message_or_dead_letter_holds_the_email_or_the_name(
    system, broker, smtp, webhook_receiver, caplog
):
    caplog.set_level(logging.DEBUG)
    tap = broker.tap(f"test-{RUN_ID}-{uuid.uuid4().hex[:6]}.tap")
    scene = running_scene(system)
    system.start_webhooks()
    notifier_settings = dataclasses.replace(
        system.settings, smtp_url=smtp.url, mail_from="Acme <hiring@acme.test>", mail_lease_seconds=30.0
    )
    mailer = bootstrap.invitation_mailer(notifier_settings, system.engine, system.store)
    notifier = Running(bootstrap.notifier(notifier_settings, mailer=mailer, sweep_seconds=0.2), "notifier")
    try:
        hook = scene.client.post(
            "/v1/webhooks", json={"url": webhook_receiver.endpoint("/hook"), "events": ["#"]}
        )
        assert hook.status_code == 201, hook.text
        ada, kept = person("ada"), person("kept")
        redeemed_name = person("rita")[1]
        assessment = scene.assessment()
        ada_key, kept_key = scene.issue(assessment, [ada, kept])
        wait_for(lambda: len(smtp.messages) == 2, 20, "both invitations mailed")
        assert {m["To"] for m in smtp.messages} == {f"{ada[1]} <{ada[0]}>", f"{kept[1]} <{kept[0]}>"}
        scene.redeem(ada_key["key"], redeemed_name)
        scene.quiet()

        scene.erase(ada[0])
        scene.quiet()
        count = scalar(system.engine, "SELECT count(*) FROM events")
        hooked = scalar(system.engine, "SELECT count(*) FROM events WHERE type NOT LIKE 'Webhook%'")
        wait_for(lambda: len(webhook_receiver.received("/hook")) >= hooked, 20, "every event delivered")
        wait_for(
            lambda: scalar(system.engine, "SELECT count(*) FROM invitations WHERE status = 'sent'") == 2,
            10,
            "the invitations recorded",
        )
    finally:
        notifier.stop()
    published = broker.take(tap, count)
    secrets = [*ada, redeemed_name]

    tables = table_texts(system.engine)
    assert {"events", "candidate_keys_view", "subject_keys", "invitations", "outbox"} <= set(tables)
    assert {t: readable(text, secrets) for t, text in tables.items() if readable(text, secrets)} == {}
    assert readable(tables["candidate_keys_view"], list(kept)) == []  # the kept candidate: tokens too
    assert all_tokens(personal_values_stored(system.engine))  # the tokens remain ...
    # ... and open no more: the erased subject has no key left to reveal them with.
    erased_subject = scalar(
        system.engine, "SELECT data->>'subjectId' FROM events WHERE type = 'CandidateErased'"
    )
    listed = scene.keys(assessment)
    assert shown(listed[ada_key["id"]]) == (None, None, True)
    assert shown(listed[kept_key["id"]]) == (*kept, False)
    fresh = SqlVault(system.engine, system.store.personal.master_keys)
    keys = fresh.reader([uuid.UUID(erased_subject)])
    assert keys.erased(uuid.UUID(erased_subject))
    ada_tokens = [
        (field, token)
        for (data,) in rows(
            system.engine, "SELECT data FROM events WHERE data->>'subjectId' = :s", s=erased_subject
        )
        for field, token in data.items()
        if field in ("candidateEmail", "candidateName") and token
    ]
    assert len(ada_tokens) == 3  # issued: email and name; redeemed: the name
    assert {keys.reveal(uuid.UUID(erased_subject), f, t) for f, t in ada_tokens} == {None}

    # Logs: every record of every logger, at DEBUG, but the test's own servers': its HTTP
    # server (werkzeug) logs the erasure's request line with its query (the service's access
    # log has the path only: `cli.server`), and its SMTP server (aiosmtpd, `mail.log`) logs the
    # mail it receives, as the candidate's mail server would.
    logged = [
        f"{r.name} {r.getMessage()} {json.dumps(r.__dict__, default=str)}"
        for r in caplog.records
        if r.name not in ("werkzeug", "mail.log")
    ]
    assert logged and readable(logged, [*secrets, *kept]) == []

    bodies = [body for _, _, body in published]
    assert readable([b.decode() for b in bodies], [*secrets, *kept]) == []
    assert "CandidateErased" in {json.loads(b)["type"] for b in bodies}
    deliveries = [r.body.decode() for r in webhook_receiver.received("/hook")]
    assert readable(deliveries, [*secrets, *kept]) == []
    settings = system.settings
    dead = [
        body
        for queue in (settings.worker_queue, settings.notifier_queue, settings.webhooks_queue)
        for body in drain(settings.broker_url, f"{queue}.dead")
    ]
    assert readable([b.decode(errors="replace") for b in dead], [*secrets, *kept]) == []


def test_an_invitation_not_sent_before_the_erasure_never_is(system, broker, smtp):
    scene = running_scene(system)
    declare_consumer_queue(  # as the notifier declares it: the message waits there for it
        broker.channel,
        system.settings.exchange,
        system.settings.notifier_queue,
        ["candidate_key.issued"],
        "ASSESSMENTS_NOTIFIER_QUEUE",
    )
    ada, kept = person("ada"), person("kept")
    ada_key, kept_key = scene.issue(scene.assessment(), [ada, kept])
    wait_for(lambda: broker.message_count(system.settings.notifier_queue) == 2, 10, "both issues queued")
    scene.erase(ada[0])
    settings = dataclasses.replace(
        system.settings, smtp_url=smtp.url, mail_from="Acme <hiring@acme.test>", mail_lease_seconds=30.0
    )
    mailer = bootstrap.invitation_mailer(settings, system.engine, system.store)
    notifier = Running(bootstrap.notifier(settings, mailer=mailer, sweep_seconds=0.2), "notifier")
    try:
        wait_for(lambda: mailer.outcomes["sent"] + mailer.outcomes["skipped"] == 2, 15, "both handled")
    finally:
        notifier.stop()

    assert [m["To"] for m in smtp.messages] == [f"{kept[1]} <{kept[0]}>"]
    invitations = dict(
        rows(system.engine, "SELECT key_id::text, status || ':' || coalesce(reason, '') FROM invitations")
    )
    assert invitations == {ada_key["id"]: "skipped:candidate_erased", kept_key["id"]: "sent:"}
