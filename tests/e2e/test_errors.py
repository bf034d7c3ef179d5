"""Errors always have one shape, also for requests no route handles."""

from __future__ import annotations

from tests.e2e.helpers import assert_error


def test_an_unknown_path_is_not_found_in_the_error_shape(client):
    assert_error(client.get("/v1/no-such-thing"), 404, "not_found")


def test_an_unsupported_method_answers_in_the_error_shape(client):
    response = client.put("/v1/assessments", json={})

    assert response.status_code == 405
    error = response.json()["error"]
    assert set(error) == {"code", "message", "details"}
    assert error["code"] and error["message"] and error["details"] == {}


def test_a_request_id_is_echoed(client):
    response = client.get("/v1/assessments", headers={"X-Request-Id": "trace-123"})

    assert response.headers["X-Request-Id"] == "trace-123"
