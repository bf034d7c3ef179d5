"""`/v1/issues`: the OSS issue catalogue, for reviewers choosing a task."""

from __future__ import annotations

from flask import Blueprint, jsonify

from api.errors import not_found
from api.http import requires_reviewer, services
from api.schemas import IssueSchema, compile_dump

bp = Blueprint("issues", __name__, url_prefix="/v1/issues")
_dump_issue = compile_dump(IssueSchema())


@bp.get("")
@requires_reviewer
def list_all():
    return jsonify({"issues": [_dump_issue(issue) for issue in services().catalogue.issues()]})


@bp.get("/<issue_id>")
@requires_reviewer
def get_one(issue_id: str):
    issue = services().catalogue.issue(issue_id)
    if issue is None:
        raise not_found("Issue")
    return jsonify({"issue": _dump_issue(issue)})
