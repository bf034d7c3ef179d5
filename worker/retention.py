"""The retention step: erase candidates whose keys all ended long enough ago.

A candidate (a data subject, `events.personal`) is due when every key of theirs has ended
(completed, expired, or revoked, as the cascade of a deleted assessment does) and the last of
them ended more than the retention period ago. Each is erased like an erasure on request, as a
`CandidateErased` event (reason `retention`), so it happens once whatever runs it at the same
time. The worker runs it with its other housekeeping; a rebuild never does (it only replays).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy.engine import Engine

from events.erasure import Erasure
from events.model import ERASED_BY_RETENTION, Metadata
from projections import queries

log = logging.getLogger(__name__)

#: Subjects erased per step; the next step takes the rest.
BATCH = 200


class Retention:
    def __init__(
        self, engine: Engine, erasure: Erasure, days: int, clock: Callable[[], datetime], batch: int = BATCH
    ) -> None:
        self.engine = engine
        self.erasure = erasure
        self.period = timedelta(days=days)
        self.clock = clock
        self.batch = batch

    def __call__(self) -> int:
        """Erase what is due now; returns how many candidates were erased."""
        with self.engine.connect() as conn:
            due = queries.due_for_erasure(conn, self.clock() - self.period, self.batch)
        erased = sum(
            self.erasure.erase_subject(subject_id, org_id, ERASED_BY_RETENTION, Metadata(org_id, "retention"))
            for subject_id, org_id in due
        )
        if erased:
            log.info("erased %d candidate(s) past the retention period", erased, extra={"erased": erased})
        return erased
