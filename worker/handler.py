"""What the worker does with a batch of events, independent of how they arrived.

One database transaction applies the whole batch to every projection and clears the events'
pending rows; only after it committed does the cascade (`worker.cascade`) run and the consumer
acknowledge.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError

from events.model import RecordedEvent
from events.ports import EventStore
from events.service import AssessmentService
from events.sql.tables import projection_pending_table as pending
from projections.projector import BatchResult, Projection, apply_batch
from worker import metrics
from worker.cascade import Cascade
from worker.expiry import Expiry

log = logging.getLogger(__name__)


@dataclass
class Totals:
    applied: int = 0
    duplicates: int = 0
    gaps_filled: int = 0
    cascaded: int = 0


class EventHandler:
    def __init__(
        self,
        engine: Engine,
        store: EventStore,
        projections: Sequence[Projection],
        service: AssessmentService | None = None,
    ) -> None:
        self.engine = engine
        self.store = store
        self.projections = projections
        self.service = service or AssessmentService(store)
        self._cascade = Cascade(self.service)
        self.expire = Expiry(engine, self.service)
        self.chores: list[Callable[[], object]] = []
        self.totals = Totals()

    def handle(self, events: Sequence[RecordedEvent]) -> None:
        """Apply a batch of events decoded from messages."""
        if events:
            self.apply(self._with_personal_fields(events))

    def apply(self, events: Sequence[RecordedEvent]) -> None:
        """Apply events as the store holds them (personal fields sealed, not left out): what
        `handle` makes of messages, or a stream the sweep read."""
        with self.engine.begin() as conn:
            results = apply_batch(
                conn, self.projections, events, self.store.load, lock=True, clear_pending=True, commit=True
            )
        newly_applied = set().union(*(r.positions for r in results))
        self._count(results)
        self._observe(events, newly_applied)
        self.cascade(events)

    def _with_personal_fields(self, events: Sequence[RecordedEvent]) -> Sequence[RecordedEvent]:
        """Messages carry no personal data (`events.personal`); the keys view keeps it, sealed
        as the store holds it, so those events are read from the store (one query a batch)."""
        positions = [e.position for e in events if e.event.personal]
        if not positions:
            return events
        stored = {r.position: r for r in self.store.at_positions(positions)}
        return [stored.get(e.position, e) for e in events]

    def cascade(self, events: Sequence[RecordedEvent]) -> None:
        """The batch's cascade, counted and logged."""
        for done in self._cascade(events):
            self.totals.cascaded += len(done.revoked)
            if done.revoked:
                log.info(
                    "cascade revoked %d key(s) of deleted assessment %s; correlation %s",
                    len(done.revoked),
                    done.deletion.stream_id,
                    done.metadata.correlation_id,
                    extra={
                        "stream_id": str(done.deletion.stream_id),
                        "causation_id": done.metadata.causation_id,
                        "correlation_id": done.metadata.correlation_id,
                    },
                )

    def housekeeping(self) -> None:
        """The worker's periodic work: project what never arrived, then record expiries (on
        projections that are as fresh as the sweep could make them), then the `chores` the
        composition root added (forgetting old failed candidate authentications)."""
        self.sweep()
        self.expire()
        for chore in self.chores:
            chore()

    def sweep(self, older_than_seconds: float = 5.0, limit: int = 100) -> int:
        """Project streams whose events have waited too long: their message was lost (for
        example published while no queue was bound). The store is the truth, so the stream is
        simply re-read. Returns how many streams were swept."""
        with self.engine.connect() as conn:
            stream_ids = conn.scalars(
                select(pending.c.stream_id)
                .where(pending.c.recorded_at < func.now() - timedelta(seconds=older_than_seconds))
                .group_by(pending.c.stream_id)
                .limit(limit)
            ).all()
        for stream_id in stream_ids:
            try:
                stream = self.store.load(stream_id)  # read from the store: nothing left out
                if stream:
                    self.apply(stream)
            except OperationalError:
                raise  # the database is away: the caller backs off
            except Exception:
                # A stream that cannot be applied (a bug) stays pending, so readers of its
                # organisation keep being told they may read stale data; the rest go on.
                log.exception("sweep could not apply stream %s", stream_id)
        if stream_ids:
            log.warning("swept %d streams whose messages never arrived", len(stream_ids))
        return len(stream_ids)

    def _count(self, results: Sequence[BatchResult]) -> None:
        self.totals.applied += results[0].applied
        self.totals.duplicates += results[0].duplicates
        self.totals.gaps_filled += results[0].gaps_filled
        for projection, result in zip(self.projections, results, strict=True):
            if result.applied:
                metrics.worker_applied.labels(projection.name).inc(result.applied)
            if result.duplicates:
                metrics.worker_duplicates.labels(projection.name).inc(result.duplicates)
            if result.gaps_filled:
                metrics.worker_gaps_filled.labels(projection.name).inc(result.gaps_filled)

    def _observe(self, events: Sequence[RecordedEvent], applied: set[int]) -> None:
        """Lag of the events this batch applied (not of duplicates), and at DEBUG which events
        of which requests (correlation ids) were applied."""
        metrics.observe_lag(e.recorded_at for e in events if e.position in applied)
        if log.isEnabledFor(logging.DEBUG):
            correlation_ids = sorted({str(e.metadata.get("correlationId")) for e in events})
            log.debug(
                "applied a batch of %d event(s), %d new; correlation ids %s",
                len(events),
                len(applied),
                correlation_ids,
                extra={"events": len(events), "applied": len(applied), "correlation_ids": correlation_ids},
            )
