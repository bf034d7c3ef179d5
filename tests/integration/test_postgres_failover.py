"""The primary is lost under a load of creates (killed, or cut off the network) and its
synchronous standby is promoted: the API, the relay and the worker, given both servers in one
multi-host URL with `target_session_attrs=read-write`, carry on on the new primary by
themselves. Every create answered 201 is in the new primary's store, published and projected;
every request meanwhile answered 503 with `Retry-After` within the bound (never a 500, never a
hang); writes resume once the standby is promoted. The recovery times are printed (`-s` shows
them; README, "PostgreSQL failover").

The two servers are the test's own (`tests.support.postgres_pair`): clusters made with initdb
and pg_basebackup on ports and in a folder of their own, removed afterwards; the machine's own
PostgreSQL is never touched. The partition drops the packets of the test's primary's port only
(nftables, root: `tests.support.netfilter`, as the outage tests do). About 5 s killed, 15 s
partitioned. Skipped, saying so, without the PostgreSQL server binaries.
"""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import requests

from events.runtime.settings import Settings
from tests.conftest import RUN_ID, new_org
from tests.integration.helpers import assert_projected_exactly, rows, run_cli, scalar, wait_until_quiet
from tests.support.netfilter import Blackhole
from tests.support.postgres_pair import PostgresPair, binaries
from tests.support.system import Client, System
from tests.support.wait import wait_for

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        binaries() is None, reason="the PostgreSQL server binaries (initdb, pg_ctl) are missing"
    ),
]

#: README, "Outages": the longest any request waits on an unreachable database.
REQUEST_BOUND_SECONDS = 5.0
WRITERS = 3
BODY = {"title": "Backend API", "role": "Backend engineer", "taskBrief": "Build it."}


@dataclass(frozen=True)
class Answer:
    sent: float
    answered: float
    status: int | None  # None: no answer at all (the client's error is in `error`)
    assessment_id: str | None = None
    retry_after: str | None = None
    code: str | None = None
    error: str | None = None


class Load:
    """Writers creating assessments through the API as fast as it answers, each answer kept."""

    def __init__(self, base_url: str, token: str) -> None:
        self.answers: list[Answer] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._write, args=(base_url, token), name=f"writer-{n}", daemon=True)
            for n in range(WRITERS)
        ]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(REQUEST_BOUND_SECONDS * 2)

    def _write(self, base_url: str, token: str) -> None:
        with Client(base_url, token) as client:
            while not self._stop.is_set():
                sent = time.monotonic()
                try:
                    response = client.post("/v1/assessments", json=BODY, timeout=REQUEST_BOUND_SECONDS * 2)
                except requests.RequestException as error:
                    self._keep(Answer(sent, time.monotonic(), None, error=repr(error)))
                    continue
                body = response.json() if response.headers.get("Content-Type") == "application/json" else {}
                self._keep(
                    Answer(
                        sent,
                        time.monotonic(),
                        response.status_code,
                        assessment_id=body.get("assessment", {}).get("id"),
                        retry_after=response.headers.get("Retry-After"),
                        code=body.get("error", {}).get("code"),
                    )
                )

    def _keep(self, answer: Answer) -> None:
        with self._lock:
            self.answers.append(answer)

    def snapshot(self) -> list[Answer]:
        with self._lock:
            return list(self.answers)

    def count(self, status: int, sent_after: float = 0.0) -> int:
        return sum(1 for a in self.snapshot() if a.status == status and a.sent > sent_after)


@pytest.fixture
def pair() -> Iterator[PostgresPair]:
    with PostgresPair.started() as started:
        yield started


@pytest.fixture
def settings(pair: PostgresPair, broker_url: str, broker_names) -> Settings:
    """The service's settings as an operator writes them: both servers in one database URL."""
    prefix = f"test-{RUN_ID}-{uuid.uuid4().hex[:6]}"
    exchange, queue = f"{prefix}.assessments.events", f"{prefix}.assessments.worker"
    broker_names.append((exchange, queue))
    return Settings.from_env(
        {
            "ASSESSMENTS_DATABASE_URL": pair.url("assessments"),
            "ASSESSMENTS_BROKER_URL": broker_url,
            "ASSESSMENTS_EXCHANGE": exchange,
            "ASSESSMENTS_WORKER_QUEUE": queue,
        }
    )


@pytest.fixture
def blackholes() -> Iterator[list[Blackhole]]:
    made: list[Blackhole] = []
    yield made
    for blackhole in made:
        blackhole.restore()


@pytest.mark.parametrize("how", ["killed", "partitioned"])
def test_the_primary_is_lost_under_load_the_standby_is_promoted_and_nothing_acknowledged_is_lost(
    pair: PostgresPair, settings: Settings, blackholes: list[Blackhole], how: str
):
    """`killed`: the primary stops at once (`pg_ctl stop -m immediate`), its port refuses.
    `partitioned`: it drops off the network, still running (its port's packets dropped), so
    every client's wait on it ends only by its own timeouts, as when a machine dies."""
    migrated = run_cli(dataclasses.replace(settings, database_url=pair.url("assessments")), "db", "upgrade")
    assert migrated.returncode == 0, migrated.stderr
    assert "created the database" in migrated.stdout
    token = new_org(settings.database_url).token
    system = System(settings)
    try:
        system.start_relay()
        system.start_worker()
        system.start_api()
        assert scalar(system.engine, "SELECT inet_server_port()") == pair.primary.port

        with Load(system.api.url, token) as load:
            wait_for(lambda: load.count(201) >= 30, 20, "creates acknowledged by the primary")

            lost = time.monotonic()
            if how == "killed":
                pair.kill_primary()
            else:
                blackholes.append(Blackhole(pair.primary.port))
                blackholes[-1].drop()
            dead = time.monotonic()
            # Requests sent once the primary is gone answer 503 (for a second, here) until the
            # standby is promoted.
            wait_for(
                lambda: load.count(503, sent_after=dead + 1.0) >= 1, 15, "503s while there is no primary"
            )
            assert load.count(201, sent_after=dead) == 0

            promoting = time.monotonic()
            pair.promote_standby()
            promoted = time.monotonic()
            wait_for(lambda: load.count(201, sent_after=promoted) >= 30, 20, "creates acknowledged again")

        answers = load.snapshot()
        first_back = min(a.answered for a in answers if a.status == 201 and a.sent > dead)
        slowest = max(a.answered - a.sent for a in answers)
        print(
            f"\nPostgreSQL failover, primary {how}: lost -> first 201 {first_back - lost:.2f} s; "
            f"promote command -> first 201 {first_back - promoting:.2f} s "
            f"(promotion itself {promoted - promoting:.2f} s; the test waited "
            f"{promoting - dead:.2f} s with no primary); "
            f"{sum(a.status == 201 for a in answers)} creates acknowledged, "
            f"{sum(a.status == 503 for a in answers)} answered 503; slowest answer {slowest:.2f} s"
        )

        # Every answer a 201 or the contract's 503, and within the bound.
        assert [a for a in answers if a.status not in (201, 503)] == []
        unavailable = [a for a in answers if a.status == 503]
        assert {(a.retry_after, a.code) for a in unavailable} == {("1", "unavailable")}
        assert slowest < REQUEST_BOUND_SECONDS, f"a request took {slowest:.1f} s"

        # The service now writes to the promoted standby, and it holds every acknowledged create.
        assert scalar(system.engine, "SELECT inet_server_port()") == pair.standby.port
        acknowledged = {uuid.UUID(a.assessment_id) for a in answers if a.status == 201}
        stored = {
            stream_id
            for (stream_id,) in rows(
                system.engine, "SELECT stream_id FROM events WHERE type = 'AssessmentCreated'"
            )
        }
        assert acknowledged - stored == set(), "acknowledged creates missing from the new primary"

        # The relay and the worker moved over by themselves: everything published and projected once.
        wait_until_quiet(system.engine, timeout=30)
        assert_projected_exactly(system.engine)
        for part in (system.relay, system.worker):
            assert part.thread.is_alive(), f"{part.thread.name} ended: {part.error!r}"
    except BaseException:
        print(pair.logs())
        raise
    finally:
        system.stop()
