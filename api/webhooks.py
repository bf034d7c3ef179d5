"""`/v1/webhooks`: an organisation's webhook endpoints and their deliveries. The rules (which
URLs, which patterns, secrets, rotation) are `events.webhooks`'; the sending is the dispatcher's
(`assessments webhooks`)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, url_for

from api.http import (
    json_body,
    path_uuid,
    query_args,
    requires_reviewer,
    respond,
    reviewer,
    reviewer_metadata,
    services,
)
from api.webhook_schemas import (
    CreateWebhookSchema,
    DeliveriesQuerySchema,
    DeliverySchema,
    WebhookSchema,
    WebhookWithSecretSchema,
)
from events.webhooks import Delivery, Endpoint, WebhookService

bp = Blueprint("webhooks", __name__, url_prefix="/v1/webhooks")

_CREATE = CreateWebhookSchema()
_DELIVERIES_QUERY = DeliveriesQuerySchema()
_WEBHOOK = WebhookSchema()
_WITH_SECRET = WebhookWithSecretSchema()
_DELIVERY = DeliverySchema()


def _service() -> WebhookService:
    return services().webhooks


def _view(endpoint: Endpoint) -> dict[str, Any]:
    now = _service().clock()
    graces = [s.valid_until for s in endpoint.secrets if s.valid_until is not None and s.valid_until > now]
    return {
        **vars(endpoint),
        "events": list(endpoint.events),
        "disabled_reason": endpoint.disabled_reason,
        "previous_secret_valid_until": max(graces) if graces else None,
    }


def _with_secret(endpoint: Endpoint, secret: str) -> dict[str, Any]:
    return _WITH_SECRET.dump({**_view(endpoint), "secret": secret})


def _delivery(delivery: Delivery) -> dict[str, Any]:
    return _DELIVERY.dump(vars(delivery))


@bp.post("")
@requires_reviewer
def register():
    data = _CREATE.load(json_body())
    endpoint, secret = _service().register(
        reviewer().org_id, data["url"], data["events"], data["description"], reviewer_metadata()
    )
    headers = {"Location": url_for("webhooks.get_one", webhook_id=endpoint.id)}
    return respond({"webhook": _with_secret(endpoint, secret)}, status=201, headers=headers)


@bp.get("")
@requires_reviewer
def list_all():
    endpoints = _service().endpoints(reviewer().org_id)
    return respond({"webhooks": [_WEBHOOK.dump(_view(e)) for e in endpoints]})


@bp.get("/<webhook_id>")
@requires_reviewer
def get_one(webhook_id: str):
    endpoint = _service().load_owned(reviewer().org_id, path_uuid(webhook_id, "Webhook"))
    return respond({"webhook": _WEBHOOK.dump(_view(endpoint))})


@bp.delete("/<webhook_id>")
@requires_reviewer
def delete(webhook_id: str):
    endpoint_id = path_uuid(webhook_id, "Webhook")
    _service().remove(reviewer().org_id, endpoint_id, reviewer_metadata())
    return respond({"ok": True, "id": str(endpoint_id)})


@bp.post("/<webhook_id>/rotate-secret")
@requires_reviewer
def rotate_secret(webhook_id: str):
    endpoint, secret = _service().rotate(
        reviewer().org_id, path_uuid(webhook_id, "Webhook"), reviewer_metadata()
    )
    return respond({"webhook": _with_secret(endpoint, secret)})


@bp.get("/<webhook_id>/deliveries")
@requires_reviewer
def deliveries(webhook_id: str):
    endpoint_id = path_uuid(webhook_id, "Webhook")
    args = _DELIVERIES_QUERY.load(query_args())
    page, next_cursor = _service().deliveries(reviewer().org_id, endpoint_id, args["limit"], args["after"])
    return respond(
        {
            "deliveries": [_delivery(d) for d in page],
            "nextCursor": None if next_cursor is None else str(next_cursor),
        }
    )


@bp.post("/<webhook_id>/deliveries/<delivery_id>/retry")
@requires_reviewer
def retry(webhook_id: str, delivery_id: str):
    endpoint_id = path_uuid(webhook_id, "Webhook")
    found = _service().retry(reviewer().org_id, endpoint_id, path_uuid(delivery_id, "Delivery"))
    return respond({"delivery": _delivery(found)}, status=202)
