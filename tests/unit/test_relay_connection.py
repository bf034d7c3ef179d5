"""The relay's connection sends a batch's frames in one write (no broker needed)."""

from __future__ import annotations

from collections.abc import Iterator

import pika
import pytest

from events.rabbitmq.connection import CoalescingConnection


class RecordingTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(data)


@pytest.fixture
def unconnected() -> Iterator[tuple[CoalescingConnection, RecordingTransport]]:
    connection = CoalescingConnection(pika.ConnectionParameters(), internal_connection_workflow=False)
    transport = RecordingTransport()
    connection._transport = transport  # what pika's connection workflow would attach
    yield connection, transport
    connection.ioloop.close()  # its wake-up socket pair


def test_frames_emitted_within_coalesced_leave_in_one_write(unconnected):
    connection, transport = unconnected
    with connection.coalesced():
        connection._output_marshaled_frames([b"method", b"header", b"body"])
        connection._output_marshaled_frames([b"method2", b"header2", b"body2"])
        assert transport.writes == []
    assert transport.writes == [b"methodheaderbodymethod2header2body2"]


def test_frames_outside_coalesced_leave_at_once(unconnected):
    connection, transport = unconnected
    connection._output_marshaled_frames([b"method", b"header"])
    assert transport.writes == [b"method", b"header"]


def test_nothing_is_written_for_an_empty_batch(unconnected):
    connection, transport = unconnected
    with connection.coalesced():
        pass
    assert transport.writes == []
