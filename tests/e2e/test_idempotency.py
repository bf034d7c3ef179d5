"""`Idempotency-Key` on create: a retried request gets the first response and creates nothing."""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

from tests.e2e.helpers import assert_error, body, listed_ids
from tests.support.system import Client


def _post(client, sent: dict, key: str):
    return client.post("/v1/assessments", json=sent, headers={"Idempotency-Key": key})


def test_the_same_key_with_the_same_body_returns_the_first_response(client):
    key, sent = uuid.uuid4().hex, body()

    first = _post(client, sent, key)
    second = _post(client, sent, key)

    assert first.status_code == second.status_code == 201, second.text
    assert second.json() == first.json()
    assert second.headers["Location"] == first.headers["Location"]


def test_a_replayed_response_says_so(client):
    key, sent = uuid.uuid4().hex, body()

    first = _post(client, sent, key)
    second = _post(client, sent, key)

    assert "Idempotent-Replayed" not in first.headers
    assert second.headers.get("Idempotent-Replayed") == "true"


def test_the_same_key_with_the_same_body_creates_one_assessment(client):
    key, sent = uuid.uuid4().hex, body()

    first = _post(client, sent, key)
    _post(client, sent, key)
    _post(client, sent, key)

    assert listed_ids(client) == [first.json()["assessment"]["id"]]


def test_the_same_key_with_a_different_body_is_a_conflict(client):
    key = uuid.uuid4().hex
    first = _post(client, body(title="First"), key)

    response = _post(client, body(title="Second"), key)

    assert_error(response, 409, "conflict")
    assert listed_ids(client) == [first.json()["assessment"]["id"]]


def test_different_keys_create_different_assessments(client):
    sent = body()

    first = _post(client, sent, uuid.uuid4().hex)
    second = _post(client, sent, uuid.uuid4().hex)

    assert first.json()["assessment"]["id"] != second.json()["assessment"]["id"]
    assert len(listed_ids(client)) == 2


def test_keys_belong_to_one_organisation(client, other_client):
    key, sent = uuid.uuid4().hex, body()

    mine = _post(client, sent, key)
    theirs = _post(other_client, sent, key)

    assert theirs.status_code == 201, theirs.text
    assert theirs.json()["assessment"]["id"] != mine.json()["assessment"]["id"]
    assert listed_ids(client) == [mine.json()["assessment"]["id"]]
    assert listed_ids(other_client) == [theirs.json()["assessment"]["id"]]


def test_concurrent_retries_with_one_key_create_one_assessment(shared_system, org, client):
    key, sent = uuid.uuid4().hex, body()
    barrier = threading.Barrier(8)

    def retry() -> tuple[int, dict]:
        with Client(shared_system.api.url, org.token) as session:
            barrier.wait(5)
            response = _post(session, sent, key)
            return response.status_code, response.json()

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: retry(), range(8)))

    assert {status for status, _ in answers} == {201}
    ids = {document["assessment"]["id"] for _, document in answers}
    assert len(ids) == 1
    assert listed_ids(client) == list(ids)
