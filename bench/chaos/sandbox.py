"""The run's own database and RabbitMQ vhost, removed on the way out, and the TCP proxies the
service reaches them through (so that the faults can cut them)."""

from __future__ import annotations

import contextlib
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import pika
import psycopg

from bench.chaos import AUDIT_QUEUE, EXCHANGE, ISSUES_FILE
from tests.support.proxy import TcpProxy


def libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def with_database(url: str, name: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).set(database=name).render_as_string(hide_password=False)


def rabbitmqctl(*args: str) -> str:
    """The broker's own command line: it manages the broker of this machine only."""
    done = subprocess.run(["rabbitmqctl", *args], capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"rabbitmqctl {' '.join(args)}: {(done.stderr or done.stdout).strip()}")
    return done.stdout


def broker_user(url: str) -> str:
    return pika.URLParameters(url).credentials.username


@dataclass
class Sandbox:
    server_url: str  # a maintenance database of the PostgreSQL server
    broker_url: str  # the RabbitMQ server (its vhost is replaced by the run's)
    run_id: str

    @property
    def database(self) -> str:
        return f"assessments_chaos_{self.run_id}"

    @property
    def vhost(self) -> str:
        return f"chaos-{self.run_id}"

    @property
    def database_url(self) -> str:
        return with_database(self.server_url, self.database)

    @property
    def vhost_url(self) -> str:
        return self.broker_url.rsplit("/", 1)[0] + f"/{self.vhost}"

    def admin(self, sql: str, *params) -> list[tuple]:
        """On the maintenance database, directly: never through a proxy, never in the run's."""
        with psycopg.connect(libpq(self.server_url), autocommit=True) as conn:
            cursor = conn.execute(sql, params or None)
            return cursor.fetchall() if cursor.description else []


@contextlib.contextmanager
def sandbox(server_url: str, broker_url: str, keep: bool) -> Iterator[Sandbox]:
    box = Sandbox(server_url, broker_url, uuid.uuid4().hex[:8])
    try:
        box.admin(f'CREATE DATABASE "{box.database}"')
        rabbitmqctl("add_vhost", box.vhost)
        rabbitmqctl("set_permissions", "-p", box.vhost, broker_user(broker_url), ".*", ".*", ".*")
        yield box
    finally:
        if keep:
            print(f"kept database {box.database} and vhost {box.vhost}; remove them with:")
            print(f"  psql -c 'DROP DATABASE \"{box.database}\" WITH (FORCE)'")
            print(f"  rabbitmqctl delete_vhost {box.vhost}")
        else:
            with contextlib.suppress(Exception):
                box.admin(f'DROP DATABASE IF EXISTS "{box.database}" WITH (FORCE)')
            with contextlib.suppress(Exception):
                rabbitmqctl("delete_vhost", box.vhost)


def prepare_database(box: Sandbox) -> list[str]:
    """Migrated, with the sample catalogue; returns two organisations' tokens."""
    from cli.migrate import upgrade
    from events.sql import catalogue, tenancy
    from events.sql.engine import make_engine

    upgrade(box.database_url)
    engine = make_engine(box.database_url, pool_size=1)
    try:
        catalogue.import_catalogue(engine, ISSUES_FILE)
        return [tenancy.create_organisation(engine, f"Chaos {n}").token for n in (1, 2)]
    finally:
        engine.dispose()


def bind_audit_queue(box: Sandbox) -> None:
    """Declared before any event exists, so it receives every event the relays publish."""
    connection = pika.BlockingConnection(pika.URLParameters(box.vhost_url))
    try:
        channel = connection.channel()
        channel.exchange_declare(exchange=EXCHANGE, exchange_type="topic", durable=True)
        channel.queue_declare(queue=AUDIT_QUEUE, durable=True)
        channel.queue_bind(queue=AUDIT_QUEUE, exchange=EXCHANGE, routing_key="#")
    finally:
        connection.close()


@contextlib.contextmanager
def proxy_to(url: str, default_port: int) -> Iterator[TcpProxy]:
    parsed = urlsplit(url)
    with TcpProxy(parsed.hostname or "127.0.0.1", parsed.port or default_port) as proxy:
        yield proxy
