"""Request and response schemas. Python names are snake_case; the wire is camelCase."""

from __future__ import annotations

import numbers
from collections.abc import Callable, Mapping
from typing import Any

from marshmallow import (
    RAISE,
    Schema,
    ValidationError,
    fields,
    validate,
    validates_schema,
)

from api import text
from events import codec
from projections import queries

MAX_TIME_LIMIT_MINUTES = 7 * 24 * 60
MAX_TASK_BRIEF = 50_000
MAX_KEYS = 50
MAX_URL = 2048
#: RFC 5321's limit on a forward path.
MAX_EMAIL = 254
#: History versions are compared in Python; the bound only keeps the document honest.
MAX_VERSION = 2**63 - 1


class CamelSchema(Schema):
    class Meta:
        unknown = RAISE

    def on_bind_field(self, field_name: str, field_obj: fields.Field) -> None:
        field_obj.data_key = codec.camel(field_obj.data_key or field_name)


class StrictInteger(fields.Integer):
    """A JSON integer and nothing else: not "5", not true, not 5.5, and not 5.0 either. JSON
    Schema counts 5.0 as an integer and cannot say otherwise, so the OpenAPI document says it
    in words (`STRICT_INTEGER_NOTE`); a client generated from the document declares the field
    an integer type and sends `5`."""

    def __init__(self, **kwargs: Any) -> None:
        metadata = kwargs.pop("metadata", {})
        note = metadata.get("description", "")
        metadata = {**metadata, "description": f"{note} {STRICT_INTEGER_NOTE}".strip()}
        super().__init__(strict=True, metadata=metadata, **kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise self.make_error("invalid")
        return super()._deserialize(value, attr, data, **kwargs)


#: What the document adds to every strict integer's description.
STRICT_INTEGER_NOTE = "Sent as a JSON integer literal (`5`, not `5.0`)."


class Timestamp(fields.Field):
    def _serialize(self, value, attr, obj, **kwargs):
        return None if value is None else codec.format_time(value)


class Pattern(validate.Regexp):
    """A regular expression the whole value must match. A `Regexp`, so that the OpenAPI
    document states the very same rule as its `pattern`; matched whole, because Python's `$`
    also matches before a final newline and JSON Schema's (ECMA-262's) does not."""

    def __call__(self, value: str) -> str:
        if self.regex.fullmatch(value) is None:
            raise ValidationError(self._format_error(value))
        return value


def NotBlank() -> Pattern:  # noqa: N802 - a validator factory
    """At least one visible character, and no NUL (see `api.text`)."""
    return Pattern(text.visible_text_pattern(), error=text.BLANK_MESSAGE)


TEXT_DESCRIPTION = (
    "At least one visible character: text of only spaces, zero-width or other invisible "
    "characters is blank. No NUL."
)


def Text(max_length: int, **kwargs: Any) -> fields.String:  # noqa: N802 - a field factory
    return fields.String(
        validate=[validate.Length(1, max_length), NotBlank()],
        metadata={"description": TEXT_DESCRIPTION},
        **kwargs,
    )


_NO_NUL = Pattern(text.NO_NUL_PATTERN, error=text.NUL_MESSAGE)


class CreateAssessmentSchema(CamelSchema):
    title = Text(255, required=True)
    role = Text(255, required=True)
    task_brief = fields.String(
        validate=[validate.Length(max=MAX_TASK_BRIEF), _NO_NUL],
        allow_none=True,
        metadata={
            "description": "Required, with at least one visible character, unless `issueId` is given; "
            "then the issue's brief is used and this one ignored. No NUL."
        },
    )
    repo_url = fields.String(
        validate=[
            validate.Length(1, MAX_URL),
            Pattern(text.http_url_pattern(), error="Not a valid http(s) URL."),
        ],
        allow_none=True,
        load_default=None,
        metadata={
            "description": "An absolute http(s) URL: a host with a top-level domain, `localhost` or an IP "
            "address, an optional port, then no space or invisible character. No user or password."
        },
    )
    time_limit_minutes = StrictInteger(
        validate=validate.Range(1, MAX_TIME_LIMIT_MINUTES), allow_none=True, load_default=None
    )
    expires_in_days = StrictInteger(validate=validate.Range(1, 365), load_default=7)
    issue_id = Text(255, allow_none=True, load_default=None)
    rubric_id = fields.UUID(allow_none=True, load_default=None)

    @validates_schema
    def _brief_or_issue(self, data: dict[str, Any], **_kwargs: Any) -> None:
        if data.get("issue_id") is None and text.is_blank(data.get("task_brief") or ""):
            raise ValidationError("Required unless issueId is given.", "taskBrief")


class ListQuerySchema(CamelSchema):
    class Meta:
        unknown = RAISE

    limit = fields.Integer(validate=validate.Range(1, 1000))
    after = fields.String(
        validate=Pattern(queries.CURSOR_PATTERN, error="Not a cursor this service returned.")
    )


class HistoryQuerySchema(CamelSchema):
    limit = fields.Integer(validate=validate.Range(1, 1000), load_default=100)
    after = fields.Integer(validate=validate.Range(0, MAX_VERSION), load_default=0)


class IssueSchema(CamelSchema):
    id = fields.String()
    title = fields.String()
    repo_url = fields.String()
    issue_url = fields.String()
    task_brief = fields.String()
    language = fields.String()
    difficulty = fields.String()
    labels = fields.List(fields.String())


class AssessmentSchema(CamelSchema):
    id = fields.UUID()
    org_id = fields.String()
    title = fields.String()
    role = fields.String()
    task_brief = fields.String()
    repo_url = fields.String(allow_none=True)
    time_limit_minutes = fields.Integer(allow_none=True)
    expires_in_days = fields.Integer()
    issue_id = fields.String(allow_none=True)
    rubric_id = fields.UUID(allow_none=True)
    created_at = Timestamp()
    updated_at = Timestamp()


class AssessmentWithIssueSchema(AssessmentSchema):
    issue = fields.Nested(IssueSchema, allow_none=True)


class IssueKeysSchema(CamelSchema):
    count = StrictInteger(required=True, validate=validate.Range(1, MAX_KEYS))
    candidate_emails = fields.List(
        fields.Email(validate=validate.Length(max=MAX_EMAIL)),
        allow_none=True,
        load_default=None,
        metadata={"description": "Exactly `count` addresses when given."},
    )
    candidate_names = fields.List(
        Text(255),
        allow_none=True,
        load_default=None,
        metadata={"description": "Only with `candidateEmails`, as many entries, paired by position."},
    )
    org_name = Text(255, allow_none=True, load_default=None)

    @validates_schema
    def _paired_lists(self, data: dict[str, Any], **_kwargs: Any) -> None:
        emails, names, count = data.get("candidate_emails"), data.get("candidate_names"), data.get("count")
        if emails is not None and count is not None and len(emails) != count:
            raise ValidationError(f"Must have exactly count ({count}) entries.", "candidateEmails")
        if names is not None and emails is None:
            raise ValidationError("Only allowed together with candidateEmails.", "candidateNames")
        if names is not None and len(names) != len(emails):
            raise ValidationError("Must have as many entries as candidateEmails.", "candidateNames")


class CandidateKeySchema(CamelSchema):
    id = fields.UUID()
    key = fields.String()
    assessment_id = fields.UUID()
    org_id = fields.String()
    candidate_email = fields.String(allow_none=True)
    candidate_name = fields.String(allow_none=True)
    status = fields.String()
    expires_at = Timestamp()
    redeemed_at = Timestamp(allow_none=True)
    completed_at = Timestamp(allow_none=True)
    created_at = Timestamp()


# --- dumping responses ----------------------------------------------------------------------

Dump = Callable[[Any], dict[str, Any]]


def compile_dump(schema: Schema) -> Dump:
    """A function that returns what `schema.dump(obj)` returns, for a response schema made of
    the few field types below, without marshmallow's per-field machinery: a dump costs about a
    tenth of a create's CPU in the API, and a list of 1,000 assessments a thousand dumps. The
    schema stays the one description of the response (and of the OpenAPI document); any other
    field type is refused here, at import, and a unit test compares both ways for every
    response schema."""
    plan = [(name, field.data_key or name, _converter(field)) for name, field in schema.dump_fields.items()]

    def dump(obj: Any) -> dict[str, Any]:
        if isinstance(obj, Mapping):
            found = ((key, obj.get(name, _MISSING), convert) for name, key, convert in plan)
        else:
            found = ((key, getattr(obj, name, _MISSING), convert) for name, key, convert in plan)
        return {
            key: None if value is None else convert(value)
            for key, value, convert in found
            if value is not _MISSING
        }

    return dump


_MISSING = object()


def _converter(field: fields.Field) -> Callable[[Any], Any]:
    if isinstance(field, Timestamp):
        return codec.format_time
    if isinstance(field, fields.UUID | fields.String):
        return str
    if isinstance(field, fields.Integer):
        return int
    if isinstance(field, fields.Nested) and not field.many:
        return compile_dump(field.schema)
    if isinstance(field, fields.List) and isinstance(field.inner, fields.String):
        return lambda values: [None if v is None else str(v) for v in values]
    raise TypeError(f"compile_dump does not know {type(field).__name__} fields")
