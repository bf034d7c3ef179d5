"""`POST /v1/assessments`: what a created assessment looks like, and every input it refuses."""

from __future__ import annotations

import uuid
from urllib.parse import urlparse

import pytest

from tests.e2e.helpers import (
    ASSESSMENT_FIELDS,
    MISSING,
    TIMESTAMP,
    assert_error,
    body,
    create,
    is_uuid,
    listed,
)


def test_create_answers_201_with_the_assessment_and_its_location(client, org):
    sent = body(title="API design", role="Senior Backend Engineer", taskBrief="Design an API.")

    response = client.post("/v1/assessments", json=sent)

    assert response.status_code == 201, response.text
    document = response.json()
    assert set(document) == {"assessment"}
    assessment = document["assessment"]
    assert set(assessment) == ASSESSMENT_FIELDS
    assert assessment["orgId"] == org.org_id
    assert (assessment["title"], assessment["role"], assessment["taskBrief"]) == (
        "API design",
        "Senior Backend Engineer",
        "Design an API.",
    )
    assert urlparse(response.headers["Location"]).path == f"/v1/assessments/{assessment['id']}"


def test_location_names_a_resource_that_can_be_read(client):
    response = client.post("/v1/assessments", json=body())

    got = client.get(urlparse(response.headers["Location"]).path)

    assert got.status_code == 200
    assert got.json()["assessment"]["id"] == response.json()["assessment"]["id"]


def test_optional_fields_default_to_seven_days_and_nulls(client):
    assessment = create(client)

    assert assessment["expiresInDays"] == 7
    assert assessment["repoUrl"] is None
    assert assessment["timeLimitMinutes"] is None
    assert assessment["issueId"] is None
    assert assessment["rubricId"] is None


def test_every_writable_field_is_stored_as_sent(client):
    rubric = str(uuid.uuid4())
    sent = body(
        repoUrl="https://github.com/acme/api",
        timeLimitMinutes=90,
        expiresInDays=14,
        rubricId=rubric,
    )

    assessment = create(client, **sent)

    assert {name: assessment[name] for name in sent} == sent


def test_ids_are_lower_case_uuids(client):
    assessment = create(client)

    assert is_uuid(assessment["id"])


def test_timestamps_are_utc_iso_8601_with_milliseconds(client):
    assessment = create(client)

    assert TIMESTAMP.match(assessment["createdAt"]), assessment["createdAt"]
    assert TIMESTAMP.match(assessment["updatedAt"]), assessment["updatedAt"]


@pytest.mark.parametrize(
    "overrides",
    [
        {"title": "t" * 255},
        {"title": "\u00e9" * 255},
        {"title": "\U0001f642" * 255},
        {"role": "r" * 255},
        {"timeLimitMinutes": 1},
        {"timeLimitMinutes": 7 * 24 * 60},
        {"timeLimitMinutes": None},
        {"expiresInDays": 1},
        {"expiresInDays": 365},
        {"repoUrl": "http://example.com/repo"},
        {"repoUrl": "HTTPS://GITHUB.COM/acme/api?tab=readme#top"},
        {"repoUrl": "http://localhost:8080/repo"},
        {"repoUrl": "https://127.0.0.1/repo"},
        {"repoUrl": "https://[::1]:8443/"},
        {"repoUrl": "https://example.xn--p1ai/r\u00e9po"},
        {"repoUrl": None},
        {"rubricId": None},
    ],
    ids=lambda overrides: "-".join(f"{k}={str(v)[:12]}" for k, v in overrides.items()),
)
def test_values_at_the_bounds_are_accepted(client, overrides):
    response = client.post("/v1/assessments", json=body(**overrides))

    assert response.status_code == 201, response.text


INVALID = [
    ("missing title", {"title": MISSING}, "title"),
    ("missing role", {"role": MISSING}, "role"),
    ("empty title", {"title": ""}, "title"),
    ("blank title", {"title": "   "}, "title"),
    ("title of 256 characters", {"title": "t" * 256}, "title"),
    ("null title", {"title": None}, "title"),
    ("role of 256 characters", {"role": "r" * 256}, "role"),
    ("taskBrief missing without issueId", {"taskBrief": MISSING}, "taskBrief"),
    ("taskBrief empty without issueId", {"taskBrief": ""}, "taskBrief"),
    ("timeLimitMinutes 0", {"timeLimitMinutes": 0}, "timeLimitMinutes"),
    ("timeLimitMinutes negative", {"timeLimitMinutes": -5}, "timeLimitMinutes"),
    ("timeLimitMinutes over a week", {"timeLimitMinutes": 10081}, "timeLimitMinutes"),
    ("timeLimitMinutes a string", {"timeLimitMinutes": "60"}, "timeLimitMinutes"),
    ("timeLimitMinutes a fraction", {"timeLimitMinutes": 1.5}, "timeLimitMinutes"),
    ("timeLimitMinutes a boolean", {"timeLimitMinutes": True}, "timeLimitMinutes"),
    ("timeLimitMinutes a float", {"timeLimitMinutes": 60.0}, "timeLimitMinutes"),
    ("expiresInDays a float", {"expiresInDays": 14.0}, "expiresInDays"),
    ("expiresInDays 0", {"expiresInDays": 0}, "expiresInDays"),
    ("expiresInDays 366", {"expiresInDays": 366}, "expiresInDays"),
    ("expiresInDays a fraction", {"expiresInDays": 2.5}, "expiresInDays"),
    ("expiresInDays a string", {"expiresInDays": "7"}, "expiresInDays"),
    ("expiresInDays null", {"expiresInDays": None}, "expiresInDays"),
    ("repoUrl ftp", {"repoUrl": "ftp://x"}, "repoUrl"),
    ("repoUrl not a url", {"repoUrl": "not a url"}, "repoUrl"),
    ("repoUrl without a top-level domain", {"repoUrl": "https://intranet/repo"}, "repoUrl"),
    ("repoUrl with credentials", {"repoUrl": "https://user:token@github.com/a/b"}, "repoUrl"),
    ("repoUrl with a space", {"repoUrl": "https://github.com/a b"}, "repoUrl"),
    ("repoUrl with a final newline", {"repoUrl": "https://github.com/a\n"}, "repoUrl"),
    ("repoUrl over 2048 characters", {"repoUrl": "https://github.com/" + "a" * 2030}, "repoUrl"),
    ("rubricId not a uuid", {"rubricId": "abc"}, "rubricId"),
    ("unknown field timeLimit", {"timeLimit": 60}, "timeLimit"),
    ("issueId not in the catalogue", {"issueId": "no-such-issue"}, "issueId"),
]


@pytest.mark.parametrize(("overrides", "field"), [case[1:] for case in INVALID], ids=[c[0] for c in INVALID])
def test_invalid_input_is_refused_naming_the_field_and_stores_nothing(client, overrides, field):
    existing = create(client)

    response = client.post("/v1/assessments", json=body(**overrides))

    assert_error(response, 400, "validation_error", field)
    assert [item["id"] for item in listed(client)] == [existing["id"]]


@pytest.mark.parametrize(
    "raw",
    ["{not json", "[1, 2]", '"a string"', "42", "null", ""],
    ids=["not json", "array", "string", "number", "null", "empty"],
)
def test_a_body_that_is_not_a_json_object_is_a_validation_error(client, raw):
    response = client.post("/v1/assessments", data=raw, headers={"Content-Type": "application/json"})

    assert_error(response, 400, "validation_error")
    assert listed(client) == []


@pytest.mark.parametrize("content_type", ["application/json; charset=utf-8", "application/merge-patch+json"])
def test_a_json_media_type_with_parameters_or_suffix_is_accepted(client, content_type):
    raw = '{"title": "T", "role": "R", "taskBrief": "B"}'

    response = client.post("/v1/assessments", data=raw, headers={"Content-Type": content_type})

    assert response.status_code == 201, response.text


def test_a_body_that_is_not_declared_json_is_unsupported(client):
    raw = '{"title": "T", "role": "R", "taskBrief": "B"}'

    response = client.post("/v1/assessments", data=raw, headers={"Content-Type": "text/plain"})

    assert_error(response, 415, "unsupported_media_type")
    assert listed(client) == []


def test_with_an_issue_the_issue_brief_takes_precedence_over_a_sent_one(client, issue):
    assessment = create(client, issueId=issue["id"], taskBrief="Ignored brief.")

    assert assessment["issueId"] == issue["id"]
    assert assessment["taskBrief"] == issue["taskBrief"]


def test_with_an_issue_the_task_brief_may_be_left_out(client, issue):
    assessment = create(client, issueId=issue["id"], taskBrief=MISSING)

    assert assessment["taskBrief"] == issue["taskBrief"]
