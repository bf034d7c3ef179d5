"""Schemas of the candidate's side: the product's command-line client's wire format, to the
letter (its field names, its flat redeem body), and the session as reviewers see it."""

from __future__ import annotations

import base64
import binascii

from marshmallow import ValidationError, fields, validate

from api.schemas import NO_NUL, CamelSchema, Text, Timestamp

#: Longer than any key or token this service issues; the bound only keeps the input sane.
MAX_CREDENTIAL = 128
MAX_CHECKPOINT = 100
ED25519_PUBLIC_KEY_BYTES = 32


def Credential(**kwargs) -> fields.String:  # noqa: N802 - a field factory
    """A key or token as sent. Its shape is not checked here: a malformed key is refused like
    an unknown one (401, one body for all), so its format teaches a guesser nothing."""
    return fields.String(validate=[validate.Length(1, MAX_CREDENTIAL), NO_NUL], **kwargs)


def _ed25519_public_key(value: str) -> None:
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValidationError("Not valid base64.") from None
    if len(raw) != ED25519_PUBLIC_KEY_BYTES:
        raise ValidationError(
            f"An Ed25519 public key is {ED25519_PUBLIC_KEY_BYTES} bytes; this is {len(raw)}."
        )


class ConsentQuerySchema(CamelSchema):
    key = Credential(required=True)


class ConsentSchema(CamelSchema):
    key = Credential(required=True)
    disclosure_hash = fields.String(
        allow_none=True,
        load_default=None,
        validate=[validate.Length(max=MAX_CREDENTIAL), NO_NUL],
        metadata={"description": "The `disclosureHash` the candidate was shown; any other is 409."},
    )


class RedeemSchema(CamelSchema):
    key = Credential(required=True)
    candidate_name = Text(255, allow_none=True, load_default=None)
    signing_pub_key = fields.String(
        allow_none=True,
        load_default=None,
        validate=[validate.Length(max=64), _ed25519_public_key],
        metadata={"description": "An Ed25519 public key: 32 bytes, standard base64."},
    )


class DeviceCheckSchema(CamelSchema):
    checkpoint = Text(MAX_CHECKPOINT, required=True)
    fingerprint = fields.Dict(
        required=True,
        metadata={"description": "What the client reports of its device. Only a salted hash is kept."},
    )


class CompleteSchema(CamelSchema):
    session_id = fields.UUID(required=True)
    key = Credential(required=True)


# --- responses ------------------------------------------------------------------------------


class DisclosureSchema(CamelSchema):
    version = fields.String()
    captures = fields.List(fields.String())
    does_not_capture = fields.List(fields.String())
    evaluated = fields.List(fields.String())
    data_use = fields.List(fields.String())
    tos_url = fields.String()


class ConsentStatusSchema(CamelSchema):
    already_confirmed = fields.Boolean()
    disclosure = fields.Nested(DisclosureSchema)
    disclosure_hash = fields.String(metadata={"description": "SHA-256 (hex) of `disclosure` as serialised."})


class ConsentRecordedSchema(CamelSchema):
    ok = fields.Boolean()
    disclosure_version = fields.String()
    disclosure_hash = fields.String()
    consented_at = Timestamp()


class RedemptionSchema(CamelSchema):
    session_id = fields.UUID()
    session_token = fields.String(metadata={"description": "Send as `X-API-Key`; shown only here."})
    assessment_id = fields.UUID()
    assessment_title = fields.String()
    org_name = fields.String(allow_none=True)
    task_brief = fields.String()
    repo_url = fields.String(allow_none=True)
    time_limit_minutes = fields.Integer(allow_none=True)
    issue_id = fields.String(allow_none=True)
    expires_at = Timestamp(metadata={"description": "When the candidate's access ends: the deadline."})
    tos_accepted = fields.Boolean()
    started_at = Timestamp()
    deadline = Timestamp()


class CompletedSchema(CamelSchema):
    ok = fields.Boolean()
    completed_at = Timestamp()


class DeviceChecksSchema(CamelSchema):
    count = fields.Integer()
    changed = fields.Boolean(metadata={"description": "Whether any check differed from the session's first."})
    last_checkpoint = fields.String(allow_none=True)
    last_checked_at = Timestamp(allow_none=True)


class SessionSchema(CamelSchema):
    id = fields.UUID()
    key_id = fields.UUID()
    assessment_id = fields.UUID()
    status = fields.String(validate=validate.OneOf(["active", "completed", "expired"]))
    started_at = Timestamp()
    deadline = Timestamp()
    completed_at = Timestamp(allow_none=True)
    expired_at = Timestamp(allow_none=True)
    consent_version = fields.String(allow_none=True)
    consented_at = Timestamp(allow_none=True)
    signing_pub_key = fields.String(allow_none=True)
    device_checks = fields.Nested(DeviceChecksSchema)
