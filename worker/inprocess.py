"""The worker's loop over the in-process broker of `assessments dev`: the same batch handling
as with RabbitMQ (`worker.batches`), minus the network."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from events.memory.broker import InProcessBroker
from worker.batches import process_batch
from worker.handler import EventHandler

log = logging.getLogger(__name__)


class InProcessWorker:
    def __init__(
        self,
        handler: EventHandler,
        broker: InProcessBroker,
        batch_size: int = 500,
        sweep_seconds: float = 5.0,
    ) -> None:
        self.handler = handler
        self.broker = broker
        self.batch_size = batch_size
        self.sweep_seconds = sweep_seconds
        self._stop = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    def run(self, on_ready: Callable[[], None] | None = None) -> None:
        if on_ready:
            on_ready()
        last_sweep = time.monotonic()
        while not self._stop.is_set():
            batch = self.broker.take(self.batch_size, timeout=0.2)
            try:
                if batch:
                    process_batch(self.handler, batch, lambda m: m.body, self.broker.dead_letter)
                if time.monotonic() - last_sweep > self.sweep_seconds:
                    last_sweep = time.monotonic()
                    self.handler.housekeeping()
            except Exception:
                log.exception("in-process worker failed; the sweep will retry what it missed")
