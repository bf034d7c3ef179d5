"""The data subjects' keys on SQL: `events.personal.PersonalData` with AES-GCM
(`events.crypto.cipher`).

A subject's row is made on first use (`subjects`, or when a key's own subject first has
something to seal) and deleted by the append of its `CandidateErased` event
(`events.sql.store`), in that event's transaction. Unwrapped keys are remembered per process
only for sealing: sealing under a key erased meanwhile writes nothing anyone can read, which is
what the erasure asked for. Revealing always asks the table, so an erasure shows at once in
every process.
"""

from __future__ import annotations

import hashlib
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.engine import Connection, Engine

from events.codec import camel
from events.crypto.cipher import DataKey, MasterKeys, UnreadableToken, new_data_key
from events.model import Event, uuid7
from events.sql.engine import autocommit
from events.sql.tables import subject_keys_table as subject_keys

#: Unwrapped keys remembered for sealing, most recently used last.
SEALING_KEYS_KEPT = 4096


def normalised_email(email: str) -> str:
    """Addresses differing only in case or surrounding space are one candidate."""
    return email.strip().casefold()


def lookup_of(org_id: str, email: str) -> bytes:
    return hashlib.sha256(f"{org_id}\n{normalised_email(email)}".encode()).digest()


class SqlVault:
    def __init__(self, engine: Engine, master_keys: MasterKeys) -> None:
        self.engine = engine
        self.autocommit = autocommit(engine)
        self.master_keys = master_keys
        self._sealing: OrderedDict[uuid.UUID, DataKey] = OrderedDict()
        self._unwrapped: dict[tuple[uuid.UUID, str, bytes], DataKey] = {}

    # --- subjects -------------------------------------------------------------------------

    def subjects(self, org_id: str, emails: Sequence[str]) -> dict[str, uuid.UUID]:
        """One statement: an email's existing row is kept (the upsert rewrites its lookup with
        itself, so that the statement returns it too)."""
        wanted = {email: lookup_of(org_id, email) for email in emails}
        rows = [self._new_row(org_id, lookup) for lookup in dict.fromkeys(wanted.values())]
        from events.sql.dialect import dialect_of  # the dialect module imports the store, which imports this

        insert = dialect_of(self.engine).insert(subject_keys)
        statement = insert.values(rows).on_conflict_do_update(
            index_elements=["org_id", "lookup"], set_={"lookup": insert.excluded.lookup}
        )
        returning = statement.returning(
            subject_keys.c.subject_id,
            subject_keys.c.lookup,
            subject_keys.c.master_key_id,
            subject_keys.c.wrapped_key,
        )
        with self.engine.begin() as conn:
            found = {row.lookup: row for row in conn.execute(returning)}
        for row in found.values():
            self._remember(row.subject_id, self._data_key(row.subject_id, row.master_key_id, row.wrapped_key))
        return {email: found[lookup].subject_id for email, lookup in wanted.items()}

    def subjects_of(self, org_id: str, email: str) -> list[uuid.UUID]:
        query = select(subject_keys.c.subject_id).where(
            subject_keys.c.org_id == org_id, subject_keys.c.lookup == lookup_of(org_id, email)
        )
        with self.autocommit.connect() as conn:
            return list(conn.scalars(query))

    def _new_row(
        self, org_id: str, lookup: bytes | None, subject_id: uuid.UUID | None = None
    ) -> dict[str, Any]:
        subject_id = subject_id or uuid7()
        master_key_id, wrapped = self.master_keys.wrap(subject_id, new_data_key())
        return {
            "subject_id": subject_id,
            "org_id": org_id,
            "lookup": lookup,
            "master_key_id": master_key_id,
            "wrapped_key": wrapped,
        }

    # --- sealing --------------------------------------------------------------------------

    def seal(self, event_id: uuid.UUID, event: Event, data: dict[str, Any]) -> dict[str, Any]:
        subject = getattr(event, "subject_id", None)
        names = [name for name in event.personal if getattr(event, name) is not None]
        if subject is None or not names:
            return data
        key = self._sealing_key(subject, event)
        sealed = dict(data)
        for name in names:
            field = camel(name)
            sealed[field] = None if key is None else key.seal(event_id, field, getattr(event, name))
        return sealed

    def _sealing_key(self, subject_id: uuid.UUID, event: Event) -> DataKey | None:
        """The subject's key; a key's own subject gets one on first use. None: erased."""
        key = self._sealing.get(subject_id)
        if key is not None:
            self._sealing.move_to_end(subject_id)
            return key
        with self.engine.begin() as conn:
            if subject_id == getattr(event, "key_id", None):
                from events.sql.dialect import dialect_of

                row = self._new_row(event.org_id, None, subject_id)  # type: ignore[attr-defined]
                conn.execute(dialect_of(conn).insert(subject_keys).values(row).on_conflict_do_nothing())
            found = _rows(conn, [subject_id]).get(subject_id)
        if found is None:
            return None
        key = self._data_key(subject_id, found.master_key_id, found.wrapped_key)
        self._remember(subject_id, key)
        return key

    def _remember(self, subject_id: uuid.UUID, key: DataKey) -> None:
        self._sealing[subject_id] = key
        self._sealing.move_to_end(subject_id)
        while len(self._sealing) > SEALING_KEYS_KEPT:
            self._sealing.popitem(last=False)

    def _data_key(self, subject_id: uuid.UUID, master_key_id: str, wrapped: bytes) -> DataKey:
        """Unwrapping costs more than the rest of a reveal: remembered by the wrapped bytes,
        which a rotation or an erasure changes."""
        cache_key = (subject_id, master_key_id, bytes(wrapped))
        key = self._unwrapped.get(cache_key)
        if key is None:
            if len(self._unwrapped) >= SEALING_KEYS_KEPT:
                self._unwrapped.clear()
            key = DataKey(self.master_keys.unwrap(subject_id, master_key_id, bytes(wrapped)))
            self._unwrapped[cache_key] = key
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
        return SubjectKeyRing(
            {s: self._data_key(s, row.master_key_id, row.wrapped_key) for s, row in rows.items()}
        )

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
