"""`DELETE /v1/candidates?email=`: erase a candidate of the caller's organisation.

The candidate's data key is destroyed with the `CandidateErased` event that records it
(`events.erasure`): from the answer on, their email and name read as null, with `erased`,
everywhere. Erasing someone already erased, or unknown, answers the same: nothing is left to
say whether they ever existed.
"""

from __future__ import annotations

from flask import Blueprint

from api.http import query_args, requires_reviewer, respond, reviewer, reviewer_metadata, services
from api.schemas import EraseQuerySchema

bp = Blueprint("erasure", __name__)

_QUERY = EraseQuerySchema()


@bp.delete("/v1/candidates")
@requires_reviewer
def erase_candidate():
    email = _QUERY.load(query_args())["email"]
    services().erasure.erase_email(reviewer().org_id, email, reviewer_metadata())
    return respond({"ok": True})
