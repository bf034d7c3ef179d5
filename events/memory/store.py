"""The event store and its outbox in memory: the service's rules tested in milliseconds, with no
database (tests/unit/test_service.py).

It keeps the SQL stores' contract (tests/integration/test_event_store.py runs the same tests
against all three): an append lands whole or not at all, with its reservations, one outbox row
and one pending row per event; a lost race is `ConcurrencyConflict`, a claimed value
`ReservationTaken`. Events are kept encoded, as a row holds them, and decoded on every read, so
what a caller gets is always a copy: nothing it does to one changes what is stored, and there
is no way to update or delete an event.
"""

from __future__ import annotations

import copy
import itertools
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime

from events import codec
from events.model import Event, Metadata, RecordedEvent, StoredEvent, utcnow, uuid7
from events.ports import ConcurrencyConflict, Reservation, ReservationRecord, ReservationTaken


@dataclass(frozen=True)
class PendingRow:
    """An event not yet projected, as the `projection_pending` table holds it."""

    position: int
    org_id: str
    stream_id: uuid.UUID


class InMemoryEventStore:
    """`events.ports.EventStore` in a process's memory. One lock makes every append atomic
    against the others, as a transaction does, so concurrent appends race as they do on a
    database: at one version, exactly one wins."""

    def __init__(self, clock: Callable[[], datetime] = utcnow) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        #: Every event ever appended; the one at index i has position i + 1.
        self._events: list[StoredEvent] = []
        #: Each stream's versions and the positions of their events.
        self._streams: dict[uuid.UUID, dict[int, int]] = {}
        self._reservations: dict[tuple[str, str], ReservationRecord] = {}
        #: The outbox's positions, oldest first (a dict keeps the order they were added in).
        self._outbox: dict[int, None] = {}
        self._pending: list[PendingRow] = []

    def append(
        self,
        stream_id: uuid.UUID,
        expected_version: int,
        events: Sequence[Event],
        metadata: Metadata,
        reservations: Sequence[Reservation] = (),
        erasing: Sequence[uuid.UUID] = (),  # nothing is sealed here, so there is no key to erase
    ) -> list[RecordedEvent]:
        """Append after `expected_version`, or refuse and store nothing: a reservation already
        claimed (or claimed twice here) is `ReservationTaken`, a version already in the stream
        `ConcurrencyConflict`, checked in that order, as the SQL stores do."""
        if not events:
            return []
        meta = metadata.as_dict()
        with self._lock:
            taken = self._taken(reservations)
            if taken is not None:
                raise taken
            versions = self._streams.get(stream_id, {})
            if any(expected_version + n in versions for n in range(1, len(events) + 1)):
                raise ConcurrencyConflict(f"{stream_id} is past version {expected_version}")
            now = self._clock()
            stored = [
                self._stored(stream_id, expected_version + n, len(self._events) + n, event, meta, now)
                for n, event in enumerate(events, start=1)
            ]
            self._commit(stream_id, stored, reservations, metadata.org_id)
        return [
            RecordedEvent(s.event_id, stream_id, s.stream_version, s.position, now, event, meta)
            for s, event in zip(stored, events, strict=True)
        ]

    @staticmethod
    def _stored(
        stream_id: uuid.UUID, version: int, position: int, event: Event, meta: dict, now: datetime
    ) -> StoredEvent:
        return StoredEvent(
            position=position,
            event_id=uuid7(),
            stream_id=stream_id,
            stream_version=version,
            type_name=event.type_name,
            schema_version=event.schema_version,
            data=codec.encode(event),
            metadata=copy.deepcopy(meta),
            recorded_at=now,
        )

    def _commit(
        self,
        stream_id: uuid.UUID,
        stored: list[StoredEvent],
        reservations: Sequence[Reservation],
        org_id: str,
    ) -> None:
        """Everything the append writes, once nothing can fail any more."""
        for r in reservations:
            self._reservations[(r.scope, r.key)] = ReservationRecord(
                r.scope, r.key, stream_id, copy.deepcopy(r.payload), r.subject_id
            )
        self._events.extend(stored)
        versions = self._streams.setdefault(stream_id, {})
        for s in stored:
            versions[s.stream_version] = s.position
            self._outbox[s.position] = None
            self._pending.append(PendingRow(s.position, org_id, stream_id))

    def _taken(self, reservations: Sequence[Reservation]) -> ReservationTaken | None:
        """The first value already claimed, else the first claimed twice in this append."""
        for r in reservations:
            if (r.scope, r.key) in self._reservations:
                return ReservationTaken(r.scope, r.key)
        seen: set[tuple[str, str]] = set()
        for r in reservations:
            if (r.scope, r.key) in seen:
                return ReservationTaken(r.scope, r.key)
            seen.add((r.scope, r.key))
        return None

    def load(self, stream_id: uuid.UUID, after_version: int = 0) -> list[RecordedEvent]:
        with self._lock:
            versions = self._streams.get(stream_id, {})
            stored = [self._events[versions[v] - 1] for v in sorted(versions) if v > after_version]
        return [codec.recorded(handed_out(s)) for s in stored]

    def at_positions(self, positions: Sequence[int]) -> list[RecordedEvent]:
        with self._lock:
            stored = [self._events[p - 1] for p in positions if 0 < p <= len(self._events)]
        return [codec.recorded(handed_out(s)) for s in stored]

    def read_all(self, after_position: int = 0, batch_size: int = 1000) -> Iterator[RecordedEvent]:
        """Every event after a global position, in position order, in batches: an event
        appended while the caller iterates is read if its batch is not read yet."""
        while True:
            with self._lock:
                batch = self._events[after_position : after_position + batch_size]
            yield from (codec.recorded(handed_out(s)) for s in batch)
            if len(batch) < batch_size:
                return
            after_position = batch[-1].position

    def reservation(self, scope: str, key: str) -> ReservationRecord | None:
        with self._lock:
            found = self._reservations.get((scope, key))
        return None if found is None else copy.deepcopy(found)

    def reserved_values(self, scope: str, subject_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, str]:
        """The reserved values of these subjects (a candidate key's string, by key id)."""
        wanted = set(subject_ids)
        with self._lock:
            return {
                r.subject_id: r.key
                for r in self._reservations.values()
                if r.scope == scope and r.subject_id in wanted
            }

    def pending_rows(self) -> list[PendingRow]:
        """What the `projection_pending` table would hold: nothing here projects, so every
        event appended keeps its row (the contract tests count them)."""
        with self._lock:
            return list(self._pending)


class InMemoryOutbox:
    """`events.ports.Outbox` over an `InMemoryEventStore`: its events not yet published."""

    def __init__(self, store: InMemoryEventStore) -> None:
        self.store = store

    def unpublished(self, limit: int) -> list[StoredEvent]:
        """The oldest unpublished events, as stored."""
        with self.store._lock:
            positions = list(itertools.islice(self.store._outbox, limit))
            return [handed_out(self.store._events[p - 1]) for p in positions]

    def mark_published(self, positions: Sequence[int]) -> None:
        with self.store._lock:
            for position in positions:
                self.store._outbox.pop(position, None)

    def advance(self, published: Sequence[int], limit: int) -> list[StoredEvent]:
        """Remove the `published` rows, then read up to `limit` unpublished ones."""
        self.mark_published(published)
        return self.unpublished(limit) if limit else []

    def backlog(self) -> int:
        with self.store._lock:
            return len(self.store._outbox)


def handed_out(stored: StoredEvent) -> StoredEvent:
    """A copy of a stored event that its receiver may change without changing the store."""
    return StoredEvent(
        stored.position,
        stored.event_id,
        stored.stream_id,
        stored.stream_version,
        stored.type_name,
        stored.schema_version,
        copy.deepcopy(stored.data),
        copy.deepcopy(stored.metadata),
        stored.recorded_at,
    )
