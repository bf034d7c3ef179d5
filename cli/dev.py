"""`assessments dev`: the whole system in one process, with nothing to install or run first.

SQLite (a file in the working directory) holds the event store, outbox and projections; an
in-process queue stands in for RabbitMQ; the API, relay and worker are threads. Everything
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

from api import auth, create_app
from api.http import Services
from events.db import make_engine
from events.db import metadata as store_metadata
from events.inprocess import InProcessBroker, InProcessRelay
from events.outbox import SqlOutbox
from events.service import AssessmentService
from events.settings import Settings
from events.store import SqlEventStore
from projections import catalogue, default_projections
from projections.tables import metadata as projection_metadata
from projections.tables import oss_issues
from worker.handler import EventHandler
from worker.inprocess import InProcessWorker

log = logging.getLogger(__name__)

SAMPLE_CATALOGUE = Path(__file__).resolve().parent.parent / "data" / "oss-issues.json"
DEMO_ORG = "Demo"


def create_schema(engine: Engine) -> None:
    """SQLite has no migrations here: the tables are created from the models when missing,
    with the same guard as the PostgreSQL migration: events are never updated or deleted."""
    for metadata in (store_metadata, projection_metadata, auth.metadata):
        metadata.create_all(engine)
    with engine.begin() as conn:
        for operation in ("UPDATE", "DELETE"):
            conn.exec_driver_sql(
                f"CREATE TRIGGER IF NOT EXISTS events_append_only_{operation.lower()} "
                f"BEFORE {operation} ON events "
                "BEGIN SELECT RAISE(ABORT, 'events are facts: never updated or deleted'); END"
            )


def demo_token(engine: Engine) -> auth.IssuedToken:
    """A fresh token for the demo organisation (created on the first start)."""
    with engine.connect() as conn:
        org_id = conn.scalar(select(auth.organisations.c.id).where(auth.organisations.c.name == DEMO_ORG))
    return auth.create_token(engine, org_id) if org_id else auth.create_organisation(engine, DEMO_ORG)


def load_sample_catalogue(engine: Engine) -> None:
    with engine.connect() as conn:
        empty = conn.scalar(select(oss_issues.c.id).limit(1)) is None
    if empty and SAMPLE_CATALOGUE.exists():
        catalogue.import_catalogue(engine, SAMPLE_CATALOGUE)


def run_dev(bind: str, database: Path) -> None:
    settings = Settings(database_url=f"sqlite:///{database.resolve()}", broker_url="memory://", bind=bind)
    engine = make_engine(settings.database_url)
    create_schema(engine)
    load_sample_catalogue(engine)

    store = SqlEventStore(engine)
    broker = InProcessBroker()
    relay = InProcessRelay(SqlOutbox(engine), broker)
    store.on_append.append(relay.wake)
    worker = InProcessWorker(EventHandler(engine, store, default_projections()), broker)
    reader = engine.execution_options(isolation_level="AUTOCOMMIT")
    app = create_app(settings, Services(settings, reader, store, AssessmentService(store)))

    host, _, port = bind.rpartition(":")
    server = make_server(host or "127.0.0.1", int(port), app, threaded=True)
    threads = [
        threading.Thread(target=relay.run, name="relay", daemon=True),
        threading.Thread(target=worker.run, name="worker", daemon=True),
    ]
    for thread in threads:
        thread.start()

    def stop(*_) -> None:
        relay.stop()
        worker.stop()
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    token = demo_token(engine)
    url = f"http://{host or '127.0.0.1'}:{server.server_port}"
    click.echo(f"assessments dev: {url} (data in {database})")
    click.echo(json.dumps({"url": url, "orgId": token.org_id, "token": token.token}))
    server.serve_forever()
    for thread in threads:
        thread.join(10)
    engine.dispose()
    click.echo("stopped")
