"""The published message: a CloudEvents 1.0 JSON envelope around one recorded event.

This is a contract with other teams (README, "Event contract"): add optional attributes
freely, but never rename or remove one without a new `specversion`-style major change.

No message carries personal data (`events.personal`): an event's personal fields are left out
of its `data`, whether they were stored sealed or (before sealing existed) in clear. Consumers
that need them read them from the service, which honours erasure.
"""

from __future__ import annotations

import json
import uuid
from functools import cache
from typing import Any

from events import codec
from events.model import EVENT_TYPES, RecordedEvent, StoredEvent

SOURCE = "/assessments"
CONTENT_TYPE = "application/cloudevents+json"


class UndecodableMessage(ValueError):
    """A message body that is not a well-formed envelope of a known event type."""


def routing_key(event_type: str) -> str:
    return EVENT_TYPES[event_type].routing_key


def envelope(recorded: RecordedEvent) -> dict[str, Any]:
    data = _without_personal(recorded.type_name, codec.encode(recorded.event))
    return _envelope(recorded, recorded.event.schema_version, data)


def envelope_of_stored(stored: StoredEvent) -> dict[str, Any]:
    """The same envelope from a stored row, upcast like a decoded event would be."""
    data = _without_personal(
        stored.type_name, codec.normalise(stored.type_name, stored.schema_version, stored.data)
    )
    return _envelope(stored, EVENT_TYPES[stored.type_name].schema_version, data)


@cache
def _personal_keys(type_name: str) -> frozenset[str]:
    return frozenset(codec.camel(name) for name in EVENT_TYPES[type_name].personal)


def _without_personal(type_name: str, data: dict[str, Any]) -> dict[str, Any]:
    personal = _personal_keys(type_name)
    return {key: value for key, value in data.items() if key not in personal} if personal else data


def _envelope(
    recorded: RecordedEvent | StoredEvent, schema_version: int, data: dict[str, Any]
) -> dict[str, Any]:
    meta = recorded.metadata
    return {
        "specversion": "1.0",
        "id": str(recorded.event_id),
        "source": SOURCE,
        "type": recorded.type_name,
        "subject": str(recorded.stream_id),
        "time": codec.format_time(recorded.recorded_at),
        "datacontenttype": "application/json",
        "schemaversion": schema_version,
        "streamid": str(recorded.stream_id),
        "streamversion": recorded.stream_version,
        "position": recorded.position,
        "orgid": meta.get("orgId"),
        "correlationid": meta.get("correlationId"),
        "causationid": meta.get("causationId"),
        "data": data,
    }


def encode(recorded: RecordedEvent) -> bytes:
    return _dump(envelope(recorded))


def encode_stored(stored: StoredEvent) -> bytes:
    """Byte for byte what `encode` gives for the decoded event (the relay publishes these,
    `events republish` the others)."""
    return _dump(envelope_of_stored(stored))


def _dump(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


def _absent_personal(type_name: str) -> dict[str, None]:
    """What a decoded message holds in the personal fields it does not carry."""
    cls = EVENT_TYPES.get(type_name)
    return dict.fromkeys(_personal_keys(type_name)) if cls is not None else {}


def decode(body: bytes) -> RecordedEvent:
    try:
        doc = json.loads(body)
        return codec.recorded(
            StoredEvent(
                position=int(doc["position"]),
                event_id=uuid.UUID(doc["id"]),
                stream_id=uuid.UUID(doc["streamid"]),
                stream_version=int(doc["streamversion"]),
                type_name=doc["type"],
                schema_version=int(doc["schemaversion"]),
                data={**_absent_personal(doc["type"]), **doc["data"]},
                metadata={
                    "orgId": doc.get("orgid"),
                    "correlationId": doc.get("correlationid"),
                    "causationId": doc.get("causationid"),
                },
                recorded_at=codec.parse_time(doc["time"]),
            )
        )
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise UndecodableMessage(repr(error)) from error
