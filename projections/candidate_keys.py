"""The candidate-keys projection: every key of every assessment, with its lifecycle times.

It holds no key strings: events carry none, and a reader that needs one (the reviewer's key
listing) joins the key's reservation (`projections.queries.list_keys`)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from functools import singledispatch
from types import MappingProxyType
from typing import Any

from sqlalchemy import MetaData, Table

from events.candidate import KEY_EVENTS, CandidateKey, evolve_key, issued_key
from events.model import CandidateKeyIssued, Event, RecordedEvent
from projections.projector import Tracked, Versions
from projections.tables import (
    CANDIDATE_KEYS_VERSIONS,
    CANDIDATE_KEYS_VIEW,
    candidate_keys_versions,
    candidate_keys_view,
)

#: A key's row is the aggregate's record of it: one builder for both.
KeyRow = CandidateKey
Keys = Mapping[uuid.UUID, KeyRow]


# One case per event type, registered by name (see `events.aggregate.evolve` for why).


def _unchanged(event: Event, keys: Keys) -> Keys:
    return keys


def _issued(event: CandidateKeyIssued, keys: Keys) -> Keys:
    return MappingProxyType({**keys, event.key_id: issued_key(event)})


def _changed(event: Event, keys: Keys) -> Keys:
    """Any later event of an issued key: the key's own rule (`events.candidate.evolve_key`)."""
    return MappingProxyType({**keys, event.key_id: evolve_key(event, keys[event.key_id])})


#: The keys after one event: `evolve_keys(event, keys)`.
evolve_keys = singledispatch(_unchanged)
evolve_keys.register(CandidateKeyIssued, _issued)
for _type in KEY_EVENTS:
    evolve_keys.register(_type, _changed)


def fold_keys(events: Iterable[Event]) -> list[KeyRow]:
    """The keys that a sequence of events describes, in issue order."""
    keys: Keys = MappingProxyType({})
    for event in events:
        keys = evolve_keys(event, keys)
    return list(keys.values())


class CandidateKeysProjection:
    name = "candidate_keys"

    def __init__(self, table: Table = CANDIDATE_KEYS_VIEW, versions: Table = CANDIDATE_KEYS_VERSIONS) -> None:
        self.table = table
        self.version_table = versions
        self.tables = (table, versions)
        self.versions = Versions(versions, versions.c.stream_id, versions.c.version)
        self.sources = ((versions, versions.c.stream_id), (table, table.c.assessment_id))

    def renamed(self, suffix: str) -> CandidateKeysProjection:
        """The same projection over fresh tables named `<table><suffix>` (for a rebuild)."""
        meta = MetaData()
        return CandidateKeysProjection(
            candidate_keys_view(CANDIDATE_KEYS_VIEW.name + suffix, meta),
            candidate_keys_versions(CANDIDATE_KEYS_VERSIONS.name + suffix, meta),
        )

    def initial(self, stream_id: uuid.UUID) -> Keys:
        return MappingProxyType({})

    def evolve(self, value: Keys, recorded: RecordedEvent) -> Keys:
        return evolve_keys(recorded.event, value)

    def states(self, rows: Sequence[Sequence[Mapping[str, Any]]]) -> dict[uuid.UUID, Tracked]:
        versions, keys = rows
        grouped: dict[uuid.UUID, dict[uuid.UUID, KeyRow]] = {}
        for row in keys:
            grouped.setdefault(row["assessment_id"], {})[row["id"]] = KeyRow(**row)
        return {
            row["stream_id"]: Tracked(
                row["stream_id"], row["version"], MappingProxyType(grouped.get(row["stream_id"], {}))
            )
            for row in versions
        }

    def rows(self, states: Sequence[Tracked]) -> dict[Table, list[dict]]:
        return {
            self.version_table: [{"stream_id": s.stream_id, "version": s.version} for s in states],
            self.table: [dict(vars(row)) for s in states for row in s.value.values()],
        }
