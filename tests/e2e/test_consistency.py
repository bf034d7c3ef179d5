"""Read-your-writes: after a 2xx write, the organisation's next read reflects it, with no
retries; and when the projections lag past the configured bound, a read still answers at
once and says it may be stale."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.conftest import new_org
from tests.e2e.helpers import body, create, issue_keys, listed_ids, listed_keys
from tests.support.system import Client, System
from tests.support.wait import wait_for

ROUNDS = 30
READ_WAIT_SECONDS = 0.5


def test_a_created_assessment_is_listed_and_gettable_at_once(client):
    expected: list[str] = []
    for _ in range(ROUNDS):
        created = create(client)
        expected.append(created["id"])

        got = client.get(f"/v1/assessments/{created['id']}")
        assert got.status_code == 200, got.text
        assert got.json()["assessment"] == {**created, "issue": None}
        assert listed_ids(client) == expected


def test_a_deleted_assessment_is_gone_at_once(client):
    remaining = [create(client)["id"] for _ in range(ROUNDS)]
    while remaining:
        deleted = remaining.pop(0)

        assert client.delete(f"/v1/assessments/{deleted}").status_code == 200

        assert client.get(f"/v1/assessments/{deleted}").status_code == 404
        assert listed_ids(client) == remaining


def test_issued_keys_are_listed_and_revoked_keys_gone_at_once(client):
    assessment = create(client)
    for _ in range(10):
        (key,) = issue_keys(client, assessment["id"])
        assert [k["id"] for k in listed_keys(client, assessment["id"])] == [key["id"]]

        client.delete(f"/v1/assessments/{assessment['id']}/keys/{key['id']}")
        assert listed_keys(client, assessment["id"]) == []


def test_reads_are_consistent_while_another_organisation_writes(client, other_client):
    for _ in range(10):
        create(other_client)
        mine = create(client)
        assert listed_ids(client)[-1] == mine["id"]


# --- a lagging worker ------------------------------------------------------------------------


@pytest.fixture
def lagging(make_settings) -> Iterator[tuple[System, Client]]:
    """A system of its own with a short read bound, its relay and API running but no worker
    yet; and a reviewer of a fresh organisation on it."""
    built = System(make_settings(read_wait_seconds=READ_WAIT_SECONDS))
    try:
        built.start_relay()
        built.start_api()
        issued = new_org(built.settings.database_url)
        with Client(built.api.url, issued.token) as reviewer:
            yield built, reviewer
    finally:
        built.stop()


def _is_stale(response) -> bool:
    return response.headers.get("X-Projection-Stale") == "true"


def test_a_read_past_the_bound_answers_at_once_and_says_it_may_be_stale(lagging):
    _, reviewer = lagging
    assert reviewer.post("/v1/assessments", json=body()).status_code == 201

    started = time.monotonic()
    response = reviewer.get("/v1/assessments")
    elapsed = time.monotonic() - started

    assert response.status_code == 200
    assert elapsed < 2.0
    assert _is_stale(response)
    assert "110" in response.headers.get("Warning", "")


def test_once_the_worker_catches_up_reads_are_fresh_and_reflect_the_write(lagging):
    system, reviewer = lagging
    created = reviewer.post("/v1/assessments", json=body()).json()["assessment"]
    assert _is_stale(reviewer.get("/v1/assessments"))

    system.start_worker()

    fresh = wait_for(
        lambda: (response := reviewer.get("/v1/assessments")) and not _is_stale(response) and response,
        timeout=10,
        message="a read without the staleness header",
    )
    assert "Warning" not in fresh.headers
    assert [item["id"] for item in fresh.json()["assessments"]] == [created["id"]]


def test_a_fresh_read_does_not_say_it_may_be_stale(client):
    create(client)

    response = client.get("/v1/assessments")

    assert not _is_stale(response)
    assert "Warning" not in response.headers


@pytest.mark.parametrize("path", ["/v1/assessments/{id}", "/v1/assessments/{id}/keys"])
def test_a_get_past_the_bound_never_denies_the_callers_own_write_without_saying_so(lagging, path):
    _, reviewer = lagging
    created = reviewer.post("/v1/assessments", json=body()).json()["assessment"]

    response = reviewer.get(path.format(id=created["id"]))

    assert response.status_code == 200 or _is_stale(response), response.text
