"""The published message: a CloudEvents 1.0 JSON envelope around one recorded event."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from events import codec, messages
from events.messages import UndecodableMessage
from events.model import EVENT_TYPES, Metadata, StoredEvent
from tests.unit.builders import NOW, candidate_erased, created, one_of_each, recorded

CORRELATION, CAUSATION = "req-7f3a", "evt-41c2"


def sample(event=None, stream_version: int = 3, position: int = 1042):
    event = event or created()
    metadata = Metadata(event.org_id, actor="reviewer", correlation_id=CORRELATION, causation_id=CAUSATION)
    return recorded(event, stream_version, position, **metadata.as_dict())


def test_the_envelope_carries_the_cloudevents_attributes():
    message = sample()
    envelope = json.loads(messages.encode(message))
    assert envelope == {
        "specversion": "1.0",
        "id": str(message.event_id),
        "source": messages.SOURCE,
        "type": "AssessmentCreated",
        "subject": str(message.stream_id),
        "time": "2026-04-01T09:00:00.000Z",
        "datacontenttype": "application/json",
        "schemaversion": 1,
        "streamid": str(message.stream_id),
        "streamversion": 3,
        "position": 1042,
        "orgid": message.event.org_id,
        "correlationid": CORRELATION,
        "causationid": CAUSATION,
        "data": codec.encode(message.event),
    }


def test_the_envelope_subject_and_stream_are_the_assessment():
    message = sample()
    envelope = messages.envelope(message)
    assert envelope["subject"] == envelope["streamid"] == str(message.event.assessment_id)


def test_the_message_body_is_utf8_json():
    body = messages.encode(sample(created(title="Entwickler:in für Zürich")))
    assert json.loads(body.decode("utf-8"))["data"]["title"] == "Entwickler:in für Zürich"


@pytest.mark.parametrize("event", [*one_of_each(), candidate_erased()], ids=lambda e: type(e).type_name)
def test_every_event_type_survives_an_encode_decode_round_trip_but_its_personal_data(event):
    message = sample(event)
    decoded = messages.decode(messages.encode(message))
    assert decoded.event == replace(message.event, **dict.fromkeys(type(event).personal))
    assert decoded.event_id == message.event_id
    assert decoded.stream_id == message.stream_id
    assert decoded.stream_version == message.stream_version
    assert decoded.position == message.position
    assert decoded.recorded_at == NOW


def test_the_round_trip_keeps_org_correlation_and_causation():
    decoded = messages.decode(messages.encode(sample()))
    assert decoded.metadata == {
        "orgId": decoded.event.org_id,
        "correlationId": CORRELATION,
        "causationId": CAUSATION,
    }


def test_every_event_type_has_a_routing_key():
    assert {name: messages.routing_key(name) for name in EVENT_TYPES} == {
        "AssessmentCreated": "assessment.created",
        "AssessmentDeleted": "assessment.deleted",
        "CandidateKeyIssued": "candidate_key.issued",
        "CandidateKeyRevoked": "candidate_key.revoked",
        "CandidateConsented": "candidate_key.consented",
        "CandidateKeyRedeemed": "candidate_key.redeemed",
        "CandidateSessionResumed": "candidate_key.session_resumed",
        "CandidateDeviceChecked": "candidate_key.device_checked",
        "CandidateKeyCompleted": "candidate_key.completed",
        "CandidateKeyExpired": "candidate_key.expired",
        "CandidateErased": "candidate.erased",
        "WebhookEndpointRegistered": "webhook_endpoint.registered",
        "WebhookSecretRotated": "webhook_endpoint.secret_rotated",
        "WebhookEndpointRemoved": "webhook_endpoint.removed",
        "WebhookEndpointDisabled": "webhook_endpoint.disabled",
    }


@pytest.mark.parametrize("body", [b"not json", b"\xff\xfe\xfa not utf-8", b"[]", b"null", b'"text"', b""])
def test_a_body_that_is_not_an_envelope_is_undecodable(body: bytes):
    with pytest.raises(UndecodableMessage):
        messages.decode(body)


def test_an_unknown_event_type_is_undecodable():
    envelope = {**messages.envelope(sample()), "type": "AssessmentArchived"}
    with pytest.raises(UndecodableMessage):
        messages.decode(json.dumps(envelope).encode())


@pytest.mark.parametrize(
    "missing", ["id", "type", "time", "schemaversion", "streamid", "streamversion", "position", "data"]
)
def test_an_envelope_missing_a_required_attribute_is_undecodable(missing: str):
    envelope = messages.envelope(sample())
    del envelope[missing]
    with pytest.raises(UndecodableMessage):
        messages.decode(json.dumps(envelope).encode())


@pytest.mark.parametrize(
    ("key", "bad"),
    [("id", "not-a-uuid"), ("streamversion", "three"), ("time", "yesterday"), ("data", "text"), ("data", {})],
)
def test_an_envelope_with_a_malformed_attribute_is_undecodable(key: str, bad: object):
    envelope = {**messages.envelope(sample()), key: bad}
    with pytest.raises(UndecodableMessage):
        messages.decode(json.dumps(envelope).encode())


def test_a_schema_version_newer_than_the_code_is_undecodable():
    envelope = {**messages.envelope(sample()), "schemaversion": 2}
    with pytest.raises(UndecodableMessage):
        messages.decode(json.dumps(envelope).encode())


def stored_row(message, data=None, schema_version=None) -> StoredEvent:
    """The row the relay reads for `message`: its data as a JSONB column gives it back (keys
    in JSONB's own order, not the dataclass's)."""
    data = codec.encode(message.event) if data is None else data
    return StoredEvent(
        position=message.position,
        event_id=message.event_id,
        stream_id=message.stream_id,
        stream_version=message.stream_version,
        type_name=message.type_name,
        schema_version=message.event.schema_version if schema_version is None else schema_version,
        data=dict(sorted(data.items(), key=lambda item: (len(item[0]), item[0]))),
        metadata=message.metadata,
        recorded_at=message.recorded_at,
    )


@pytest.mark.parametrize("event", one_of_each(), ids=lambda e: type(e).type_name)
def test_the_relay_publishes_from_the_row_the_very_bytes_of_the_decoded_event(event):
    """The relay encodes stored rows without decoding them; `events republish` encodes decoded
    events. Downstream consumers are promised the same bytes from both."""
    message = sample(event)
    assert messages.encode_stored(stored_row(message)) == messages.encode(message)


@pytest.mark.parametrize("event", one_of_each(), ids=lambda e: type(e).type_name)
def test_no_message_carries_personal_data(event):
    data = json.loads(messages.encode(sample(event)))["data"]
    assert not {"candidateEmail", "candidateName"} & set(data)


def test_a_stored_row_of_an_old_schema_version_is_published_upcast():
    issued_event = one_of_each()[1]
    message = sample(issued_event)
    v1 = codec.encode(issued_event)
    v1["email"], v1["name"] = v1.pop("candidateEmail"), v1.pop("candidateName")
    v1["key"] = "PST-ABCD-EF" + v1.pop("keyHint")[-2:]
    body = messages.encode_stored(stored_row(message, v1, schema_version=1))
    assert body == messages.encode(message)
    assert json.loads(body)["schemaversion"] == 4


@pytest.mark.parametrize("version", [1, 2])
def test_a_stored_key_event_that_held_the_key_is_published_with_its_hint_only(version: int):
    key = "PST-ABCD-EF7K"
    issued_event = replace(one_of_each()[1], key_hint="PST-****-**7K")
    message = sample(issued_event)
    old = codec.encode(issued_event)
    del old["keyHint"]
    old["key"] = key
    if version == 1:
        old["email"], old["name"] = old.pop("candidateEmail"), old.pop("candidateName")

    body = messages.encode_stored(stored_row(message, old, schema_version=version))

    assert body == messages.encode(message)
    assert key.encode() not in body
    assert b"ABCDEF7K" not in body
    assert json.loads(body)["data"]["keyHint"] == "PST-****-**7K"


def test_a_stored_row_missing_a_field_is_undecodable_not_published_short():
    message = sample()
    data = codec.encode(message.event)
    del data["title"]
    with pytest.raises(codec.UndecodableEvent):
        messages.encode_stored(stored_row(message, data))
