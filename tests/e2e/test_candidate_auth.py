"""Candidates (`X-API-Key: PST-XXXX-XXXX`) may read their own assessment, and only while the
key is usable: a revoke, a delete or the expiry refuses it at once (fail closed)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest

from events.aggregate import AssessmentDetails
from events.model import Metadata, utcnow
from events.service import AssessmentService
from tests.e2e.helpers import assert_error, create, issue_keys, listed_keys
from tests.support.system import Client


def _get(session, assessment_id: str):
    return session.get(f"/v1/assessments/{assessment_id}")


def test_a_candidate_reads_the_assessment_of_their_key(client, candidate, keyed):
    assessment, key = keyed

    response = _get(candidate(key["key"]), assessment["id"])

    assert response.status_code == 200, response.text
    assert response.json() == {"assessment": {**assessment, "issue": None}}


def test_a_candidate_reads_the_issue_of_their_assessment(client, candidate, issue):
    assessment = create(client, issueId=issue["id"])
    (key,) = issue_keys(client, assessment["id"])

    response = _get(candidate(key["key"]), assessment["id"])

    assert response.json()["assessment"]["issue"] == issue


def test_a_key_does_not_open_another_assessment_of_the_organisation(client, candidate, keyed):
    _, key = keyed
    other = create(client)

    assert_error(_get(candidate(key["key"]), other["id"]), 401, "unauthorized")


def test_a_key_does_not_open_another_organisations_assessment(other_client, candidate, keyed):
    _, key = keyed
    theirs = create(other_client)

    assert_error(_get(candidate(key["key"]), theirs["id"]), 401, "unauthorized")


def test_a_revoked_key_is_refused_at_once(client, candidate, keyed):
    assessment, key = keyed
    session = candidate(key["key"])
    assert _get(session, assessment["id"]).status_code == 200

    client.delete(f"/v1/assessments/{assessment['id']}/keys/{key['id']}")

    assert_error(_get(session, assessment["id"]), 401, "unauthorized")


def test_a_key_of_a_deleted_assessment_is_refused_at_once(client, candidate, keyed):
    assessment, key = keyed
    session = candidate(key["key"])
    assert _get(session, assessment["id"]).status_code == 200

    client.delete(f"/v1/assessments/{assessment['id']}")

    assert_error(_get(session, assessment["id"]), 401, "unauthorized")


def test_revoking_one_key_leaves_the_others_usable(client, candidate):
    assessment = create(client)
    revoked, kept = issue_keys(client, assessment["id"], count=2)

    client.delete(f"/v1/assessments/{assessment['id']}/keys/{revoked['id']}")

    assert _get(candidate(kept["key"]), assessment["id"]).status_code == 200


@pytest.mark.parametrize("key", ["PST-AAAA-BBBB", "PST-0000-0000", "not-a-key", "pst-aaaa-bbbb", ""])
def test_an_unknown_key_is_refused(candidate, keyed, key):
    assessment, _ = keyed

    assert_error(_get(candidate(key), assessment["id"]), 401, "unauthorized")


def test_a_key_in_lower_case_is_refused(candidate, keyed):
    assessment, key = keyed

    assert_error(_get(candidate(key["key"].lower()), assessment["id"]), 401, "unauthorized")


# --- expiry, with a service on a clock eight days back -------------------------------------


@pytest.fixture
def expired(shared_system, org) -> tuple[str, str, str]:
    """An assessment of `org` whose one key (7 days) was issued eight days ago: (assessment
    id, key id, key)."""
    eight_days_ago = utcnow() - timedelta(days=8)
    service = AssessmentService(shared_system.store, clock=lambda: eight_days_ago)
    metadata = Metadata(org_id=org.org_id, actor="test:expiry")
    details = AssessmentDetails(title="Old", role="Backend", task_brief="Fix it.", expires_in_days=7)
    created = service.create(org.org_id, details, metadata).recorded
    (issued,) = service.issue_keys(org.org_id, created.stream_id, [(None, None)], metadata)
    (key,) = service.key_strings([issued.event.key_id]).values()
    return str(created.stream_id), str(issued.event.key_id), key


def test_an_expired_key_is_refused(candidate, expired):
    assessment_id, _, key = expired

    assert_error(_get(candidate(key), assessment_id), 401, "unauthorized")


def test_an_expired_key_lists_as_expired(client, expired):
    assessment_id, key_id, _ = expired

    assert [(k["id"], k["status"]) for k in listed_keys(client, assessment_id)] == [(key_id, "expired")]


def test_a_key_issued_now_on_an_old_assessment_is_usable(client, candidate, expired):
    assessment_id, _, _ = expired

    (fresh,) = issue_keys(client, assessment_id)

    assert fresh["status"] == "pending"
    assert _get(candidate(fresh["key"]), assessment_id).status_code == 200


def test_a_key_issued_in_a_race_with_the_deletion_never_authenticates_after_it(
    shared_system, org, client, candidate
):
    assessment = create(client)
    barrier = threading.Barrier(2)

    def issue():
        with Client(shared_system.api.url, org.token) as session:
            barrier.wait(5)
            return session.post(f"/v1/assessments/{assessment['id']}/keys", json={"count": 5})

    def delete():
        with Client(shared_system.api.url, org.token) as session:
            barrier.wait(5)
            return session.delete(f"/v1/assessments/{assessment['id']}")

    with ThreadPoolExecutor(2) as pool:
        issued, deleted = pool.submit(issue), pool.submit(delete)
        issued, deleted = issued.result(), deleted.result()

    assert deleted.status_code == 200
    assert issued.status_code in (201, 404), issued.text
    for key in issued.json().get("keys", []):
        assert_error(_get(candidate(key["key"]), assessment["id"]), 401, "unauthorized")
