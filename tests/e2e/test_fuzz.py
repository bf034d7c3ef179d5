"""Property-based fuzzing of the API from its own OpenAPI document (schemathesis): requests that
follow the document and requests that break it, as a reviewer of a real organisation, against
the real server with the relay and the worker running. No response may be a 5xx, and every
response (status, headers, body) must be one the document describes for its operation.

Seeded (derandomized) and bounded: the same requests on every run, well within two minutes.
schemathesis's own pytest plugin (`from_fixture`) does not run under pytest 9, so each
operation's strategy is driven by Hypothesis here."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.schemas import APIOperation
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    positive_data_acceptance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from events.tenancy import IssuedToken
from tests.e2e.helpers import create, issue_keys
from tests.support.system import Client, System

#: Examples per operation and generation mode.
EXAMPLES = 20
#: No 5xx; the status, media type, headers and body as documented; a request that follows the
#: document is not refused with a 400 and one that breaks it is not accepted.
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    positive_data_acceptance,
    negative_data_rejection,
]
OPERATIONS = [
    "POST /v1/assessments",
    "GET /v1/assessments",
    "GET /v1/assessments/{assessmentId}",
    "DELETE /v1/assessments/{assessmentId}",
    "GET /v1/assessments/{assessmentId}/events",
    "POST /v1/assessments/{assessmentId}/keys",
    "GET /v1/assessments/{assessmentId}/keys",
    "DELETE /v1/assessments/{assessmentId}/keys/{keyId}",
    "GET /v1/issues",
    "GET /v1/issues/{issueId}",
    "GET /healthz",
    "GET /readyz",
    "GET /metrics",
    "GET /v1/assessments/{assessmentId}/sessions",
    "GET /v1/sessions/{sessionId}",
    "GET /v1/candidate/consent",
    "POST /v1/candidate/consent",
    "POST /v1/candidate/redeem",
    "POST /v1/candidate/device-check",
    "POST /v1/candidate/complete",
    "GET /v1/health",
    "DELETE /v1/candidates",
    "POST /v1/webhooks",
    "GET /v1/webhooks",
    "GET /v1/webhooks/{webhookId}",
    "DELETE /v1/webhooks/{webhookId}",
    "POST /v1/webhooks/{webhookId}/rotate-secret",
    "GET /v1/webhooks/{webhookId}/deliveries",
    "POST /v1/webhooks/{webhookId}/deliveries/{deliveryId}/retry",
]
#: Where a registration's endpoint is: no dispatcher runs on the shared system, and its resolver
#: knows loopback only (`tests.support.receiver`), so nothing is ever sent.
RECEIVER = "http://127.0.0.1:9/hook"
#: Operations that take no input at all: there is nothing to break.
WITHOUT_INPUT = {"GET /healthz", "GET /readyz", "GET /metrics", "GET /v1/health"}
CASES = [
    (label, mode)
    for label in OPERATIONS
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    if not (mode is GenerationMode.NEGATIVE and label in WITHOUT_INPUT)
]


@pytest.fixture(scope="module")
def operations(shared_system: System, catalogue) -> dict[str, APIOperation]:
    """The document's operations by label, e.g. `GET /v1/issues`."""
    schema = schemathesis.openapi.from_url(f"{shared_system.api.url}/openapi.json")
    schema.config.update(base_url=shared_system.api.url)
    return {found.ok().label: found.ok() for found in schema.get_all_operations()}


def test_every_operation_of_the_document_is_fuzzed(operations):
    assert sorted(operations) == sorted(OPERATIONS)


@dataclass(frozen=True)
class Existing:
    """What the organisation has, for requests that follow the document to reach past a 404
    (or a 401): the document cannot know which ids, keys and session tokens exist, nor which
    issues the catalogue holds."""

    assessment_ids: list[str]
    key_ids: list[str]
    issue_ids: list[str]
    keys: list[str]
    session_ids: list[str]
    session_tokens: list[str]
    webhook_ids: list[str]


@pytest.fixture
def existing(client: Client, anonymous: Client, catalogue) -> Existing:
    assessments = [create(client)["id"] for _ in range(3)]
    keys = [key for assessment_id in assessments for key in issue_keys(client, assessment_id, count=2)]
    sessions = []
    for key in keys[::2]:  # half the keys consented and redeemed: active sessions
        assert anonymous.post("/v1/candidate/consent", json={"key": key["key"]}).status_code == 200
        redeemed = anonymous.post("/v1/candidate/redeem", json={"key": key["key"]})
        assert redeemed.status_code == 200, redeemed.text
        sessions.append(redeemed.json())
    webhooks = []
    for _ in range(2):
        registered = client.post("/v1/webhooks", json={"url": RECEIVER, "events": ["#"]})
        assert registered.status_code == 201, registered.text
        webhooks.append(registered.json()["webhook"]["id"])
    return Existing(
        assessments,
        [key["id"] for key in keys],
        sorted(catalogue),
        [key["key"] for key in keys],
        [session["sessionId"] for session in sessions],
        [session["sessionToken"] for session in sessions],
        webhooks,
    )


def with_existing_ids(case: Case, existing: Existing, data: st.DataObject) -> Case:
    """Sometimes (as Hypothesis draws) aim a valid request at what exists."""
    choices = {
        "assessmentId": existing.assessment_ids,
        "keyId": existing.key_ids,
        "issueId": existing.issue_ids,
        "sessionId": existing.session_ids,
        "webhookId": existing.webhook_ids,
    }
    for name, ids in choices.items():
        if case.path_parameters and name in case.path_parameters and data.draw(st.booleans()):
            case.path_parameters[name] = data.draw(st.sampled_from(ids))
    if case.operation.label == "POST /v1/webhooks" and isinstance(case.body, dict):
        # Whether a URL may be registered depends on what its name resolves to, and a pattern on
        # the event types that exist: neither can a document say. A receivable URL and a known
        # pattern, always (a drawn one is refused with 400, as the document says in words).
        case.body["url"] = RECEIVER
        case.body["events"] = data.draw(
            st.lists(st.sampled_from(["#", "assessment.*", "CandidateKeyIssued"]), min_size=1, max_size=3)
        )
    if isinstance(case.body, dict) and isinstance(case.body.get("issueId"), str):
        case.body["issueId"] = data.draw(st.sampled_from(existing.issue_ids))
    for where, name, values in (
        (case.body, "key", existing.keys),
        (case.body, "sessionId", existing.session_ids),
        (case.query, "key", existing.keys),
    ):
        if isinstance(where, dict) and isinstance(where.get(name), str) and data.draw(st.booleans()):
            where[name] = data.draw(st.sampled_from(values))
    return case


def as_a_generated_client_sends(case: Case) -> Case:
    """JSON Schema counts 60.0 as an integer; the document's integers say in words that they
    are sent as integer literals (`api.schemas.STRICT_INTEGER_NOTE`), as a client generated
    from it does: its integer fields are integer types."""
    if isinstance(case.body, dict):
        case.body = {
            name: int(value) if isinstance(value, float) and value.is_integer() else value
            for name, value in case.body.items()
        }
    return case


@pytest.mark.parametrize(("label", "mode"), CASES, ids=[f"{label} {mode.value}" for label, mode in CASES])
def test_the_api_answers_as_its_document_says(operations, org: IssuedToken, existing: Existing, label, mode):
    operation = operations[label]
    reviewer = {"Authorization": f"Bearer {org.token}"}
    session_token = label == "POST /v1/candidate/device-check"

    @given(case=operation.as_strategy(generation_mode=mode), data=st.data())
    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    def answers_as_documented(case: Case, data: st.DataObject):
        headers = dict(reviewer)
        if mode is GenerationMode.POSITIVE:
            case = as_a_generated_client_sends(with_existing_ids(case, existing, data))
        if session_token and data.draw(st.booleans()):
            headers["X-API-Key"] = data.draw(st.sampled_from(existing.session_tokens))
        case.call_and_validate(headers=headers, checks=CHECKS)

    answers_as_documented()
