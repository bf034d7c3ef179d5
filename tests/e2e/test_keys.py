"""Candidate keys: issue (`POST .../keys`), list (`GET .../keys`) and revoke (`DELETE .../keys/:id`)."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from sqlalchemy import text

from tests.e2e.helpers import (
    KEY_FIELDS,
    KEY_FORMAT,
    TIMESTAMP,
    assert_error,
    create,
    is_uuid,
    issue_keys,
    listed_keys,
    parse_time,
)


def _keys_url(assessment_id: str) -> str:
    return f"/v1/assessments/{assessment_id}/keys"


def test_issuing_answers_201_with_count_keys_and_the_documented_fields(client, org):
    assessment = create(client)

    response = client.post(_keys_url(assessment["id"]), json={"count": 3})

    assert response.status_code == 201, response.text
    document = response.json()
    assert set(document) == {"keys"}
    keys = document["keys"]
    assert len(keys) == 3
    for key in keys:
        assert set(key) == KEY_FIELDS
        assert is_uuid(key["id"])
        assert key["assessmentId"] == assessment["id"]
        assert key["orgId"] == org.org_id
        assert (key["candidateEmail"], key["candidateName"]) == (None, None)
        assert (key["redeemedAt"], key["completedAt"]) == (None, None)


def test_a_new_key_is_pending(client):
    (key,) = issue_keys(client, create(client)["id"])

    assert key["status"] == "pending"


def test_keys_have_the_pst_format_without_look_alikes(client):
    keys = issue_keys(client, create(client)["id"], count=50)

    for key in keys:
        assert KEY_FORMAT.match(key["key"]), key["key"]
    assert len({key["key"] for key in keys}) == 50


def test_key_timestamps_are_utc_iso_8601_with_milliseconds(client):
    (key,) = issue_keys(client, create(client)["id"])

    assert TIMESTAMP.match(key["createdAt"]), key["createdAt"]
    assert TIMESTAMP.match(key["expiresAt"]), key["expiresAt"]


@pytest.mark.parametrize("days", [1, 3, 7, 365])
def test_a_key_expires_the_assessments_expires_in_days_after_it_was_issued(client, days):
    (key,) = issue_keys(client, create(client, expiresInDays=days)["id"])

    assert parse_time(key["expiresAt"]) - parse_time(key["createdAt"]) == timedelta(days=days)


def test_keys_are_issued_to_the_given_emails_in_order(client):
    emails = ["ada@example.com", "alan@example.org"]

    keys = issue_keys(client, create(client)["id"], count=2, candidateEmails=emails)

    assert [(k["candidateEmail"], k["candidateName"]) for k in keys] == [(email, None) for email in emails]


def test_names_pair_with_emails_by_position(client):
    emails = ["ada@example.com", "alan@example.org", "grace@example.net"]
    names = ["Ada Lovelace", "Alan Turing", "Grace Hopper"]

    keys = issue_keys(client, create(client)["id"], count=3, candidateEmails=emails, candidateNames=names)

    assert [(k["candidateEmail"], k["candidateName"]) for k in keys] == list(zip(emails, names, strict=True))


def test_org_name_is_accepted(client):
    assert issue_keys(client, create(client)["id"], orgName="Acme Ltd")


INVALID = [
    ("count 0", {"count": 0}, "count"),
    ("count 51", {"count": 51}, "count"),
    ("count a string", {"count": "3"}, "count"),
    ("count a fraction", {"count": 2.5}, "count"),
    ("count a boolean", {"count": True}, "count"),
    ("count missing", {}, "count"),
    ("fewer emails than count", {"count": 2, "candidateEmails": ["a@example.com"]}, "candidateEmails"),
    (
        "more emails than count",
        {"count": 1, "candidateEmails": ["a@example.com", "b@example.com"]},
        "candidateEmails",
    ),
    ("names without emails", {"count": 1, "candidateNames": ["Ada"]}, "candidateNames"),
    (
        "fewer names than emails",
        {"count": 2, "candidateEmails": ["a@example.com", "b@example.com"], "candidateNames": ["Ada"]},
        "candidateNames",
    ),
    (
        "more names than emails",
        {"count": 1, "candidateEmails": ["a@example.com"], "candidateNames": ["Ada", "Alan"]},
        "candidateNames",
    ),
    ("unknown field", {"count": 1, "emails": ["a@example.com"]}, "emails"),
]


@pytest.mark.parametrize(("sent", "field"), [case[1:] for case in INVALID], ids=[case[0] for case in INVALID])
def test_invalid_input_is_refused_naming_the_field_and_issues_nothing(client, sent, field):
    assessment = create(client)
    existing = issue_keys(client, assessment["id"])

    response = client.post(_keys_url(assessment["id"]), json=sent)

    assert_error(response, 400, "validation_error", field)
    assert [k["id"] for k in listed_keys(client, assessment["id"])] == [existing[0]["id"]]


INVALID_EMAIL = {"count": 2, "candidateEmails": ["a@example.com", "not-an-email"]}


def test_an_invalid_email_is_refused_and_issues_nothing(client):
    assessment = create(client)

    response = client.post(_keys_url(assessment["id"]), json=INVALID_EMAIL)

    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "validation_error"
    assert "candidateEmails" in response.json()["error"]["details"]
    assert listed_keys(client, assessment["id"]) == []


def test_an_invalid_email_is_named_with_a_list_of_messages(client):
    assessment = create(client)

    response = client.post(_keys_url(assessment["id"]), json=INVALID_EMAIL)

    assert_error(response, 400, "validation_error", "candidateEmails")


@pytest.mark.parametrize("raw", ["{not json", "[1]", '"3"'], ids=["not json", "array", "string"])
def test_a_keys_body_that_is_not_a_json_object_is_a_validation_error(client, raw):
    assessment = create(client)

    response = client.post(
        _keys_url(assessment["id"]), data=raw, headers={"Content-Type": "application/json"}
    )

    assert_error(response, 400, "validation_error")
    assert listed_keys(client, assessment["id"]) == []


# --- list ------------------------------------------------------------------------------------


def test_keys_are_listed_in_the_order_they_were_issued(client):
    assessment = create(client)
    first = issue_keys(client, assessment["id"], count=3)
    second = issue_keys(client, assessment["id"], count=2)

    assert [k["id"] for k in listed_keys(client, assessment["id"])] == [k["id"] for k in first + second]


def test_listed_keys_are_as_issued(client):
    assessment = create(client)
    issued = issue_keys(client, assessment["id"], count=2, candidateEmails=["a@example.com", "b@example.com"])

    assert listed_keys(client, assessment["id"]) == issued


def test_the_reviewer_sees_each_key_that_neither_the_read_model_nor_the_events_hold(client, shared_system):
    """The key string is kept only in its reservation; the listing joins it from there."""
    assessment = create(client)
    issued = issue_keys(client, assessment["id"], count=3)

    listed = listed_keys(client, assessment["id"])

    assert [(k["id"], k["key"]) for k in listed] == [(k["id"], k["key"]) for k in issued]
    assert all(KEY_FORMAT.match(k["key"]) for k in listed)
    with shared_system.engine.connect() as conn:
        projected = conn.execute(
            text("SELECT * FROM candidate_keys_view WHERE assessment_id = :a"), {"a": assessment["id"]}
        ).all()
        events = conn.execute(
            text("SELECT data::text FROM events WHERE stream_id = :a"), {"a": assessment["id"]}
        ).all()
    assert len(projected) == 3 and len(events) == 4
    for key in issued:
        assert key["key"] not in repr(projected)
        assert key["key"] not in repr(events)


def test_an_assessment_without_keys_lists_none(client):
    response = client.get(_keys_url(create(client)["id"]))

    assert response.status_code == 200
    assert response.json() == {"keys": []}


def test_keys_are_listed_per_assessment(client):
    one, two = create(client), create(client)
    issue_keys(client, one["id"])
    theirs = issue_keys(client, two["id"])

    assert [k["id"] for k in listed_keys(client, two["id"])] == [theirs[0]["id"]]


# --- revoke ----------------------------------------------------------------------------------


def test_revoking_answers_ok_with_the_key_id(client):
    assessment = create(client)
    (key,) = issue_keys(client, assessment["id"])

    response = client.delete(f"{_keys_url(assessment['id'])}/{key['id']}")

    assert response.status_code == 200, response.text
    assert response.json() == {"ok": True, "id": key["id"]}


def test_a_revoked_key_is_no_longer_listed(client):
    assessment = create(client)
    kept, revoked = issue_keys(client, assessment["id"], count=2)

    client.delete(f"{_keys_url(assessment['id'])}/{revoked['id']}")

    assert [k["id"] for k in listed_keys(client, assessment["id"])] == [kept["id"]]


def test_a_second_revoke_is_not_found(client):
    assessment = create(client)
    (key,) = issue_keys(client, assessment["id"])
    client.delete(f"{_keys_url(assessment['id'])}/{key['id']}")

    assert_error(client.delete(f"{_keys_url(assessment['id'])}/{key['id']}"), 404, "not_found")


@pytest.mark.parametrize("key_id", [str(uuid.uuid4()), "not-a-uuid"])
def test_revoking_a_key_that_does_not_exist_is_not_found(client, key_id):
    assessment = create(client)
    issue_keys(client, assessment["id"])

    assert_error(client.delete(f"{_keys_url(assessment['id'])}/{key_id}"), 404, "not_found")


def test_revoking_a_key_through_another_assessment_is_not_found(client):
    one, two = create(client), create(client)
    (key,) = issue_keys(client, one["id"])

    response = client.delete(f"{_keys_url(two['id'])}/{key['id']}")

    assert_error(response, 404, "not_found")
    assert [k["id"] for k in listed_keys(client, one["id"])] == [key["id"]]


# --- the assessment must be the caller's and active ----------------------------------------


def _deleted(client) -> str:
    assessment = create(client)
    assert client.delete(f"/v1/assessments/{assessment['id']}").status_code == 200
    return assessment["id"]


def _others(other_client) -> str:
    return create(other_client)["id"]


MISSING_ASSESSMENTS = {
    "deleted": lambda client, other: _deleted(client),
    "another organisation's": lambda client, other: _others(other),
    "unknown": lambda client, other: str(uuid.uuid4()),
    "not a uuid": lambda client, other: "not-a-uuid",
}


@pytest.mark.parametrize("which", MISSING_ASSESSMENTS)
def test_issuing_keys_for_a_missing_assessment_is_not_found(client, other_client, which):
    assessment_id = MISSING_ASSESSMENTS[which](client, other_client)

    assert_error(client.post(_keys_url(assessment_id), json={"count": 1}), 404, "not_found")


@pytest.mark.parametrize("which", MISSING_ASSESSMENTS)
def test_listing_keys_of_a_missing_assessment_is_not_found(client, other_client, which):
    assessment_id = MISSING_ASSESSMENTS[which](client, other_client)

    assert_error(client.get(_keys_url(assessment_id)), 404, "not_found")


@pytest.mark.parametrize("which", MISSING_ASSESSMENTS)
def test_revoking_a_key_of_a_missing_assessment_is_not_found(client, other_client, which):
    assessment_id = MISSING_ASSESSMENTS[which](client, other_client)

    assert_error(client.delete(f"{_keys_url(assessment_id)}/{uuid.uuid4()}"), 404, "not_found")


def test_another_organisations_key_cannot_be_revoked_and_stays_listed(client, other_client):
    theirs = create(other_client)
    (key,) = issue_keys(other_client, theirs["id"])

    assert_error(client.delete(f"{_keys_url(theirs['id'])}/{key['id']}"), 404, "not_found")
    assert [k["id"] for k in listed_keys(other_client, theirs["id"])] == [key["id"]]


def test_another_organisations_keys_cannot_be_listed(client, other_client):
    theirs = create(other_client)
    issue_keys(other_client, theirs["id"])

    assert_error(client.get(_keys_url(theirs["id"])), 404, "not_found")


def test_after_deleting_the_assessment_its_keys_are_not_found(client):
    assessment = create(client)
    issue_keys(client, assessment["id"], count=2)

    client.delete(f"/v1/assessments/{assessment['id']}")

    assert_error(client.get(_keys_url(assessment["id"])), 404, "not_found")
