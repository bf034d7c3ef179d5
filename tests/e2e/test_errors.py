"""Errors always have one shape, also for requests no route handles."""

from __future__ import annotations

import uuid

import pytest

from tests.e2e.helpers import assert_error


def test_an_unknown_path_is_not_found_in_the_error_shape(client):
    assert_error(client.get("/v1/no-such-thing"), 404, "not_found")


def test_an_unsupported_method_answers_in_the_error_shape(client):
    response = client.put("/v1/assessments", json={})

    assert_error(response, 405, "method_not_allowed")


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("PUT", "/v1/assessments", {"GET", "POST"}),
        ("PATCH", "/v1/assessments/{id}", {"GET", "DELETE"}),
        ("POST", "/v1/assessments/{id}/events", {"GET"}),
        ("PUT", "/v1/assessments/{id}/keys/{id}", {"DELETE"}),
        ("DELETE", "/v1/issues", {"GET"}),
    ],
)
def test_a_405_says_which_methods_are_allowed(client, method, path, allowed):
    response = client.request(method, path.format(id=uuid.uuid4()))

    assert_error(response, 405, "method_not_allowed")
    assert allowed <= set(response.headers["Allow"].split(", ")) <= allowed | {"HEAD", "OPTIONS"}


def test_a_request_id_is_echoed(client):
    response = client.get("/v1/assessments", headers={"X-Request-Id": "trace-123"})

    assert response.headers["X-Request-Id"] == "trace-123"
