"""The expiry step: record `CandidateKeyExpired` for keys that ran out of time.

Authentication never waits for it (a key's status is derived from time, and fails closed the
moment it ends); the event is for the record, for the read model and for downstream consumers.
The worker runs it with its sweep, every few seconds, so each expiry is recorded well within a
minute of its moment, also after a restart (it finds whatever is due, however old). Several
workers may run it at once: each expiry is decided on the assessment's stream and appended
with the version it was decided on, so a second step finds it recorded and decides nothing.
A rebuild never runs it: it only replays.
"""

from __future__ import annotations

import logging

from sqlalchemy.engine import Engine

from events.ports import ConcurrencyConflict
from events.service import AssessmentService
from projections import queries

log = logging.getLogger(__name__)

#: Assessments decided on per step; the next step takes the rest.
BATCH = 200


class Expiry:
    def __init__(self, engine: Engine, service: AssessmentService, batch: int = BATCH) -> None:
        self.engine = engine
        self.service = service
        self.batch = batch

    def __call__(self) -> int:
        """Record what is due now; returns how many keys expired."""
        with self.engine.connect() as conn:
            due = queries.due_to_expire(conn, self.service.clock(), self.batch)
        expired = 0
        for stream_id in due:
            try:
                expired += len(self.service.expire_keys(stream_id))
            except ConcurrencyConflict:  # busy: the next step decides on it again
                log.warning("expiry of assessment %s lost every race; retried next step", stream_id)
        if expired:
            log.info("recorded the expiry of %d candidate key(s)", expired, extra={"expired": expired})
        return expired
