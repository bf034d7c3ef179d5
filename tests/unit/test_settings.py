"""Settings come from ASSESSMENTS_* variables, with defaults for whatever is not set."""

from __future__ import annotations

import pytest

from events.runtime.settings import (
    DEFAULT_BROKER_URL,
    DEFAULT_DATABASE_URL,
    Settings,
    broker_urls,
    database_url,
)

ENV = {
    "ASSESSMENTS_DATABASE_URL": "postgresql+psycopg://root@db.internal:5432/assess",
    "ASSESSMENTS_BROKER_URL": "amqp://user:pw@mq.internal:5672/assess",
    "ASSESSMENTS_BIND": "0.0.0.0:9000",
    "ASSESSMENTS_API_WORKERS": "8",
    "ASSESSMENTS_EXCHANGE": "acme.events",
    "ASSESSMENTS_WORKER_QUEUE": "acme.worker",
    "ASSESSMENTS_READ_WAIT_SECONDS": "2.5",
    "ASSESSMENTS_WORKER_PREFETCH": "100",
    "ASSESSMENTS_RELAY_BATCH_SIZE": "50",
    "ASSESSMENTS_RELAY_LINGER_MS": "0.5",
    "ASSESSMENTS_RELAY_BATCH_INTERVAL_MS": "25",
    "ASSESSMENTS_WORKER_LINGER_MS": "20",
    "ASSESSMENTS_LOG_LEVEL": "DEBUG",
    "ASSESSMENTS_CANDIDATE_AUTH_LIMIT": "5",
    "ASSESSMENTS_CANDIDATE_AUTH_WINDOW_SECONDS": "300",
    "ASSESSMENTS_TRUSTED_PROXIES": "1",
}


def test_every_assessments_variable_is_read_with_its_type():
    assert Settings.from_env(ENV) == Settings(
        database_url="postgresql+psycopg://root@db.internal:5432/assess",
        broker_url="amqp://user:pw@mq.internal:5672/assess",
        bind="0.0.0.0:9000",
        api_workers=8,
        exchange="acme.events",
        worker_queue="acme.worker",
        read_wait_seconds=2.5,
        worker_prefetch=100,
        relay_batch_size=50,
        relay_linger_ms=0.5,
        relay_batch_interval_ms=25.0,
        worker_linger_ms=20.0,
        log_level="DEBUG",
        candidate_auth_limit=5,
        candidate_auth_window_seconds=300,
        trusted_proxies=1,
    )


def test_an_empty_environment_gives_the_defaults():
    settings = Settings.from_env({})
    assert settings == Settings()
    assert settings.database_url == DEFAULT_DATABASE_URL
    assert settings.broker_url == DEFAULT_BROKER_URL
    assert settings.exchange == "assessments.events"
    assert settings.worker_queue == "assessments.worker"
    assert settings.read_wait_seconds == 1.0
    assert (settings.candidate_auth_limit, settings.candidate_auth_window_seconds) == (20, 60)
    assert settings.trusted_proxies == 0


def test_unset_variables_keep_their_defaults():
    settings = Settings.from_env({"ASSESSMENTS_EXCHANGE": "acme.events"})
    assert settings.exchange == "acme.events"
    assert settings.worker_queue == Settings().worker_queue
    assert settings.api_workers == Settings().api_workers


def test_other_variables_are_ignored():
    assert Settings.from_env({"DATABASE_URL": "postgresql://elsewhere/x", "EXCHANGE": "x"}) == Settings()


def test_a_given_mapping_is_read_instead_of_the_process_environment(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("ASSESSMENTS_EXCHANGE", "from.process")
    assert Settings.from_env({}).exchange == Settings().exchange
    assert Settings.from_env().exchange == "from.process"


def test_overrides_win_over_the_environment():
    settings = Settings.from_env(ENV, worker_queue="override.worker", read_wait_seconds=0.1)
    assert settings.worker_queue == "override.worker"
    assert settings.read_wait_seconds == 0.1
    assert settings.exchange == "acme.events"


def test_a_malformed_number_is_refused():
    with pytest.raises(ValueError):
        Settings.from_env({"ASSESSMENTS_API_WORKERS": "many"})


@pytest.mark.parametrize("queue", ["assessments.worker", "test-1234.assessments.worker"])
def test_the_dead_letter_queue_is_the_worker_queue_dot_dead(queue: str):
    assert Settings(worker_queue=queue).dead_letter_queue == f"{queue}.dead"
    assert Settings.from_env({"ASSESSMENTS_WORKER_QUEUE": queue}).dead_letter_queue == f"{queue}.dead"


def test_api_processes_open_no_gunicorn_control_socket_they_would_share_on_a_host():
    """gunicorn 25.1+ puts it at one path per user; a second API process would take it over."""
    from cli.server import ApiServer, gunicorn_options

    server = ApiServer(Settings(), gunicorn_options("127.0.0.1:0", 1, {}))  # configured, not started
    assert server.cfg.control_socket_disable is True


def test_webhooks_settings_default_to_production_rules_and_read_from_the_environment():
    assert Settings().webhooks_allow_private is False
    assert Settings().webhooks_queue == "assessments.webhooks"
    assert Settings().webhooks_dead_letter_queue == "assessments.webhooks.dead"
    settings = Settings.from_env(
        {
            "ASSESSMENTS_WEBHOOKS_ALLOW_PRIVATE": "true",
            "ASSESSMENTS_WEBHOOKS_QUEUE": "acme.webhooks",
            "ASSESSMENTS_WEBHOOKS_RETRY_SCHEDULE": "1, 2.5,60",
            "ASSESSMENTS_WEBHOOKS_DISABLE_AFTER_FAILURES": "5",
            "ASSESSMENTS_WEBHOOKS_TIMEOUT_SECONDS": "3",
        }
    )
    assert settings.webhooks_allow_private is True
    assert settings.webhooks_queue == "acme.webhooks"
    assert settings.webhooks_retry_schedule == (1.0, 2.5, 60.0)
    assert settings.webhooks_disable_after_failures == 5
    assert settings.webhooks_timeout_seconds == 3.0


@pytest.mark.parametrize(("value", "allowed"), [("1", True), ("yes", True), ("false", False), ("0", False)])
def test_allowing_private_webhook_addresses_takes_the_usual_booleans(value: str, allowed: bool):
    assert Settings.from_env({"ASSESSMENTS_WEBHOOKS_ALLOW_PRIVATE": value}).webhooks_allow_private is allowed


def test_a_misspelt_boolean_is_refused_rather_than_read_as_off():
    with pytest.raises(ValueError, match="boolean"):
        Settings.from_env({"ASSESSMENTS_WEBHOOKS_ALLOW_PRIVATE": "ture"})


def test_queues_are_quorum_queues_unless_the_setting_says_classic():
    assert Settings.from_env({}).queue_type == "quorum"
    assert Settings.from_env({"ASSESSMENTS_QUEUE_TYPE": "classic"}).queue_type == "classic"
    assert Settings.from_env({"ASSESSMENTS_QUEUE_TYPE": " Quorum "}).queue_type == "quorum"
    with pytest.raises(ValueError, match="ASSESSMENTS_QUEUE_TYPE"):
        Settings.from_env({"ASSESSMENTS_QUEUE_TYPE": "stream"})


def test_one_broker_url_is_one_node():
    assert broker_urls(DEFAULT_BROKER_URL) == [DEFAULT_BROKER_URL]


def test_the_broker_url_lists_a_clusters_nodes_in_the_order_to_try_them():
    assert broker_urls("amqp://u:p@rabbit1:5672/%2F,amqp://u:p@rabbit2:5673/%2F, amqps://v:q@rabbit3/vh") == [
        "amqp://u:p@rabbit1:5672/%2F",
        "amqp://u:p@rabbit2:5673/%2F",
        "amqps://v:q@rabbit3/vh",
    ]


def test_a_bare_host_takes_scheme_credentials_vhost_and_options_from_the_first_url():
    assert broker_urls("amqp://u:p%2Cw@rabbit1/assess?heartbeat=10,rabbit2,rabbit3:5673") == [
        "amqp://u:p%2Cw@rabbit1/assess?heartbeat=10",
        "amqp://u:p%2Cw@rabbit2/assess?heartbeat=10",
        "amqp://u:p%2Cw@rabbit3:5673/assess?heartbeat=10",
    ]
    assert broker_urls("amqp://rabbit1,rabbit2") == ["amqp://rabbit1", "amqp://rabbit2"]


@pytest.mark.parametrize(
    "url", ["", " , ", "rabbit1,rabbit2", "amqp://rabbit1,rabbit2/vhost", "amqp://rabbit1,u@rabbit2"]
)
def test_a_broker_url_list_that_cannot_be_read_is_refused_when_the_settings_are_read(url: str):
    with pytest.raises(ValueError, match="ASSESSMENTS_BROKER_URL"):
        broker_urls(url)
    if "," in url:
        with pytest.raises(ValueError, match="ASSESSMENTS_BROKER_URL"):
            Settings.from_env({"ASSESSMENTS_BROKER_URL": url})


def test_connection_parameters_give_one_set_per_node_with_the_same_timeouts():
    from events.rabbitmq.broker import connection_parameters

    nodes = connection_parameters("amqp://u:p@rabbit1:5672/assess,rabbit2,rabbit3:5673")
    assert [(n.host, n.port, n.virtual_host, n.credentials.username) for n in nodes] == [
        ("rabbit1", 5672, "assess", "u"),
        ("rabbit2", 5672, "assess", "u"),
        ("rabbit3", 5673, "assess", "u"),
    ]
    assert {(n.heartbeat, n.connection_attempts, n.socket_timeout) for n in nodes} == {(30, 1, 5)}


PAIR = "postgresql+psycopg://postgres@/assess?host=db1:5432&host=db2:5433&target_session_attrs=read-write"


def test_one_database_host_and_sqlalchemys_multi_host_forms_pass_unchanged():
    for url in (
        DEFAULT_DATABASE_URL,
        PAIR,
        "postgresql+psycopg://postgres@/assess?host=db1,db2&port=5432,5433",
        "postgresql+psycopg://postgres@/assess?host=db1:5432",
        "postgresql+psycopg://postgres@/assess?host=/var/run/postgresql",
    ):
        assert database_url(url) == url
        assert Settings.from_env({"ASSESSMENTS_DATABASE_URL": url}).database_url == url


def test_a_libpq_style_host_list_is_rewritten_into_sqlalchemys_form():
    libpq_style = (
        "postgresql+psycopg://postgres@/assess?host=db1:5432,db2:5433&target_session_attrs=read-write"
    )
    assert database_url(libpq_style) == PAIR
    assert Settings.from_env({"ASSESSMENTS_DATABASE_URL": libpq_style}).database_url == PAIR


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg://postgres@/assess?host=db1:5432,db2:5433&port=5432",
        "postgresql+psycopg://postgres@/assess?host=db1:5432,,db2:5433",
        "postgresql+psycopg://postgres@db1:5432,db2:5433/assess",
    ],
)
def test_a_host_list_that_cannot_be_read_is_refused_when_the_settings_are_read(url: str):
    with pytest.raises(ValueError, match="ASSESSMENTS_DATABASE_URL"):
        Settings.from_env({"ASSESSMENTS_DATABASE_URL": url})


@pytest.mark.parametrize(
    "url",
    [
        PAIR,
        "postgresql+psycopg://postgres@/assess?host=db1,db2&port=5432,5433&target_session_attrs=read-write",
    ],
)
def test_every_connection_of_a_multi_host_url_lists_every_host_with_the_same_timeouts(url: str):
    """The pooled connections and the plain psycopg ones (LISTEN, COPY) alike."""
    from psycopg.conninfo import conninfo_to_dict

    from events.sql.engine import CONNECTION_TIMEOUTS, libpq_url, make_engine, with_timeouts

    engine = make_engine(url)
    _, pooled = engine.dialect.create_connect_args(with_timeouts(engine.url))
    plain = conninfo_to_dict(libpq_url(engine))
    for params in (pooled, plain):
        assert (params["host"], params["port"]) == ("db1,db2", "5432,5433")
        assert params["target_session_attrs"] == "read-write"
        assert {key: params[key] for key in CONNECTION_TIMEOUTS} == CONNECTION_TIMEOUTS


def test_queue_arguments_by_type():
    from events.rabbitmq.broker import BrokerMisconfigured, queue_arguments

    assert queue_arguments("quorum") == {"x-queue-type": "quorum"}
    assert queue_arguments("classic") == {}  # as declared before quorum was the default: no clash
    with pytest.raises(BrokerMisconfigured, match="ASSESSMENTS_QUEUE_TYPE"):
        queue_arguments("lazy")
