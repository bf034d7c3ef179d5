"""The real processes of the service, run as threads of the test process: the API on a real
HTTP port, the relay and the worker on the real PostgreSQL and RabbitMQ. Each can be stopped
and started again, which is how fault tests take parts of the system away."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import requests
from werkzeug.serving import make_server

from cli import bootstrap
from events.model import utcnow
from events.rabbitmq.relay import Relay
from events.runtime.settings import Settings
from events.sql.engine import make_engine
from events.webhooks import Resolver
from tests.support.receiver import loopback_only
from worker.consumer import Worker
from worker.handler import EventHandler
from worker.webhooks import Dispatcher


class Running:
    """A `run()`/`stop()` object on a thread, started only once it says it is ready."""

    def __init__(self, process, name: str) -> None:
        self.process = process
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()
        if not self.ready.wait(20):
            raise RuntimeError(f"{name} did not become ready: {self.error!r}")

    def _run(self) -> None:
        try:
            self.process.run(on_ready=self.ready.set)
        except BaseException as error:  # surfaced by the test that started it
            self.error = error
            self.ready.set()

    def stop(self) -> None:
        self.process.stop()
        self.thread.join(20)
        assert not self.thread.is_alive(), f"{self.thread.name} did not stop"


class MovableClock:
    """The service's clock in tests: real time plus an offset a test moves (`advance`), so keys
    and sessions can run out of time without anyone sleeping for minutes."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return utcnow() + self.offset

    def advance(self, **amount: float) -> None:
        self.offset += timedelta(**amount)

    def reset(self) -> None:
        self.offset = timedelta(0)


@dataclass
class System:
    settings: Settings
    clock: MovableClock = field(default_factory=MovableClock)
    relay: Running | None = None
    worker: Running | None = None
    api: ApiServer | None = None
    webhooks: Running | None = None
    handlers: list[EventHandler] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.engine = make_engine(self.settings.database_url, pool_size=5)
        #: Seals personal data like the API's store (`events.personal`).
        self.store = bootstrap.event_store(self.engine, bootstrap.personal_data(self.settings, self.engine))

    def start_relay(self, broker_url: str | None = None, **options) -> Relay:
        relay = bootstrap.relay(self.settings, self.engine, broker_url, **{"poll_seconds": 0.2, **options})
        self.relay = Running(relay, "relay")
        return relay

    def start_worker(self, broker_url: str | None = None, **options) -> Worker:
        handler = bootstrap.event_handler(self.engine, self.store, clock=self.clock)
        self.handlers.append(handler)
        worker = bootstrap.worker(self.settings, broker_url=broker_url, handler=handler, **options)
        self.worker = Running(worker, "worker")
        return worker

    def start_webhooks(
        self, broker_url: str | None = None, resolve: Resolver = loopback_only, **options
    ) -> Dispatcher:
        """The webhooks dispatcher, resolving loopback only (see `tests.support.receiver`)
        unless a test gives a resolver that refuses more."""
        dispatcher = bootstrap.dispatcher(
            self.settings, broker_url=broker_url, resolve=resolve, **{"clock": self.clock, **options}
        )
        self.webhooks = Running(dispatcher, "webhooks")
        return dispatcher

    def stop_webhooks(self) -> None:
        if self.webhooks:
            self.webhooks.stop()
            self.webhooks = None

    def start_api(self) -> str:
        self.api = ApiServer(self.settings, self.clock)
        return self.api.url

    def stop_relay(self) -> None:
        if self.relay:
            self.relay.stop()
            self.relay = None

    def stop_worker(self) -> None:
        if self.worker:
            self.worker.stop()
            self.worker = None

    def stop(self) -> None:
        self.stop_relay()
        self.stop_worker()
        self.stop_webhooks()
        if self.api:
            self.api.stop()
            self.api = None
        self.engine.dispose()


class ApiServer:
    def __init__(
        self, settings: Settings, clock: MovableClock | None = None, resolve: Resolver = loopback_only
    ) -> None:
        """`resolve` looks up webhook URLs' names: loopback only unless a test stubs more."""
        self.app = bootstrap.api_app(settings, resolve=resolve, **({"clock": clock} if clock else {}))
        self.server = make_server("127.0.0.1", 0, self.app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, name="api", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.thread.join(10)
        self.app.extensions["assessments"].close()


class Client(requests.Session):
    """A reviewer's HTTP client: the API's base URL and a bearer token."""

    def __init__(self, base_url: str, token: str | None = None) -> None:
        super().__init__()
        self.base_url = base_url
        if token:
            self.headers["Authorization"] = f"Bearer {token}"

    def request(self, method, url, *args, **kwargs):
        kwargs.setdefault("timeout", 10)
        return super().request(method, self.base_url + url, *args, **kwargs)
