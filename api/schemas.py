"""Request and response schemas. Python names are snake_case; the wire is camelCase."""

from __future__ import annotations

import dataclasses
import numbers
import types
import typing
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime
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
from events.model import AssessmentDetails, Rules
from projections import queries
from projections.assessments import AssessmentRow

MAX_KEYS = 50
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


NO_NUL = Pattern(text.NO_NUL_PATTERN, error=text.NUL_MESSAGE)


def _rules(name: str) -> Rules:
    (found,) = [f for f in dataclasses.fields(AssessmentDetails) if f.name == name]
    return found.metadata["rules"]


URL_DESCRIPTION = (
    "An absolute http(s) URL: a host with a top-level domain, `localhost` or an IP "
    "address, an optional port, then no space or invisible character. No user or password."
)


def _request_field(field: dataclasses.Field, hint: Any) -> fields.Field:
    """The input field for one of the domain's fields, from its type and `Rules`."""
    rules: Rules = field.metadata.get("rules") or Rules()
    kind, optional = _unwrapped(hint)
    options: dict[str, Any] = {"allow_none": True} if optional else {}
    if field.default is dataclasses.MISSING:
        options["required"] = True
    else:
        options["load_default"] = field.default
    if kind is int:
        return StrictInteger(validate=validate.Range(rules.minimum, rules.maximum), **options)
    if kind is uuid.UUID:
        return fields.UUID(**options)
    if rules.url:
        return fields.String(
            validate=[
                validate.Length(1, rules.max_length),
                Pattern(text.http_url_pattern(), error="Not a valid http(s) URL."),
            ],
            metadata={"description": URL_DESCRIPTION},
            **options,
        )
    if rules.visible:
        return Text(rules.max_length, **options)
    return fields.String(validate=[validate.Length(max=rules.max_length), NO_NUL], **options)


def _response_field(hint: Any) -> fields.Field:
    """The output field for a field of a read row, from its type."""
    kind, optional = _unwrapped(hint)
    options = {"allow_none": True} if optional else {}
    return _OUTPUT_FIELDS[kind](**options)


_OUTPUT_FIELDS = {str: fields.String, int: fields.Integer, uuid.UUID: fields.UUID, datetime: Timestamp}


def _unwrapped(hint: Any) -> tuple[type, bool]:
    """`X | None` as (X, True); `X` as (X, False)."""
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    (kind,) = [option for option in options if option is not type(None)]
    return kind, type(None) in options


def _fields_of(cls: type, make: Callable[..., fields.Field], exclude: frozenset[str] = frozenset()):
    hints = typing.get_type_hints(cls)
    return {f.name: make(f, hints[f.name]) for f in dataclasses.fields(cls) if f.name not in exclude}


#: Every field of `AssessmentDetails`, as its `Rules` say.
_AssessmentDetailsSchema = CamelSchema.from_dict(
    _fields_of(AssessmentDetails, _request_field), name="AssessmentDetailsSchema"
)


class CreateAssessmentSchema(_AssessmentDetailsSchema):
    """The details, except that `taskBrief` may be left out when `issueId` names a catalogue
    issue (whose brief the service uses)."""

    task_brief = fields.String(
        validate=[validate.Length(max=_rules("task_brief").max_length), NO_NUL],
        allow_none=True,
        metadata={
            "description": "Required, with at least one visible character, unless `issueId` is given; "
            "then the issue's brief is used and this one ignored. No NUL."
        },
    )

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


class EraseQuerySchema(CamelSchema):
    class Meta:
        unknown = RAISE

    email = fields.Email(required=True, validate=validate.Length(max=MAX_EMAIL))


class IssueSchema(CamelSchema):
    id = fields.String()
    title = fields.String()
    repo_url = fields.String()
    issue_url = fields.String()
    task_brief = fields.String()
    language = fields.String()
    difficulty = fields.String()
    labels = fields.List(fields.String())


#: An assessment as the API shows it: every field of its read row but `deleted_at` (a deleted
#: assessment is never shown).
AssessmentSchema = CamelSchema.from_dict(
    _fields_of(AssessmentRow, lambda _f, hint: _response_field(hint), frozenset({"deleted_at"})),
    name="AssessmentSchema",
)


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
    #: Only on the keys of an erased candidate (true): their email and name are gone for good.
    erased = fields.Boolean()
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
    if isinstance(field, fields.Boolean):
        return bool
    if isinstance(field, fields.Integer):
        return int
    if isinstance(field, fields.Nested) and not field.many:
        return compile_dump(field.schema)
    if isinstance(field, fields.List) and isinstance(field.inner, fields.String):
        return lambda values: [None if v is None else str(v) for v in values]
    raise TypeError(f"compile_dump does not know {type(field).__name__} fields")
