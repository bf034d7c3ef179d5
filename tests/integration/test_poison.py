"""Poison messages go to `<queue>.dead` with the reason, after a bounded number of attempts,
and never block the messages behind them."""

from __future__ import annotations

import uuid

from events import messages
from events.rabbitmq.broker import ensure_topology
from projections import default_projections
from tests.integration.helpers import assessment_versions, create, envelope_with, pending_count
from tests.support.wait import wait_for
from worker import consumer
from worker.handler import EventHandler


class FailsOnOneEvent(EventHandler):
    """The real handler with a bug that raises every time it meets one particular event."""

    def __init__(self, system, poison_id: uuid.UUID) -> None:
        super().__init__(system.engine, system.store, default_projections())
        self.poison_id = poison_id
        self.failures = 0

    def apply(self, events):  # where both a message's events and a swept stream are applied
        if any(recorded.event_id == self.poison_id for recorded in events):
            self.failures += 1
            raise RuntimeError(f"projection bug on {self.poison_id}")
        super().apply(events)


class FailsOnOneEventAndSweepsSoon(FailsOnOneEvent):
    """Sweeps streams pending for half a second rather than five, to keep the test short."""

    def sweep(self, older_than_seconds: float = 5.0, limit: int = 100) -> int:
        return super().sweep(0.5, limit)


def dead_letters(broker, system, count: int) -> list:
    return broker.take(system.settings.dead_letter_queue, count)


def test_undecodable_and_unknown_messages_are_dead_lettered_and_the_next_one_is_projected(
    system, service, broker, start_worker, org_id
):
    start_worker()
    stored = create(service, org_id)
    unknown_type = envelope_with(stored, type="AssessmentRenamed")

    broker.publish(b"not json", "assessment.created")
    broker.publish(unknown_type, "assessment.renamed")
    broker.publish_event(stored)

    wait_for(lambda: pending_count(system.engine) == 0, 10, "the valid event projected")
    assert assessment_versions(system.engine) == {stored.stream_id: 1}
    dead = dead_letters(broker, system, 2)
    assert sorted(body for _, _, body in dead) == sorted([b"not json", unknown_type])
    for _, properties, _ in dead:
        assert properties.headers["x-dead-letter-reason"].startswith("undecodable")
    assert broker.message_count(system.settings.dead_letter_queue) == 0


def test_an_event_that_fails_every_time_is_dead_lettered_and_the_rest_of_its_batch_applied(
    system, service, broker, start_worker, org_id
):
    settings = system.settings
    ensure_topology(settings.broker_url, settings.exchange, settings.worker_queue)
    before, poison, after = (create(service, org_id, f"Assessment {n}") for n in range(3))
    broker.publish_events([before, poison, after])
    handler = FailsOnOneEvent(system, poison.event_id)

    worker = start_worker(handler)

    wait_for(lambda: pending_count(system.engine) == 1, 10, "every event but the poison projected")
    ((_, properties, body),) = dead_letters(broker, system, 1)
    assert properties.message_id == str(poison.event_id)
    assert properties.headers["x-dead-letter-reason"].startswith(f"failed {worker.attempts} times")
    assert properties.headers["x-original-routing-key"] == "assessment.created"
    assert body == messages.encode(poison)
    assert worker.attempts <= handler.failures <= worker.attempts + 1
    assert set(assessment_versions(system.engine)) == {before.stream_id, after.stream_id}
    assert broker.message_count(settings.worker_queue) == 0


def test_a_poison_event_left_pending_does_not_stop_the_worker_when_it_is_swept(
    system, service, broker, start_worker, org_id, monkeypatch
):
    monkeypatch.setattr(consumer, "SWEEP_EVERY_SECONDS", 0.2)
    poison = create(service, org_id)
    handler = FailsOnOneEventAndSweepsSoon(system, poison.event_id)
    worker = start_worker(handler)
    broker.publish_event(poison)
    wait_for(lambda: worker.dead_lettered == 1, 10, "the poison message dead-lettered")
    wait_for(lambda: handler.failures > 4, 10, "the sweep to retry the poison stream from the store")

    later = create(service, org_id)
    broker.publish_event(later)

    wait_for(lambda: later.stream_id in assessment_versions(system.engine), 5, "the next event projected")
