"""What the worker does with one batch of received messages, whatever broker brought them.

Decode each, apply the decodable ones in one go; if that fails for a reason other than a lost
database, apply them one by one to find the culprits, which are dead-lettered after a bounded
number of attempts while the rest are applied. Undecodable messages are dead-lettered at once.
Returns normally when every message is either applied or dead-lettered: the caller then acks.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TypeVar

from sqlalchemy.exc import DBAPIError, OperationalError

from events import messages
from events.model import RecordedEvent
from events.rabbitmq import broker
from worker.handler import EventHandler

log = logging.getLogger(__name__)

M = TypeVar("M")


def is_transient(error: BaseException) -> bool:
    """A database error that a reconnect can cure, as opposed to a bug or a bad event."""
    return isinstance(error, OperationalError) or (
        isinstance(error, DBAPIError) and error.connection_invalidated
    )


def recoverable(error: BaseException) -> bool:
    """What every consumer's reconnect loop waits out: a lost broker or a lost database."""
    return broker.is_recoverable(error) or is_transient(error)


def process_batch(
    handler: EventHandler,
    batch: Sequence[M],
    body_of: Callable[[M], bytes],
    dead_letter: Callable[[M, str], None],
    attempts: int = 3,
) -> None:
    decoded: list[tuple[M, RecordedEvent]] = []
    for message in batch:
        try:
            decoded.append((message, messages.decode(body_of(message))))
        except messages.UndecodableMessage as error:
            dead_letter(message, f"undecodable: {error}")
    try:
        handler.handle([event for _, event in decoded])
    except Exception as error:
        if is_transient(error):
            raise
        log.exception("batch failed; retrying its messages one by one")
        _isolate(handler, decoded, dead_letter, attempts)


def _isolate(
    handler: EventHandler,
    decoded: list[tuple[M, RecordedEvent]],
    dead_letter: Callable[[M, str], None],
    attempts: int,
) -> None:
    for message, event in decoded:
        for attempt in range(1, attempts + 1):
            try:
                handler.handle([event])
                break
            except Exception as error:
                if is_transient(error):
                    raise
                if attempt == attempts:
                    dead_letter(message, f"failed {attempt} times: {error!r}")
