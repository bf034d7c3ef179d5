"""Request and response schemas: camelCase on the wire, every error keyed by the field's name."""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import MISSING
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from marshmallow import ValidationError, fields

from api import text
from api.openapi.components import EMAIL_PATTERN
from api.schemas import (
    AssessmentSchema,
    AssessmentWithIssueSchema,
    CandidateKeySchema,
    CreateAssessmentSchema,
    IssueKeysSchema,
    IssueSchema,
    compile_dump,
)
from events.model import AssessmentDetails
from projections.assessments import AssessmentRow
from projections.candidate_keys import KeyRow
from tests.unit.builders import NOW

MINIMAL = {"title": "Backend take-home", "role": "Senior Backend Engineer", "taskBrief": "Fix the bug."}


def errors(schema, body: dict) -> dict:
    with pytest.raises(ValidationError) as raised:
        schema.load(body)
    return raised.value.messages


# --- CreateAssessmentSchema --------------------------------------------------------------------


def test_a_minimal_body_loads_with_the_definitions_defaults():
    """The contract's defaults (`expiresInDays` 7, the optional fields null), taken from the
    fields' one definition so that a field added there needs no change here."""
    defaults = {f.name: f.default for f in dataclasses.fields(AssessmentDetails) if f.default is not MISSING}
    assert {name: defaults[name] for name in ("repo_url", "time_limit_minutes", "expires_in_days")} == {
        "repo_url": None,
        "time_limit_minutes": None,
        "expires_in_days": 7,
    }
    assert defaults["issue_id"] is None and defaults["rubric_id"] is None
    assert CreateAssessmentSchema().load(MINIMAL) == {
        "title": "Backend take-home",
        "role": "Senior Backend Engineer",
        "task_brief": "Fix the bug.",
        **defaults,
    }


def test_a_full_body_loads_into_python_names_and_types():
    rubric = uuid.uuid4()
    body = {
        **MINIMAL,
        "repoUrl": "https://github.com/pallets/flask",
        "timeLimitMinutes": 7 * 24 * 60,
        "expiresInDays": 365,
        "issueId": "flask-5628-env-file-precedence",
        "rubricId": str(rubric),
    }
    loaded = CreateAssessmentSchema().load(body)
    assert loaded["repo_url"] == "https://github.com/pallets/flask"
    assert loaded["time_limit_minutes"] == 10080
    assert loaded["expires_in_days"] == 365
    assert loaded["issue_id"] == "flask-5628-env-file-precedence"
    assert loaded["rubric_id"] == rubric


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("title", ""),
        ("title", "   "),
        ("title", "x" * 256),
        ("title", None),
        ("role", ""),
        ("timeLimitMinutes", 0),
        ("timeLimitMinutes", 10081),
        ("timeLimitMinutes", "5"),
        ("timeLimitMinutes", 1.5),
        ("timeLimitMinutes", True),
        ("expiresInDays", 0),
        ("expiresInDays", 366),
        ("expiresInDays", True),
        ("expiresInDays", "7"),
        ("repoUrl", "ftp://x"),
        ("repoUrl", "not a url"),
        ("rubricId", "nope"),
    ],
)
def test_an_invalid_field_is_reported_under_its_camel_case_name(field: str, value: object):
    assert list(errors(CreateAssessmentSchema(), {**MINIMAL, field: value})) == [field]


@pytest.mark.parametrize(
    ("field", "value"),
    [("title", "x" * 255), ("timeLimitMinutes", 1), ("timeLimitMinutes", 10080), ("expiresInDays", 1)],
)
def test_values_on_the_bounds_are_accepted(field: str, value: object):
    CreateAssessmentSchema().load({**MINIMAL, field: value})


@pytest.mark.parametrize("field", ["title", "role"])
def test_title_and_role_are_required(field: str):
    body = {k: v for k, v in MINIMAL.items() if k != field}
    assert list(errors(CreateAssessmentSchema(), body)) == [field]


def test_an_unknown_field_is_named_in_the_error():
    assert list(errors(CreateAssessmentSchema(), {**MINIMAL, "timeLimit": 30})) == ["timeLimit"]


def test_snake_case_names_are_unknown_fields():
    assert "time_limit_minutes" in errors(CreateAssessmentSchema(), {**MINIMAL, "time_limit_minutes": 30})


@pytest.mark.parametrize("brief", [None, "", "   "])
def test_task_brief_is_required_without_an_issue(brief):
    body = {**MINIMAL, "taskBrief": brief}
    assert list(errors(CreateAssessmentSchema(), body)) == ["taskBrief"]


def test_a_missing_task_brief_without_an_issue_is_reported_on_task_brief():
    body = {k: v for k, v in MINIMAL.items() if k != "taskBrief"}
    assert list(errors(CreateAssessmentSchema(), body)) == ["taskBrief"]


def test_an_issue_id_without_a_task_brief_is_fine():
    body = {"title": "T", "role": "R", "issueId": "flask-5628-env-file-precedence"}
    assert CreateAssessmentSchema().load(body)["issue_id"] == "flask-5628-env-file-precedence"


# --- IssueKeysSchema ---------------------------------------------------------------------------


def test_a_count_alone_loads_with_no_candidates():
    assert IssueKeysSchema().load({"count": 3}) == {
        "count": 3,
        "candidate_emails": None,
        "candidate_names": None,
        "org_name": None,
    }


@pytest.mark.parametrize("count", [1, 50])
def test_count_accepts_one_to_fifty(count: int):
    assert IssueKeysSchema().load({"count": count})["count"] == count


@pytest.mark.parametrize(
    "count", [0, 51, -1, "3", 2.0, 50.5, 1.5, float("inf"), float("nan"), 1e300, True, None]
)
def test_count_must_be_an_integer_from_one_to_fifty(count):
    assert list(errors(IssueKeysSchema(), {"count": count})) == ["count"]


def test_count_is_required():
    assert list(errors(IssueKeysSchema(), {})) == ["count"]


def test_candidate_emails_pair_with_names_by_position():
    body = {"count": 2, "candidateEmails": ["a@example.com", "b@example.com"], "candidateNames": ["A", "B"]}
    loaded = IssueKeysSchema().load({**body, "orgName": "Acme"})
    assert loaded["candidate_emails"] == ["a@example.com", "b@example.com"]
    assert loaded["candidate_names"] == ["A", "B"]
    assert loaded["org_name"] == "Acme"


@pytest.mark.parametrize("emails", [["a@example.com"], ["a@example.com"] * 3, []])
def test_candidate_emails_must_have_exactly_count_entries(emails):
    assert list(errors(IssueKeysSchema(), {"count": 2, "candidateEmails": emails})) == ["candidateEmails"]


def test_candidate_emails_must_be_valid_emails():
    body = {"count": 2, "candidateEmails": ["a@example.com", "not-an-email"]}
    assert list(errors(IssueKeysSchema(), body)) == ["candidateEmails"]


def test_candidate_names_need_candidate_emails():
    assert list(errors(IssueKeysSchema(), {"count": 1, "candidateNames": ["A"]})) == ["candidateNames"]


def test_candidate_names_must_match_candidate_emails_in_length():
    body = {"count": 2, "candidateEmails": ["a@example.com", "b@example.com"], "candidateNames": ["A"]}
    assert list(errors(IssueKeysSchema(), body)) == ["candidateNames"]


def test_an_unknown_issue_keys_field_is_named_in_the_error():
    assert list(errors(IssueKeysSchema(), {"count": 1, "emails": []})) == ["emails"]


# --- AssessmentSchema --------------------------------------------------------------------------


def row(**overrides) -> dict:
    fields = {
        "id": uuid.uuid4(),
        "org_id": "org-a",
        "title": "Backend take-home",
        "role": "Senior Backend Engineer",
        "task_brief": "Fix the bug.",
        "repo_url": None,
        "time_limit_minutes": 90,
        "expires_in_days": 7,
        "issue_id": None,
        "rubric_id": None,
        "created_at": NOW,
        "updated_at": NOW + timedelta(milliseconds=250),
    }
    return {**fields, **overrides}


def test_an_assessment_dumps_in_camel_case():
    value = row()
    assert AssessmentSchema().dump(value) == {
        "id": str(value["id"]),
        "orgId": "org-a",
        "title": "Backend take-home",
        "role": "Senior Backend Engineer",
        "taskBrief": "Fix the bug.",
        "repoUrl": None,
        "timeLimitMinutes": 90,
        "expiresInDays": 7,
        "issueId": None,
        "rubricId": None,
        "createdAt": "2026-04-01T09:00:00.000Z",
        "updatedAt": "2026-04-01T09:00:00.250Z",
    }


def test_assessment_timestamps_are_utc_with_z_and_milliseconds():
    tokyo = timezone(timedelta(hours=9))
    created = datetime(2026, 4, 1, 18, 0, 0, 999_999, tzinfo=tokyo)
    dumped = AssessmentSchema().dump(row(created_at=created, updated_at=datetime(2026, 4, 2, tzinfo=UTC)))
    assert dumped["createdAt"] == "2026-04-01T09:00:00.999Z"
    assert dumped["updatedAt"] == "2026-04-02T00:00:00.000Z"


def test_an_assessment_rubric_id_dumps_as_a_uuid_string():
    rubric = uuid.uuid4()
    assert AssessmentSchema().dump(row(rubric_id=rubric))["rubricId"] == str(rubric)


# --- compiled dumps: what marshmallow's dump gives, faster --------------------------------------

ISSUE = {
    "id": "django-12345",
    "title": "Fix the admin",
    "repo_url": "https://github.com/django/django",
    "issue_url": "https://code.djangoproject.com/ticket/12345",
    "task_brief": "Make it work.",
    "language": "Python",
    "difficulty": "medium",
    "labels": ["orm", "bug"],
}


def assessment(**overrides) -> AssessmentRow:
    fields = {
        "id": uuid.uuid4(),
        "org_id": "org-1",
        "title": "Backend take-home",
        "role": "Senior Backend Engineer",
        "task_brief": "Fix the bug.",
        "repo_url": "https://github.com/acme/api",
        "time_limit_minutes": 90,
        "expires_in_days": 7,
        "issue_id": "django-12345",
        "rubric_id": uuid.uuid4(),
        "created_at": NOW,
        "updated_at": NOW + timedelta(seconds=1),
    }
    return AssessmentRow(**{**fields, **overrides})


def key_row(**overrides) -> dict:
    row = KeyRow(
        id=uuid.uuid4(),
        assessment_id=uuid.uuid4(),
        org_id="org-1",
        candidate_email="ada@example.com",
        candidate_name="Ada",
        org_name=None,
        expires_at=NOW + timedelta(days=7),
        created_at=NOW,
        redeemed_at=None,
    )
    return {**vars(row), "key": "PST-ABCD-EFGH", "status": "pending", **overrides}


NO_OPTIONALS = {"repo_url": None, "time_limit_minutes": None, "issue_id": None, "rubric_id": None}
SAMPLES = [
    pytest.param(AssessmentSchema(), assessment(), id="assessment"),
    pytest.param(AssessmentSchema(), assessment(**NO_OPTIONALS), id="assessment-nones"),
    pytest.param(AssessmentWithIssueSchema(), {**vars(assessment()), "issue": ISSUE}, id="with-issue"),
    pytest.param(
        AssessmentWithIssueSchema(), {**vars(assessment(**NO_OPTIONALS)), "issue": None}, id="no-issue"
    ),
    pytest.param(CandidateKeySchema(), key_row(), id="key"),
    pytest.param(CandidateKeySchema(), key_row(redeemed_at=NOW, candidate_email=None), id="key-redeemed"),
    pytest.param(IssueSchema(), ISSUE, id="issue"),
    pytest.param(IssueSchema(), {**ISSUE, "labels": []}, id="issue-no-labels"),
]


@pytest.mark.parametrize(("schema", "obj"), SAMPLES)
def test_a_compiled_dump_gives_what_marshmallow_gives(schema, obj):
    assert compile_dump(schema)(obj) == schema.dump(obj)
    assert list(compile_dump(schema)(obj)) == list(schema.dump(obj)), "the same key order"


def test_a_missing_attribute_is_left_out_as_marshmallow_does():
    partial = {k: v for k, v in ISSUE.items() if k != "labels"}
    assert compile_dump(IssueSchema())(partial) == IssueSchema().dump(partial)


def test_a_field_type_it_does_not_know_is_refused_when_compiled():
    class WithFloat(AssessmentSchema):
        score = fields.Float()

    with pytest.raises(TypeError, match="Float"):
        compile_dump(WithFloat())


# --- the OpenAPI document's patterns against the code ------------------------------------------

PROPERTIES = settings(max_examples=200, derandomize=True, database=None, deadline=None)


@PROPERTIES
@given(st.from_regex(EMAIL_PATTERN, fullmatch=True).filter(lambda email: len(email) <= 254))
def test_every_email_the_document_allows_is_accepted(email: str):
    body = {"count": 1, "candidateEmails": [email]}
    assert IssueKeysSchema().load(body)["candidate_emails"] == [email]


@PROPERTIES
@given(st.text())
def test_the_blank_rule_and_the_documents_pattern_agree_on_any_text(value: str):
    documented = Draft202012Validator({"pattern": text.visible_text_pattern()}).is_valid(value)
    assert documented == (not text.is_blank(value))


@PROPERTIES
@given(st.from_regex(text.http_url_pattern(), fullmatch=True).filter(lambda url: len(url) <= 2048))
def test_every_repo_url_the_document_allows_is_accepted(url: str):
    assert CreateAssessmentSchema().load({**MINIMAL, "repoUrl": url})["repo_url"] == url
