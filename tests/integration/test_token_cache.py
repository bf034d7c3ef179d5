"""Reviewer tokens in the API's memory: served from there only while PostgreSQL vouches that no
token changed, forgotten on any change to `api_tokens` and whenever the vouching session is
lost, never kept for a token that was refused."""

from __future__ import annotations

import time
from collections.abc import Iterator

import psycopg
import pytest
from sqlalchemy import text

from events.sql import tenancy
from events.sql.engine import libpq_url
from events.sql.token_cache import APPLICATION_NAME, TokenCache
from events.tenancy import IssuedToken, Reviewer
from tests.conftest import new_org
from tests.support.system import Client
from tests.support.wait import wait_for


@pytest.fixture
def cache(system) -> Iterator[TokenCache]:
    tokens = TokenCache(libpq_url(system.engine))
    tokens.get("")  # starts its session
    wait_for(lambda: tokens.generation() is not None, 5, "the cache's session listening")
    yield tokens
    tokens.stop()


@pytest.fixture
def token(system) -> IssuedToken:
    return new_org(system.settings.database_url)


def sql(engine, statement: str, **params) -> None:
    with engine.begin() as conn:
        conn.execute(text(statement), params)


def revoke_silently(engine, prefix: str) -> None:
    """Revoke without the trigger that tells the API: only to show what the cache holds."""
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE api_tokens DISABLE TRIGGER api_tokens_changed"))
        conn.execute(text("UPDATE api_tokens SET revoked_at = now() WHERE prefix = :p"), {"p": prefix})
        conn.execute(text("ALTER TABLE api_tokens ENABLE TRIGGER api_tokens_changed"))


def test_a_known_token_is_served_from_memory(system, cache, token):
    assert tenancy.reviewer_for(system.engine, token.token, cache) == Reviewer(token.org_id, token.prefix)
    revoke_silently(system.engine, token.prefix)
    assert tenancy.reviewer_for(system.engine, token.token, cache) is not None, "from memory"
    assert tenancy.reviewer_for(system.engine, token.token) is None, "the database says revoked"


@pytest.mark.parametrize(
    "change",
    [
        lambda engine, token: tenancy.revoke_tokens(engine, token.prefix),
        lambda engine, token: sql(
            engine, "UPDATE api_tokens SET revoked_at = now() WHERE prefix = :p", p=token.prefix
        ),
        lambda engine, token: sql(engine, "DELETE FROM api_tokens WHERE prefix = :p", p=token.prefix),
    ],
    ids=["cli-revoke", "plain-sql-update", "delete"],
)
def test_any_change_to_the_tokens_is_seen_at_once(system, cache, token, change):
    assert tenancy.reviewer_for(system.engine, token.token, cache) is not None
    change(system.engine, token)
    started = time.monotonic()
    wait_for(lambda: tenancy.reviewer_for(system.engine, token.token, cache) is None, 2, "the change seen")
    assert time.monotonic() - started < 0.5


def test_a_lost_session_forgets_everything_and_nothing_is_cached_until_it_is_back(system, cache, token):
    assert tenancy.reviewer_for(system.engine, token.token, cache) is not None
    revoke_silently(system.engine, token.prefix)
    before = cache.generation()

    with psycopg.connect(libpq_url(system.engine), autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND application_name = %s",
            (APPLICATION_NAME,),
        )
        wait_for(lambda: cache.generation() != before, 5, "the cache to notice")
    assert tenancy.reviewer_for(system.engine, token.token, cache) is None


def test_without_its_session_the_cache_keeps_nothing(system, token):
    unreachable = TokenCache("host=127.0.0.1 port=1 dbname=nowhere connect_timeout=1")
    try:
        assert tenancy.reviewer_for(system.engine, token.token, unreachable) is not None
        revoke_silently(system.engine, token.prefix)
        assert tenancy.reviewer_for(system.engine, token.token, unreachable) is None
    finally:
        unreachable.stop()


def test_a_refused_token_is_not_remembered(system, cache):
    issued = new_org(system.settings.database_url)
    revoke_silently(system.engine, issued.prefix)
    assert tenancy.reviewer_for(system.engine, issued.token, cache) is None
    sql(system.engine, "UPDATE api_tokens SET revoked_at = NULL WHERE prefix = :p", p=issued.prefix)
    back = lambda: tenancy.reviewer_for(system.engine, issued.token, cache) is not None  # noqa: E731
    wait_for(back, 2, "the token back")


def test_over_http_a_revoked_token_gets_401_on_the_next_requests(system):
    url = system.start_api()
    issued = new_org(system.settings.database_url)
    with Client(url, issued.token) as client:
        assert [client.get("/v1/issues").status_code for _ in range(3)] == [200] * 3
        tenancy.revoke_tokens(system.engine, issued.prefix)
        wait_for(lambda: client.get("/v1/issues").status_code == 401, 1, "401 after the revoke")
        assert [client.get("/v1/issues").status_code for _ in range(3)] == [401] * 3
