"""Candidate key strings are unique service-wide: a collision is drawn again, never stored twice."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterable, Iterator

from events.keys import generate_key
from events.service import KEY_SCOPE, AssessmentService
from tests.integration.helpers import candidates, create, metadata, scalar


class ScriptedKeys:
    """A key generator that says the given keys first, then fresh random ones; counts calls."""

    def __init__(self, first: Iterable[str]) -> None:
        self._keys: Iterator[str] = itertools.chain(first, iter(generate_key, None))
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        return next(self._keys)


def reservations_of(engine, key: str) -> int:
    return scalar(
        engine, "SELECT count(*) FROM reservations WHERE scope = :s AND key = :k", s=KEY_SCOPE, k=key
    )


def issued_keys(service: AssessmentService, stream_id) -> list[str]:
    """The strings of the stream's keys in issue order, from their reservations."""
    key_ids = list(service.load(stream_id).keys)
    found = service.key_strings(key_ids)
    return [found[key_id] for key_id in key_ids]


def strings_of(service: AssessmentService, issued) -> list[str]:
    """The strings of just-issued keys, from their reservations: their events hold none."""
    found = service.key_strings([r.event.key_id for r in issued])
    return [found[r.event.key_id] for r in issued]


def test_a_key_that_is_already_taken_is_drawn_again(system, service, org_id):
    taken_by = create(service, org_id).stream_id
    (taken,) = service.issue_keys(org_id, taken_by, candidates(1), metadata(org_id))
    (used,) = strings_of(service, [taken])
    generator = ScriptedKeys([used, used])
    colliding = AssessmentService(system.store, generate_key=generator)
    stream = create(colliding, org_id).stream_id

    issued = colliding.issue_keys(org_id, stream, candidates(3), metadata(org_id))

    keys = strings_of(colliding, issued)
    assert len(set(keys)) == 3
    assert used not in keys
    assert generator.calls > len(keys)
    assert reservations_of(system.engine, used) == 1
    assert system.store.reservation(KEY_SCOPE, used).stream_id == taken_by
    assert all(system.store.reservation(KEY_SCOPE, key).stream_id == stream for key in keys)


def test_a_key_drawn_twice_in_one_batch_is_drawn_again(system, service, org_id):
    duplicate = generate_key()
    generator = ScriptedKeys([duplicate, duplicate])
    drawing = AssessmentService(system.store, generate_key=generator)
    stream = create(drawing, org_id).stream_id

    issued = drawing.issue_keys(org_id, stream, candidates(2), metadata(org_id))

    keys = strings_of(drawing, issued)
    assert len(set(keys)) == 2
    assert generator.calls == 4
    assert reservations_of(system.engine, duplicate) == 0
    assert issued_keys(drawing, stream) == keys


def test_two_assessments_drawing_the_same_key_at_once_get_it_only_once(system, service, org_id):
    contested = generate_key()
    streams = [create(service, org_id).stream_id for _ in range(2)]
    generators = [ScriptedKeys([contested]) for _ in streams]
    barrier = threading.Barrier(2)
    issued: dict = {}

    def issue(stream, generator) -> None:
        drawing = AssessmentService(system.store, generate_key=generator)
        barrier.wait()
        issued[stream] = strings_of(
            drawing, drawing.issue_keys(org_id, stream, candidates(1), metadata(org_id))
        )

    threads = [threading.Thread(target=issue, args=pair) for pair in zip(streams, generators, strict=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)

    assert sorted(len(keys) for keys in issued.values()) == [1, 1]
    winners = [stream for stream, keys in issued.items() if keys == [contested]]
    assert len(winners) == 1
    assert reservations_of(system.engine, contested) == 1
    assert system.store.reservation(KEY_SCOPE, contested).stream_id == winners[0]
    assert sorted(g.calls for g in generators) == [1, 2]
