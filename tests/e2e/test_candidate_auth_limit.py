"""A client address that fails too many candidate authentications is refused (429, with
Retry-After) until its window ends, a correct key included, and that holds across API
processes: the count lives in PostgreSQL. Reviewers are neither counted nor limited, a 429
counts nothing, and X-Forwarded-For is believed only from the proxies the settings trust."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import pytest
import requests
from sqlalchemy import select

from api.http import EXTENSION
from api.limits import RATE_LIMITED
from events.sql.auth_limits import AuthLimiter, candidate_auth_failures
from tests.conftest import new_org
from tests.e2e.helpers import assert_error, create, issue_keys
from tests.e2e.test_health_metrics import Process, answers, free_port, scraped
from tests.e2e.test_openapi import violations
from tests.support.system import Client, System
from tests.support.wait import wait_for

ROUTE = "/v1/assessments/<assessment_id>"
WRONG_KEY = "PST-AAAA-BBBB"


def refused_for(response: requests.Response, window_seconds: int) -> int:
    """The 429 in the one error shape; its Retry-After in seconds."""
    error = assert_error(response, 429, "rate_limited")
    assert error["message"] == RATE_LIMITED
    seconds = int(response.headers["Retry-After"])
    assert 1 <= seconds <= window_seconds, seconds
    return seconds


# --- one API, on a clock the test moves -----------------------------------------------------

LIMIT = 3
WINDOW = 60
#: Half-way through a window (windows are aligned on the epoch).
MIDDLE = datetime(2026, 12, 4, 10, 0, 30, tzinfo=UTC)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Limited:
    """A system whose API allows LIMIT failures per WINDOW, on `clock`; an assessment of a
    reviewer's organisation with one candidate key."""

    system: System
    clock: Clock
    reviewer: Client
    assessment_id: str
    key: str

    def as_candidate(self, key: str, **headers: str) -> requests.Response:
        with Client(self.system.api.url) as session:
            return session.get(f"/v1/assessments/{self.assessment_id}", headers={"X-API-Key": key, **headers})

    def failures(self) -> list[tuple[str, int]]:
        table = candidate_auth_failures
        with self.system.engine.connect() as conn:
            return [
                (row.client, row.failures) for row in conn.execute(select(table).order_by(table.c.client))
            ]


def limited_system(make_settings, **settings) -> Iterator[Limited]:
    system = System(
        make_settings(candidate_auth_limit=LIMIT, candidate_auth_window_seconds=WINDOW, **settings)
    )
    try:
        system.start_api()
        app = system.api.app
        services = app.extensions[EXTENSION]
        clock = Clock(MIDDLE)
        limiter = AuthLimiter(services.engine, LIMIT, WINDOW, clock=clock)
        app.extensions[EXTENSION] = replace(services, auth_limiter=limiter)
        org = new_org(system.settings.database_url)
        with Client(system.api.url, org.token) as reviewer:
            assessment = create(reviewer)
            (key,) = issue_keys(reviewer, assessment["id"])
            yield Limited(system, clock, reviewer, assessment["id"], key["key"])
    finally:
        system.stop()


@pytest.fixture
def limited(make_settings) -> Iterator[Limited]:
    yield from limited_system(make_settings)


@pytest.fixture
def behind_a_proxy(make_settings) -> Iterator[Limited]:
    yield from limited_system(make_settings, trusted_proxies=1)


def test_past_the_limit_even_a_correct_key_is_refused_until_the_window_ends(limited: Limited):
    for _ in range(LIMIT):
        assert_error(limited.as_candidate(WRONG_KEY), 401, "unauthorized")

    assert refused_for(limited.as_candidate(WRONG_KEY), WINDOW) == 30
    assert refused_for(limited.as_candidate(limited.key), WINDOW) == 30

    limited.clock.now = MIDDLE + timedelta(seconds=30)
    assert limited.as_candidate(limited.key).status_code == 200


def test_a_429_counts_nothing_and_moves_nothing(limited: Limited):
    for _ in range(LIMIT):
        limited.as_candidate(WRONG_KEY)

    waits = [refused_for(limited.as_candidate(key), WINDOW) for key in [WRONG_KEY] * 5 + [limited.key]]

    assert waits == [30] * 6
    assert limited.failures() == [("127.0.0.1", LIMIT)]
    limited.clock.now = MIDDLE + timedelta(seconds=30)  # the window's end did not move
    assert limited.as_candidate(limited.key).status_code == 200
    assert limited.failures() == [("127.0.0.1", LIMIT)]


def candidate_calls(limited: Limited, key: str) -> list[requests.Response]:
    """One call of each candidate endpoint that takes a secret, with `key` (or as a token)."""
    with Client(limited.system.api.url) as session:
        return [
            session.get("/v1/candidate/consent", params={"key": key}),
            session.post("/v1/candidate/consent", json={"key": key}),
            session.post("/v1/candidate/redeem", json={"key": key}),
            session.post(
                "/v1/candidate/device-check",
                json={"checkpoint": "start", "fingerprint": {}},
                headers={"X-API-Key": key},
            ),
            session.post("/v1/candidate/complete", json={"key": key, "sessionId": str(uuid.uuid4())}),
            session.get("/v1/issues/any-issue", headers={"X-API-Key": key}),
        ]


def test_every_candidate_endpoint_counts_its_failures_and_is_limited(limited: Limited):
    calls = 6  # one failure per endpoint: the limit is reached by the last of them
    app = limited.system.api.app
    services = app.extensions[EXTENSION]
    limiter = AuthLimiter(services.engine, calls, WINDOW, clock=limited.clock)
    app.extensions[EXTENSION] = replace(services, auth_limiter=limiter)

    for response in candidate_calls(limited, WRONG_KEY):
        assert_error(response, 401, "unauthorized")
    assert limited.failures() == [("127.0.0.1", calls)]

    for response in candidate_calls(limited, limited.key):
        refused_for(response, WINDOW)


def test_a_correct_key_counts_no_failure(limited: Limited):
    for _ in range(LIMIT + 2):
        assert limited.as_candidate(limited.key).status_code == 200

    assert limited.failures() == []


def test_reviewers_are_neither_counted_nor_limited(limited: Limited):
    limited.system.start_relay()  # reviewers read the projections
    limited.system.start_worker()
    path = f"/v1/assessments/{limited.assessment_id}"
    with Client(limited.system.api.url, "ast_wrong_token") as wrong:
        for _ in range(LIMIT + 2):
            assert_error(wrong.get(path), 401, "unauthorized")
        assert limited.failures() == []
        assert limited.as_candidate(limited.key).status_code == 200

        for _ in range(LIMIT):
            limited.as_candidate(WRONG_KEY)
        assert refused_for(limited.as_candidate(limited.key), WINDOW)

        read = limited.reviewer.get(path)
        assert (read.status_code, read.json()["assessment"]["id"]) == (200, limited.assessment_id)
        assert "X-Projection-Stale" not in read.headers
        assert limited.reviewer.get(f"{path}/keys").status_code == 200
        assert_error(wrong.get(path), 401, "unauthorized")


def test_a_limited_request_logs_one_warning_with_the_client_and_no_key(limited: Limited, caplog):
    for _ in range(LIMIT):
        limited.as_candidate(WRONG_KEY)

    with caplog.at_level(logging.WARNING, logger="api.limits"):
        refused_for(limited.as_candidate(limited.key), WINDOW)

    (line,) = [record for record in caplog.records if record.name == "api.limits"]
    assert line.levelno == logging.WARNING
    assert (line.client, line.retry_after, line.route) == ("127.0.0.1", 30, ROUTE)
    assert limited.key not in f"{line.getMessage()} {line.__dict__}"


def test_the_429_is_the_response_the_document_describes(limited: Limited):
    for _ in range(LIMIT):
        limited.as_candidate(WRONG_KEY)
    spec = requests.get(f"{limited.system.api.url}/openapi.json", timeout=10).json()

    refused = limited.as_candidate(limited.key)

    assert refused.status_code == 429
    assert violations(spec, refused) == []


def test_without_trusted_proxies_x_forwarded_for_does_not_make_another_client(limited: Limited):
    for n in range(LIMIT):
        limited.as_candidate(WRONG_KEY, **{"X-Forwarded-For": f"198.51.100.{n}"})

    refused_for(limited.as_candidate(limited.key, **{"X-Forwarded-For": "198.51.100.99"}), WINDOW)
    assert limited.failures() == [("127.0.0.1", LIMIT)]


def test_behind_a_trusted_proxy_the_forwarded_address_is_the_client(behind_a_proxy: Limited):
    limited = behind_a_proxy
    for _ in range(LIMIT):
        limited.as_candidate(WRONG_KEY, **{"X-Forwarded-For": "198.51.100.7"})

    refused_for(limited.as_candidate(limited.key, **{"X-Forwarded-For": "198.51.100.7"}), WINDOW)
    assert limited.as_candidate(limited.key, **{"X-Forwarded-For": "198.51.100.8"}).status_code == 200
    assert limited.failures() == [("198.51.100.7", LIMIT)]


def test_behind_a_trusted_proxy_one_ipv6_64_is_one_client(behind_a_proxy: Limited):
    limited = behind_a_proxy
    for host in range(1, LIMIT + 1):
        limited.as_candidate(WRONG_KEY, **{"X-Forwarded-For": f"2001:db8:0:1::{host}"})

    refused_for(limited.as_candidate(limited.key, **{"X-Forwarded-For": "2001:db8:0:1:ffff::1"}), WINDOW)
    assert limited.as_candidate(limited.key, **{"X-Forwarded-For": "2001:db8:0:2::1"}).status_code == 200
    assert limited.failures() == [("2001:db8:0:1::/64", LIMIT)]


# --- two real API processes on one database ------------------------------------------------

PROCESS_LIMIT = 4
PROCESS_WINDOW = 2


def a_window_begins(seconds: int) -> None:
    """Windows are aligned on the epoch: start the attempts just after a window begins, so the
    ones that must share a window do (each is a few milliseconds on the loopback)."""
    wait_for(lambda: time.time() % seconds < 0.2, seconds + 5, "the start of a window")


def test_the_limit_holds_across_two_api_processes(make_settings, tmp_path):
    settings = make_settings()
    limits = {
        "ASSESSMENTS_CANDIDATE_AUTH_LIMIT": str(PROCESS_LIMIT),
        "ASSESSMENTS_CANDIDATE_AUTH_WINDOW_SECONDS": str(PROCESS_WINDOW),
    }
    ports, processes = [free_port(), free_port()], []
    for name, port in zip("ab", ports, strict=True):
        (tmp_path / name).mkdir()
        args = ["api", "--bind", f"127.0.0.1:{port}", "--workers", "1"]
        processes.append(Process(args, settings, tmp_path / name, **limits))
    a, b = (f"http://127.0.0.1:{port}" for port in ports)
    try:
        for url in (a, b):
            wait_for(lambda url=url: answers(f"{url}/healthz"), 30, f"the API at {url} to answer")
        org = new_org(settings.database_url)
        with Client(a, org.token) as reviewer:
            assessment = create(reviewer)
            (issued,) = issue_keys(reviewer, assessment["id"])
        path, key = f"/v1/assessments/{assessment['id']}", issued["key"]

        def get(url: str, with_key: str) -> requests.Response:
            return requests.get(f"{url}{path}", headers={"X-API-Key": with_key}, timeout=10)

        assert get(a, key).status_code == get(b, key).status_code == 200  # both warm

        a_window_begins(PROCESS_WINDOW)
        for url in (a, b, a, b):
            assert_error(get(url, WRONG_KEY), 401, "unauthorized")
        fifth = [get(a, WRONG_KEY), get(b, WRONG_KEY)]
        correct = [get(a, key), get(b, key)]

        for refused in fifth + correct:
            refused_for(refused, PROCESS_WINDOW)
        wait_for(lambda: get(a, key).status_code == 200, PROCESS_WINDOW + 10, "the window to end")
        assert get(b, key).status_code == 200
        exposition = {url: requests.get(f"{url}/metrics", timeout=10).text for url in (a, b)}
    finally:
        codes = [process.stop() for process in processes]

    assert codes == [0, 0]
    for url in (a, b):
        assert scraped(exposition[url], "assessments_candidate_auth_failures_total", route=ROUTE) == 2
        assert scraped(exposition[url], "assessments_candidate_auth_limited_total", route=ROUTE) >= 2
    lines = [line for process in processes for line in process.log_lines()]
    warnings = [line for line in lines if line["logger"] == "api.limits"]
    assert len(warnings) >= 4
    assert {(line["level"], line["client"]) for line in warnings} == {("WARNING", "127.0.0.1")}
    assert not [line for line in lines if key in str(line) or WRONG_KEY in str(line)]
