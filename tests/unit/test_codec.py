"""Events to JSON-ready dicts and back: camelCase, ISO `Z` millisecond times, upcasting."""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone

import pytest

from events import codec
from events.codec import UndecodableEvent, UnknownEventType
from events.model import EVENT_TYPES, AssessmentDeleted, CandidateKeyIssued, Event
from tests.unit.builders import (
    NOW,
    candidate_erased,
    created,
    deleted,
    issued,
    one_of_each,
    webhook_endpoint_events,
)

SAMPLES = {
    type(event).type_name: event for event in [*one_of_each(), *webhook_endpoint_events(), candidate_erased()]
}
ID = uuid.UUID("0195f0c4-8d5e-7000-8000-000000000001")


def test_the_samples_cover_every_event_type():
    assert set(SAMPLES) == set(EVENT_TYPES)


@pytest.mark.parametrize("type_name", sorted(EVENT_TYPES))
def test_every_event_type_survives_an_encode_decode_round_trip(type_name: str):
    event = SAMPLES[type_name]
    data = codec.encode(event)
    assert codec.decode(type_name, type(event).schema_version, data) == event


@pytest.mark.parametrize("type_name", sorted(EVENT_TYPES))
def test_encoded_keys_are_the_camel_case_field_names(type_name: str):
    event = SAMPLES[type_name]
    expected = {codec.camel(f.name) for f in dataclasses.fields(event)}
    assert set(codec.encode(event)) == expected
    assert all("_" not in key for key in expected)


@pytest.mark.parametrize("type_name", sorted(EVENT_TYPES))
def test_encoded_data_is_plain_json_types(type_name: str):
    for value in codec.encode(SAMPLES[type_name]).values():
        assert value is None or isinstance(value, str | int | float | bool | list | dict)


def test_encoding_writes_uuids_as_strings_and_times_as_iso_z_milliseconds():
    event = created(created_at=NOW + timedelta(milliseconds=5))
    data = codec.encode(event)
    assert data["assessmentId"] == str(event.assessment_id)
    assert data["rubricId"] == str(event.rubric_id)
    assert data["createdAt"] == "2026-04-01T09:00:00.005Z"
    assert data["timeLimitMinutes"] == 90
    assert data["taskBrief"] == event.task_brief


def test_null_optional_fields_round_trip_as_null():
    event = created(repo_url=None, time_limit_minutes=None, issue_id=None, rubric_id=None)
    data = codec.encode(event)
    assert data["rubricId"] is None
    assert data["repoUrl"] is None
    assert codec.decode("AssessmentCreated", 1, data) == event


def test_format_time_is_utc_with_milliseconds_and_z():
    assert codec.format_time(NOW) == "2026-04-01T09:00:00.000Z"


def test_format_time_converts_other_offsets_to_utc():
    paris = timezone(timedelta(hours=2))
    assert codec.format_time(datetime(2026, 4, 1, 11, 0, 0, 123456, tzinfo=paris)) == (
        "2026-04-01T09:00:00.123Z"
    )


@pytest.fixture
def machine_clock_not_in_utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The process's local time zone set to UTC+05:30, as on a server configured elsewhere."""
    monkeypatch.setenv("TZ", "IST-5:30")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_format_time_writes_utc_whatever_the_machines_time_zone(machine_clock_not_in_utc):
    assert codec.format_time(NOW) == "2026-04-01T09:00:00.000Z"


def test_parse_time_reads_what_format_time_writes():
    moment = NOW + timedelta(milliseconds=42)
    assert codec.parse_time(codec.format_time(moment)) == moment


def test_parse_time_gives_utc_times_whatever_offset_they_were_written_with():
    parsed = codec.parse_time("2026-04-01T14:30:00.000+05:30")

    assert parsed == NOW
    assert parsed.tzinfo is UTC


@pytest.mark.parametrize(
    ("kind", "value", "decoded"),
    [
        (datetime, "2026-04-01T09:00:00.000Z", NOW),
        (datetime | None, "2026-04-01T09:00:00.000Z", NOW),
        (datetime | None, None, None),
        (uuid.UUID, str(ID), ID),
        (uuid.UUID | None, str(ID), ID),
        (uuid.UUID | None, None, None),
        (str, "as it is", "as it is"),
        (int | None, 90, 90),
    ],
)
def test_a_fields_json_value_is_read_as_the_fields_type_and_null_stays_none(kind, value, decoded):
    assert codec._decoder(kind)(value) == decoded


@pytest.mark.parametrize("convert", [codec.decode, codec.normalise])
def test_an_unknown_type_raises_unknown_event_type_naming_it(convert):
    with pytest.raises(UnknownEventType) as raised:
        convert("AssessmentArchived", 1, {})
    assert str(raised.value) == "AssessmentArchived"


@pytest.mark.parametrize("missing", ["assessmentId", "orgId", "deletedAt"])
def test_decoding_a_payload_missing_a_field_raises_undecodable_event_naming_it(missing: str):
    data = codec.encode(deleted(created()))
    del data[missing]
    with pytest.raises(UndecodableEvent, match=rf"^AssessmentDeleted v1: KeyError\('{missing}'\)$"):
        codec.decode("AssessmentDeleted", 1, data)


def test_normalising_a_payload_missing_a_field_raises_undecodable_event_naming_it():
    data = codec.encode(deleted(created()))
    del data["deletedAt"]
    with pytest.raises(UndecodableEvent) as raised:
        codec.normalise("AssessmentDeleted", 1, data)
    assert str(raised.value) == "AssessmentDeleted v1: no 'deletedAt'"


@pytest.mark.parametrize(
    ("key", "bad"), [("assessmentId", "not-a-uuid"), ("deletedAt", "yesterday"), ("deletedAt", 5)]
)
def test_decoding_a_malformed_value_raises_undecodable_event(key: str, bad: object):
    data = {**codec.encode(deleted(created())), key: bad}
    with pytest.raises(UndecodableEvent):
        codec.decode("AssessmentDeleted", 1, data)


def test_decoding_a_schema_version_newer_than_the_code_raises_undecodable_event_saying_so():
    data = codec.encode(deleted(created()))
    with pytest.raises(UndecodableEvent) as raised:
        codec.decode("AssessmentDeleted", AssessmentDeleted.schema_version + 1, data)
    assert str(raised.value) == "AssessmentDeleted v2 is newer than this code (v1)"


def test_an_event_stored_before_an_optional_field_existed_reads_with_its_default():
    """Adding a field with a default needs no new schema version (see `events.model`)."""
    event = created(expires_in_days=7, repo_url=None)
    stored = {
        key: value for key, value in codec.encode(event).items() if key not in {"expiresInDays", "repoUrl"}
    }

    assert codec.decode("AssessmentCreated", 1, stored) == event
    assert codec.normalise("AssessmentCreated", 1, stored) == codec.encode(event)


# --- upcasting ---------------------------------------------------------------------------------


def _rename(old: str, new: str):
    def upcaster(data: dict) -> dict:
        data = dict(data)
        data[new] = data.pop(old)
        return data

    return upcaster


@pytest.fixture
def deleted_v2(monkeypatch: pytest.MonkeyPatch) -> type[Event]:
    """A pretend v2 of AssessmentDeleted: v1 called `deletedAt` `removedAt`."""
    monkeypatch.setattr(AssessmentDeleted, "schema_version", 2)
    monkeypatch.setitem(codec.UPCASTERS, ("AssessmentDeleted", 1), _rename("removedAt", "deletedAt"))
    return AssessmentDeleted


def test_an_old_payload_is_upcast_to_the_newest_shape(deleted_v2):
    event = deleted(created())
    v1 = codec.encode(event)
    v1["removedAt"] = v1.pop("deletedAt")
    assert codec.decode("AssessmentDeleted", 1, v1) == event


def test_a_payload_of_the_newest_version_is_not_upcast(deleted_v2):
    event = deleted(created())
    assert codec.decode("AssessmentDeleted", 2, codec.encode(event)) == event


def test_upcasters_chain_from_any_old_version_to_the_newest(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(AssessmentDeleted, "schema_version", 3)
    monkeypatch.setitem(codec.UPCASTERS, ("AssessmentDeleted", 1), _rename("goneAt", "removedAt"))
    monkeypatch.setitem(codec.UPCASTERS, ("AssessmentDeleted", 2), _rename("removedAt", "deletedAt"))
    event = deleted(created())
    v1 = codec.encode(event)
    v1["goneAt"] = v1.pop("deletedAt")
    v2 = codec.encode(event)
    v2["removedAt"] = v2.pop("deletedAt")
    assert codec.decode("AssessmentDeleted", 1, v1) == event
    assert codec.decode("AssessmentDeleted", 2, v2) == event


# --- CandidateKeyIssued: v1 `email`/`name`, v2 the key in clear, v3 its hint ----------------------

KEY = "PST-ABCD-EF7K"


def key_payload(version: int) -> tuple[CandidateKeyIssued, dict]:
    """A key event as the version-3 code has it, and the payload a version-`version` writer
    stored for it (versions 1 and 2 with the key in clear)."""
    event = issued(created(), key_hint="PST-****-**7K")
    data = codec.encode(event)
    if version < 3:
        del data["keyHint"]
        data["key"] = KEY
    if version < 2:
        data["email"], data["name"] = data.pop("candidateEmail"), data.pop("candidateName")
    return event, data


def test_candidate_key_issued_is_at_version_4():
    assert CandidateKeyIssued.schema_version == 4
    assert "key" not in codec.encode(issued(created()))


@pytest.mark.parametrize("version", [1, 2])
def test_an_old_key_event_is_read_with_the_hint_of_its_key_and_without_the_key(version: int):
    event, stored = key_payload(version)

    decoded = codec.decode("CandidateKeyIssued", version, stored)

    assert decoded == event
    assert KEY not in repr(decoded)


@pytest.mark.parametrize("version", [1, 2])
def test_an_old_key_event_is_normalised_to_the_version_3_payload_without_the_key(version: int):
    event, stored = key_payload(version)

    normalised = codec.normalise("CandidateKeyIssued", version, stored)

    assert normalised == codec.encode(event)
    assert list(normalised) == list(codec.encode(event))
    assert KEY not in str(normalised)
    assert stored["key"] == KEY, "the stored payload itself is left as it is"


def test_the_version_2_upcaster_replaces_the_key_with_its_hint_and_keeps_the_rest():
    _, v2 = key_payload(2)

    v3 = codec.UPCASTERS[("CandidateKeyIssued", 2)](v2)

    assert v3 == {**{k: v for k, v in v2.items() if k != "key"}, "keyHint": "PST-****-**7K"}


@pytest.mark.parametrize("convert", [codec.decode, codec.normalise])
@pytest.mark.parametrize("key", [None, 7, "missing"])
def test_a_version_2_key_event_without_a_usable_key_is_undecodable(convert, key):
    _, v2 = key_payload(2)
    if key == "missing":
        del v2["key"]
    else:
        v2["key"] = key

    with pytest.raises(UndecodableEvent, match=r"^CandidateKeyIssued v2: "):
        convert("CandidateKeyIssued", 2, v2)
