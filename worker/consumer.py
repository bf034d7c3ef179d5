"""The RabbitMQ side of the worker: consume in batches, ack after commit, dead-letter poison.

Errors are told apart: a lost broker or database connection is retried (the unacked batch
goes back to the queue when the connection closes); a message that cannot be decoded, or that
fails on its own every time, is dead-lettered with the reason so it never blocks the queue.
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
from sqlalchemy.exc import DBAPIError

from events.rabbitmq import broker
from events.rabbitmq.broker import connection_parameters, declare_topology
from events.runtime.reconnect import keep_running
from worker import metrics
from worker.batches import process_batch, recoverable
from worker.handler import EventHandler

log = logging.getLogger(__name__)

SWEEP_EVERY_SECONDS = 5.0


@dataclass
class Delivery:
    tag: int
    routing_key: str
    properties: pika.BasicProperties
    body: bytes


class Worker:
    def __init__(
        self,
        handler: EventHandler,
        broker_url: str,
        exchange: str,
        queue: str,
        prefetch: int = 500,
        attempts: int = 3,
        linger_seconds: float = 0.005,
        queue_type: str = "quorum",
    ) -> None:
        self.handler = handler
        self.broker_url = broker_url
        self.exchange = exchange
        self.queue = queue
        self.queue_type = queue_type
        self.dead_letter_queue = f"{queue}.dead"
        self.prefetch = prefetch
        self.attempts = attempts
        self.linger_seconds = linger_seconds
        self.dead_lettered = 0
        self._stop = threading.Event()
        self._buffer: list[Delivery] = []
        self._last_sweep = 0.0

    def stop(self) -> None:
        """Safe from a signal handler: the loop finishes its batch, then closes."""
        self._stop.set()

    def run(self, on_ready: Callable[[], None] | None = None) -> None:
        """Consume until `stop()`, reconnecting after every broker or database outage; ends
        early only on `broker.BrokerMisconfigured` or a bug."""
        with broker.naming_misconfiguration(self.broker_url):
            consume = lambda: self._consume(on_ready)  # noqa: E731
            keep_running(consume, self._stop, recoverable, "worker", self._wait_and_sweep)

    def _wait_and_sweep(self, seconds: float) -> None:
        """While the broker is away, keep projections moving from the store itself."""
        self._maybe_sweep()
        self._stop.wait(seconds)

    def _maybe_sweep(self) -> None:
        if time.monotonic() - self._last_sweep < SWEEP_EVERY_SECONDS:
            return
        self._last_sweep = time.monotonic()
        try:
            self.handler.housekeeping()
        except DBAPIError as error:
            log.warning("sweep failed: %r", error)
        except Exception:
            log.exception("sweep failed; its events stay pending and are tried again")

    def _consume(self, on_ready: Callable[[], None] | None) -> None:
        connection = pika.BlockingConnection(connection_parameters(self.broker_url))
        self._buffer.clear()
        try:
            channel = connection.channel()
            declare_topology(channel, self.exchange, self.queue, self.queue_type)
            channel.confirm_delivery()  # dead-lettering is a publish; it must not be lost
            channel.basic_qos(prefetch_count=self.prefetch)
            channel.basic_consume(self.queue, on_message_callback=self._on_message)
            log.info("worker consuming %s", self.queue)
            if on_ready is not None:
                on_ready()
            while not self._stop.is_set():
                connection.process_data_events(time_limit=0.5)
                if self._buffer:
                    self._linger(connection)
                    self._process(channel, self._take_batch())
                self._maybe_sweep()
        finally:
            if connection.is_open:
                with contextlib.suppress(AMQPError, OSError):
                    connection.close()  # unacked deliveries go back to the queue

    def _linger(self, connection: pika.BlockingConnection) -> None:
        """Let a batch fill for a few milliseconds: each batch costs a handful of round
        trips whatever its size, so under load this trades a little latency for much less
        work per event."""
        deadline = time.monotonic() + self.linger_seconds
        while len(self._buffer) < self.prefetch and (left := deadline - time.monotonic()) > 0:
            connection.process_data_events(time_limit=left)

    def _on_message(self, _channel, method, properties, body) -> None:
        self._buffer.append(Delivery(method.delivery_tag, method.routing_key, properties, body))

    def _take_batch(self) -> list[Delivery]:
        batch, self._buffer = self._buffer, []
        return batch

    def _process(self, channel: BlockingChannel, batch: list[Delivery]) -> None:
        process_batch(
            self.handler,
            batch,
            lambda delivery: delivery.body,
            lambda delivery, reason: self._dead_letter(channel, delivery, reason),
            self.attempts,
        )
        channel.basic_ack(delivery_tag=batch[-1].tag, multiple=True)

    def _dead_letter(self, channel: BlockingChannel, delivery: Delivery, reason: str) -> None:
        correlation_id = delivery.properties.correlation_id or (delivery.properties.headers or {}).get(
            "correlation_id"
        )
        log.error(
            "dead-lettering message %s: %s; correlation %s",
            delivery.properties.message_id,
            reason,
            correlation_id,
            extra={
                "message_id": delivery.properties.message_id,
                "routing_key": delivery.routing_key,
                "correlation_id": correlation_id,
            },
        )
        headers = dict(delivery.properties.headers or {})
        headers.update({"x-dead-letter-reason": reason, "x-original-routing-key": delivery.routing_key})
        properties = pika.BasicProperties(
            content_type=delivery.properties.content_type,
            delivery_mode=pika.DeliveryMode.Persistent,
            message_id=delivery.properties.message_id,
            type=delivery.properties.type,
            correlation_id=delivery.properties.correlation_id,
            headers=headers,
        )
        channel.basic_publish("", self.dead_letter_queue, delivery.body, properties)
        self.dead_lettered += 1
        metrics.worker_dead_lettered.labels(metrics.dead_letter_reason(reason)).inc()
