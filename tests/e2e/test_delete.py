"""`DELETE /v1/assessments/:id`: a soft delete that takes effect at once, exactly once."""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.e2e.helpers import assert_error, create, listed_ids
from tests.support.system import Client


def test_delete_answers_ok_with_the_id(client):
    created = create(client)

    response = client.delete(f"/v1/assessments/{created['id']}")

    assert response.status_code == 200
    assert response.json() == {"ok": True, "id": created["id"]}


def test_a_deleted_assessment_is_no_longer_gettable(client):
    created = create(client)

    client.delete(f"/v1/assessments/{created['id']}")

    assert_error(client.get(f"/v1/assessments/{created['id']}"), 404, "not_found")


def test_a_deleted_assessment_is_no_longer_listed(client):
    kept, deleted = create(client), create(client)

    client.delete(f"/v1/assessments/{deleted['id']}")

    assert listed_ids(client) == [kept["id"]]


def test_a_second_delete_is_not_found(client):
    created = create(client)
    client.delete(f"/v1/assessments/{created['id']}")

    assert_error(client.delete(f"/v1/assessments/{created['id']}"), 404, "not_found")


@pytest.mark.parametrize("assessment_id", [str(uuid.uuid4()), "not-a-uuid"])
def test_delete_of_an_id_that_does_not_exist_is_not_found(client, assessment_id):
    assert_error(client.delete(f"/v1/assessments/{assessment_id}"), 404, "not_found")


def test_delete_of_another_organisations_assessment_is_not_found_and_changes_nothing(client, other_client):
    theirs = create(other_client)

    response = client.delete(f"/v1/assessments/{theirs['id']}")

    assert_error(response, 404, "not_found")
    assert other_client.get(f"/v1/assessments/{theirs['id']}").status_code == 200
    assert listed_ids(other_client) == [theirs["id"]]


def test_of_ten_concurrent_deletes_exactly_one_succeeds(shared_system, org, client):
    created = create(client)
    barrier = threading.Barrier(10)

    def delete() -> int:
        with Client(shared_system.api.url, org.token) as session:
            barrier.wait(5)
            return session.delete(f"/v1/assessments/{created['id']}").status_code

    with ThreadPoolExecutor(10) as pool:
        statuses = Counter(pool.map(lambda _: delete(), range(10)))

    assert statuses == Counter({200: 1, 404: 9})
    assert listed_ids(client) == []
