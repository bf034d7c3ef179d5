"""The notifier over the in-process broker of `assessments dev`: the same `InvitationMailer`
(claim, decide, send, record) as with RabbitMQ, minus the network."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from events import messages
from events.memory.broker import InProcessBroker, Message
from events.model import CandidateKeyIssued
from worker.notifier.invitations import InvitationMailer

log = logging.getLogger(__name__)

QUEUE = "notifier"


class InProcessNotifier:
    def __init__(self, mailer: InvitationMailer, broker: InProcessBroker, sweep_seconds: float = 1.0) -> None:
        self.mailer = mailer
        self.broker = broker
        self.sweep_seconds = sweep_seconds
        broker.bind(QUEUE, [CandidateKeyIssued.routing_key])
        self._stop = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    def run(self, on_ready: Callable[[], None] | None = None) -> None:
        if on_ready:
            on_ready()
        last_sweep = time.monotonic()
        while not self._stop.is_set():
            for message in self.broker.take(1, timeout=0.2, name=QUEUE):
                self._handle(message)
            if time.monotonic() - last_sweep > self.sweep_seconds:
                last_sweep = time.monotonic()
                try:
                    self.mailer.sweep(lambda issued, reason: self._dead_letter(issued, reason))
                except Exception:
                    log.exception("in-process notifier's sweep failed; it runs again")
        self.mailer.sender.close()

    def _handle(self, message: Message) -> None:
        try:
            recorded = messages.decode(message.body)
            self.mailer.on_event(recorded, lambda _issued, reason: self.broker.dead_letter(message, reason))
        except messages.UndecodableMessage as error:
            self.broker.dead_letter(message, f"undecodable: {error}")
        except Exception:
            log.exception("in-process notifier failed; the sweep takes the invitation up after its lease")

    def _dead_letter(self, issued, reason: str) -> None:
        self.broker.dead_letter(Message(issued.event.routing_key, messages.encode(issued)), reason)
