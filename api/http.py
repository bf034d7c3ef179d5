"""Request plumbing shared by the blueprints: the app's services, the JSON body, callers."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from functools import wraps
from typing import Any

from flask import current_app, g, jsonify, request
from sqlalchemy.engine import Engine
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge
from werkzeug.routing import BaseConverter

from api import text
from api.errors import ApiError, not_found
from events.candidates import CandidateService
from events.erasure import Erasure
from events.model import Metadata
from events.ports import Catalogue
from events.runtime.settings import Settings
from events.service import AssessmentService
from events.sql import tenancy
from events.sql.auth_limits import AuthLimiter
from events.sql.token_cache import TokenCache
from events.tenancy import Reviewer
from events.webhooks import WebhookService
from projections import queries

EXTENSION = "assessments"
STALE_HEADERS = {"Warning": '110 - "Response is Stale"', "X-Projection-Stale": "true"}
BEARER = "bearer "


@dataclass(frozen=True)
class Candidate:
    """A caller presenting a candidate key (`X-API-Key`); the route checks it against the
    resource."""

    key: str


@dataclass(frozen=True)
class Services:
    """Everything a request needs, built once per app by the composition root."""

    settings: Settings
    #: For the reads of the projections (autocommit: every read stands alone).
    engine: Engine
    assessments: AssessmentService
    candidates: CandidateService
    catalogue: Catalogue
    #: Reviewer tokens in memory (PostgreSQL only; see `events.sql.token_cache`).
    tokens: TokenCache[Reviewer] | None = None
    #: Failed candidate authentications per client, shared by every API process through the
    #: database (see `api.limits`); None: unlimited.
    auth_limiter: AuthLimiter | None = None
    #: Webhook endpoints and their deliveries (`events.webhooks`).
    webhooks: WebhookService | None = None
    #: Erasing candidates (`events.erasure`).
    erasure: Erasure | None = None

    def clock(self) -> datetime:
        """The service's time (tests move it): what a key's status is judged at."""
        return self.assessments.clock()

    def close(self) -> None:
        if self.tokens is not None:
            self.tokens.stop()
        self.engine.dispose()


def services() -> Services:
    return current_app.extensions[EXTENSION]


def read_fresh(stream_id: uuid.UUID | None = None) -> bool:
    """Read-your-writes: wait (bounded) for the worker to apply this org's earlier writes."""
    svc = services()
    return queries.wait_until_projected(
        svc.engine, reviewer().org_id, svc.settings.read_wait_seconds, stream_id
    )


def respond(body: dict[str, Any], fresh: bool = True, status: int = 200, headers: dict | None = None):
    response = jsonify(body)
    response.status_code = status
    response.headers.update(headers or {})
    if not fresh:
        response.headers.update(STALE_HEADERS)
    return response


def json_body() -> dict[str, Any]:
    """The body as a JSON object whose every string can be stored; anything else is a 400 (or
    a 415 for a declared non-JSON media type, a 413 past the size limit), before any work is
    done."""
    declared = request.mimetype
    if declared and declared != "application/json" and not declared.endswith("+json"):
        raise ApiError(415, "Send the body as application/json.")
    body = _parsed(_body_bytes())
    if not isinstance(body, dict):
        raise ApiError(400, "The body must be a JSON object.", {})
    if problems := text.problems(body):
        raise ApiError(400, "The request is invalid.", problems)
    return body


def _body_bytes() -> bytes:
    """The whole body, or a 413. werkzeug refuses a declared Content-Length over the limit,
    but reads a chunked body only up to the limit and stops there without a word: one byte
    more from the server's own stream tells a body of exactly the limit from a longer one."""
    limit = request.max_content_length
    try:
        data = request.get_data(cache=True)
        longer = (
            limit is not None
            and request.content_length is None
            and len(data) >= limit
            and request.environ["wsgi.input"].read(1)
        )
    except HTTPException:
        raise
    except Exception as error:  # the server's reader refused the framing (gunicorn: a bad chunk)
        raise ApiError(400, "The body could not be read: its chunked framing is malformed.") from error
    if longer:
        raise RequestEntityTooLarge()
    return data


def _parsed(data: bytes) -> Any:
    """Strict JSON: no NaN or Infinity, and nesting that the parser survives (it raises
    RecursionError at about a thousand levels)."""
    try:
        return json.loads(data, parse_constant=_not_json)
    except (ValueError, RecursionError):
        raise ApiError(400, "The body must be a JSON object.", {}) from None


def _not_json(literal: str) -> None:
    raise ValueError(f"{literal} is not JSON")


def query_args() -> dict[str, str]:
    """The query string's parameters (the first value of each), every one storable as text."""
    args = request.args.to_dict()
    if problems := text.problems(args):
        raise ApiError(400, "The request is invalid.", problems)
    return args


class PathSegment(BaseConverter):
    """The default converter for path arguments (`<issue_id>`), but a segment with a NUL in it
    matches no route: nothing with a NUL can exist, and the database refuses to look for it."""

    regex = r"[^/\x00]+"


def path_uuid(value: str, what: str) -> uuid.UUID:
    """Ids that are not UUIDs cannot exist: the same 404 as any missing resource."""
    parsed = as_uuid(value)
    if parsed is None:
        raise not_found(what)
    return parsed


def as_uuid(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


def _reviewer_from_header() -> Reviewer | None:
    header = request.headers.get("Authorization", "")
    if not header.lower().startswith(BEARER):
        return None
    token = header[len(BEARER) :].strip()
    return tenancy.reviewer_for(services().engine, token, services().tokens) if token else None


def reviewer() -> Reviewer:
    return g.reviewer


def reviewer_metadata() -> Metadata:
    """Who made this request's events: the reviewer's token (by its prefix), and the request."""
    return Metadata(
        org_id=reviewer().org_id,
        actor=f"token:{reviewer().token_prefix}",
        correlation_id=g.get("request_id"),
    )


def requires_reviewer(view):
    @wraps(view)
    def wrapper(*args, **kwargs):
        found = _reviewer_from_header()
        if found is None:
            raise ApiError(401, "A valid bearer token is required.")
        g.reviewer = found
        return view(*args, **kwargs)

    return wrapper


def caller() -> Reviewer | Candidate:
    """A reviewer by bearer token, else a candidate by `X-API-Key`; the candidate's key is
    checked against the resource by the route itself."""
    if request.headers.get("Authorization"):
        found = _reviewer_from_header()
        if found is None:
            raise ApiError(401, "A valid bearer token is required.")
        return found
    key = request.headers.get("X-API-Key", "").strip()
    if key:
        return Candidate(key)
    raise ApiError(401, "Authentication is required.")
