"""Benchmark of loading an assessment: folding its stream into state; prints, asserts nothing.

    .venv/bin/python bench/fold.py [--rounds 5]

Every command on an assessment (issue keys, revoke, delete, a candidate's redeem) first folds
the assessment's whole stream, while it holds the stream's turn. The baseline is the fold as it
was before: each event through `aggregate.evolve`, which copies the keys mapping per key event.
Both run in this process on the same events, interleaved, and the figure is the median round.
No database: this is the fold's own CPU.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from events import aggregate  # noqa: E402
from tests.unit.builders import created, issued, revoked  # noqa: E402

KEY_COUNTS = (50, 500, 1_000, 3_000)


def per_event_fold(stream_id, events) -> aggregate.Assessment:
    """The baseline: every event through `evolve`, one state after another."""
    state = aggregate.Assessment(id=stream_id)
    for event in events:
        state = replace(aggregate.evolve(event, state), version=state.version + 1)
    return state


def timed(fold, stream_id, events) -> float:
    started = time.perf_counter()
    fold(stream_id, events)
    return time.perf_counter() - started


def stream_with_keys(count: int) -> list:
    """An assessment with `count` keys, every tenth of them revoked."""
    first = created()
    events: list = [first]
    for index in range(count):
        key = issued(first)
        events += [key, revoked(key)] if index % 10 == 0 else [key]
    return events


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    for count in KEY_COUNTS:
        events = stream_with_keys(count)
        stream_id = events[0].assessment_id
        assert aggregate.rebuild(stream_id, events) == per_event_fold(stream_id, events)
        fold, baseline = [], []
        for _ in range(args.rounds):
            fold.append(timed(aggregate.rebuild, stream_id, events))
            baseline.append(timed(per_event_fold, stream_id, events))
        ours, theirs = statistics.median(fold), statistics.median(baseline)
        print(
            f"{count:>6,} keys ({len(events):,} events): fold {ours * 1000:8.2f} ms, "
            f"per-event fold {theirs * 1000:8.2f} ms, {theirs / ours:5.1f}x faster",
            flush=True,
        )


if __name__ == "__main__":
    main()
