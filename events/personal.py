"""Personal data in events: which fields hold it, whose it is, and the port that seals it.

A candidate's email and name are personal data; events are kept and replayed forever and travel
to other services. So personal fields are crypto-shredded. Each candidate key record is a *data
subject* with a data key of its own (the subject's id is the key's id), which remembers a
digest of the email it was issued to, so that erasing a candidate by email reaches every key
of theirs. An event's personal fields (`Event.personal`) are stored sealed under its
`subject_id`'s key; erasing the subject destroys that key in the same transaction as its
`CandidateErased` event, and from then on every copy (the events, the keys view, a backup, a
dump) is unreadable, while the events stay valid.

Inside the service an event or a key read back holds tokens in those fields: the edges that
show them (the API, the notifier) reveal them through `PersonalData.reader`. Published messages
never carry them (`events.messages`). An event stored before sealing existed has no
`subject_id` and holds its values in clear until `assessments candidates seal` migrates it.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterable, Mapping
from functools import cache
from typing import Any, Protocol, TypeVar

from events.candidate import CandidateKey
from events.codec import camel
from events.model import Event, RecordedEvent

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
    """The data subjects' keys. Sealing is the store's business (`events.sql.vault`); the core
    asks what erasing an email reaches, and the edges reveal."""

    def subjects_of(self, org_id: str, email: str) -> list[uuid.UUID]:
        """The email's subjects whose keys still exist: what erasing it erases."""
        ...

    def reader(self, subject_ids: Iterable[uuid.UUID | None], conn: Any = None) -> SubjectKeys:
        """The data keys of these subjects, read at once (on `conn`, the adapter's own kind of
        connection, when the caller holds one open)."""
        ...

    def keys_from(self, found: Mapping[uuid.UUID, tuple[str, bytes] | None]) -> SubjectKeys:
        """The keys of subjects whose wrapped data keys (master key id, bytes) the caller read
        along with its own rows; None for a subject whose key is gone."""
        ...


def subjects_in(items: Iterable[Event | CandidateKey]) -> set[uuid.UUID]:
    return {s for item in items if (s := getattr(item, "subject_id", None)) is not None}


@cache
def _fields(names: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """Each personal field's name, and its name in payloads (the associated data of its seal)."""
    return tuple((name, camel(name)) for name in names)


def reveal_into(
    keys: SubjectKeys,
    subject: uuid.UUID | None,
    values: dict[str, Any],
    names: tuple[str, ...] = KEY_FIELDS,
    event_id: uuid.UUID | None = None,
) -> bool:
    """Reveal the personal fields held in `values` (by field name), in place; returns whether
    the subject was erased (the fields are then None). A key list reveals its rows this way,
    without copying records."""
    if subject is None:
        return False
    erased = keys.erased(subject)
    for name, field in _fields(names):
        token = values[name]
        if token is not None:
            values[name] = None if erased else keys.reveal(subject, field, token, event_id)
    return erased


def revealed(keys: SubjectKeys, item: T, event_id: uuid.UUID | None = None) -> tuple[T, bool]:
    """`item` (an event read from the store, or a key's record) with its personal fields
    readable, and whether its subject was erased (the fields are then None)."""
    names = item.personal if isinstance(item, Event) else KEY_FIELDS
    subject = getattr(item, "subject_id", None)
    if not names or subject is None:
        return item, False
    values = {name: getattr(item, name) for name in names}
    erased = reveal_into(keys, subject, values, names, event_id)
    return dataclasses.replace(item, **values), erased


def revealed_event(keys: SubjectKeys, recorded: RecordedEvent) -> tuple[RecordedEvent, bool]:
    event, erased = revealed(keys, recorded.event, recorded.event_id)
    return dataclasses.replace(recorded, event=event), erased
