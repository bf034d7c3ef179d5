"""A RabbitMQ virtual host of a test's own, and the operator's commands that act on it.

`rabbitmqctl close_all_connections -p VHOST` is how an operator (or a node restart, or a
failover) forces every client of a vhost off at once; a vhost of the test's own keeps that
away from every other client of the shared broker.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from urllib.parse import quote, urlsplit, urlunsplit

import pika


def rabbitmqctl(*args: str) -> str:
    if shutil.which("rabbitmqctl") is None:
        raise RuntimeError("rabbitmqctl is missing: these tests need the local RabbitMQ's command line")
    done = subprocess.run(["rabbitmqctl", *args], capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"rabbitmqctl {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


def url_with_vhost(broker_url: str, vhost: str) -> str:
    return urlunsplit(urlsplit(broker_url)._replace(path="/" + quote(vhost, safe="")))


@contextlib.contextmanager
def own_vhost(broker_url: str, prefix: str = "test") -> Iterator[tuple[str, str]]:
    """A fresh vhost the URL's user may use fully; yields (vhost, URL for it), deleted after."""
    vhost = f"{prefix}-{uuid.uuid4().hex[:8]}"
    user = urlsplit(broker_url).username or "guest"
    rabbitmqctl("add_vhost", vhost)
    try:
        rabbitmqctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*")
        yield vhost, url_with_vhost(broker_url, vhost)
    finally:
        rabbitmqctl("delete_vhost", vhost)


def close_all_connections(vhost: str, reason: str = "closed by a test") -> None:
    rabbitmqctl("close_all_connections", "-p", vhost, reason)


def assert_answers(broker_url: str, timeout: float = 10.0) -> None:
    """The broker at `broker_url` completes an AMQP handshake within `timeout` seconds (a node
    can accept TCP connections and still read nothing)."""
    params = pika.URLParameters(broker_url)
    params.connection_attempts, params.socket_timeout, params.stack_timeout = 1, timeout, timeout
    params.blocked_connection_timeout = timeout
    try:
        pika.BlockingConnection(params).close()
    except pika.exceptions.AMQPError as error:
        raise AssertionError(
            f"the broker at {params.host}:{params.port} does not answer: {error!r}"
        ) from error
