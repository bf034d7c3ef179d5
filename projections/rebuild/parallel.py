"""A build's stream ranges run side by side, each in a child process (`python -m
projections.rebuild`, whose `__main__` is `child_main`): a fresh interpreter, so no forked locks
or connections, whatever the parent is running.

A child reads its pickled `build.Job` and stream range on stdin and reports on stdout, one line
at a time: `progress <events done>`, then `done <events> <streams>`. Its output ending before
`done` means it failed.
"""

from __future__ import annotations

import pickle
import queue
import subprocess
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from projections.rebuild.build import Job, OnProgress

#: Where `python -m projections.rebuild` finds the packages: the project's root.
ROOT = Path(__file__).resolve().parents[2]


def run_in_processes(
    job: Job, ranges: list[tuple[Any, Any]], total: int, on_progress: OnProgress
) -> tuple[int, int]:
    """Run each range in a child, reading its progress; (events, streams) of them all."""
    updates: queue.Queue = queue.Queue()
    children = []
    for index, stream_range in enumerate(ranges):
        child = subprocess.Popen(
            [sys.executable, "-m", "projections.rebuild"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=ROOT,
        )
        child.stdin.write(pickle.dumps((job, stream_range)))
        child.stdin.close()
        threading.Thread(target=_relay_lines, args=(index, child.stdout, updates), daemon=True).start()
        children.append(child)
    done_by: dict[int, int] = {}
    results: dict[int, tuple[int, int]] = {}
    try:
        while len(results) < len(children):
            index, kind, value = updates.get()
            if kind == "progress":
                done_by[index] = value
                on_progress(sum(done_by.values()), total)
            elif kind == "done":
                results[index] = value
            elif index not in results:  # the child's output ended before it reported
                raise RuntimeError(f"rebuild worker {index} failed (exit {children[index].wait()})")
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
            child.wait()
            child.stdout.close()
    return sum(r[0] for r in results.values()), sum(r[1] for r in results.values())


def _relay_lines(index: int, stream, updates: queue.Queue) -> None:
    for line in stream:
        kind, *numbers = line.decode().split()
        value = tuple(map(int, numbers))
        updates.put((index, kind, value if kind == "done" else value[0]))
    updates.put((index, "exit", None))


def child_main() -> None:
    job, stream_range = pickle.loads(sys.stdin.buffer.read())
    events, streams = job.run(stream_range, lambda done: print("progress", done, flush=True))
    print("done", events, streams, flush=True)
