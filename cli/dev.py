"""`assessments dev`: the whole system in one process, with nothing to install or run first.

SQLite (a file in the working directory) holds the event store, outbox and projections; an
in-process queue stands in for RabbitMQ; the API, relay, worker and notifier are threads.
Without `ASSESSMENTS_SMTP_URL` invitations are written as .eml files to a folder beside the
database, which the start-up line names. Everything
above those two adapters is the production code.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
from pathlib import Path

import click
from sqlalchemy import select
from sqlalchemy.engine import Engine
from werkzeug.serving import make_server

from cli import bootstrap
from events.runtime.settings import Settings
from events.sql import auth_limits, catalogue, invitations, tenancy
from events.sql import webhooks as webhook_tables
from events.sql.catalogue import oss_issues
from events.sql.tables import metadata as store_metadata
from events.tenancy import IssuedToken
from projections.tables import metadata as projection_metadata

log = logging.getLogger(__name__)

SAMPLE_CATALOGUE = Path(__file__).resolve().parent.parent / "data" / "oss-issues.json"
DEMO_ORG = "Demo"


def create_schema(engine: Engine) -> None:
    """SQLite has no migrations here: the tables are created from the models when missing,
    with the same guard as the PostgreSQL migration: events are never updated or deleted."""
    tables = (
        store_metadata,
        projection_metadata,
        tenancy.metadata,
        catalogue.metadata,
        auth_limits.metadata,
        invitations.metadata,
        webhook_tables.metadata,
    )
    for metadata in tables:
        metadata.create_all(engine)
    with engine.begin() as conn:
        for operation in ("UPDATE", "DELETE"):
            conn.exec_driver_sql(
                f"CREATE TRIGGER IF NOT EXISTS events_append_only_{operation.lower()} "
                f"BEFORE {operation} ON events "
                "BEGIN SELECT RAISE(ABORT, 'events are facts: never updated or deleted'); END"
            )


def demo_token(engine: Engine) -> IssuedToken:
    """A fresh token for the demo organisation (created on the first start)."""
    with engine.connect() as conn:
        organisations = tenancy.organisations
        org_id = conn.scalar(select(organisations.c.id).where(organisations.c.name == DEMO_ORG))
    return tenancy.create_token(engine, org_id) if org_id else tenancy.create_organisation(engine, DEMO_ORG)


def load_sample_catalogue(engine: Engine) -> None:
    with engine.connect() as conn:
        empty = conn.scalar(select(oss_issues.c.id).limit(1)) is None
    if empty and SAMPLE_CATALOGUE.exists():
        catalogue.import_catalogue(engine, SAMPLE_CATALOGUE)


def mail_folder(database: Path) -> Path:
    """Without SMTP, invitations are written beside the database: `assessments-dev-mail/`."""
    return database.resolve().parent / f"{database.stem}-mail"


def run_dev(bind: str, database: Path) -> None:
    """The other settings still come from the environment (the disclosure file, the candidate
    limit, the log level); the database and the broker are dev mode's own."""
    settings = Settings.from_env(
        database_url=f"sqlite:///{database.resolve()}",
        broker_url="memory://",
        bind=bind,
        webhooks_allow_private=True,  # local receivers, over http
    )
    parts = bootstrap.dev(settings, str(mail_folder(database)))
    engine, app, relay, worker, notifier = parts.engine, parts.app, parts.relay, parts.worker, parts.notifier
    dispatcher = parts.dispatcher
    create_schema(engine)
    load_sample_catalogue(engine)

    host, _, port = bind.rpartition(":")
    server = make_server(host or "127.0.0.1", int(port), app, threaded=True)
    threads = [
        threading.Thread(target=relay.run, name="relay", daemon=True),
        threading.Thread(target=worker.run, name="worker", daemon=True),
        threading.Thread(target=notifier.run, name="notifier", daemon=True),
        threading.Thread(
            target=dispatcher.run_in_process, args=(parts.dispatcher_queue,), name="webhooks", daemon=True
        ),
    ]
    for thread in threads:
        thread.start()

    def stop(*_) -> None:
        relay.stop()
        worker.stop()
        notifier.stop()
        dispatcher.stop()
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    token = demo_token(engine)
    url = f"http://{host or '127.0.0.1'}:{server.server_port}"
    click.echo(f"assessments dev: {url} (data in {database}; invitations to {parts.mail_to})")
    click.echo(json.dumps({"url": url, "orgId": token.org_id, "token": token.token}))
    server.serve_forever()
    for thread in threads:
        thread.join(10)
    engine.dispose()
    click.echo("stopped")
