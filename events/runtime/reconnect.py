"""The loop every long-running process keeps: run a session until it fails, wait, start over.

Why shared: the relay and the worker must both outlive outages of RabbitMQ and PostgreSQL, and
both must tell an outage (wait and retry) from a misconfiguration or a bug (stop and say so).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

FIRST_DELAY = 0.2
MAX_DELAY = 30.0


class Backoff:
    """Capped exponential delays: 0.2 s, 0.4 s, ... 30 s. A session that lasted longer than
    the cap proves the outage over, so the next failure starts from the first delay again."""

    def __init__(self, first: float = FIRST_DELAY, cap: float = MAX_DELAY) -> None:
        self.first = first
        self.cap = cap
        self._next = first

    def after(self, session_seconds: float) -> float:
        if session_seconds > self.cap:
            self._next = self.first
        delay, self._next = self._next, min(self._next * 2, self.cap)
        return delay


def keep_running(
    session: Callable[[], None],
    stop: threading.Event,
    recoverable: Callable[[BaseException], bool],
    name: str,
    wait: Callable[[float], None] | None = None,
) -> None:
    """Run `session` until `stop` is set. A failure `recoverable` accepts is logged and the
    session starts again after a backoff (spent in `wait`, by default an interruptible
    sleep); any other failure propagates, ending the process's loop."""
    backoff = Backoff()
    wait = wait or stop.wait
    while not stop.is_set():
        started = time.monotonic()
        try:
            session()
            delay = backoff.after(time.monotonic() - started)
        except Exception as error:
            if not recoverable(error):
                raise
            delay = backoff.after(time.monotonic() - started)
            log.warning("%s lost a connection: %r; again in %.1fs", name, error, delay)
        if not stop.is_set():
            wait(delay)
    log.info("%s stopped", name)
