"""One error shape for the whole API, produced here and nowhere else:
`{"error": {"code": ..., "message": ..., "details": {...}}}`."""

from __future__ import annotations

import logging
from typing import Any

import psycopg
from flask import Flask, jsonify
from marshmallow import ValidationError
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from events.aggregate import (
    AssessmentNotFound,
    CandidateRefused,
    ConsentRequired,
    DeadlinePassed,
    DisclosureOutdated,
    KeyAlreadyCompleted,
    KeyNotFound,
    KeyNotRedeemed,
)
from events.crypto.cipher import UnknownMasterKey
from events.ports import ConcurrencyConflict
from events.service import IdempotencyKeyReused, UnknownIssue
from events.webhooks import DeliveryNotFound, EndpointNotActive, EndpointNotFound, InvalidEndpoint

log = logging.getLogger(__name__)

#: A missing master key is mended by a restart with the right setting, not within a second.
MASTER_KEY_RETRY_SECONDS = 30

_CODES = {
    400: "validation_error",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    414: "uri_too_long",
    415: "unsupported_media_type",
    417: "expectation_failed",
    429: "rate_limited",
    431: "request_header_fields_too_large",
    500: "internal",
    501: "not_implemented",
    503: "unavailable",
}


CANDIDATE_REFUSED = "This candidate key or session is not valid."


class ApiError(Exception):
    """An error answered in the one shape; `headers` go out with it (a 429's Retry-After)."""

    def __init__(
        self,
        status: int,
        message: str,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.details = details or {}
        self.headers = headers or {}


def not_found(what: str = "Resource") -> ApiError:
    return ApiError(404, f"{what} not found.")


def invalid(field: str, message: str) -> ApiError:
    return ApiError(400, "The request is invalid.", {field: [message]})


def error_document(
    status: int, message: str, details: dict[str, Any] | None = None, code: str | None = None
) -> dict[str, Any]:
    """The one error shape; also written by the HTTP server for requests it refuses itself.
    `code` when the status's usual one is not precise enough for a client to act on."""
    code = code or _CODES.get(status, "error")
    return {"error": {"code": code, "message": message, "details": details or {}}}


def error_response(status: int, message: str, details: dict[str, Any] | None = None, code: str | None = None):
    response = jsonify(error_document(status, message, details, code))
    response.status_code = status
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="assessments"'
    return response


def _flat_messages(value: Any) -> list[str]:
    """marshmallow nests the errors of list entries by index; `details` promises a list."""
    if isinstance(value, dict):
        return [
            f"Entry {key}: {message}" for key, nested in value.items() for message in _flat_messages(nested)
        ]
    if isinstance(value, list):
        return [message for item in value for message in _flat_messages(item)]
    return [str(value)]


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(error: ApiError):
        response = error_response(error.status, error.message, error.details)
        response.headers.update(error.headers)
        return response

    @app.errorhandler(ValidationError)
    def _validation(error: ValidationError):
        messages = error.messages if isinstance(error.messages, dict) else {"_schema": error.messages}
        details = {field: _flat_messages(value) for field, value in messages.items()}
        return error_response(400, "The request is invalid.", details)

    @app.errorhandler(AssessmentNotFound)
    def _assessment_not_found(_error):
        return error_response(404, "Assessment not found.")

    @app.errorhandler(KeyNotFound)
    def _key_not_found(_error):
        return error_response(404, "Candidate key not found.")

    @app.errorhandler(CandidateRefused)
    def _candidate_refused(_error):
        """Unknown, revoked, expired, of a deleted assessment, or not for this: one answer."""
        return error_response(401, CANDIDATE_REFUSED)

    @app.errorhandler(ConsentRequired)
    def _consent_required(_error):
        return error_response(
            403,
            "Consent to the current disclosure first (GET, then POST /v1/candidate/consent).",
            code="consent_required",
        )

    @app.errorhandler(DisclosureOutdated)
    def _disclosure_outdated(_error):
        return error_response(
            409, "The disclosure changed since it was shown: read it again (GET /v1/candidate/consent)."
        )

    @app.errorhandler(KeyAlreadyCompleted)
    def _key_completed(_error):
        return error_response(409, "This assessment was already completed with this key.")

    @app.errorhandler(KeyNotRedeemed)
    def _key_not_redeemed(_error):
        return error_response(409, "This key's session has not started: redeem it first.")

    @app.errorhandler(DeadlinePassed)
    def _deadline_passed(_error):
        return error_response(409, "The session's deadline has passed.", code="deadline_passed")

    @app.errorhandler(UnknownIssue)
    def _unknown_issue(_error):
        return error_response(
            400, "The request is invalid.", {"issueId": ["No OSS issue with this id in the catalogue."]}
        )

    @app.errorhandler(IdempotencyKeyReused)
    def _idempotency_key_reused(_error):
        return error_response(409, "This Idempotency-Key was already used with a different request body.")

    @app.errorhandler(EndpointNotFound)
    def _webhook_not_found(_error):
        return error_response(404, "Webhook not found.")

    @app.errorhandler(DeliveryNotFound)
    def _delivery_not_found(_error):
        return error_response(404, "Delivery not found.")

    @app.errorhandler(EndpointNotActive)
    def _webhook_disabled(_error):
        return error_response(
            409, "This webhook is disabled and delivers nothing: delete it and register it again."
        )

    @app.errorhandler(InvalidEndpoint)
    def _invalid_webhook(error: InvalidEndpoint):
        return error_response(400, "The request is invalid.", error.problems)

    @app.errorhandler(ConcurrencyConflict)
    def _conflict(_error):
        return error_response(409, "The resource was changed concurrently; retry the request.")

    @app.errorhandler(UnknownMasterKey)
    def _master_key_missing(error: UnknownMasterKey):
        """Personal data wrapped under a master key this process was not given: a deployment
        in the middle of a rotation, or an old key removed before `rotate-master-key` ran.
        The operator's to mend, not the client's fault: a 503, and a log line naming the key
        (its id, never a secret)."""
        log.error(
            "ASSESSMENTS_MASTER_KEYS lacks master key %r, which wraps stored data keys: "
            "give every process the same keys (README, Master keys and rotation)",
            str(error),
        )
        return _retry_later(MASTER_KEY_RETRY_SECONDS)

    @app.errorhandler(OperationalError)
    @app.errorhandler(PoolTimeout)
    @app.errorhandler(psycopg.OperationalError)
    @app.errorhandler(psycopg.InterfaceError)
    def _database_unavailable(error: Exception):
        return _unavailable(error)

    @app.errorhandler(DBAPIError)
    def _database_error(error: DBAPIError):
        """A statement that failed because its connection died is an outage, not a bug."""
        if error.connection_invalidated:
            return _unavailable(error)
        return _unexpected(error)

    @app.errorhandler(HTTPException)
    def _http(error: HTTPException):
        messages = {
            404: "Resource not found.",
            405: "Method not allowed.",
            413: "The request body is larger than the service accepts.",
        }
        status = error.code or 500
        response = error_response(status, messages.get(status, error.description or error.name))
        if isinstance(error, MethodNotAllowed) and error.valid_methods:
            response.headers["Allow"] = ", ".join(sorted(error.valid_methods))
        return response

    @app.errorhandler(Exception)
    def _unexpected(_error: Exception):
        log.exception("unhandled error")
        return error_response(500, "Internal server error.")


def _unavailable(error: Exception):
    """The database cannot be reached (down, partitioned, every pooled connection busy): a
    503 the client may retry, within the bound the connection timeouts set
    (`events.sql.engine.CONNECTION_TIMEOUTS`)."""
    log.warning("database unavailable: %r", error)
    return _retry_later(1)


def _retry_later(seconds: int):
    """The contract's 503: the client may retry the request after `seconds`."""
    response = error_response(503, "The service is briefly unavailable; retry the request.")
    response.headers["Retry-After"] = str(seconds)
    return response
