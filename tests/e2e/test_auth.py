"""Authentication: reviewers by bearer token everywhere; candidates only on their own
assessment's `GET`; anything else is `401 unauthorized` in the one error shape."""

from __future__ import annotations

import uuid

import pytest

from events.sql import tenancy
from tests.e2e.helpers import assert_error, body
from tests.support.system import Client

REVIEWER_ONLY = [
    ("GET", "/v1/assessments"),
    ("POST", "/v1/assessments"),
    ("DELETE", "/v1/assessments/{id}"),
    ("POST", "/v1/assessments/{id}/keys"),
    ("GET", "/v1/assessments/{id}/keys"),
    ("DELETE", "/v1/assessments/{id}/keys/{key_id}"),
    ("GET", "/v1/issues"),
    ("GET", "/v1/issues/{issue_id}"),
]
EVERY_ENDPOINT = [*REVIEWER_ONLY, ("GET", "/v1/assessments/{id}")]


def _ids(endpoints):
    return [f"{method} {path}" for method, path in endpoints]


def _call(session, method: str, path: str, assessment: dict, key: dict, issue: dict):
    url = path.format(id=assessment["id"], key_id=key["id"], issue_id=issue["id"])
    payload = {"count": 1} if url.endswith("/keys") else body()
    return session.request(method, url, json=payload if method == "POST" else None)


@pytest.mark.parametrize(("method", "path"), EVERY_ENDPOINT, ids=_ids(EVERY_ENDPOINT))
def test_a_request_without_credentials_is_unauthorized(anonymous, keyed, issue, method, path):
    assessment, key = keyed

    response = _call(anonymous, method, path, assessment, key, issue)

    assert_error(response, 401, "unauthorized")


@pytest.mark.parametrize(("method", "path"), EVERY_ENDPOINT, ids=_ids(EVERY_ENDPOINT))
def test_an_unknown_bearer_token_is_unauthorized(shared_system, keyed, issue, method, path):
    assessment, key = keyed

    with Client(shared_system.api.url, f"ast_{uuid.uuid4().hex}") as stranger:
        response = _call(stranger, method, path, assessment, key, issue)

    assert_error(response, 401, "unauthorized")


@pytest.mark.parametrize(
    "header",
    [
        "Token {token}",
        "{token}",
        "Bearer",
        "Bearer ",
        "Basic dXNlcjpwYXNz",
        "Bearer {token}x",
        "Bearer x {token}",
    ],
    ids=["other scheme", "no scheme", "scheme only", "empty token", "basic", "altered token", "two tokens"],
)
@pytest.mark.parametrize("path", ["/v1/assessments", "/v1/assessments/{id}"])
def test_a_malformed_authorization_header_is_unauthorized(anonymous, org, keyed, header, path):
    assessment, _ = keyed

    response = anonymous.get(
        path.format(id=assessment["id"]), headers={"Authorization": header.format(token=org.token)}
    )

    assert_error(response, 401, "unauthorized")


def test_a_revoked_bearer_token_is_unauthorized(shared_system):
    issued = tenancy.create_organisation(shared_system.engine, f"Revoked {uuid.uuid4().hex[:6]}")
    tenancy.revoke_tokens(shared_system.engine, issued.prefix)

    with Client(shared_system.api.url, issued.token) as revoked:
        assert_error(revoked.get("/v1/assessments"), 401, "unauthorized")


@pytest.mark.parametrize(("method", "path"), REVIEWER_ONLY, ids=_ids(REVIEWER_ONLY))
def test_a_candidate_key_is_not_accepted_on_reviewer_endpoints(client, candidate, keyed, issue, method, path):
    assessment, key = keyed

    response = _call(candidate(key["key"]), method, path, assessment, key, issue)

    assert_error(response, 401, "unauthorized")
    assert client.get(f"/v1/assessments/{assessment['id']}").status_code == 200
    assert [k["id"] for k in client.get(f"/v1/assessments/{assessment['id']}/keys").json()["keys"]] == [
        key["id"]
    ]


def test_the_reviewers_token_is_accepted(client):
    assert client.get("/v1/assessments").status_code == 200


@pytest.mark.parametrize("method", ["GET", "DELETE"])
def test_credentials_are_checked_before_the_id(anonymous, method):
    assert_error(anonymous.request(method, "/v1/assessments/not-a-uuid"), 401, "unauthorized")
