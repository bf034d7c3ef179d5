"""The assessment's fields are defined once (`events.model.AssessmentDetails`); the event, the
read row and its table, and the API's request and response schemas follow that definition.
These tests fail when one of them stops following it. (The migrations are checked against the
tables in tests/integration/test_migrations.py, the published documents against the events in
tests/integration/test_event_contract.py.)"""

from __future__ import annotations

import dataclasses
import uuid

from api.schemas import AssessmentSchema, CreateAssessmentSchema, StrictInteger, _fields_of, _request_field
from events.model import AssessmentCreated, AssessmentDetails, rules
from events.sql.types import columns_of
from projections.assessments import AssessmentRow
from projections.tables import ASSESSMENTS_VIEW

DETAILS = [f.name for f in dataclasses.fields(AssessmentDetails)]


def names(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def test_the_creation_event_carries_every_field_between_its_id_and_its_time():
    assert names(AssessmentCreated) == ["assessment_id", "org_id", *DETAILS, "created_at"]


def test_the_read_row_has_every_field_between_its_identity_and_its_times():
    assert names(AssessmentRow) == ["id", "org_id", *DETAILS, "created_at", "updated_at", "deleted_at"]


def test_the_table_has_a_column_for_every_field_of_the_row_and_its_version():
    columns = [column.name for column in ASSESSMENTS_VIEW.columns]
    assert columns == [*names(AssessmentRow), "version"]
    for field, hint in zip(
        dataclasses.fields(AssessmentRow), AssessmentRow.__annotations__.values(), strict=False
    ):
        del hint  # the annotations of the bases are checked through the columns below
        assert ASSESSMENTS_VIEW.c[field.name].nullable == (field.name in NULLABLE), field.name


NULLABLE = {"repo_url", "time_limit_minutes", "issue_id", "rubric_id", "deleted_at"}


def test_the_request_schema_takes_exactly_the_fields():
    assert sorted(CreateAssessmentSchema().fields) == sorted(DETAILS)


def test_the_response_shows_every_field_of_the_row_but_its_deletion():
    assert list(AssessmentSchema().fields) == [n for n in names(AssessmentRow) if n != "deleted_at"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class WithANewField(AssessmentDetails):
    seniority: int | None = dataclasses.field(default=None, metadata=rules(minimum=1, maximum=5))


def test_a_new_field_of_the_definition_reaches_the_request_schema_and_the_table_unasked():
    requested = _fields_of(WithANewField, _request_field)
    assert isinstance(requested["seniority"], StrictInteger)
    assert requested["seniority"].allow_none and requested["seniority"].load_default is None
    (column,) = [c for c in columns_of(WithANewField) if c.name == "seniority"]
    assert column.nullable


def test_a_rule_becomes_the_input_fields_validation():
    requested = _fields_of(AssessmentDetails, _request_field)
    assert requested["expires_in_days"].deserialize(365) == 365
    assert requested["title"].required and not requested["title"].allow_none
    assert isinstance(requested["rubric_id"].deserialize(str(uuid.uuid4())), uuid.UUID)
