"""The published event contract: every event type the code can emit is documented, field by
field, in docs/events.md and docs/asyncapi.json, and every message the service really publishes
validates against its documented JSON Schema."""

from __future__ import annotations

import copy
import dataclasses
import json
import re
import typing
import uuid
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from events import codec, messages
from events.model import EVENT_TYPES, Event
from events.rabbitmq.connection import message_properties
from events.sql.catalogue import import_catalogue
from tests.conftest import RUN_ID, new_org
from tests.e2e.helpers import create, issue_keys
from tests.integration.helpers import BrokerClient, outbox_count, pending_count, scalar
from tests.support.system import Client
from tests.support.wait import wait_for
from tests.unit import builders

DOCS = Path(__file__).resolve().parents[2] / "docs"
CATALOGUE = Path(__file__).resolve().parents[2] / "data" / "oss-issues.json"


@cache
def asyncapi() -> dict[str, Any]:
    return json.loads((DOCS / "asyncapi.json").read_text(encoding="utf-8"))


@cache
def events_md() -> str:
    return (DOCS / "events.md").read_text(encoding="utf-8")


def section(type_name: str) -> str:
    """The part of events.md about one event type: from its heading to the next heading."""
    match = re.search(rf"^### `{type_name}`.*?(?=^##)", events_md(), re.MULTILINE | re.DOTALL)
    assert match, f"no section for {type_name} in docs/events.md"
    return match.group(0)


def fields_of(cls: type[Event]) -> dict[str, bool]:
    """Each field's wire name, and whether it may be null."""
    hints = typing.get_type_hints(cls)
    return {
        codec.camel(f.name): type(None) in typing.get_args(hints[f.name]) for f in dataclasses.fields(cls)
    }


def resolve(node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        *_, kind, name = node["$ref"].split("/")
        node = asyncapi()["components"][kind][name]
    return node


def validator(pointer: str) -> jsonschema.Draft7Validator:
    """A validator for the schema at `pointer` in the AsyncAPI document, its `$ref`s resolved
    within the document."""
    schema = {"$ref": f"#/{pointer}", "components": asyncapi()["components"]}
    return jsonschema.Draft7Validator(schema, format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER)


def message_for(routing_key: str) -> dict[str, Any]:
    return resolve(asyncapi()["channels"][routing_key]["subscribe"]["message"])


def sample_envelopes() -> dict[str, dict[str, Any]]:
    """One well-formed envelope of each type, as `messages.envelope` builds it."""
    events = builders.one_of_each()
    return {
        event.type_name: messages.envelope(builders.recorded(event, version, **_metadata(event)))
        for version, event in enumerate(events, start=1)
    }


def _metadata(event: Event) -> dict[str, Any]:
    return {"orgId": event.org_id, "actor": "token:x", "correlationId": "req-1", "causationId": None}


# --- every type and field documented ------------------------------------------------------------


@pytest.mark.parametrize("type_name", sorted(EVENT_TYPES))
def test_every_event_type_is_documented_with_its_routing_key_and_schema_version(type_name):
    cls = EVENT_TYPES[type_name]

    heading = section(type_name).splitlines()[0]

    assert heading == f"### `{type_name}` — schema version {cls.schema_version} — `{cls.routing_key}`"
    assert f"| `{cls.routing_key}` | `{type_name}` | {cls.schema_version} |" in events_md()


@pytest.mark.parametrize("type_name", sorted(EVENT_TYPES))
def test_every_field_is_documented_in_events_md_with_its_nullability(type_name):
    text = section(type_name)

    for name, nullable in fields_of(EVENT_TYPES[type_name]).items():
        row = re.search(rf"^\| `{name}` \| [^|]+ \| (yes|no) \|", text, re.MULTILINE)
        assert row, f"{type_name}.{name} is not in its table in docs/events.md"
        assert row.group(1) == ("yes" if nullable else "no"), f"{type_name}.{name} nullable={nullable}"


@pytest.mark.parametrize("type_name", sorted(EVENT_TYPES))
def test_every_event_type_has_a_channel_and_a_message_in_the_asyncapi_document(type_name):
    cls = EVENT_TYPES[type_name]
    document = asyncapi()

    message = message_for(cls.routing_key)

    assert document["asyncapi"] == "2.6.0"
    assert message is document["components"]["messages"][type_name]
    assert message["name"] == type_name
    assert message["contentType"] == messages.CONTENT_TYPE
    payload = message["payload"]
    assert payload["properties"]["type"] == {**payload["properties"]["type"], "const": type_name}
    assert payload["properties"]["schemaversion"]["const"] == cls.schema_version
    exchange = document["channels"][cls.routing_key]["bindings"]["amqp"]["exchange"]
    assert (exchange["name"], exchange["type"], exchange["durable"]) == ("assessments.events", "topic", True)


@pytest.mark.parametrize("type_name", sorted(EVENT_TYPES))
def test_every_field_is_in_the_asyncapi_data_schema_which_allows_nothing_else(type_name):
    fields = fields_of(EVENT_TYPES[type_name])

    data = resolve(message_for(EVENT_TYPES[type_name].routing_key)["payload"]["properties"]["data"])

    assert data["type"] == "object"
    assert data["additionalProperties"] is False
    assert set(data["properties"]) == set(fields)
    assert set(data["required"]) == set(fields)
    for name, nullable in fields.items():
        kinds = resolve(data["properties"][name]).get("type")
        assert ("null" in (kinds or [])) == nullable, f"{type_name}.{name}: {kinds}"


def test_the_channels_are_exactly_the_routing_keys_of_the_event_types():
    assert set(asyncapi()["channels"]) == {cls.routing_key for cls in EVENT_TYPES.values()}
    assert set(asyncapi()["components"]["messages"]) == set(EVENT_TYPES)


def test_every_envelope_attribute_is_documented_in_both():
    attributes = set(next(iter(sample_envelopes().values())))

    for type_name in EVENT_TYPES:
        payload = asyncapi()["components"]["messages"][type_name]["payload"]
        assert set(payload["properties"]) == attributes
        assert set(payload["required"]) == attributes
    for attribute in attributes:
        assert re.search(rf"^\| `{attribute}` \|", events_md(), re.MULTILINE), attribute


def test_every_amqp_header_is_documented_in_both():
    recorded = builders.recorded(builders.created(), 1, **_metadata(builders.created()))
    headers = set(message_properties(recorded).headers)

    documented = resolve(asyncapi()["components"]["messages"]["AssessmentCreated"]["headers"])
    assert set(documented["properties"]) == set(documented["required"]) == headers
    for header in headers:
        assert re.search(rf"^\| `{header}` \|", events_md(), re.MULTILINE), header


def test_every_upcaster_is_documented_as_a_version_change():
    for type_name, version in codec.UPCASTERS:
        assert f"| `{type_name}` | {version} |" in events_md()
        assert f"| `{type_name}` | **{version + 1}** |" in events_md() or (
            f"| `{type_name}` | {version + 1} |" in events_md()
        )


# --- the schemas are strict enough to catch a broken message ---------------------------------------


def test_the_documented_schemas_accept_the_envelopes_the_code_builds():
    for type_name, envelope in sample_envelopes().items():
        validator(f"components/messages/{type_name}/payload").validate(envelope)


BREAKAGES = {
    "an undocumented data field": lambda e: e["data"].update(extra=1),
    "a missing data field": lambda e: e["data"].pop(next(iter(e["data"]))),
    "a missing envelope attribute": lambda e: e.pop("streamversion"),
    "an undocumented envelope attribute": lambda e: e.update(partitionkey="x"),
    "another schema version": lambda e: e.update(schemaversion=e["schemaversion"] + 1),
    "a string stream version": lambda e: e.update(streamversion="1"),
    "a time without milliseconds": lambda e: e.update(time="2026-04-01T09:00:00Z"),
    "an id that is no UUID": lambda e: e.update(id="42"),
}


@pytest.mark.parametrize("breakage", list(BREAKAGES))
@pytest.mark.parametrize("type_name", sorted(EVENT_TYPES))
def test_the_documented_schemas_refuse_a_message_that_breaks_the_contract(type_name, breakage):
    envelope = copy.deepcopy(sample_envelopes()[type_name])
    BREAKAGES[breakage](envelope)

    with pytest.raises(jsonschema.ValidationError):
        validator(f"components/messages/{type_name}/payload").validate(envelope)


def test_the_schema_refuses_the_version_1_names_of_a_key_event():
    envelope = sample_envelopes()["CandidateKeyIssued"]
    data = envelope["data"]
    data["email"], data["name"] = data.pop("candidateEmail"), data.pop("candidateName")

    with pytest.raises(jsonschema.ValidationError):
        validator("components/messages/CandidateKeyIssued/payload").validate(envelope)


@pytest.mark.parametrize("shape", ["beside the hint", "instead of the hint (version 2)"])
def test_the_schema_refuses_a_key_event_that_carries_the_key(shape):
    envelope = sample_envelopes()["CandidateKeyIssued"]
    data = envelope["data"]
    if shape.startswith("instead"):
        del data["keyHint"]
    data["key"] = "PST-ABCD-EF7K"

    with pytest.raises(jsonschema.ValidationError):
        validator("components/messages/CandidateKeyIssued/payload").validate(envelope)


def test_the_schema_refuses_a_hint_that_shows_more_than_the_last_two_characters():
    envelope = sample_envelopes()["CandidateKeyIssued"]
    envelope["data"]["keyHint"] = "PST-****-*F7K"

    with pytest.raises(jsonschema.ValidationError):
        validator("components/messages/CandidateKeyIssued/payload").validate(envelope)


# --- every published message validates --------------------------------------------------------------


def run_workload(system) -> int:
    """Every kind of event, with optional fields both set and null: creates (bare and full),
    keys with and without candidates, a revoke, a delete whose keys the cascade revokes.
    Returns how many revocations the store ends up with."""
    import_catalogue(system.engine, CATALOGUE)
    issue_id = json.loads(CATALOGUE.read_text(encoding="utf-8"))[0]["id"]
    with Client(system.api.url, new_org(system.settings.database_url).token) as client:
        bare = create(client)
        full = create(
            client,
            repoUrl="https://example.com/repo",
            timeLimitMinutes=90,
            expiresInDays=30,
            issueId=issue_id,
            rubricId=str(uuid.uuid4()),
        )
        issue_keys(
            client,
            full["id"],
            count=2,
            candidateEmails=["ada@example.com", "alan@example.com"],
            candidateNames=["Ada", "Alan"],
            orgName="Acme",
        )
        anonymous = issue_keys(client, bare["id"], count=2)
        assert client.delete(f"/v1/assessments/{bare['id']}/keys/{anonymous[0]['id']}").status_code == 200
        assert client.delete(f"/v1/assessments/{full['id']}").status_code == 200
        return 1 + 2


def settled(engine, revocations: int) -> bool:
    revoked = scalar(engine, "SELECT count(*) FROM events WHERE type = 'CandidateKeyRevoked'")
    return revoked == revocations and outbox_count(engine) == 0 and pending_count(engine) == 0


def test_every_published_message_validates_against_its_documented_schema(system):
    system.start_relay()
    system.start_worker()
    system.start_api()
    broker = BrokerClient(system.settings.broker_url, system.settings.exchange)
    try:
        tap = broker.tap(f"test-{RUN_ID}-{uuid.uuid4().hex[:6]}.tap")
        revocations = run_workload(system)
        wait_for(lambda: settled(system.engine, revocations), 15, "the workload and its cascade published")
        published = broker.take(tap, scalar(system.engine, "SELECT count(*) FROM events"))
    finally:
        broker.close()

    seen: dict[str, list[dict[str, Any]]] = {}
    for method, properties, body in published:
        message = message_for(method.routing_key)
        name = message["name"]
        envelope = json.loads(body)
        validator(f"components/messages/{name}/payload").validate(envelope)
        validator("components/schemas/Headers").validate(properties.headers)
        assert envelope["type"] == properties.type == name
        assert properties.message_id == envelope["id"]
        assert properties.content_type == message["contentType"]
        assert properties.delivery_mode == 2
        seen.setdefault(name, []).append(envelope)
    assert set(seen) == set(EVENT_TYPES)
    emails = {e["data"]["candidateEmail"] for e in seen["CandidateKeyIssued"]}
    assert None in emails and "ada@example.com" in emails
    reasons = {(e["data"]["reason"], e["causationid"] is None) for e in seen["CandidateKeyRevoked"]}
    assert reasons == {("revoked", True), ("assessment_deleted", False)}
