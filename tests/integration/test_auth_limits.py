"""The limit on failed candidate authentications, against the real databases and a clock the
test moves: fixed windows per client, a client at the limit waits out the rest of its window,
every failure from every process counted once, and old windows purged. Written once, run on
PostgreSQL (production) and SQLite (`assessments dev`)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.engine import Engine

from events.sql.auth_limits import AuthLimiter, candidate_auth_failures, metadata
from events.sql.engine import autocommit, make_engine
from tests.support.services import Databases

LIMIT = 3
WINDOW = 60
#: The start of a window (windows are aligned on the epoch).
WINDOW_START = datetime(2026, 12, 4, 10, 0, tzinfo=UTC)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def at(self, seconds: float) -> None:
        """Seconds after WINDOW_START."""
        self.now = WINDOW_START + timedelta(seconds=seconds)


@pytest.fixture(params=["postgresql", "sqlite"])
def engine(request, tmp_path) -> Iterator[Engine]:
    if request.param == "postgresql":
        databases: Databases = request.getfixturevalue("databases")
        built = make_engine(databases.fresh(), pool_size=5)
    else:
        built = make_engine(f"sqlite:///{tmp_path / 'dev.sqlite3'}")
        metadata.create_all(built)
    yield built
    built.dispose()


@pytest.fixture
def clock() -> Clock:
    return Clock(WINDOW_START + timedelta(seconds=10))


@pytest.fixture
def limiter(engine: Engine, clock: Clock) -> AuthLimiter:
    return AuthLimiter(autocommit(engine), LIMIT, WINDOW, clock=clock)


def fail(limiter: AuthLimiter, client: str, times: int) -> None:
    for _ in range(times):
        limiter.record_failure(client)


def stored(engine: Engine) -> list[tuple[str, datetime, int]]:
    table = candidate_auth_failures
    with engine.connect() as conn:
        rows = conn.execute(select(table).order_by(table.c.client, table.c.window_start))
        return [(row.client, row.window_start, row.failures) for row in rows]


def test_a_client_that_never_failed_may_try(limiter):
    assert limiter.retry_after("192.0.2.1") is None


def test_a_client_under_the_limit_may_try(limiter):
    fail(limiter, "192.0.2.1", LIMIT - 1)

    assert limiter.retry_after("192.0.2.1") is None


def test_a_client_at_the_limit_waits_for_the_rest_of_its_window(limiter, clock):
    clock.at(10)
    fail(limiter, "192.0.2.1", LIMIT)

    assert limiter.retry_after("192.0.2.1") == 50


def test_the_wait_is_in_whole_seconds_rounded_up_and_at_least_one(limiter, clock):
    fail(limiter, "192.0.2.1", LIMIT)

    clock.at(10.2)
    assert limiter.retry_after("192.0.2.1") == 50
    clock.at(59.999)
    assert limiter.retry_after("192.0.2.1") == 1


def test_once_the_window_ends_the_client_may_try_again_from_a_count_of_zero(limiter, clock):
    fail(limiter, "192.0.2.1", LIMIT)

    clock.at(WINDOW)
    assert limiter.retry_after("192.0.2.1") is None
    fail(limiter, "192.0.2.1", LIMIT - 1)
    assert limiter.retry_after("192.0.2.1") is None
    fail(limiter, "192.0.2.1", 1)
    assert limiter.retry_after("192.0.2.1") == WINDOW


def test_failures_of_one_window_do_not_count_in_the_next(limiter, clock):
    clock.at(WINDOW - 0.001)
    fail(limiter, "192.0.2.1", LIMIT - 1)
    clock.at(WINDOW)
    fail(limiter, "192.0.2.1", LIMIT - 1)

    assert limiter.retry_after("192.0.2.1") is None
    assert [failures for _, _, failures in stored(limiter.engine)] == [LIMIT - 1, LIMIT - 1]


def test_each_client_is_counted_apart(limiter):
    fail(limiter, "192.0.2.1", LIMIT)

    assert limiter.retry_after("192.0.2.1") is not None
    assert limiter.retry_after("192.0.2.2") is None
    assert limiter.retry_after("2001:db8::/64") is None


def test_the_count_is_one_row_per_client_and_window(limiter, engine):
    fail(limiter, "192.0.2.1", 5)
    fail(limiter, "192.0.2.2", 2)

    assert stored(engine) == [("192.0.2.1", WINDOW_START, 5), ("192.0.2.2", WINDOW_START, 2)]


def test_failures_from_several_processes_at_once_are_each_counted(databases: Databases, clock):
    """PostgreSQL, where many API processes run: each thread with an engine of its own, as
    they have. The upsert counts every failure once, whoever inserts the window's row first."""
    url = databases.fresh()
    engines = [make_engine(url, pool_size=2) for _ in range(4)]
    limiters = [AuthLimiter(autocommit(each), LIMIT, WINDOW, clock=clock) for each in engines]
    barrier = threading.Barrier(len(limiters))

    def hammer(limiter: AuthLimiter) -> None:
        barrier.wait(10)
        fail(limiter, "192.0.2.1", 25)

    threads = [threading.Thread(target=hammer, args=(each,)) for each in limiters]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert stored(engines[0]) == [("192.0.2.1", WINDOW_START, 100)]
        assert limiters[0].retry_after("192.0.2.1") == 50
    finally:
        for each in engines:
            each.dispose()


def test_a_limit_or_a_window_below_one_is_refused(engine):
    with pytest.raises(ValueError):
        AuthLimiter(engine, 0, WINDOW)
    with pytest.raises(ValueError):
        AuthLimiter(engine, LIMIT, 0)


# --- purge -----------------------------------------------------------------------------------


def test_purge_deletes_the_windows_that_ended_a_window_ago_or_more(limiter, clock, engine):
    for window in range(4):
        clock.at(window * WINDOW + 1)
        fail(limiter, "192.0.2.1", LIMIT)
    clock.at(3 * WINDOW + 30)  # in the fourth window: the first two ended a window ago or more

    assert limiter.purge() == 2

    kept = [start for _, start, _ in stored(engine)]
    assert kept == [
        WINDOW_START + timedelta(seconds=2 * WINDOW),
        WINDOW_START + timedelta(seconds=3 * WINDOW),
    ]
    assert limiter.retry_after("192.0.2.1") == 30


def test_purge_keeps_the_window_before_the_current_one_for_clocks_that_are_behind(limiter, clock, engine):
    clock.at(WINDOW - 1)
    fail(limiter, "192.0.2.1", LIMIT)
    clock.at(WINDOW + 1)

    assert limiter.purge() == 0
    assert len(stored(engine)) == 1


def test_purge_older_than_a_moment_deletes_every_window_over_by_then(limiter, clock, engine):
    fail(limiter, "192.0.2.1", LIMIT)
    clock.at(WINDOW + 1)
    fail(limiter, "192.0.2.2", 1)

    assert limiter.purge(clock.now) == 1
    assert [client for client, _, _ in stored(engine)] == ["192.0.2.2"]
    assert limiter.purge(clock.now) == 0


def test_the_workers_housekeeping_forgets_the_windows_long_over(make_settings):
    """The purge is one of the worker's chores: the table keeps only recent windows."""
    from cli import bootstrap

    settings = make_settings(candidate_auth_window_seconds=WINDOW)
    worker = bootstrap.worker(settings)
    engine = worker.handler.engine
    yesterday = datetime.now(UTC) - timedelta(days=1)
    long_ago = AuthLimiter(autocommit(engine), LIMIT, WINDOW, clock=lambda: yesterday)
    now = AuthLimiter(autocommit(engine), LIMIT, WINDOW)
    try:
        fail(long_ago, "203.0.113.1", 1)
        fail(now, "203.0.113.2", 1)

        worker.handler.housekeeping()

        with engine.connect() as conn:
            left = conn.execute(select(candidate_auth_failures.c.client)).scalars().all()
        assert left == ["203.0.113.2"]
    finally:
        engine.dispose()
