"""The Assessment aggregate: state is a fold of its stream; commands decide events or refuse."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import timedelta
from typing import get_args

import pytest

from events import aggregate, codec
from events.aggregate import (
    REVOKED_BY_CASCADE,
    AssessmentAlreadyDeleted,
    AssessmentAlreadyExists,
    AssessmentDetails,
    AssessmentNotFound,
    DomainError,
    KeyNotFound,
    NewKey,
)
from events.candidate import KEY_EVENTS
from events.keys import key_hint
from events.model import AssessmentCreated, AssessmentDeleted, CandidateKeyIssued, CandidateKeyRevoked, Event
from tests.unit.builders import NOW, created, deleted, issued, one_of_each, revoked

LATER = NOW + timedelta(hours=2)


def details(**overrides) -> AssessmentDetails:
    fields = {
        "title": "Backend take-home",
        "role": "Senior Backend Engineer",
        "task_brief": "Fix the bug.",
        "repo_url": "https://github.com/example/repo",
        "time_limit_minutes": 90,
        "expires_in_days": 3,
        "issue_id": "flask-5628-env-file-precedence",
        "rubric_id": uuid.uuid4(),
    }
    return AssessmentDetails(**{**fields, **overrides})


def new_key(key: str = "PST-ABCD-EFGH") -> NewKey:
    return NewKey(key_id=uuid.uuid4(), key=key, candidate_email="ada@example.com", candidate_name="Ada")


def live(expires_in_days: int = 7) -> tuple[AssessmentCreated, aggregate.Assessment]:
    first = created(expires_in_days=expires_in_days)
    return first, aggregate.rebuild(first.assessment_id, [first])


# --- rebuild ---------------------------------------------------------------------------------


def test_an_empty_stream_folds_to_an_assessment_that_does_not_exist():
    stream_id = uuid.uuid4()
    state = aggregate.rebuild(stream_id, [])
    assert state.id == stream_id
    assert state.version == 0
    assert not state.exists
    assert state.org_id is None


def test_an_event_the_aggregate_has_no_rule_for_is_refused_by_name():
    class AssessmentArchived(Event):
        pass

    with pytest.raises(TypeError) as refused:
        aggregate.rebuild(uuid.uuid4(), [AssessmentArchived()])
    assert str(refused.value) == "Assessment has no rule for AssessmentArchived"


def test_rebuild_counts_every_event_as_one_version():
    first = created()
    key = issued(first)
    events = [first, key, revoked(key), deleted(first)]
    assert aggregate.rebuild(first.assessment_id, events).version == 4
    assert aggregate.rebuild(first.assessment_id, events[:2]).version == 2


def test_rebuild_folds_creation_keys_revocation_and_deletion_into_state():
    first = created()
    kept, gone = issued(first, key_hint="PST-****-**AA"), issued(first, key_hint="PST-****-**BB")
    state = aggregate.rebuild(first.assessment_id, [first, kept, gone, revoked(gone)])
    assert state.created == first
    assert state.org_id == first.org_id
    assert state.exists
    assert set(state.keys) == {kept.key_id, gone.key_id}
    assert not state.keys[kept.key_id].revoked
    assert state.keys[gone.key_id].revoked
    assert state.keys[kept.key_id].expires_at == kept.expires_at

    gone_state = aggregate.rebuild(first.assessment_id, [first, deleted(first)])
    assert gone_state.deleted
    assert not gone_state.exists


def test_folding_a_stream_at_once_equals_evolving_it_one_event_at_a_time():
    events = one_of_each()
    stream_id = events[0].assessment_id
    one_at_a_time = aggregate.Assessment(id=stream_id)
    for event in events:
        one_at_a_time = replace(aggregate.evolve(event, one_at_a_time), version=one_at_a_time.version + 1)
    folded = aggregate.rebuild(stream_id, events)
    assert folded == one_at_a_time
    assert dict(folded.keys) == dict(one_at_a_time.keys) and len(folded.keys) == 3
    assert aggregate.advanced(aggregate.rebuild(stream_id, events[:5]), events[5:]) == folded


def test_the_folded_keys_cannot_be_changed_by_whoever_reads_the_state():
    first = created()
    state = aggregate.rebuild(first.assessment_id, [first, issued(first)])
    with pytest.raises(TypeError):
        state.keys[uuid.uuid4()] = None  # type: ignore[index]


def test_every_event_of_a_key_is_a_key_event_of_the_fold():
    assert set(get_args(aggregate.KeyEvent)) == {CandidateKeyIssued, *KEY_EVENTS}


# --- create ----------------------------------------------------------------------------------


def test_create_returns_one_assessment_created_with_the_details():
    stream_id, given = uuid.uuid4(), details()
    events = aggregate.create(aggregate.rebuild(stream_id, []), "org-a", given, NOW)
    assert events == [
        AssessmentCreated(
            assessment_id=stream_id,
            org_id="org-a",
            title=given.title,
            role=given.role,
            task_brief=given.task_brief,
            repo_url=given.repo_url,
            time_limit_minutes=given.time_limit_minutes,
            expires_in_days=given.expires_in_days,
            issue_id=given.issue_id,
            rubric_id=given.rubric_id,
            created_at=NOW,
        )
    ]


def test_create_refuses_a_stream_that_already_has_an_assessment():
    _, state = live()
    with pytest.raises(AssessmentAlreadyExists):
        aggregate.create(state, state.org_id, details(), NOW)


def test_create_refuses_a_stream_whose_assessment_was_deleted():
    first = created()
    state = aggregate.rebuild(first.assessment_id, [first, deleted(first)])
    with pytest.raises(AssessmentAlreadyExists):
        aggregate.create(state, first.org_id, details(), NOW)


# --- delete ----------------------------------------------------------------------------------


def test_delete_returns_assessment_deleted():
    first, state = live()
    assert aggregate.delete(state, LATER) == [
        AssessmentDeleted(assessment_id=first.assessment_id, org_id=first.org_id, deleted_at=LATER)
    ]


def test_delete_refuses_a_missing_assessment():
    state = aggregate.rebuild(uuid.uuid4(), [])
    with pytest.raises(AssessmentNotFound) as raised:
        aggregate.delete(state, NOW)
    assert not isinstance(raised.value, AssessmentAlreadyDeleted)


def test_delete_refuses_an_assessment_already_deleted():
    first = created()
    state = aggregate.rebuild(first.assessment_id, [first, deleted(first)])
    with pytest.raises(AssessmentAlreadyDeleted):
        aggregate.delete(state, LATER)


def test_already_deleted_is_a_kind_of_not_found():
    """So the API answers 404 for both, as the contract requires."""
    assert issubclass(AssessmentAlreadyDeleted, AssessmentNotFound)


# --- issue_keys ------------------------------------------------------------------------------


def test_issue_keys_expire_expires_in_days_after_now():
    first, state = live(expires_in_days=3)
    wanted = [new_key("PST-AAAA-AAAA"), new_key("PST-BBBB-BBBB")]
    events = aggregate.issue_keys(state, wanted, LATER, org_name="Acme")
    assert events == [
        CandidateKeyIssued(
            key_id=key.key_id,
            assessment_id=first.assessment_id,
            org_id=first.org_id,
            key_hint=key_hint(key.key),
            candidate_email=key.candidate_email,
            candidate_name=key.candidate_name,
            org_name="Acme",
            expires_at=LATER + timedelta(days=3),
            issued_at=LATER,
        )
        for key in wanted
    ]


def test_an_issued_key_event_holds_the_keys_hint_and_never_the_key():
    _, state = live()

    (event,) = aggregate.issue_keys(state, [new_key("PST-ABCD-EF7K")], LATER)

    assert event.key_hint == "PST-****-**7K"
    assert "PST-ABCD-EF7K" not in repr(event)
    assert "PST-ABCD-EF7K" not in str(codec.encode(event))


def test_the_event_carries_the_keys_hint_and_the_state_knows_the_key_by_its_id_only():
    first, state = live()
    wanted = new_key("PST-ABCD-EF7K")

    (issued,) = aggregate.issue_keys(state, [wanted], LATER)
    state = aggregate.rebuild(first.assessment_id, [first, issued])

    assert issued.key_hint == "PST-****-**7K"
    assert state.keys[wanted.key_id].id == wanted.key_id
    assert not hasattr(state.keys[wanted.key_id], "key")


def test_issue_keys_refuses_a_missing_assessment():
    with pytest.raises(AssessmentNotFound):
        aggregate.issue_keys(aggregate.rebuild(uuid.uuid4(), []), [new_key()], NOW)


def test_issue_keys_refuses_a_deleted_assessment():
    first = created()
    state = aggregate.rebuild(first.assessment_id, [first, deleted(first)])
    with pytest.raises(AssessmentAlreadyDeleted):
        aggregate.issue_keys(state, [new_key()], LATER)


# --- revoke_key ------------------------------------------------------------------------------


def test_revoke_key_returns_a_revocation_by_the_reviewer():
    first = created()
    key = issued(first)
    state = aggregate.rebuild(first.assessment_id, [first, key])
    assert aggregate.revoke_key(state, key.key_id, LATER) == [
        CandidateKeyRevoked(
            key_id=key.key_id,
            assessment_id=first.assessment_id,
            org_id=first.org_id,
            reason=aggregate.REVOKED_BY_REVIEWER,
            revoked_at=LATER,
        )
    ]


def test_revoke_key_refuses_an_unknown_key():
    first = created()
    state = aggregate.rebuild(first.assessment_id, [first, issued(first)])
    with pytest.raises(KeyNotFound):
        aggregate.revoke_key(state, uuid.uuid4(), LATER)


def test_revoke_key_refuses_a_key_already_revoked():
    first = created()
    key = issued(first)
    state = aggregate.rebuild(first.assessment_id, [first, key, revoked(key)])
    with pytest.raises(KeyNotFound):
        aggregate.revoke_key(state, key.key_id, LATER)


def test_revoke_key_refuses_a_deleted_assessment():
    first = created()
    key = issued(first)
    state = aggregate.rebuild(first.assessment_id, [first, key, deleted(first)])
    with pytest.raises(AssessmentAlreadyDeleted):
        aggregate.revoke_key(state, key.key_id, LATER)


def test_a_key_is_usable_until_the_instant_it_expires():
    first = created()
    key = issued(first)
    usable = aggregate.rebuild(first.assessment_id, [first, key]).keys[key.key_id]

    assert usable.usable_at(key.expires_at - timedelta(milliseconds=1))
    assert not usable.usable_at(key.expires_at)
    assert not usable.usable_at(key.expires_at + timedelta(days=1))


def test_a_revoked_key_is_never_usable_again_not_even_before_it_expires():
    first = created()
    key = issued(first)
    state = aggregate.rebuild(first.assessment_id, [first, key, revoked(key, at=NOW)])

    assert not state.keys[key.key_id].usable_at(NOW)
    assert not state.keys[key.key_id].usable_at(key.expires_at + timedelta(days=1))


def test_a_refusal_names_the_assessment_or_the_key_it_refused():
    """What a log line shows of a refused command (the API answers without it)."""
    first = created()
    missing = aggregate.rebuild(uuid.uuid4(), [])
    gone = aggregate.rebuild(first.assessment_id, [first, deleted(first)])
    _, alive = live()
    unknown_key = uuid.uuid4()
    refusals = [
        (lambda: aggregate.create(gone, first.org_id, details(), NOW), first.assessment_id),
        (lambda: aggregate.delete(missing, NOW), missing.id),
        (lambda: aggregate.delete(gone, NOW), first.assessment_id),
        (lambda: aggregate.revoke_key(alive, unknown_key, NOW), unknown_key),
    ]
    for refuse, refused_id in refusals:
        with pytest.raises(DomainError) as refused:
            refuse()
        assert str(refused.value) == str(refused_id)


# --- revoke_keys_of_deleted (the cascade) ----------------------------------------------------


def test_cascade_revokes_only_keys_not_yet_revoked_with_reason_assessment_deleted():
    first = created()
    open_1, open_2, closed = issued(first), issued(first), issued(first)
    stream = [first, open_1, open_2, closed, revoked(closed), deleted(first)]
    state = aggregate.rebuild(first.assessment_id, stream)

    events = aggregate.revoke_keys_of_deleted(state, LATER)

    assert {event.key_id for event in events} == {open_1.key_id, open_2.key_id}
    assert all(isinstance(event, CandidateKeyRevoked) for event in events)
    assert {event.reason for event in events} == {REVOKED_BY_CASCADE}
    assert REVOKED_BY_CASCADE == "assessment_deleted"
    assert {(event.assessment_id, event.org_id, event.revoked_at) for event in events} == {
        (first.assessment_id, first.org_id, LATER)
    }


def test_cascade_decides_nothing_for_a_live_assessment():
    first = created()
    state = aggregate.rebuild(first.assessment_id, [first, issued(first)])
    assert aggregate.revoke_keys_of_deleted(state, LATER) == []


def test_cascade_is_idempotent_once_its_revocations_are_applied():
    first = created()
    stream = [first, issued(first), issued(first), deleted(first)]
    decided = aggregate.revoke_keys_of_deleted(aggregate.rebuild(first.assessment_id, stream), LATER)
    assert len(decided) == 2

    after = aggregate.rebuild(first.assessment_id, [*stream, *decided])
    assert aggregate.revoke_keys_of_deleted(after, LATER + timedelta(minutes=1)) == []


# --- owned_by --------------------------------------------------------------------------------


def test_owned_by_is_true_for_the_creating_org_only():
    first, state = live()
    assert state.owned_by(first.org_id)
    assert not state.owned_by("another-org")


def test_owned_by_is_false_once_deleted():
    first = created()
    state = aggregate.rebuild(first.assessment_id, [first, deleted(first)])
    assert not state.owned_by(first.org_id)


def test_owned_by_is_false_for_a_missing_assessment():
    assert not aggregate.rebuild(uuid.uuid4(), []).owned_by("org-a")
