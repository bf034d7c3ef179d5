"""`GET /v1/issues` and `GET /v1/issues/:id`: the OSS issue catalogue, for reviewers."""

from __future__ import annotations

import pytest

from tests.e2e.helpers import ISSUE_FIELDS, assert_error


def test_the_catalogue_lists_every_imported_issue_as_imported(client, catalogue):
    response = client.get("/v1/issues")

    assert response.status_code == 200
    listed = {issue["id"]: issue for issue in response.json()["issues"]}
    assert {issue_id: listed.get(issue_id) for issue_id in catalogue} == catalogue


def test_an_issue_has_the_documented_fields(client, catalogue):
    for issue in client.get("/v1/issues").json()["issues"]:
        assert set(issue) >= ISSUE_FIELDS
        assert isinstance(issue["labels"], list)


def test_one_issue_is_returned_by_id(client, issue):
    response = client.get(f"/v1/issues/{issue['id']}")

    assert response.status_code == 200
    assert response.json() == {"issue": issue}


@pytest.mark.parametrize("issue_id", ["no-such-issue", "00000000-0000-0000-0000-000000000000"])
def test_an_unknown_issue_is_not_found(client, catalogue, issue_id):
    assert_error(client.get(f"/v1/issues/{issue_id}"), 404, "not_found")


def test_every_organisation_sees_the_same_catalogue(client, other_client, catalogue):
    assert client.get("/v1/issues").json() == other_client.get("/v1/issues").json()
