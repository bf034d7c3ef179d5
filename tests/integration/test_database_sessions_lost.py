"""The API when PostgreSQL drops every session (a restart, a failover): the request that finds
a dead connection gets a clean 503, the pool is replaced at once, and the next requests succeed
on both the hot path (token lookup and append on the bare driver connection) and the rest."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from events.sql.engine import driver_connection, make_engine
from tests.conftest import new_org
from tests.integration.helpers import kill_sessions, scalar
from tests.support.system import Client

BODY = {"title": "Backend API", "role": "Backend engineer", "taskBrief": "Build it."}


def test_after_the_sessions_are_killed_at_most_one_request_fails_and_it_fails_cleanly(system):
    url = system.start_api()
    token = new_org(system.settings.database_url).token
    with Client(url, token) as client:
        # Several concurrent requests, so the API's pool holds several connections to lose.
        with ThreadPoolExecutor(6) as pool:
            warm = list(pool.map(lambda _: client.post("/v1/assessments", json=BODY).status_code, range(12)))
        assert warm == [201] * 12

        assert kill_sessions(system.engine), "the API's pooled sessions should have been there to kill"
        statuses = [client.post("/v1/assessments", json=BODY) for _ in range(8)]

    failed = [r for r in statuses if r.status_code != 201]
    assert len(failed) <= 1, [r.status_code for r in statuses]
    for response in failed:
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "1"
        assert response.json()["error"]["code"] == "unavailable"
        assert "Traceback" not in response.text
    assert scalar(system.engine, "SELECT count(*) FROM events") == 12 + 8 - len(failed)


def test_the_driver_connection_is_in_autocommit_and_gives_back_the_engines_mode(system):
    """A transactional engine's connection is switched to autocommit for the statement (an
    append must never be rolled back by the pool) and switched back when it is returned."""
    engine = make_engine(system.settings.database_url, pool_size=1)
    try:
        with driver_connection(engine) as conn:
            assert conn.autocommit
            conn.execute("CREATE TABLE driver_probe (n int)")
            conn.execute("INSERT INTO driver_probe VALUES (1)")
        with engine.connect() as conn:
            assert not conn.connection.driver_connection.autocommit
            assert conn.exec_driver_sql("SELECT count(*) FROM driver_probe").scalar() == 1
    finally:
        engine.dispose()


def test_driver_errors_come_out_as_sqlalchemy_errors_without_parameters(system):
    from sqlalchemy.exc import ProgrammingError

    with pytest.raises(ProgrammingError) as raised, driver_connection(system.engine) as conn:
        conn.execute("SELECT * FROM no_such_table WHERE secret = %s", ("PST-ABCD-EFGH",))
    assert "PST-ABCD-EFGH" not in str(raised.value)
    # The connection went back to the pool in a usable state.
    with driver_connection(system.engine) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
