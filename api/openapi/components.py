"""The document's components and how marshmallow's output is made to say what the API promises.

- The converter maps the API's own field types to standard formats (a `Timestamp` is a
  `date-time` with the wire format's pattern).
- `register` adds the named schemas, security schemes, shared headers and error responses that
  the operations refer to by name.
- `refine` tightens the generated schemas where a marshmallow field cannot say it: properties a
  response always has, values narrower than their field's type, rules that bind fields together.
"""

from __future__ import annotations

from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin, OpenAPIConverter
from apispec.ext.marshmallow.field_converter import DEFAULT_FIELD_MAPPING
from marshmallow import Schema, fields

from api import text
from api.openapi.envelopes import (
    AssessmentEnvelopeSchema,
    AssessmentListSchema,
    CreatedAssessmentEnvelopeSchema,
    ErrorBodySchema,
    ErrorSchema,
    HistoryEventSchema,
    HistorySchema,
    IssueEnvelopeSchema,
    IssueListSchema,
    KeysEnvelopeSchema,
    OkSchema,
)
from api.schemas import (
    MAX_KEYS,
    TEXT_DESCRIPTION,
    AssessmentSchema,
    AssessmentWithIssueSchema,
    CandidateKeySchema,
    CreateAssessmentSchema,
    IssueKeysSchema,
    IssueSchema,
    Timestamp,
)
from events import keys

#: What the wire format promises for every timestamp (api.md): UTC, `Z`, milliseconds.
TIMESTAMP_PATTERN = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$"
KEY_PATTERN = keys.KEY_PATTERN.pattern
JSON = "application/json"


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


class Plugin(MarshmallowPlugin):
    Converter = _Converter


# --- references from operations and responses ------------------------------------------------


def json_content(schema: str | type[Schema]) -> dict[str, Any]:
    return {JSON: {"schema": schema}}


def header_refs(*names: str) -> dict[str, str]:
    """The shared headers a response has: always X-Request-Id, and `names`."""
    return {name: name for name in ("X-Request-Id", *names)}


# --- the named components ---------------------------------------------------------------------


def register(spec: APISpec) -> None:
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
        return {
            "description": description,
            "content": json_content("Error"),
            "headers": header_refs(*headers),
        }

    for name, response in {
        "ValidationError": error("validation_error: the body, a query parameter or a header is invalid."),
        "Unauthorized": error("unauthorized: missing or invalid credentials.", "WWW-Authenticate"),
        "NotFound": error("not_found: missing, deleted, or another organisation's."),
        "Conflict": error("conflict: Idempotency-Key reused with another body, or a concurrent change."),
        "PayloadTooLarge": error("payload_too_large: the body is over 1 MiB."),
        "UnsupportedMediaType": error("unsupported_media_type: the body is not declared as JSON."),
        "RateLimited": {
            **error(
                "rate_limited: this client address failed too many candidate authentications in the "
                "current window; every candidate request from it is refused, a correct key included, "
                "until the window ends."
            ),
            "headers": {
                **header_refs(),
                "Retry-After": {
                    "description": "Whole seconds until the window ends.",
                    "required": True,
                    "schema": {"type": "string", "pattern": "^[1-9][0-9]*$"},
                },
            },
        },
        "Unexpected": error(
            "Any other error: method_not_allowed (405, with Allow), internal (500), unavailable (503, with "
            "Retry-After).",
            "Retry-After",
            "Allow",
        ),
    }.items():
        spec.components.response(name, response)


# --- refinements of the generated schemas -----------------------------------------------------


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
EMAIL_PATTERN = (
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


def refine(document: dict[str, Any]) -> None:
    """Tighten the generated component schemas of `document` in place."""
    schemas = document["components"]["schemas"]
    for name in _RESPONSE_SCHEMAS:
        schemas[name]["required"] = list(schemas[name]["properties"])
    for name, properties in _REFINEMENTS.items():
        for field, refinement in properties.items():
            schemas[name]["properties"][field].update(refinement)
    for name, rules in _BODY_RULES.items():
        schemas[name].update(rules())
    schemas["IssueKeys"]["properties"]["candidateEmails"]["items"].update(
        pattern=EMAIL_PATTERN,
        description="An email address. The service also accepts letters beyond ASCII and quoted local "
        "parts, which this pattern leaves out.",
    )
