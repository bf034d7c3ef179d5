"""The relay's batches, apart from pika and the database: which published events await the
broker's confirm, which are confirmed but still in the outbox, and when to read the outbox next.

The relay reads a batch, publishes it whole and reads again only once every message of it is
confirmed or nacked, removing the confirmed rows in the same statement. After a full batch
there is a backlog, so it reads on at once; otherwise at most once per batch interval, so that
under a steady load each read, burst of publishes and burst of confirms serves several events
instead of one. Woken from idle, it first lingers a moment to let a few more appends commit.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from events.model import StoredEvent


class Batching:
    def __init__(
        self,
        batch_size: int,
        batch_interval_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        timer: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.batch_size = batch_size
        self.batch_interval_seconds = batch_interval_seconds
        self._clock = clock  # when the outbox was read
        self._timer = timer  # how long a message waited for its confirm
        #: Delivery tag -> (event, sent at); the broker numbers a channel's messages from 1.
        self.unconfirmed: dict[int, tuple[StoredEvent, float]] = {}
        self._confirmed: list[StoredEvent] = []  # still in the outbox
        self.lingering = False
        #: A batch is being sent, a part at a time (see `events.rabbitmq.relay.SEND_PART`).
        self.sending = False
        self._batch_length = 0
        self._read_at = 0.0
        self._next_tag = 0

    def reset(self) -> None:
        """For a new channel: what the last one had in flight is published again."""
        self.unconfirmed.clear()
        self._confirmed.clear()
        self.lingering = False
        self.sending = False
        self._next_tag = 0

    @property
    def waiting(self) -> bool:
        """A batch being sent or in flight, or a linger: each ends by asking for the next read."""
        return bool(self.unconfirmed) or self.lingering or self.sending

    def start_read(self) -> list[StoredEvent]:
        """At a read of the outbox: the confirmed events it should remove (handed over once)."""
        confirmed, self._confirmed = self._confirmed, []
        self._read_at = self._clock()
        return confirmed

    def start_batch(self, length: int) -> None:
        self._batch_length = length
        self.sending = True

    def end_sending(self) -> None:
        """Every message of the batch is published: once all are confirmed, it is settled."""
        self.sending = False

    def sent(self, stored: StoredEvent) -> None:
        """After each publish, in the order of the channel's delivery tags."""
        self._next_tag += 1
        self.unconfirmed[self._next_tag] = (stored, self._timer())

    def confirm(self, delivery_tag: int, multiple: bool, ack: bool) -> list[tuple[StoredEvent, float]]:
        """Settle what one confirm frame covers; each event it settles with its seconds in
        flight. Acked events are removed from the outbox at the next read; nacked ones stay
        there for a retry."""
        tags = [tag for tag in self.unconfirmed if tag <= delivery_tag] if multiple else [delivery_tag]
        now = self._timer()
        settled = []
        for tag in tags:
            in_flight = self.unconfirmed.pop(tag, None)
            if in_flight is None:
                continue
            stored, sent_at = in_flight
            settled.append((stored, now - sent_at))
            if ack:
                self._confirmed.append(stored)
        return settled

    @property
    def batch_settled(self) -> bool:
        """Every message of the batch published and confirmed (or nacked). The first parts of
        a batch may be confirmed before its last part is sent: that is not the end of it."""
        return not self.unconfirmed and not self.sending

    def wait_before_next_read(self) -> float:
        """Seconds until the next read, once a batch is settled: none after a full batch (there
        is a backlog), else the rest of the batch interval since the last read."""
        if self._batch_length >= self.batch_size:
            return 0.0
        return self._read_at + self.batch_interval_seconds - self._clock()

    def start_linger(self) -> bool:
        """Whether a linger starts now (false while one is going on)."""
        if self.lingering:
            return False
        self.lingering = True
        return True

    def end_linger(self) -> None:
        self.lingering = False
