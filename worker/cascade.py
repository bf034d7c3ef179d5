"""The worker's second step: once a batch's projections committed, the keys of every assessment
the batch deleted are revoked, by appending events through the service.

It runs again on every redelivery of the deletion (and is then a no-op: the aggregate decides
nothing), so a worker killed half-way finishes on restart. Its revocations are caused by the
deletion and carry its correlation id, so one request's id follows the whole chain.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from events.model import AssessmentDeleted, Metadata, RecordedEvent
from events.service import AssessmentService

CASCADE_ACTOR = "worker:cascade"


@dataclass(frozen=True)
class Cascaded:
    """What the cascade did for one deletion: `revoked` is empty when there was nothing left."""

    deletion: RecordedEvent
    metadata: Metadata
    revoked: list[RecordedEvent]


def deletions(events: Sequence[RecordedEvent]) -> list[RecordedEvent]:
    """The events of a batch that need the cascade."""
    return [recorded for recorded in events if isinstance(recorded.event, AssessmentDeleted)]


def caused_by(deletion: RecordedEvent) -> Metadata:
    """The metadata of the revocations a deletion causes."""
    return Metadata(
        org_id=deletion.event.org_id,
        actor=CASCADE_ACTOR,
        correlation_id=deletion.metadata.get("correlationId"),
        causation_id=str(deletion.event_id),
    )


class Cascade:
    def __init__(self, service: AssessmentService) -> None:
        self.service = service

    def __call__(self, events: Sequence[RecordedEvent]) -> Iterator[Cascaded]:
        """One result per deletion in `events`, each yielded as soon as its revocations are
        appended (a later one may fail: what came before is done and may be reported)."""
        for deletion in deletions(events):
            metadata = caused_by(deletion)
            yield Cascaded(deletion, metadata, self.service.cascade_deletion(deletion.stream_id, metadata))
