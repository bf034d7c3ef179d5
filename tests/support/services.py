"""Find PostgreSQL and RabbitMQ for a test run, as design.md says: URLs from the environment,
else testcontainers when a Docker engine answers, else the local default ports. When none is
reachable the run fails with a clear message, unless ASSESSMENTS_TEST_ALLOW_SKIP=1."""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlparse

import pika
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

LOCAL_POSTGRES = "postgresql+psycopg://root@127.0.0.1:5432/postgres"
LOCAL_RABBITMQ = "amqp://guest:guest@127.0.0.1:5672/%2F"


@dataclass(frozen=True)
class Found:
    url: str
    source: str


def _reachable(url: str, default_port: int) -> bool:
    parsed = urlparse(url.replace("postgresql+psycopg", "postgresql"))
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or default_port), 2):
            return True
    except OSError:
        return False


def docker_available() -> bool:
    if not (os.environ.get("DOCKER_HOST") or os.path.exists("/var/run/docker.sock")):
        return False
    try:
        import docker

        docker.from_env(timeout=3).ping()
        return True
    except Exception:
        return False


def unavailable(what: str, tried: str) -> None:
    message = (
        f"{what} is not reachable ({tried}). Start it (see README, 'Running the tests') or set "
        f"the URL in the environment."
    )
    if os.environ.get("ASSESSMENTS_TEST_ALLOW_SKIP") == "1":
        pytest.skip(message)
    pytest.fail(message, pytrace=False)


@contextlib.contextmanager
def postgres_server() -> Iterator[Found]:
    """A URL to a maintenance database on a server where the run may create databases."""
    if url := os.environ.get("ASSESSMENTS_TEST_DATABASE_URL"):
        yield Found(url, "environment")
    elif docker_available():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:15", driver="psycopg") as container:
            yield Found(container.get_connection_url(), "testcontainers")
    elif _reachable(LOCAL_POSTGRES, 5432):
        yield Found(LOCAL_POSTGRES, "local")
    else:
        unavailable("PostgreSQL", "ASSESSMENTS_TEST_DATABASE_URL, Docker, 127.0.0.1:5432")


@contextlib.contextmanager
def rabbitmq_server() -> Iterator[Found]:
    if url := os.environ.get("ASSESSMENTS_TEST_BROKER_URL"):
        yield Found(url, "environment")
    elif docker_available():
        from testcontainers.rabbitmq import RabbitMqContainer

        with RabbitMqContainer("rabbitmq:3.13") as container:
            params = container.get_connection_params()
            yield Found(f"amqp://guest:guest@{params.host}:{params.port}/%2F", "testcontainers")
    elif _reachable(LOCAL_RABBITMQ, 5672):
        yield Found(LOCAL_RABBITMQ, "local")
    else:
        unavailable("RabbitMQ", "ASSESSMENTS_TEST_BROKER_URL, Docker, 127.0.0.1:5672")


class Databases:
    """Databases of one test run: a migrated template, and fresh copies of it on demand."""

    def __init__(self, server_url: str, run_id: str) -> None:
        self.server_url = server_url
        self.run_id = run_id
        self.admin = create_engine(make_url(server_url), isolation_level="AUTOCOMMIT", poolclass=None)
        self.created: list[str] = []
        self.template = self._name("template")

    def _name(self, suffix: str) -> str:
        return f"assessments_test_{self.run_id}_{suffix}"

    def url(self, name: str) -> str:
        return make_url(self.server_url).set(database=name).render_as_string(hide_password=False)

    def create_template(self) -> None:
        from cli.migrate import upgrade

        self._execute(f'CREATE DATABASE "{self.template}"')
        self.created.append(self.template)
        upgrade(self.url(self.template))

    def fresh(self) -> str:
        """A new, migrated, empty database; cheap, since PostgreSQL copies the template."""
        name = self._name(uuid.uuid4().hex[:8])
        self._execute(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"')
        self.created.append(name)
        return self.url(name)

    def at_revision(self, revision: str) -> str:
        """A new, empty database migrated only up to `revision`: data as an older release left
        it, for a test to migrate the rest of the way."""
        from cli.migrate import upgrade

        name = self._name(uuid.uuid4().hex[:8])
        self._execute(f'CREATE DATABASE "{name}"')
        self.created.append(name)
        upgrade(self.url(name), revision)
        return self.url(name)

    def drop_all(self) -> None:
        for name in reversed(self.created):
            self._execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.admin.dispose()

    def _execute(self, sql: str) -> None:
        with self.admin.connect() as conn:
            conn.execute(text(sql))


def delete_broker_names(broker_url: str, exchanges: list[str], queues: list[str]) -> None:
    """Remove what a test declared, leaving the broker's shared defaults alone."""
    connection = pika.BlockingConnection(pika.URLParameters(broker_url))
    try:
        channel = connection.channel()
        for queue in queues:
            channel.queue_delete(queue)
        for exchange in exchanges:
            channel.exchange_delete(exchange)
    finally:
        connection.close()
