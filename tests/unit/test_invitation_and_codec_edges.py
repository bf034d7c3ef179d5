"""Edges of the invitations' pure rules and of the codec that the other unit tests left open:
the Message-ID's domain, the 5xx boundaries, a key mailed without its assessment, and how a
stored JSON list becomes a tuple field."""

from __future__ import annotations

import dataclasses
import uuid

import pytest

from events import codec
from events.aggregate import rebuild
from events.invitations import invitation, is_permanent, message_id
from events.model import WebhookEndpointRegistered
from tests.unit.builders import NOW, created, issued


def test_the_message_id_domain_is_after_the_last_at_sign_without_brackets_or_spaces():
    key_id = uuid.UUID("01900000-0000-7000-8000-000000000001")

    assert message_id(key_id, "Name <a@b.test>") == f"<invitation-{key_id}@b.test>"
    assert message_id(key_id, "Name <a@b.test> ") == f"<invitation-{key_id}@b.test>"
    assert message_id(key_id, "weird@name@mail.test") == f"<invitation-{key_id}@mail.test>"
    assert message_id(key_id, "mail.test") == f"<invitation-{key_id}@mail.test>"
    assert message_id(key_id, "a@MX.TEST>") == f"<invitation-{key_id}@MX.TEST>"
    assert message_id(key_id, "a@B.X>") == f"<invitation-{key_id}@B.X>"
    assert message_id(key_id, "") == f"<invitation-{key_id}@localhost>"
    assert message_id(key_id, "a@ >") == f"<invitation-{key_id}@localhost>"


@pytest.mark.parametrize(
    ("code", "permanent"),
    [(499, False), (500, True), (501, True), (599, True), (600, False), (601, False), (0, False)],
)
def test_exactly_500_to_599_are_permanent(code, permanent):
    assert is_permanent(code) is permanent


def test_a_key_of_a_stream_without_its_creation_cannot_be_mailed():
    of = created()
    key = issued(of)
    state = rebuild(of.assessment_id, [of, key])
    assert invitation(state, state.keys[key.key_id], "k", None).title == of.title

    with pytest.raises(AssertionError):
        invitation(dataclasses.replace(state, created=None), state.keys[key.key_id], "k", None)


def test_a_json_list_decodes_to_a_tuple_and_none_stays_none():
    endpoint_id, secret_id = uuid.uuid4(), uuid.uuid4()
    data = {
        "endpointId": str(endpoint_id),
        "orgId": "org",
        "url": "https://a.example.com/",
        "events": ["CandidateKeyIssued", "assessment.*"],
        "description": None,
        "secretId": str(secret_id),
        "registeredAt": "2026-04-01T09:00:00.000Z",
    }
    event = codec.decode("WebhookEndpointRegistered", WebhookEndpointRegistered.schema_version, data)

    assert event.events == ("CandidateKeyIssued", "assessment.*")
    assert type(event.events) is tuple
    assert event.registered_at == NOW

    decode = codec._decoder(tuple[str, ...])
    assert decode(["a", "b"]) == ("a", "b")
    assert decode(None) is None
    assert decode([]) == ()
