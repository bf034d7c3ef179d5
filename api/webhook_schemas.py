"""Request and response schemas of `/v1/webhooks`."""

from __future__ import annotations

from marshmallow import RAISE, fields, validate

from api.schemas import NO_NUL, CamelSchema, Pattern, Timestamp
from events.webhooks import MAX_PATTERNS, MAX_URL

MAX_DESCRIPTION = 1000
MAX_PATTERN = 255
DELIVERY_PAGE = 50
EVENT_PATTERN = r"^[A-Za-z0-9_.*#]+$"

URL_DESCRIPTION = (
    "Where deliveries are POSTed: an `https` URL (http only in local development) whose host is "
    "not, and does not resolve to, a loopback, private, link-local, shared (CGNAT), multicast, "
    "unspecified or cloud metadata address; no user or password, no fragment. The host is resolved "
    "now and again before every attempt."
)
EVENTS_DESCRIPTION = (
    "What to deliver: event types (`CandidateKeyIssued`), routing keys (`candidate_key.issued`) or "
    "routing-key patterns (`candidate_key.*`, `#` for everything), as in docs/events.md. Each must "
    "name at least one event type; the endpoints' own events are not delivered."
)


class CreateWebhookSchema(CamelSchema):
    url = fields.String(
        required=True,
        validate=[validate.Length(1, MAX_URL), NO_NUL],
        metadata={"description": URL_DESCRIPTION},
    )
    events = fields.List(
        fields.String(validate=[validate.Length(1, MAX_PATTERN), Pattern(EVENT_PATTERN)]),
        required=True,
        validate=validate.Length(1, MAX_PATTERNS),
        metadata={"description": EVENTS_DESCRIPTION},
    )
    description = fields.String(
        allow_none=True,
        load_default=None,
        validate=[validate.Length(max=MAX_DESCRIPTION), NO_NUL],
    )


class DeliveriesQuerySchema(CamelSchema):
    class Meta:
        unknown = RAISE

    limit = fields.Integer(validate=validate.Range(1, 100), load_default=DELIVERY_PAGE)
    after = fields.UUID(load_default=None)


class WebhookSchema(CamelSchema):
    id = fields.UUID(required=True)
    org_id = fields.String(required=True)
    url = fields.String(required=True)
    events = fields.List(fields.String(), required=True)
    description = fields.String(allow_none=True, required=True)
    status = fields.String(
        required=True,
        metadata={
            "enum": ["active", "disabled"],
            "description": "`disabled` after a run of failed deliveries (see `disabledReason`): "
            "nothing is delivered any more; delete it and register it again.",
        },
    )
    disabled_reason = fields.String(allow_none=True, required=True)
    previous_secret_valid_until = Timestamp(
        allow_none=True,
        required=True,
        metadata={
            "description": "After a rotation: until when the previous secret still signs "
            "beside the new one (both signatures are sent); null otherwise."
        },
    )
    created_at = Timestamp(required=True)
    updated_at = Timestamp(required=True)


class WebhookWithSecretSchema(WebhookSchema):
    secret = fields.String(
        required=True,
        metadata={
            "description": "The signing secret (`whsec_` + base64 of 32 bytes), shown only in this "
            "response: keep it. Verify each delivery's `webhook-signature` with it."
        },
    )


class DeliverySchema(CamelSchema):
    id = fields.UUID(required=True)
    event_id = fields.UUID(
        required=True, metadata={"description": "The event's id: the delivery's `webhook-id` header."}
    )
    event_type = fields.String(required=True)
    stream_id = fields.UUID(required=True, metadata={"description": "The assessment the event is about."})
    status = fields.String(required=True, metadata={"enum": ["pending", "succeeded", "failed", "cancelled"]})
    attempts = fields.Integer(required=True)
    response_status = fields.Integer(allow_none=True, required=True)
    latency_ms = fields.Integer(allow_none=True, required=True)
    last_error = fields.String(allow_none=True, required=True)
    created_at = Timestamp(required=True)
    last_attempt_at = Timestamp(allow_none=True, required=True)
    next_attempt_at = Timestamp(allow_none=True, required=True)


class _Doc(CamelSchema):
    class Meta:
        unknown = RAISE


class WebhookEnvelopeSchema(_Doc):
    webhook = fields.Nested(WebhookSchema, required=True)


class WebhookWithSecretEnvelopeSchema(_Doc):
    webhook = fields.Nested(WebhookWithSecretSchema, required=True)


class WebhookListSchema(_Doc):
    webhooks = fields.List(fields.Nested(WebhookSchema), required=True)


class DeliveryListSchema(_Doc):
    deliveries = fields.List(fields.Nested(DeliverySchema), required=True)
    next_cursor = fields.UUID(
        allow_none=True,
        required=True,
        metadata={"description": "Pass as `after` for the next (older) page; null on the last."},
    )


class DeliveryEnvelopeSchema(_Doc):
    delivery = fields.Nested(DeliverySchema, required=True)
