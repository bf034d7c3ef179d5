"""RabbitMQ topology, connection parameters, and which broker failures are worth a retry.

Both the relay and the worker declare the whole topology (idempotent in RabbitMQ), so whichever
starts first makes sure no event is published to an exchange with the worker's queue missing.

A long-running process must outlive every broker failure that can heal: a forced close (a
restart, a node failover, `rabbitmqctl close_all_connections`), a reset, a refused connect, a
lost network, a missed heartbeat. Only a refusal that no amount of waiting cures (wrong
credentials, a missing virtual host, missing permissions, a queue declared elsewhere with other
arguments) ends it, as `BrokerMisconfigured`, one line that names the setting to fix.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from urllib.parse import unquote, urlsplit

import pika
from pika.adapters.blocking_connection import BlockingChannel
from pika.exceptions import (
    AMQPError,
    AuthenticationError,
    ChannelClosedByBroker,
    ProbableAccessDeniedError,
    ProbableAuthenticationError,
)

from events.runtime.settings import broker_urls

ACCESS_REFUSED = 403
PRECONDITION_FAILED = 406


class BrokerMisconfigured(Exception):
    """The broker refused this process for a reason only a change of settings can cure."""


QUEUE_TYPES = ("quorum", "classic")


def connection_parameters(broker_url: str) -> list[pika.URLParameters]:
    """One set of parameters per node of `ASSESSMENTS_BROKER_URL` (a comma-separated list,
    see `broker_urls`), in the order given. `pika.BlockingConnection` tries them in turn; the
    relay's asynchronous connection takes one, and moves to the next after a failure."""
    return [_parameters(url) for url in broker_urls(broker_url)]


def _parameters(url: str) -> pika.URLParameters:
    params = pika.URLParameters(url)
    params.heartbeat = 30
    params.blocked_connection_timeout = 60
    params.connection_attempts = 1
    params.socket_timeout = 5
    return params


def queue_arguments(queue_type: str) -> dict[str, str]:
    """What every queue the service declares carries for its type. A classic queue carries
    no `x-queue-type` at all, exactly as before quorum queues were the default, so that an
    existing classic queue is redeclared without a clash."""
    if queue_type not in QUEUE_TYPES:
        raise BrokerMisconfigured(
            f"ASSESSMENTS_QUEUE_TYPE: {queue_type!r} is not a queue type (quorum or classic)"
        )
    return {"x-queue-type": "quorum"} if queue_type == "quorum" else {}


def is_recoverable(error: BaseException) -> bool:
    """Whether reconnecting may cure `error`: any failure of the connection or the channel,
    except the refusals `misconfiguration` recognises."""
    if misconfiguration(error) is not None:
        return False
    return isinstance(error, AMQPError | OSError) or _is_unconnected_socket(error)


def misconfiguration(error: BaseException, broker_url: str = "") -> BrokerMisconfigured | None:
    """The setting to fix, when `error` is a refusal that waiting cannot cure.

    pika reports a connection closed during the handshake as a "probable" authentication or
    access error even when the network dropped it (a broker restarting mid-handshake): only
    the broker's own reply code makes it certain."""
    user, vhost = _user_and_vhost(broker_url)
    if isinstance(error, AuthenticationError) or (
        isinstance(error, ProbableAuthenticationError) and "ACCESS_REFUSED" in str(error)
    ):
        return BrokerMisconfigured(
            f"ASSESSMENTS_BROKER_URL: RabbitMQ refused the login of user {user!r} (wrong user or password)"
        )
    if isinstance(error, ProbableAccessDeniedError) and "NOT_ALLOWED" in str(error):
        return BrokerMisconfigured(
            f"ASSESSMENTS_BROKER_URL: virtual host {vhost!r} does not exist or user {user!r} may not use it"
        )
    if isinstance(error, ChannelClosedByBroker) and error.reply_code == ACCESS_REFUSED:
        return BrokerMisconfigured(
            f"ASSESSMENTS_BROKER_URL: user {user!r} lacks a permission: {error.reply_text}"
        )
    if isinstance(error, BrokerMisconfigured):
        return error
    return None


@contextlib.contextmanager
def naming_misconfiguration(broker_url: str) -> Iterator[None]:
    """A refusal that waiting cannot cure comes out as `BrokerMisconfigured`, naming the
    setting to fix; every other error as it is."""
    try:
        yield
    except Exception as error:
        problem = misconfiguration(error, broker_url)
        if problem is None or problem is error:
            raise
        raise problem from error


def _is_unconnected_socket(error: BaseException) -> bool:
    """pika raises a bare ValueError when a connect succeeds and the peer resets it before
    the handshake starts (a TCP load balancer with no live node behind it does that)."""
    return isinstance(error, ValueError) and "Expected connected socket" in str(error)


def _user_and_vhost(broker_url: str) -> tuple[str, str]:
    try:
        first = broker_urls(broker_url)[0]  # the user and vhost are every node's
    except ValueError:
        first = broker_url
    parts = urlsplit(first)
    vhost = unquote(parts.path[1:]) if len(parts.path) > 1 else "/"
    return unquote(parts.username or "guest"), vhost


def declare_topology(
    channel: BlockingChannel,
    exchange: str,
    worker_queue: str,
    queue_type: str = "quorum",
    setting: str = "ASSESSMENTS_WORKER_QUEUE",
) -> None:
    """The durable topic exchange, the worker's durable queue bound to every event, and its
    dead-letter queue for messages the worker gives up on (the webhooks dispatcher declares
    its own queue the same way, naming its own `setting`)."""
    declare_consumer_queue(channel, exchange, worker_queue, ["#"], setting, queue_type)


def _declare_queue(
    channel: BlockingChannel, queue: str, setting: str, queue_type: str, arguments: dict | None = None
) -> None:
    with _declaring(setting, queue, queue_type):
        channel.queue_declare(
            queue=queue, durable=True, arguments={**queue_arguments(queue_type), **(arguments or {})}
        )


@contextlib.contextmanager
def _declaring(setting: str, name: str, queue_type: str | None = None) -> Iterator[None]:
    """A declaration the broker refuses because the name exists with other properties is a
    clash of configuration, not an outage. The likeliest clash after an upgrade: a classic
    queue of this name from before quorum queues were the default (or the other way round)."""
    try:
        yield
    except ChannelClosedByBroker as error:
        if error.reply_code != PRECONDITION_FAILED:
            raise
        if queue_type is not None and "x-queue-type" in (error.reply_text or ""):
            other = "classic" if queue_type == "quorum" else "quorum"
            clash = (
                f"{setting}: queue {name!r} exists as a {other} queue but ASSESSMENTS_QUEUE_TYPE is "
                f"{queue_type!r}: delete the queue (or drain it and let the service recreate it) or set "
                f"ASSESSMENTS_QUEUE_TYPE={other} (see the README, Upgrading): {error.reply_text}"
            )
        else:
            clash = f"{setting}: {name!r} exists with other properties: {error.reply_text}"
        raise BrokerMisconfigured(clash) from error


def ensure_topology(broker_url: str, exchange: str, worker_queue: str, queue_type: str = "quorum") -> None:
    connection = pika.BlockingConnection(connection_parameters(broker_url))
    try:
        declare_topology(connection.channel(), exchange, worker_queue, queue_type)
    finally:
        if connection.is_open:
            connection.close()


def declare_consumer_queue(
    channel: BlockingChannel,
    exchange: str,
    queue: str,
    routing_keys: list[str],
    setting: str,
    queue_type: str = "quorum",
) -> None:
    """A consumer's own topology: the exchange, the consumer's durable queue bound to the
    routing keys it needs, and its dead-letter queue `<queue>.dead`, both of `queue_type`
    (`ASSESSMENTS_QUEUE_TYPE`). `setting` names the variable to fix when a name exists with
    other properties."""
    dead_letters = f"{queue}.dead"
    with _declaring("ASSESSMENTS_EXCHANGE", exchange):
        channel.exchange_declare(exchange=exchange, exchange_type="topic", durable=True)
    _declare_queue(channel, dead_letters, setting, queue_type)
    _declare_queue(
        channel,
        queue,
        setting,
        queue_type,
        {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": dead_letters},
    )
    for routing_key in routing_keys:
        channel.queue_bind(queue=queue, exchange=exchange, routing_key=routing_key)
