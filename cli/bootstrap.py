"""The composition root: the one place that builds the service's parts from its settings.

The commands (`cli.main`), the API's server (`cli.server`), dev mode (`cli.dev`), the tests'
support code and the benches all build through here, so each part is wired the same way
wherever it runs. Which database's ways a part uses is `events.sql.dialect`'s choice; which
adapters exist is this module's.

A process imports only the parts it runs: the relay's and the worker's modules are imported
when one is built. Their metrics are made as their modules load, and under the API's
multiprocess registry each would open a file of its own in an API process that never uses it.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flask import Flask
from sqlalchemy.engine import Engine
from werkzeug.middleware.proxy_fix import ProxyFix

from api import create_app
from api.http import Services
from events.candidates import CandidateService
from events.disclosure import Disclosure, InvalidDisclosure, disclosure_from
from events.erasure import Erasure
from events.runtime.settings import Settings, master_keys
from events.service import AssessmentService
from events.sql.auth_limits import AuthLimiter
from events.sql.catalogue import SqlCatalogue
from events.sql.dialect import dialect_of
from events.sql.engine import autocommit, make_engine
from events.sql.store import SqlEventStore
from events.sql.vault import SqlVault
from events.sql.webhooks import SqlWebhooks
from events.webhooks import Resolver, WebhookService, system_resolver

if TYPE_CHECKING:
    from events.memory.broker import InProcessRelay
    from events.rabbitmq.relay import Relay
    from worker.consumer import Worker
    from worker.handler import EventHandler
    from worker.inprocess import InProcessWorker
    from worker.notifier.consumer import Notifier
    from worker.notifier.inprocess import InProcessNotifier
    from worker.notifier.invitations import InvitationMailer
    from worker.notifier.sending import Sender
    from worker.retention import Retention
    from worker.webhooks import Dispatcher

log = logging.getLogger(__name__)

# --- engines: one per kind of process, each sized and tuned for what it runs ---------------


def api_engine(settings: Settings) -> Engine:
    """Every statement of the API stands alone (reads, and appends of one statement each):
    autocommit, so none pays for BEGIN and COMMIT round trips."""
    return make_engine(settings.database_url, autocommit=True)


def relay_engine(settings: Settings) -> Engine:
    """The relay only reads the outbox and deletes confirmed rows: autocommit, and commits that
    do not wait for the disk (an undone delete only publishes its event again)."""
    return make_engine(settings.database_url, pool_size=2, autocommit=True, durable_commits=False)


def worker_engine(settings: Settings) -> Engine:
    return make_engine(settings.database_url, pool_size=4)


def notifier_engine(settings: Settings) -> Engine:
    """The notifier's statements each stand alone (the invitations table's are single
    statements; the rest are reads): autocommit."""
    return make_engine(settings.database_url, pool_size=2, autocommit=True)


def admin_engine(settings: Settings) -> Engine:
    """For the operators' commands: a connection or two."""
    return make_engine(settings.database_url, pool_size=2)


# --- the core and its adapters ------------------------------------------------------------


def event_store(engine: Engine, personal: SqlVault | None = None) -> SqlEventStore:
    """`personal`: what seals candidates' personal data, for the processes that write it (the
    API, dev mode); the others append none and erase without it."""
    return dialect_of(engine).event_store(engine, personal)


def personal_data(settings: Settings, engine: Engine) -> SqlVault:
    """Candidates' data keys, wrapped by the settings' master keys (`events.personal`)."""
    if not settings.master_keys:
        log.warning("ASSESSMENTS_MASTER_KEYS is not set: personal data is sealed with the development key")
    return dialect_of(engine).vault(engine, master_keys(settings.master_keys))


def assessment_service(
    engine: Engine, store: SqlEventStore | None = None, **options: Any
) -> AssessmentService:
    """`options` go to the service (a clock, a key generator) for tests and benches. The
    store's sealer, if it has one, is the service's too: keys get their data subjects."""
    store = store or event_store(engine)
    return AssessmentService(store, SqlCatalogue(autocommit(engine)), personal=store.personal, **options)


# --- the processes --------------------------------------------------------------------------


def auth_limiter(settings: Settings, engine: Engine) -> AuthLimiter:
    """Failed candidate authentications per client, counted in the database that every API
    process shares."""
    return AuthLimiter(
        autocommit(engine), settings.candidate_auth_limit, settings.candidate_auth_window_seconds
    )


def candidate_service(settings: Settings, service: AssessmentService) -> CandidateService:
    return CandidateService(service, load_disclosure(settings.disclosure_file))


def load_disclosure(path: str) -> Disclosure:
    """The disclosure file, checked now: a broken one stops the process at start-up."""
    try:
        return disclosure_from(json.loads(Path(path).read_text(encoding="utf-8")))
    except (OSError, ValueError) as error:
        raise InvalidDisclosure(f"ASSESSMENTS_DISCLOSURE_FILE {path}: {error}") from error


def webhook_service(
    settings: Settings,
    engine: Engine,
    store: SqlEventStore | None = None,
    resolve: Resolver | None = None,
    **options: Any,
) -> WebhookService:
    """`resolve` looks names up (tests pass one that knows only loopback); `options` go to the
    service (a clock)."""
    return WebhookService(
        store or event_store(engine),
        SqlWebhooks(engine),
        allow_private=settings.webhooks_allow_private,
        resolve=resolve or system_resolver,
        grace=timedelta(seconds=settings.webhooks_rotation_grace_seconds),
        **options,
    )


def api_services(
    settings: Settings, engine: Engine | None = None, resolve: Resolver | None = None, **options: Any
) -> Services:
    """`options` go to the assessment service (tests pass a clock they can move)."""
    engine = engine or api_engine(settings)
    service = assessment_service(engine, event_store(engine, personal_data(settings, engine)), **options)
    tokens = dialect_of(engine).token_cache(engine)
    candidates = candidate_service(settings, service)
    limiter = auth_limiter(settings, engine)
    webhooks = webhook_service(settings, engine, service.store, resolve, clock=service.clock)
    erase = erasure(settings, engine, service.store, clock=service.clock)
    return Services(
        settings, autocommit(engine), service, candidates, service.catalogue, tokens, limiter, webhooks, erase
    )


def behind_proxies(app: Flask, settings: Settings) -> Flask:
    """With `trusted_proxies` reverse proxies in front of the API, the client is the address
    the outermost of them saw (X-Forwarded-For, counted from the right); without any, the
    socket's peer, since a client can write that header itself. Only the address is taken
    from the proxies."""
    if settings.trusted_proxies > 0:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings.trusted_proxies, x_proto=0)
    return app


def api_app(
    settings: Settings, engine: Engine | None = None, resolve: Resolver | None = None, **options: Any
) -> Flask:
    """The app; nothing connects until the first request needs it."""
    return behind_proxies(create_app(api_services(settings, engine, resolve, **options)), settings)


def relay(
    settings: Settings, engine: Engine | None = None, broker_url: str | None = None, **options: Any
) -> Relay:
    """`options` override the settings' tuning (tests poll faster, for one)."""
    from events.rabbitmq.relay import Relay

    engine = engine or relay_engine(settings)
    tuning = {
        "batch_size": settings.relay_batch_size,
        "linger_seconds": settings.relay_linger_ms / 1000,
        "batch_interval_seconds": settings.relay_batch_interval_ms / 1000,
        "queue_type": settings.queue_type,
    }
    return Relay(
        dialect_of(engine).outbox(engine),
        broker_url or settings.broker_url,
        settings.exchange,
        settings.worker_queue,
        **{**tuning, **options},
    )


def event_handler(engine: Engine, store: SqlEventStore | None = None, **options: Any) -> EventHandler:
    """What the worker does with a batch: the projections, then the cascade; and its periodic
    work. `options` go to its service (tests pass a clock they can move)."""
    from projections import default_projections
    from worker.handler import EventHandler

    store = store or event_store(engine)
    return EventHandler(engine, store, default_projections(), AssessmentService(store, **options))


def worker(
    settings: Settings,
    engine: Engine | None = None,
    broker_url: str | None = None,
    handler: EventHandler | None = None,
    **options: Any,
) -> Worker:
    from worker.consumer import Worker

    if handler is None:
        engine = engine or worker_engine(settings)
        handler = event_handler(engine)
        handler.chores.append(auth_limiter(settings, engine).purge)
        if settings.candidate_retention_days > 0:
            handler.chores.append(retention(settings, engine, handler.store, handler.service.clock))
    tuning = {
        "prefetch": settings.worker_prefetch,
        "linger_seconds": settings.worker_linger_ms / 1000,
        "queue_type": settings.queue_type,
    }
    return Worker(
        handler,
        broker_url or settings.broker_url,
        settings.exchange,
        settings.worker_queue,
        **{**tuning, **options},
    )


def erasure(settings: Settings, engine: Engine, store: SqlEventStore, **options: Any) -> Erasure:
    """Erasing candidates, with the store's own data keys if it seals; `options` go to it (a
    clock)."""
    return Erasure(store, store.personal or personal_data(settings, engine), **options)


def retention(settings: Settings, engine: Engine, store: SqlEventStore, clock: Any) -> Retention:
    """The worker's step that erases candidates past `candidate_retention_days`."""
    from worker.retention import Retention

    return Retention(
        engine, erasure(settings, engine, store, clock=clock), settings.candidate_retention_days, clock
    )


def mail_sender(settings: Settings, mail_dir: str | None = None) -> Sender:
    """SMTP when `ASSESSMENTS_SMTP_URL` is set; otherwise .eml files in `mail_dir` (dev mode
    only: a production notifier without SMTP refuses to start, see `cli.main`)."""
    from worker.notifier.sending import MailDirSender, SmtpSender

    if settings.smtp_url:
        return SmtpSender(settings.smtp_url, settings.mail_from)
    folder = settings.mail_dir or mail_dir
    if folder is None:
        raise ValueError("ASSESSMENTS_SMTP_URL is not set")
    return MailDirSender(folder)


def invitation_mailer(
    settings: Settings,
    engine: Engine,
    store: SqlEventStore | None = None,
    sender: Sender | None = None,
    **options: Any,
) -> InvitationMailer:
    """Claim, decide, send, record: what the notifier does with one key. `options` go to the
    invitations table (a clock)."""
    from datetime import timedelta

    from events.sql.invitations import Invitations
    from worker.notifier.invitations import InvitationMailer

    invitations = Invitations(engine, timedelta(seconds=settings.mail_lease_seconds), **options)
    return InvitationMailer(
        engine,
        store or event_store(engine),
        invitations,
        sender or mail_sender(settings),
        settings.mail_from,
        max_attempts=settings.mail_max_attempts,
        personal=personal_data(settings, engine),
        **options,
    )


def webhooks_engine(settings: Settings) -> Engine:
    """The delivery loop's senders each record their attempt: a connection per sender."""
    return make_engine(settings.database_url, pool_size=min(settings.webhooks_concurrency, 8) + 2)


def dispatcher(
    settings: Settings,
    engine: Engine | None = None,
    broker_url: str | None = None,
    resolve: Resolver | None = None,
    **options: Any,
) -> Dispatcher:
    """`assessments webhooks`. `resolve` looks names up before each attempt (tests pass one
    that knows only loopback); `options` override the dispatcher's (a clock, a prefetch)."""
    from worker.webhooks import Dispatcher, Policy, Sender

    engine = engine or webhooks_engine(settings)
    store = event_store(engine)
    clock = {"clock": options["clock"]} if "clock" in options else {}
    service = webhook_service(settings, engine, store, resolve, **clock)
    sender = Sender(
        timeout=settings.webhooks_timeout_seconds,
        max_response_bytes=settings.webhooks_max_response_bytes,
        allow_private=settings.webhooks_allow_private,
        resolve=resolve or system_resolver,
    )
    policy = options.pop("policy", None) or Policy(
        schedule=tuple(settings.webhooks_retry_schedule),
        disable_after_failures=settings.webhooks_disable_after_failures,
        disable_after=timedelta(seconds=settings.webhooks_disable_after_seconds),
        concurrency=settings.webhooks_concurrency,
        per_endpoint=settings.webhooks_per_endpoint_concurrency,
        poll_seconds=settings.webhooks_poll_seconds,
        lease=timedelta(seconds=settings.webhooks_timeout_seconds * 3 + 30),
    )
    return Dispatcher(
        service,
        SqlWebhooks(engine),
        sender,
        broker_url or settings.broker_url,
        settings.exchange,
        settings.webhooks_queue,
        policy,
        **{"queue_type": settings.queue_type, **options},
    )


def notifier(
    settings: Settings,
    engine: Engine | None = None,
    broker_url: str | None = None,
    mailer: InvitationMailer | None = None,
    **options: Any,
) -> Notifier:
    """`assessments notifier`; `options` go to the consumer (tests sweep faster)."""
    from worker.notifier.consumer import Notifier

    mailer = mailer or invitation_mailer(settings, engine or notifier_engine(settings))
    return Notifier(
        mailer,
        broker_url or settings.broker_url,
        settings.exchange,
        settings.notifier_queue,
        **{"queue_type": settings.queue_type, **options},
    )


@dataclass
class DevParts:
    """`assessments dev`: the whole system over one SQLite engine and an in-process broker."""

    engine: Engine
    app: Flask
    relay: InProcessRelay
    worker: InProcessWorker
    notifier: InProcessNotifier
    #: Where invitations go: the SMTP URL, or the folder of .eml files.
    mail_to: str
    #: The webhooks dispatcher and its queue on the in-process broker (`run_in_process`).
    dispatcher: Dispatcher
    dispatcher_queue: Any


def dev(settings: Settings, mail_dir: str) -> DevParts:
    """`mail_dir`: where invitations are written when there is no `ASSESSMENTS_SMTP_URL` (and
    no `ASSESSMENTS_MAIL_DIR`)."""
    from events.memory.broker import InProcessBroker, InProcessRelay
    from worker.inprocess import InProcessWorker
    from worker.notifier.inprocess import InProcessNotifier

    engine = make_engine(settings.database_url)
    store = event_store(engine, personal_data(settings, engine))
    broker = InProcessBroker()
    relay_ = InProcessRelay(dialect_of(engine).outbox(engine), broker)
    store.on_append.append(relay_.wake)  # no LISTEN/NOTIFY on SQLite: the store wakes it
    limiter = auth_limiter(settings, engine)
    handler = event_handler(engine, store)
    handler.chores.append(limiter.purge)
    if settings.candidate_retention_days > 0:
        handler.chores.append(retention(settings, engine, store, handler.service.clock))
    worker_ = InProcessWorker(handler, broker)
    service = assessment_service(engine, store)
    candidates = candidate_service(settings, service)
    services = Services(
        settings,
        autocommit(engine),
        service,
        candidates,
        service.catalogue,
        auth_limiter=limiter,
        webhooks=webhook_service(settings, engine, store),
        erasure=erasure(settings, engine, store, clock=service.clock),
    )
    dispatcher_ = dispatcher(settings, engine, broker_url="memory://")
    dispatcher_queue = broker.subscribe()
    sender = mail_sender(settings, mail_dir)
    notifier_ = InProcessNotifier(invitation_mailer(settings, engine, store, sender), broker)
    mail_to = (
        _without_password(settings.smtp_url) if settings.smtp_url else str(settings.mail_dir or mail_dir)
    )
    return DevParts(
        engine,
        behind_proxies(create_app(services), settings),
        relay_,
        worker_,
        notifier_,
        mail_to,
        dispatcher_,
        dispatcher_queue,
    )


def _without_password(url: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    return parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@")).geturl()
