"""Organisations, reviewer tokens and how a request proves who it is.

Tokens are shown once and stored as a SHA-256 hash: they are 256-bit random secrets, so a
fast hash is safe (no dictionary to attack) and a lookup stays one indexed query.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import (
    Column,
    ForeignKey,
    MetaData,
    Table,
    Text,
    bindparam,
    func,
    select,
    update,
)
from sqlalchemy.engine import Connection, Engine

from api.token_cache import TokenCache
from events.db import driver_connection
from events.model import utcnow, uuid7
from events.types import Timestamp

metadata = MetaData()

organisations = Table(
    "organisations",
    metadata,
    Column("id", Text, primary_key=True),
    Column("name", Text, nullable=False),
    Column("created_at", Timestamp, nullable=False, server_default=func.now()),
)

api_tokens = Table(
    "api_tokens",
    metadata,
    Column("prefix", Text, primary_key=True),
    Column("org_id", Text, ForeignKey("organisations.id"), nullable=False, index=True),
    Column("token_hash", Text, nullable=False, unique=True),
    Column("created_at", Timestamp, nullable=False, server_default=func.now()),
    Column("revoked_at", Timestamp),
)

TOKEN_PREFIX = "ast_"


@dataclass(frozen=True)
class Reviewer:
    org_id: str
    token_prefix: str


@dataclass(frozen=True)
class Candidate:
    key: str


@dataclass(frozen=True)
class IssuedToken:
    org_id: str
    prefix: str
    token: str


@dataclass(frozen=True)
class TokenInfo:
    prefix: str
    org_id: str
    created_at: datetime
    revoked_at: datetime | None


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> tuple[str, str]:
    """A token and its public prefix, e.g. `ast_k3J9xQ2a_<43 more characters>`."""
    prefix = TOKEN_PREFIX + secrets.token_urlsafe(6)
    return prefix, f"{prefix}_{secrets.token_urlsafe(32)}"


def create_organisation(engine: Engine, name: str) -> IssuedToken:
    org_id = str(uuid7())
    with engine.begin() as conn:
        conn.execute(organisations.insert().values(id=org_id, name=name, created_at=utcnow()))
        return _insert_token(conn, org_id)


def create_token(engine: Engine, org_id: str) -> IssuedToken:
    with engine.begin() as conn:
        if conn.scalar(select(organisations.c.id).where(organisations.c.id == org_id)) is None:
            raise LookupError(f"no organisation {org_id}")
        return _insert_token(conn, org_id)


def _insert_token(conn: Connection, org_id: str) -> IssuedToken:
    prefix, token = new_token()
    conn.execute(api_tokens.insert().values(prefix=prefix, org_id=org_id, token_hash=hash_token(token)))
    return IssuedToken(org_id, prefix, token)


def revoke_tokens(engine: Engine, prefix: str) -> int:
    """Revoke every live token whose public prefix starts with `prefix` (at least the
    `ast_` part and one more character, so a typo cannot revoke everything)."""
    if len(prefix) <= len(TOKEN_PREFIX):
        raise ValueError(f"prefix must be longer than {TOKEN_PREFIX!r}")
    with engine.begin() as conn:
        result = conn.execute(
            update(api_tokens)
            .where(api_tokens.c.prefix.startswith(prefix, autoescape=True), api_tokens.c.revoked_at.is_(None))
            .values(revoked_at=utcnow())
        )
        return result.rowcount


def list_tokens(engine: Engine, org_id: str | None = None, prefix: str | None = None) -> list[TokenInfo]:
    query = select(api_tokens).order_by(api_tokens.c.created_at)
    if org_id:
        query = query.where(api_tokens.c.org_id == org_id)
    if prefix:
        query = query.where(api_tokens.c.prefix.startswith(prefix, autoescape=True))
    with engine.connect() as conn:
        return [TokenInfo(r.prefix, r.org_id, r.created_at, r.revoked_at) for r in conn.execute(query)]


_REVIEWER_QUERY = select(api_tokens.c.org_id, api_tokens.c.prefix).where(
    api_tokens.c.token_hash == bindparam("token_hash"), api_tokens.c.revoked_at.is_(None)
)
#: The same on PostgreSQL, where it runs on every request: static SQL on the bare driver
#: connection (see `events.db.driver_connection`), prepared by psycopg after a few uses.
_REVIEWER_SQL = "SELECT org_id, prefix FROM api_tokens WHERE token_hash = %s AND revoked_at IS NULL"


def reviewer_for(engine: Engine, token: str, cache: TokenCache[Reviewer] | None = None) -> Reviewer | None:
    """The reviewer a bearer token belongs to, or None; from `cache` when it vouches for it."""
    token_hash = hash_token(token)
    if cache is not None and (known := cache.get(token_hash)) is not None:
        return known
    generation = cache.generation() if cache is not None else None
    if engine.dialect.name == "postgresql":
        with driver_connection(engine) as conn:
            row = conn.execute(_REVIEWER_SQL, (token_hash,)).fetchone()
    else:
        with engine.connect() as conn:
            row = conn.execute(_REVIEWER_QUERY, {"token_hash": token_hash}).first()
    found = Reviewer(*row) if row else None
    if found is not None and cache is not None:
        cache.put(token_hash, found, generation)
    return found
