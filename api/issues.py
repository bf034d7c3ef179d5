"""`/v1/issues`: the OSS issue catalogue, for reviewers choosing a task."""

from __future__ import annotations

from flask import Blueprint, jsonify

from api.errors import not_found
from api.http import Candidate, caller, requires_reviewer, services
from api.limits import candidate_auth_limited
from api.schemas import IssueSchema, compile_dump
from events.aggregate import CandidateRefused

bp = Blueprint("issues", __name__, url_prefix="/v1/issues")
_dump_issue = compile_dump(IssueSchema())


@bp.get("")
@requires_reviewer
def list_all():
    return jsonify({"issues": [_dump_issue(issue) for issue in services().catalogue.issues()]})


@bp.get("/<issue_id>")
def get_one(issue_id: str):
    """For reviewers; and for a candidate (a key, or a session token while the session is
    active), the issue of their own assessment only."""
    who = caller()
    if isinstance(who, Candidate):
        _authorise_candidate(who.key, issue_id)
    issue = services().catalogue.issue(issue_id)
    if issue is None:
        raise not_found("Issue")
    return jsonify({"issue": _dump_issue(issue)})


@candidate_auth_limited
def _authorise_candidate(credential: str, issue_id: str) -> None:
    if not credential.isprintable():
        raise CandidateRefused()
    state = services().candidates.assessment_of(credential)
    if state.created.issue_id != issue_id:
        raise CandidateRefused()
