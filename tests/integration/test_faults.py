"""Faults: the broker away, a worker killed mid-batch or asked to stop. Nothing committed is
lost, nothing is applied twice."""

from __future__ import annotations

import signal
import subprocess
import threading
from pathlib import Path

import pytest

from events.rabbitmq.broker import ensure_topology
from events.service import AssessmentService
from events.sql.engine import make_engine
from events.sql.store import PostgresEventStore
from tests.integration.helpers import (
    assert_projected_exactly,
    assessment_versions,
    candidates,
    create,
    kill_sessions,
    metadata,
    outbox_count,
    pending_count,
    scalar,
    wait_until_quiet,
    worker_process,
)
from tests.support.proxy import TcpProxy
from tests.support.wait import wait_for


def wait_until_consuming(broker, queue: str, process: subprocess.Popen, log_file: Path) -> None:
    def consuming() -> bool:
        assert process.poll() is None, f"the worker exited: {log_file.read_text()}"
        return broker.consumer_count(queue) >= 1

    wait_for(consuming, 20, "the worker process consuming")


def projected_count(engine) -> int:
    return scalar(engine, "SELECT count(*) FROM events") - pending_count(engine)


@pytest.mark.slow
def test_events_written_while_the_broker_is_unreachable_are_published_and_projected_once(
    system, service, broker, org_id
):
    tap = broker.tap(f"{system.settings.worker_queue}.tap")
    with TcpProxy.for_url(system.settings.broker_url) as proxy:
        through_proxy = proxy.url_for(system.settings.broker_url)
        system.start_relay(broker_url=through_proxy)
        system.start_worker(broker_url=through_proxy)
        assert proxy.live_connections >= 2

        proxy.cut()
        written = [create(service, org_id, f"Written while cut {n}") for n in range(50)]
        wait_for(lambda: proxy.refused >= 2, 10, "the relay and the worker refused on reconnecting")
        assert outbox_count(system.engine) == 50, "nothing can have been published while cut"
        proxy.restore()

        published = broker.take_events(tap, [r.event_id for r in written], timeout=20)
        wait_until_quiet(system.engine, timeout=20)
        system.stop_relay()
        system.stop_worker()

    assert {r.event_id for r in published} == {r.event_id for r in written}
    assert scalar(system.engine, "SELECT count(*) FROM events") == 50
    assert assessment_versions(system.engine) == {r.stream_id: 1 for r in written}
    assert system.handlers[0].totals.applied == 50


def test_a_worker_whose_database_sessions_die_retries_its_batches_and_dead_letters_nothing(
    system, service, broker, org_id
):
    """A lost database is told from a poison batch, whichever way the statement ran (the
    batch's reads and writes go through psycopg pipelines): the batch is retried, not
    dead-lettered."""
    system.start_relay()
    system.start_worker()
    before = [create(service, org_id, f"Before {n}") for n in range(20)]
    wait_until_quiet(system.engine)

    assert kill_sessions(system.engine), "the worker's sessions should have been there to kill"
    # Through a pool of its own: the one the worker shares is the worker's to heal.
    writer = make_engine(system.settings.database_url, pool_size=1)
    try:
        service = AssessmentService(PostgresEventStore(writer))
        after = [create(service, org_id, f"After {n}") for n in range(20)]
        wait_until_quiet(writer, timeout=30)
        assert assessment_versions(writer) == {r.stream_id: 1 for r in before + after}
    finally:
        writer.dispose()
    assert broker.message_count(f"{system.settings.worker_queue}.dead") == 0
    assert system.worker.thread.is_alive()


@pytest.mark.slow
def test_a_worker_killed_mid_batch_leaves_nothing_lost_and_nothing_applied_twice(
    system, service, broker, start_worker, org_id, tmp_path
):
    settings = system.settings
    ensure_topology(settings.broker_url, settings.exchange, settings.worker_queue)
    system.start_relay()
    streams, keys_per_stream = 500, 3
    total = streams * (1 + keys_per_stream)
    errors: list[BaseException] = []

    def write() -> None:
        try:
            ids = [create(service, org_id).stream_id for _ in range(streams)]
            for stream in ids:
                service.issue_keys(org_id, stream, candidates(keys_per_stream), metadata(org_id))
        except BaseException as error:
            errors.append(error)

    writer = threading.Thread(target=write, name="writer")
    log_file = tmp_path / "worker.log"
    try:
        with worker_process(settings, log_file) as first:
            wait_until_consuming(broker, settings.worker_queue, first, log_file)
            writer.start()
            wait_for(lambda: projected_count(system.engine) >= 300, 20, "the first worker projecting")
            first.send_signal(signal.SIGKILL)
            first.wait(10)
            left_over = pending_count(system.engine)
            assert first.returncode == -signal.SIGKILL
            assert left_over > 0, "the worker was killed with work left"

        start_worker()
    finally:
        if writer.is_alive():
            writer.join(60)
    assert not errors
    assert scalar(system.engine, "SELECT count(*) FROM events") == total
    wait_until_quiet(system.engine, timeout=30)
    assert_projected_exactly(system.engine)
    assert set(assessment_versions(system.engine).values()) == {1 + keys_per_stream}


def test_a_worker_process_exits_cleanly_on_sigterm(system, broker, tmp_path):
    settings = system.settings
    ensure_topology(settings.broker_url, settings.exchange, settings.worker_queue)
    log_file = tmp_path / "worker.log"
    with worker_process(settings, log_file) as process:
        wait_until_consuming(broker, settings.worker_queue, process, log_file)

        process.send_signal(signal.SIGTERM)

        assert process.wait(5) == 0, log_file.read_text()
    wait_for(lambda: broker.consumer_count(settings.worker_queue) == 0, 5, "the consumer gone")
