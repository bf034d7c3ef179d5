"""The worker's cascade step (no database): which events of a batch it acts on, what it tells the
service, and that each deletion is reported before the next one is cascaded."""

from __future__ import annotations

import uuid

from events.model import Metadata, RecordedEvent
from events.service import AssessmentService
from tests.unit.builders import created, deleted, issued, recorded, revoked
from worker.cascade import CASCADE_ACTOR, Cascade


class RecordingService(AssessmentService):
    """Answers the cascade with the revocations it was given per assessment; records each call."""

    def __init__(self, revocations: dict[uuid.UUID, list[RecordedEvent]] | None = None) -> None:
        self.revocations = revocations or {}
        self.calls: list[tuple[uuid.UUID, Metadata]] = []

    def cascade_deletion(self, assessment_id: uuid.UUID, metadata: Metadata) -> list[RecordedEvent]:
        self.calls.append((assessment_id, metadata))
        return self.revocations.get(assessment_id, [])


def test_only_the_deletions_of_a_batch_are_cascaded_in_the_batch_order():
    first, second = created(), created()
    batch = [
        recorded(first, 1),
        recorded(issued(first), 2),
        recorded(deleted(first), 3),
        recorded(second, 1),
        recorded(deleted(second), 2),
    ]
    service = RecordingService()

    done = list(Cascade(service)(batch))

    assert [stream for stream, _ in service.calls] == [first.assessment_id, second.assessment_id]
    assert [d.deletion for d in done] == [batch[2], batch[4]]


def test_a_batch_without_deletions_asks_the_service_nothing():
    assessment = created()
    service = RecordingService()

    assert list(Cascade(service)([recorded(assessment, 1), recorded(issued(assessment), 2)])) == []
    assert service.calls == []


def test_the_revocations_are_caused_by_the_deletion_and_carry_its_correlation_id():
    assessment = created()
    deletion = recorded(deleted(assessment), 2, correlationId="request-1", actor="reviewer")
    service = RecordingService()

    list(Cascade(service)([deletion]))

    assert service.calls == [
        (
            assessment.assessment_id,
            Metadata(
                org_id=assessment.org_id,
                actor=CASCADE_ACTOR,
                correlation_id="request-1",
                causation_id=str(deletion.event_id),
            ),
        )
    ]


def test_each_deletion_reports_what_it_revoked_before_the_next_is_cascaded():
    first, second = created(), created()
    key = issued(first)
    revocation = recorded(revoked(key, reason="assessment_deleted"), 4)
    service = RecordingService({first.assessment_id: [revocation]})
    results = Cascade(service)([recorded(deleted(first), 3), recorded(deleted(second), 2)])

    reported = next(results)

    assert (reported.deletion.stream_id, reported.revoked) == (first.assessment_id, [revocation])
    assert len(service.calls) == 1
    assert next(results).revoked == []
