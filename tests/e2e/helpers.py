"""Small helpers that keep the e2e tests reading like the contract in docs/api.md."""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Any

import requests

#: ISO 8601, UTC, `Z` suffix, millisecond precision: `2026-04-01T09:00:00.000Z`.
TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
KEY_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
KEY_FORMAT = re.compile(rf"^PST-[{KEY_ALPHABET}]{{4}}-[{KEY_ALPHABET}]{{4}}$")

ASSESSMENT_FIELDS = {
    "id",
    "orgId",
    "title",
    "role",
    "taskBrief",
    "repoUrl",
    "timeLimitMinutes",
    "expiresInDays",
    "issueId",
    "rubricId",
    "createdAt",
    "updatedAt",
}
READ_FIELDS = ASSESSMENT_FIELDS | {"issue"}
ISSUE_FIELDS = {"id", "title", "repoUrl", "issueUrl", "taskBrief", "language", "difficulty", "labels"}
KEY_FIELDS = {
    "id",
    "key",
    "assessmentId",
    "orgId",
    "candidateEmail",
    "candidateName",
    "status",
    "expiresAt",
    "redeemedAt",
    "completedAt",
    "createdAt",
}

#: Leave a field out of the body: `body(title=MISSING)`.
MISSING = object()


def body(**overrides: Any) -> dict[str, Any]:
    """A valid create body, with fields replaced (or dropped with MISSING)."""
    base = {"title": f"Assessment {uuid.uuid4().hex[:8]}", "role": "Backend Engineer", "taskBrief": "Fix it."}
    merged = {**base, **overrides}
    return {name: value for name, value in merged.items() if value is not MISSING}


def create(client: requests.Session, **overrides: Any) -> dict[str, Any]:
    response = client.post("/v1/assessments", json=body(**overrides))
    assert response.status_code == 201, response.text
    return response.json()["assessment"]


def listed(client: requests.Session, **params: Any) -> list[dict[str, Any]]:
    response = client.get("/v1/assessments", params=params)
    assert response.status_code == 200, response.text
    return response.json()["assessments"]


def listed_ids(client: requests.Session) -> list[str]:
    return [item["id"] for item in listed(client)]


def issue_keys(client: requests.Session, assessment_id: str, count: int = 1, **fields: Any) -> list[dict]:
    response = client.post(f"/v1/assessments/{assessment_id}/keys", json={"count": count, **fields})
    assert response.status_code == 201, response.text
    return response.json()["keys"]


def listed_keys(client: requests.Session, assessment_id: str) -> list[dict[str, Any]]:
    response = client.get(f"/v1/assessments/{assessment_id}/keys")
    assert response.status_code == 200, response.text
    return response.json()["keys"]


def assert_error(response: requests.Response, status: int, code: str, *fields: str) -> dict[str, Any]:
    """The one error shape; with `fields`, `details` names each of them with a list of
    messages, else `details` is empty."""
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    document = response.json()
    assert set(document) == {"error"}, document
    error = document["error"]
    assert set(error) == {"code", "message", "details"}, error
    assert error["code"] == code
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["details"], dict)
    for field in fields:
        messages = error["details"].get(field)
        assert isinstance(messages, list) and messages, error["details"]
        assert all(isinstance(message, str) and message for message in messages), error["details"]
    if not fields and code != "validation_error":
        assert error["details"] == {}
    return error


def is_uuid(value: Any) -> bool:
    try:
        return isinstance(value, str) and str(uuid.UUID(value)) == value
    except ValueError:
        return False


def parse_time(value: str) -> datetime:
    assert TIMESTAMP.match(value), value
    return datetime.fromisoformat(value.replace("Z", "+00:00"))
