"""Fixtures: real PostgreSQL and RabbitMQ, a database and broker names of the run's own."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from events.runtime.settings import Settings
from events.sql import tenancy
from events.sql.engine import make_engine
from events.tenancy import IssuedToken
from tests.support.services import Databases, delete_broker_names, postgres_server, rabbitmq_server
from tests.support.system import Client, System

RUN_ID = uuid.uuid4().hex[:8]


@pytest.fixture(scope="session")
def postgres() -> Iterator[str]:
    with postgres_server() as found:
        yield found.url


@pytest.fixture(scope="session")
def broker_url() -> Iterator[str]:
    with rabbitmq_server() as found:
        yield found.url


@pytest.fixture(scope="session")
def databases(postgres: str) -> Iterator[Databases]:
    dbs = Databases(postgres, RUN_ID)
    dbs.create_template()
    yield dbs
    dbs.drop_all()


@pytest.fixture(scope="session")
def broker_names(broker_url: str) -> Iterator[list[tuple[str, str]]]:
    """Every (exchange, queue) pair a test used; deleted when the run ends."""
    used: list[tuple[str, str]] = []
    yield used
    queues = [name for _, queue in used for name in (queue, f"{queue}.dead")]
    delete_broker_names(broker_url, list(dict.fromkeys(exchange for exchange, _ in used)), queues)


@pytest.fixture
def make_settings(databases: Databases, broker_url: str, broker_names):
    """Settings on a fresh database with broker names of their own."""

    def make(**overrides) -> Settings:
        prefix = f"test-{RUN_ID}-{uuid.uuid4().hex[:6]}"
        names = (f"{prefix}.assessments.events", f"{prefix}.assessments.worker")
        notifier_queue = f"{prefix}.assessments.notifier"
        broker_names.extend([names, (names[0], notifier_queue)])
        broker_names.append((names[0], f"{prefix}.assessments.webhooks"))
        defaults = {
            "database_url": databases.fresh(),
            "broker_url": broker_url,
            "exchange": names[0],
            "worker_queue": names[1],
            "notifier_queue": notifier_queue,
            "webhooks_queue": f"{prefix}.assessments.webhooks",
            # Receivers on 127.0.0.1 over http; the tests' resolver knows loopback only.
            "webhooks_allow_private": True,
            "read_wait_seconds": 3.0,
        }
        return Settings(**{**defaults, **overrides})

    return make


@pytest.fixture(scope="session")
def shared_system(databases: Databases, broker_url: str, broker_names) -> Iterator[System]:
    """API, relay and worker running for the whole run; tests isolate by organisation."""
    prefix = f"test-{RUN_ID}-shared"
    broker_names.append((f"{prefix}.assessments.events", f"{prefix}.assessments.worker"))
    broker_names.append((f"{prefix}.assessments.events", f"{prefix}.assessments.webhooks"))
    settings = Settings(
        database_url=databases.fresh(),
        broker_url=broker_url,
        exchange=f"{prefix}.assessments.events",
        worker_queue=f"{prefix}.assessments.worker",
        webhooks_queue=f"{prefix}.assessments.webhooks",
        webhooks_allow_private=True,
        read_wait_seconds=3.0,
        # Every test calls from 127.0.0.1, and refusing candidate keys is what many do: the
        # limit is tested on systems of its own (tests/e2e/test_candidate_auth_limit.py).
        candidate_auth_limit=1_000_000,
    )
    system = System(settings)
    system.start_relay()
    system.start_worker()
    system.start_api()
    yield system
    system.stop()


@pytest.fixture
def system(make_settings) -> Iterator[System]:
    """A system of the test's own (fresh database and broker names), started by the test."""
    built = System(make_settings())
    yield built
    built.stop()


def new_org(database_url: str, name: str = "Acme") -> IssuedToken:
    engine = make_engine(database_url, pool_size=1)
    try:
        return tenancy.create_organisation(engine, f"{name} {uuid.uuid4().hex[:6]}")
    finally:
        engine.dispose()


@pytest.fixture
def org(shared_system: System) -> IssuedToken:
    return new_org(shared_system.settings.database_url)


@pytest.fixture
def client(shared_system: System, org: IssuedToken) -> Iterator[Client]:
    with Client(shared_system.api.url, org.token) as session:
        yield session


@pytest.fixture
def other_client(shared_system: System) -> Iterator[Client]:
    """A reviewer of another organisation."""
    other = new_org(shared_system.settings.database_url, "Other")
    with Client(shared_system.api.url, other.token) as session:
        yield session
