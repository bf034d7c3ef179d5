"""The notifier's RabbitMQ side: its own durable queue bound to `candidate_key.issued`, manual
acks after the outcome is committed, a dead-letter queue `<queue>.dead`, and the shared
reconnect loop.

Messages are handled one at a time, in arrival order, with a prefetch window so the next ones
are already here. Between messages (at least every `sweep_seconds`) the sweep takes up the
invitations due again after a transient failure and those whose claim outlived its lease. A
lost broker or database connection ends the session and `keep_running` starts another after
a backoff: unacked messages go back to the queue, claimed rows come back after their lease.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import pika
from pika.adapters.blocking_connection import BlockingChannel
from pika.exceptions import AMQPError

from events import messages
from events.model import CandidateKeyIssued, RecordedEvent
from events.rabbitmq import broker
from events.rabbitmq.broker import connection_parameters, declare_consumer_queue
from events.rabbitmq.connection import message_properties
from events.runtime.reconnect import keep_running
from worker.batches import recoverable
from worker.notifier import metrics
from worker.notifier.invitations import InvitationMailer

log = logging.getLogger(__name__)

ROUTING_KEYS = [CandidateKeyIssued.routing_key]
QUEUE_DEPTH_EVERY_SECONDS = 5.0


@dataclass
class Delivery:
    tag: int
    routing_key: str
    properties: pika.BasicProperties
    body: bytes


class Notifier:
    def __init__(
        self,
        mailer: InvitationMailer,
        broker_url: str,
        exchange: str,
        queue: str,
        prefetch: int = 50,
        sweep_seconds: float = 1.0,
        queue_type: str = "quorum",
    ) -> None:
        self.mailer = mailer
        self.broker_url = broker_url
        self.exchange = exchange
        self.queue = queue
        self.queue_type = queue_type
        self.dead_letter_queue = f"{queue}.dead"
        self.prefetch = prefetch
        self.sweep_seconds = sweep_seconds
        self.dead_lettered = 0
        self._stop = threading.Event()
        self._buffer: list[Delivery] = []
        self._last_sweep = 0.0
        self._last_depth = 0.0

    def stop(self) -> None:
        """Safe from a signal handler: the loop finishes the message in hand, then closes."""
        self._stop.set()

    def run(self, on_ready: Callable[[], None] | None = None) -> None:
        """Consume until `stop()`, reconnecting after every broker or database outage; ends
        early only on `broker.BrokerMisconfigured` or a bug."""
        with broker.naming_misconfiguration(self.broker_url):
            keep_running(lambda: self._consume(on_ready), self._stop, recoverable, "notifier")
        self.mailer.sender.close()

    def _consume(self, on_ready: Callable[[], None] | None) -> None:
        connection = pika.BlockingConnection(connection_parameters(self.broker_url))
        self._buffer.clear()
        try:
            channel = connection.channel()
            declare_consumer_queue(
                channel,
                self.exchange,
                self.queue,
                ROUTING_KEYS,
                "ASSESSMENTS_NOTIFIER_QUEUE",
                self.queue_type,
            )
            channel.confirm_delivery()  # dead-lettering is a publish; it must not be lost
            channel.basic_qos(prefetch_count=self.prefetch)
            channel.basic_consume(self.queue, on_message_callback=self._on_message)
            log.info("notifier consuming %s", self.queue)
            if on_ready is not None:
                on_ready()
            while not self._stop.is_set():
                connection.process_data_events(time_limit=0 if self._buffer else 0.5)
                if self._buffer:
                    self._handle(channel, self._buffer.pop(0))
                self._housekeeping(channel)
        finally:
            if connection.is_open:
                with contextlib.suppress(AMQPError, OSError):
                    connection.close()  # unacked deliveries go back to the queue

    def _on_message(self, _channel, method, properties, body) -> None:
        self._buffer.append(Delivery(method.delivery_tag, method.routing_key, properties, body))

    def _handle(self, channel: BlockingChannel, delivery: Delivery) -> None:
        try:
            recorded = messages.decode(delivery.body)
        except messages.UndecodableMessage as error:
            self._dead_letter_delivery(channel, delivery, f"undecodable: {error}")
            metrics.dead_lettered.labels("undecodable").inc()
        else:
            self.mailer.on_event(
                recorded, lambda _issued, reason: self._dead_letter_delivery(channel, delivery, reason)
            )
        channel.basic_ack(delivery_tag=delivery.tag)

    def _housekeeping(self, channel: BlockingChannel) -> None:
        now = time.monotonic()
        if now - self._last_sweep >= self.sweep_seconds:
            self._last_sweep = now
            self.mailer.sweep(lambda issued, reason: self._dead_letter_event(channel, issued, reason))
        if now - self._last_depth >= QUEUE_DEPTH_EVERY_SECONDS:
            self._last_depth = now
            depth = channel.queue_declare(queue=self.queue, passive=True).method.message_count
            metrics.queue_depth.set(depth)

    def _dead_letter_delivery(self, channel: BlockingChannel, delivery: Delivery, reason: str) -> None:
        self._dead_letter(channel, delivery.body, delivery.properties, delivery.routing_key, reason)

    def _dead_letter_event(self, channel: BlockingChannel, issued: RecordedEvent, reason: str) -> None:
        """From the sweep, with no message in hand: the event's message as the relay sent it."""
        properties = message_properties(issued)
        self._dead_letter(channel, messages.encode(issued), properties, issued.event.routing_key, reason)

    def _dead_letter(
        self,
        channel: BlockingChannel,
        body: bytes,
        original: pika.BasicProperties,
        routing_key: str,
        reason: str,
    ) -> None:
        log.error(
            "dead-lettering message %s: %s",
            original.message_id,
            reason,
            extra={"message_id": original.message_id, "routing_key": routing_key},
        )
        headers = dict(original.headers or {})
        headers.update({"x-dead-letter-reason": reason, "x-original-routing-key": routing_key})
        properties = pika.BasicProperties(
            content_type=original.content_type,
            delivery_mode=pika.DeliveryMode.Persistent,
            message_id=original.message_id,
            type=original.type,
            correlation_id=original.correlation_id,
            headers=headers,
        )
        channel.basic_publish("", self.dead_letter_queue, body, properties)
        self.dead_lettered += 1
