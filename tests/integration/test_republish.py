"""`events republish`: a consumer that starts late gets the stored history again, in per-stream
order, as the very messages the relay published (same ids, same bytes), all of it or a slice by
position and routing key, to the exchange or straight to one queue."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import pika
import pytest

from events import messages
from events.model import RecordedEvent
from events.rabbitmq.republish import republish, select_events, topic_matches
from events.runtime.settings import Settings
from tests.conftest import RUN_ID, new_org
from tests.e2e.helpers import create, issue_keys
from tests.integration.helpers import BrokerClient, outbox_count, pending_count, run_cli, scalar
from tests.support.system import Client, System
from tests.support.wait import wait_for

Message = tuple[Any, pika.BasicProperties, bytes]


def queue_name(what: str = "tap") -> str:
    return f"test-{RUN_ID}-{uuid.uuid4().hex[:6]}.{what}"


def run_workload(client: Client) -> int:
    """Creates, keys with and without candidates, a revoke and a delete whose two keys the
    cascade revokes; returns how many revocations the store ends up with."""
    made = [create(client) for _ in range(4)]
    issue_keys(
        client, made[0]["id"], count=2, candidateEmails=["a@example.com", "b@example.com"], orgName="Acme"
    )
    keys = issue_keys(client, made[1]["id"], count=3)
    assert client.delete(f"/v1/assessments/{made[1]['id']}/keys/{keys[0]['id']}").status_code == 200
    issue_keys(client, made[2]["id"], count=2)
    assert client.delete(f"/v1/assessments/{made[2]['id']}").status_code == 200
    return 1 + 2


def take_until_sentinel(broker: BrokerClient, queue: str) -> list[Message]:
    """Everything on `queue` before a sentinel sent to it now: whatever was published before
    this call has been routed by then, so no waiting on something that should not come."""
    broker.channel.basic_publish("", queue, b"sentinel")
    taken: list[Message] = []

    def sentinel_seen() -> bool:
        while (message := broker.get(queue)) is not None:
            taken.append(message)
            if message[2] == b"sentinel":
                return True
        return False

    wait_for(sentinel_seen, 10, f"the sentinel on {queue}")
    return taken[:-1]


def settled(system: System, revocations: int) -> bool:
    revoked = scalar(system.engine, "SELECT count(*) FROM events WHERE type = 'CandidateKeyRevoked'")
    return revoked == revocations and outbox_count(system.engine) == 0 and pending_count(system.engine) == 0


@dataclass
class History:
    system: System
    events: list[RecordedEvent]
    #: What the relay published the first time, by message id.
    originals: dict[str, Message]


@pytest.fixture(scope="module")
def history(databases, broker_url, broker_names) -> Iterator[History]:
    """A system whose relay published a workload of three organisations to a queue bound before
    it started; then that queue is gone, as if its consumer had lost everything."""
    prefix = f"test-{RUN_ID}-{uuid.uuid4().hex[:6]}"
    names = (f"{prefix}.assessments.events", f"{prefix}.assessments.worker")
    broker_names.append(names)
    settings = Settings(
        database_url=databases.fresh(), broker_url=broker_url, exchange=names[0], worker_queue=names[1]
    )
    system = System(settings)
    try:
        system.start_relay()
        system.start_worker()
        system.start_api()
        broker = BrokerClient(broker_url, settings.exchange)
        try:
            tap = broker.tap(queue_name())
            with ExitStack() as stack:
                clients = [Client(system.api.url, new_org(settings.database_url).token) for _ in range(3)]
                revocations = sum(run_workload(stack.enter_context(client)) for client in clients)
            wait_for(lambda: settled(system, revocations), 20, "the workload published and projected")
            events = list(system.store.read_all())
            originals: dict[str, Message] = {}

            def all_published() -> bool:
                while (message := broker.get(tap)) is not None:
                    originals[message[1].message_id] = message
                return len(originals) == len(events)

            wait_for(all_published, 10, "every event on the queue bound before the workload")
        finally:
            broker.close()
        yield History(system, events, originals)
    finally:
        system.stop()


@pytest.fixture
def amqp(history: History) -> Iterator[BrokerClient]:
    """A pika connection of the test's own; its queues are deleted when the test ends."""
    client = BrokerClient(history.system.settings.broker_url, history.system.settings.exchange)
    yield client
    client.close()


@pytest.fixture
def direct(amqp: BrokerClient) -> Iterator[str]:
    """A queue bound to nothing: only what is sent to it by name arrives."""
    name = queue_name("direct")
    amqp.channel.queue_declare(name)
    yield name
    amqp.channel.queue_delete(name)


def republish_all(history: History, **options) -> int:
    settings = history.system.settings
    return republish(history.system.store.read_all(), settings.broker_url, settings.exchange, **options)


def envelope_of(message: Message) -> dict[str, Any]:
    return json.loads(message[2])


# --- the whole history -------------------------------------------------------------------------


def test_a_queue_bound_after_the_fact_receives_the_whole_history_in_per_stream_order(history, amqp):
    late = amqp.tap(queue_name())

    sent = republish_all(history, batch_size=7)

    received = amqp.take(late, len(history.events))
    assert sent == len(history.events) == len(received)
    versions: dict[str, list[int]] = {}
    for message in received:
        envelope = envelope_of(message)
        versions.setdefault(envelope["streamid"], []).append(envelope["streamversion"])
    assert len(versions) == 12
    assert all(seen == list(range(1, len(seen) + 1)) for seen in versions.values()), versions
    assert take_until_sentinel(amqp, late) == []


def test_republished_messages_keep_the_original_message_ids(history, amqp):
    late = amqp.tap(queue_name())

    republish_all(history)

    received = amqp.take(late, len(history.events))
    stored = [str(r.event_id) for r in history.events]
    assert [m[1].message_id for m in received] == stored
    assert [envelope_of(m)["id"] for m in received] == stored


def test_republished_messages_are_byte_for_byte_what_the_relay_published(history, amqp):
    late = amqp.tap(queue_name())

    republish_all(history)

    received = amqp.take(late, len(history.events))
    for _, properties, body in received:
        _, original_properties, original_body = history.originals[properties.message_id]
        assert body == original_body
        assert vars(properties) == vars(original_properties)
        assert messages.decode(body).event == messages.decode(original_body).event


@pytest.mark.parametrize("pattern", ["candidate_key.#", "assessment.*", "*.revoked"])
def test_a_routing_key_pattern_selects_only_the_matching_events(history, amqp, pattern):
    late = amqp.tap(queue_name())
    expected = [r for r in history.events if topic_matches(pattern, r.event.routing_key)]
    settings = history.system.settings

    sent = republish(select_events(history.system.store.read_all(), None, pattern), **_to(settings))

    received = take_until_sentinel(amqp, late)
    assert sent == len(expected) > 0
    assert [m[1].message_id for m in received] == [str(r.event_id) for r in expected]
    assert {m[0].routing_key for m in received} == {r.event.routing_key for r in expected}


def _to(settings: Settings) -> dict[str, str]:
    return {"broker_url": settings.broker_url, "exchange": settings.exchange}


def test_to_position_bounds_the_republish(history, amqp):
    late = amqp.tap(queue_name())
    last = history.events[len(history.events) // 2].position
    settings = history.system.settings

    sent = republish(select_events(history.system.store.read_all(), last, None), **_to(settings))

    received = take_until_sentinel(amqp, late)
    assert sent == len(received) == sum(1 for r in history.events if r.position <= last)
    assert max(envelope_of(m)["position"] for m in received) == last


def test_a_named_queue_gets_the_history_straight_and_the_exchange_gets_nothing(history, amqp, direct):
    bound = amqp.tap(queue_name())

    republish_all(history, queue=direct)

    received = amqp.take(direct, len(history.events))
    assert [m[1].message_id for m in received] == [str(r.event_id) for r in history.events]
    assert {m[0].routing_key for m in received} == {direct}
    assert take_until_sentinel(amqp, direct) == []
    assert take_until_sentinel(amqp, bound) == []


# --- topic patterns, as RabbitMQ matches them --------------------------------------------------

PATTERNS = ["#", "*", "*.*", "assessment.*", "candidate_key.#", "#.revoked", "*.issued.#", "#.#", "key.#"]
ROUTING_KEYS = [
    "assessment.created",
    "assessment.deleted",
    "candidate_key.issued",
    "candidate_key.revoked",
    "assessment",
    "candidate_key.issued.v2",
]


def test_topic_matches_selects_what_rabbitmq_routes(broker_url):
    exchange = f"test-{RUN_ID}-{uuid.uuid4().hex[:6]}.topics"
    connection = pika.BlockingConnection(pika.URLParameters(broker_url))
    try:
        channel = connection.channel()
        channel.exchange_declare(exchange, "topic", auto_delete=True)
        queues = {}
        for pattern in PATTERNS:
            queues[pattern] = channel.queue_declare("", exclusive=True).method.queue
            channel.queue_bind(queues[pattern], exchange, pattern)
        for key in ROUTING_KEYS:
            channel.basic_publish(exchange, key, key.encode())
        for queue in queues.values():
            channel.basic_publish("", queue, b"sentinel")
        routed = {}
        for pattern, queue in queues.items():
            bodies: list[bytes] = []
            for _, _, body in channel.consume(queue, auto_ack=True, inactivity_timeout=10):
                assert body is not None, f"no sentinel on the queue of {pattern}"
                if body == b"sentinel":
                    break
                bodies.append(body)
            channel.cancel()
            routed[pattern] = {body.decode() for body in bodies}
    finally:
        connection.close()

    assert routed == {p: {k for k in ROUTING_KEYS if topic_matches(p, k)} for p in PATTERNS}


# --- the command line --------------------------------------------------------------------------


def cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(settings, "events", "republish", *args)


def test_the_cli_republishes_the_key_events_of_a_position_range_to_the_exchange(history, amqp):
    late = amqp.tap(queue_name())
    first, last = history.events[3].position, history.events[-4].position
    expected = [
        r
        for r in history.events
        if first <= r.position <= last and r.event.routing_key.startswith("candidate_key.")
    ]

    done = cli(
        history.system.settings,
        "--from-position",
        str(first),
        "--to-position",
        str(last),
        "--routing-key",
        "candidate_key.#",
    )

    assert done.returncode == 0, done.stderr
    assert f"republished {len(expected)} event(s)" in done.stdout
    received = take_until_sentinel(amqp, late)
    assert [m[1].message_id for m in received] == [str(r.event_id) for r in expected]
    assert {r.event.type_name for r in expected} == {"CandidateKeyIssued", "CandidateKeyRevoked"}
    assert [m[2] for m in received] == [history.originals[str(r.event_id)][2] for r in expected]


def test_the_cli_sends_the_history_from_a_position_straight_to_a_named_queue(history, amqp, direct):
    bound = amqp.tap(queue_name())
    first = history.events[5].position

    done = cli(history.system.settings, "--from-position", str(first), "--queue", direct)

    assert done.returncode == 0, done.stderr
    received = take_until_sentinel(amqp, direct)
    assert [m[1].message_id for m in received] == [str(r.event_id) for r in history.events[5:]]
    assert take_until_sentinel(amqp, bound) == []


def test_the_cli_needs_a_from_position(history):
    done = cli(history.system.settings, "--to-position", "5")

    assert done.returncode == 2
    assert "--from-position" in done.stderr


def test_the_cli_fails_for_a_queue_that_does_not_exist_instead_of_dropping_the_history(history):
    done = cli(history.system.settings, "--from-position", "1", "--queue", queue_name("missing"))

    assert done.returncode != 0
    assert "republished" not in done.stdout
