"""The candidate's side of the pure core: a key's status from its events and the time, the
commands a candidate's calls decide (consent, redeem, device check, complete) and the expiry
step's, the disclosure and its hash, the salted device fingerprint, and the candidate service's
session tokens on the in-memory store.

No database, no broker, no sleeping: time is an argument (or a clock the test moves), and a
concurrent writer "races" by writing just before the service's append."""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta

import pytest

from events import aggregate, candidates, codec
from events.aggregate import (
    CandidateRefused,
    ConsentRequired,
    DeadlinePassed,
    DisclosureOutdated,
    KeyAlreadyCompleted,
    KeyNotRedeemed,
)
from events.candidate import (
    ACTIVE,
    COMPLETED,
    EXPIRED,
    KEY_EVENTS,
    PENDING,
    CandidateKey,
    evolve_key,
    issued_key,
)
from events.candidates import (
    SESSION_TOKEN_PREFIX,
    SESSION_TOKEN_SCOPE,
    CandidateService,
    fingerprint_hash,
    new_session_token,
)
from events.disclosure import Disclosure, InvalidDisclosure, disclosure_from
from events.memory.store import InMemoryEventStore
from events.model import (
    DEADLINE_PASSED,
    KEY_EXPIRED,
    AssessmentDetails,
    CandidateConsented,
    CandidateDeviceChecked,
    CandidateKeyCompleted,
    CandidateKeyExpired,
    CandidateKeyIssued,
    CandidateKeyRedeemed,
    CandidateKeyRevoked,
    CandidateSessionResumed,
    Event,
    Metadata,
    RecordedEvent,
)
from events.ports import ConcurrencyConflict, Reservation
from events.service import EXPIRY_ACTOR, KEY_SCOPE, AssessmentService
from events.tenancy import hash_token
from tests.unit.builders import (
    NOW,
    completed,
    consented,
    created,
    deleted,
    device_checked,
    expired,
    issued,
    redeemed,
    resumed,
    revoked,
)

DOCUMENT = {
    "version": "2026-12-01",
    "captures": ["Your prompts", "The assistants' answers"],
    "doesNotCapture": ["Your screen"],
    "evaluated": ["How you solve the task"],
    "dataUse": ["Shared with the hiring team only"],
    "tosUrl": "https://example.com/terms",
}
DISCLOSURE = disclosure_from(DOCUMENT)
#: The disclosure after an operator replaced the text: another hash.
NEWER = disclosure_from({**DOCUMENT, "version": "2027-01-01", "captures": ["Your prompts"]})
MICRO = timedelta(microseconds=1)
HOUR = timedelta(hours=1)


# --- helpers --------------------------------------------------------------------------------------


def fold(*events: Event) -> aggregate.Assessment:
    return aggregate.rebuild(events[0].assessment_id, events)


def then(state: aggregate.Assessment, events: list[Event]) -> aggregate.Assessment:
    """The state after a command's decision was appended."""
    return aggregate.advanced(state, events)


def invited(time_limit: int | None = 90, expires_in_days: int = 7, **key: object):
    """A live assessment and one issued key of it (expires at NOW + `expires_in_days`)."""
    first = created(time_limit_minutes=time_limit, expires_in_days=expires_in_days)
    return first, issued(first, **key)


def agreed(time_limit: int | None = 90, expires_in_days: int = 7, **key: object):
    """An assessment and a key that consented to the current disclosure, with its state."""
    first, key_event = invited(time_limit, expires_in_days, **key)
    agreement = consented(key_event, disclosure_hash=DISCLOSURE.hash, disclosure_version=DISCLOSURE.version)
    return first, key_event, fold(first, key_event, agreement)


def started(at: datetime = NOW + HOUR, time_limit: int | None = 90, expires_in_days: int = 7):
    """A key whose session started at `at` (redeemed by the command itself): the assessment,
    the key, the redeem event and the state after it."""
    first, key_event, state = agreed(time_limit, expires_in_days)
    decided = aggregate.redeem(state, key_event.key_id, uuid.uuid4(), DISCLOSURE.hash, at)
    return first, key_event, decided[0], then(state, decided)


def key_in(state: aggregate.Assessment, key_event: CandidateKeyIssued) -> CandidateKey:
    return state.keys[key_event.key_id]


def the_key(*events: Event) -> CandidateKey:
    """The key of the single `CandidateKeyIssued` among `events`, after all of them."""
    (issue,) = [e for e in events if isinstance(e, CandidateKeyIssued)]
    return fold(*events).keys[issue.key_id]


def of_key(key_event: CandidateKeyIssued) -> dict:
    return {"key_id": key_event.key_id, "assessment_id": key_event.assessment_id, "org_id": key_event.org_id}


# --- a key's status: from its events and the time ----------------------------------------------------


def test_an_issued_key_is_its_issue_event_and_nothing_more():
    first, key_event = invited()

    key = issued_key(key_event)

    assert (key.id, key.assessment_id, key.org_id) == (key_event.key_id, first.assessment_id, first.org_id)
    assert (key.candidate_email, key.candidate_name, key.org_name) == ("ada@example.com", "Ada", "Acme")
    assert (key.expires_at, key.created_at) == (key_event.expires_at, key_event.issued_at)
    assert key.redeemed_at is key.completed_at is key.revoked_at is key.expired_at is None
    assert key.session_id is key.deadline is key.consent_hash is None
    assert (key.device_checks, key.device_changed, key.revoked, key.redeemed) == (0, False, False, False)
    assert key.status_at(NOW) == PENDING


def test_a_pending_key_is_pending_until_the_instant_it_expires_then_expired():
    first, key_event = invited()
    key = the_key(first, key_event)

    assert key.ends_at == key_event.expires_at
    assert key.status_at(key_event.expires_at - MICRO) == PENDING
    assert key.status_at(key_event.expires_at) == EXPIRED
    assert key.status_at(key_event.expires_at + timedelta(days=30)) == EXPIRED


def test_a_redeemed_key_is_active_until_the_instant_its_deadline_passes_then_expired():
    first, key_event = invited()
    start = redeemed(key_event, at=NOW + HOUR)
    key = the_key(first, key_event, start)

    assert key.redeemed and key.ends_at == start.deadline
    assert key.status_at(start.redeemed_at) == ACTIVE
    assert key.status_at(start.deadline - MICRO) == ACTIVE
    assert key.status_at(start.deadline) == EXPIRED


def test_a_completed_key_stays_completed_whatever_the_time():
    first, key_event = invited()
    start = redeemed(key_event, at=NOW + HOUR)
    key = the_key(first, key_event, start, completed(start))

    for now in (start.redeemed_at, start.deadline, key_event.expires_at + timedelta(days=1)):
        assert key.status_at(now) == COMPLETED
        assert not key.usable_at(now)
        assert not key.due_to_expire_at(now)


def test_a_recorded_expiry_makes_a_key_expired_even_before_its_time():
    first, key_event = invited()
    key = the_key(first, key_event, expired(key_event))

    assert key.status_at(NOW) == EXPIRED
    assert not key.usable_at(NOW)
    assert not key.due_to_expire_at(key_event.expires_at + HOUR)  # recorded once, never again


def test_only_a_pending_or_active_key_that_was_not_revoked_is_usable():
    first, key_event = invited()
    start = redeemed(key_event, at=NOW)

    assert the_key(first, key_event).usable_at(NOW)
    assert the_key(first, key_event, start).usable_at(NOW + HOUR)
    assert not the_key(first, key_event, start).usable_at(start.deadline)
    assert not the_key(first, key_event).usable_at(key_event.expires_at)
    assert not the_key(first, key_event, revoked(key_event)).usable_at(NOW)
    assert the_key(first, key_event, revoked(key_event)).revoked


def test_a_key_is_due_to_expire_from_the_instant_it_ends_unless_revoked_completed_or_recorded():
    first, key_event = invited()
    start = redeemed(key_event, at=NOW)
    pending, active = the_key(first, key_event), the_key(first, key_event, start)

    assert not pending.due_to_expire_at(key_event.expires_at - MICRO)
    assert pending.due_to_expire_at(key_event.expires_at)
    assert not active.due_to_expire_at(start.deadline - MICRO)
    assert active.due_to_expire_at(start.deadline)
    late = key_event.expires_at + HOUR
    assert not the_key(first, key_event, revoked(key_event)).due_to_expire_at(late)
    assert not the_key(first, key_event, start, completed(start)).due_to_expire_at(late)
    assert not the_key(first, key_event, expired(key_event)).due_to_expire_at(late)


def test_each_key_event_changes_the_key_as_it_says():
    first, key_event = invited()
    agreement = consented(key_event, at=NOW + MICRO)
    start = redeemed(key_event, at=NOW + HOUR, candidate_name="Ada L.", signing_public_key="K" * 43 + "=")
    check = device_checked(start, checkpoint="midway", checked_at=NOW + 2 * HOUR)
    done = completed(start, at=NOW + 2 * HOUR)
    lapse = expired(key_event, expired_at=NOW + 3 * HOUR)
    withdrawal = revoked(key_event, reason="assessment_deleted", at=NOW + 4 * HOUR)

    key = the_key(first, key_event, agreement)
    assert (key.consent_version, key.consent_hash, key.consented_at) == (
        agreement.disclosure_version,
        agreement.disclosure_hash,
        agreement.consented_at,
    )
    assert key.consented_to(agreement.disclosure_hash) and not key.consented_to("cd" * 32)
    key = evolve_key(start, key)
    assert (key.redeemed_at, key.session_id, key.deadline) == (
        start.redeemed_at,
        start.session_id,
        start.deadline,
    )
    assert key.signing_public_key == start.signing_public_key
    assert evolve_key(resumed(start, at=NOW + 2 * HOUR), key) == key
    key = evolve_key(check, key)
    assert (key.device_checks, key.first_fingerprint_hash, key.device_changed) == (
        1,
        check.fingerprint_hash,
        False,
    )
    assert (key.last_checkpoint, key.last_checked_at) == ("midway", check.checked_at)
    assert evolve_key(done, key).completed_at == done.completed_at
    assert evolve_key(lapse, key).expired_at == lapse.expired_at
    gone = evolve_key(withdrawal, key)
    assert (gone.revoked_at, gone.revoke_reason) == (withdrawal.revoked_at, "assessment_deleted")


def test_the_key_events_are_exactly_the_events_of_an_issued_key():
    assert set(KEY_EVENTS) == {
        CandidateKeyRevoked,
        CandidateConsented,
        CandidateKeyRedeemed,
        CandidateSessionResumed,
        CandidateDeviceChecked,
        CandidateKeyCompleted,
        CandidateKeyExpired,
    }


def test_a_key_has_no_rule_for_an_event_that_is_not_a_key_event():
    first, key_event = invited()

    with pytest.raises(TypeError, match="CandidateKey has no rule for AssessmentCreated"):
        evolve_key(first, issued_key(key_event))


@pytest.mark.parametrize("reviewer_gave", [None, ""])
def test_the_name_the_candidate_gives_at_redeem_fills_an_empty_name(reviewer_gave):
    first, key_event = invited(candidate_name=reviewer_gave)

    key = the_key(first, key_event, redeemed(key_event, candidate_name="Ada Lovelace"))

    assert key.candidate_name == "Ada Lovelace"


def test_the_name_the_candidate_gives_at_redeem_never_replaces_the_reviewers():
    first, key_event = invited(candidate_name="Ada")

    assert (
        the_key(first, key_event, redeemed(key_event, candidate_name="Someone else")).candidate_name == "Ada"
    )
    assert the_key(first, key_event, redeemed(key_event, candidate_name=None)).candidate_name == "Ada"


def test_device_checks_count_keep_the_first_fingerprint_and_a_change_stays_recorded():
    first, key_event = invited()
    start = redeemed(key_event)
    one, other = "01" * 32, "02" * 32
    checks = [
        device_checked(start, fingerprint_hash=one, changed=False),
        device_checked(start, fingerprint_hash=other, changed=True),
        device_checked(start, fingerprint_hash=one, changed=False, checkpoint="end"),
    ]

    key = the_key(first, key_event, start, *checks)

    assert key.device_checks == 3
    assert key.first_fingerprint_hash == one
    assert key.device_changed is True
    assert key.last_checkpoint == "end"


# --- consent ---------------------------------------------------------------------------------------


def test_consent_records_the_current_disclosures_version_and_hash_at_the_time_decided():
    first, key_event = invited()
    state = fold(first, key_event)

    decided = aggregate.consent(state, key_event.key_id, DISCLOSURE, DISCLOSURE.hash, NOW + HOUR)

    assert decided == [
        CandidateConsented(
            **of_key(key_event),
            disclosure_version=DISCLOSURE.version,
            disclosure_hash=DISCLOSURE.hash,
            consented_at=NOW + HOUR,
        )
    ]
    assert key_in(then(state, decided), key_event).consented_to(DISCLOSURE.hash)


def test_a_consent_without_a_hash_is_a_consent_to_the_current_text():
    first, key_event = invited()

    (decided,) = aggregate.consent(fold(first, key_event), key_event.key_id, DISCLOSURE, None, NOW)

    assert (decided.disclosure_hash, decided.disclosure_version) == (DISCLOSURE.hash, DISCLOSURE.version)


@pytest.mark.parametrize("offered", [DISCLOSURE.hash, None])
def test_a_repeated_consent_decides_nothing(offered):
    _first, key_event, state = agreed()

    assert aggregate.consent(state, key_event.key_id, DISCLOSURE, offered, NOW + HOUR) == []


def test_a_consent_to_a_text_that_is_not_the_current_one_is_refused():
    first, key_event = invited()
    state = fold(first, key_event)

    for offered in (NEWER.hash, "0" * 64, ""):
        with pytest.raises(DisclosureOutdated):
            aggregate.consent(state, key_event.key_id, DISCLOSURE, offered, NOW)


def test_a_consent_to_an_old_text_is_refused_even_after_consenting_to_the_current_one():
    _first, key_event, state = agreed()

    with pytest.raises(DisclosureOutdated):
        aggregate.consent(state, key_event.key_id, DISCLOSURE, NEWER.hash, NOW)


def test_a_key_that_consented_to_an_older_text_consents_again_to_the_new_one():
    _first, key_event, state = agreed()

    (decided,) = aggregate.consent(state, key_event.key_id, NEWER, NEWER.hash, NOW + HOUR)

    assert (decided.disclosure_version, decided.disclosure_hash) == (NEWER.version, NEWER.hash)


def test_an_active_key_may_still_consent_to_a_new_text():
    _first, key_event, _start, state = started()

    (decided,) = aggregate.consent(state, key_event.key_id, NEWER, None, NOW + HOUR)

    assert decided.disclosure_hash == NEWER.hash


# --- redeem ---------------------------------------------------------------------------------------


def test_a_consented_key_is_redeemed_into_a_new_session():
    _first, key_event, state = agreed(time_limit=90)
    session_id, at = uuid.uuid4(), NOW + HOUR

    decided = aggregate.redeem(
        state, key_event.key_id, session_id, DISCLOSURE.hash, at, "Ada L.", "P" * 43 + "="
    )

    assert decided == [
        CandidateKeyRedeemed(
            **of_key(key_event),
            session_id=session_id,
            subject_id=key_event.key_id,  # a key without an email is its own data subject
            candidate_name="Ada L.",
            signing_public_key="P" * 43 + "=",
            redeemed_at=at,
            deadline=at + timedelta(minutes=90),
        )
    ]
    key = key_in(then(state, decided), key_event)
    assert key.status_at(at) == ACTIVE
    assert key.session_id == session_id


def test_redeem_without_consent_is_refused_as_consent_required():
    first, key_event = invited()

    with pytest.raises(ConsentRequired):
        aggregate.redeem(fold(first, key_event), key_event.key_id, uuid.uuid4(), DISCLOSURE.hash, NOW)


def test_redeem_needs_consent_to_the_current_disclosure_not_to_an_older_one():
    _first, key_event, state = agreed()

    with pytest.raises(ConsentRequired):
        aggregate.redeem(state, key_event.key_id, uuid.uuid4(), NEWER.hash, NOW)


def test_redeeming_an_active_key_resumes_its_session_whatever_session_was_offered():
    _first, key_event, start, state = started(at=NOW + HOUR)
    at = NOW + 2 * HOUR

    decided = aggregate.redeem(state, key_event.key_id, uuid.uuid4(), DISCLOSURE.hash, at, "Someone")

    assert decided == [
        CandidateSessionResumed(**of_key(key_event), session_id=start.session_id, resumed_at=at)
    ]
    after = key_in(then(state, decided), key_event)
    assert after == key_in(state, key_event)  # the same session, the same deadline


def test_an_active_key_resumes_even_after_the_disclosure_changed():
    _first, key_event, start, state = started()

    (decided,) = aggregate.redeem(state, key_event.key_id, uuid.uuid4(), NEWER.hash, NOW + 2 * HOUR)

    assert isinstance(decided, CandidateSessionResumed)
    assert decided.session_id == start.session_id


def test_redeeming_a_completed_key_is_refused_as_already_completed():
    _first, key_event, start, state = started()
    state = then(state, [completed(start)])

    with pytest.raises(KeyAlreadyCompleted):
        aggregate.redeem(state, key_event.key_id, uuid.uuid4(), DISCLOSURE.hash, NOW + 2 * HOUR)


def refusals() -> dict[str, Callable[[], tuple[aggregate.Assessment, uuid.UUID, datetime]]]:
    """Keys that open nothing: each with the state, the key id and the time it is presented at.
    Every key here consented to the current disclosure first."""

    def revoked_key():
        _first, key_event, state = agreed()
        return then(state, [revoked(key_event)]), key_event.key_id, NOW

    def expired_pending():
        _first, key_event, state = agreed()
        return state, key_event.key_id, key_event.expires_at

    def recorded_expired():
        _first, key_event, state = agreed()
        return then(state, [expired(key_event)]), key_event.key_id, NOW

    def past_deadline():
        _first, key_event, start, state = started()
        return state, key_event.key_id, start.deadline

    def of_a_deleted_assessment():
        first, key_event, state = agreed()
        return then(state, [deleted(first)]), key_event.key_id, NOW

    def unknown_key():
        _first, _key_event, state = agreed()
        return state, uuid.uuid4(), NOW

    def of_no_assessment():
        return aggregate.Assessment(id=uuid.uuid4()), uuid.uuid4(), NOW

    return {f.__name__: f for f in (
        revoked_key, expired_pending, recorded_expired, past_deadline, of_a_deleted_assessment, unknown_key,
        of_no_assessment,
    )}  # fmt: skip


@pytest.mark.parametrize("case", list(refusals()))
def test_a_key_that_opens_nothing_is_refused_alike_by_every_candidate_command(case):
    state, key_id, now = refusals()[case]()

    with pytest.raises(CandidateRefused):
        aggregate.redeem(state, key_id, uuid.uuid4(), DISCLOSURE.hash, now)
    with pytest.raises(CandidateRefused):
        aggregate.consent(state, key_id, DISCLOSURE, DISCLOSURE.hash, now)
    with pytest.raises(CandidateRefused):
        aggregate.open_key(state, key_id, now)
    with pytest.raises(CandidateRefused):
        aggregate.candidate_key(state, key_id, now)


@pytest.mark.parametrize(
    ("time_limit", "expires_in_days", "redeem_after", "deadline_after"),
    [
        (90, 7, HOUR, HOUR + timedelta(minutes=90)),  # the limit from the redeem
        (90, 1, timedelta(hours=23), timedelta(days=1)),  # the limit would run past the expiry
        (60, 1, timedelta(hours=23), timedelta(days=1)),  # the limit ends exactly at the expiry
        (None, 7, HOUR, timedelta(days=7)),  # no limit: the expiry
    ],
)
def test_the_deadline_is_the_time_limit_from_the_redeem_but_never_after_the_key_expires(
    time_limit, expires_in_days, redeem_after, deadline_after
):
    first, key_event, start, state = started(NOW + redeem_after, time_limit, expires_in_days)

    assert start.deadline == NOW + deadline_after
    assert (
        aggregate.session_deadline(first, key_in(state, key_event), NOW + redeem_after)
        == NOW + deadline_after
    )
    assert key_in(state, key_event).ends_at == NOW + deadline_after


# --- complete -------------------------------------------------------------------------------------


def test_a_session_completed_before_its_deadline_records_when():
    _first, key_event, start, state = started()
    at = start.deadline - MICRO

    decided = aggregate.complete(state, key_event.key_id, start.session_id, at)

    assert decided == [
        CandidateKeyCompleted(**of_key(key_event), session_id=start.session_id, completed_at=at)
    ]
    assert key_in(then(state, decided), key_event).status_at(at) == COMPLETED


@pytest.mark.parametrize(
    "late", [timedelta(0), MICRO, timedelta(days=30)], ids=["at", "just after", "long after"]
)
def test_completing_at_or_after_the_deadline_is_refused_as_deadline_passed(late):
    _first, key_event, start, state = started()

    with pytest.raises(DeadlinePassed):
        aggregate.complete(state, key_event.key_id, start.session_id, start.deadline + late)


def test_completing_a_session_whose_expiry_was_recorded_is_refused_as_deadline_passed():
    _first, key_event, start, state = started()
    state = then(state, [expired(key_event, session_id=start.session_id, reason=DEADLINE_PASSED)])

    with pytest.raises(DeadlinePassed):
        aggregate.complete(state, key_event.key_id, start.session_id, start.redeemed_at)


def test_completing_again_decides_nothing_even_after_the_deadline():
    _first, key_event, start, state = started()
    state = then(state, aggregate.complete(state, key_event.key_id, start.session_id, start.redeemed_at))

    assert aggregate.complete(state, key_event.key_id, start.session_id, start.redeemed_at + HOUR) == []
    assert aggregate.complete(state, key_event.key_id, start.session_id, start.deadline + HOUR) == []


def test_completing_another_session_of_the_key_is_refused():
    _first, key_event, start, state = started()

    with pytest.raises(CandidateRefused):
        aggregate.complete(state, key_event.key_id, uuid.uuid4(), start.redeemed_at)
    done = then(state, [completed(start)])
    with pytest.raises(CandidateRefused):
        aggregate.complete(done, key_event.key_id, uuid.uuid4(), start.redeemed_at)


def test_completing_a_key_that_was_never_redeemed_is_refused_as_not_redeemed():
    _first, key_event, state = agreed()

    with pytest.raises(KeyNotRedeemed):
        aggregate.complete(state, key_event.key_id, uuid.uuid4(), NOW)


def test_completing_a_pending_key_past_its_expiry_is_refused_like_any_key_that_opens_nothing():
    _first, key_event, state = agreed()

    with pytest.raises(CandidateRefused):
        aggregate.complete(state, key_event.key_id, uuid.uuid4(), key_event.expires_at)


@pytest.mark.parametrize("gone", ["revoked", "deleted", "unknown"])
def test_completing_a_revoked_deleted_or_unknown_key_is_refused(gone):
    first, key_event, start, state = started()
    key_id = key_event.key_id
    if gone == "revoked":
        state = then(state, [revoked(key_event)])
    elif gone == "deleted":
        state = then(state, [deleted(first)])
    else:
        key_id = uuid.uuid4()

    with pytest.raises(CandidateRefused):
        aggregate.complete(state, key_id, start.session_id, start.redeemed_at)


# --- device checks ------------------------------------------------------------------------------------


def test_device_checks_compare_each_fingerprint_with_the_sessions_first():
    _first, key_event, start, state = started()
    one, other = "01" * 32, "02" * 32
    changes = []
    for n, fingerprint in enumerate([one, one, other, one]):
        decided = aggregate.check_device(
            state, key_event.key_id, start.session_id, f"cp{n}", fingerprint, start.redeemed_at + n * MICRO
        )
        assert decided == [
            CandidateDeviceChecked(
                **of_key(key_event),
                session_id=start.session_id,
                checkpoint=f"cp{n}",
                fingerprint_hash=fingerprint,
                changed=decided[0].changed,
                checked_at=start.redeemed_at + n * MICRO,
            )
        ]
        changes.append(decided[0].changed)
        state = then(state, decided)
        changes_so_far = key_in(state, key_event).device_changed
        assert changes_so_far is any(changes)

    assert changes == [False, False, True, False]
    key = key_in(state, key_event)
    assert key.device_changed is True  # the change stays on the key
    assert (key.device_checks, key.first_fingerprint_hash, key.last_checkpoint) == (4, one, "cp3")


def test_a_device_check_is_refused_outside_the_sessions_active_time():
    _first, key_event, start, state = started()
    key_id, session_id = key_event.key_id, start.session_id

    with pytest.raises(CandidateRefused):  # another session
        aggregate.check_device(state, key_id, uuid.uuid4(), "start", "01" * 32, start.redeemed_at)
    with pytest.raises(CandidateRefused):  # past its deadline
        aggregate.check_device(state, key_id, session_id, "start", "01" * 32, start.deadline)
    with pytest.raises(CandidateRefused):  # completed
        aggregate.check_device(
            then(state, [completed(start)]), key_id, session_id, "end", "01" * 32, start.redeemed_at
        )
    with pytest.raises(CandidateRefused):  # revoked
        aggregate.check_device(
            then(state, [revoked(key_event)]), key_id, session_id, "x", "01" * 32, start.redeemed_at
        )
    _, pending, pending_state = agreed()
    with pytest.raises(CandidateRefused):  # never redeemed
        aggregate.check_device(pending_state, pending.key_id, session_id, "start", "01" * 32, NOW)


def test_an_active_session_is_found_by_its_key_and_session_while_active_only():
    _first, key_event, start, state = started()

    assert aggregate.active_session(
        state, key_event.key_id, start.session_id, start.redeemed_at
    ).session_id == (start.session_id)
    with pytest.raises(CandidateRefused):
        aggregate.active_session(state, key_event.key_id, start.session_id, start.deadline)
    with pytest.raises(CandidateRefused):
        aggregate.active_session(state, key_event.key_id, uuid.uuid4(), start.redeemed_at)


def test_an_open_key_is_pending_or_active_and_a_completed_one_opens_nothing():
    _first, key_event, start, state = started()
    done = then(state, [completed(start)])

    assert (
        aggregate.open_key(state, key_event.key_id, start.redeemed_at).status_at(start.redeemed_at) == ACTIVE
    )
    assert aggregate.candidate_key(state, key_event.key_id, start.redeemed_at).session_id == start.session_id
    with pytest.raises(CandidateRefused):
        aggregate.open_key(done, key_event.key_id, start.redeemed_at)
    with pytest.raises(KeyAlreadyCompleted):  # but the candidate's own calls say why
        aggregate.candidate_key(done, key_event.key_id, start.redeemed_at)
    with pytest.raises(KeyAlreadyCompleted):
        aggregate.consent(done, key_event.key_id, DISCLOSURE, None, start.redeemed_at)


# --- expiry -----------------------------------------------------------------------------------------


def test_a_pending_key_expires_at_its_expiry_with_the_reason_key_expired():
    first, key_event = invited()
    state = fold(first, key_event)

    assert aggregate.expire(state, key_event.expires_at - MICRO) == []
    decided = aggregate.expire(state, key_event.expires_at + timedelta(days=3))

    assert decided == [
        CandidateKeyExpired(
            **of_key(key_event), session_id=None, reason=KEY_EXPIRED, expired_at=key_event.expires_at
        )
    ]


def test_an_active_session_expires_at_its_deadline_with_the_reason_deadline_passed():
    _first, key_event, start, state = started()

    assert aggregate.expire(state, start.deadline - MICRO) == []
    decided = aggregate.expire(state, start.deadline + HOUR)

    assert decided == [
        CandidateKeyExpired(
            **of_key(key_event),
            session_id=start.session_id,
            reason=DEADLINE_PASSED,
            expired_at=start.deadline,
        )
    ]
    assert key_in(then(state, decided), key_event).expired_at == start.deadline


def test_a_key_is_due_at_the_instant_it_ends():
    first, key_event = invited()

    (decided,) = aggregate.expire(fold(first, key_event), key_event.expires_at)

    assert decided.expired_at == key_event.expires_at


def test_the_expiry_step_decides_each_due_key_once():
    first = created(time_limit_minutes=30, expires_in_days=7)
    lapsing, active, fresh = issued(first), issued(first), issued(first, expires_at=NOW + timedelta(days=30))
    start = redeemed(active, at=NOW, deadline=NOW + timedelta(minutes=30))
    state = fold(first, lapsing, fresh, active, start)
    now = NOW + timedelta(days=8)

    decided = aggregate.expire(state, now)

    assert {(e.key_id, e.reason) for e in decided} == {
        (lapsing.key_id, KEY_EXPIRED),
        (active.key_id, DEADLINE_PASSED),
    }
    assert aggregate.expire(then(state, decided), now) == []
    assert aggregate.expire(then(state, decided), now + timedelta(days=365)) == [
        CandidateKeyExpired(**of_key(fresh), session_id=None, reason=KEY_EXPIRED, expired_at=fresh.expires_at)
    ]


def test_the_expiry_step_leaves_completed_and_revoked_keys_alone():
    first = created(expires_in_days=7)
    done, withdrawn = issued(first), issued(first)
    start = redeemed(done)
    state = fold(first, done, start, completed(start), withdrawn, revoked(withdrawn))

    assert aggregate.expire(state, NOW + timedelta(days=365)) == []


def test_the_expiry_step_decides_nothing_for_a_deleted_assessment_whose_keys_the_cascade_revokes():
    first, key_event = invited()
    state = fold(first, key_event, deleted(first))

    assert aggregate.expire(state, NOW + timedelta(days=365)) == []
    assert aggregate.expire(aggregate.Assessment(id=uuid.uuid4()), NOW) == []


# --- the disclosure ------------------------------------------------------------------------------


def test_a_disclosure_is_read_from_its_document_and_shown_as_it_was_written():
    disclosure = disclosure_from(DOCUMENT)

    assert disclosure == Disclosure(
        version="2026-12-01",
        captures=("Your prompts", "The assistants' answers"),
        does_not_capture=("Your screen",),
        evaluated=("How you solve the task",),
        data_use=("Shared with the hiring team only",),
        tos_url="https://example.com/terms",
    )
    assert list(disclosure.document().items()) == list(DOCUMENT.items())  # the same order too


def test_the_shipped_disclosure_file_is_valid():
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "data" / "disclosure.json"

    assert disclosure_from(json.loads(path.read_text(encoding="utf-8"))).version


def test_an_http_terms_url_and_empty_lists_are_accepted():
    disclosure = disclosure_from({**DOCUMENT, "tosUrl": "http://example.com/terms", "evaluated": []})

    assert disclosure.tos_url == "http://example.com/terms"
    assert disclosure.evaluated == ()


def _without(name: str) -> dict:
    return {key: value for key, value in DOCUMENT.items() if key != name}


MALFORMED = {
    "not an object": ["version", "captures"],
    "a list of documents": [DOCUMENT],
    "no document": None,
    "no version": _without("version"),
    "a numeric version": {**DOCUMENT, "version": 20261201},
    "an empty version": {**DOCUMENT, "version": ""},
    "a blank version": {**DOCUMENT, "version": "  \t"},
    "no terms url": _without("tosUrl"),
    "a terms url of no http scheme": {**DOCUMENT, "tosUrl": "ftp://example.com/terms"},
    "a terms url with no scheme": {**DOCUMENT, "tosUrl": "example.com/terms"},
    "a terms url that is not a string": {**DOCUMENT, "tosUrl": ["https://example.com"]},
    **{f"no {name}": _without(name) for name in ("captures", "doesNotCapture", "evaluated", "dataUse")},
    **{
        f"{name} a string": {**DOCUMENT, name: "one thing"}
        for name in ("captures", "doesNotCapture", "evaluated", "dataUse")
    },
    **{
        f"{name} holding a number": {**DOCUMENT, name: ["one thing", 2]}
        for name in ("captures", "doesNotCapture", "evaluated", "dataUse")
    },
    "a list holding null": {**DOCUMENT, "dataUse": [None]},
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_a_malformed_disclosure_is_refused(case):
    with pytest.raises(InvalidDisclosure):
        disclosure_from(MALFORMED[case])


@pytest.mark.parametrize(
    ("document", "names"),
    [
        ({**DOCUMENT, "version": ""}, "`version`"),
        ({**DOCUMENT, "tosUrl": "ftp://x"}, "`tosUrl`"),
        ({**DOCUMENT, "dataUse": [1]}, "`dataUse`"),
        ({**DOCUMENT, "doesNotCapture": None}, "`doesNotCapture`"),
        ([], "JSON object"),
    ],
)
def test_a_refused_disclosure_says_which_field_is_wrong(document, names):
    with pytest.raises(InvalidDisclosure, match=re.escape(names)):
        disclosure_from(document)


def test_the_disclosure_hash_is_sha256_of_its_compact_json_in_the_documents_order():
    expected = (
        b'{"version":"2026-12-01","captures":["Your prompts","The assistants\' answers"],'
        b'"doesNotCapture":["Your screen"],"evaluated":["How you solve the task"],'
        b'"dataUse":["Shared with the hiring team only"],"tosUrl":"https://example.com/terms"}'
    )

    assert DISCLOSURE.serialised == expected
    assert DISCLOSURE.hash == hashlib.sha256(expected).hexdigest()


def test_the_disclosure_hash_is_over_utf_8_text_not_ascii_escapes():
    text = "Données chiffrées \u2013 jamais revendues · 日本語"
    disclosure = disclosure_from({**DOCUMENT, "dataUse": [text]})

    as_a_client_hashes = json.dumps(disclosure.document(), separators=(",", ":"), ensure_ascii=False)
    assert disclosure.hash == hashlib.sha256(as_a_client_hashes.encode("utf-8")).hexdigest()
    assert text.encode("utf-8") in disclosure.serialised
    escaped = json.dumps(disclosure.document(), separators=(",", ":")).encode()
    assert disclosure.hash != hashlib.sha256(escaped).hexdigest()


def test_any_change_to_the_text_changes_the_hash():
    changes = [
        {"version": "2026-12-02"},
        {"captures": ["Your prompts"]},
        {"doesNotCapture": ["Your screen", "Your camera"]},
        {"evaluated": ["How you solve it"]},
        {"dataUse": []},
        {"tosUrl": "https://example.com/terms2"},
    ]

    hashes = {disclosure_from({**DOCUMENT, **change}).hash for change in changes} | {DISCLOSURE.hash}

    assert len(hashes) == len(changes) + 1
    assert all(re.fullmatch(r"[0-9a-f]{64}", h) for h in hashes)


# --- the device fingerprint and the session token ---------------------------------------------------


FINGERPRINT = {"os": "linux", "arch": "x86_64", "hostnameHash": "ab12", "cpus": 8}


def test_a_fingerprint_hash_is_sha256_of_the_session_id_and_the_canonical_fingerprint():
    session_id = uuid.uuid4()
    fingerprint = {"os": "Mac OS \u2013 Sonoma", "cpus": 8, "arch": "arm64"}

    canonical = '{"arch":"arm64","cpus":8,"os":"Mac OS \u2013 Sonoma"}'.encode()
    assert (
        fingerprint_hash(session_id, fingerprint) == hashlib.sha256(session_id.bytes + canonical).hexdigest()
    )


def test_the_same_fingerprint_hashes_alike_in_a_session_whatever_the_order_of_its_fields():
    session_id = uuid.uuid4()
    reordered = dict(reversed(list(FINGERPRINT.items())))

    assert fingerprint_hash(session_id, FINGERPRINT) == fingerprint_hash(session_id, reordered)
    assert fingerprint_hash(session_id, FINGERPRINT) != fingerprint_hash(
        session_id, {**FINGERPRINT, "cpus": 4}
    )


def test_the_same_fingerprint_hashes_differently_in_two_sessions():
    one, other = uuid.uuid4(), uuid.uuid4()

    assert fingerprint_hash(one, FINGERPRINT) != fingerprint_hash(other, FINGERPRINT)


def test_a_fingerprint_hash_shows_none_of_the_raw_values():
    hashed = fingerprint_hash(uuid.uuid4(), FINGERPRINT)

    assert re.fullmatch(r"[0-9a-f]{64}", hashed)
    assert not any(str(value) in hashed for value in ("linux", "x86_64", "ab12"))


def test_a_session_token_is_256_random_bits_after_its_prefix():
    tokens = {new_session_token() for _ in range(50)}

    assert len(tokens) == 50
    for token in tokens:
        assert re.fullmatch(r"cst_[A-Za-z0-9_-]{43}", token), token
    assert SESSION_TOKEN_PREFIX == "cst_"


# --- the candidate service on the in-memory store ------------------------------------------------------


ORG = "org-acme"


class Clock:
    def __init__(self, now: datetime = NOW) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


class RacingStore(InMemoryEventStore):
    """The in-memory store, where another writer can get in first: before each of the next
    appends, the next of `racers` runs (its own appends are not raced)."""

    def __init__(self, clock: Clock) -> None:
        super().__init__(clock)
        self.racers: list[Callable[[], object]] = []
        self._racing = False

    def append(self, *args, **kwargs) -> list[RecordedEvent]:
        if self.racers and not self._racing:
            self._racing = True
            try:
                self.racers.pop(0)()
            finally:
                self._racing = False
        return super().append(*args, **kwargs)


@pytest.fixture(autouse=True)
def pauses(monkeypatch) -> list[int]:
    """The attempts after which the candidate service paused, instead of pausing."""
    paused: list[int] = []
    monkeypatch.setattr(candidates, "back_off", paused.append)
    return paused


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(clock: Clock) -> RacingStore:
    return RacingStore(clock)


@pytest.fixture
def assessments(store: RacingStore, clock: Clock) -> AssessmentService:
    keys = ("PST-AAAA-" + "".join(chars) for chars in itertools.product("23456789", repeat=4))
    return AssessmentService(store, clock=clock, generate_key=keys.__next__)


@pytest.fixture
def tokens() -> list[str]:
    """Every session token the service handed out, in order."""
    return []


@pytest.fixture
def service(assessments: AssessmentService, tokens: list[str]) -> CandidateService:
    def generate() -> str:
        tokens.append(new_session_token())
        return tokens[-1]

    return CandidateService(assessments, DISCLOSURE, generate_token=generate)


def meta() -> Metadata:
    return Metadata(ORG, "reviewer:test", "req-reviewer")


def invite(assessments: AssessmentService, time_limit: int | None = 60, expires_in_days: int = 2):
    """An assessment with one key: (assessment id, key id, key string)."""
    details = AssessmentDetails(
        title="Take-home",
        role="Backend",
        task_brief="Fix it.",
        time_limit_minutes=time_limit,
        expires_in_days=expires_in_days,
    )
    assessment_id = assessments.create(ORG, details, meta()).event.assessment_id
    (issue,) = assessments.issue_keys(ORG, assessment_id, [("ada@example.com", None)], meta())
    key_id = issue.event.key_id
    return assessment_id, key_id, assessments.key_strings([key_id])[key_id]


def types(store: InMemoryEventStore) -> list[str]:
    return [r.type_name for r in store.read_all()]


def redeemed_key(service: CandidateService, assessments: AssessmentService, **options):
    """A key consented and redeemed through the service: (assessment id, key string, redemption)."""
    assessment_id, _, key = invite(assessments, **options)
    service.consent(key, DISCLOSURE.hash, "req-1")
    return assessment_id, key, service.redeem(key, "req-2")


def test_the_candidates_calls_record_their_events_as_the_candidate_with_the_requests_correlation(
    service, assessments, store, clock
):
    assessment_id, key_id, key = invite(assessments)

    assert not service.consent_status(key).consented_to(DISCLOSURE.hash)
    service.consent(key, DISCLOSURE.hash, "req-1")
    assert service.consent_status(key).consented_to(DISCLOSURE.hash)
    clock.advance(minutes=1)
    first = service.redeem(key, "req-2", "Ada Lovelace", "S" * 43 + "=")
    clock.advance(minutes=1)
    second = service.redeem(key, "req-3")
    session = service.in_session(second.session_token)
    service.check_device(session, "start", FINGERPRINT, "req-4")
    clock.advance(minutes=1)
    completed_at = service.complete(key, first.key.session_id, "req-5")

    candidate_events = list(store.read_all())[2:]
    assert [r.type_name for r in candidate_events] == [
        "CandidateConsented",
        "CandidateKeyRedeemed",
        "CandidateSessionResumed",
        "CandidateDeviceChecked",
        "CandidateKeyCompleted",
    ]
    assert [r.metadata["correlationId"] for r in candidate_events] == [f"req-{n}" for n in range(1, 6)]
    assert {r.metadata["actor"] for r in candidate_events} == {f"candidate:{key_id}"}
    assert {r.metadata["orgId"] for r in candidate_events} == {ORG}
    assert [r.stream_version for r in candidate_events] == [3, 4, 5, 6, 7]
    assert first.key.session_id == second.key.session_id
    assert first.key.candidate_name == "Ada Lovelace"
    assert first.key.signing_public_key == "S" * 43 + "="
    assert candidate_events[1].event.signing_public_key == "S" * 43 + "="
    assert first.state.id == assessment_id and first.key.redeemed_at == NOW + timedelta(minutes=1)
    assert completed_at == NOW + timedelta(minutes=3)


def test_a_repeated_consent_appends_nothing_and_answers_the_first(service, assessments, store, clock):
    _, _, key = invite(assessments)
    first = service.consent(key, None, "req-1")
    clock.advance(minutes=5)

    again = service.consent(key, DISCLOSURE.hash, "req-2")

    assert types(store).count("CandidateConsented") == 1
    assert again.consented_at == first.consented_at == NOW
    assert (again.consent_hash, again.consent_version) == (DISCLOSURE.hash, DISCLOSURE.version)


def test_a_consent_to_a_text_not_shown_records_nothing(service, assessments, store):
    _, _, key = invite(assessments)
    before = types(store)

    with pytest.raises(DisclosureOutdated):
        service.consent(key, NEWER.hash, "req-1")

    assert types(store) == before
    assert not service.consent_status(key).consented_to(DISCLOSURE.hash)


def test_redeem_without_consent_records_nothing_and_reserves_no_token(service, assessments, store):
    _, _, key = invite(assessments)
    before = types(store)

    with pytest.raises(ConsentRequired):
        service.redeem(key, "req-1")

    assert types(store) == before
    assert not [r for r in store._reservations.values() if r.scope == SESSION_TOKEN_SCOPE]


@pytest.mark.parametrize("presented", ["PST-ZZZZ-9999", "not a key", "", "pst-aaaa-0000"])
def test_an_unknown_or_malformed_key_is_refused_by_every_call(service, assessments, presented):
    invite(assessments)

    for call in (
        lambda: service.consent_status(presented),
        lambda: service.consent(presented, None, "req"),
        lambda: service.redeem(presented, "req"),
        lambda: service.complete(presented, uuid.uuid4(), "req"),
        lambda: service.assessment_of(presented),
    ):
        with pytest.raises(CandidateRefused):
            call()


def test_a_string_not_shaped_like_a_key_is_refused_without_being_looked_up(service, assessments, store):
    _, key_id, key = invite(assessments)
    # the same value reserved under a shape no key has: only a key's shape is ever looked up
    elsewhere = created(org_id=ORG)
    claim = Reservation(KEY_SCOPE, key.lower(), subject_id=key_id)
    store.append(elsewhere.assessment_id, 0, [elsewhere], meta(), [claim])
    looked_up: list[str] = []
    reservation = store.reservation
    store.reservation = lambda scope, value: looked_up.append(value) or reservation(scope, value)

    with pytest.raises(CandidateRefused):
        service.consent_status(key.lower())
    assert looked_up == []
    assert service.consent_status(key).id == key_id
    assert looked_up == [key]


def test_a_key_whose_reservation_names_no_key_is_refused(service, store):
    # a value reserved in the key scope without naming a key: it opens nothing
    first = created(org_id=ORG)
    store.append(first.assessment_id, 0, [first], meta(), [Reservation(KEY_SCOPE, "PST-BBBB-2222")])

    for call in (
        lambda: service.consent_status("PST-BBBB-2222"),
        lambda: service.redeem("PST-BBBB-2222", None),
        lambda: service.assessment_of("PST-BBBB-2222"),
    ):
        with pytest.raises(CandidateRefused):
            call()


def test_a_redeem_reserves_only_the_sha256_of_its_session_token(service, assessments, store, tokens):
    _, key_id, key = invite(assessments)
    service.consent(key, None, "req-1")

    redemption = service.redeem(key, "req-2")
    service.redeem(key, "req-3")

    assert tokens[0] == redemption.session_token
    assert all(token.startswith(SESSION_TOKEN_PREFIX) for token in tokens)
    reserved = {r.key: r for r in store._reservations.values() if r.scope == SESSION_TOKEN_SCOPE}
    assert set(reserved) == {hashlib.sha256(token.encode()).hexdigest() for token in tokens}
    assert set(reserved) == {hash_token(token) for token in tokens}
    for record in reserved.values():
        assert record.payload == {"keyId": str(key_id), "sessionId": str(redemption.key.session_id)}
    stored = json.dumps(
        [(r.scope, r.key, r.payload) for r in store._reservations.values()]
        + [(codec.encode(r.event), r.metadata) for r in store.read_all()],
        default=str,
    )
    for token in tokens:
        assert token not in stored
        assert token.removeprefix(SESSION_TOKEN_PREFIX) not in stored


def test_every_redeem_hands_out_a_new_token_and_each_opens_the_one_session(service, assessments, tokens):
    _, key, first = redeemed_key(service, assessments)
    second = service.redeem(key, "req-3")

    assert first.session_token != second.session_token
    for token in (first.session_token, second.session_token):
        found = service.in_session(token)
        assert found.key.session_id == first.key.session_id
        assert found.state.id == first.state.id


def test_a_session_token_opens_nothing_once_the_session_is_completed(service, assessments):
    _, key, redemption = redeemed_key(service, assessments)
    service.complete(key, redemption.key.session_id, "req-3")

    with pytest.raises(CandidateRefused):
        service.in_session(redemption.session_token)
    with pytest.raises(CandidateRefused):
        service.assessment_of(redemption.session_token)


def test_a_session_token_opens_nothing_from_the_instant_its_deadline_passes(service, assessments, clock):
    _, _, redemption = redeemed_key(service, assessments, time_limit=60)
    clock.advance(minutes=60, microseconds=-1)
    assert service.in_session(redemption.session_token).key.status_at(clock()) == ACTIVE

    clock.advance(microseconds=1)

    with pytest.raises(CandidateRefused):
        service.in_session(redemption.session_token)


def test_a_session_token_opens_nothing_once_its_key_is_revoked(service, assessments):
    assessment_id, _key, redemption = redeemed_key(service, assessments)
    assessments.revoke_key(ORG, assessment_id, redemption.key.id, meta())

    with pytest.raises(CandidateRefused):
        service.in_session(redemption.session_token)


def test_a_session_token_opens_nothing_once_its_assessment_is_deleted_before_any_cascade(
    service, assessments
):
    assessment_id, _key, redemption = redeemed_key(service, assessments)
    assessments.delete(ORG, assessment_id, meta())

    with pytest.raises(CandidateRefused):
        service.in_session(redemption.session_token)


def test_an_unknown_session_token_is_refused(service, assessments):
    redeemed_key(service, assessments)

    for token in (new_session_token(), "cst_", "", "ast_whatever"):
        with pytest.raises(CandidateRefused):
            service.in_session(token)


def test_a_device_check_records_the_fingerprint_salted_by_the_session_and_never_its_values(
    service, assessments, store
):
    _, _, redemption = redeemed_key(service, assessments)
    fingerprint = {"os": "fp-os-7f3a", "hostnameHash": "fp-host-91c2", "cpus": 12345}
    session = service.in_session(redemption.session_token)

    service.check_device(session, "start", fingerprint, "req-3")
    service.check_device(session, "midway", dict(reversed(list(fingerprint.items()))), "req-4")
    service.check_device(session, "end", {**fingerprint, "os": "fp-os-other"}, "req-5")

    checks = [r for r in store.read_all() if r.type_name == "CandidateDeviceChecked"]
    assert [r.event.fingerprint_hash for r in checks[:2]] == [
        fingerprint_hash(redemption.key.session_id, fingerprint)
    ] * 2
    assert [r.event.changed for r in checks] == [False, False, True]
    assert [r.event.checkpoint for r in checks] == ["start", "midway", "end"]
    stored = json.dumps([codec.encode(r.event) for r in store.read_all()], default=str)
    for raw in ("fp-os-7f3a", "fp-host-91c2", "12345", "fp-os-other"):
        assert raw not in stored
    assert service.in_session(redemption.session_token).key.device_changed is True


def test_a_device_check_decided_after_the_deadline_is_refused(service, assessments, store, clock):
    _, _, redemption = redeemed_key(service, assessments, time_limit=60)
    session = service.in_session(redemption.session_token)
    clock.advance(minutes=60)

    with pytest.raises(CandidateRefused):
        service.check_device(session, "end", FINGERPRINT, "req-3")
    assert "CandidateDeviceChecked" not in types(store)


def test_completing_again_appends_nothing_and_answers_the_first_time(service, assessments, store, clock):
    _, key, redemption = redeemed_key(service, assessments)
    clock.advance(minutes=10)
    first = service.complete(key, redemption.key.session_id, "req-3")
    clock.advance(hours=5)

    again = service.complete(key, redemption.key.session_id, "req-4")

    assert first == again == NOW + timedelta(minutes=10)
    assert types(store).count("CandidateKeyCompleted") == 1


def test_completing_after_the_deadline_records_nothing(service, assessments, store, clock):
    _, key, redemption = redeemed_key(service, assessments, time_limit=60)
    clock.advance(minutes=60)

    with pytest.raises(DeadlinePassed):
        service.complete(key, redemption.key.session_id, "req-3")
    assert "CandidateKeyCompleted" not in types(store)


def test_a_key_or_a_session_token_reads_its_own_assessment_only(service, assessments):
    assessment_id, key, redemption = redeemed_key(service, assessments)
    other_id, _, other_key = invite(assessments)

    for credential in (key, redemption.session_token):
        assert service.assessment_of(credential).id == assessment_id
        assert service.assessment_for(credential, assessment_id).id == assessment_id
        with pytest.raises(CandidateRefused):
            service.assessment_for(credential, other_id)
    assert service.assessment_of(other_key).id == other_id
    for stranger in ("ast_reviewer_token", "hello"):
        with pytest.raises(CandidateRefused):
            service.assessment_of(stranger)


def test_a_completed_key_reads_nothing_and_its_own_calls_say_it_was_completed(service, assessments, store):
    _assessment_id, key, redemption = redeemed_key(service, assessments)
    service.complete(key, redemption.key.session_id, "req-3")
    before = types(store)

    with pytest.raises(CandidateRefused):
        service.assessment_of(key)
    for call in (
        lambda: service.consent_status(key),
        lambda: service.consent(key, None, "req-4"),
        lambda: service.redeem(key, "req-5"),
    ):
        with pytest.raises(KeyAlreadyCompleted):
            call()
    assert types(store) == before


def test_the_default_token_generator_is_the_random_session_token(assessments):
    service = CandidateService(assessments, DISCLOSURE)
    _, _, key = invite(assessments)
    service.consent(key, None, None)

    redemption = service.redeem(key, None)

    assert re.fullmatch(r"cst_[A-Za-z0-9_-]{43}", redemption.session_token)
    assert service.clock() == NOW


# --- races: each decision is taken again on the newer state ------------------------------------------


def test_two_redeems_at_once_start_one_session_and_the_loser_resumes_it(service, assessments, store, pauses):
    _, _key_id, key = invite(assessments)
    service.consent(key, None, "req-1")
    rival: list = []
    store.racers.append(lambda: rival.append(service.redeem(key, "rival")))

    mine = service.redeem(key, "req-2")

    assert types(store)[-2:] == ["CandidateKeyRedeemed", "CandidateSessionResumed"]
    assert mine.key.session_id == rival[0].key.session_id
    assert pauses == [1]
    for token in (mine.session_token, rival[0].session_token):
        assert service.in_session(token).key.session_id == mine.key.session_id


def test_two_consents_at_once_record_one(service, assessments, store, pauses):
    _, _, key = invite(assessments)
    store.racers.append(lambda: service.consent(key, None, "rival"))

    service.consent(key, None, "req-1")

    assert types(store).count("CandidateConsented") == 1
    assert pauses == [1]


def test_a_redeem_that_loses_the_race_to_a_revoke_is_refused(service, assessments, store):
    assessment_id, key_id, key = invite(assessments)
    service.consent(key, None, "req-1")
    store.racers.append(lambda: assessments.revoke_key(ORG, assessment_id, key_id, meta()))

    with pytest.raises(CandidateRefused):
        service.redeem(key, "req-2")
    assert "CandidateKeyRedeemed" not in types(store)
    assert not [r for r in store._reservations.values() if r.scope == SESSION_TOKEN_SCOPE]


def test_a_candidate_that_keeps_losing_races_gives_up_with_a_conflict(service, assessments, store, pauses):
    assessment_id, _, key = invite(assessments)

    def rival() -> None:  # moves the stream on each time: another key issued
        assessments.issue_keys(ORG, assessment_id, [(None, None)], meta())

    store.racers.extend([rival] * assessments.max_attempts)

    with pytest.raises(ConcurrencyConflict, match=str(assessment_id)):
        service.consent(key, None, "req-1")
    assert pauses == list(range(1, assessments.max_attempts + 1))
    assert "CandidateConsented" not in types(store)


# --- the expiry step of the assessment service ---------------------------------------------------------


def test_the_expiry_step_records_each_due_key_once_as_the_worker(service, assessments, store, clock):
    assessment_id, _, key = invite(assessments, time_limit=60, expires_in_days=2)
    (issue,) = assessments.issue_keys(ORG, assessment_id, [(None, None)], meta())
    service.consent(key, None, "req-1")
    redemption = service.redeem(key, "req-2")
    clock.advance(days=3)

    recorded = assessments.expire_keys(assessment_id)
    again = assessments.expire_keys(assessment_id)

    assert again == []
    by_key = {r.event.key_id: r.event for r in recorded}
    assert set(by_key) == {redemption.key.id, issue.event.key_id}
    assert by_key[redemption.key.id].reason == DEADLINE_PASSED
    assert by_key[redemption.key.id].expired_at == redemption.key.deadline
    assert by_key[issue.event.key_id].reason == KEY_EXPIRED
    assert by_key[issue.event.key_id].expired_at == issue.event.expires_at
    assert {(r.metadata["orgId"], r.metadata["actor"]) for r in recorded} == {(ORG, EXPIRY_ACTOR)}
    assert types(store).count("CandidateKeyExpired") == 2


def test_the_expiry_step_records_nothing_for_a_deleted_assessment(service, assessments, store, clock):
    assessment_id, _, _ = invite(assessments)
    assessments.delete(ORG, assessment_id, meta())
    clock.advance(days=30)

    assert assessments.expire_keys(assessment_id) == []
    assert "CandidateKeyExpired" not in types(store)


# --- what a refusal says to whoever reads the traceback (the API answers without it) ------------


def test_each_refusal_names_the_key_it_refused():
    first, key_event, start, state = started()
    key_id, session_id, late = key_event.key_id, start.session_id, start.deadline
    done = then(state, [completed(start)])
    _, pending, pending_state = agreed()
    _, fresh = invited()
    refusals = [
        (
            CandidateRefused,
            key_id,
            lambda: aggregate.open_key(then(state, [revoked(key_event)]), key_id, NOW),
        ),
        (CandidateRefused, key_id, lambda: aggregate.open_key(state, key_id, late)),
        (CandidateRefused, key_id, lambda: aggregate.active_session(state, key_id, uuid.uuid4(), NOW)),
        (KeyAlreadyCompleted, key_id, lambda: aggregate.candidate_key(done, key_id, start.redeemed_at)),
        (
            KeyNotRedeemed,
            pending.key_id,
            lambda: aggregate.complete(pending_state, pending.key_id, session_id, NOW),
        ),
        (
            CandidateRefused,
            key_id,
            lambda: aggregate.complete(state, key_id, uuid.uuid4(), start.redeemed_at),
        ),
        (DeadlinePassed, key_id, lambda: aggregate.complete(state, key_id, session_id, late)),
        (
            ConsentRequired,
            fresh.key_id,
            lambda: aggregate.redeem(fold(first, fresh), fresh.key_id, session_id, "h", NOW),
        ),
    ]
    for kind, named, refuse in refusals:
        with pytest.raises(kind) as refused:
            refuse()
        assert str(refused.value) == str(named)


def test_an_outdated_consent_names_the_hash_it_was_offered():
    _, key_event, state = agreed()

    with pytest.raises(DisclosureOutdated, match=NEWER.hash):
        aggregate.consent(state, key_event.key_id, DISCLOSURE, NEWER.hash, NOW)
