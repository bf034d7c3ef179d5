"""Events to JSON-ready dicts and back, with upcasting of old schema versions.

The stored and published `data` uses camelCase names, like the HTTP API, so downstream teams
see one vocabulary. Old events are never rewritten: an upcaster turns a stored version-N
payload into version N+1 when it is read, so the rest of the code only sees the newest shape.
"""

from __future__ import annotations

import dataclasses
import typing
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from functools import cache
from typing import Any

from events.keys import key_hint
from events.model import EVENT_TYPES, Event, RecordedEvent, StoredEvent

JsonDict = dict[str, Any]
Upcaster = Callable[[JsonDict], JsonDict]

#: (type name, version it reads) -> function returning the payload of the next version.
UPCASTERS: dict[tuple[str, int], Upcaster] = {}


class UnknownEventType(ValueError):
    """A stored or received event whose type this code does not know."""


class UndecodableEvent(ValueError):
    """A payload that does not fit its event type's schema."""


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def format_time(value: datetime) -> str:
    """ISO 8601 in UTC with millisecond precision and a `Z` suffix."""
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo is UTC else parsed.astimezone(UTC)


def _encode_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return format_time(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, tuple):
        return list(value)
    return value


@cache
def _field_types(cls: type[Event]) -> tuple[tuple[str, str, Any], ...]:
    hints = typing.get_type_hints(cls)
    return tuple((f.name, camel(f.name), hints[f.name]) for f in dataclasses.fields(cls))


@cache
def _defaults(cls: type[Event]) -> dict[str, Any]:
    """The payload values of the fields an older event may lack (those with a default): an
    optional field added later needs no new schema version (see `events.model`)."""
    return {
        camel(f.name): _encode_value(f.default)
        for f in dataclasses.fields(cls)
        if f.default is not dataclasses.MISSING
    }


def _decoder(kind: Any) -> Callable[[Any], Any]:
    """How to turn a JSON value into the field's type (None stays None)."""
    options = typing.get_args(kind) or (kind,)
    if datetime in options:
        return lambda value: None if value is None else parse_time(value)
    if uuid.UUID in options:
        return lambda value: None if value is None else uuid.UUID(value)
    if typing.get_origin(kind) is tuple:
        return lambda value: None if value is None else tuple(value)
    return lambda value: value


@cache
def _decoders(cls: type[Event]) -> tuple[tuple[str, str, Callable[[Any], Any]], ...]:
    return tuple((name, key, _decoder(kind)) for name, key, kind in _field_types(cls))


def encode(event: Event) -> JsonDict:
    return {key: _encode_value(getattr(event, name)) for name, key, _ in _field_types(type(event))}


def decode(type_name: str, schema_version: int, data: JsonDict) -> Event:
    """Build the newest shape of an event from a stored payload of any known version."""
    cls = EVENT_TYPES.get(type_name)
    if cls is None:
        raise UnknownEventType(type_name)
    try:
        data = {**_defaults(cls), **upcast(type_name, schema_version, data)}
        return cls(**{name: decode_value(data[key]) for name, key, decode_value in _decoders(cls)})
    except UndecodableEvent:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise UndecodableEvent(f"{type_name} v{schema_version}: {error!r}") from error


def recorded(stored: StoredEvent) -> RecordedEvent:
    """A stored event decoded (and upcast): the one way from a row of the store, of a rebuild's
    read, or of a received message's envelope, to the event the code works with."""
    return RecordedEvent(
        event_id=stored.event_id,
        stream_id=stored.stream_id,
        stream_version=stored.stream_version,
        position=stored.position,
        recorded_at=stored.recorded_at,
        event=decode(stored.type_name, stored.schema_version, stored.data),
        metadata=stored.metadata,
    )


def normalise(type_name: str, schema_version: int, data: JsonDict) -> JsonDict:
    """A stored payload in the newest shape and in field order: what `encode(decode(...))`
    returns for anything the store wrote, without building the event (whose values `encode`
    would only turn back into the same strings)."""
    cls = EVENT_TYPES.get(type_name)
    if cls is None:
        raise UnknownEventType(type_name)
    try:
        data = {**_defaults(cls), **upcast(type_name, schema_version, data)}
        return {key: data[key] for _, key, _ in _field_types(cls)}
    except KeyError as error:
        raise UndecodableEvent(f"{type_name} v{schema_version}: no {error}") from error
    except (TypeError, AttributeError) as error:  # an old payload its upcaster cannot read
        raise UndecodableEvent(f"{type_name} v{schema_version}: {error!r}") from error


def _key_issued_v1_to_v2(data: JsonDict) -> JsonDict:
    renamed = {"email": "candidateEmail", "name": "candidateName"}
    return {renamed.get(key, key): value for key, value in data.items()}


def _key_issued_v2_to_v3(data: JsonDict) -> JsonDict:
    """Version 2 held the key string, a credential; version 3 only its hint. This runs on every
    read of an old event (the relay, `events republish`, the history, the worker, a rebuild),
    so no code above the store ever sees a key from an event."""
    hinted = {name: value for name, value in data.items() if name != "key"}
    hinted["keyHint"] = key_hint(data["key"])
    return hinted


def _subject_added(data: JsonDict) -> JsonDict:
    """`subjectId` came with sealing (`events.personal`): an older event has none, and its
    personal fields are in clear (until `assessments candidates seal` migrates it)."""
    return {**data, "subjectId": None}


UPCASTERS[("CandidateKeyIssued", 1)] = _key_issued_v1_to_v2
UPCASTERS[("CandidateKeyIssued", 2)] = _key_issued_v2_to_v3
UPCASTERS[("CandidateKeyIssued", 3)] = _subject_added
UPCASTERS[("CandidateKeyRedeemed", 1)] = _subject_added


def upcast(type_name: str, schema_version: int, data: JsonDict) -> JsonDict:
    current = EVENT_TYPES[type_name].schema_version
    if schema_version > current:
        raise UndecodableEvent(f"{type_name} v{schema_version} is newer than this code (v{current})")
    for version in range(schema_version, current):
        data = UPCASTERS[(type_name, version)](data)
    return data
