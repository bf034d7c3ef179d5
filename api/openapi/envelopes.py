"""The response envelopes, as schemas for the document only: the routes build these dicts
themselves, around the API's own schemas."""

from __future__ import annotations

from marshmallow import RAISE, Schema, fields

from api.candidate_schemas import SessionSchema
from api.schemas import (
    AssessmentSchema,
    AssessmentWithIssueSchema,
    CandidateKeySchema,
    IssueSchema,
    Timestamp,
)


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


class ErasedSchema(_Doc):
    ok = fields.Boolean(
        required=True,
        metadata={"enum": [True], "description": "Always, whether or not there was anyone to erase."},
    )


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


class SessionEnvelopeSchema(_Doc):
    session = fields.Nested(SessionSchema, required=True)


class SessionListSchema(_Doc):
    sessions = fields.List(fields.Nested(SessionSchema), required=True)
    next_cursor = fields.String(
        allow_none=True,
        data_key="nextCursor",
        metadata={"description": "Present only when `limit` or `after` was given; null on the last page."},
    )


class DeviceCheckedSchema(_Doc):
    ok = fields.Boolean(required=True, metadata={"enum": [True]})


class ErrorBodySchema(_Doc):
    code = fields.String(
        required=True,
        metadata={
            "description": "validation_error (400), unauthorized (401), consent_required (403), "
            "not_found (404), conflict (409), deadline_passed (409), payload_too_large (413), "
            "unsupported_media_type (415), rate_limited (429), internal (500), unavailable (503)."
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
