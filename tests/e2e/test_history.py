"""`GET /v1/assessments/:id/events`: an assessment's events in order, without secrets, for its
own organisation only, still there once it is deleted (an audit trail), paged by version."""

from __future__ import annotations

import uuid

import pytest

from tests.e2e.helpers import TIMESTAMP, assert_error, create, is_uuid, issue_keys, parse_time
from tests.support.wait import wait_for

EVENT_FIELDS = {"id", "type", "version", "recordedAt", "data"}
ISSUED_DATA = {
    "keyId",
    "assessmentId",
    "orgId",
    "keyHint",
    "candidateEmail",
    "candidateName",
    "subjectId",
    "orgName",
    "expiresAt",
    "issuedAt",
}


def _url(assessment_id: str) -> str:
    return f"/v1/assessments/{assessment_id}/events"


def history(client, assessment_id: str, **params) -> dict:
    response = client.get(_url(assessment_id), params=params)
    assert response.status_code == 200, response.text
    return response.json()


def events_of(client, assessment_id: str) -> list[dict]:
    return history(client, assessment_id)["events"]


def test_the_history_lists_the_events_in_version_order_with_their_documented_fields(client, org):
    assessment = create(client, repoUrl="https://example.com/repo", timeLimitMinutes=45)
    first, second = issue_keys(client, assessment["id"], count=2)
    assert client.delete(f"/v1/assessments/{assessment['id']}/keys/{first['id']}").status_code == 200

    document = history(client, assessment["id"])

    assert set(document) == {"events", "nextCursor"}
    assert document["nextCursor"] is None
    events = document["events"]
    assert [(e["type"], e["version"]) for e in events] == [
        ("AssessmentCreated", 1),
        ("CandidateKeyIssued", 2),
        ("CandidateKeyIssued", 3),
        ("CandidateKeyRevoked", 4),
    ]
    for event in events:
        assert set(event) == EVENT_FIELDS
        assert is_uuid(event["id"])
        assert TIMESTAMP.match(event["recordedAt"]), event["recordedAt"]
        assert event["data"]["assessmentId"] == assessment["id"]
        assert event["data"]["orgId"] == org.org_id
    assert len({e["id"] for e in events}) == 4
    times = [parse_time(e["recordedAt"]) for e in events]
    assert times == sorted(times)
    created_data = events[0]["data"]
    assert {k: created_data[k] for k in ("title", "role", "taskBrief", "repoUrl", "timeLimitMinutes")} == {
        k: assessment[k] for k in ("title", "role", "taskBrief", "repoUrl", "timeLimitMinutes")
    }
    assert created_data["createdAt"] == assessment["createdAt"]
    assert [e["data"]["keyId"] for e in events[1:3]] == [first["id"], second["id"]]
    assert events[3]["data"]["keyId"] == first["id"]
    assert events[3]["data"]["reason"] == "revoked"


def test_issued_key_events_never_show_the_key_string(client):
    assessment = create(client)
    keys = issue_keys(
        client,
        assessment["id"],
        count=2,
        candidateEmails=["ada@example.com", "alan@example.com"],
        candidateNames=["Ada", "Alan"],
        orgName="Acme",
    )

    response = client.get(_url(assessment["id"]))

    issued = [e for e in response.json()["events"] if e["type"] == "CandidateKeyIssued"]
    assert [set(e["data"]) for e in issued] == [ISSUED_DATA, ISSUED_DATA]
    assert [(e["data"]["candidateEmail"], e["data"]["candidateName"]) for e in issued] == [
        ("ada@example.com", "Ada"),
        ("alan@example.com", "Alan"),
    ]
    for key in keys:
        assert key["key"] not in response.text
    assert [e["data"]["keyHint"] for e in issued] == [f"PST-****-**{key['key'][-2:]}" for key in keys]


def test_a_deleted_assessments_history_stays_available_with_the_cascade_revocations(client):
    assessment = create(client)
    keys = issue_keys(client, assessment["id"], count=2)
    assert client.delete(f"/v1/assessments/{assessment['id']}").status_code == 200

    def with_cascade() -> list[dict] | None:
        found = events_of(client, assessment["id"])
        return found if len(found) >= 6 else None

    events = wait_for(with_cascade, 10, "the deletion and the cascade's two revocations in the history")

    assert [e["type"] for e in events] == [
        "AssessmentCreated",
        "CandidateKeyIssued",
        "CandidateKeyIssued",
        "AssessmentDeleted",
        "CandidateKeyRevoked",
        "CandidateKeyRevoked",
    ]
    assert [e["version"] for e in events] == [1, 2, 3, 4, 5, 6]
    revoked = events[4:]
    assert {e["data"]["keyId"] for e in revoked} == {k["id"] for k in keys}
    assert {e["data"]["reason"] for e in revoked} == {"assessment_deleted"}


def test_another_organisations_history_is_not_found(client, other_client):
    theirs = create(other_client)
    issue_keys(other_client, theirs["id"])

    assert_error(client.get(_url(theirs["id"])), 404, "not_found")


@pytest.mark.parametrize("assessment_id", [str(uuid.uuid4()), "not-a-uuid", "123"])
def test_the_history_of_an_id_that_does_not_exist_is_not_found(client, assessment_id):
    assert_error(client.get(_url(assessment_id)), 404, "not_found")


def test_the_history_needs_a_reviewer_token(anonymous, candidate, keyed):
    assessment, key = keyed

    assert_error(anonymous.get(_url(assessment["id"])), 401, "unauthorized")
    assert_error(candidate(key["key"]).get(_url(assessment["id"])), 401, "unauthorized")


def test_pages_follow_next_cursor_through_the_whole_history(client):
    assessment = create(client)
    issue_keys(client, assessment["id"], count=4)
    everything = events_of(client, assessment["id"])

    first = history(client, assessment["id"], limit=2)
    second = history(client, assessment["id"], limit=2, after=first["nextCursor"])
    third = history(client, assessment["id"], limit=2, after=second["nextCursor"])

    assert [e["version"] for e in first["events"]] == [1, 2]
    assert first["nextCursor"] == "2"
    assert [e["version"] for e in second["events"]] == [3, 4]
    assert second["nextCursor"] == "4"
    assert [e["version"] for e in third["events"]] == [5]
    assert third["nextCursor"] is None
    assert first["events"] + second["events"] + third["events"] == everything


def test_a_page_that_ends_exactly_at_the_last_event_has_no_next_cursor(client):
    assessment = create(client)
    issue_keys(client, assessment["id"], count=1)

    page = history(client, assessment["id"], limit=2)

    assert [e["version"] for e in page["events"]] == [1, 2]
    assert page["nextCursor"] is None


def test_after_the_last_version_the_page_is_empty(client):
    assessment = create(client)

    page = history(client, assessment["id"], after=1)

    assert page == {"events": [], "nextCursor": None}


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 1001}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"after": -1}, "after"),
        ({"after": "x"}, "after"),
    ],
)
def test_a_bad_limit_or_cursor_is_a_validation_error(client, params, field):
    assessment = create(client)

    assert_error(client.get(_url(assessment["id"]), params=params), 400, "validation_error", field)
