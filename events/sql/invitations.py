"""The invitations table: one row per issued key with an email, recording its mail's progress.

This is what makes "exactly one mail per key" hold across redeliveries, republishes, replays
and several notifiers: a notifier sends only after it *claimed* the key's row, and a claim is
one conditional UPDATE, which exactly one of any number of concurrent notifiers wins (the
others find the row changed and take nothing). The row goes (`pending` →) `claimed` → `sent`
(or `skipped`, or `failed`; or back to `pending` with a later `next_attempt_at` after a
transient failure); a new row is recorded already claimed by the notifier that first saw
its key. A row in a final state is never claimed again.

The one window SMTP leaves open: a notifier that dies (or loses its database) after the
server accepted the mail but before `mark_sent` committed leaves the row `claimed`. After
the lease (`lease`, 5 minutes by default) any notifier's sweep claims it again and the mail
goes out a second time, with the same `Message-ID`. The lease must outlast any send (the
SMTP timeouts), or a slow send could be duplicated by a live notifier too; a mark from a
notifier whose claim was taken over is refused (its claim token no longer matches) and
logged.

The row holds ids and states only, no address and no key: those are read from the store when
the mail is built.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import Column, Index, Integer, MetaData, Table, Text, Uuid, and_, func, or_, select, text
from sqlalchemy.engine import Engine

from events.invitations import CLAIMED, FAILED, PENDING, SENT, SKIPPED
from events.model import utcnow
from events.sql.dialect import dialect_of
from events.sql.engine import autocommit
from events.sql.types import Timestamp

metadata = MetaData()

invitations = Table(
    "invitations",
    metadata,
    Column("key_id", Uuid, primary_key=True),
    Column("assessment_id", Uuid, nullable=False),
    Column("org_id", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("attempts", Integer, nullable=False),
    #: When a `pending` row is due (at once when recorded; later after a transient failure).
    Column("next_attempt_at", Timestamp),
    #: Which claim holds a `claimed` row: only its holder may record the outcome.
    Column("claim_token", Uuid),
    Column("claimed_at", Timestamp),
    Column("sent_at", Timestamp),
    #: Why a row was skipped or failed.
    Column("reason", Text),
    #: The last failed attempt's error (an SMTP reply, a connection error).
    Column("last_error", Text),
    Column("created_at", Timestamp, nullable=False, server_default=func.now()),
    Index("invitations_due_idx", "next_attempt_at", postgresql_where=text("status = 'pending'")),
    Index("invitations_claimed_idx", "claimed_at", postgresql_where=text("status = 'claimed'")),
    Index("invitations_failed_idx", "key_id", postgresql_where=text("status = 'failed'")),
)

MAX_ERROR_LENGTH = 1000


class Claim:
    """A notifier's hold on one key's row: `attempts` counts this one."""

    def __init__(self, key_id: uuid.UUID, token: uuid.UUID, attempts: int) -> None:
        self.key_id = key_id
        self.token = token
        self.attempts = attempts

    def __repr__(self) -> str:
        return f"Claim({self.key_id}, attempt {self.attempts})"


class Invitations:
    """Every operation is one statement, committed on its own: a mail costs two round trips
    here (record-and-claim, then the outcome)."""

    def __init__(self, engine: Engine, lease: timedelta, clock: Callable[[], datetime] = utcnow) -> None:
        self.engine = autocommit(engine)
        self.lease = lease
        self.clock = clock
        self._insert = dialect_of(engine).insert(invitations)

    def _claimable(self, now: datetime):
        table = invitations
        return or_(
            and_(table.c.status == PENDING, table.c.next_attempt_at <= now),
            and_(table.c.status == CLAIMED, table.c.claimed_at <= now - self.lease),
        )

    def record_and_claim(self, key_id: uuid.UUID, assessment_id: uuid.UUID, org_id: str) -> Claim | None:
        """Record the key as claimed by us or, if it is recorded already (a redelivery, another
        notifier), claim it if it is claimable: one upsert, which exactly one of the notifiers
        racing for a key wins (the database serialises them on the key). None: someone else
        holds it, or it is done, or not yet due."""
        table = invitations
        now, token = self.clock(), uuid.uuid4()
        claimed = {"status": CLAIMED, "claim_token": token, "claimed_at": now}
        statement = (
            self._insert.values(
                key_id=key_id, assessment_id=assessment_id, org_id=org_id, attempts=1, **claimed
            )
            .on_conflict_do_update(
                index_elements=[table.c.key_id],
                set_={**claimed, "attempts": table.c.attempts + 1},
                where=self._claimable(now),
            )
            .returning(table.c.attempts)
        )
        with self.engine.connect() as conn:
            attempts = conn.scalar(statement)
        return None if attempts is None else Claim(key_id, token, attempts)

    def claim(self, key_id: uuid.UUID) -> Claim | None:
        """One conditional UPDATE: of notifiers racing for the row exactly one changes it."""
        table = invitations
        now, token = self.clock(), uuid.uuid4()
        with self.engine.connect() as conn:
            attempts = conn.scalar(
                table.update()
                .where(table.c.key_id == key_id, self._claimable(now))
                .values(status=CLAIMED, claim_token=token, claimed_at=now, attempts=table.c.attempts + 1)
                .returning(table.c.attempts)
            )
        return None if attempts is None else Claim(key_id, token, attempts)

    def due(self, limit: int = 50) -> list[tuple[uuid.UUID, uuid.UUID]]:
        """(key id, assessment id) of the rows a sweep may try to claim: pending and due, or
        claimed longer than the lease."""
        table = invitations
        query = (
            select(table.c.key_id, table.c.assessment_id)
            .where(self._claimable(self.clock()))
            .order_by(table.c.next_attempt_at, table.c.claimed_at)
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return [(key_id, assessment_id) for key_id, assessment_id in conn.execute(query)]

    def assessment_of(self, key_id: uuid.UUID) -> uuid.UUID | None:
        with self.engine.connect() as conn:
            return conn.scalar(select(invitations.c.assessment_id).where(invitations.c.key_id == key_id))

    def mark_sent(self, claim: Claim) -> bool:
        return self._finish(claim, status=SENT, sent_at=self.clock(), next_attempt_at=None)

    def mark_skipped(self, claim: Claim, reason: str) -> bool:
        return self._finish(claim, status=SKIPPED, reason=reason, next_attempt_at=None)

    def mark_failed(self, claim: Claim, reason: str) -> bool:
        return self._finish(
            claim, status=FAILED, reason=reason[:MAX_ERROR_LENGTH], last_error=reason[:MAX_ERROR_LENGTH]
        )

    def retry_later(self, claim: Claim, error: str, delay: timedelta) -> bool:
        """Back to `pending`, due after `delay`: a sweep takes it up then."""
        return self._finish(
            claim,
            status=PENDING,
            next_attempt_at=self.clock() + delay,
            last_error=error[:MAX_ERROR_LENGTH],
        )

    def _finish(self, claim: Claim, **values) -> bool:
        """Whether the claim still held: a notifier whose lease ran out and was taken over
        records nothing."""
        table = invitations
        with self.engine.connect() as conn:
            changed = conn.execute(
                table.update()
                .where(
                    table.c.key_id == claim.key_id,
                    table.c.status == CLAIMED,
                    table.c.claim_token == claim.token,
                )
                .values(claim_token=None, **values)
            ).rowcount
        return changed == 1

    def status_of(self, key_id: uuid.UUID) -> str | None:
        with self.engine.connect() as conn:
            return conn.scalar(select(invitations.c.status).where(invitations.c.key_id == key_id))


def figures():
    """For `/readyz`, as scalar subqueries (each served by a partial index): how many
    invitations wait (pending), are being sent (claimed) or failed, and since when the most
    overdue one waiting has been due: a figure that grows while no notifier runs."""
    table = invitations
    return (
        select(func.count()).where(table.c.status == PENDING).scalar_subquery(),
        select(func.count()).where(table.c.status == CLAIMED).scalar_subquery(),
        select(func.count()).where(table.c.status == FAILED).scalar_subquery(),
        select(func.min(table.c.next_attempt_at)).where(table.c.status == PENDING).scalar_subquery(),
    )
