"""Erasing candidates (`events.personal`): destroy a data subject's key and record it, once.

The `CandidateErased` event is the only event of its subject's stream, appended at version 1
in the same transaction that deletes the subject's key: the two happen together or not at all,
and a second erasure of the subject (a retried request, the retention step racing a reviewer)
loses the race on the stream version and changes nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime

from events.model import ERASED_ON_REQUEST, CandidateErased, Metadata, utcnow
from events.personal import PersonalData
from events.ports import ConcurrencyConflict, EventStore


class Erasure:
    def __init__(
        self, store: EventStore, personal: PersonalData, clock: Callable[[], datetime] = utcnow
    ) -> None:
        self.store = store
        self.personal = personal
        self.clock = clock

    def erase_email(self, org_id: str, email: str, metadata: Metadata) -> int:
        """Erase the organisation's candidate with this email; returns how many subjects were
        erased now (0 when there is nothing, or nothing left, to erase)."""
        subjects = self.personal.subjects_of(org_id, email)
        return sum(self.erase_subject(s, org_id, ERASED_ON_REQUEST, metadata) for s in subjects)

    def erase_subject(self, subject_id: uuid.UUID, org_id: str, reason: str, metadata: Metadata) -> bool:
        """False when the subject was erased already."""
        erased = CandidateErased(subject_id=subject_id, org_id=org_id, reason=reason, erased_at=self.clock())
        try:
            self.store.append(subject_id, 0, [erased], metadata, erasing=[subject_id])
        except ConcurrencyConflict:
            return False
        return True
