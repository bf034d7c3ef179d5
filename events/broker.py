"""RabbitMQ topology and connection parameters shared by the relay and the worker.

Both declare the whole topology (idempotent in RabbitMQ), so whichever starts first makes sure
no event is published to an exchange with the worker's queue missing.
"""

from __future__ import annotations

import pika
from pika.adapters.blocking_connection import BlockingChannel
from pika.exceptions import (
    AMQPConnectionError,
    ChannelClosedByBroker,
    ConnectionClosedByBroker,
)

#: Errors where waiting and reconnecting can help (broker restarting, network cut). Errors
#: the broker raises about our own requests (ACCESS_REFUSED, PRECONDITION_FAILED) are not.
RETRYABLE_BROKER_ERRORS = (AMQPConnectionError, ConnectionResetError, OSError)
FATAL_BROKER_ERRORS = (ChannelClosedByBroker, ConnectionClosedByBroker)


def connection_parameters(broker_url: str) -> pika.URLParameters:
    params = pika.URLParameters(broker_url)
    params.heartbeat = 30
    params.blocked_connection_timeout = 60
    params.connection_attempts = 1
    params.socket_timeout = 5
    return params


def declare_topology(channel: BlockingChannel, exchange: str, worker_queue: str) -> None:
    """The durable topic exchange, the worker's durable queue bound to every event, and its
    dead-letter queue for messages the worker gives up on."""
    dead_letters = f"{worker_queue}.dead"
    channel.exchange_declare(exchange=exchange, exchange_type="topic", durable=True)
    channel.queue_declare(queue=dead_letters, durable=True)
    channel.queue_declare(
        queue=worker_queue,
        durable=True,
        arguments={
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": dead_letters,
        },
    )
    channel.queue_bind(queue=worker_queue, exchange=exchange, routing_key="#")


def ensure_topology(broker_url: str, exchange: str, worker_queue: str) -> None:
    connection = pika.BlockingConnection(connection_parameters(broker_url))
    try:
        declare_topology(connection.channel(), exchange, worker_queue)
    finally:
        connection.close()
