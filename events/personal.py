"""Personal data in events: which fields hold it, whose it is, and the port that seals it.

A candidate's email and name are personal data; events are kept and replayed forever and travel
to other services. So personal fields are crypto-shredded. Each *data subject* has a data key of
its own: a candidate's email within an organisation, or, for a key issued without an email, the
key itself (the subject's id is then the key's id). An event's personal fields
(`Event.personal`) are stored sealed under its `subject_id`'s key; erasing the subject destroys
that key in the same transaction as its `CandidateErased` event, and from then on every copy
(the events, the keys view, a backup, a dump) is unreadable, while the events stay valid.

Inside the service an event or a key read back holds tokens in those fields: the edges that
show them (the API, the notifier) reveal them through `PersonalData.reader`. Published messages
never carry them (`events.messages`). An event stored before sealing existed has no
`subject_id` and holds its values in clear until `assessments candidates seal` migrates it.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

from events.candidate import CandidateKey
from events.codec import camel
from events.model import CandidateKeyIssued, Event, RecordedEvent

T = TypeVar("T", Event, CandidateKey)

#: The personal fields of a key's record, the ones the keys view holds sealed.
KEY_FIELDS = ("candidate_email", "candidate_name")


class SubjectKeys(Protocol):
    """The data keys of some subjects, read at once: what reveals their tokens."""

    def erased(self, subject_id: uuid.UUID) -> bool: ...

    def reveal(
        self, subject_id: uuid.UUID, field: str, token: str, event_id: uuid.UUID | None = None
    ) -> str | None: ...


class _NoKeys:
    """The keys a service without `PersonalData` holds: none, so any subject reads as erased
    (fail closed); events without a subject are in clear and need none."""

    def erased(self, subject_id: uuid.UUID) -> bool:
        return True

    def reveal(
        self, subject_id: uuid.UUID, field: str, token: str, event_id: uuid.UUID | None = None
    ) -> str | None:
        return None


NO_KEYS: SubjectKeys = _NoKeys()


class PersonalData(Protocol):
    def subjects(self, org_id: str, emails: Sequence[str]) -> dict[str, uuid.UUID]:
        """The subject of each email in the organisation, made on first use."""
        ...

    def subjects_of(self, org_id: str, email: str) -> list[uuid.UUID]:
        """The email's subjects whose keys still exist: what erasing it erases."""
        ...

    def seal(self, event_id: uuid.UUID, event: Event, data: dict[str, Any]) -> dict[str, Any]:
        """`data` (the event's stored payload) with its personal fields sealed."""
        ...

    def reader(self, subject_ids: Iterable[uuid.UUID | None], conn: Any = None) -> SubjectKeys:
        """The data keys of these subjects, read at once (on `conn`, the adapter's own kind of
        connection, when the caller holds one open)."""
        ...

    def keys_from(self, found: Mapping[uuid.UUID, tuple[str, bytes] | None]) -> SubjectKeys:
        """The keys of subjects whose wrapped data keys (master key id, bytes) the caller read
        along with its own rows; None for a subject whose key is gone."""
        ...


def has_email(event: CandidateKeyIssued) -> bool:
    """Whether the key was issued to an email, without reading it: a key's own subject (its id)
    is the subject of a key without one. What a consumer of messages, which carry no personal
    data, can still tell."""
    if event.subject_id is None:
        return bool(event.candidate_email)
    return event.subject_id != event.key_id


def subjects_in(items: Iterable[Event | CandidateKey]) -> set[uuid.UUID]:
    return {s for item in items if (s := getattr(item, "subject_id", None)) is not None}


def revealed(keys: SubjectKeys, item: T, event_id: uuid.UUID | None = None) -> tuple[T, bool]:
    """`item` (an event read from the store, or a key's record) with its personal fields
    readable, and whether its subject was erased (the fields are then None)."""
    names = item.personal if isinstance(item, Event) else KEY_FIELDS
    subject = getattr(item, "subject_id", None)
    if not names or subject is None:
        return item, False
    if keys.erased(subject):
        return dataclasses.replace(item, **dict.fromkeys(names, None)), True
    values = {}
    for name in names:
        token = getattr(item, name)
        values[name] = None if token is None else keys.reveal(subject, camel(name), token, event_id)
    return dataclasses.replace(item, **values), False


def revealed_event(keys: SubjectKeys, recorded: RecordedEvent) -> tuple[RecordedEvent, bool]:
    event, erased = revealed(keys, recorded.event, recorded.event_id)
    return dataclasses.replace(recorded, event=event), erased
