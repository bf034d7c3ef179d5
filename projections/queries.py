"""What the API reads: projections joined with the catalogue, and the read-your-writes wait."""

from __future__ import annotations

import base64
import re
import struct
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, exists, func, or_, select
from sqlalchemy.engine import Connection, Engine

from events.service import KEY_SCOPE
from events.sql.catalogue import oss_issues
from events.sql.tables import projection_pending_table as pending
from events.sql.tables import reservations_table as reservations
from events.sql.tables import subject_keys_table as subject_keys
from projections.assessments import AssessmentRow
from projections.candidate_keys import KeyRow
from projections.tables import ASSESSMENTS_VIEW as view
from projections.tables import CANDIDATE_KEYS_VIEW as keys_view

_ASSESSMENT_COLUMNS = [c for c in view.columns if c.name != "version"]
_ISSUE_COLUMNS = [c.label(f"catalogue_{c.name}") for c in oss_issues.columns]


class InvalidCursor(ValueError):
    pass


@dataclass(frozen=True)
class AssessmentWithIssue:
    assessment: AssessmentRow
    issue: dict[str, Any] | None


def wait_until_projected(
    engine: Engine, org_id: str, timeout: float, stream_id: uuid.UUID | None = None
) -> bool:
    """Wait until every event of the organisation (or of one stream) that was committed before
    this call has been applied by the worker. False when `timeout` passed first: the caller
    then serves what is there and says it may be stale."""
    scope = [pending.c.org_id == org_id]
    if stream_id is not None:
        scope.append(pending.c.stream_id == stream_id)
    with engine.connect() as conn:
        target = conn.scalar(select(func.max(pending.c.position)).where(*scope))
    if target is None:
        return True
    still_pending = select(exists().where(*scope, pending.c.position <= target))
    deadline = time.monotonic() + timeout
    delay = 0.002
    while True:
        with engine.connect() as conn:
            if not conn.scalar(still_pending):
                return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
        delay = min(delay * 2, 0.05)


def _with_issues():
    return select(*_ASSESSMENT_COLUMNS, *_ISSUE_COLUMNS).select_from(
        view.outerjoin(oss_issues, oss_issues.c.id == view.c.issue_id)
    )


def _to_result(row: Any) -> AssessmentWithIssue:
    mapping = row._mapping
    assessment = AssessmentRow(**{c.name: mapping[c.name] for c in _ASSESSMENT_COLUMNS})
    issue = None
    if mapping["catalogue_id"] is not None:
        issue = {c.name: mapping[f"catalogue_{c.name}"] for c in oss_issues.columns}
    return AssessmentWithIssue(assessment, issue)


def list_assessments(
    conn: Connection, org_id: str, limit: int | None = None, after: str | None = None
) -> tuple[list[AssessmentWithIssue], str | None]:
    """Active assessments by creation time (ties by id). With `limit`, also the cursor of the
    next page (None on the last one)."""
    query = _with_issues().where(view.c.org_id == org_id, view.c.deleted_at.is_(None))
    if after is not None:
        created_at, last_id = decode_cursor(after)
        query = query.where(
            or_(view.c.created_at > created_at, and_(view.c.created_at == created_at, view.c.id > last_id))
        )
    query = query.order_by(view.c.created_at, view.c.id)
    if limit is None:
        return [_to_result(row) for row in conn.execute(query)], None
    rows = [_to_result(row) for row in conn.execute(query.limit(limit + 1))]
    page, more = rows[:limit], len(rows) > limit
    last = page[-1].assessment if more else None
    return page, encode_cursor(last.created_at, last.id) if last else None


def get_assessment(conn: Connection, org_id: str, assessment_id: uuid.UUID) -> AssessmentWithIssue | None:
    query = _with_issues().where(
        view.c.id == assessment_id, view.c.org_id == org_id, view.c.deleted_at.is_(None)
    )
    row = conn.execute(query).first()
    return _to_result(row) if row else None


@dataclass(frozen=True)
class ListedKey:
    row: KeyRow
    #: From the key's reservation, the only place it is kept; None only for a reservation
    #: without the key's id (none after migration 0003's backfill).
    key: str | None
    #: The (master key id, wrapped data key) of the row's subject, read in the same query;
    #: None when the row has no subject or its key is gone (erased).
    wrapped: tuple[str, bytes] | None = None


_KEY_COLUMNS = list(keys_view.columns)
_KEY_STRING = reservations.c.key.label("key_string")


def list_keys(conn: Connection, assessment_id: uuid.UUID) -> list[ListedKey]:
    """The assessment's keys that are not revoked, by creation, each with its string."""
    query = (
        select(*_KEY_COLUMNS, _KEY_STRING, subject_keys.c.master_key_id, subject_keys.c.wrapped_key)
        .select_from(
            keys_view.outerjoin(
                reservations,
                and_(reservations.c.subject_id == keys_view.c.id, reservations.c.scope == KEY_SCOPE),
            ).outerjoin(subject_keys, subject_keys.c.subject_id == keys_view.c.subject_id)
        )
        .where(keys_view.c.assessment_id == assessment_id, keys_view.c.revoked_at.is_(None))
        .order_by(keys_view.c.created_at, keys_view.c.id)
    )
    return [
        ListedKey(
            _key_row(row),
            row.key_string,
            None if row.master_key_id is None else (row.master_key_id, row.wrapped_key),
        )
        for row in conn.execute(query)
    ]


# --- sessions: a key's session lives on its row (a key has at most one) ----------------------


def list_sessions(
    conn: Connection, assessment_id: uuid.UUID, limit: int | None = None, after: str | None = None
) -> tuple[list[KeyRow], str | None]:
    """The sessions of an assessment's keys that are not revoked, by start (ties by session
    id), paged like the assessments."""
    query = select(*_KEY_COLUMNS).where(
        keys_view.c.assessment_id == assessment_id,
        keys_view.c.session_id.is_not(None),
        keys_view.c.revoked_at.is_(None),
    )
    if after is not None:
        started, last_id = decode_cursor(after)
        query = query.where(
            or_(
                keys_view.c.redeemed_at > started,
                and_(keys_view.c.redeemed_at == started, keys_view.c.session_id > last_id),
            )
        )
    query = query.order_by(keys_view.c.redeemed_at, keys_view.c.session_id)
    if limit is not None:
        query = query.limit(limit + 1)
    rows = [_key_row(row) for row in conn.execute(query)]
    if limit is None or len(rows) <= limit:
        return rows, None
    last = rows[limit - 1]
    return rows[:limit], encode_cursor(last.redeemed_at, last.session_id)


def get_session(conn: Connection, org_id: str, session_id: uuid.UUID) -> KeyRow | None:
    """A session of a live assessment of the organisation, unless its key was revoked."""
    query = (
        select(*_KEY_COLUMNS)
        .select_from(keys_view.join(view, view.c.id == keys_view.c.assessment_id))
        .where(
            keys_view.c.session_id == session_id,
            keys_view.c.org_id == org_id,
            keys_view.c.revoked_at.is_(None),
            view.c.deleted_at.is_(None),
        )
    )
    row = conn.execute(query).first()
    return _key_row(row) if row else None


def due_to_expire(conn: Connection, now: datetime, limit: int) -> list[uuid.UUID]:
    """Live assessments with a key that ended by time (pending past `expires_at`, active past
    its deadline) but not by an event, those due longest first: what the expiry step decides
    on. Served by the open-keys index; the decision itself is taken on each stream. Deleted
    assessments are left out: their keys are the cascade's to revoke, and however many wait
    for it they cannot crowd the others out of a step."""
    ends_at = func.coalesce(keys_view.c.deadline, keys_view.c.expires_at)
    query = (
        select(keys_view.c.assessment_id)
        .select_from(keys_view.join(view, view.c.id == keys_view.c.assessment_id))
        .where(
            keys_view.c.revoked_at.is_(None),
            keys_view.c.completed_at.is_(None),
            keys_view.c.expired_at.is_(None),
            ends_at <= now,
            view.c.deleted_at.is_(None),
        )
        .group_by(keys_view.c.assessment_id)
        .order_by(func.min(ends_at))
        .limit(limit)
    )
    return list(conn.scalars(query))


def _key_row(row: Any) -> KeyRow:
    return KeyRow(**{c.name: row._mapping[c.name] for c in _KEY_COLUMNS})


#: A cursor is 24 bytes in URL-safe base64: the last row's `created_at` in microseconds since
#: the epoch (signed, big-endian) and its id. Every string of this pattern names a position in
#: the (created_at, id) order, so the API's document can state exactly what it accepts.
CURSOR_PATTERN = r"^[A-Za-z0-9_-]{32}$"
_CURSOR = struct.Struct(">q16s")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_EARLIEST = (datetime.min.replace(tzinfo=UTC) - _EPOCH) // _MICROSECOND
_LATEST = (datetime.max.replace(tzinfo=UTC) - _EPOCH) // _MICROSECOND


def encode_cursor(moment: datetime, row_id: uuid.UUID) -> str:
    micros = (moment - _EPOCH) // _MICROSECOND
    return base64.urlsafe_b64encode(_CURSOR.pack(micros, row_id.bytes)).decode()


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    """The position a cursor names; a time beyond what a datetime holds is its nearest end."""
    if not re.fullmatch(CURSOR_PATTERN, cursor):
        raise InvalidCursor(cursor)
    micros, last_id = _CURSOR.unpack(base64.urlsafe_b64decode(cursor))
    micros = min(max(micros, _EARLIEST), _LATEST)
    return _EPOCH + micros * _MICROSECOND, uuid.UUID(bytes=last_id)


def due_for_erasure(conn: Connection, ended_before: datetime, limit: int) -> list[tuple[uuid.UUID, str]]:
    """Data subjects (keys, with their organisation) that ended before `ended_before`, whose
    data key still exists, and whose candidate has no other key still open or ended since
    (keys issued to the same email: one `lookup`): what the retention step erases."""
    ended = func.coalesce(keys_view.c.completed_at, keys_view.c.expired_at, keys_view.c.revoked_at)
    with_keys = keys_view.join(subject_keys, subject_keys.c.subject_id == keys_view.c.subject_id)
    due = conn.execute(
        select(keys_view.c.subject_id, keys_view.c.org_id, subject_keys.c.lookup)
        .select_from(with_keys)
        .where(ended < ended_before)
        .order_by(ended)
        .limit(limit)
    ).all()
    lookups = {row.lookup for row in due if row.lookup is not None}
    busy = set()
    if lookups:
        busy = {
            (row.org_id, row.lookup)
            for row in conn.execute(
                select(subject_keys.c.org_id, subject_keys.c.lookup)
                .select_from(with_keys)
                .where(subject_keys.c.lookup.in_(lookups), or_(ended.is_(None), ended >= ended_before))
                .distinct()
            )
        }
    return [(row.subject_id, row.org_id) for row in due if (row.org_id, row.lookup) not in busy]
