"""`/v1/assessments`: create, list, get and soft-delete, plus the assessment's candidate keys."""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any

from flask import Blueprint, g, request, url_for
from sqlalchemy.engine import Connection

from api.errors import invalid, not_found
from api.http import (
    Candidate,
    as_uuid,
    caller,
    json_body,
    path_uuid,
    query_args,
    read_fresh,
    requires_reviewer,
    respond,
    reviewer,
    reviewer_metadata,
    services,
)
from api.limits import candidate_auth_limited
from api.schemas import (
    AssessmentSchema,
    AssessmentWithIssueSchema,
    CandidateKeySchema,
    CreateAssessmentSchema,
    HistoryQuerySchema,
    IssueKeysSchema,
    ListQuerySchema,
    compile_dump,
)
from events import codec
from events.aggregate import Assessment, AssessmentDetails, CandidateKey, CandidateRefused, issued_key
from events.model import AssessmentCreated, RecordedEvent
from events.personal import NO_KEYS, SubjectKeys, reveal_into, revealed_event, subjects_in
from events.service import Idempotency
from projections import queries

bp = Blueprint("assessments", __name__, url_prefix="/v1/assessments")

# Schemas keep no per-request state: one instance each; responses go out through their
# compiled dumps (see `compile_dump`).
_dump_assessment = compile_dump(AssessmentSchema())
_dump_assessment_with_issue = compile_dump(AssessmentWithIssueSchema())
_dump_candidate_key = compile_dump(CandidateKeySchema())
_CREATE_ASSESSMENT_SCHEMA = CreateAssessmentSchema()
_ISSUE_KEYS_SCHEMA = IssueKeysSchema()
_LIST_QUERY_SCHEMA = ListQuerySchema()
_HISTORY_QUERY_SCHEMA = HistoryQuerySchema()

MAX_IDEMPOTENCY_KEY = 255


# --- create, with Idempotency-Key -------------------------------------------------------


def _idempotency_key() -> str | None:
    """Printable characters only: the key is stored, and a control character in it is a
    client's bug, not a key."""
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    key = key.strip()
    if not 1 <= len(key) <= MAX_IDEMPOTENCY_KEY:
        raise invalid("Idempotency-Key", f"Must be 1 to {MAX_IDEMPOTENCY_KEY} characters.")
    if not key.isprintable():
        raise invalid("Idempotency-Key", "Must be printable characters only.")
    return key


def _fingerprint(body: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _details(data: dict[str, Any]) -> AssessmentDetails:
    """The schema's fields are the details' fields; an issue's brief fills a missing one."""
    return AssessmentDetails(**{**data, "task_brief": data.get("task_brief") or ""})


@bp.post("")
@requires_reviewer
def create():
    body = json_body()
    key = _idempotency_key()
    details = _details(_CREATE_ASSESSMENT_SCHEMA.load(body))
    idempotency = Idempotency(key, _fingerprint(body)) if key else None
    created = services().assessments.create(reviewer().org_id, details, reviewer_metadata(), idempotency)
    headers = {"Location": url_for("assessments.get_one", assessment_id=created.event.assessment_id)}
    if created.replayed:
        headers["Idempotent-Replayed"] = "true"
    return respond({"assessment": _dump_assessment(_view(created.event))}, status=201, headers=headers)


def _view(created: AssessmentCreated) -> dict[str, Any]:
    """An assessment as its creation describes it (nothing has changed it since)."""
    return {**vars(created), "id": created.assessment_id, "updated_at": created.created_at}


# --- reads --------------------------------------------------------------------------------


@bp.get("")
@requires_reviewer
def list_all():
    args = _LIST_QUERY_SCHEMA.load(query_args())
    paged = "limit" in args or "after" in args
    fresh = read_fresh()
    try:
        with services().engine.connect() as conn:
            found, next_cursor = queries.list_assessments(
                conn, reviewer().org_id, args.get("limit", 1000) if paged else None, args.get("after")
            )
    except queries.InvalidCursor:
        raise invalid("after", "Not a cursor this service returned.") from None
    body: dict[str, Any] = {"assessments": [_with_issue(item) for item in found]}
    if paged:
        body["nextCursor"] = next_cursor
    return respond(body, fresh)


def _with_issue(item: queries.AssessmentWithIssue) -> dict[str, Any]:
    return _dump_assessment_with_issue({**vars(item.assessment), "issue": item.issue})


@bp.get("/<assessment_id>")
def get_one(assessment_id: str):
    who = caller()  # credentials first: an anonymous caller learns nothing about ids
    if isinstance(who, Candidate):
        return _get_as_candidate(who.key, assessment_id)
    g.reviewer = who
    stream_id = path_uuid(assessment_id, "Assessment")
    fresh = read_fresh(stream_id)
    with services().engine.connect() as conn:
        found = queries.get_assessment(conn, who.org_id, stream_id)
    if found is not None:
        return respond({"assessment": _with_issue(found)}, fresh)
    if fresh:
        raise not_found("Assessment")
    # The worker is behind: the caller's own create may not be projected yet. The stream is
    # the truth (and short), so answer from it rather than deny a write that happened.
    state = services().assessments.load_owned(who.org_id, stream_id)
    return respond({"assessment": _from_stream(state)})


@candidate_auth_limited
def _get_as_candidate(credential: str, assessment_id: str):
    """A key (pending or active) or a session token (session active) of this assessment,
    decided on the stream itself, so a revoke, a delete or the deadline is effective at once.
    Limited per client address (reviewers' requests are not: their tokens are long secrets)."""
    stream_id = as_uuid(assessment_id)
    if stream_id is None or not credential.isprintable():  # no credential has a control character
        raise CandidateRefused()
    state = services().candidates.assessment_for(credential, stream_id)
    return respond({"assessment": _from_stream(state)})


def _from_stream(state: Assessment) -> dict[str, Any]:
    """The assessment as its stream says, with its catalogue issue."""
    issue_id = state.created.issue_id
    issue = services().catalogue.issue(issue_id) if issue_id else None
    return _dump_assessment_with_issue({**_view(state.created), "issue": issue})


@bp.delete("/<assessment_id>")
@requires_reviewer
def delete(assessment_id: str):
    stream_id = path_uuid(assessment_id, "Assessment")
    services().assessments.delete(reviewer().org_id, stream_id, reviewer_metadata())
    return respond({"ok": True, "id": str(stream_id)})


# --- history -----------------------------------------------------------------------------


def _history_item(recorded: RecordedEvent, keys: SubjectKeys) -> dict[str, Any]:
    """An event as recorded: no event holds a credential (old ones that did are upcast when
    read, see `codec.UPCASTERS`); its personal fields are revealed to the reviewer, or null
    with `erased` once the candidate was erased (`events.personal`)."""
    shown, erased = revealed_event(keys, recorded)
    data = codec.encode(shown.event)
    if erased:
        data["erased"] = True
    return {
        "id": str(recorded.event_id),
        "type": recorded.type_name,
        "version": recorded.stream_version,
        "recordedAt": codec.format_time(recorded.recorded_at),
        "data": data,
    }


@bp.get("/<assessment_id>/events")
@requires_reviewer
def history(assessment_id: str):
    """The assessment's events in order, also once deleted; paged by stream version."""
    stream_id = path_uuid(assessment_id, "Assessment")
    args = _HISTORY_QUERY_SCHEMA.load(query_args())
    recorded = services().assessments.history(reviewer().org_id, stream_id)
    page = [r for r in recorded if r.stream_version > args["after"]][: args["limit"]]
    more = bool(page) and page[-1].stream_version < recorded[-1].stream_version
    keys = _subject_keys(subjects_in(r.event for r in page))
    return respond(
        {
            "events": [_history_item(r, keys) for r in page],
            "nextCursor": str(page[-1].stream_version) if more else None,
        }
    )


# --- candidate keys -----------------------------------------------------------------------


def _key_view(row: CandidateKey, key: str | None, keys: SubjectKeys | None = None) -> dict[str, Any]:
    """`key` comes from the key's reservation: neither the events nor the projection hold it.
    `row`'s personal fields are revealed with `keys` (from the projection: sealed), or shown as
    they are (just issued); an erased candidate's key says so with `erased`, which no other key
    has."""
    view = {**vars(row), "key": key, "status": row.status_at(services().clock())}
    if keys is not None and reveal_into(keys, row.subject_id, view):
        view["erased"] = True
    return _dump_candidate_key(view)


def _subject_keys(subject_ids: set[uuid.UUID], conn: Connection | None = None) -> SubjectKeys:
    personal = services().assessments.personal
    return NO_KEYS if personal is None else personal.reader(subject_ids, conn)


def _revealed_views(listed: list[queries.ListedKey]) -> list[dict[str, Any]]:
    """The keys as the projection holds them (personal fields sealed), revealed with their
    subjects' data keys, which the list's own query read."""
    personal = services().assessments.personal
    found = {item.row.subject_id: item.wrapped for item in listed if item.row.subject_id is not None}
    keys = NO_KEYS if personal is None else personal.keys_from(found)
    return [_key_view(item.row, item.key, keys) for item in listed]


@bp.post("/<assessment_id>/keys")
@requires_reviewer
def issue_keys(assessment_id: str):
    stream_id = path_uuid(assessment_id, "Assessment")
    data = _ISSUE_KEYS_SCHEMA.load(json_body())
    emails = data["candidate_emails"] or [None] * data["count"]
    names = data["candidate_names"] or [None] * len(emails)
    recorded = services().assessments.issue_keys(
        reviewer().org_id,
        stream_id,
        list(zip(emails, names, strict=True)),
        reviewer_metadata(),
        data["org_name"],
    )
    keys = [issued_key(r.event) for r in recorded]
    strings = services().assessments.key_strings([row.id for row in keys])
    return respond({"keys": [_key_view(row, strings.get(row.id)) for row in keys]}, status=201)


@bp.get("/<assessment_id>/keys")
@requires_reviewer
def list_keys(assessment_id: str):
    stream_id = path_uuid(assessment_id, "Assessment")
    fresh = read_fresh(stream_id)
    with services().engine.connect() as conn:
        if queries.get_assessment(conn, reviewer().org_id, stream_id) is None:
            if fresh:
                raise not_found("Assessment")
            services().assessments.load_owned(reviewer().org_id, stream_id)  # 404 if truly gone
        views = _revealed_views(queries.list_keys(conn, stream_id))
    return respond({"keys": views}, fresh)


@bp.delete("/<assessment_id>/keys/<key_id>")
@requires_reviewer
def revoke_key(assessment_id: str, key_id: str):
    stream_id = path_uuid(assessment_id, "Assessment")
    key_uuid = path_uuid(key_id, "Candidate key")
    services().assessments.revoke_key(reviewer().org_id, stream_id, key_uuid, reviewer_metadata())
    return respond({"ok": True, "id": str(key_uuid)})
