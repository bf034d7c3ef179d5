"""`GET /v1/assessments` and `GET /v1/assessments/:id`: what a reviewer reads."""

from __future__ import annotations

import base64
import json
import re
import struct
import uuid

import pytest

from tests.e2e.helpers import READ_FIELDS, assert_error, create, listed, listed_ids


def test_the_list_holds_only_the_active_assessments_of_the_callers_organisation(client, other_client):
    kept = create(client)
    deleted = create(client)
    create(other_client)
    assert client.delete(f"/v1/assessments/{deleted['id']}").status_code == 200

    assert listed_ids(client) == [kept["id"]]


def test_the_list_is_ordered_by_creation_time_then_id(client):
    created = [create(client) for _ in range(6)]

    found = listed(client)

    assert [item["id"] for item in found] == [item["id"] for item in created]
    assert found == sorted(found, key=lambda item: (item["createdAt"], item["id"]))


def test_listed_assessments_are_as_created_with_a_null_issue(client):
    created = create(client, repoUrl="https://example.com/r", timeLimitMinutes=30)

    assert listed(client) == [{**created, "issue": None}]


def test_listed_assessments_carry_their_issue(client, issue):
    create(client, issueId=issue["id"])

    (found,) = listed(client)

    assert set(found) == READ_FIELDS
    assert found["issue"] == issue


def test_an_empty_organisation_lists_nothing(client):
    response = client.get("/v1/assessments")

    assert response.status_code == 200
    assert response.json() == {"assessments": []}


def test_get_returns_the_assessment_with_a_null_issue(client):
    created = create(client)

    response = client.get(f"/v1/assessments/{created['id']}")

    assert response.status_code == 200
    assert response.json() == {"assessment": {**created, "issue": None}}


def test_get_returns_the_assessment_with_its_issue(client, issue):
    created = create(client, issueId=issue["id"])

    response = client.get(f"/v1/assessments/{created['id']}")

    assert response.json() == {"assessment": {**created, "issue": issue}}


@pytest.mark.parametrize("assessment_id", [str(uuid.uuid4()), "not-a-uuid", "123", "%20"])
def test_get_of_an_id_that_does_not_exist_is_not_found(client, assessment_id):
    assert_error(client.get(f"/v1/assessments/{assessment_id}"), 404, "not_found")


def test_get_of_another_organisations_assessment_is_not_found(client, other_client):
    theirs = create(other_client)

    assert_error(client.get(f"/v1/assessments/{theirs['id']}"), 404, "not_found")


def test_get_of_a_deleted_assessment_is_not_found(client):
    created = create(client)
    client.delete(f"/v1/assessments/{created['id']}")

    assert_error(client.get(f"/v1/assessments/{created['id']}"), 404, "not_found")


# --- paging --------------------------------------------------------------------------------


def _page(client, **params) -> dict:
    response = client.get("/v1/assessments", params=params)
    assert response.status_code == 200, response.text
    return response.json()


def test_walking_the_pages_yields_the_whole_list_once(client):
    created = [create(client)["id"] for _ in range(5)]

    walked, pages, cursor = [], 0, None
    while True:
        page = _page(client, limit=2, **({"after": cursor} if cursor else {}))
        walked += [item["id"] for item in page["assessments"]]
        pages += 1
        cursor = page["nextCursor"]
        if cursor is None:
            break
        assert pages < 10, "the cursor never ran out"

    assert walked == created
    assert pages == 3


def test_a_page_holds_at_most_limit_assessments_and_the_cursor_of_the_next(client):
    created = [create(client)["id"] for _ in range(3)]

    page = _page(client, limit=2)

    assert [item["id"] for item in page["assessments"]] == created[:2]
    assert isinstance(page["nextCursor"], str) and page["nextCursor"]


def test_the_last_page_has_a_null_cursor(client):
    created = [create(client)["id"] for _ in range(2)]

    page = _page(client, limit=2)

    assert [item["id"] for item in page["assessments"]] == created
    assert page["nextCursor"] is None


def test_paged_assessments_carry_their_issue(client, issue):
    create(client)
    create(client, issueId=issue["id"])

    page = _page(client, limit=1000)

    assert [item["issue"] for item in page["assessments"]] == [None, issue]


@pytest.mark.parametrize("limit", ["0", "1001", "-1", "abc", ""])
def test_a_limit_outside_1_to_1000_is_refused(client, limit):
    assert_error(client.get("/v1/assessments", params={"limit": limit}), 400, "validation_error", "limit")


@pytest.mark.parametrize("limit", ["1", "1000"])
def test_a_limit_within_1_to_1000_is_accepted(client, limit):
    assert client.get("/v1/assessments", params={"limit": limit}).status_code == 200


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize(
    "cursor",
    [
        "garbage!",
        "abc",
        _b64(b"not json"),
        _b64(json.dumps([1, 2]).encode()),
        _b64(json.dumps(["2026-01-01T00:00:00+00:00", "not-a-uuid"]).encode()),
        _b64(json.dumps({"a": 1}).encode()),
        _b64(b"\xff\xfe"),
        "0",
        "A" * 31,
        "A" * 33,
        "A" * 31 + "=",
        "A" * 31 + "+",
        "A" * 32 + "\n",
    ],
    ids=[
        "punctuation",
        "short",
        "not json",
        "numbers",
        "bad uuid",
        "object",
        "not utf-8",
        "zero",
        "31",
        "33",
        "padding",
        "not url-safe",
        "final newline",
    ],
)
def test_a_cursor_this_service_did_not_return_is_refused(client, cursor):
    response = client.get("/v1/assessments", params={"limit": 2, "after": cursor})

    assert_error(response, 400, "validation_error", "after")


def _position(micros: int, last_id: uuid.UUID) -> str:
    """A cursor as the document describes it: 24 bytes, base64url (time, id)."""
    return base64.urlsafe_b64encode(struct.pack(">q16s", micros, last_id.bytes)).decode()


@pytest.mark.parametrize(
    ("micros", "expected"),
    [(0, "all"), (-(2**63), "all"), (2**63 - 1, "none"), (10**17, "none")],
    ids=["epoch", "earliest", "latest", "year-5138"],
)
def test_every_cursor_of_the_documented_form_names_a_position(client, micros, expected):
    """Any 32 characters of the base64url alphabet are a place in the (createdAt, id) order,
    so a client that follows the document's pattern is never refused."""
    created = [create(client)["id"] for _ in range(2)]

    page = _page(client, limit=5, after=_position(micros, uuid.UUID(int=0)))

    assert [item["id"] for item in page["assessments"]] == (created if expected == "all" else [])
    assert page["nextCursor"] is None


def test_a_returned_cursor_has_the_documented_form(client):
    created = [create(client)["id"] for _ in range(2)]

    cursor = _page(client, limit=1)["nextCursor"]

    assert re.fullmatch(r"[A-Za-z0-9_-]{32}", cursor)
    assert [item["id"] for item in _page(client, limit=5, after=cursor)["assessments"]] == created[1:]
