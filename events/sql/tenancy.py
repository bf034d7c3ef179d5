"""Organisations and reviewer tokens in the database: their tables, the operators' commands
(create, list, revoke) and the lookup every reviewer request makes (see `events.tenancy`)."""

from __future__ import annotations

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

from events.model import utcnow, uuid7
from events.sql.token_cache import TokenCache
from events.sql.types import Timestamp
from events.tenancy import TOKEN_PREFIX, IssuedToken, Reviewer, TokenInfo, hash_token, new_token

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


def create_organisation(engine: Engine, name: str) -> IssuedToken:
    org_id = str(uuid7())
    with engine.begin() as conn:
        conn.execute(organisations.insert().values(id=org_id, name=name, created_at=utcnow()))
        return _insert_token(conn, org_id)


def organisation_name(engine: Engine, org_id: str) -> str | None:
    with engine.connect() as conn:
        return conn.scalar(select(organisations.c.name).where(organisations.c.id == org_id))


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


def reviewer_for(engine: Engine, token: str, cache: TokenCache[Reviewer] | None = None) -> Reviewer | None:
    """The reviewer a bearer token belongs to, or None; from `cache` when it vouches for it."""
    token_hash = hash_token(token)
    if cache is not None and (known := cache.get(token_hash)) is not None:
        return known
    generation = cache.generation() if cache is not None else None
    # Asked once per token and process while the cache vouches for it (on PostgreSQL), so a
    # plain SQLAlchemy statement: the bare-driver path the append takes would save nothing.
    with engine.connect() as conn:
        row = conn.execute(_REVIEWER_QUERY, {"token_hash": token_hash}).first()
    found = Reviewer(*row) if row else None
    if found is not None and cache is not None:
        cache.put(token_hash, found, generation)
    return found
