"""The data subjects' keys on SQL: `events.personal.PersonalData` with AES-GCM
(`events.crypto.cipher`).

Every candidate key is a data subject of its own: its row (a fresh data key, wrapped, and the
lookup of the email it was issued to) is written by the append of its `CandidateKeyIssued`, in
the same statement, and deleted by the append of its `CandidateErased` event
(`events.sql.store`). Erasing an email erases every key its lookup finds. Unwrapped keys are
remembered per process for sealing (sealing under a key erased meanwhile writes nothing anyone
can read, which is what the erasure asked for); revealing always reads the table, so an
erasure shows at once in every process.
"""

from __future__ import annotations

import hashlib
import threading
import uuid
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.engine import Connection, Engine

from events.codec import camel
from events.crypto.cipher import DataKey, MasterKeys, UnreadableToken, new_data_key
from events.model import CandidateKeyIssued, Event
from events.sql.engine import autocommit
from events.sql.tables import subject_keys_table as subject_keys

#: Unwrapped keys remembered for sealing, most recently used last.
SEALING_KEYS_KEPT = 4096


def normalised_email(email: str) -> str:
    """Addresses differing only in case or surrounding space are one candidate."""
    return email.strip().casefold()


def lookup_of(org_id: str, email: str) -> bytes:
    return hashlib.sha256(f"{org_id}\n{normalised_email(email)}".encode()).digest()


def _lookup(issued: CandidateKeyIssued) -> bytes | None:
    return lookup_of(issued.org_id, issued.candidate_email) if issued.candidate_email else None


class SqlVault:
    def __init__(self, engine: Engine, master_keys: MasterKeys) -> None:
        self.engine = engine
        self.autocommit = autocommit(engine)
        self.master_keys = master_keys
        self._sealing: OrderedDict[uuid.UUID, DataKey] = OrderedDict()
        self._lock = threading.Lock()
        self._unwrapped: dict[uuid.UUID, tuple[tuple[str, bytes], DataKey]] = {}

    # --- subjects -------------------------------------------------------------------------

    def subjects_of(self, org_id: str, email: str) -> list[uuid.UUID]:
        query = select(subject_keys.c.subject_id).where(
            subject_keys.c.org_id == org_id, subject_keys.c.lookup == lookup_of(org_id, email)
        )
        with self.autocommit.connect() as conn:
            return list(conn.scalars(query))

    def _new_row(
        self, org_id: str, lookup: bytes | None, subject_id: uuid.UUID
    ) -> tuple[dict[str, Any], bytes]:
        """A subject's row, and its data key in clear (never stored)."""
        secret = new_data_key()
        master_key_id, wrapped = self.master_keys.wrap(subject_id, secret)
        row = {
            "subject_id": subject_id,
            "org_id": org_id,
            "lookup": lookup,
            "master_key_id": master_key_id,
            "wrapped_key": wrapped,
        }
        return row, secret

    # --- sealing --------------------------------------------------------------------------

    def seal(self, event_id: uuid.UUID, event: Event, data: dict[str, Any]) -> Sealed:
        """`data` (the event's stored payload) with its personal fields sealed, and the row of
        the subject it makes: a key's issue makes its subject, whose row the store writes in
        the same statement as the event (no round trip of its own). Any later event of the
        key seals under that subject's key; once it is erased, its personal fields are None."""
        subject = getattr(event, "subject_id", None)
        if subject is None:
            return Sealed(data)
        if isinstance(event, CandidateKeyIssued):
            row, secret = self._new_row(event.org_id, _lookup(event), subject)
            key: DataKey | None = DataKey(secret)
            self._remember(subject, key)
        else:
            row, key = None, self._sealing_key(subject)
        sealed = dict(data)
        for name in event.personal:
            value = getattr(event, name)
            if value is not None:
                field = camel(name)
                sealed[field] = None if key is None else key.seal(event_id, field, value)
        return Sealed(sealed, row)

    def _sealing_key(self, subject_id: uuid.UUID) -> DataKey | None:
        """The subject's key, remembered; None: erased."""
        with self._lock:
            key = self._sealing.get(subject_id)
            if key is not None:
                self._sealing.move_to_end(subject_id)
                return key
        with self.autocommit.connect() as conn:
            found = _rows(conn, [subject_id]).get(subject_id)
        if found is None:
            return None
        key = self._data_key(subject_id, found.master_key_id, found.wrapped_key)
        self._remember(subject_id, key)
        return key

    def _remember(self, subject_id: uuid.UUID, key: DataKey) -> None:
        with self._lock:  # the API's threads share the vault
            self._sealing[subject_id] = key
            self._sealing.move_to_end(subject_id)
            while len(self._sealing) > SEALING_KEYS_KEPT:
                self._sealing.popitem(last=False)

    def _data_key(self, subject_id: uuid.UUID, master_key_id: str, wrapped: bytes) -> DataKey:
        """Unwrapping costs more than the rest of a reveal: remembered with the wrapped bytes
        (a rotation changes them), and forgotten once the subject is found erased."""
        wrapped = bytes(wrapped)
        known = self._unwrapped.get(subject_id)
        if known is not None and known[0] == (master_key_id, wrapped):
            return known[1]
        if len(self._unwrapped) >= SEALING_KEYS_KEPT:
            self._unwrapped.clear()
        key = DataKey(self.master_keys.unwrap(subject_id, master_key_id, wrapped))
        self._unwrapped[subject_id] = ((master_key_id, wrapped), key)
        return key

    # --- revealing ------------------------------------------------------------------------

    def reader(
        self, subject_ids: Iterable[uuid.UUID | None], conn: Connection | None = None
    ) -> SubjectKeyRing:
        wanted = {s for s in subject_ids if s is not None}
        if not wanted:
            return SubjectKeyRing({})
        if conn is not None:
            rows = _rows(conn, wanted)
        else:
            with self.autocommit.connect() as own:
                rows = _rows(own, wanted)
        return self.keys_from(
            {s: (row.master_key_id, row.wrapped_key) if (row := rows.get(s)) else None for s in wanted}
        )

    def keys_from(self, found: dict[uuid.UUID, tuple[str, bytes] | None]) -> SubjectKeyRing:
        """The ring of subjects whose wrapped keys the caller read with its own rows (a join
        of `subject_keys`); None: the subject's key is gone (erased), and this process forgets
        what it held of it."""
        keys = {}
        for subject_id, wrapped in found.items():
            if wrapped is None:
                self._forget(subject_id)
            else:
                keys[subject_id] = self._data_key(subject_id, *wrapped)
        return SubjectKeyRing(keys)

    def _forget(self, subject_id: uuid.UUID) -> None:
        self._unwrapped.pop(subject_id, None)
        with self._lock:
            self._sealing.pop(subject_id, None)

    # --- rotation -------------------------------------------------------------------------

    def rotate(self, batch_size: int = 500) -> int:
        """Re-wrap every data key not wrapped by the current master key; the events are not
        touched. Returns how many were re-wrapped.

        A row locked meanwhile (an issue upserting its email's subject, an erasure deleting it)
        is waited for, never skipped, and only an empty batch ends the run (a row erased while
        waited for leaves a batch short): the older master keys are removed afterwards, and a
        data key left wrapped by one of them would be lost with it."""
        current = self.master_keys.current.key_id
        done = 0
        while True:
            with self.engine.begin() as conn:
                rows = conn.execute(
                    select(subject_keys)
                    .where(subject_keys.c.master_key_id != current)
                    .limit(batch_size)
                    .with_for_update()
                ).all()
                for row in rows:
                    secret = self.master_keys.unwrap(
                        row.subject_id, row.master_key_id, bytes(row.wrapped_key)
                    )
                    master_key_id, wrapped = self.master_keys.wrap(row.subject_id, secret)
                    conn.execute(
                        update(subject_keys)
                        .where(subject_keys.c.subject_id == row.subject_id)
                        .values(master_key_id=master_key_id, wrapped_key=wrapped)
                    )
            if not rows:
                return done
            done += len(rows)


@dataclass(frozen=True)
class Sealed:
    """A payload with its personal fields sealed, and the subject row its event makes."""

    data: dict[str, Any]
    subject: dict[str, Any] | None = None


class SubjectKeyRing:
    """`events.personal.SubjectKeys`: the keys found; a subject without one was erased."""

    def __init__(self, keys: dict[uuid.UUID, DataKey]) -> None:
        self.keys = keys

    def erased(self, subject_id: uuid.UUID) -> bool:
        return subject_id not in self.keys

    def reveal(
        self, subject_id: uuid.UUID, field: str, token: str, event_id: uuid.UUID | None = None
    ) -> str | None:
        key = self.keys.get(subject_id)
        if key is None:
            return None
        try:
            return key.open(token, field, event_id)
        except UnreadableToken:
            return None  # tampered with or misplaced: shown as missing, never as another's


def _rows(conn: Connection, subject_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, Any]:
    query = select(subject_keys.c.subject_id, subject_keys.c.master_key_id, subject_keys.c.wrapped_key).where(
        subject_keys.c.subject_id.in_(list(subject_ids))
    )
    return {row.subject_id: row for row in conn.execute(query)}
