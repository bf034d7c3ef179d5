"""An in-process stand-in for RabbitMQ and the relay, for `assessments dev` only.

Same messages (the CloudEvents envelope of `messages.encode_stored`), same outbox, same at-least-once
hand-over (a row leaves the outbox only after the broker took the message); what changes is
that the "broker" is a queue in memory and the relay is woken by the store directly.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from events import messages
from events.sql.outbox import SqlOutbox

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Message:
    routing_key: str
    body: bytes
    headers: dict = field(default_factory=dict)


class InProcessBroker:
    """One exchange with the worker's queue bound to every routing key, any other queue bound to
    routing keys of its own (`bind`: the notifier's, in `assessments dev`), and queues that get
    everything (`subscribe`: the webhooks dispatcher's)."""

    def __init__(self) -> None:
        self._queue: queue.Queue[Message] = queue.Queue()
        self._bound: dict[str, tuple[frozenset[str], queue.Queue[Message]]] = {}
        self._subscribers: list[queue.Queue[Message]] = []
        self.dead_letters: list[tuple[Message, str]] = []

    def bind(self, name: str, routing_keys: list[str]) -> None:
        """A queue `name` that gets a copy of every message with one of these routing keys."""
        self._bound.setdefault(name, (frozenset(routing_keys), queue.Queue()))

    def publish(self, message: Message) -> None:
        self._queue.put(message)
        for routing_keys, bound in self._bound.values():
            if message.routing_key in routing_keys:
                bound.put(message)
        for subscriber in self._subscribers:
            subscriber.put(message)

    def subscribe(self) -> queue.Queue[Message]:
        """A queue of its own that gets every message published from now on."""
        own: queue.Queue[Message] = queue.Queue()
        self._subscribers.append(own)
        return own

    def take(self, max_count: int, timeout: float, name: str | None = None) -> list[Message]:
        """Up to `max_count` messages of the worker's queue (or the bound queue `name`);
        waits up to `timeout` for the first one."""
        source = self._queue if name is None else self._bound[name][1]
        try:
            batch = [source.get(timeout=timeout)]
        except queue.Empty:
            return []
        while len(batch) < max_count:
            try:
                batch.append(source.get_nowait())
            except queue.Empty:
                break
        return batch

    def dead_letter(self, message: Message, reason: str) -> None:
        log.error("dead-lettering a %s message: %s", message.routing_key, reason)
        self.dead_letters.append((message, reason))


class InProcessRelay:
    def __init__(
        self, outbox: SqlOutbox, broker: InProcessBroker, batch_size: int = 500, poll_seconds: float = 1.0
    ) -> None:
        self.outbox = outbox
        self.broker = broker
        self.batch_size = batch_size
        self.poll_seconds = poll_seconds
        self._wake = threading.Event()
        self._stop = threading.Event()

    def wake(self) -> None:
        """Called by the store after each append."""
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def run(self, on_ready: Callable[[], None] | None = None) -> None:
        if on_ready:
            on_ready()
        while not self._stop.is_set():
            self._wake.wait(self.poll_seconds)
            self._wake.clear()
            try:
                self._publish_all()
            except Exception:
                log.exception("in-process relay failed; retrying")

    def _publish_all(self) -> None:
        while batch := self.outbox.unpublished(self.batch_size):
            for stored in batch:
                headers = {"correlation_id": stored.metadata.get("correlationId")}
                routing_key = messages.routing_key(stored.type_name)
                self.broker.publish(Message(routing_key, messages.encode_stored(stored), headers))
            self.outbox.mark_published([stored.position for stored in batch])
