"""The relay: publishes outbox rows to RabbitMQ and deletes them once the broker confirmed.

Why pika's asynchronous connection: a `BlockingChannel` waits for each confirm before the next
publish (about 800 messages/s here). The relay instead publishes a whole batch, lets the
confirms stream back, and only then marks the batch published and reads the next one (one
statement does both). Under a steady load it reads at most once per batch interval: each read,
burst of publishes and burst of confirms costs about the same for one event as for twenty, so
this trades a few milliseconds of latency for much less CPU on a busy machine. Reading
each batch from the head of the outbox keeps per-stream order and never skips a transaction
that committed late; a crash between confirm and delete only causes a duplicate, which every
consumer tolerates (delivery is at-least-once).

A batch the broker nacked (any message of it) ends the session: the relay removes what was
confirmed, and starts over on a new connection and channel after the usual backoff (see
`PublishesNacked` for why a new channel, and not just a retry on the old one).

The bookkeeping of the batches (what awaits a confirm, what to remove, when to read next) is
`events.rabbitmq.batching`; this module drives it from pika's callbacks and the outbox.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable, Sequence

import psycopg
from pika.adapters.select_connection import SelectConnection
from pika.spec import Basic
from sqlalchemy.exc import SQLAlchemyError

from events import messages
from events.model import StoredEvent
from events.rabbitmq import broker, metrics
from events.rabbitmq.batching import Batching
from events.rabbitmq.broker import connection_parameters, ensure_topology
from events.rabbitmq.connection import CoalescingConnection, message_properties
from events.runtime.reconnect import keep_running
from events.sql.outbox import OutboxListener, PostgresOutbox

log = logging.getLogger(__name__)

#: A batch leaves in parts of this many messages, each part in one write, with a turn of the
#: I/O loop between them: RabbitMQ takes in the first part while the relay encodes the next,
#: instead of waiting for the whole batch (on two cores, the relay and the broker then work
#: side by side rather than in turns).
SEND_PART = 100


class PublishesNacked(Exception):
    """The broker nacked events of a batch: worth a new session, never a retry on the channel.

    A quorum queue nacks while it cannot take a message (no leader; a full queue with
    `reject-publish`), and a new channel is what gets past the one case that lasts. RabbitMQ
    (3.10 at least) pins a channel to the leader the queue's record names when that channel
    first publishes to the queue; if that leader's node is down (it died and the new leader
    has not been recorded yet, about a second), the channel's publishes to the queue are nacked
    for as long as the channel lives, though the queue has a new leader that a new channel
    reaches at once. Ending the session also spaces the retries out (the backoff) instead of
    publishing the same nacked batch again every batch interval."""

    def __init__(self, count: int) -> None:
        super().__init__(f"the broker nacked {count} events; they stay in the outbox for a new channel")
        self.count = count


class Relay:
    def __init__(
        self,
        outbox: PostgresOutbox,
        broker_url: str,
        exchange: str,
        worker_queue: str,
        batch_size: int = 500,
        poll_seconds: float = 1.0,
        linger_seconds: float = 0.002,
        batch_interval_seconds: float = 0.015,
        queue_type: str = "quorum",
    ) -> None:
        self.outbox = outbox
        self.broker_url = broker_url
        self.exchange = exchange
        self.worker_queue = worker_queue
        self.queue_type = queue_type
        #: Which node of the broker URL's list the next session connects to: the same one as
        #: long as it serves, the next one after a session that failed (a node down).
        self._node = 0
        self.batch_size = batch_size
        self.poll_seconds = poll_seconds
        self.linger_seconds = linger_seconds
        self._batching = Batching(batch_size, batch_interval_seconds)
        self._idle = False
        self.published = 0
        self._stop = threading.Event()
        self._connection: CoalescingConnection | None = None
        self._channel = None
        self._listener: OutboxListener | None = None
        self._failure: Exception | None = None
        self._nacked = 0  # in the batch in flight; any ends the session once the batch settles

    # --- lifecycle ------------------------------------------------------------------------

    def run(self, on_ready: Callable[[], None] | None = None) -> None:
        """Publish until `stop()`, starting over after every broker or database outage; ends
        early only on `broker.BrokerMisconfigured` or a bug."""
        with broker.naming_misconfiguration(self.broker_url):
            keep_running(lambda: self._session(on_ready), self._stop, _recoverable, "relay")

    def _session(self, on_ready: Callable[[], None] | None) -> None:
        try:
            self._acquire_leadership()
            ensure_topology(self.broker_url, self.exchange, self.worker_queue, self.queue_type)
            self._serve(on_ready)
        except Exception:
            self._node += 1  # a failover: the next session tries the next node first
            raise
        finally:
            self._release()

    def stop(self) -> None:
        """Safe from a signal handler or another thread."""
        self._stop.set()
        connection = self._connection
        if connection is not None:
            connection.ioloop.add_callback_threadsafe(self._close)

    def _acquire_leadership(self) -> None:
        self._listener = self.outbox.listener()
        while not self._listener.try_lead():
            log.info("another relay is active; standing by")
            if self._stop.wait(2.0):
                return

    def _serve(self, on_ready: Callable[[], None] | None) -> None:
        if self._stop.is_set():
            return
        self._failure = None
        self._on_ready = on_ready
        nodes = connection_parameters(self.broker_url)
        self._connection = CoalescingConnection(
            nodes[self._node % len(nodes)],
            on_open_callback=self._on_connection_open,
            on_open_error_callback=self._on_connection_error,
            on_close_callback=self._on_connection_error,
        )
        try:
            self._connection.ioloop.start()
        finally:
            self._connection.ioloop.close()  # releases the loop's wake-up socket pair
        if self._failure is not None and not self._stop.is_set():
            raise self._failure

    def _release(self) -> None:
        metrics.relay_active.set(0)
        if self._listener is not None:
            self._listener.close()
        self._listener = None
        self._connection = None
        self._channel = None
        self._batching.reset()
        self._nacked = 0
        self._idle = False

    def _close(self) -> None:
        connection = self._connection
        if connection is None or connection.is_closing:
            return  # the close callback stops the loop
        if connection.is_open:
            connection.close()
        else:
            connection.ioloop.stop()

    # --- pika callbacks -------------------------------------------------------------------

    def _on_connection_open(self, connection: SelectConnection) -> None:
        connection.channel(on_open_callback=self._on_channel_open)

    def _on_connection_error(self, connection: SelectConnection, error: Exception) -> None:
        if self._failure is None:  # else the close that follows it, which says less
            self._failure = error if isinstance(error, Exception) else RuntimeError(str(error))
        # Stop on the next turn of the loop, after pika has finished closing the socket.
        connection.ioloop.call_later(0, connection.ioloop.stop)

    def _on_channel_open(self, channel) -> None:
        self._channel = channel
        self._batching.reset()  # a new channel numbers its messages from 1 again
        self._nacked = 0
        channel.add_on_close_callback(self._on_channel_closed)
        channel.add_on_return_callback(self._on_returned)
        channel.confirm_delivery(ack_nack_callback=self._on_confirm, callback=self._on_confirm_mode)

    def _on_confirm_mode(self, _frame) -> None:
        self._poll()
        metrics.relay_active.set(1)
        if self._on_ready is not None:
            self._on_ready()
        log.info("relay publishing to %s", self.exchange)

    def _on_channel_closed(self, _channel, reason: Exception) -> None:
        if not self._stop.is_set() and self._failure is None:
            log.warning("relay channel closed: %r", reason)
            self._failure = reason
        self._close()

    def _on_returned(self, _channel, method, properties, _body) -> None:
        log.error(
            "event %s unroutable (%s): no queue bound; correlation %s",
            properties.message_id,
            method.routing_key,
            properties.correlation_id,
            extra={"event_id": properties.message_id, "correlation_id": properties.correlation_id},
        )

    # --- idle and busy ----------------------------------------------------------------------
    #
    # Idle: the relay holds the idle lock and waits for a notification. Busy: it does not, and
    # reads the outbox again after every batch. Appends notify only an idle relay (see
    # `events.sql.tables.RELAY_IDLE_LOCK_ID`), so under load there are no notifications at all, each
    # of which woke every listening session of the database.

    def _go_idle(self) -> None:
        """Only after taking the lock (which waits for the appends in flight) may the caller
        conclude from an empty outbox that it can sleep: it must read once more."""
        self._listener.hold_idle_lock()
        ioloop = self._connection.ioloop
        ioloop.add_handler(self._listener.fileno(), self._on_notified, ioloop.READ)
        self._idle = True

    def _go_busy(self) -> None:
        if self._idle:
            self._connection.ioloop.remove_handler(self._listener.fileno())
            self._listener.release_idle_lock()
            self._idle = False

    def _on_notified(self, _fd, _events) -> None:
        try:
            self._listener.drain()
            self._go_busy()
        except psycopg.Error as error:
            self._lost_session(error)
            return
        self._linger(self.linger_seconds)

    def _lost_session(self, error: Exception) -> None:
        log.warning("relay lost its database session: %r", error)
        self._failure = error
        self._close()

    def _linger(self, seconds: float) -> None:
        """Let a few more appends commit before reading: one batch of confirms for many events."""
        if self._batching.start_linger():
            self._connection.ioloop.call_later(seconds, self._publish_after_linger)

    def _publish_after_linger(self) -> None:
        self._batching.end_linger()
        self._publish_batch()

    def _poll(self) -> None:
        """A slow safety net beside LISTEN/NOTIFY (a notification can be missed while the
        session reconnects)."""
        self._publish_batch()
        self._count_backlog()
        self._connection.ioloop.call_later(self.poll_seconds, self._poll)

    def _count_backlog(self) -> None:
        try:
            metrics.relay_outbox_backlog.set(self.outbox.backlog())
        except SQLAlchemyError as error:
            log.warning("relay cannot count the outbox: %r", error)

    # --- publishing -----------------------------------------------------------------------

    def _publish_batch(self) -> None:
        """Remove what the broker confirmed from the outbox and publish the next batch; while
        the relay is busy, one round trip does both."""
        if self._batching.waiting:
            return  # the batch in flight, or the linger, ends by coming back here
        published = self._batching.start_read()
        channel_open = self._channel is not None and self._channel.is_open and not self._nacked
        try:
            positions = [recorded.position for recorded in published]
            batch = self.outbox.advance(positions, self.batch_size if channel_open else 0)
        except SQLAlchemyError as error:
            log.warning("relay cannot use the outbox (confirmed events will be sent again): %r", error)
            return  # the poll timer tries again
        self._count_published(published)
        if not channel_open:
            return
        try:
            if not batch and not self._idle:
                self._go_idle()
                batch = self.outbox.unpublished(self.batch_size)  # what committed meanwhile
            if batch:
                self._go_busy()
        except SQLAlchemyError as error:
            log.warning("relay cannot read the outbox: %r", error)
            return
        except psycopg.Error as error:
            self._lost_session(error)
            return
        self._send(batch)

    def _send(self, batch: Sequence[StoredEvent]) -> None:
        self._batching.start_batch(len(batch))
        self._send_part(self._channel, batch, 0)

    def _send_part(self, channel, batch: Sequence[StoredEvent], start: int) -> None:
        """Publish `SEND_PART` messages of the batch from `start` in one write, and the rest
        after the I/O loop has sent them. A channel that closed meanwhile ends the batch: its
        successor starts over from the outbox (`Batching.reset`)."""
        if channel is not self._channel or not channel.is_open:
            return
        end = start + SEND_PART
        with self._connection.coalesced():
            for stored in batch[start:end]:
                self._batching.sent(stored)
                channel.basic_publish(
                    exchange=self.exchange,
                    routing_key=messages.routing_key(stored.type_name),
                    body=messages.encode_stored(stored),
                    properties=message_properties(stored),
                    mandatory=True,
                )
        if end < len(batch):
            self._connection.ioloop.call_later(0, lambda: self._send_part(channel, batch, end))
        else:
            self._batching.end_sending()  # the last part's confirms settle the batch

    def _on_confirm(self, frame) -> None:
        method = frame.method
        ack = isinstance(method, Basic.Ack)
        for recorded, seconds in self._batching.confirm(method.delivery_tag, method.multiple, ack):
            metrics.relay_confirm_seconds.observe(seconds)
            if not ack:
                self._nacked += 1
                log.warning(
                    "broker nacked event %s (outbox position %s); it stays for a retry; correlation %s",
                    recorded.event_id,
                    recorded.position,
                    recorded.metadata.get("correlationId"),
                    extra=_about(recorded),
                )
        if self._batching.batch_settled:
            if self._nacked:
                self._end_after_nacks()
            else:
                self._finish_batch()

    def _end_after_nacks(self) -> None:
        """Remove what the broker confirmed (so it is not sent twice), then end the session."""
        self._batching.end_linger()  # a notification may have started one meanwhile
        self._publish_batch()  # with nacks on this channel it reads nothing more
        self._failure = PublishesNacked(self._nacked)
        self._close()

    def _finish_batch(self) -> None:
        """Read on at once after a full batch, else a batch interval after the last read
        (`Batching.wait_before_next_read`)."""
        wait = self._batching.wait_before_next_read()
        if wait <= 0:
            self._publish_batch()
        else:
            self._linger(wait)

    def _count_published(self, published: Sequence[StoredEvent]) -> None:
        self.published += len(published)
        for type_name, count in Counter(recorded.type_name for recorded in published).items():
            metrics.relay_published.labels(type_name).inc(count)
        if log.isEnabledFor(logging.DEBUG):
            for recorded in published:
                log.debug(
                    "published %s %s (stream %s v%d); correlation %s",
                    recorded.type_name,
                    recorded.event_id,
                    recorded.stream_id,
                    recorded.stream_version,
                    recorded.metadata.get("correlationId"),
                    extra=_about(recorded),
                )


def _recoverable(error: BaseException) -> bool:
    return broker.is_recoverable(error) or isinstance(
        error, PublishesNacked | psycopg.OperationalError | SQLAlchemyError
    )


def _about(recorded: StoredEvent) -> dict:
    """The structured fields of a log line about one event."""
    return {
        "event_id": str(recorded.event_id),
        "event_type": recorded.type_name,
        "stream_id": str(recorded.stream_id),
        "stream_version": recorded.stream_version,
        "position": recorded.position,
        "correlation_id": recorded.metadata.get("correlationId"),
    }
