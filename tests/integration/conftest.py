"""Fixtures for integration tests: each test gets a system of its own (`system`: fresh database,
own exchange and queues) and starts only the parts it needs."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from cli import bootstrap
from events.service import AssessmentService
from tests.integration.helpers import BrokerClient, new_org_id
from tests.support.system import Running, System
from worker.consumer import Worker
from worker.handler import EventHandler


@pytest.fixture
def org_id() -> str:
    return new_org_id()


@pytest.fixture
def service(system: System) -> AssessmentService:
    return bootstrap.assessment_service(system.engine, system.store)


@pytest.fixture
def handler(system: System) -> EventHandler:
    """The worker's handler on the test's database, driven directly (no broker)."""
    return bootstrap.event_handler(system.engine, system.store)


@pytest.fixture
def broker(system: System) -> Iterator[BrokerClient]:
    client = BrokerClient(system.settings.broker_url, system.settings.exchange)
    yield client
    client.close()


@pytest.fixture
def start_worker(system: System):
    """Start (more) workers on the system's queue, each with a handler of its own or the one
    given; all are stopped when the test ends."""
    started: list[Running] = []

    def start(handler: EventHandler | None = None, broker_url: str | None = None, **options) -> Worker:
        handler = handler or bootstrap.event_handler(system.engine, system.store)
        worker = bootstrap.worker(system.settings, broker_url=broker_url, handler=handler, **options)
        started.append(Running(worker, f"worker-{len(started) + 1}"))
        return worker

    yield start
    for running in started:
        running.stop()
