"""The relay and the worker outlive every broker failure that can heal, and end, with one
line naming the setting, on one that cannot."""

from __future__ import annotations

from dataclasses import replace

import pika
import pytest

from events.rabbitmq.broker import (
    connection_parameters,
    declare_consumer_queue,
    declare_topology,
    ensure_topology,
    is_recoverable,
    misconfiguration,
)
from tests.integration.helpers import create, run_cli, wait_until_quiet
from tests.support.proxy import Refusal, TcpProxy
from tests.support.rabbitmq import close_all_connections, own_vhost, rabbitmqctl, url_with_vhost
from tests.support.wait import wait_for

EX_CONFIG = 78


@pytest.fixture
def vhost_url(system):
    with own_vhost(system.settings.broker_url) as (vhost, url):
        yield vhost, url


def assert_running(system) -> None:
    for part in (system.relay, system.worker):
        assert part.thread.is_alive(), f"{part.thread.name} ended: {part.error!r}"


def test_the_relay_and_the_worker_reconnect_when_the_broker_closes_their_connections(
    system, service, org_id, vhost_url
):
    """What a broker restart, a node failover or `rabbitmqctl close_all_connections` does:
    connection.close 320 CONNECTION_FORCED to every client."""
    vhost, url = vhost_url
    system.start_relay(broker_url=url)
    system.start_worker(broker_url=url)
    create(service, org_id, "Before")
    wait_until_quiet(system.engine)

    for round_ in range(2):
        close_all_connections(vhost, "a node is going down")
        create(service, org_id, f"After the close {round_}")
        wait_until_quiet(system.engine, timeout=20)
        assert_running(system)


def retries(caplog, name: str) -> int:
    return sum(1 for r in caplog.records if r.getMessage().startswith(f"{name} lost a connection"))


@pytest.mark.parametrize("how", [Refusal.RESET, Refusal.REFUSE, Refusal.CLOSE])
def test_the_relay_and_the_worker_wait_out_a_broker_that_turns_connections_away(
    system, service, org_id, how, caplog
):
    """RESET: a TCP load balancer with no live node behind it accepts and resets at once."""
    with TcpProxy.for_url(system.settings.broker_url) as proxy:
        through_proxy = proxy.url_for(system.settings.broker_url)
        system.start_relay(broker_url=through_proxy)
        system.start_worker(broker_url=through_proxy)

        proxy.cut(how)
        written = [create(service, org_id, f"While away {n}") for n in range(5)]
        wait_for(
            lambda: retries(caplog, "relay") >= 3 and retries(caplog, "worker") >= 3,
            15,
            "the relay and the worker trying again, and again",
        )
        assert_running(system)
        proxy.restore()

        wait_until_quiet(system.engine, timeout=40)
        assert_running(system)
    assert len(written) == 5


def test_a_worker_with_a_wrong_password_exits_with_one_line_naming_the_setting(system):
    settings = system.settings
    wrong = settings.broker_url.replace("guest:guest@", "guest:not-the-password@")
    assert wrong != settings.broker_url
    for command in ("worker", "relay"):
        done = run_cli(type(settings)(**{**vars(settings), "broker_url": wrong}), command)
        assert done.returncode == EX_CONFIG, done.stderr
        last = done.stderr.strip().splitlines()[-1]
        assert last.startswith("Error: ASSESSMENTS_BROKER_URL: RabbitMQ refused the login of user 'guest'")
        assert "not-the-password" not in done.stderr
        assert "Traceback" not in done.stderr


def test_a_worker_on_a_missing_vhost_exits_with_one_line_naming_the_setting(system):
    settings = system.settings
    missing = url_with_vhost(settings.broker_url, "no-such-vhost-here")
    done = run_cli(type(settings)(**{**vars(settings), "broker_url": missing}), "worker")
    assert done.returncode == EX_CONFIG, done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        "Error: ASSESSMENTS_BROKER_URL: virtual host 'no-such-vhost-here' does not exist "
        "or user 'guest' may not use it"
    )


# --- which failures are worth a retry (pure) ------------------------------------------------


def test_a_connect_reset_before_the_handshake_is_worth_a_retry():
    """pika's own words when the peer resets between connect and handshake."""
    error = ValueError(
        "Expected connected socket, but getpeername() failed: error=OSError(107, "
        "'Transport endpoint is not connected'); <socket.socket fd=7>; "
    )
    assert is_recoverable(error)
    assert not is_recoverable(ValueError("a bug of ours"))


def test_a_handshake_cut_short_by_the_network_is_not_mistaken_for_wrong_credentials():
    from pika.exceptions import ProbableAccessDeniedError, ProbableAuthenticationError

    lost = ProbableAuthenticationError("StreamLostError: ('Transport indicated EOF',)")
    assert is_recoverable(lost) and misconfiguration(lost) is None
    refused = ProbableAuthenticationError("ConnectionClosedByBroker: (403) 'ACCESS_REFUSED - Login refused'")
    assert not is_recoverable(refused)
    vhost_down = ProbableAccessDeniedError("ConnectionClosedByBroker: (541) 'INTERNAL_ERROR - vhost down'")
    assert is_recoverable(vhost_down)
    no_vhost = ProbableAccessDeniedError("ConnectionClosedByBroker: (530) 'NOT_ALLOWED - vhost x not found'")
    assert not is_recoverable(no_vhost)


# --- quorum queues, and the classic queues of an older deployment ---------------------------


def queue_types(vhost: str, names: list[str]) -> dict[str, str]:
    listed = rabbitmqctl("list_queues", "-q", "--no-table-headers", "-p", vhost, "name", "type")
    types = dict(line.split("\t")[:2] for line in listed.splitlines() if "\t" in line)
    return {name: types.get(name, "missing") for name in names}


def test_every_queue_the_service_declares_is_a_quorum_queue_by_default(system, vhost_url):
    vhost, url = vhost_url
    settings = system.settings
    connection = pika.BlockingConnection(connection_parameters(url))
    try:
        channel = connection.channel()
        declare_topology(channel, settings.exchange, settings.worker_queue)
        declare_consumer_queue(channel, settings.exchange, settings.notifier_queue, ["#"], "X")
        declare_topology(channel, settings.exchange, settings.webhooks_queue)
    finally:
        connection.close()
    queues = [
        settings.worker_queue,
        settings.dead_letter_queue,
        settings.notifier_queue,
        settings.notifier_dead_letter_queue,
        settings.webhooks_queue,
        settings.webhooks_dead_letter_queue,
    ]
    assert queue_types(vhost, queues) == {name: "quorum" for name in queues}


def test_a_classic_queue_of_an_older_deployment_stops_the_worker_with_one_line_naming_the_settings(
    system, vhost_url
):
    """RabbitMQ refuses to redeclare a queue with other arguments (406 PRECONDITION_FAILED):
    the worker exits 78 with what to do instead of retrying for ever."""
    vhost, url = vhost_url
    settings = replace(system.settings, broker_url=url)
    ensure_topology(url, settings.exchange, settings.worker_queue, "classic")  # as before the upgrade

    done = run_cli(settings, "worker")

    assert done.returncode == EX_CONFIG, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(
        f"Error: ASSESSMENTS_WORKER_QUEUE: queue '{settings.dead_letter_queue}' exists as a classic queue "
        "but ASSESSMENTS_QUEUE_TYPE is 'quorum': delete the queue (or drain it and let the service "
        "recreate it) or set ASSESSMENTS_QUEUE_TYPE=classic"
    ), last
    assert "Traceback" not in done.stderr
    # With the setting, the classic queues are redeclared as they are.
    ensure_topology(url, settings.exchange, settings.worker_queue, "classic")
    types = queue_types(vhost, [settings.worker_queue, settings.dead_letter_queue])
    assert set(types.values()) == {"classic"}


def test_a_queue_type_the_broker_does_not_know_is_refused_before_connecting(system):
    done = run_cli(replace(system.settings, queue_type="lazy"), "worker")
    assert done.returncode == EX_CONFIG, done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        "Error: ASSESSMENTS_QUEUE_TYPE: 'lazy' is not a queue type (quorum or classic)"
    )
