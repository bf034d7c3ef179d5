"""Candidates' sessions, for reviewers: `GET /v1/assessments/:id/sessions` (paged like the
assessments) and `GET /v1/sessions/:id`. Read from the keys projection, where a key keeps its
session, after the same read-your-writes wait as every other read."""

from __future__ import annotations

from typing import Any

from flask import Blueprint

from api.candidate_schemas import SessionSchema
from api.errors import invalid, not_found
from api.http import path_uuid, query_args, read_fresh, requires_reviewer, respond, reviewer, services
from api.schemas import ListQuerySchema, compile_dump
from events.candidate import CandidateKey
from projections import queries

bp = Blueprint("sessions", __name__)

_dump_session = compile_dump(SessionSchema())
_LIST_QUERY_SCHEMA = ListQuerySchema()


def session_view(key: CandidateKey) -> dict[str, Any]:
    """A key's session as reviewers see it: its status at the service's time, and a summary of
    the device checks (whether the device ever differed from the first one is the signal)."""
    return _dump_session(
        {
            "id": key.session_id,
            "key_id": key.id,
            "assessment_id": key.assessment_id,
            "status": key.status_at(services().clock()),
            "started_at": key.redeemed_at,
            "deadline": key.deadline,
            "completed_at": key.completed_at,
            "expired_at": key.expired_at,
            "consent_version": key.consent_version,
            "consented_at": key.consented_at,
            "signing_pub_key": key.signing_public_key,
            "device_checks": {
                "count": key.device_checks,
                "changed": key.device_changed,
                "last_checkpoint": key.last_checkpoint,
                "last_checked_at": key.last_checked_at,
            },
        }
    )


@bp.get("/v1/assessments/<assessment_id>/sessions")
@requires_reviewer
def list_for_assessment(assessment_id: str):
    stream_id = path_uuid(assessment_id, "Assessment")
    args = _LIST_QUERY_SCHEMA.load(query_args())
    paged = "limit" in args or "after" in args
    fresh = read_fresh(stream_id)
    try:
        with services().engine.connect() as conn:
            if queries.get_assessment(conn, reviewer().org_id, stream_id) is None:
                if fresh:
                    raise not_found("Assessment")
                services().assessments.load_owned(reviewer().org_id, stream_id)  # 404 if truly gone
            found, next_cursor = queries.list_sessions(
                conn, stream_id, args.get("limit", 1000) if paged else None, args.get("after")
            )
    except queries.InvalidCursor:
        raise invalid("after", "Not a cursor this service returned.") from None
    body: dict[str, Any] = {"sessions": [session_view(key) for key in found]}
    if paged:
        body["nextCursor"] = next_cursor
    return respond(body, fresh)


@bp.get("/v1/sessions/<session_id>")
@requires_reviewer
def get_one(session_id: str):
    session_uuid = path_uuid(session_id, "Session")
    fresh = read_fresh()
    with services().engine.connect() as conn:
        found = queries.get_session(conn, reviewer().org_id, session_uuid)
    if found is None:
        raise not_found("Session")
    return respond({"session": session_view(found)}, fresh)
