"""Send stored events to the exchange again, for a downstream service that starts late or
lost data. Messages are byte-for-byte the originals (same message id, body and headers), so
idempotent consumers simply skip what they already had.

It publishes inside AMQP transactions of a batch each: a commit returns once the broker has
taken the whole batch, one round trip per batch instead of one confirm wait per message.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pika

from events import messages
from events.model import RecordedEvent
from events.rabbitmq.broker import connection_parameters
from events.rabbitmq.connection import message_properties


def topic_matches(pattern: str, routing_key: str) -> bool:
    """AMQP topic matching: `*` is exactly one word, `#` is zero or more words."""
    return _match(pattern.split("."), routing_key.split("."))


def _match(pattern: list[str], words: list[str]) -> bool:
    if not pattern:
        return not words
    head, rest = pattern[0], pattern[1:]
    if head == "#":
        return any(_match(rest, words[skip:]) for skip in range(len(words) + 1))
    return bool(words) and head in ("*", words[0]) and _match(rest, words[1:])


def select_events(
    events: Iterator[RecordedEvent], to_position: int | None, pattern: str | None
) -> Iterator[RecordedEvent]:
    for recorded in events:
        if to_position is not None and recorded.position > to_position:
            return
        if pattern is None or topic_matches(pattern, recorded.event.routing_key):
            yield recorded


def republish(
    events: Iterator[RecordedEvent],
    broker_url: str,
    exchange: str,
    queue: str | None = None,
    batch_size: int = 500,
    on_progress: Callable[[int, int], None] | None = None,
) -> int:
    """Publish `events` in order to `exchange` (or straight to `queue`); returns how many."""
    connection = pika.BlockingConnection(connection_parameters(broker_url))
    sent = 0
    try:
        channel = connection.channel()
        if queue:
            # The default exchange silently drops a message for a queue that does not exist.
            channel.queue_declare(queue, passive=True)
        channel.tx_select()
        for recorded in events:
            channel.basic_publish(
                exchange="" if queue else exchange,
                routing_key=queue or recorded.event.routing_key,
                body=messages.encode(recorded),
                properties=message_properties(recorded),
            )
            sent += 1
            if sent % batch_size == 0:
                channel.tx_commit()
                if on_progress:
                    on_progress(sent, recorded.position)
        channel.tx_commit()
    finally:
        if connection.is_open:
            connection.close()
    return sent
