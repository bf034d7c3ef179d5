"""Webhooks end to end: the API registers endpoints, the relay publishes to real RabbitMQ, the
dispatcher records deliveries in real PostgreSQL and POSTs them to a real HTTP receiver on
127.0.0.1 (the only place the tests' resolver knows). Retry schedules are a fraction of a
second here; the production schedule is a setting."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
import uuid
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import text
from standardwebhooks.webhooks import Webhook

from events.model import WebhookEndpointDisabled
from events.rabbitmq.republish import republish
from events.sql import tenancy
from events.webhooks import Resolver
from projections import default_projections
from projections.rebuild import rebuild
from tests.e2e.helpers import body as assessment_body
from tests.integration.helpers import BrokerClient
from tests.support.receiver import Receiver, always, failing_first, loopback_only
from tests.support.system import Client, System
from tests.support.wait import wait_for

FAST = {
    "webhooks_retry_schedule": (0.2, 0.2, 0.2, 0.2),
    "webhooks_poll_seconds": 0.05,
    "webhooks_timeout_seconds": 2.0,
}


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver()
    yield found
    found.close()


@pytest.fixture
def hooks(make_settings) -> Iterator[Callable[..., tuple[System, Client]]]:
    """A system of the test's own (API, relay, dispatcher) with fast retries, and a reviewer
    client of a fresh organisation on it."""
    built: list[tuple[System, Client]] = []

    def make(resolve: Resolver = loopback_only, **overrides) -> tuple[System, Client]:
        system = System(make_settings(**{**FAST, **overrides}))
        system.start_relay()
        system.start_api()
        system.start_webhooks(resolve=resolve)
        org = tenancy.create_organisation(system.engine, f"Hooks {uuid.uuid4().hex[:6]}")
        client = Client(system.api.url, org.token)
        built.append((system, client))
        return system, client

    yield make
    for system, client in built:
        client.close()
        system.stop()


def register(client: Client, url: str, events: list[str] | None = None) -> dict:
    response = client.post("/v1/webhooks", json={"url": url, "events": events or ["#"]})
    assert response.status_code == 201, response.text
    return response.json()["webhook"]


def create_assessment(client: Client) -> str:
    response = client.post("/v1/assessments", json=assessment_body())
    assert response.status_code == 201, response.text
    return response.json()["assessment"]["id"]


def deliveries(client: Client, webhook_id: str) -> list[dict]:
    response = client.get(f"/v1/webhooks/{webhook_id}/deliveries")
    assert response.status_code == 200, response.text
    return response.json()["deliveries"]


def signatures_valid_for(secret: str, headers: dict[str, str], body: bytes) -> list[bool]:
    """The receiver's check, written from the Standard Webhooks specification (not with the
    service's code): one verdict per signature in the header."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return [
        hmac.compare_digest(given.partition(",")[2], expected) and given.startswith("v1,")
        for given in headers["webhook-signature"].split(" ")
    ]


# --- what a delivery is ----------------------------------------------------------------------


def test_a_delivery_is_a_signed_cloudevent_without_credentials(hooks, receiver: Receiver):
    _system, client = hooks()
    hook = register(client, receiver.endpoint("/hook"), ["assessment.created", "CandidateKeyIssued"])

    assessment_id = create_assessment(client)
    keys = client.post(f"/v1/assessments/{assessment_id}/keys", json={"count": 1}).json()["keys"]
    got = wait_for(lambda: len(receiver.received("/hook")) >= 2 and receiver.received("/hook"))

    created, issued = got
    assert [created.json["type"], issued.json["type"]] == ["AssessmentCreated", "CandidateKeyIssued"]
    assert created.json["specversion"] == "1.0" and created.json["subject"] == assessment_id
    assert created.headers["content-type"] == "application/cloudevents+json"
    for received in got:
        assert received.webhook_id == received.json["id"]
        assert abs(int(received.headers["webhook-timestamp"]) - time.time()) < 60
        assert signatures_valid_for(hook["secret"], received.headers, received.body) == [True]
        # and as the reference implementation checks it (its timestamp tolerance included)
        assert Webhook(hook["secret"]).verify(received.body, received.headers) == received.json
        assert hook["secret"].encode() not in received.body
    assert keys[0]["key"].encode() not in issued.body
    by_event = {d["eventId"]: d for d in deliveries(client, hook["id"])}
    assert set(by_event) == {created.webhook_id, issued.webhook_id}
    first = by_event[created.webhook_id]
    assert first["status"] == "succeeded" and first["attempts"] == 1 and first["responseStatus"] == 200
    assert first["latencyMs"] is not None and first["nextAttemptAt"] is None
    assert first["streamId"] == assessment_id


def test_only_matching_events_after_the_registration_are_delivered(hooks, receiver: Receiver):
    _system, client = hooks()
    before = create_assessment(client)
    hook = register(client, receiver.endpoint("/deleted"), ["assessment.deleted"])

    assert client.delete(f"/v1/assessments/{create_assessment(client)}").status_code == 200
    assert client.delete(f"/v1/assessments/{before}").status_code == 200
    wait_for(lambda: len(receiver.received("/deleted")) == 2)
    time.sleep(0.5)

    assert {r.json["type"] for r in receiver.received("/deleted")} == {"AssessmentDeleted"}
    assert len(deliveries(client, hook["id"])) == 2


# --- retries --------------------------------------------------------------------------------


def test_a_500_is_retried_with_the_same_webhook_id_until_it_succeeds(hooks, receiver: Receiver):
    _system, client = hooks()
    hook = register(client, receiver.endpoint("/flaky", failing_first(2)), ["assessment.created"])

    create_assessment(client)
    got = wait_for(lambda: len(receiver.received("/flaky")) >= 3 and receiver.received("/flaky"))

    assert len({r.webhook_id for r in got}) == 1
    assert len({r.body for r in got}) == 1
    assert got[1].at - got[0].at >= 0.2  # the schedule's first delay
    [delivery] = wait_for(lambda: [d for d in deliveries(client, hook["id"]) if d["status"] == "succeeded"])
    assert delivery["attempts"] == 3 and delivery["responseStatus"] == 200


def test_a_timeout_is_a_failed_attempt_and_is_retried(hooks, receiver: Receiver):
    _system, client = hooks(webhooks_timeout_seconds=0.5)
    slow_once = lambda _r, n: (200, 2.0 if n == 0 else 0.0)  # noqa: E731
    hook = register(client, receiver.endpoint("/slow", slow_once), ["assessment.created"])

    create_assessment(client)
    [delivery] = wait_for(lambda: [d for d in deliveries(client, hook["id"]) if d["status"] == "succeeded"])

    assert delivery["attempts"] == 2
    assert len(receiver.received("/slow")) == 2


def test_a_manual_retry_delivers_again_with_the_same_webhook_id(hooks, receiver: Receiver):
    _system, client = hooks()
    hook = register(client, receiver.endpoint("/again"), ["assessment.created"])
    create_assessment(client)
    [delivery] = wait_for(lambda: [d for d in deliveries(client, hook["id"]) if d["status"] == "succeeded"])

    retried = client.post(f"/v1/webhooks/{hook['id']}/deliveries/{delivery['id']}/retry")

    assert retried.status_code == 202, retried.text
    assert retried.json()["delivery"]["status"] == "pending"
    got = wait_for(lambda: len(receiver.received("/again")) == 2 and receiver.received("/again"))
    assert got[0].webhook_id == got[1].webhook_id == delivery["eventId"]
    wait_for(lambda: deliveries(client, hook["id"])[0]["attempts"] == 2)


# --- order, isolation, disabling ----------------------------------------------------------


def test_one_assessments_events_reach_an_endpoint_in_order_also_through_retries(hooks, receiver: Receiver):
    _system, client = hooks()
    register(client, receiver.endpoint("/ordered", failing_first(3)), ["#"])

    assessment_id = create_assessment(client)
    for _ in range(3):
        assert client.post(f"/v1/assessments/{assessment_id}/keys", json={"count": 2}).status_code == 201
    assert client.delete(f"/v1/assessments/{assessment_id}").status_code == 200
    # created, 6 keys, deleted: 8 events; the worker is not running, so no cascade revokes.
    wait_for(lambda: len({r.webhook_id for r in receiver.received("/ordered")}) == 8, timeout=20)

    versions = [r.json["streamversion"] for r in receiver.received("/ordered")]
    assert versions == sorted(versions), versions
    assert sorted(set(versions)) == list(range(1, 9))


def test_a_dead_endpoint_does_not_delay_a_healthy_one(hooks, receiver: Receiver):
    _system, client = hooks(webhooks_timeout_seconds=3.0)
    register(client, receiver.endpoint("/dead", always(200, delay=5.0)), ["assessment.created"])
    register(client, receiver.endpoint("/healthy"), ["assessment.created"])

    started = time.monotonic()
    for _ in range(5):
        create_assessment(client)
    wait_for(lambda: len(receiver.received("/healthy")) == 5, timeout=10)

    assert time.monotonic() - started < 2.5, "the healthy endpoint waited for the dead one"
    assert len(receiver.received("/dead")) >= 1


def test_an_endpoint_is_disabled_after_a_run_of_failures(hooks, receiver: Receiver):
    system, client = hooks(
        webhooks_retry_schedule=(0.1,) * 10,
        webhooks_disable_after_failures=3,
        webhooks_disable_after_seconds=0,
    )
    hook = register(client, receiver.endpoint("/down", always(503)), ["assessment.created"])

    create_assessment(client)
    wait_for(lambda: client.get(f"/v1/webhooks/{hook['id']}").json()["webhook"]["status"] == "disabled")

    shown = client.get(f"/v1/webhooks/{hook['id']}").json()["webhook"]
    assert shown["disabledReason"] == "consecutive_failures"
    disabled = [r.event for r in system.store.load(uuid.UUID(hook["id"]))][-1]
    assert isinstance(disabled, WebhookEndpointDisabled) and disabled.failures == 3
    wait_for(lambda: deliveries(client, hook["id"])[0]["status"] == "cancelled")
    attempts = len(receiver.received("/down"))
    create_assessment(client)
    time.sleep(1.0)
    assert len(receiver.received("/down")) == attempts == 3
    assert client.post(f"/v1/webhooks/{hook['id']}/rotate-secret").status_code == 409


def test_a_removed_endpoint_gets_nothing_more(hooks, receiver: Receiver):
    _system, client = hooks()
    hook = register(client, receiver.endpoint("/removed"), ["assessment.created"])
    assert client.delete(f"/v1/webhooks/{hook['id']}").status_code == 200

    create_assessment(client)
    time.sleep(1.0)

    assert receiver.received("/removed") == []
    assert client.get(f"/v1/webhooks/{hook['id']}").status_code == 404


def test_a_name_that_resolves_elsewhere_at_send_time_is_refused_before_connecting(hooks, receiver: Receiver):
    """DNS rebinding: `localhost` was loopback when registered (allowed in tests), and now
    resolves to the metadata address, which nothing allows: the attempt fails without a
    connection, and is retried on the schedule like any failure."""
    rebound = lambda host, _port: ["169.254.169.254"] if host == "localhost" else loopback_only(host, _port)  # noqa: E731
    _system, client = hooks(resolve=rebound)
    port = receiver.base_url.rsplit(":", 1)[1]
    receiver.endpoint("/rebound")
    hook = register(client, f"http://localhost:{port}/rebound", ["assessment.created"])

    create_assessment(client)
    [delivery] = wait_for(lambda: [d for d in deliveries(client, hook["id"]) if d["attempts"] >= 2])

    assert delivery["status"] == "pending" and delivery["responseStatus"] is None
    assert delivery["lastError"].startswith("refused:") and "metadata" in delivery["lastError"]
    assert receiver.received("/rebound") == []


# --- secrets --------------------------------------------------------------------------------


def test_after_a_rotation_both_secrets_sign_until_the_grace_period_ends(hooks, receiver: Receiver):
    system, client = hooks()
    hook = register(client, receiver.endpoint("/rotated"), ["assessment.created"])

    rotated = client.post(f"/v1/webhooks/{hook['id']}/rotate-secret")

    assert rotated.status_code == 200, rotated.text
    new = rotated.json()["webhook"]
    assert new["secret"].startswith("whsec_") and new["secret"] != hook["secret"]
    assert new["previousSecretValidUntil"] is not None
    create_assessment(client)
    [during] = wait_for(lambda: receiver.received("/rotated"))
    assert signatures_valid_for(new["secret"], during.headers, during.body) == [True, False]
    assert signatures_valid_for(hook["secret"], during.headers, during.body) == [False, True]

    system.clock.advance(hours=24, seconds=1)
    create_assessment(client)
    after = wait_for(lambda: len(receiver.received("/rotated")) == 2 and receiver.received("/rotated")[1])
    assert signatures_valid_for(new["secret"], after.headers, after.body) == [True]
    assert client.get(f"/v1/webhooks/{hook['id']}").json()["webhook"]["previousSecretValidUntil"] is None


def test_no_event_or_message_holds_a_webhook_secret(hooks, receiver: Receiver, broker_url: str):
    system, client = hooks()
    tap = BrokerClient(broker_url, system.settings.exchange)
    try:
        queue = tap.tap(f"{system.settings.webhooks_queue}.tap")
        hook = register(client, receiver.endpoint("/secret"), ["#"])
        rotated = client.post(f"/v1/webhooks/{hook['id']}/rotate-secret").json()["webhook"]
        messages = tap.take(queue, 2)
    finally:
        tap.close()

    secrets = [hook["secret"], rotated["secret"]]
    for _, properties, message in messages:
        assert properties.type in ("WebhookEndpointRegistered", "WebhookSecretRotated")
        assert not any(secret.encode() in message for secret in secrets)
    history = client.get(f"/v1/assessments/{hook['id']}/events")
    assert not any(secret in history.text for secret in secrets)


# --- at-least-once, never more than asked -----------------------------------------------


def test_a_redelivered_message_creates_no_second_delivery(hooks, receiver: Receiver, broker_url: str):
    system, client = hooks()
    hook = register(client, receiver.endpoint("/once"), ["assessment.created"])
    assessment_id = create_assessment(client)
    wait_for(lambda: receiver.received("/once"))

    recorded = system.store.load(uuid.UUID(assessment_id))
    again = BrokerClient(broker_url, system.settings.exchange)
    try:
        again.publish_events(recorded * 3)
    finally:
        again.close()
    time.sleep(1.0)

    assert len(receiver.received("/once")) == 1
    assert len(deliveries(client, hook["id"])) == 1


def test_republished_history_fires_no_webhook(hooks, receiver: Receiver):
    system, client = hooks()
    old = create_assessment(client)
    register(client, receiver.endpoint("/history"), ["#"])
    assert client.delete(f"/v1/assessments/{old}").status_code == 200
    wait_for(lambda: len(receiver.received("/history")) == 1)

    sent = republish(list(system.store.read_all()), system.settings.broker_url, system.settings.exchange)
    time.sleep(1.0)

    assert sent >= 3
    assert len(receiver.received("/history")) == 1  # the delete's, delivered once


def test_a_projection_rebuild_over_webhook_events_fires_no_webhook(hooks, receiver: Receiver):
    system, client = hooks()
    hook = register(client, receiver.endpoint("/rebuilt"), ["#"])
    create_assessment(client)
    client.post(f"/v1/webhooks/{hook['id']}/rotate-secret")
    wait_for(lambda: len(receiver.received("/rebuilt")) == 1)

    report = rebuild(system.engine, default_projections(), workers=1)
    time.sleep(1.0)

    assert report.events >= 3
    assert len(receiver.received("/rebuilt")) == 1
    with system.engine.connect() as conn:
        assert conn.scalar(text("SELECT count(*) FROM assessments_view")) == 1


def test_an_undecodable_message_is_dead_lettered_and_the_next_is_delivered(
    hooks, receiver: Receiver, broker_url: str
):
    system, client = hooks()
    register(client, receiver.endpoint("/after-poison"), ["assessment.created"])
    poison = BrokerClient(broker_url, system.settings.exchange)
    try:
        poison.publish(b"{not json")
        create_assessment(client)
        wait_for(lambda: receiver.received("/after-poison"))
        [(_, properties, body)] = poison.take(system.settings.webhooks_dead_letter_queue, 1)
    finally:
        poison.close()
    assert body == b"{not json"
    assert properties.headers["x-dead-letter-reason"].startswith("undecodable")
