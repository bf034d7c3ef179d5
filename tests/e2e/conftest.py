"""E2E fixtures: the sample OSS catalogue on the shared system, and clients without a token."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from events.sql.catalogue import import_catalogue
from tests.e2e.helpers import body, issue_keys
from tests.support.system import Client, MovableClock, System

CATALOGUE = Path(__file__).resolve().parents[2] / "data" / "oss-issues.json"


@pytest.fixture(scope="session")
def catalogue(shared_system: System) -> dict[str, dict]:
    """The sample catalogue, imported into the shared system's database (an idempotent
    upsert), by issue id as the API shows it."""
    import_catalogue(shared_system.engine, CATALOGUE)
    return {issue["id"]: issue for issue in json.loads(CATALOGUE.read_text(encoding="utf-8"))}


@pytest.fixture
def issue(catalogue: dict[str, dict]) -> dict:
    return next(iter(catalogue.values()))


@pytest.fixture
def anonymous(shared_system: System) -> Iterator[Client]:
    """A client with no credentials; tests add the headers they need."""
    with Client(shared_system.api.url) as session:
        yield session


@pytest.fixture
def keyed(client: Client) -> tuple[dict, dict]:
    """An assessment of `client`'s organisation and one candidate key of it."""
    created = client.post("/v1/assessments", json=body())
    assert created.status_code == 201, created.text
    assessment = created.json()["assessment"]
    return assessment, issue_keys(client, assessment["id"])[0]


@pytest.fixture
def candidate(shared_system: System) -> Iterator[Callable[[str], Client]]:
    """Clients that authenticate with a candidate key (`X-API-Key`)."""
    opened: list[Client] = []

    def make(key: str) -> Client:
        session = Client(shared_system.api.url)
        session.headers["X-API-Key"] = key
        opened.append(session)
        return session

    yield make
    for session in opened:
        session.close()


@pytest.fixture
def clock(shared_system: System) -> Iterator[MovableClock]:
    """The shared system's clock (API and worker), moved by the test and put back after it."""
    yield shared_system.clock
    shared_system.clock.reset()
