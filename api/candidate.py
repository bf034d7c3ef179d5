"""`/v1/candidate`: the candidate's side, for the product's command-line client (`promptster`).

The client's calls, in order: read the disclosure and whether it was consented to, consent,
redeem the key (a session and its token), report the device at checkpoints, complete. The
routes only parse and render; what a candidate may do is decided in `events.candidates` and
`events.aggregate`, on the assessment's stream. Every one of them takes a secret from a caller
nobody knows yet, so each is limited per client address (`api.limits`).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, g, jsonify, request

from api.candidate_schemas import (
    CompletedSchema,
    CompleteSchema,
    ConsentQuerySchema,
    ConsentRecordedSchema,
    ConsentSchema,
    ConsentStatusSchema,
    DeviceCheckSchema,
    RedeemSchema,
    RedemptionSchema,
)
from api.http import json_body, query_args, services
from api.limits import candidate_auth_limited
from api.schemas import compile_dump
from events.aggregate import CandidateRefused
from events.candidates import InSession, Redemption
from events.sql import tenancy

bp = Blueprint("candidate", __name__, url_prefix="/v1/candidate")

SESSION_HEADER = "X-API-Key"

_dump_consent_status = compile_dump(ConsentStatusSchema())
_dump_consent_recorded = compile_dump(ConsentRecordedSchema())
_dump_redemption = compile_dump(RedemptionSchema())
_dump_completed = compile_dump(CompletedSchema())
_CONSENT_QUERY = ConsentQuerySchema()
_CONSENT = ConsentSchema()
_REDEEM = RedeemSchema()
_DEVICE_CHECK = DeviceCheckSchema()
_COMPLETE = CompleteSchema()


def _correlation_id() -> str | None:
    return g.get("request_id")


@bp.get("/consent")
@candidate_auth_limited
def consent_status():
    key = _CONSENT_QUERY.load(query_args())["key"]
    candidates = services().candidates
    found = candidates.consent_status(key)
    disclosure = candidates.disclosure
    return jsonify(
        _dump_consent_status(
            {
                "already_confirmed": found.consented_to(disclosure.hash),
                "disclosure": disclosure,
                "disclosure_hash": disclosure.hash,
            }
        )
    )


@bp.post("/consent")
@candidate_auth_limited
def consent():
    data = _CONSENT.load(json_body())
    key = services().candidates.consent(data["key"], data["disclosure_hash"], _correlation_id())
    return jsonify(
        _dump_consent_recorded(
            {
                "ok": True,
                "disclosure_version": key.consent_version,
                "disclosure_hash": key.consent_hash,
                "consented_at": key.consented_at,
            }
        )
    )


@bp.post("/redeem")
@candidate_auth_limited
def redeem():
    """`200` for a first redeem and for every later one of the active key (the same session,
    a new token): the client accepts nothing else."""
    data = _REDEEM.load(json_body())
    redemption = services().candidates.redeem(
        data["key"], _correlation_id(), data["candidate_name"], data["signing_pub_key"]
    )
    return jsonify(_dump_redemption(_redeemed_view(redemption)))


def _redeemed_view(redemption: Redemption) -> dict[str, Any]:
    created, key = redemption.state.created, redemption.key
    return {
        "session_id": key.session_id,
        "session_token": redemption.session_token,
        "assessment_id": created.assessment_id,
        "assessment_title": created.title,
        "org_name": key.org_name or tenancy.organisation_name(services().engine, key.org_id),
        "task_brief": created.task_brief,
        "repo_url": created.repo_url,
        "time_limit_minutes": created.time_limit_minutes,
        "issue_id": created.issue_id,
        "expires_at": key.deadline,
        "tos_accepted": True,
        "started_at": key.redeemed_at,
        "deadline": key.deadline,
    }


@bp.post("/device-check")
@candidate_auth_limited
def device_check():
    session = _session()  # credentials before the body: a stranger learns nothing from errors
    data = _DEVICE_CHECK.load(json_body())
    services().candidates.check_device(session, data["checkpoint"], data["fingerprint"], _correlation_id())
    return jsonify({"ok": True})


def _session() -> InSession:
    token = request.headers.get(SESSION_HEADER, "").strip()
    if not token or not token.isprintable():
        raise CandidateRefused()
    return services().candidates.in_session(token)


@bp.post("/complete")
@candidate_auth_limited
def complete():
    data = _COMPLETE.load(json_body())
    completed_at = services().candidates.complete(data["key"], data["session_id"], _correlation_id())
    return jsonify(_dump_completed({"ok": True, "completed_at": completed_at}))
