"""The ports of the core: what the service and the worker need from the outside world, as
protocols (the store of events, the outbox, the issue catalogue) and the errors and values they
speak in. The adapters live in `events.sql` (PostgreSQL, SQLite) and `events.memory`; nothing
here imports them.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from events.model import Event, Metadata, RecordedEvent, StoredEvent


class ConcurrencyConflict(Exception):
    """The stream moved past the version the caller decided on: reload and decide again."""


class ReservationTaken(Exception):
    """A cross-stream unique value (e.g. a candidate key) is already claimed."""

    def __init__(self, scope: str, key: str) -> None:
        super().__init__(f"{scope}:{key}")
        self.scope = scope
        self.key = key


@dataclass(frozen=True)
class Reservation:
    """A claim on a value that must be unique service-wide, written with the append.

    `subject_id` names what in the stream the value belongs to, when not the stream itself: a
    candidate key's id. A candidate key's reservation is the only place its string is kept
    (events hold its hint), so the service finds a key's string by `subject_id`, and a
    presented key's id by the string."""

    scope: str
    key: str
    payload: dict[str, Any] = field(default_factory=dict)
    subject_id: uuid.UUID | None = None


@dataclass(frozen=True)
class ReservationRecord:
    scope: str
    key: str
    stream_id: uuid.UUID
    payload: dict[str, Any]
    subject_id: uuid.UUID | None = None


class EventStore(Protocol):
    def append(
        self,
        stream_id: uuid.UUID,
        expected_version: int,
        events: Sequence[Event],
        metadata: Metadata,
        reservations: Sequence[Reservation] = (),
        erasing: Sequence[uuid.UUID] = (),
    ) -> list[RecordedEvent]:
        """`erasing`: data subjects whose keys the same transaction destroys (their
        `CandidateErased` events are the ones appended; see `events.personal`)."""
        ...

    def load(self, stream_id: uuid.UUID, after_version: int = 0) -> list[RecordedEvent]: ...

    def at_positions(self, positions: Sequence[int]) -> list[RecordedEvent]: ...

    def read_all(self, after_position: int = 0, batch_size: int = 1000) -> Iterator[RecordedEvent]: ...

    def reservation(self, scope: str, key: str) -> ReservationRecord | None: ...

    def reserved_values(self, scope: str, subject_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, str]: ...


class Outbox(Protocol):
    """Events not yet confirmed by the broker, oldest first; the relay removes them once it is."""

    def unpublished(self, limit: int) -> list[StoredEvent]: ...

    def mark_published(self, positions: Sequence[int]) -> None: ...

    def advance(self, published: Sequence[int], limit: int) -> list[StoredEvent]:
        """Remove the `published` rows, then read up to `limit` unpublished ones."""

    def backlog(self) -> int: ...


@dataclass(frozen=True)
class Issue:
    """A pre-configured OSS issue task: reference data operators import."""

    id: str
    title: str
    repo_url: str
    issue_url: str
    task_brief: str
    language: str
    difficulty: str
    labels: tuple[str, ...] = ()


class Catalogue(Protocol):
    """The OSS issue catalogue, as the service reads it."""

    def issue(self, issue_id: str) -> Issue | None: ...

    def issues(self) -> list[Issue]: ...
