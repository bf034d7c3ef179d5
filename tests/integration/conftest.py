"""Fixtures for integration tests: each test gets a system of its own (`system`: fresh database,
own exchange and queues) and starts only the parts it needs."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from events.service import AssessmentService
from projections import default_projections
from tests.integration.helpers import BrokerClient, new_org_id
from tests.support.system import Running, System
from worker.consumer import Worker
from worker.handler import EventHandler


@pytest.fixture
def org_id() -> str:
    return new_org_id()


@pytest.fixture
def service(system: System) -> AssessmentService:
    return AssessmentService(system.store)


@pytest.fixture
def handler(system: System) -> EventHandler:
    """The worker's handler on the test's database, driven directly (no broker)."""
    return EventHandler(system.engine, system.store, default_projections())


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
        handler = handler or EventHandler(system.engine, system.store, default_projections())
        worker = Worker(
            handler,
            broker_url or system.settings.broker_url,
            system.settings.exchange,
            system.settings.worker_queue,
            **options,
        )
        started.append(Running(worker, f"worker-{len(started) + 1}"))
        return worker

    yield start
    for running in started:
        running.stop()
