"""On a three-node RabbitMQ cluster with quorum queues, the node that leads the worker's queue
dies under a load of appends: nothing is lost, the relay and the worker reconnect to another
node (the broker URL lists all three), and every event is published and projected once. And a
relay that first publishes while the queue's record still names the dead leader, which RabbitMQ
nacks on that channel for good, gets through on a new channel. And the peer discovery config of
docker-compose.yml's `cluster` profile makes three blank nodes booted at once one cluster.

Each test has a cluster of its own (`tests.support.rabbitmq_cluster`): three extra nodes on
ports and folders of their own, never the machine's node. The two take about 50 s on two cores
(starting and joining three nodes is most of each). Skipped, saying so, when rabbitmq-server is
not installed.

The machine's own node is checked after each: it must still answer an AMQP handshake. Once, on
an earlier machine, it stopped answering in a full run started after another run had been
killed in the middle of this file, leaving that run's cluster nodes alive. The link was never
proven (the runs since, alone and in full, left it serving), but clusters of runs that are gone
are now stopped before a new one starts, and this check would name this file at once.
"""

from __future__ import annotations

import logging
import threading

import pytest

from cli import bootstrap
from events.rabbitmq.broker import ensure_topology
from tests.integration.helpers import (
    PROJECT,
    assert_projected_exactly,
    candidates,
    create,
    metadata,
    new_org_id,
    outbox_count,
    pending_count,
    scalar,
    wait_until_quiet,
)
from tests.support.rabbitmq import assert_answers
from tests.support.rabbitmq_cluster import LocalCluster, scripts_dir
from tests.support.system import System
from tests.support.wait import wait_for

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(scripts_dir() is None, reason="rabbitmq-server is not installed"),
]


@pytest.fixture
def cluster(broker_url: str):
    with LocalCluster.started(3) as started:
        yield started
    assert_answers(broker_url)  # the machine's node: never touched, still serving


def retries(caplog, name: str) -> int:
    return sum(1 for r in caplog.records if r.getMessage().startswith(f"{name} lost a connection"))


def test_the_node_leading_the_worker_queue_dies_under_load_and_nothing_is_lost(
    cluster: LocalCluster, make_settings, caplog
):
    caplog.set_level(logging.WARNING)
    settings = make_settings(broker_url=cluster.url)
    system = System(settings)
    writer: threading.Thread | None = None
    stop_writing = threading.Event()
    written: list[int] = []
    errors: list[BaseException] = []
    try:
        service = bootstrap.assessment_service(system.engine, system.store)
        org_id = new_org_id()
        system.start_relay()
        system.start_worker()

        # The relay and the worker connect to the first node of the list, which is where the
        # queue was declared and so where its leader is (RabbitMQ's client-local locator).
        leader = cluster.queue_leader(settings.worker_queue)
        assert leader == cluster.nodes[0].name
        members, online = cluster.queue_replicas(settings.worker_queue)
        assert members == online == {node.name for node in cluster.nodes}, (members, online)

        def write() -> None:
            try:
                while not stop_writing.is_set():
                    stream_id = create(service, org_id, f"Under load {len(written)}").stream_id
                    service.issue_keys(org_id, stream_id, candidates(2), metadata(org_id))
                    written.append(3)
            except BaseException as error:
                errors.append(error)

        writer = threading.Thread(target=write, name="writer", daemon=True)
        writer.start()
        wait_for(lambda: sum(written) >= 300 and outbox_count(system.engine) < sum(written), 60, "load")
        before = sum(written)

        cluster.kill(cluster.node(leader))

        wait_for(lambda: sum(written) >= before + 600, 90, "appends going on after the node died")
        wait_for(
            lambda: retries(caplog, "relay") >= 1 and retries(caplog, "worker") >= 1,
            30,
            "the relay and the worker reconnecting",
        )
        stop_writing.set()
        writer.join(30)
        assert not errors, errors

        # Everything appended before, during and after the failover reaches the projections
        # through the two surviving nodes.
        wait_until_quiet(system.engine, timeout=90)
        survivors = cluster.running()
        assert len(survivors) == 2
        new_leader = cluster.queue_leader(settings.worker_queue, via=survivors[0])
        assert new_leader != leader and new_leader in {node.name for node in survivors}
        assert sum(cluster.connections(node) for node in survivors) >= 2, "relay and worker connected"
        for part in (system.relay, system.worker):
            assert part.thread.is_alive(), f"{part.thread.name} ended: {part.error!r}"

        total = sum(written)
        assert scalar(system.engine, "SELECT count(*) FROM events") == total
        assert outbox_count(system.engine) == 0  # every event confirmed by the cluster
        assert pending_count(system.engine) == 0  # and applied
        assert_projected_exactly(system.engine)  # each stream once, at its last version
        assert system.relay.process.published >= total  # duplicates possible, losses not
    finally:
        stop_writing.set()
        if writer is not None:
            writer.join(30)
        system.stop()


def test_a_relay_whose_first_publish_meets_the_dead_leader_gets_through_on_a_new_channel(
    cluster: LocalCluster, make_settings
):
    """The relay connects to a survivor right after the node leading the queue died, while
    the queue's record still names that node: RabbitMQ nacks every publish of that first
    channel for as long as it lives (see `events.rabbitmq.relay.PublishesNacked`). The relay
    gives such a channel up and is through on a later one within seconds."""
    settings = make_settings(broker_url=cluster.url)
    first, *survivors = cluster.nodes
    ensure_topology(first.url, settings.exchange, settings.worker_queue, settings.queue_type)
    assert cluster.queue_leader(settings.worker_queue) == first.name
    members, online = cluster.queue_replicas(settings.worker_queue)
    assert members == online == {node.name for node in cluster.nodes}, (members, online)
    system = System(settings)
    try:
        service = bootstrap.assessment_service(system.engine, system.store)
        org_id = new_org_id()
        for n in range(50):
            create(service, org_id, f"Waiting in the outbox {n}")
        assert outbox_count(system.engine) == 50

        cluster.kill(first)
        survivors_url = ",".join(node.url for node in survivors)
        system.start_relay(broker_url=survivors_url)
        system.start_worker(broker_url=survivors_url)

        wait_until_quiet(system.engine, timeout=60)  # published through the survivors, and applied
        assert_projected_exactly(system.engine)
        assert cluster.queue_leader(settings.worker_queue) in {node.name for node in survivors}
        for part in (system.relay, system.worker):
            assert part.thread.is_alive(), f"{part.thread.name} ended: {part.error!r}"
    finally:
        system.stop()


def test_three_blank_nodes_booted_at_once_with_the_compose_discovery_config_form_one_cluster(
    broker_url: str,
):
    """docker-compose.yml's `cluster` profile starts its three nodes together, each with
    docker/rabbitmq-cluster.conf (`classic_config`). Nodes that each formed a cluster of their
    own would list only themselves; since RabbitMQ 3.9 the listed nodes take a lock to form it,
    where earlier versions relied on random start-up delays. No Docker here: the same config,
    its host names made ours, on three local nodes."""
    discovery = (PROJECT / "docker" / "rabbitmq-cluster.conf").read_text()
    assert "peer_discovery_backend = classic_config" in discovery

    with LocalCluster.started(3, discovery=discovery) as cluster:
        names = {node.name for node in cluster.nodes}
        for node in cluster.nodes:
            assert cluster.members(node) == names, f"{node.name} is in another cluster"
    assert_answers(broker_url)
