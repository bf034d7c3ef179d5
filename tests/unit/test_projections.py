"""Pure projection functions: rows from events, key status in time, grouping and folding."""

from __future__ import annotations

import copy
import json
import uuid
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from events.candidate import ACTIVE, COMPLETED, EXPIRED, PENDING
from events.model import RecordedEvent
from events.sql.catalogue import REQUIRED, InvalidCatalogue, parse_catalogue
from projections import projector
from projections.assessments import AssessmentRow, AssessmentsProjection, evolve_row, row_from_created
from projections.candidate_keys import CandidateKeysProjection, KeyRow, evolve_keys, fold_keys
from projections.projector import Projection, Tracked, by_stream, fold_new
from projections.tables import metadata as schema
from tests.unit.builders import NOW, created, deleted, issued, recorded, revoked

CATALOGUE = Path(__file__).resolve().parents[2] / "data" / "oss-issues.json"


# --- assessments -------------------------------------------------------------------------------


def test_a_created_assessment_becomes_a_row_updated_when_created():
    event = created()
    assert evolve_row(event, None) == AssessmentRow(
        id=event.assessment_id,
        org_id=event.org_id,
        title=event.title,
        role=event.role,
        task_brief=event.task_brief,
        repo_url=event.repo_url,
        time_limit_minutes=event.time_limit_minutes,
        expires_in_days=event.expires_in_days,
        issue_id=event.issue_id,
        rubric_id=event.rubric_id,
        created_at=NOW,
        updated_at=NOW,
        deleted_at=None,
    )
    assert row_from_created(event) == evolve_row(event, None)


def test_a_deleted_assessment_keeps_its_row_with_deleted_at_set():
    first = created()
    gone = deleted(first, at=NOW + timedelta(hours=3))
    row = evolve_row(gone, row_from_created(first))
    assert row == replace(row_from_created(first), deleted_at=gone.deleted_at, updated_at=gone.deleted_at)


def test_a_deletion_without_a_row_leaves_no_row():
    first = created()
    assert evolve_row(deleted(first), None) is None


@pytest.mark.parametrize("kind", ["issued", "revoked"])
def test_key_events_leave_the_assessment_row_unchanged(kind: str):
    first = created()
    key = issued(first)
    event = key if kind == "issued" else revoked(key)
    row = row_from_created(first)
    assert evolve_row(event, row) == row


# --- candidate keys ----------------------------------------------------------------------------


def test_an_issued_key_becomes_a_key_row():
    first = created()
    key = issued(first)
    keys = evolve_keys(key, {})
    assert dict(keys) == {
        key.key_id: KeyRow(
            id=key.key_id,
            assessment_id=first.assessment_id,
            org_id=first.org_id,
            candidate_email=key.candidate_email,
            candidate_name=key.candidate_name,
            org_name=key.org_name,
            expires_at=key.expires_at,
            created_at=key.issued_at,
        )
    }


def test_a_revoked_key_records_when_and_why():
    first = created()
    key = issued(first)
    later = NOW + timedelta(hours=1)
    [row] = fold_keys([key, revoked(key, reason="assessment_deleted", at=later)])
    assert row.revoked_at == later
    assert row.revoke_reason == "assessment_deleted"


def test_revoking_one_key_leaves_the_others_alone():
    first = created()
    one, two = issued(first), issued(first)
    rows = {row.id: row for row in fold_keys([one, two, revoked(one)])}
    assert rows[one.key_id].revoked_at is not None
    assert rows[two.key_id].revoked_at is None


def test_assessment_events_leave_the_keys_unchanged():
    first = created()
    keys = evolve_keys(issued(first), {})
    assert evolve_keys(first, keys) == keys
    assert evolve_keys(deleted(first), keys) == keys


def test_fold_keys_lists_keys_in_issue_order():
    first = created()
    keys = [issued(first) for _ in range(7)]
    assert [row.id for row in fold_keys([first, *keys])] == [key.key_id for key in keys]


def key_row(**overrides) -> KeyRow:
    [row] = fold_keys([issued(created(), expires_at=NOW + timedelta(days=7))])
    return replace(row, **overrides)


def test_a_fresh_key_is_pending_before_it_expires():
    assert key_row().status_at(NOW + timedelta(days=7) - timedelta(milliseconds=1)) == PENDING


def test_a_key_is_expired_at_its_expiry_time_and_after():
    row = key_row()
    assert row.status_at(row.expires_at) == EXPIRED
    assert row.status_at(row.expires_at + timedelta(days=30)) == EXPIRED


def test_a_redeemed_key_is_active_until_it_expires():
    row = key_row(redeemed_at=NOW + timedelta(hours=1))
    assert row.status_at(NOW + timedelta(hours=2)) == ACTIVE
    assert row.status_at(row.expires_at) == EXPIRED


def test_completed_wins_over_expiry():
    row = key_row(redeemed_at=NOW + timedelta(hours=1), completed_at=NOW + timedelta(hours=2))
    assert row.status_at(NOW + timedelta(hours=3)) == COMPLETED
    assert row.status_at(row.expires_at + timedelta(days=1)) == COMPLETED


# --- projector ---------------------------------------------------------------------------------


class ListProjection(Projection[tuple]):
    """A pure fake: its state is the tuple of event versions it has seen."""

    name = "versions"

    def initial(self, stream_id: uuid.UUID) -> tuple:
        return ()

    def evolve(self, value: tuple, recorded: RecordedEvent) -> tuple:
        return (*value, recorded.stream_version)


def stream(length: int) -> list[RecordedEvent]:
    first = created()
    events = [first] + [issued(first) for _ in range(length - 1)]
    return [recorded(event, version) for version, event in enumerate(events, start=1)]


def test_by_stream_groups_events_by_stream_in_version_order():
    one, two = stream(3), stream(2)
    mixed = [one[2], two[1], one[0], two[0], one[1]]
    assert by_stream(mixed) == {one[0].stream_id: one, two[0].stream_id: two}


def test_by_stream_keeps_one_event_per_version():
    events = stream(2)
    redelivered = replace(events[1])
    grouped = by_stream([events[0], events[1], redelivered, events[0]])
    assert [e.stream_version for e in grouped[events[0].stream_id]] == [1, 2]


def test_by_stream_of_nothing_is_empty():
    assert by_stream([]) == {}


def test_fold_new_applies_events_in_order_and_takes_the_last_version():
    events = stream(4)
    start = Tracked(events[0].stream_id, 1, (1,))
    assert fold_new(ListProjection(), start, events[1:]) == Tracked(events[0].stream_id, 4, (1, 2, 3, 4))


def test_fold_new_leaves_the_given_state_untouched():
    events = stream(3)
    start = Tracked(events[0].stream_id, 0, ())
    before = copy.deepcopy(start)
    fold_new(ListProjection(), start, events)
    assert start == before


def test_fold_new_of_no_events_keeps_the_version():
    stream_id = uuid.uuid4()
    assert fold_new(ListProjection(), Tracked(stream_id, 5, (5,)), []) == Tracked(stream_id, 5, (5,))


@pytest.mark.parametrize(
    ("version", "versions", "contiguous"),
    [
        (0, [1, 2, 3], True),
        (2, [3], True),
        (2, [3, 4], True),
        (2, [4], False),
        (2, [3, 5], False),
        (2, [2, 3], False),
        (0, [2, 1], False),
    ],
)
def test_contiguous_means_the_next_versions_without_gaps(version, versions, contiguous):
    events = {e.stream_version: e for e in stream(5)}
    assert projector._contiguous(version, [events[v] for v in versions]) is contiguous


# --- catalogue ---------------------------------------------------------------------------------


def shipped() -> list[dict]:
    return json.loads(CATALOGUE.read_text(encoding="utf-8"))


def an_issue(**overrides) -> dict:
    return {**shipped()[0], **overrides}


def test_the_shipped_catalogue_parses():
    rows = parse_catalogue(shipped())
    assert len(rows) >= 8
    assert len({row["id"] for row in rows}) == len(rows)


def test_a_catalogue_row_uses_python_names():
    issue = an_issue()
    [row] = parse_catalogue([issue])
    assert row == {
        "id": issue["id"],
        "title": issue["title"],
        "repo_url": issue["repoUrl"],
        "issue_url": issue["issueUrl"],
        "task_brief": issue["taskBrief"],
        "language": issue["language"],
        "difficulty": issue["difficulty"],
        "labels": issue["labels"],
    }


def test_a_catalogue_may_be_wrapped_in_an_issues_object():
    assert parse_catalogue({"issues": shipped()}) == parse_catalogue(shipped())


@pytest.mark.parametrize("field", REQUIRED)
def test_a_missing_required_field_is_an_invalid_catalogue(field: str):
    issue = an_issue()
    del issue[field]
    with pytest.raises(InvalidCatalogue, match=field):
        parse_catalogue([issue])


@pytest.mark.parametrize("value", ["", None, 5])
def test_an_empty_or_non_string_required_field_is_an_invalid_catalogue(value):
    with pytest.raises(InvalidCatalogue, match="title"):
        parse_catalogue([an_issue(title=value)])


@pytest.mark.parametrize("labels", [["bug", 5], "bug", [None]])
def test_labels_must_be_a_list_of_strings(labels):
    with pytest.raises(InvalidCatalogue, match="labels"):
        parse_catalogue([an_issue(labels=labels)])


def test_labels_may_be_left_out():
    issue = an_issue()
    del issue["labels"]
    assert parse_catalogue([issue])[0]["labels"] == []


@pytest.mark.parametrize("doc", [None, "issues", 5, {"issues": 5}, {}])
def test_a_document_that_is_not_a_list_of_issues_is_an_invalid_catalogue(doc):
    with pytest.raises(InvalidCatalogue):
        parse_catalogue(doc)


@pytest.mark.parametrize("entry", ["flask-5628", None, ["id"]])
def test_an_entry_that_is_not_an_object_is_an_invalid_catalogue(entry):
    with pytest.raises(InvalidCatalogue):
        parse_catalogue([an_issue(), entry])


# --- a projection reads back what it writes --------------------------------------------------


def rows_read_back(projection, states) -> list[list[dict]]:
    """What reading `projection.sources` would return after writing `projection.rows(states)`."""
    written = projection.rows(states)
    return [list(written.get(table, [])) for table, _ in projection.sources]


@pytest.mark.parametrize(
    "events_of",
    [
        lambda first: [first],
        lambda first: [first, deleted(first)],
    ],
    ids=["created", "deleted"],
)
def test_the_assessments_projection_reads_back_the_state_it_wrote(events_of):
    projection = AssessmentsProjection()
    first = created()
    events = [recorded(event, n) for n, event in enumerate(events_of(first), start=1)]
    state = fold_new(projection, Tracked(events[0].stream_id, 0, None), events)
    assert projection.states(rows_read_back(projection, [state])) == {state.stream_id: state}


def test_the_keys_projection_reads_back_the_state_it_wrote_including_a_stream_without_keys():
    projection = CandidateKeysProjection()
    with_keys, without = created(), created()
    key = issued(with_keys)
    one = fold_new(
        projection,
        Tracked(with_keys.assessment_id, 0, projection.initial(with_keys.assessment_id)),
        [recorded(e, n) for n, e in enumerate([with_keys, key, issued(with_keys), revoked(key)], start=1)],
    )
    other = fold_new(
        projection,
        Tracked(without.assessment_id, 0, projection.initial(without.assessment_id)),
        [recorded(without, 1)],
    )
    read = projection.states(rows_read_back(projection, [one, other]))
    assert read == {one.stream_id: one, other.stream_id: other}


def test_each_projection_folds_a_stream_as_its_evolve_function_does():
    first = created()
    key = issued(first)
    events = [first, key, issued(first), revoked(key), deleted(first)]
    stream = [recorded(event, n) for n, event in enumerate(events, start=1)]
    keys, assessments = CandidateKeysProjection(), AssessmentsProjection()

    folded_keys = fold_new(keys, Tracked(first.assessment_id, 0, keys.initial(first.assessment_id)), stream)
    folded_row = fold_new(
        assessments, Tracked(first.assessment_id, 0, assessments.initial(first.assessment_id)), stream
    )

    assert list(folded_keys.value.values()) == fold_keys(events)
    assert folded_row.value == evolve_row(events[-1], row_from_created(first))
    assert assessments.initial(first.assessment_id) is None
    assert dict(keys.initial(first.assessment_id)) == {}


# --- where a projection keeps its state ---------------------------------------------------------


def layout(projection) -> dict:
    """By name: the tables a projection writes, where it keeps each stream's version, and where
    it reads a stream's state back from."""
    versions = projection.versions
    return {
        "tables": [table.name for table in projection.tables],
        "versions": [(column.table.name, column.name) for column in (versions.stream_id, versions.version)],
        "versions table": versions.table.name,
        "sources": [(table.name, column.table.name, column.name) for table, column in projection.sources],
    }


def expected_layout(projection_name: str, suffix: str = "") -> dict:
    """The layout of each projection, its tables' names ending in `suffix`."""
    if projection_name == "assessments":
        view = "assessments_view" + suffix
        return {
            "tables": [view],
            "versions": [(view, "id"), (view, "version")],
            "versions table": view,
            "sources": [(view, view, "id")],
        }
    view, versions = "candidate_keys_view" + suffix, "candidate_keys_versions" + suffix
    return {
        "tables": [view, versions],
        "versions": [(versions, "stream_id"), (versions, "version")],
        "versions table": versions,
        "sources": [(versions, versions, "stream_id"), (view, view, "assessment_id")],
    }


PROJECTIONS = [AssessmentsProjection, CandidateKeysProjection]


@pytest.mark.parametrize("projection", PROJECTIONS, ids=lambda p: p.name)
def test_a_projection_keeps_its_versions_and_reads_its_state_in_its_own_tables(projection):
    assert layout(projection()) == expected_layout(projection.name)


@pytest.mark.parametrize("projection", PROJECTIONS, ids=lambda p: p.name)
def test_a_projection_renamed_for_a_rebuild_does_all_that_in_fresh_tables_of_the_same_shape(projection):
    live = projection()

    fresh = live.renamed("_fresh")

    assert layout(fresh) == expected_layout(projection.name, "_fresh")
    assert [t.columns.keys() for t in fresh.tables] == [t.columns.keys() for t in live.tables]
    assert {t.metadata for t in fresh.tables} != {t.metadata for t in live.tables}


@pytest.mark.parametrize("projection", PROJECTIONS, ids=lambda p: p.name)
def test_a_rebuild_can_rename_again_and_leaves_the_services_schema_alone(projection):
    """A second rebuild in one process (the worker's, a test's) gets fresh tables again; the
    schema that `assessments dev` creates never holds a rebuild's tables."""
    first, again = projection().renamed("_fresh"), projection().renamed("_fresh")

    assert [t.name for t in again.tables] == [t.name for t in first.tables]
    assert not [name for name in schema.tables if name.endswith("_fresh")]
