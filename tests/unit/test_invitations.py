"""The notifier's rules without I/O: who is mailed, what the mail says, how failures are told
apart, the backoff, the SMTP URL, and the settings."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from events import aggregate
from events.invitations import (
    ASSESSMENT_DELETED,
    KEY_EXPIRED,
    KEY_REVOKED,
    KEY_UNKNOWN,
    KEY_USED,
    invitation,
    is_permanent,
    message_id,
    retry_delay,
    why_not_mailed,
)
from events.runtime.settings import Settings
from tests.unit.builders import NOW, consented, created, deleted, issued, redeemed, revoked
from worker.notifier.mail import build_message
from worker.notifier.sending import InvalidSmtpUrl, SmtpSender


def state_of(*events):
    return aggregate.rebuild(events[0].assessment_id, events)


def test_a_pending_key_of_a_live_assessment_is_mailed():
    first = created()
    key = issued(first)
    assert why_not_mailed(state_of(first, key), key.key_id, NOW) is None


def test_a_deleted_assessment_s_key_is_not_mailed_even_if_nothing_else_changed():
    first = created()
    key = issued(first)
    assert why_not_mailed(state_of(first, key, deleted(first)), key.key_id, NOW) == ASSESSMENT_DELETED


def test_a_revoked_key_is_not_mailed():
    first = created()
    key = issued(first)
    assert why_not_mailed(state_of(first, key, revoked(key)), key.key_id, NOW) == KEY_REVOKED


def test_a_key_its_candidate_already_redeemed_is_not_mailed():
    first = created()
    key = issued(first)
    state = state_of(first, key, consented(key), redeemed(key))
    assert why_not_mailed(state, key.key_id, NOW) == KEY_USED


def test_an_expired_key_is_not_mailed():
    first = created()
    key = issued(first, expires_at=NOW + timedelta(hours=1))
    assert why_not_mailed(state_of(first, key), key.key_id, NOW + timedelta(hours=1)) == KEY_EXPIRED
    assert why_not_mailed(state_of(first, key), key.key_id, NOW + timedelta(minutes=59)) is None


def test_an_unknown_key_is_not_mailed():
    first = created()
    assert why_not_mailed(state_of(first), uuid.uuid4(), NOW) == KEY_UNKNOWN


def test_the_mail_says_the_title_role_org_key_deadlines_and_how_to_redeem():
    first = created(time_limit_minutes=45)
    key = issued(first, org_name=None, candidate_name="Ada <b>")
    found = invitation(
        state_of(first, key), state_of(first, key).keys[key.key_id], "PST-ABCD-EFGH", "Acme Ltd"
    )

    message = build_message(found, "Hiring <hiring@acme.test>")

    assert message["Message-ID"] == f"<invitation-{key.key_id}@acme.test>"
    text = message.get_body(preferencelist=("plain",)).get_content()
    html = message.get_body(preferencelist=("html",)).get_content()
    for part in (text, html):
        assert "promptster redeem PST-ABCD-EFGH" in part
        assert "Acme Ltd" in part and "Backend take-home" in part and "Senior Backend Engineer" in part
        assert "45 minutes" in part
        assert key.expires_at.strftime("%Y-%m-%d %H:%M UTC") in part
    assert "Ada &lt;b&gt;" in html and "Ada <b>" not in html


def test_the_key_s_own_org_name_wins_over_the_organisation_s():
    first = created()
    key = issued(first, org_name="Acme Recruiting")
    assert (
        invitation(state_of(first, key), state_of(first, key).keys[key.key_id], "PST-X", "Acme Ltd").org_name
        == "Acme Recruiting"
    )


def test_the_message_id_is_the_same_for_a_key_every_time_and_differs_between_keys():
    key_id = uuid.uuid4()
    assert (
        message_id(key_id, "a@b.test")
        == message_id(key_id, "Name <a@b.test>")
        == f"<invitation-{key_id}@b.test>"
    )
    assert message_id(uuid.uuid4(), "a@b.test") != message_id(key_id, "a@b.test")


@pytest.mark.parametrize(
    ("code", "permanent"), [(550, True), (554, True), (451, False), (421, False), (None, False)]
)
def test_only_5xx_replies_are_permanent(code, permanent):
    assert is_permanent(code) is permanent


def test_the_backoff_doubles_from_two_seconds_up_to_five_minutes():
    delays = [retry_delay(n).total_seconds() for n in range(1, 12)]
    assert delays[:5] == [2, 4, 8, 16, 32]
    assert max(delays) == 300 and delays[-1] == 300
    assert retry_delay(10_000).total_seconds() == 300


def test_the_smtp_url_gives_host_port_tls_and_login():
    plain = SmtpSender("smtp://mail.internal", "a@b.test")
    starttls = SmtpSender("smtp://user%40x:p%3Ass@mail.internal:587?starttls=true", "A <a@b.test>")
    implicit = SmtpSender("smtps://mail.internal", "a@b.test")

    assert (plain.host, plain.port, plain.starttls, plain.implicit_tls, plain.user) == (
        "mail.internal",
        25,
        False,
        False,
        None,
    )
    assert (starttls.port, starttls.starttls, starttls.user, starttls.password) == (
        587,
        True,
        "user@x",
        "p:ss",
    )
    assert starttls.envelope_from == "a@b.test"
    assert (implicit.port, implicit.implicit_tls) == (465, True)


@pytest.mark.parametrize("url", ["http://mail.internal", "smtp://", "mail.internal"])
def test_a_malformed_smtp_url_is_refused(url):
    with pytest.raises(InvalidSmtpUrl):
        SmtpSender(url, "a@b.test")


def test_the_notifier_s_settings_are_read_from_the_environment():
    settings = Settings.from_env(
        {
            "ASSESSMENTS_NOTIFIER_QUEUE": "acme.notifier",
            "ASSESSMENTS_SMTP_URL": "smtps://u:p@mail.internal",
            "ASSESSMENTS_MAIL_FROM": "Acme <jobs@acme.test>",
            "ASSESSMENTS_MAIL_DIR": "/tmp/mail",
            "ASSESSMENTS_MAIL_LEASE_SECONDS": "60",
            "ASSESSMENTS_MAIL_MAX_ATTEMPTS": "5",
        }
    )
    assert (settings.notifier_queue, settings.notifier_dead_letter_queue) == (
        "acme.notifier",
        "acme.notifier.dead",
    )
    assert (settings.smtp_url, settings.mail_from, settings.mail_dir) == (
        "smtps://u:p@mail.internal",
        "Acme <jobs@acme.test>",
        "/tmp/mail",
    )
    assert (settings.mail_lease_seconds, settings.mail_max_attempts) == (60.0, 5)
    assert Settings.from_env({}).notifier_queue == "assessments.notifier"
    assert Settings.from_env({}).smtp_url is None


def test_assessments_run_starts_the_notifier_too_with_eml_files_when_there_is_no_smtp():
    from cli.supervisor import child_arguments, child_environment

    assert child_arguments(None, 9100) == [
        ["api"],
        ["relay", "--metrics-port", "9100"],
        ["worker", "--metrics-port", "9101"],
        ["notifier", "--metrics-port", "9102"],
        ["webhooks", "--metrics-port", "9103"],
    ]
    assert child_environment({})["ASSESSMENTS_MAIL_DIR"].endswith("assessments-mail")
    with_smtp = child_environment({"ASSESSMENTS_SMTP_URL": "smtp://127.0.0.1:1025"})
    assert "ASSESSMENTS_MAIL_DIR" not in with_smtp
