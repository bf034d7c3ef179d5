"""The API, the relay and the worker while PostgreSQL cannot be reached: refused, reset, or
partitioned away (packets dropped, the case that used to hang). Every request answers 503
with `Retry-After` within the documented bound, the service recovers by itself within 2 s of
the database coming back, and the relay and the worker never hang."""

from __future__ import annotations

import dataclasses
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.conftest import new_org
from tests.integration.helpers import create, wait_until_quiet
from tests.support.proxy import Refusal, TcpProxy
from tests.support.system import ApiServer, Client
from tests.support.wait import wait_for

#: README, "Running in production": the longest any request waits on an unreachable database.
REQUEST_BOUND_SECONDS = 5.0
RECOVERY_SECONDS = 2.0
BODY = {"title": "Backend API", "role": "Backend engineer", "taskBrief": "Build it."}


@pytest.fixture
def db_proxy(system):
    with TcpProxy.for_url(system.settings.database_url) as proxy:
        yield proxy


@pytest.fixture
def api(system, db_proxy):
    """The API reaching PostgreSQL through the proxy, with production's read wait."""
    settings = dataclasses.replace(
        system.settings, database_url=db_proxy.url_for(system.settings.database_url), read_wait_seconds=1.0
    )
    server = ApiServer(settings)
    token = new_org(system.settings.database_url).token
    with Client(server.url, token) as client:
        yield client
    server.stop()


def timed(call) -> tuple[requests.Response, float]:
    started = time.monotonic()
    response = call()
    return response, time.monotonic() - started


def every_kind_of_request(client: Client, assessment_id: str) -> list[tuple[requests.Response, float]]:
    calls = [
        lambda: client.post("/v1/assessments", json=BODY),
        lambda: client.get("/v1/assessments"),
        lambda: client.get(f"/v1/assessments/{assessment_id}"),
        lambda: client.post(f"/v1/assessments/{assessment_id}/keys", json={"count": 1}),
        lambda: client.get(f"/v1/assessments/{assessment_id}/keys"),
        lambda: client.get("/v1/issues"),
    ]
    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(lambda call: timed(call), calls))


def assert_unavailable_within_the_bound(answers: list[tuple[requests.Response, float]]) -> None:
    for response, seconds in answers:
        assert response.status_code == 503, response.text
        assert response.headers["Retry-After"] == "1"
        assert response.json()["error"]["code"] == "unavailable"
        took = f"{response.request.method} {response.url} took {seconds:.1f}s"
        assert seconds < REQUEST_BOUND_SECONDS, took


def assert_recovers_within(client: Client, seconds: float) -> None:
    back = time.monotonic()
    wait_for(lambda: client.get("/v1/assessments").status_code == 200, seconds + 1, "the API answering again")
    assert time.monotonic() - back < seconds
    assert [client.post("/v1/assessments", json=BODY).status_code for _ in range(5)] == [201] * 5


def warm_up(client: Client) -> str:
    """Several requests at once, so the pool holds several connections to lose."""
    with ThreadPoolExecutor(6) as pool:
        created = list(pool.map(lambda _: client.post("/v1/assessments", json=BODY), range(12)))
    assert {r.status_code for r in created} == {201}
    return created[0].json()["assessment"]["id"]


@pytest.mark.parametrize("how", [Refusal.REFUSE, Refusal.RESET, Refusal.CLOSE])
def test_while_the_database_turns_connections_away_every_request_answers_503(api, db_proxy, how):
    assessment_id = warm_up(api)
    db_proxy.cut(how)
    for _ in range(2):  # the first finds its pooled connection dead; the next ones cannot connect
        assert_unavailable_within_the_bound(every_kind_of_request(api, assessment_id))
    db_proxy.restore()
    assert_recovers_within(api, RECOVERY_SECONDS)


def test_while_the_database_is_partitioned_away_every_request_answers_503_within_the_bound(api, db_proxy):
    assessment_id = warm_up(api)
    db_proxy.blackhole()
    try:
        for _ in range(2):  # pooled connections that go unanswered, then connects that do
            assert_unavailable_within_the_bound(every_kind_of_request(api, assessment_id))
    finally:
        db_proxy.restore()
    assert_recovers_within(api, RECOVERY_SECONDS)


def test_the_relay_and_the_worker_carry_on_after_a_partition(system, service, org_id, db_proxy):
    proxied_url = db_proxy.url_for(system.settings.database_url)
    partitioned = type(system)(dataclasses.replace(system.settings, database_url=proxied_url))
    try:
        partitioned.start_relay()
        partitioned.start_worker()
        create(service, org_id, "Before")
        wait_until_quiet(system.engine)

        db_proxy.blackhole()
        written = [create(service, org_id, f"During {n}") for n in range(10)]  # not through the proxy
        time.sleep(8)  # how long the partition lasts: long enough for every timeout to fire
        db_proxy.restore()

        wait_until_quiet(system.engine, timeout=40)
        for part in (partitioned.relay, partitioned.worker):
            assert part.thread.is_alive(), f"{part.thread.name} ended: {part.error!r}"
    finally:
        partitioned.stop()
    assert len(written) == 10
