"""The published event contract: every event type the code can emit is documented, field by
field, in docs/events.md and docs/asyncapi.json, and every message the service really publishes
validates against its documented JSON Schema."""

from __future__ import annotations

import base64
import copy
import dataclasses
import json
import os
import re
import typing
import uuid
from datetime import timedelta
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
from tests.support.receiver import Receiver, always
from tests.support.system import Client
from tests.support.wait import wait_for
from tests.unit import builders
from worker.webhooks import Policy

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
    events = [*builders.one_of_each(), *builders.webhook_endpoint_events(), builders.candidate_erased()]
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
    """Every field but the personal ones, which no message carries (`events.personal`)."""
    cls = EVENT_TYPES[type_name]
    personal = {codec.camel(name) for name in cls.personal}
    fields = {name: nullable for name, nullable in fields_of(cls).items() if name not in personal}

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
    data["email"], data["name"] = "ada@example.com", "Ada"

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


#: How long the worker may take to record the workload's expiries: its expiry step runs with
#: its sweep, every few seconds (worker.consumer.SWEEP_EVERY_SECONDS).
EXPIRY_WAIT_SECONDS = 30


@dataclasses.dataclass
class Workload:
    """What a workload leaves behind: how many events of some types the store must end up with
    (those decided after the HTTP calls answered: the cascade's and the expiry step's), and
    every secret a candidate or reviewer held, which no published message may contain."""

    awaited: dict[str, int]
    secrets: list[str]
    expiring_session_id: str = ""
    #: Webhook signing secrets, which no message may hold either.
    webhook_secrets: list[str] = dataclasses.field(default_factory=list)


def register_webhook(client: Client, url: str, events: list[str], **more: Any) -> dict[str, Any]:
    response = client.post("/v1/webhooks", json={"url": url, "events": events, **more})
    assert response.status_code == 201, response.text
    return response.json()["webhook"]


def run_workload(system, receiver: Receiver) -> Workload:
    """Every kind of event, with optional fields both set and null: creates (bare and full),
    keys with and without candidates, a revoke, a delete whose keys the cascade revokes; and
    the candidate's side as the command-line client plays it (consent, redeem, redeem again,
    device checks with the session token, complete), then time moved on so that a pending key
    passes its expiry and an active session its deadline, for the worker to record both."""
    import_catalogue(system.engine, CATALOGUE)
    issue_id = json.loads(CATALOGUE.read_text(encoding="utf-8"))[0]["id"]
    secrets: list[str] = []
    with Client(system.api.url, new_org(system.settings.database_url).token) as client:
        # Webhooks: one endpoint that refuses everything (the dispatcher disables it after its
        # first failure here), one described, rotated and removed.
        refusing = register_webhook(
            client, receiver.endpoint("/refuses", always(500)), ["assessment.created"]
        )
        kept = register_webhook(client, receiver.endpoint("/kept"), ["#"], description="ATS")
        rotated = client.post(f"/v1/webhooks/{kept['id']}/rotate-secret")
        assert rotated.status_code == 200, rotated.text
        assert client.delete(f"/v1/webhooks/{kept['id']}").status_code == 200
        webhook_secrets = [refusing["secret"], kept["secret"], rotated.json()["webhook"]["secret"]]
        bare = create(client)
        full = create(
            client,
            repoUrl="https://example.com/repo",
            timeLimitMinutes=90,
            expiresInDays=30,
            issueId=issue_id,
            rubricId=str(uuid.uuid4()),
        )
        named = issue_keys(
            client,
            full["id"],
            count=2,
            candidateEmails=["ada@example.com", "alan@example.com"],
            candidateNames=["Ada", "Alan"],
            orgName="Acme",
        )
        anonymous = issue_keys(client, bare["id"], count=2)
        assert client.delete("/v1/candidates", params={"email": "alan@example.com"}).status_code == 200
        assert client.delete(f"/v1/assessments/{bare['id']}/keys/{anonymous[0]['id']}").status_code == 200
        assert client.delete(f"/v1/assessments/{full['id']}").status_code == 200

        taken = create(client, timeLimitMinutes=60, expiresInDays=2)
        done, lapsing, untouched = issue_keys(client, taken["id"], count=3)
        secrets += [key["key"] for key in (*named, *anonymous, done, lapsing, untouched)]
        with Client(system.api.url) as candidate:
            completed, tokens = candidate_completes(candidate, done["key"])
            secrets += [*tokens, *fingerprint_values()]
            session_id, token = candidate_starts(candidate, lapsing["key"])
            secrets.append(token)
            shown = candidate.get("/v1/candidate/consent", params={"key": untouched["key"]})
            assert shown.status_code == 200, shown.text  # read only: it decides nothing
        assert completed.status_code == 200, completed.text
    # past the untouched key's expiry (2 days) and so past the lapsing session's deadline (60 min)
    system.clock.advance(days=2, seconds=1)
    awaited = {
        "CandidateKeyRevoked": 1 + 2,
        "CandidateKeyExpired": 2,
        "WebhookEndpointDisabled": 1,
        "CandidateErased": 1,
    }
    return Workload(awaited, secrets, session_id, webhook_secrets)


def fingerprint(checkpoint: str) -> dict[str, Any]:
    """A device report as the client sends it; each checkpoint's differs from the start's in
    its host, so the second check records a change. Every string is unique to this module,
    so finding one in a message can only mean the raw value leaked."""
    return {
        "os": "fp-os-linux-5c1e",
        "arch": "fp-arch-x86_64-77d0",
        "hostnameHash": f"fp-host-{checkpoint}-a41f",
        "cpus": 8,
    }


def fingerprint_values() -> list[str]:
    return sorted(
        {value for cp in ("start", "end") for value in fingerprint(cp).values() if isinstance(value, str)}
    )


def candidate_consents(candidate: Client, key: str) -> None:
    shown = candidate.get("/v1/candidate/consent", params={"key": key})
    assert shown.status_code == 200, shown.text
    consent = {"key": key, "disclosureHash": shown.json()["disclosureHash"]}
    recorded = candidate.post("/v1/candidate/consent", json=consent)
    assert recorded.status_code == 200, recorded.text


def candidate_redeems(candidate: Client, key: str, **fields: Any) -> dict[str, Any]:
    redeemed = candidate.post("/v1/candidate/redeem", json={"key": key, **fields})
    assert redeemed.status_code == 200, redeemed.text
    return redeemed.json()


def candidate_checks_device(candidate: Client, token: str, checkpoint: str) -> None:
    checked = candidate.post(
        "/v1/candidate/device-check",
        json={"checkpoint": checkpoint, "fingerprint": fingerprint(checkpoint)},
        headers={"X-API-Key": token},
    )
    assert checked.status_code == 200, checked.text


def candidate_completes(candidate: Client, key: str):
    """The client's whole sequence: consent, redeem, redeem again (resumed, a new token),
    device checks with the session token, complete. Returns the completion and the tokens."""
    candidate_consents(candidate, key)
    public_key = base64.b64encode(os.urandom(32)).decode()
    first = candidate_redeems(candidate, key, candidateName="Grace Hopper", signingPubKey=public_key)
    again = candidate_redeems(candidate, key)
    assert again["sessionId"] == first["sessionId"]
    candidate_checks_device(candidate, first["sessionToken"], "start")
    candidate_checks_device(candidate, again["sessionToken"], "end")
    body = {"sessionId": first["sessionId"], "key": key}
    return candidate.post("/v1/candidate/complete", json=body), [first["sessionToken"], again["sessionToken"]]


def candidate_starts(candidate: Client, key: str) -> tuple[str, str]:
    """Consent, redeem (no name, no signing key) and one device check: a session left active."""
    candidate_consents(candidate, key)
    started = candidate_redeems(candidate, key)
    candidate_checks_device(candidate, started["sessionToken"], "start")
    return started["sessionId"], started["sessionToken"]


def settled(engine, awaited: dict[str, int]) -> bool:
    counts = {
        type_name: scalar(engine, "SELECT count(*) FROM events WHERE type = :type_name", type_name=type_name)
        for type_name in awaited
    }
    return counts == awaited and outbox_count(engine) == 0 and pending_count(engine) == 0


def test_every_published_message_validates_against_its_documented_schema(system):
    system.start_relay()
    system.start_worker()
    system.start_api()
    system.start_webhooks(
        policy=Policy(schedule=(0.1,), disable_after_failures=1, disable_after=timedelta(0))
    )
    broker = BrokerClient(system.settings.broker_url, system.settings.exchange)
    receiver = Receiver()
    try:
        tap = broker.tap(f"test-{RUN_ID}-{uuid.uuid4().hex[:6]}.tap")
        workload = run_workload(system, receiver)
        wait_for(
            lambda: settled(system.engine, workload.awaited),
            EXPIRY_WAIT_SECONDS,
            "the workload, its cascade and its expiries recorded and published",
        )
        published = broker.take(tap, scalar(system.engine, "SELECT count(*) FROM events"))
    finally:
        broker.close()
        receiver.close()

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
    for envelopes in seen.values():  # no personal data: ids only (`events.personal`)
        assert not {"candidateEmail", "candidateName"} & {key for e in envelopes for key in e["data"]}
    for _, _, body in published:
        for personal in (b"ada@example.com", b"alan@example.com", b"Grace Hopper"):
            assert personal not in body
    subjects = {e["data"]["subjectId"] == e["data"]["keyId"] for e in seen["CandidateKeyIssued"]}
    assert subjects == {True}  # every key is its own data subject
    reasons = {(e["data"]["reason"], e["causationid"] is None) for e in seen["CandidateKeyRevoked"]}
    assert reasons == {("revoked", True), ("assessment_deleted", False)}
    expiries = {(e["data"]["reason"], e["data"]["sessionId"]) for e in seen["CandidateKeyExpired"]}
    assert expiries == {("key_expired", None), ("deadline_passed", workload.expiring_session_id)}
    assert len(seen["CandidateKeyExpired"]) == 2  # each recorded once
    assert len(seen["CandidateSessionResumed"]) == 1
    assert sorted(e["data"]["changed"] for e in seen["CandidateDeviceChecked"]) == [False, False, True]
    named_redeems = {e["data"]["subjectId"] is not None for e in seen["CandidateKeyRedeemed"]}
    assert named_redeems == {True, False}  # "Grace Hopper" is sealed under the key's own subject
    assert_no_secrets(published, workload.secrets)
    for _, properties, body in published:
        text = body.decode("utf-8") + json.dumps(properties.headers)
        for secret in workload.webhook_secrets:
            assert secret not in text and secret.removeprefix("whsec_") not in text
    assert {e["data"]["description"] for e in seen["WebhookEndpointRegistered"]} == {None, "ATS"}


def assert_no_secrets(published, secrets: list[str]) -> None:
    """Keys and session tokens are credentials, and a device's raw values are the candidate's:
    no message body or header holds one (events carry a key's hint, no token at all, and a
    salted hash of the fingerprint), not even without its prefix."""
    assert len(secrets) == 2 + 2 + 3 + 3 + len(fingerprint_values())  # keys, tokens, raw values
    for method, properties, body in published:
        text = body.decode("utf-8") + json.dumps(properties.headers)
        for secret in secrets:
            for form in {secret, secret.removeprefix("PST-").removeprefix("cst_")}:
                assert form not in text, f"{method.routing_key} carries {secret[:6]}..."
