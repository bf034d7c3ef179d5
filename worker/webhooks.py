"""`assessments webhooks`: the dispatcher. It consumes its own durable queue (bound to the
exchange with `#`), records one delivery per matching, active endpoint of the event's
organisation and acks; a delivery loop then sends what is due from those rows.

- At-least-once: a delivery is a row before the message is acked, and it stays `pending` until
  an attempt is recorded; a dispatcher that dies mid-attempt leaves a lease that runs out, and
  the attempt is made again with the same `webhook-id` (the event id).
- Per-endpoint order for one assessment: a delivery is not attempted while an earlier delivery
  of the same stream to the same endpoint is pending (`SqlWebhooks.due`); an event that arrives
  before an earlier one of its stream records the earlier one first (read from the store).
- One slow or dead endpoint never delays the others: a bounded pool of senders, at most
  `per_endpoint` of them on one endpoint, and every attempt under a timeout.
- Replays and rebuilds publish nothing; `events republish` publishes events whose deliveries
  already exist (keyed by endpoint and event id) or that precede the endpoint: nothing new.
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import queue
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta

import pika
from pika.exceptions import AMQPError
from prometheus_client import Counter, Gauge, Histogram
from sqlalchemy.exc import DBAPIError

from events import messages
from events.messages import UndecodableMessage
from events.model import RecordedEvent, utcnow, uuid7
from events.rabbitmq import broker
from events.rabbitmq.broker import connection_parameters, declare_topology
from events.runtime.reconnect import keep_running
from events.sql.webhooks import PENDING, Claimed, SqlWebhooks
from events.webhooks import (
    RETRY_SCHEDULE,
    SECRET_SCOPE,
    Endpoint,
    Resolver,
    UnsafeUrl,
    WebhookService,
    parse_url,
    rebuild,
    retry_delay,
    safe_addresses,
    signature_header,
    subscribable,
    system_resolver,
)
from worker.batches import recoverable

log = logging.getLogger(__name__)

ACTOR = "webhooks:dispatcher"
USER_AGENT = "assessments-webhooks/1"
CONTENT_TYPE = "application/cloudevents+json"
BACKLOG_EVERY_SECONDS = 5.0
CLAIM_LINGER_SECONDS = 0.005
#: How long an attempt may use an endpoint's state (URL, secrets, status) as last read: a removal
#: or a rotation takes effect on deliveries within this time (the previous secret keeps signing
#: for its grace period anyway). Recording never uses it: a new endpoint gets the next event.
ENDPOINT_CACHE_SECONDS = 1.0

deliveries_recorded = Counter(
    "assessments_webhook_deliveries_recorded_total", "Deliveries recorded (one per event and endpoint)."
)
attempts_total = Counter(
    "assessments_webhook_attempts_total",
    "Delivery attempts, by outcome (succeeded, failed) and whether they were retries.",
    ["outcome", "retry"],
)
deliveries_failed = Counter(
    "assessments_webhook_deliveries_failed_total", "Deliveries given up after the last scheduled attempt."
)
endpoints_disabled = Counter(
    "assessments_webhook_endpoints_disabled_total", "Endpoints disabled after a run of failures."
)
attempt_seconds = Histogram(
    "assessments_webhook_attempt_seconds",
    "Time of one delivery attempt, connection included.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
backlog_pending = Gauge(
    "assessments_webhook_backlog_pending", "Deliveries pending (due or waiting to retry)."
)
backlog_due = Gauge("assessments_webhook_backlog_due", "Pending deliveries whose attempt is due now.")
in_flight = Gauge("assessments_webhook_in_flight", "Delivery attempts in progress.")


# --- one attempt: a POST to addresses checked before connecting ----------------------------


@dataclass(frozen=True)
class Attempt:
    ok: bool
    status: int | None
    latency_ms: int
    error: str | None = None


Connect = Callable[[tuple[str, int], float], socket.socket]


class _PinnedConnection(http.client.HTTPConnection):
    """An HTTP(S) connection to addresses resolved and checked beforehand: nothing resolves
    the name again between the check and the connect (no DNS rebinding)."""

    def __init__(
        self,
        host: str,
        port: int,
        addresses: Sequence[str],
        timeout: float,
        connect: Connect,
        tls: ssl.SSLContext | None,
    ) -> None:
        super().__init__(host, port, timeout=timeout)
        self._addresses = addresses
        self._connect = connect
        self._tls = tls

    def connect(self) -> None:
        error: OSError | None = None
        for address in self._addresses:
            try:
                sock = self._connect((address, self.port), self.timeout)
                break
            except OSError as failed:
                error = failed
        else:
            raise error or OSError("no address")
        if self._tls is not None:
            sock = self._tls.wrap_socket(sock, server_hostname=self.host)
        self.sock = sock


class Sender:
    """POSTs a signed body: the URL's rules and every address of its host are checked first
    (a refusal never connects), then one connection with `timeout` on the connect and on each
    read, and at most `max_response_bytes` of the response read."""

    def __init__(
        self,
        timeout: float = 10.0,
        max_response_bytes: int = 64 * 1024,
        allow_private: bool = False,
        resolve: Resolver = system_resolver,
        connect: Connect = socket.create_connection,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.timeout = timeout
        self.max_response_bytes = max_response_bytes
        self.allow_private = allow_private
        self.resolve = resolve
        self.connect = connect
        self.tls = tls or ssl.create_default_context()

    def post(self, url: str, headers: dict[str, str], body: bytes) -> Attempt:
        started = time.perf_counter()
        try:
            target = parse_url(url, self.allow_private)
            addresses = safe_addresses(target, self.resolve, self.allow_private)
        except UnsafeUrl as refused:
            return Attempt(False, None, 0, f"refused: {refused}")
        tls = self.tls if target.scheme == "https" else None
        conn = _PinnedConnection(target.host, target.port, addresses, self.timeout, self.connect, tls)
        try:
            conn.request("POST", target.path, body=body, headers=headers)
            response = conn.getresponse()
            response.read(self.max_response_bytes)
            status = response.status
        except (OSError, http.client.HTTPException) as error:
            return Attempt(False, None, _ms_since(started), f"{type(error).__name__}: {error}"[:500])
        finally:
            conn.close()
        ok = 200 <= status < 300
        return Attempt(ok, status, _ms_since(started), None if ok else f"HTTP {status}")


def _ms_since(started: float) -> int:
    return round((time.perf_counter() - started) * 1000)


# --- the dispatcher -------------------------------------------------------------------------


@dataclass(frozen=True)
class Policy:
    schedule: tuple[float, ...] = RETRY_SCHEDULE
    disable_after_failures: int = 20
    disable_after: timedelta = timedelta(hours=24)
    concurrency: int = 16
    per_endpoint: int = 4
    poll_seconds: float = 1.0
    #: How long a claimed delivery stays leased: past it another dispatcher may try it again.
    lease: timedelta = timedelta(seconds=60)


class Dispatcher:
    def __init__(
        self,
        service: WebhookService,
        webhooks: SqlWebhooks,
        sender: Sender,
        broker_url: str,
        exchange: str,
        queue: str,
        policy: Policy = Policy(),
        prefetch: int = 100,
        clock: Callable[[], datetime] = utcnow,
        queue_type: str = "quorum",
    ) -> None:
        self.service = service
        self.webhooks = webhooks
        self.store = service.store
        self.sender = sender
        self.broker_url = broker_url
        self.exchange = exchange
        self.queue = queue
        self.queue_type = queue_type
        self.dead_letter_queue = f"{queue}.dead"
        self.policy = policy
        self.prefetch = prefetch
        self.clock = clock
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._in_flight: dict[uuid.UUID, int] = {}
        self._pool: ThreadPoolExecutor | None = None
        self._buffer: list[tuple[int, bytes]] = []
        #: Endpoints as last read, and their secrets by id, for ENDPOINT_CACHE_SECONDS.
        self._endpoints: dict[uuid.UUID, tuple[float, Endpoint, dict[uuid.UUID, str]]] = {}

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def wake(self) -> None:
        self._wake.set()

    # --- the process ------------------------------------------------------------------------

    def run(self, on_ready: Callable[[], None] | None = None) -> None:
        """Consume and deliver until `stop()`; the deliveries in flight finish first."""
        sender = threading.Thread(target=self.deliver_forever, name="webhooks-delivery", daemon=True)
        sender.start()
        try:
            with broker.naming_misconfiguration(self.broker_url):
                keep_running(lambda: self._consume(on_ready), self._stop, recoverable, "webhooks")
        finally:
            self.stop()
            sender.join(self.sender.timeout * 2 + 10)
            self.webhooks.engine.dispose()

    def run_in_process(self, messages_: queue.Queue, on_ready: Callable[[], None] | None = None) -> None:
        """`assessments dev`: the same recording and delivering, fed by the in-process broker."""
        sender = threading.Thread(target=self.deliver_forever, name="webhooks-delivery", daemon=True)
        sender.start()
        if on_ready is not None:
            on_ready()
        while not self._stop.is_set():
            try:
                message = messages_.get(timeout=0.2)
            except queue.Empty:
                continue
            try:
                if self.record_all([messages.decode(message.body)]):
                    self._wake.set()
            except Exception:
                log.exception("webhooks: could not record a message's deliveries")
        sender.join(self.sender.timeout * 2 + 10)

    def _consume(self, on_ready: Callable[[], None] | None) -> None:
        connection = pika.BlockingConnection(connection_parameters(self.broker_url))
        self._buffer.clear()
        try:
            channel = connection.channel()
            declare_topology(
                channel, self.exchange, self.queue, self.queue_type, "ASSESSMENTS_WEBHOOKS_QUEUE"
            )
            channel.confirm_delivery()
            channel.basic_qos(prefetch_count=self.prefetch)
            channel.basic_consume(self.queue, on_message_callback=self._on_message)
            log.info("webhooks dispatcher consuming %s", self.queue)
            if on_ready is not None:
                on_ready()
            while not self._stop.is_set():
                connection.process_data_events(time_limit=0.5)
                if self._buffer:
                    batch, self._buffer = self._buffer, []
                    self._handle(channel, batch)
                    channel.basic_ack(delivery_tag=batch[-1][0], multiple=True)
        finally:
            if connection.is_open:
                with contextlib.suppress(AMQPError, OSError):
                    connection.close()

    def _on_message(self, _channel, method, _properties, body) -> None:
        self._buffer.append((method.delivery_tag, body))

    def _handle(self, channel, batch: list[tuple[int, bytes]]) -> None:
        """Record the batch's deliveries (one transaction), dead-lettering what cannot be
        decoded; the caller acks the batch after."""
        decoded: list[RecordedEvent] = []
        for _tag, body in batch:
            try:
                decoded.append(messages.decode(body))
            except UndecodableMessage as error:
                log.error("dead-lettering an undecodable message: %s", error)
                properties = pika.BasicProperties(
                    delivery_mode=pika.DeliveryMode.Persistent,
                    headers={"x-dead-letter-reason": f"undecodable: {error}"[:500]},
                )
                channel.basic_publish("", self.dead_letter_queue, body, properties)
        if self.record_all(decoded):
            self._wake.set()

    # --- recording ----------------------------------------------------------------------

    def record(self, recorded: RecordedEvent) -> int:
        return self.record_all([recorded])

    def record_all(self, batch: Sequence[RecordedEvent]) -> int:
        """One delivery per event and active endpoint of the event's organisation that wants
        it and was registered before it; idempotent. The organisation's endpoints are read from
        their streams (fresh: an endpoint registered just before an event gets it), once per
        organisation in the batch. Returns how many deliveries are new."""
        wanted = [r for r in batch if r.metadata.get("orgId") and r.type_name in subscribable()]
        endpoints: dict[str, list[Endpoint]] = {}
        for org_id in dict.fromkeys(r.metadata["orgId"] for r in wanted):
            endpoints[org_id] = [
                endpoint
                for endpoint_id, stream in self.webhooks.endpoint_streams(org_id).items()
                if (endpoint := rebuild(endpoint_id, stream)).active and endpoint.owned_by(org_id)
            ]
        now = self.clock()
        rows: list[dict] = []
        in_batch = {(r.stream_id, r.stream_version) for r in wanted}
        for recorded in wanted:
            org_id = recorded.metadata["orgId"]
            targets = [
                e
                for e in endpoints[org_id]
                if e.wants(recorded.type_name) and recorded.position > e.registered_position
            ]
            if not targets:
                continue
            events = [recorded]
            if (
                recorded.stream_version > 1
                and (recorded.stream_id, recorded.stream_version - 1) not in in_batch
            ):
                events = self._with_unrecorded_earlier(recorded, targets)
            rows += [
                {
                    "id": uuid7(),
                    "endpoint_id": endpoint.id,
                    "org_id": org_id,
                    "event_id": event.event_id,
                    "event_type": event.type_name,
                    "stream_id": event.stream_id,
                    "position": event.position,
                    "status": PENDING,
                    "attempts": 0,
                    "created_at": now,
                    "next_attempt_at": now,
                }
                for event in events
                for endpoint in targets
                if endpoint.wants(event.type_name) and event.position > endpoint.registered_position
            ]
        new = self.webhooks.record(_unique(rows))
        deliveries_recorded.inc(new)
        return new

    def _with_unrecorded_earlier(
        self, recorded: RecordedEvent, targets: list[Endpoint]
    ) -> list[RecordedEvent]:
        """The event, after the earlier events of its stream that no delivery records yet for
        these endpoints (a message that overtook an earlier one): those come first, so that
        order holds. Already recorded ones are skipped by the insert."""
        last = self.webhooks.last_positions(recorded.stream_id, [e.id for e in targets])
        since = min(max(last.get(e.id, 0), e.registered_position) for e in targets)
        earlier = [
            event
            for event in self.store.load(recorded.stream_id)
            if since < event.position < recorded.position
        ]
        return [*earlier, recorded]

    # --- delivering -------------------------------------------------------------------------

    def deliver_forever(self) -> None:
        with ThreadPoolExecutor(self.policy.concurrency, thread_name_prefix="webhook") as pool:
            self._pool = pool
            observed = 0.0
            while not self._stop.is_set():
                self._wake.clear()
                if time.monotonic() - observed >= BACKLOG_EVERY_SECONDS:
                    observed = time.monotonic()
                    with contextlib.suppress(DBAPIError):
                        self.observe_backlog()
                try:
                    started = self.deliver_due(pool)
                except DBAPIError as error:
                    log.warning("webhook delivery loop: database unavailable: %r", error)
                    started = 0
                except Exception:
                    log.exception("webhook delivery loop failed; trying again")
                    started = 0
                if not started:
                    self._wake.wait(self.policy.poll_seconds)
                # Let a few wake-ups (finished attempts, recorded deliveries) gather: one look for
                # due deliveries then claims several, which costs far less per delivery.
                self._stop.wait(CLAIM_LINGER_SECONDS)

    def deliver_due(self, pool: ThreadPoolExecutor) -> int:
        """Claim what is due, within the pool's and each endpoint's free slots, and start it."""
        with self._lock:
            free = self.policy.concurrency - sum(self._in_flight.values())
            busy = [e for e, n in self._in_flight.items() if n >= self.policy.per_endpoint]
        if free <= 0:
            return 0
        now = self.clock()
        chosen: list[uuid.UUID] = []
        slots: dict[uuid.UUID, int] = {}
        for delivery_id, endpoint_id in self.webhooks.due(now, free * 4, busy):
            taken = self._in_flight.get(endpoint_id, 0) + slots.get(endpoint_id, 0)
            if taken < self.policy.per_endpoint and len(chosen) < free:
                chosen.append(delivery_id)
                slots[endpoint_id] = slots.get(endpoint_id, 0) + 1
        claimed = self.webhooks.claim(chosen, now, self.policy.lease)
        for delivery in claimed:
            with self._lock:
                self._in_flight[delivery.endpoint_id] = self._in_flight.get(delivery.endpoint_id, 0) + 1
            in_flight.inc()
            pool.submit(self._attempt_and_release, delivery)
        return len(claimed)

    def _attempt_and_release(self, delivery: Claimed) -> None:
        try:
            self.attempt(delivery)
        except Exception:
            log.exception("webhook delivery %s failed unexpectedly; its lease will run out", delivery.id)
        finally:
            with self._lock:
                left = self._in_flight[delivery.endpoint_id] - 1
                if left:
                    self._in_flight[delivery.endpoint_id] = left
                else:
                    del self._in_flight[delivery.endpoint_id]
            in_flight.dec()
            self._wake.set()

    def attempt(self, delivery: Claimed) -> Attempt | None:
        """One attempt of one delivery, recorded; None when the endpoint no longer receives."""
        endpoint, secrets = self._endpoint(delivery.endpoint_id)
        if not endpoint.active:
            self.webhooks.cancel_pending(endpoint.id, f"endpoint {endpoint.status}")
            return None
        body = messages.encode_stored(delivery.stored)
        timestamp = int(self.clock().timestamp())
        message_id = str(delivery.event_id)
        headers = {
            "Content-Type": CONTENT_TYPE,
            "User-Agent": USER_AGENT,
            "webhook-id": message_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signature_header(secrets, message_id, timestamp, body),
        }
        result = self.sender.post(endpoint.url, headers, body)
        attempt_seconds.observe(result.latency_ms / 1000)
        attempts = delivery.attempts + 1
        attempts_total.labels("succeeded" if result.ok else "failed", str(attempts > 1).lower()).inc()
        now = self.clock()
        delay = None if result.ok else retry_delay(attempts, self.policy.schedule)
        health = self.webhooks.finish(
            delivery.id,
            endpoint.id,
            now,
            result.ok,
            None if delay is None else now + timedelta(seconds=delay),
            result.status,
            result.latency_ms,
            result.error,
        )
        if result.ok:
            return result
        if delay is None:
            deliveries_failed.inc()
            log.warning(
                "webhook delivery %s of event %s to endpoint %s failed after %d attempts: %s",
                delivery.id,
                message_id,
                endpoint.id,
                attempts,
                result.error,
            )
        if health.consecutive_failures >= self.policy.disable_after_failures and (
            health.failing_since is not None and now - health.failing_since >= self.policy.disable_after
        ):
            self._disable(endpoint, health.consecutive_failures)
        return result

    def _endpoint(self, endpoint_id: uuid.UUID) -> tuple[Endpoint, list[str]]:
        """The endpoint and the secrets that sign now (the current first), read at most
        ENDPOINT_CACHE_SECONDS ago."""
        cached = self._endpoints.get(endpoint_id)
        if cached is None or time.monotonic() - cached[0] > ENDPOINT_CACHE_SECONDS:
            endpoint = self.service.load(endpoint_id)
            ids = [s.secret_id for s in endpoint.secrets]
            found = self.store.reserved_values(SECRET_SCOPE, ids) if endpoint.active else {}
            cached = (time.monotonic(), endpoint, found)
            self._endpoints[endpoint_id] = cached
        _, endpoint, found = cached
        ids = endpoint.signing_secret_ids(self.clock())
        return endpoint, [found[i] for i in ids if i in found]

    def _disable(self, endpoint: Endpoint, failures: int) -> None:
        self._endpoints.pop(endpoint.id, None)
        if self.service.disable(endpoint.id, failures, ACTOR):
            endpoints_disabled.inc()
            log.warning(
                "webhook endpoint %s of organisation %s disabled after %d consecutive failed attempts",
                endpoint.id,
                endpoint.org_id,
                failures,
                extra={"endpoint_id": str(endpoint.id), "org_id": endpoint.org_id, "failures": failures},
            )
        self.webhooks.cancel_pending(endpoint.id, "endpoint disabled")

    def observe_backlog(self) -> dict[str, int]:
        figures = self.webhooks.backlog(self.clock())
        backlog_pending.set(figures["pending"])
        backlog_due.set(figures["due"])
        return figures


def _unique(rows: list[dict]) -> list[dict]:
    """One row per (endpoint, event): a batch may name an event twice (a redelivery, or an
    earlier event recorded for a later one)."""
    return list({(row["endpoint_id"], row["event_id"]): row for row in rows}.values())
