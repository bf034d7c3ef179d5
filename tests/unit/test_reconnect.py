"""The loop the relay and the worker keep: retry what can heal, stop on what cannot."""

from __future__ import annotations

import threading

import pytest

from events.runtime.reconnect import Backoff, keep_running


def test_backoff_doubles_up_to_its_cap():
    backoff = Backoff(first=0.2, cap=1.0)
    assert [backoff.after(0.0) for _ in range(5)] == [0.2, 0.4, 0.8, 1.0, 1.0]


def test_backoff_starts_over_after_a_session_that_outlived_the_cap():
    backoff = Backoff(first=0.2, cap=1.0)
    for _ in range(4):
        backoff.after(0.0)
    assert backoff.after(1.5) == 0.2
    assert backoff.after(0.0) == 0.4


def test_a_recoverable_failure_starts_the_session_again_after_the_backoff():
    stop = threading.Event()
    waits: list[float] = []
    sessions = iter([ConnectionResetError("reset"), OSError("refused"), None])

    def session() -> None:
        outcome = next(sessions)
        if outcome is None:
            stop.set()
            return
        raise outcome

    keep_running(session, stop, lambda error: isinstance(error, OSError), "test", waits.append)
    assert waits == [0.2, 0.4]


def test_any_other_failure_ends_the_loop():
    stop = threading.Event()
    with pytest.raises(KeyError):
        keep_running(lambda: {}["missing"], stop, lambda error: isinstance(error, OSError), "test")
