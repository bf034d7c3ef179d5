"""Organisations and their reviewer tokens: who may act for which organisation.

Tokens are shown once and stored as a SHA-256 hash: they are 256-bit random secrets, so a fast
hash is safe (no dictionary to attack) and a lookup stays one indexed query. The tables and the
operators' commands live in `events.sql.tenancy`.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime

TOKEN_PREFIX = "ast_"


@dataclass(frozen=True)
class Reviewer:
    org_id: str
    token_prefix: str


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
