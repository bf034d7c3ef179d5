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
from api.candidate_schemas import (
    CompletedSchema,
    CompleteSchema,
    ConsentRecordedSchema,
    ConsentSchema,
    ConsentStatusSchema,
    DeviceCheckSchema,
    DeviceChecksSchema,
    DisclosureSchema,
    RedeemSchema,
    RedemptionSchema,
    SessionSchema,
)
from api.openapi.envelopes import (
    AssessmentEnvelopeSchema,
    AssessmentListSchema,
    CreatedAssessmentEnvelopeSchema,
    DeviceCheckedSchema,
    ErasedSchema,
    ErrorBodySchema,
    ErrorSchema,
    HistoryEventSchema,
    HistorySchema,
    IssueEnvelopeSchema,
    IssueListSchema,
    KeysEnvelopeSchema,
    OkSchema,
    SessionEnvelopeSchema,
    SessionListSchema,
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
from api.webhook_schemas import (
    CreateWebhookSchema,
    DeliveryEnvelopeSchema,
    DeliveryListSchema,
    DeliverySchema,
    WebhookEnvelopeSchema,
    WebhookListSchema,
    WebhookSchema,
    WebhookWithSecretEnvelopeSchema,
    WebhookWithSecretSchema,
)
from events import keys

#: What the wire format promises for every timestamp (api.md): UTC, `Z`, milliseconds.
TIMESTAMP_PATTERN = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$"
KEY_PATTERN = keys.KEY_PATTERN.pattern
CANDIDATE_KEY_DESCRIPTION = (
    "The candidate key `PST-XXXX-XXXX`. Any other value is refused like an unknown key (401)."
)
#: A SHA-256 as the API writes it: lower-case hex.
SHA256_PATTERN = "^[0-9a-f]{64}$"
#: What the redeem takes as `signingPubKey`: standard base64 of 32 bytes, padded (44 characters).
ED25519_BASE64_PATTERN = "^[A-Za-z0-9+/]{43}=$"
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
        ("Erased", ErasedSchema),
        ("HistoryEvent", HistoryEventSchema),
        ("History", HistorySchema),
        ("IssueList", IssueListSchema),
        ("IssueEnvelope", IssueEnvelopeSchema),
        # The candidate's side: the client's requests and responses, and sessions for reviewers.
        ("Consent", ConsentSchema),
        ("Redeem", RedeemSchema),
        ("DeviceCheck", DeviceCheckSchema),
        ("Complete", CompleteSchema),
        ("Disclosure", DisclosureSchema),
        ("ConsentStatus", ConsentStatusSchema),
        ("ConsentRecorded", ConsentRecordedSchema),
        ("Redemption", RedemptionSchema),
        ("DeviceChecked", DeviceCheckedSchema),
        ("Completed", CompletedSchema),
        ("DeviceChecks", DeviceChecksSchema),
        ("Session", SessionSchema),
        ("SessionEnvelope", SessionEnvelopeSchema),
        ("SessionList", SessionListSchema),
        # Webhooks.
        ("CreateWebhook", CreateWebhookSchema),
        ("Webhook", WebhookSchema),
        ("WebhookWithSecret", WebhookWithSecretSchema),
        ("WebhookDelivery", DeliverySchema),
        ("WebhookEnvelope", WebhookEnvelopeSchema),
        ("WebhookWithSecretEnvelope", WebhookWithSecretEnvelopeSchema),
        ("WebhookList", WebhookListSchema),
        ("WebhookDeliveryList", DeliveryListSchema),
        ("WebhookDeliveryEnvelope", DeliveryEnvelopeSchema),
        ("ErrorBody", ErrorBodySchema),
        ("Error", ErrorSchema),
    ):
        spec.components.schema(name, schema=schema)

    spec.components.schema("FingerprintValue", component=_FINGERPRINT_VALUE)

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
            "description": "A candidate key `PST-XXXX-XXXX` while it is pending or active: reads its own "
            "assessment (GET /v1/assessments/{assessmentId}) and that assessment's issue "
            "(GET /v1/issues/{issueId}), nothing else.",
        },
    )
    spec.components.security_scheme(
        "sessionToken",
        {
            "type": "apiKey",
            "in": "header",
            "name": "X-API-Key",
            "description": "A session token (`sessionToken` of POST /v1/candidate/redeem) while its session "
            "is active: POST /v1/candidate/device-check, and the reads a candidate key allows.",
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
        "Location": {"description": "The new resource's path.", "required": True, "schema": string},
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

    def error(description: str, *headers: str, codes: tuple[str, ...] = ()) -> dict[str, Any]:
        """An error response; with `codes`, the only values its `error.code` takes."""
        schema: str | dict[str, Any] = "Error"
        if codes:
            schema = {
                "allOf": [{"$ref": "#/components/schemas/Error"}],
                "properties": {"error": {"properties": {"code": {"enum": list(codes)}}}},
            }
        return {
            "description": description,
            "content": json_content(schema),
            "headers": header_refs(*headers),
        }

    for name, response in {
        "ValidationError": error("validation_error: the body, a query parameter or a header is invalid."),
        "Unauthorized": error("unauthorized: missing or invalid credentials.", "WWW-Authenticate"),
        "NotFound": error("not_found: missing, deleted, or another organisation's."),
        "Conflict": error("conflict: Idempotency-Key reused with another body, or a concurrent change."),
        "ConsentRequired": error(
            "consent_required: the key has not consented to the current disclosure (GET, then POST "
            "/v1/candidate/consent).",
            codes=("consent_required",),
        ),
        "KeyCompleted": error(
            "conflict: the key already completed its assessment (or, rarely, too many concurrent changes: "
            "retry).",
            codes=("conflict",),
        ),
        "ConsentConflict": error(
            "conflict: `disclosureHash` is not the current disclosure's (it changed since it was shown: "
            "read it again; nothing was recorded), or the key already completed its assessment.",
            codes=("conflict",),
        ),
        "CompleteConflict": error(
            "conflict: the key was not redeemed yet; deadline_passed: the session's deadline passed "
            "before this request (the service's time decides, as recorded).",
            codes=("conflict", "deadline_passed"),
        ),
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


#: A value inside a device fingerprint: any JSON, with no NUL in a string or a property name
#: (the rule of every body, `api.text`).
_FINGERPRINT_VALUE_REF = {"$ref": "#/components/schemas/FingerprintValue"}
_FINGERPRINT_VALUE = {
    "description": "Any JSON value; no NUL in a string or a property name.",
    "anyOf": [
        {"type": ["null", "boolean", "number"]},
        {"type": "string", "pattern": text.NO_NUL_PATTERN},
        {"type": "array", "items": _FINGERPRINT_VALUE_REF},
        {
            "type": "object",
            "propertyNames": {"pattern": text.NO_NUL_PATTERN},
            "additionalProperties": _FINGERPRINT_VALUE_REF,
        },
    ],
}
_FINGERPRINT = {
    "propertyNames": {"pattern": text.NO_NUL_PATTERN},
    "additionalProperties": _FINGERPRINT_VALUE_REF,
    "description": "What the client reports of its device; only a SHA-256 of it salted with the session id "
    f"is kept. No NUL in a string or a property name, and at most {text.MAX_DEPTH - 1} levels of objects and "
    f"arrays inside it (a body nests at most {text.MAX_DEPTH} levels).",
}


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
_RESPONSE_SCHEMAS = (
    "Assessment",
    "AssessmentWithIssue",
    "Issue",
    "CandidateKey",
    "Disclosure",
    "ConsentStatus",
    "ConsentRecorded",
    "Redemption",
    "Completed",
    "DeviceChecks",
    "Session",
)
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
        "erased": {
            "enum": [True],
            "description": "Only on the keys of an erased candidate (`DELETE /v1/candidates`): their "
            "`candidateEmail` and `candidateName` are then null for good.",
        },
    },
    "Consent": {"key": {"description": CANDIDATE_KEY_DESCRIPTION}},
    "Redeem": {
        "key": {"description": CANDIDATE_KEY_DESCRIPTION},
        "candidateName": {
            "description": f"Fills the key's candidate name if it had none. {TEXT_DESCRIPTION}"
        },
        "signingPubKey": {"pattern": ED25519_BASE64_PATTERN},
    },
    "Complete": {
        "key": {"description": "The candidate key the session was redeemed with."},
        "sessionId": {"description": "The `sessionId` of the redeem."},
    },
    "DeviceCheck": {
        "checkpoint": {"description": "Where in the session the client reports from. " + TEXT_DESCRIPTION},
        "fingerprint": _FINGERPRINT,
    },
    "ConsentStatus": {
        "alreadyConfirmed": {"description": "Whether this key consented to this very disclosure (its hash)."},
        "disclosureHash": {"pattern": SHA256_PATTERN},
    },
    "ConsentRecorded": {
        "ok": {"enum": [True]},
        "disclosureHash": {"pattern": SHA256_PATTERN},
    },
    "Redemption": {
        "sessionId": {"description": "The key's one session: the same on every redeem of the active key."},
        "tosAccepted": {"enum": [True]},
        "startedAt": {"description": "When the session started: the first redeem."},
        "deadline": {
            "description": "The session's end: `startedAt` + `timeLimitMinutes`, never after the key's own "
            "expiry (without a time limit: that expiry)."
        },
    },
    "Completed": {"ok": {"enum": [True]}},
    "DeviceChecks": {"count": {"minimum": 0}},
    "Session": {
        "status": {
            "description": "At the service's time: `expired` from the deadline on, also before the worker "
            "records the expiry."
        },
        "expiredAt": {"description": "The deadline, once the worker recorded the expiry; null until then."},
        "signingPubKey": {"description": "The Ed25519 public key given at the redeem, base64."},
    },
}


#: Response properties present only sometimes.
_OPTIONAL = {("CandidateKey", "erased")}


def refine(document: dict[str, Any]) -> None:
    """Tighten the generated component schemas of `document` in place."""
    schemas = document["components"]["schemas"]
    for name in _RESPONSE_SCHEMAS:
        schemas[name]["required"] = [p for p in schemas[name]["properties"] if (name, p) not in _OPTIONAL]
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
