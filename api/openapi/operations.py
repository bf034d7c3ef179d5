"""What the document says about each operation, by (Flask rule, method): summary, tag,
security, parameters, body and responses. The schemas, headers and responses it names are
`components`'.

A route missing here still appears in the document (marked `x-undocumented`, see `document`),
and a test fails on that mark.
"""

from __future__ import annotations

from typing import Any

from apispec.ext.marshmallow import OpenAPIConverter
from marshmallow import Schema

from api.openapi.components import header_refs, json_content
from api.schemas import CreateAssessmentSchema, HistoryQuerySchema, IssueKeysSchema, ListQuerySchema

BEARER = [{"bearerAuth": []}]


def _ok(description: str, schema, *headers: str) -> dict[str, Any]:
    return {"description": description, "content": json_content(schema), "headers": header_refs(*headers)}


def _op(
    summary: str,
    tag: str,
    responses: dict[str, Any],
    *,
    description: str | None = None,
    security: list | None = None,
    parameters: list | None = None,
    body: type[Schema] | None = None,
    errors: tuple[int, ...] = (401,),
) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": summary,
        "tags": [tag],
        "security": BEARER if security is None else security,
        "responses": {**responses, **{str(status): _ERROR_RESPONSES[status] for status in errors}},
    }
    if description:
        operation["description"] = description
    if parameters:
        operation["parameters"] = parameters
    if body is not None:
        operation["requestBody"] = {"required": True, "content": json_content(body)}
        operation["responses"].update({"413": "PayloadTooLarge", "415": "UnsupportedMediaType"})
    operation["responses"]["default"] = "Unexpected"
    return operation


_ERROR_RESPONSES = {
    400: "ValidationError",
    401: "Unauthorized",
    404: "NotFound",
    409: "Conflict",
    429: "RateLimited",
}

#: The operators' probes: only what a load balancer or an orchestrator decides on.
_HEALTH = {"type": "object", "properties": {"status": {"enum": ["ok"]}}, "required": ["status"]}
_READINESS = {
    "type": "object",
    "properties": {
        "status": {"enum": ["ready", "unready"]},
        "checks": {
            "type": "object",
            "additionalProperties": {
                "type": "object",
                "properties": {"status": {"enum": ["ok", "skipped", "failing", "unknown"]}},
                "required": ["status"],
            },
        },
    },
    "required": ["status", "checks"],
}

_IDEMPOTENCY_KEY = {
    "in": "header",
    "name": "Idempotency-Key",
    "required": False,
    "description": "Retry safely: the same key with the same body returns the first response again and "
    "creates nothing new; the same key with another body is 409. Printable characters (a UUID is a "
    "good key); surrounding spaces are ignored.",
    "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[!-~](?:[ -~]*[!-~])?$"},
}

_QUERY_DESCRIPTIONS = {
    ("list", "limit"): "Page size. With `limit` or `after` the response is paged and has `nextCursor`.",
    ("list", "after"): "The `nextCursor` of the previous page: a position in the (createdAt, id) order. "
    "Any value of this pattern names one; pass back what the service returned.",
    ("history", "limit"): "Page size.",
    ("history", "after"): "Return events after this stream version (the previous page's `nextCursor`).",
}

#: Path parameters by Flask argument name.
PATH_PARAMETERS = {
    "assessment_id": {
        "description": "The assessment's id. Any id that is not a UUID is answered 404.",
        "schema": {"type": "string", "format": "uuid"},
    },
    "key_id": {
        "description": "The candidate key record's id (not the key string). Not a UUID: 404.",
        "schema": {"type": "string", "format": "uuid"},
    },
    "issue_id": {"description": "The OSS issue's id in the catalogue.", "schema": {"type": "string"}},
}


def operations(converter: OpenAPIConverter) -> dict[tuple[str, str], dict[str, Any]]:
    """Every documented operation by (Flask rule, method)."""

    def query(schema: type[Schema], name: str) -> list[dict[str, Any]]:
        parameters = converter.schema2parameters(schema, location="query")
        for parameter in parameters:
            parameter["description"] = _QUERY_DESCRIPTIONS[(name, parameter["name"])]
        return parameters

    item = "/v1/assessments/<assessment_id>"
    return {
        ("/v1/assessments", "POST"): _op(
            "Create an assessment",
            "Assessments",
            {"201": _ok("Created.", "CreatedAssessmentEnvelope", "Location", "Idempotent-Replayed")},
            description="`taskBrief` is required unless `issueId` is given; with `issueId` the issue "
            "must exist in the catalogue and its task brief takes precedence over any `taskBrief` sent.",
            parameters=[_IDEMPOTENCY_KEY],
            body=CreateAssessmentSchema,
            errors=(400, 401, 409),
        ),
        ("/v1/assessments", "GET"): _op(
            "List the organisation's active assessments",
            "Assessments",
            {"200": _ok("Ordered by createdAt, then id.", "AssessmentList", "X-Projection-Stale", "Warning")},
            description="Without `limit` and `after`, the whole list. Unknown query parameters are 400.",
            parameters=query(ListQuerySchema, "list"),
            errors=(400, 401),
        ),
        (item, "GET"): _op(
            "Get one assessment",
            "Assessments",
            {
                "200": _ok(
                    "The assessment with its OSS issue.",
                    "AssessmentEnvelope",
                    "X-Projection-Stale",
                    "Warning",
                )
            },
            description="For reviewers of its organisation, and for candidates with a usable key of this "
            "assessment. Missing, deleted, another organisation's, or not a UUID: 404. A client address "
            "whose candidate keys were refused too often in the current window gets 429 for every "
            "candidate request until the window ends (reviewers are not limited).",
            security=[{"bearerAuth": []}, {"candidateKey": []}],
            errors=(401, 404, 429),
        ),
        (item, "DELETE"): _op(
            "Soft-delete an assessment and its candidate keys",
            "Assessments",
            {"200": _ok("Deleted.", "Ok")},
            errors=(401, 404, 409),
        ),
        (f"{item}/events", "GET"): _op(
            "The assessment's event history",
            "Assessments",
            {"200": _ok("Events in stream order, also once deleted.", "History")},
            parameters=query(HistoryQuerySchema, "history"),
            errors=(400, 401, 404),
        ),
        (f"{item}/keys", "POST"): _op(
            "Issue candidate keys",
            "Candidate keys",
            {"201": _ok("The new keys.", "KeysEnvelope")},
            description="`candidateEmails`, when given, has exactly `count` entries; `candidateNames` only "
            "with `candidateEmails`, paired by position.",
            body=IssueKeysSchema,
            errors=(400, 401, 404, 409),
        ),
        (f"{item}/keys", "GET"): _op(
            "List the assessment's keys that are not revoked",
            "Candidate keys",
            {"200": _ok("Ordered by creation.", "KeysEnvelope", "X-Projection-Stale", "Warning")},
            errors=(401, 404),
        ),
        (f"{item}/keys/<key_id>", "DELETE"): _op(
            "Revoke a candidate key",
            "Candidate keys",
            {"200": _ok("Revoked.", "Ok")},
            errors=(401, 404, 409),
        ),
        ("/v1/issues", "GET"): _op(
            "List the OSS issue catalogue", "OSS issues", {"200": _ok("The catalogue.", "IssueList")}
        ),
        ("/v1/issues/<issue_id>", "GET"): _op(
            "Get one OSS issue",
            "OSS issues",
            {"200": _ok("The issue.", "IssueEnvelope")},
            errors=(401, 404),
        ),
        ("/healthz", "GET"): _op(
            "Liveness: the process answers",
            "Operations",
            {"200": _ok("Alive; touches neither the database nor the broker.", _HEALTH)},
            security=[],
            errors=(),
        ),
        ("/readyz", "GET"): _op(
            "Readiness: database and broker reachable, migrations at head",
            "Operations",
            {
                "200": _ok("Ready, with the outbox backlog and the projection lag.", _READINESS),
                "503": _ok("Not ready: the failing checks say why.", _READINESS),
            },
            security=[],
            errors=(),
        ),
        ("/metrics", "GET"): _op(
            "Prometheus metrics",
            "Operations",
            {
                "200": {
                    "description": "Prometheus text exposition format.",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                    "headers": header_refs(),
                }
            },
            security=[],
            errors=(),
        ),
    }
