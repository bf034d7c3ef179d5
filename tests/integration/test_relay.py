"""The relay: every committed event reaches the exchange as a CloudEvents message, in stream
order, and leaves the outbox only once the broker confirmed it."""

from __future__ import annotations

import dataclasses
import json
import time
from collections import defaultdict

import pika

from events import messages
from events.service import AssessmentService
from events.sql.engine import make_engine
from events.sql.store import PostgresEventStore
from tests.integration.helpers import candidates, create, kill_sessions, metadata, outbox_count
from tests.support.wait import wait_for


def test_appended_events_are_published_as_cloudevents_and_leave_the_outbox(system, service, broker, org_id):
    tap = broker.tap(f"{system.settings.worker_queue}.tap")
    system.start_relay()

    first = create(service, org_id)
    keys = service.issue_keys(org_id, first.stream_id, candidates(2), metadata(org_id))
    revocation = service.revoke_key(org_id, first.stream_id, keys[0].event.key_id, metadata(org_id))
    deletion = service.delete(org_id, first.stream_id, metadata(org_id))
    recorded = [first, *keys, *revocation, *deletion]
    taken = broker.take(tap, len(recorded))

    assert [method.routing_key for method, _, _ in taken] == [
        "assessment.created",
        "candidate_key.issued",
        "candidate_key.issued",
        "candidate_key.revoked",
        "assessment.deleted",
    ]
    for (_, properties, body), expected in zip(taken, recorded, strict=True):
        document = json.loads(body)
        assert document["specversion"] == "1.0"
        assert document["type"] == expected.type_name
        assert properties.message_id == str(expected.event_id)
        assert properties.delivery_mode == pika.DeliveryMode.Persistent.value
        assert properties.content_type == "application/cloudevents+json"
        decoded = messages.decode(body)
        assert (decoded.event_id, decoded.stream_version, decoded.position) == (
            expected.event_id,
            expected.stream_version,
            expected.position,
        )
        # all of the event but its personal data, which no message carries (`events.personal`)
        assert decoded.event == dataclasses.replace(expected.event, **dict.fromkeys(expected.event.personal))
        assert decoded.metadata["orgId"] == org_id
    wait_for(lambda: outbox_count(system.engine) == 0, 5, "an empty outbox")


def test_each_streams_events_are_published_in_stream_order(system, service, broker, org_id):
    tap = broker.tap(f"{system.settings.worker_queue}.tap")
    system.start_relay()
    streams = [create(service, org_id).stream_id for _ in range(5)]
    for round_ in range(4):
        for stream in streams:
            service.issue_keys(org_id, stream, candidates(round_ + 1), metadata(org_id))
    total = len(streams) * (1 + 1 + 2 + 3 + 4)

    versions = defaultdict(list)
    for _, _, body in broker.take(tap, total):
        decoded = messages.decode(body)
        versions[decoded.stream_id].append(decoded.stream_version)

    assert set(versions) == set(streams)
    assert all(published == list(range(1, 12)) for published in versions.values())
    wait_for(lambda: outbox_count(system.engine) == 0, 5, "an empty outbox")


def test_relay_keeps_publishing_after_its_database_sessions_are_killed(system, service, broker, org_id):
    tap = broker.tap(f"{system.settings.worker_queue}.tap")
    relay = system.start_relay()
    create(service, org_id)
    broker.take(tap, 1)
    assert kill_sessions(system.engine), "the relay's sessions should have been there to kill"
    # The pool the relay shares is not the test's to heal: a fresh one writes and reads, as the
    # API would after answering one 503.
    writer = make_engine(system.settings.database_url, pool_size=1)
    try:
        after_kill = [create(AssessmentService(PostgresEventStore(writer)), org_id) for _ in range(10)]

        published = broker.take_events(tap, [r.event_id for r in after_kill])
        wait_for(lambda: outbox_count(writer) == 0, 10, "an empty outbox after the kill")
    finally:
        writer.dispose()
    assert {r.event_id for r in after_kill} <= {r.event_id for r in published}
    assert relay.published >= 11
    assert system.relay.thread.is_alive()


def test_under_load_the_relay_reads_at_most_once_per_batch_interval(system, service, broker, org_id):
    tap = broker.tap(f"{system.settings.worker_queue}.tap")
    system.start_relay(batch_interval_seconds=0.6)
    create(service, org_id)
    broker.take(tap, 1)  # read, published and confirmed: the interval runs from that read

    second = create(service, org_id)
    committed_at = time.monotonic()

    # Not even the relay's 0.2 s safety-net poll may read before the interval is over.
    while time.monotonic() - committed_at < 0.3:
        assert broker.get(tap) is None, "read again before the batch interval was over"
        time.sleep(0.02)
    assert broker.take_events(tap, [second.event_id], timeout=5)


def test_a_full_batch_is_followed_at_once_whatever_the_batch_interval(system, service, broker, org_id):
    tap = broker.tap(f"{system.settings.worker_queue}.tap")
    backlog = [create(service, org_id) for _ in range(5)]
    system.start_relay(batch_size=2, batch_interval_seconds=30)

    # Two full batches, then the rest, well within the interval.
    published = broker.take_events(tap, [r.event_id for r in backlog], timeout=5)

    assert [r.event_id for r in published] == [r.event_id for r in backlog]
