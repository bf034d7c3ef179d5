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

from api.candidate_schemas import (
    CompleteSchema,
    ConsentQuerySchema,
    ConsentSchema,
    DeviceCheckSchema,
    RedeemSchema,
)
from api.openapi.components import CANDIDATE_KEY_DESCRIPTION, header_refs, json_content
from api.schemas import (
    CreateAssessmentSchema,
    EraseQuerySchema,
    HistoryQuerySchema,
    IssueKeysSchema,
    ListQuerySchema,
)
from api.webhook_schemas import CreateWebhookSchema, DeliveriesQuerySchema

BEARER = [{"bearerAuth": []}]
#: Candidates' calls that carry the key in the query or body: no credential header at all.
NO_CREDENTIALS: list = []
SESSION_TOKEN = [{"sessionToken": []}]
#: Reads open to reviewers and to candidates of the assessment (its key, or its session's token).
BEARER_OR_CANDIDATE = [{"bearerAuth": []}, {"candidateKey": []}, {"sessionToken": []}]

#: An error status, or a status with the response that says more precisely what it means here.
ErrorStatus = int | tuple[int, str]


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
    errors: tuple[ErrorStatus, ...] = (401,),
) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": summary,
        "tags": [tag],
        "security": BEARER if security is None else security,
        "responses": {**responses, **dict(map(_error_response, errors))},
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


def _error_response(error: ErrorStatus) -> tuple[str, str]:
    status, name = error if isinstance(error, tuple) else (error, _ERROR_RESPONSES[error])
    return str(status), name


_ERROR_RESPONSES = {
    400: "ValidationError",
    401: "Unauthorized",
    403: "ConsentRequired",
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
    ("sessions", "limit"): "Page size. With `limit` or `after` the response is paged and has `nextCursor`.",
    ("sessions", "after"): "The `nextCursor` of the previous page: a position in the (startedAt, id) order. "
    "Any value of this pattern names one; pass back what the service returned.",
    ("consent", "key"): CANDIDATE_KEY_DESCRIPTION,
    ("erase", "email"): "The candidate's email address, as keys were issued to it (case and surrounding "
    "space do not matter).",
    ("deliveries", "limit"): "Page size (default 50).",
    ("deliveries", "after"): "The `nextCursor` of the previous page: deliveries older than that one.",
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
    "session_id": {
        "description": "The session's id (`sessionId` of the redeem). Not a UUID: 404.",
        "schema": {"type": "string", "format": "uuid"},
    },
    "webhook_id": {
        "description": "The webhook endpoint's id. Not a UUID: 404.",
        "schema": {"type": "string", "format": "uuid"},
    },
    "delivery_id": {
        "description": "The delivery's id (`id` in the deliveries list). Not a UUID: 404.",
        "schema": {"type": "string", "format": "uuid"},
    },
}

_SIGNING = (
    "Deliveries are POSTed as CloudEvents 1.0 JSON (the message the exchange carries) and signed as "
    "Standard Webhooks says: `webhook-id` (the event id, the same on every retry), `webhook-timestamp` "
    "(Unix seconds) and `webhook-signature` (`v1,<base64 HMAC-SHA256 of id.timestamp.body>`, keyed with "
    "the secret's base64-decoded bytes after `whsec_`)."
)

#: What a candidate's credential is refused with, wherever it is presented.
_CANDIDATE_REFUSED = (
    "An unknown, revoked or expired key, a key of a deleted assessment, a session token whose session "
    "is not active, or a credential of another assessment: 401, one identical body for all."
)
_LIMITED = (
    " A client address whose candidate credentials were refused too often in the current window gets "
    "429 for every candidate request until the window ends (reviewers are not limited)."
)


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
            description="For reviewers of its organisation (missing, deleted, another organisation's, or "
            "not a UUID: 404), and for candidates of this assessment with its key (pending or active) or "
            "their session's token (while the session is active). " + _CANDIDATE_REFUSED + _LIMITED,
            security=BEARER_OR_CANDIDATE,
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
            description="For reviewers; and for a candidate (their key, or their session's token while the "
            "session is active) the issue of their own assessment only. " + _CANDIDATE_REFUSED,
            security=BEARER_OR_CANDIDATE,
            errors=(401, 404, 429),
        ),
        (f"{item}/sessions", "GET"): _op(
            "List the assessment's candidate sessions",
            "Sessions",
            {"200": _ok("Ordered by startedAt, then id.", "SessionList", "X-Projection-Stale", "Warning")},
            description="One session per redeemed key that is not revoked. Without `limit` and `after`, the "
            "whole list. Unknown query parameters are 400.",
            parameters=query(ListQuerySchema, "sessions"),
            errors=(400, 401, 404),
        ),
        ("/v1/sessions/<session_id>", "GET"): _op(
            "Get one candidate session",
            "Sessions",
            {"200": _ok("The session.", "SessionEnvelope", "X-Projection-Stale", "Warning")},
            description="Missing, of a revoked key or a deleted assessment, another organisation's, or not a "
            "UUID: 404.",
            errors=(401, 404),
        ),
        ("/v1/candidate/consent", "GET"): _op(
            "Read the disclosure and whether the key consented to it",
            "Candidate",
            {"200": _ok("The current disclosure and its hash.", "ConsentStatus")},
            description="The candidate's first call, with the key in the query. `disclosureHash` is the "
            "SHA-256 (hex) of `disclosure` serialised as compact JSON in the order shown, UTF-8 unescaped. "
            + _CANDIDATE_REFUSED,
            security=NO_CREDENTIALS,
            parameters=query(ConsentQuerySchema, "consent"),
            errors=(400, 401, (409, "KeyCompleted"), 429),
        ),
        ("/v1/candidate/consent", "POST"): _op(
            "Consent to the disclosure",
            "Candidate",
            {"200": _ok("Recorded (a repeat records nothing new and answers the same).", "ConsentRecorded")},
            description="Send the `disclosureHash` that was shown; without it, the consent is to the current "
            "disclosure. " + _CANDIDATE_REFUSED,
            security=NO_CREDENTIALS,
            body=ConsentSchema,
            errors=(400, 401, (409, "ConsentConflict"), 429),
        ),
        ("/v1/candidate/redeem", "POST"): _op(
            "Redeem the key: start the session, or resume it",
            "Candidate",
            {
                "200": _ok(
                    "The session, with a new session token: a pending key's session starts; an active key's "
                    "goes on (the same `sessionId`, and earlier tokens keep working until it ends).",
                    "Redemption",
                )
            },
            description="Needs a consent to the current disclosure. " + _CANDIDATE_REFUSED,
            security=NO_CREDENTIALS,
            body=RedeemSchema,
            errors=(400, 401, 403, (409, "KeyCompleted"), 429),
        ),
        ("/v1/candidate/device-check", "POST"): _op(
            "Report the candidate's device at a checkpoint",
            "Candidate",
            {"200": _ok("Recorded: a salted hash of the fingerprint, never its values.", "DeviceChecked")},
            description="With the session token as `X-API-Key`, checked before the body. Whether the device "
            "differs from the session's first shows on the session. A token whose session is not active: "
            "401.",
            security=SESSION_TOKEN,
            body=DeviceCheckSchema,
            errors=(400, 401, 409, 429),
        ),
        ("/v1/candidate/complete", "POST"): _op(
            "Complete the session",
            "Candidate",
            {"200": _ok("Completed; a repeat answers the first completion's time.", "Completed")},
            description="Before the session's deadline. A `sessionId` that is not the key's session: 401. "
            + _CANDIDATE_REFUSED,
            security=NO_CREDENTIALS,
            body=CompleteSchema,
            errors=(400, 401, (409, "CompleteConflict"), 429),
        ),
        ("/v1/webhooks", "POST"): _op(
            "Register a webhook endpoint",
            "Webhooks",
            {
                "201": _ok(
                    "Registered; its signing secret is shown only here.",
                    "WebhookWithSecretEnvelope",
                    "Location",
                )
            },
            description="Events recorded from now on whose type matches `events` are delivered to `url`. "
            + _SIGNING,
            body=CreateWebhookSchema,
            errors=(400, 401),
        ),
        ("/v1/webhooks", "GET"): _op(
            "List the organisation's webhook endpoints",
            "Webhooks",
            {"200": _ok("Ordered by createdAt, then id; without secrets.", "WebhookList")},
        ),
        ("/v1/webhooks/<webhook_id>", "GET"): _op(
            "Get one webhook endpoint",
            "Webhooks",
            {"200": _ok("The endpoint, without its secret.", "WebhookEnvelope")},
            errors=(401, 404),
        ),
        ("/v1/webhooks/<webhook_id>", "DELETE"): _op(
            "Remove a webhook endpoint",
            "Webhooks",
            {"200": _ok("Removed: nothing more is delivered to it.", "Ok")},
            errors=(401, 404, 409),
        ),
        ("/v1/webhooks/<webhook_id>/rotate-secret", "POST"): _op(
            "Rotate the endpoint's signing secret",
            "Webhooks",
            {"200": _ok("The new secret, shown only here.", "WebhookWithSecretEnvelope")},
            description="For `previousSecretValidUntil` (24 hours by default) every delivery carries two "
            "signatures, one with each secret, space-separated in `webhook-signature`; then only the new "
            "one. A disabled endpoint: 409.",
            errors=(401, 404, 409),
        ),
        ("/v1/webhooks/<webhook_id>/deliveries", "GET"): _op(
            "The endpoint's deliveries, newest first",
            "Webhooks",
            {"200": _ok("One per event sent to the endpoint, with its last attempt.", "WebhookDeliveryList")},
            parameters=query(DeliveriesQuerySchema, "deliveries"),
            errors=(400, 401, 404),
        ),
        ("/v1/webhooks/<webhook_id>/deliveries/<delivery_id>/retry", "POST"): _op(
            "Deliver again now",
            "Webhooks",
            {
                "202": _ok(
                    "Due now; the dispatcher sends it with the same `webhook-id`.", "WebhookDeliveryEnvelope"
                )
            },
            description="Any delivery, also one that succeeded or failed for good. A disabled endpoint: 409.",
            errors=(401, 404, 409),
        ),
        ("/v1/candidates", "DELETE"): _op(
            "Erase a candidate of the organisation",
            "Candidates",
            {"200": _ok("Erased, or nothing (left) to erase: the same answer either way.", "Erased")},
            description="Destroys the data key of the candidate's email and name (crypto-shredding) and "
            "records `CandidateErased`. From then on every key issued to the address shows `candidateEmail` "
            "and `candidateName` as null with `erased: true`, and so do the history, rebuilds and "
            "republished events. Erasing twice changes nothing.",
            parameters=query(EraseQuerySchema, "erase"),
            errors=(400, 401),
        ),
        ("/v1/health", "GET"): _op(
            "Reachability, for the candidate's client",
            "Candidate",
            {"200": _ok("The service answers; touches neither the database nor the broker.", _HEALTH)},
            security=NO_CREDENTIALS,
            errors=(),
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
