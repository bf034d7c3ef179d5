"""`assessments notifier` against a real SMTP server (aiosmtpd on 127.0.0.1), RabbitMQ and
PostgreSQL: one mail per key with an email, also through duplicates, two notifiers, a kill in
the window SMTP leaves open, an SMTP outage, permanent refusals, revocations, deletions,
republishes and rebuilds."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli import bootstrap
from events.invitations import message_id
from events.rabbitmq.broker import declare_consumer_queue
from events.runtime.settings import Settings
from events.sql import tenancy
from tests.integration.helpers import PROJECT, candidates, details, metadata, rows, run_cli
from tests.support.smtp import SmtpServer, free_port, self_signed_certificate
from tests.support.system import Running, System
from tests.support.wait import wait_for
from worker.notifier.consumer import Notifier

MAIL_FROM = "Acme Hiring <hiring@acme.test>"


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    server = SmtpServer().start()
    yield server
    server.stop()


def notifier_settings(system: System, smtp_url: str, **overrides) -> Settings:
    chosen = {"smtp_url": smtp_url, "mail_from": MAIL_FROM, "mail_lease_seconds": 30.0, **overrides}
    return dataclasses.replace(system.settings, **chosen)


@pytest.fixture
def start_notifier(system: System, smtp: SmtpServer):
    """Start (more) notifiers on the system's notifier queue, mailing to `smtp` unless told
    otherwise; all are stopped when the test ends."""
    started: list[Running] = []

    def start(smtp_url: str | None = None, **overrides) -> Notifier:
        settings = notifier_settings(system, smtp_url or smtp.url, **overrides)
        mailer = bootstrap.invitation_mailer(settings, system.engine, system.store)
        notifier = bootstrap.notifier(settings, mailer=mailer, sweep_seconds=0.2)
        started.append(Running(notifier, f"notifier-{len(started) + 1}"))
        return notifier

    def stop_all() -> None:
        """Before a test stops an SMTP server of its own: the notifiers' kept connections
        close first."""
        while started:
            started.pop().stop()

    start.stop_all = stop_all
    yield start
    stop_all()


@pytest.fixture
def acme(system: System) -> tenancy.IssuedToken:
    """An organisation with a name, on the test's own database."""
    return tenancy.create_organisation(system.engine, f"Acme {uuid.uuid4().hex[:6]}")


def create_assessment(service, org_id: str, time_limit: int | None = 90) -> uuid.UUID:
    chosen = dataclasses.replace(details("Backend API"), time_limit_minutes=time_limit)
    return service.create(org_id, chosen, metadata(org_id)).recorded.stream_id


def invitation_rows(system: System) -> dict[uuid.UUID, tuple]:
    return {
        row.key_id: row
        for row in rows(system.engine, "SELECT key_id, status, attempts, reason, last_error FROM invitations")
    }


def declare_notifier_queue(broker, system: System) -> None:
    """The queue as the notifier declares it, before any notifier runs (so that messages
    published now wait in it)."""
    declare_consumer_queue(
        broker.channel,
        system.settings.exchange,
        system.settings.notifier_queue,
        ["candidate_key.issued"],
        "ASSESSMENTS_NOTIFIER_QUEUE",
    )


def text_and_html(message) -> tuple[str, str]:
    return (
        message.get_body(preferencelist=("plain",)).get_content(),
        message.get_body(preferencelist=("html",)).get_content(),
    )


# --- one mail per key with an email ---------------------------------------------------------


def test_a_key_with_an_email_gets_one_mail_with_the_key_the_assessment_and_how_to_redeem(
    system, service, broker, smtp, start_notifier, acme
):
    notifier = start_notifier()
    system.start_relay()
    stream = create_assessment(service, acme.org_id, time_limit=90)
    (issued,) = service.issue_keys(
        acme.org_id, stream, [("ada@example.com", "Ada Lovelace")], metadata(acme.org_id)
    )
    key_id = issued.event.key_id
    key = service.key_strings([key_id])[key_id]

    (mail,) = wait_for(lambda: smtp.messages, 15, "the invitation")

    org_name = tenancy.organisation_name(system.engine, acme.org_id)
    assert mail["To"] == "Ada Lovelace <ada@example.com>"
    assert mail["From"] == MAIL_FROM
    assert mail["Message-ID"] == message_id(key_id, MAIL_FROM) == f"<invitation-{key_id}@acme.test>"
    assert "Backend API" in mail["Subject"] and org_name in mail["Subject"]
    text, html = text_and_html(mail)
    for part in (text, html):
        assert key in part
        assert f"promptster redeem {key}" in part
        assert "Backend API" in part and "Backend engineer" in part
        assert org_name in part
        assert "90 minutes" in part
        assert issued.event.expires_at.strftime("%Y-%m-%d %H:%M UTC") in part
    assert smtp.recorder.envelopes == [("hiring@acme.test", ["ada@example.com"])]
    wait_for(lambda: invitation_rows(system)[key_id].status == "sent", 5, "the send recorded")
    assert invitation_rows(system)[key_id].attempts == 1
    # The mailer counts an outcome once its handling returns, just after the row is written.
    wait_for(lambda: notifier.mailer.outcomes["sent"] == 1, 5, "the send counted")
    assert sum(notifier.mailer.outcomes.values()) == 1


def test_keys_without_an_email_get_no_mail_and_no_row(system, service, broker, smtp, start_notifier, acme):
    notifier = start_notifier()
    system.start_relay()
    stream = create_assessment(service, acme.org_id, time_limit=None)
    service.issue_keys(acme.org_id, stream, [(None, None), (None, "Nameless")], metadata(acme.org_id))
    (emailed,) = service.issue_keys(acme.org_id, stream, [("alan@example.com", None)], metadata(acme.org_id))

    (mail,) = wait_for(lambda: smtp.messages, 15, "the one invitation")

    assert mail["To"] == "alan@example.com"
    assert "no time limit" in text_and_html(mail)[0]
    assert set(invitation_rows(system)) == {emailed.event.key_id}
    assert notifier.mailer.outcomes["ignored"] == 2


def test_a_message_delivered_twice_sends_one_mail(system, service, broker, smtp, start_notifier, acme):
    notifier = start_notifier()
    stream = create_assessment(service, acme.org_id)
    (issued,) = service.issue_keys(acme.org_id, stream, candidates(1), metadata(acme.org_id))

    broker.publish_event(issued)
    wait_for(lambda: len(smtp.messages) == 1, 15, "the invitation")
    broker.publish_event(issued)
    broker.publish_event(issued)

    wait_for(lambda: notifier.mailer.outcomes["duplicate"] == 2, 10, "both redeliveries handled")
    assert len(smtp.messages) == 1
    assert broker.message_count(system.settings.notifier_queue) == 0


def test_two_notifiers_on_one_queue_send_each_key_once(system, service, broker, smtp, start_notifier, acme):
    first, second = start_notifier(), start_notifier()
    keys = []
    for _ in range(4):
        stream = create_assessment(service, acme.org_id)
        keys += service.issue_keys(acme.org_id, stream, candidates(5), metadata(acme.org_id))
    for _ in range(2):  # every message twice: the copies land on both notifiers
        broker.publish_events(keys)

    wait_for(lambda: len(smtp.messages) >= 20, 30, "20 invitations")
    handled = lambda: sum(n.mailer.outcomes["sent"] + n.mailer.outcomes["duplicate"] for n in (first, second))  # noqa: E731
    wait_for(lambda: handled() == 40, 15, "all 40 deliveries handled")

    ids = [mail["Message-ID"] for mail in smtp.messages]
    assert len(ids) == 20
    assert sorted(ids) == sorted(message_id(k.event.key_id, MAIL_FROM) for k in keys)
    assert first.mailer.outcomes["sent"] + second.mailer.outcomes["sent"] == 20
    assert {row.status for row in invitation_rows(system).values()} == {"sent"}


# --- the window SMTP leaves open ------------------------------------------------------------


def notifier_process(settings: Settings, directory: Path) -> subprocess.Popen:
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("ASSESSMENTS_", "PROMETHEUS_"))}
    env = {
        **inherited,
        "ASSESSMENTS_DATABASE_URL": settings.database_url,
        "ASSESSMENTS_BROKER_URL": settings.broker_url,
        "ASSESSMENTS_EXCHANGE": settings.exchange,
        "ASSESSMENTS_WORKER_QUEUE": settings.worker_queue,
        "ASSESSMENTS_NOTIFIER_QUEUE": settings.notifier_queue,
        "ASSESSMENTS_SMTP_URL": settings.smtp_url or "",
        "ASSESSMENTS_MAIL_FROM": settings.mail_from,
        "ASSESSMENTS_MAIL_LEASE_SECONDS": str(settings.mail_lease_seconds),
    }
    with (directory / "notifier.stderr").open("w") as stderr:
        return subprocess.Popen(
            [sys.executable, "-m", "cli", "notifier"], cwd=PROJECT, env=env, stderr=stderr
        )


def test_a_notifier_killed_after_the_server_accepted_is_followed_by_one_resend_with_the_same_message_id(
    system, service, broker, smtp, start_notifier, acme, tmp_path
):
    """The documented behaviour: the row stays claimed; after the lease another notifier sends
    the mail again, with the same Message-ID, and records it. Two copies, never more."""
    settings = notifier_settings(system, smtp.url, mail_lease_seconds=2.0)
    declare_notifier_queue(broker, system)
    process = notifier_process(settings, tmp_path)
    smtp.recorder.on_accept = lambda _message: process.send_signal(signal.SIGKILL)
    stream = create_assessment(service, acme.org_id)
    (issued,) = service.issue_keys(acme.org_id, stream, candidates(1), metadata(acme.org_id))
    key_id = issued.event.key_id
    broker.publish_event(issued)

    assert process.wait(30) == -signal.SIGKILL
    smtp.recorder.on_accept = None
    wait_for(lambda: len(smtp.messages) == 1, 5, "the server to keep the mail it accepted")
    assert invitation_rows(system)[key_id].status == "claimed"

    start_notifier(mail_lease_seconds=2.0)

    wait_for(lambda: invitation_rows(system)[key_id].status == "sent", 20, "the mail sent again and recorded")
    first, again = smtp.messages
    assert first["Message-ID"] == again["Message-ID"] == message_id(key_id, MAIL_FROM)
    assert invitation_rows(system)[key_id].attempts == 2


# --- SMTP failures ----------------------------------------------------------------------------


def test_an_smtp_server_that_is_down_is_retried_until_it_is_up_and_the_mail_sent_once(
    system, service, broker, start_notifier, acme
):
    down = SmtpServer(port=free_port())  # not started: connections are refused
    notifier = start_notifier(smtp_url=down.url)
    stream = create_assessment(service, acme.org_id)
    (issued,) = service.issue_keys(acme.org_id, stream, candidates(1), metadata(acme.org_id))
    key_id = issued.event.key_id
    broker.publish_event(issued)

    wait_for(lambda: notifier.mailer.outcomes["retry"] >= 1, 15, "a failed attempt scheduled again")
    row = invitation_rows(system)[key_id]
    assert (row.status, row.attempts) == ("pending", 1)
    assert "ConnectionRefusedError" in row.last_error
    assert broker.message_count(system.settings.notifier_queue) == 0  # acked: the table holds the retry

    down.start()
    try:
        wait_for(lambda: down.messages, 20, "the mail once the server is up")
        wait_for(lambda: invitation_rows(system)[key_id].status == "sent", 5, "the send recorded")
        assert len(down.messages) == 1
        assert invitation_rows(system)[key_id].attempts >= 2
    finally:
        start_notifier.stop_all()
        down.stop()


def test_a_temporary_refusal_is_retried_and_the_mail_sent_once(
    system, service, broker, smtp, start_notifier, acme
):
    smtp.refuse("grey@example.com", "451 4.7.1 Greylisted, try again later", times=1)
    notifier = start_notifier()
    stream = create_assessment(service, acme.org_id)
    (issued,) = service.issue_keys(acme.org_id, stream, [("grey@example.com", None)], metadata(acme.org_id))
    broker.publish_event(issued)

    wait_for(lambda: smtp.messages, 20, "the mail after the greylisting")

    assert smtp.recorder.refused == ["grey@example.com"]
    assert notifier.mailer.outcomes["retry"] == 1
    wait_for(lambda: invitation_rows(system)[issued.event.key_id].status == "sent", 5, "the send recorded")
    assert len(smtp.messages) == 1


def test_a_permanent_refusal_is_dead_lettered_with_the_reason_and_never_retried(
    system, service, broker, smtp, start_notifier, acme
):
    smtp.refuse("nobody@example.com", "550 5.1.1 No such user here")
    notifier = start_notifier()
    stream = create_assessment(service, acme.org_id)
    bad, good = service.issue_keys(
        acme.org_id, stream, [("nobody@example.com", None), ("ada@example.com", None)], metadata(acme.org_id)
    )
    broker.publish_events([bad, good])

    ((_, properties, body),) = broker.take(system.settings.notifier_dead_letter_queue, 1, 15)
    wait_for(lambda: smtp.messages, 10, "the good address mailed")
    sweeps = notifier.mailer.sweeps
    wait_for(lambda: notifier.mailer.sweeps >= sweeps + 3, 10, "a few more sweeps")

    assert properties.message_id == str(bad.event_id)
    assert "550" in properties.headers["x-dead-letter-reason"]
    assert properties.headers["x-original-routing-key"] == "candidate_key.issued"
    assert body.decode().count(str(bad.event.key_id)) >= 1
    row = invitation_rows(system)[bad.event.key_id]
    assert (row.status, row.attempts) == ("failed", 1)
    assert "550" in row.reason
    assert smtp.recorder.refused == ["nobody@example.com"]  # tried once, never again
    assert [mail["To"] for mail in smtp.messages] == ["ada@example.com"]


# --- what is never mailed -------------------------------------------------------------------


def test_revoked_keys_and_keys_of_deleted_assessments_are_not_mailed(
    system, service, broker, smtp, start_notifier, acme
):
    declare_notifier_queue(broker, system)
    kept = create_assessment(service, acme.org_id)
    revoked, mailed = service.issue_keys(acme.org_id, kept, candidates(2), metadata(acme.org_id))
    deleted = create_assessment(service, acme.org_id)
    (of_deleted,) = service.issue_keys(acme.org_id, deleted, candidates(1), metadata(acme.org_id))
    broker.publish_events([revoked, mailed, of_deleted])
    service.revoke_key(acme.org_id, kept, revoked.event.key_id, metadata(acme.org_id))
    service.delete(acme.org_id, deleted, metadata(acme.org_id))

    notifier = start_notifier()

    wait_for(lambda: sum(notifier.mailer.outcomes.values()) == 3, 15, "all three handled")
    assert [mail["Message-ID"] for mail in smtp.messages] == [message_id(mailed.event.key_id, MAIL_FROM)]
    states = {key_id: (row.status, row.reason) for key_id, row in invitation_rows(system).items()}
    assert states == {
        revoked.event.key_id: ("skipped", "key_revoked"),
        of_deleted.event.key_id: ("skipped", "assessment_deleted"),
        mailed.event.key_id: ("sent", None),
    }


def test_republishing_history_and_rebuilding_the_projections_send_nothing_new(
    system, service, broker, smtp, start_notifier, acme
):
    notifier = start_notifier()
    system.start_relay()
    system.start_worker()
    stream = create_assessment(service, acme.org_id)
    service.issue_keys(acme.org_id, stream, candidates(3), metadata(acme.org_id))
    wait_for(lambda: len(smtp.messages) == 3, 15, "three invitations")

    republished = run_cli(system.settings, "events", "republish", "--from-position", "1")
    rebuilt = run_cli(system.settings, "projections", "rebuild", "--all")
    to_queue = run_cli(
        system.settings,
        "events",
        "republish",
        "--from-position",
        "1",
        "--queue",
        system.settings.notifier_queue,
    )

    assert republished.returncode == rebuilt.returncode == to_queue.returncode == 0, (
        republished.stderr + rebuilt.stderr + to_queue.stderr
    )
    wait_for(lambda: notifier.mailer.outcomes["duplicate"] == 6, 15, "both republishes handled")
    assert len(smtp.messages) == 3


def test_the_smtp_url_s_user_and_password_log_in(system, service, broker, start_notifier, acme):
    server = SmtpServer(credentials=("mailer", "s3cret")).start()
    try:
        start_notifier(smtp_url=server.url)
        stream = create_assessment(service, acme.org_id)
        (issued,) = service.issue_keys(acme.org_id, stream, candidates(1), metadata(acme.org_id))
        broker.publish_event(issued)

        wait_for(lambda: server.messages, 15, "the invitation")
        assert server.logins == ["mailer"]
    finally:
        start_notifier.stop_all()
        server.stop()


@pytest.mark.parametrize("tls", ["starttls", "implicit"])
def test_the_smtp_url_chooses_starttls_or_tls_from_the_first_byte_and_checks_the_certificate(
    system, service, broker, start_notifier, acme, tls, tmp_path, monkeypatch
):
    """The server refuses mail before STARTTLS (`starttls`), or speaks only TLS (`implicit`);
    its certificate is trusted through SSL_CERT_FILE, as a private CA's would be."""
    certificate = self_signed_certificate(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))
    server = SmtpServer(tls=tls, certificate=certificate, credentials=("mailer", "s3cret")).start()
    try:
        assert server.url.startswith("smtps://" if tls == "implicit" else "smtp://")
        start_notifier(smtp_url=server.url)
        stream = create_assessment(service, acme.org_id)
        (issued,) = service.issue_keys(acme.org_id, stream, candidates(1), metadata(acme.org_id))
        broker.publish_event(issued)

        wait_for(lambda: server.messages, 15, "the invitation over TLS")
        assert server.logins == ["mailer"]
    finally:
        start_notifier.stop_all()
        server.stop()


def test_a_certificate_the_notifier_does_not_trust_is_a_transient_failure_and_nothing_is_sent(
    system, service, broker, start_notifier, acme, tmp_path
):
    server = SmtpServer(tls="implicit", certificate=self_signed_certificate(tmp_path)).start()
    try:
        notifier = start_notifier(smtp_url=server.url)
        stream = create_assessment(service, acme.org_id)
        (issued,) = service.issue_keys(acme.org_id, stream, candidates(1), metadata(acme.org_id))
        broker.publish_event(issued)

        wait_for(lambda: notifier.mailer.outcomes["retry"] >= 1, 15, "the refused handshake scheduled again")
        assert "CERTIFICATE_VERIFY_FAILED" in invitation_rows(system)[issued.event.key_id].last_error
        assert server.messages == []
    finally:
        start_notifier.stop_all()
        server.stop()
