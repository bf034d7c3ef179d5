"""The relay's batch bookkeeping (no broker, no database): which events a confirm settles, which
are removed from the outbox at the next read, and when the next read comes."""

from __future__ import annotations

import uuid

from events.model import StoredEvent
from events.rabbitmq.batching import Batching
from tests.unit.builders import NOW


class Clock:
    """Seconds that move only when a test says so."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def stored(position: int) -> StoredEvent:
    stream_id = uuid.uuid4()
    return StoredEvent(position, uuid.uuid4(), stream_id, 1, "AssessmentDeleted", 1, {}, {}, NOW)


def batching(batch_size: int = 3, interval: float = 0.015) -> tuple[Batching, Clock]:
    clock = Clock()
    return Batching(batch_size, interval, clock=clock, timer=clock), clock


def publish(batches: Batching, *events: StoredEvent) -> None:
    """What the relay does with a batch it read (all of it sent)."""
    batches.start_batch(len(events))
    for event in events:
        batches.sent(event)
    batches.end_sending()


def test_a_multiple_ack_settles_every_tag_up_to_its_own_and_no_further():
    batches, _ = batching()
    first, second, third = stored(1), stored(2), stored(3)
    publish(batches, first, second, third)

    settled = batches.confirm(2, multiple=True, ack=True)

    assert [event for event, _ in settled] == [first, second]
    assert list(batches.unconfirmed) == [3]
    assert not batches.batch_settled


def test_a_single_ack_settles_only_its_tag():
    batches, _ = batching()
    first, second = stored(1), stored(2)
    publish(batches, first, second)

    assert [event for event, _ in batches.confirm(2, multiple=False, ack=True)] == [second]
    assert list(batches.unconfirmed) == [1]


def test_only_acked_events_are_handed_over_for_removal_and_only_once():
    batches, _ = batching()
    acked, nacked = stored(1), stored(2)
    publish(batches, acked, nacked)
    batches.confirm(1, multiple=False, ack=True)
    batches.confirm(2, multiple=False, ack=False)

    assert batches.batch_settled
    assert batches.start_read() == [acked]
    assert batches.start_read() == []


def test_a_confirm_for_a_tag_already_settled_settles_nothing():
    batches, _ = batching()
    publish(batches, stored(1))
    batches.confirm(1, multiple=False, ack=True)

    assert batches.confirm(1, multiple=False, ack=True) == []
    assert len(batches.start_read()) == 1


def test_each_settled_event_comes_with_its_seconds_in_flight():
    batches, clock = batching()
    publish(batches, stored(1))
    clock.now += 0.25
    publish(batches, stored(2))
    clock.now += 0.5

    assert [seconds for _, seconds in batches.confirm(2, multiple=True, ack=True)] == [0.75, 0.5]


def test_the_next_read_waits_for_the_batch_in_flight_and_for_a_linger():
    batches, _ = batching()
    assert not batches.waiting
    publish(batches, stored(1))
    assert batches.waiting
    batches.confirm(1, multiple=False, ack=True)
    assert not batches.waiting

    assert batches.start_linger()
    assert not batches.start_linger()  # one linger at a time
    assert batches.waiting
    batches.end_linger()
    assert not batches.waiting


def test_a_batch_sent_in_parts_is_not_settled_by_its_first_parts_confirms():
    batches, _ = batching()
    first, second = stored(1), stored(2)
    batches.start_batch(2)
    batches.sent(first)
    batches.confirm(1, multiple=False, ack=True)  # before the second part is sent

    assert not batches.batch_settled
    assert batches.waiting  # no read may start in between
    batches.sent(second)
    batches.end_sending()
    assert not batches.batch_settled
    batches.confirm(2, multiple=False, ack=True)
    assert batches.batch_settled
    assert not batches.waiting
    assert batches.start_read() == [first, second]


def test_after_a_full_batch_the_next_read_comes_at_once():
    batches, _ = batching(batch_size=2, interval=30.0)
    batches.start_read()
    publish(batches, stored(1), stored(2))
    batches.confirm(2, multiple=True, ack=True)

    assert batches.wait_before_next_read() == 0.0


def test_after_a_partial_batch_the_next_read_comes_a_batch_interval_after_the_last():
    batches, clock = batching(batch_size=3, interval=0.5)
    batches.start_read()
    publish(batches, stored(1))
    clock.now += 0.125

    assert batches.wait_before_next_read() == 0.375
    clock.now += 0.5
    assert batches.wait_before_next_read() < 0


def test_a_new_channel_forgets_what_was_in_flight_and_numbers_from_one_again():
    batches, _ = batching()
    publish(batches, stored(1), stored(2))
    batches.confirm(1, multiple=False, ack=True)
    batches.start_linger()

    batches.reset()
    again = stored(3)
    publish(batches, again)

    assert not batches.lingering
    assert batches.start_read() == []
    assert [(tag, event) for tag, (event, _) in batches.unconfirmed.items()] == [(1, again)]
