"""The API's OpenAPI 3.1 document, generated from the marshmallow schemas the routes use, served
at `/openapi.json` with a human-readable page at `/docs` (`api.docs_page`).

Paths come from the app's own URL map, so a route cannot be left out: a route without an entry
in `_OPERATIONS` still appears (marked `x-undocumented`), and a test fails on that mark. The
document is built on the first request that asks for it and kept on the app.
"""

from __future__ import annotations

import re
import threading
from importlib import metadata
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin, OpenAPIConverter
from apispec.ext.marshmallow.field_converter import DEFAULT_FIELD_MAPPING
from flask import Blueprint, Flask, current_app, jsonify
from marshmallow import RAISE, Schema, fields

from api import docs_page, text
from api.schemas import (
    MAX_KEYS,
    TEXT_DESCRIPTION,
    AssessmentSchema,
    AssessmentWithIssueSchema,
    CandidateKeySchema,
    CreateAssessmentSchema,
    HistoryQuerySchema,
    IssueKeysSchema,
    IssueSchema,
    ListQuerySchema,
    Timestamp,
)
from events import codec

OPENAPI_VERSION = "3.1.0"
EXTENSION = "openapi"
#: Routes that serve the document itself; not part of the API it describes.
SELF_ENDPOINTS = {"static", "openapi.spec", *docs_page.ENDPOINTS}
#: What the wire format promises for every timestamp (api.md): UTC, `Z`, milliseconds.
TIMESTAMP_PATTERN = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$"
KEY_PATTERN = r"^PST-[ABCDEFGHJKMNPQRSTUVWXYZ23456789]{4}-[ABCDEFGHJKMNPQRSTUVWXYZ23456789]{4}$"


# --- response envelopes (documentation only: the routes build these dicts themselves) -------


class _Doc(Schema):
    """Envelopes are closed objects with camelCase names, like the API's own schemas."""

    class Meta:
        unknown = RAISE


class CreatedAssessmentEnvelopeSchema(_Doc):
    assessment = fields.Nested(AssessmentSchema, required=True)


class AssessmentEnvelopeSchema(_Doc):
    assessment = fields.Nested(AssessmentWithIssueSchema, required=True)


class AssessmentListSchema(_Doc):
    assessments = fields.List(fields.Nested(AssessmentWithIssueSchema), required=True)
    next_cursor = fields.String(
        allow_none=True,
        data_key="nextCursor",
        metadata={"description": "Present only when `limit` or `after` was given; null on the last page."},
    )


class KeysEnvelopeSchema(_Doc):
    keys = fields.List(fields.Nested(CandidateKeySchema), required=True)


class OkSchema(_Doc):
    ok = fields.Boolean(required=True, metadata={"enum": [True]})
    id = fields.UUID(required=True, metadata={"description": "The id of the deleted or revoked resource."})


class HistoryEventSchema(_Doc):
    id = fields.UUID(required=True)
    type = fields.String(required=True, metadata={"description": "The event's type, e.g. AssessmentCreated."})
    version = fields.Integer(required=True, metadata={"minimum": 1, "description": "Version in its stream."})
    recorded_at = Timestamp(required=True, data_key="recordedAt")
    data = fields.Dict(
        required=True, metadata={"description": "The event's fields; candidate key strings are left out."}
    )


class HistorySchema(_Doc):
    events = fields.List(fields.Nested(HistoryEventSchema), required=True)
    next_cursor = fields.String(
        required=True,
        allow_none=True,
        data_key="nextCursor",
        metadata={"description": "Pass as `after` for the next page; null on the last page."},
    )


class IssueListSchema(_Doc):
    issues = fields.List(fields.Nested(IssueSchema), required=True)


class IssueEnvelopeSchema(_Doc):
    issue = fields.Nested(IssueSchema, required=True)


class ErrorBodySchema(_Doc):
    code = fields.String(
        required=True,
        metadata={
            "description": "validation_error (400), unauthorized (401), not_found (404), conflict (409), "
            "payload_too_large (413), unsupported_media_type (415), internal (500), unavailable (503)."
        },
    )
    message = fields.String(required=True)
    details = fields.Dict(
        keys=fields.String(),
        values=fields.List(fields.String()),
        required=True,
        metadata={"description": "Request field → messages for validation errors; otherwise {}."},
    )


class ErrorSchema(_Doc):
    error = fields.Nested(ErrorBodySchema, required=True)


def _key_counts() -> list[dict[str, Any]]:
    """`candidateEmails` has exactly `count` entries, and `candidateNames` as many: JSON Schema
    cannot compare two values, but it can list the fifty cases."""
    exactly = [{"minItems": n, "maxItems": n} for n in range(1, MAX_KEYS + 1)]
    return [
        {"properties": {"count": {"const": n}, "candidateEmails": size, "candidateNames": size}}
        for n, size in enumerate(exactly, start=1)
    ]


#: The rules of the request bodies that bind fields together, beside each field's own.
_BODY_RULES = {
    "CreateAssessment": lambda: {
        "anyOf": [
            {"required": ["issueId"], "properties": {"issueId": {"type": "string"}}},
            {
                "required": ["taskBrief"],
                "properties": {"taskBrief": {"type": "string", "pattern": text.visible_text_pattern()}},
            },
        ],
    },
    "IssueKeys": lambda: {
        "if": {"required": ["candidateNames"], "properties": {"candidateNames": {"type": "array"}}},
        "then": {"required": ["candidateEmails"], "properties": {"candidateEmails": {"type": "array"}}},
        "anyOf": _key_counts(),
    },
}
#: The portable subset of the email addresses the service accepts (marshmallow's rule reads
#: `\\w` as any script's letters, which ECMA-262 patterns cannot say).
_EMAIL_PATTERN = (
    "^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    "@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\\.)+[A-Za-z][A-Za-z0-9-]{0,61}[A-Za-z0-9]$"
)

#: Schemas the API only dumps: every property is always present, and a few are narrower than
#: their marshmallow field says.
_RESPONSE_SCHEMAS = ("Assessment", "AssessmentWithIssue", "Issue", "CandidateKey")
_REFINEMENTS = {
    "CreateAssessment": {
        "issueId": {
            "description": "The id of an issue in the catalogue (`GET /v1/issues`); any other id is 400. "
            + TEXT_DESCRIPTION
        },
    },
    "CandidateKey": {
        "key": {"pattern": KEY_PATTERN},
        "status": {"enum": ["pending", "active", "completed", "expired"]},
    },
}


# --- the converter: our field types, standard formats ---------------------------------------


def _timestamp_pattern(_converter, field: fields.Field, **_kwargs: Any) -> dict[str, Any]:
    return {"pattern": TIMESTAMP_PATTERN} if isinstance(field, Timestamp) else {}


class _Converter(OpenAPIConverter):
    field_mapping = {
        **DEFAULT_FIELD_MAPPING,
        Timestamp: ("string", "date-time"),
        fields.Url: ("string", "uri"),
    }

    def init_attribute_functions(self) -> None:
        super().init_attribute_functions()
        self.add_attribute_function(_timestamp_pattern)


class _Plugin(MarshmallowPlugin):
    Converter = _Converter


# --- operations -------------------------------------------------------------------------------

BEARER = [{"bearerAuth": []}]
JSON = "application/json"


def _json(schema: str | type[Schema]) -> dict[str, Any]:
    return {JSON: {"schema": schema}}


def _ok(description: str, schema, *headers: str) -> dict[str, Any]:
    return {"description": description, "content": _json(schema), "headers": _headers(*headers)}


def _headers(*names: str) -> dict[str, str]:
    return {name: name for name in ("X-Request-Id", *names)}


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
        operation["requestBody"] = {"required": True, "content": _json(body)}
        operation["responses"].update({"413": "PayloadTooLarge", "415": "UnsupportedMediaType"})
    operation["responses"]["default"] = "Unexpected"
    return operation


_ERROR_RESPONSES = {
    400: "ValidationError",
    401: "Unauthorized",
    404: "NotFound",
    409: "Conflict",
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
_PATH_PARAMETERS = {
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


def _operations(converter: OpenAPIConverter) -> dict[tuple[str, str], dict[str, Any]]:
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
            "assessment. Missing, deleted, another organisation's, or not a UUID: 404.",
            security=[{"bearerAuth": []}, {"candidateKey": []}],
            errors=(401, 404),
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
                    "headers": _headers(),
                }
            },
            security=[],
            errors=(),
        ),
    }


def _components(spec: APISpec) -> None:
    for name, schema in (
        # Nested schemas before the schemas that nest them, which would register them anew.
        ("Issue", IssueSchema),
        ("Assessment", AssessmentSchema),
        ("AssessmentWithIssue", AssessmentWithIssueSchema),
        ("CandidateKey", CandidateKeySchema),
        ("CreateAssessment", CreateAssessmentSchema),
        ("IssueKeys", IssueKeysSchema),
        ("CreatedAssessmentEnvelope", CreatedAssessmentEnvelopeSchema),
        ("AssessmentEnvelope", AssessmentEnvelopeSchema),
        ("AssessmentList", AssessmentListSchema),
        ("KeysEnvelope", KeysEnvelopeSchema),
        ("Ok", OkSchema),
        ("HistoryEvent", HistoryEventSchema),
        ("History", HistorySchema),
        ("IssueList", IssueListSchema),
        ("IssueEnvelope", IssueEnvelopeSchema),
        ("ErrorBody", ErrorBodySchema),
        ("Error", ErrorSchema),
    ):
        spec.components.schema(name, schema=schema)

    spec.components.security_scheme(
        "bearerAuth",
        {"type": "http", "scheme": "bearer", "description": "A reviewer token of the organisation."},
    )
    spec.components.security_scheme(
        "candidateKey",
        {
            "type": "apiKey",
            "in": "header",
            "name": "X-API-Key",
            "description": "A candidate key `PST-XXXX-XXXX`; only on GET /v1/assessments/{assessmentId}.",
        },
    )

    string = {"type": "string"}
    for name, header in {
        "X-Request-Id": {
            "description": "The request's id: the one sent, if printable and at most 128 characters, "
            "else a new one. Recorded as the correlation id of the events it causes.",
            "required": True,
            "schema": string,
        },
        "Location": {"description": "The new assessment's path.", "required": True, "schema": string},
        "Idempotent-Replayed": {
            "description": "`true` when this is the first response again for a retried Idempotency-Key.",
            "schema": {"type": "string", "enum": ["true"]},
        },
        "X-Projection-Stale": {
            "description": "`true` when the read models were too far behind to be sure to include this "
            "organisation's latest writes within the configured wait.",
            "schema": {"type": "string", "enum": ["true"]},
        },
        "Warning": {"description": 'With X-Projection-Stale: `110 - "Response is Stale"`.', "schema": string},
        "WWW-Authenticate": {"description": "The bearer challenge.", "required": True, "schema": string},
        "Retry-After": {"description": "Seconds to wait before retrying.", "schema": string},
        "Allow": {"description": "With 405: the methods the path takes.", "schema": string},
    }.items():
        spec.components.header(name, header)

    def error(description: str, *headers: str) -> dict[str, Any]:
        return {"description": description, "content": _json("Error"), "headers": _headers(*headers)}

    for name, response in {
        "ValidationError": error("validation_error: the body, a query parameter or a header is invalid."),
        "Unauthorized": error("unauthorized: missing or invalid credentials.", "WWW-Authenticate"),
        "NotFound": error("not_found: missing, deleted, or another organisation's."),
        "Conflict": error("conflict: Idempotency-Key reused with another body, or a concurrent change."),
        "PayloadTooLarge": error("payload_too_large: the body is over 1 MiB."),
        "UnsupportedMediaType": error("unsupported_media_type: the body is not declared as JSON."),
        "Unexpected": error(
            "Any other error: method_not_allowed (405, with Allow), internal (500), unavailable (503, with "
            "Retry-After).",
            "Retry-After",
            "Allow",
        ),
    }.items():
        spec.components.response(name, response)


_RULE_ARGUMENT = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")


def openapi_path(rule: str) -> str:
    """`/v1/assessments/<assessment_id>` → `/v1/assessments/{assessmentId}`."""
    return _RULE_ARGUMENT.sub(lambda m: "{" + codec.camel(m.group(1)) + "}", rule)


def _path_parameters(rule: str) -> list[dict[str, Any]]:
    default = {"description": "", "schema": {"type": "string"}}
    return [
        {"in": "path", "name": codec.camel(name), "required": True, **_PATH_PARAMETERS.get(name, default)}
        for name in _RULE_ARGUMENT.findall(rule)
    ]


def _undocumented(app: Flask, endpoint: str) -> dict[str, Any]:
    doc = (app.view_functions[endpoint].__doc__ or endpoint).strip().splitlines()[0]
    return {
        "summary": doc,
        "x-undocumented": True,
        "responses": {"default": {"description": "Undocumented."}},
    }


def _version() -> str:
    try:
        return metadata.version("assessments")
    except metadata.PackageNotFoundError:
        return "0.0.0"


def build_spec(app: Flask) -> dict[str, Any]:
    plugin = _Plugin()
    spec = APISpec(
        title="Assessments API",
        version=_version(),
        openapi_version=OPENAPI_VERSION,
        plugins=[plugin],
        info={
            "description": "Assessments, their candidate keys and the OSS issue catalogue. Errors always "
            "have the shape of the Error schema. Timestamps are UTC with millisecond precision."
        },
    )
    _components(spec)
    documented = _operations(plugin.converter)

    by_path: dict[str, dict[str, Any]] = {}
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        if rule.endpoint in SELF_ENDPOINTS:
            continue
        path = by_path.setdefault(rule.rule, {"operations": {}, "parameters": _path_parameters(rule.rule)})
        methods = sorted((rule.methods or set()) - {"HEAD", "OPTIONS"})
        for method in methods:
            operation = documented.get((rule.rule, method)) or _undocumented(app, rule.endpoint)
            operation_id = rule.endpoint if len(methods) == 1 else f"{rule.endpoint}.{method.lower()}"
            path["operations"][method.lower()] = {"operationId": operation_id, **operation}
    for rule, path in by_path.items():
        spec.path(path=openapi_path(rule), operations=path["operations"], parameters=path["parameters"])

    document = spec.to_dict()
    schemas = document["components"]["schemas"]
    for name in _RESPONSE_SCHEMAS:
        schemas[name]["required"] = list(schemas[name]["properties"])
    for name, properties in _REFINEMENTS.items():
        for field, refinement in properties.items():
            schemas[name]["properties"][field].update(refinement)
    for name, rules in _BODY_RULES.items():
        schemas[name].update(rules())
    schemas["IssueKeys"]["properties"]["candidateEmails"]["items"].update(
        pattern=_EMAIL_PATTERN,
        description="An email address. The service also accepts letters beyond ASCII and quoted local "
        "parts, which this pattern leaves out.",
    )
    return document


# --- routes -----------------------------------------------------------------------------------

_LOCK = threading.Lock()


def _spec() -> dict[str, Any]:
    app = current_app
    with _LOCK:
        if EXTENSION not in app.extensions:
            app.extensions[EXTENSION] = build_spec(app)
    return app.extensions[EXTENSION]


bp = Blueprint("openapi", __name__)


@bp.get("/openapi.json", endpoint="spec")
def _serve_spec():
    return jsonify(_spec())


def register(app: Flask) -> None:
    app.register_blueprint(bp)
    docs_page.register(app)
