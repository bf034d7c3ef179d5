"""`assessments`: the one command line for operators and developers.

Each command parses its options, asks the composition root (`cli.bootstrap`) for the parts it
needs and runs them. A rebuild's progress output is `cli.progress`; `run`'s process supervisor
is `cli.supervisor`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sys
from pathlib import Path

import click
from pika.exceptions import ChannelClosedByBroker
from sqlalchemy.exc import OperationalError

from cli import bootstrap
from cli.progress import Progress
from cli.supervisor import run_service
from events.crypto.cipher import UnknownMasterKey
from events.disclosure import InvalidDisclosure
from events.model import Metadata
from events.rabbitmq.broker import BrokerMisconfigured
from events.rabbitmq.republish import republish, select_events
from events.runtime import logs, metrics
from events.runtime.settings import Settings
from events.sql import catalogue, tenancy
from events.sql.engine import ensure_database, is_embedded
from events.tenancy import IssuedToken
from projections import default_projections
from projections.rebuild import RebuildRunning, rebuild
from projections.seal import seal_clear_events

log = logging.getLogger("assessments")


#: Long-running production processes: they log JSON lines unless ASSESSMENTS_LOG_FORMAT says
#: otherwise; every other command (and `run`, `dev`) logs readable text.
JSON_LOGGING_COMMANDS = {"api", "relay", "worker", "notifier", "webhooks"}


def configure_logging(level: str, command: str | None = None) -> None:
    fmt = os.environ.get("ASSESSMENTS_LOG_FORMAT") or ("json" if command in JSON_LOGGING_COMMANDS else "text")
    try:
        logs.configure(level, fmt.lower())
    except ValueError as error:
        raise click.UsageError(f"ASSESSMENTS_LOG_FORMAT: {error}") from None


class Misconfigured(click.ClickException):
    """A setting to fix: exit status 78 (EX_CONFIG), which a supervisor can be told not to
    restart on (systemd's RestartPreventExitStatus=78)."""

    exit_code = 78


class Cli(click.Group):
    """Turns an unreachable database or a broker that refuses our settings into one readable
    line instead of a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except OperationalError as error:
            raise click.ClickException(f"cannot reach the database: {error.orig}") from None
        except (BrokerMisconfigured, InvalidDisclosure) as error:
            raise Misconfigured(str(error)) from None


@click.group(cls=Cli)
@click.pass_context
def main(ctx: click.Context) -> None:
    """Event-sourced assessments service. Configured by ASSESSMENTS_* environment variables."""
    try:
        settings = Settings.from_env()
    except ValueError as error:
        raise Misconfigured(str(error)) from None
    configure_logging(settings.log_level, ctx.invoked_subcommand)
    ctx.obj = settings


# --- database ---------------------------------------------------------------------------


@main.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True)
@click.pass_obj
def db_upgrade(settings: Settings, revision: str) -> None:
    """Create the database if missing and apply migrations."""
    from cli.migrate import upgrade

    if ensure_database(settings.database_url):
        click.echo("created the database")
    upgrade(settings.database_url, revision)
    click.echo(f"database at {revision}")


# --- organisations and tokens -------------------------------------------------------------


def _print_token(issued: IssuedToken, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps({"orgId": issued.org_id, "token": issued.token}))
    else:
        click.echo(f"org id: {issued.org_id}\ntoken:  {issued.token}\n(the token is shown only once)")


@main.group()
def orgs() -> None:
    """Organisations."""


@orgs.command("create")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help='Print {"orgId": ..., "token": ...}.')
@click.pass_obj
def orgs_create(settings: Settings, name: str, as_json: bool) -> None:
    """Create an organisation and its first reviewer token."""
    _print_token(tenancy.create_organisation(bootstrap.admin_engine(settings), name), as_json)


@main.group()
def tokens() -> None:
    """Reviewer API tokens."""


@tokens.command("create")
@click.argument("org_id")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def tokens_create(settings: Settings, org_id: str, as_json: bool) -> None:
    """Create another token for an organisation."""
    try:
        issued = tenancy.create_token(bootstrap.admin_engine(settings), org_id)
    except LookupError as error:
        raise click.ClickException(str(error)) from None
    _print_token(issued, as_json)


@tokens.command("list")
@click.option("--org", "org_id", help="Only this organisation's tokens.")
@click.option("--prefix", help="Only tokens whose prefix starts with this.")
@click.pass_obj
def tokens_list(settings: Settings, org_id: str | None, prefix: str | None) -> None:
    """List tokens by prefix (the secret part is never stored)."""
    for info in tenancy.list_tokens(bootstrap.admin_engine(settings), org_id, prefix):
        state = f"revoked {info.revoked_at:%Y-%m-%d}" if info.revoked_at else "active"
        click.echo(f"{info.prefix}  {info.org_id}  {info.created_at:%Y-%m-%d %H:%M}  {state}")


@tokens.command("revoke")
@click.argument("prefix")
@click.pass_obj
def tokens_revoke(settings: Settings, prefix: str) -> None:
    """Revoke every active token whose prefix starts with PREFIX."""
    try:
        count = tenancy.revoke_tokens(bootstrap.admin_engine(settings), prefix)
    except ValueError as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"revoked {count} token(s)")
    if count == 0:
        sys.exit(1)


# --- catalogue ----------------------------------------------------------------------------


@main.group("issues")
def issues_group() -> None:
    """The OSS issue catalogue."""


@issues_group.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.pass_obj
def issues_import(settings: Settings, file: Path) -> None:
    """Insert or update the catalogue's issues from a JSON file."""
    try:
        count = catalogue.import_catalogue(bootstrap.admin_engine(settings), file)
    except (ValueError, catalogue.InvalidCatalogue) as error:
        raise click.ClickException(f"{file}: {error}") from None
    click.echo(f"imported {count} issue(s)")


# --- replay -------------------------------------------------------------------------------


@main.group()
def projections() -> None:
    """Read models built from the events."""


@projections.command("rebuild")
@click.argument("name", required=False, type=click.Choice([p.name for p in default_projections()]))
@click.option("--all", "rebuild_all", is_flag=True, help="Rebuild every projection.")
@click.option("--dry-run", is_flag=True, help="Build and compare with the live view; do not swap.")
@click.pass_obj
def projections_rebuild(settings: Settings, name: str | None, rebuild_all: bool, dry_run: bool) -> None:
    """Rebuild projections from the event store alone, while the service keeps running."""
    if bool(name) == rebuild_all:
        raise click.UsageError("name one projection or pass --all")
    chosen = [p for p in default_projections() if rebuild_all or p.name == name]
    engine = bootstrap.admin_engine(settings)
    try:
        report = rebuild(engine, chosen, dry_run=dry_run, on_progress=Progress("rebuild"))
    except RebuildRunning as error:
        raise click.ClickException(str(error)) from None
    click.echo(
        f"{', '.join(report.projections)}: {report.events:,} events, {report.streams:,} streams, "
        f"{report.caught_up} caught up, {report.seconds:.1f}s"
        + (", swapped in" if report.swapped else " (dry run)")
    )
    for table, counts in report.differences.items():
        rebuilt, live = counts["onlyRebuilt"], counts["onlyLive"]
        click.echo(f"  {table}: {rebuilt} rows only in the rebuilt view, {live} only in the live one")
    if report.differences:
        sys.exit(1)


@main.group()
def candidates() -> None:
    """Candidates' personal data: erasure, the master key, sealing old events."""


@candidates.command("erase")
@click.argument("email")
@click.option("--org", "org_id", required=True, help="The organisation whose candidate this is.")
@click.pass_obj
def candidates_erase(settings: Settings, email: str, org_id: str) -> None:
    """Erase a candidate: their email and name become unreadable everywhere, for good."""
    engine = bootstrap.admin_engine(settings)
    erasure = bootstrap.erasure(settings, engine, bootstrap.event_store(engine))
    erased = erasure.erase_email(org_id, email, Metadata(org_id, "cli:candidates erase"))
    click.echo(f"erased {erased} data subject(s)" if erased else "nothing (left) to erase")


@candidates.command("rotate-master-key")
@click.pass_obj
def candidates_rotate_master_key(settings: Settings) -> None:
    """Re-wrap every data key with the current (first) master key; the events are not touched.
    Afterwards the older master keys can be removed from ASSESSMENTS_MASTER_KEYS."""
    vault = bootstrap.personal_data(settings, bootstrap.admin_engine(settings))
    try:
        rewrapped = vault.rotate()
    except UnknownMasterKey as missing:
        raise click.ClickException(
            f"a data key is wrapped with master key {str(missing)!r}, which ASSESSMENTS_MASTER_KEYS "
            "lacks: put it back after the current key and run this again (nothing was lost; "
            "what was re-wrapped stays re-wrapped)"
        ) from None
    click.echo(f"re-wrapped {rewrapped} data key(s) with master key {vault.master_keys.current.key_id!r}")


@candidates.command("seal")
@click.pass_obj
def candidates_seal(settings: Settings) -> None:
    """Seal the emails and names of events stored before sealing existed (run once after
    upgrading); their keys' views are folded again."""
    engine = bootstrap.admin_engine(settings)
    vault = bootstrap.personal_data(settings, engine)
    sealed = seal_clear_events(engine, bootstrap.event_store(engine, vault), vault)
    click.echo(f"sealed {sealed} event(s)")


@main.group("events")
def events_group() -> None:
    """The event store."""


@events_group.command("republish")
@click.option("--from-position", type=click.IntRange(min=1), required=True)
@click.option("--to-position", type=click.IntRange(min=1))
@click.option("--routing-key", "pattern", help="Only events whose routing key matches (topic syntax).")
@click.option("--queue", help="Send to this queue directly instead of the exchange.")
@click.pass_obj
def events_republish(
    settings: Settings, from_position: int, to_position: int | None, pattern: str | None, queue: str | None
) -> None:
    """Publish stored events again (same message ids) for a consumer that starts late."""
    store = bootstrap.event_store(bootstrap.admin_engine(settings))
    chosen = select_events(store.read_all(after_position=from_position - 1), to_position, pattern)
    try:
        sent = republish(
            chosen,
            settings.broker_url,
            settings.exchange,
            queue,
            on_progress=lambda done, position: log.info("republished %d (at position %d)", done, position),
        )
    except ChannelClosedByBroker as error:
        raise click.ClickException(f"the broker refused: {error.reply_text}") from None
    click.echo(f"republished {sent} event(s) to {'queue ' + queue if queue else settings.exchange}")


@main.command()
@click.option("--bind", default="127.0.0.1:8000", show_default=True, help="host:port for the API.")
@click.option(
    "--database",
    default="assessments-dev.sqlite3",
    show_default=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="SQLite file (created when missing).",
)
def dev(bind: str, database: Path) -> None:
    """Everything in one process with no external service: SQLite and an in-process broker."""
    from cli.dev import run_dev

    run_dev(bind, database)


def refuse_embedded(settings: Settings, allow: bool) -> None:
    """A production process on SQLite would be a silent, single-machine toy: refuse."""
    if is_embedded(settings.database_url) and not allow:
        raise click.UsageError(
            "ASSESSMENTS_DATABASE_URL points at SQLite, which is for `assessments dev` only; "
            "pass --allow-embedded if you really mean it"
        )


ALLOW_EMBEDDED = click.option(
    "--allow-embedded", is_flag=True, envvar="ASSESSMENTS_ALLOW_EMBEDDED", help="Run on SQLite anyway."
)


# --- processes ----------------------------------------------------------------------------


@main.command()
@click.option("--bind", help="host:port (default: ASSESSMENTS_BIND or 127.0.0.1:8000).")
@click.option("--workers", type=int, help="gunicorn worker processes (ASSESSMENTS_API_WORKERS).")
@ALLOW_EMBEDDED
@click.pass_obj
def api(settings: Settings, bind: str | None, workers: int | None, allow_embedded: bool) -> None:
    """Serve the HTTP API under gunicorn."""
    refuse_embedded(settings, allow_embedded)
    from cli.server import serve

    serve(settings, bind or settings.bind, workers or settings.api_workers)


def _run_until_signalled(process, metrics_port: int | None) -> None:
    """A long-running process (relay, worker, notifier, dispatcher): stopped cleanly by SIGTERM
    or SIGINT, its metrics served on `metrics_port` meanwhile."""
    _stop_on_signals(process.stop)
    with _metrics_served(metrics_port):
        process.run()


def _stop_on_signals(stop) -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop())


METRICS_PORT = click.option(
    "--metrics-port",
    type=click.IntRange(1, 65535),
    envvar="ASSESSMENTS_METRICS_PORT",
    help="Serve Prometheus metrics at :PORT/metrics (ASSESSMENTS_METRICS_PORT; default: off).",
)


@contextlib.contextmanager
def _metrics_served(port: int | None):
    if port is None:
        yield
        return
    server = metrics.serve(port)
    log.info("metrics at http://0.0.0.0:%d/metrics", port)
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()


@main.command()
@ALLOW_EMBEDDED
@METRICS_PORT
@click.pass_obj
def relay(settings: Settings, allow_embedded: bool, metrics_port: int | None) -> None:
    """Publish the outbox to RabbitMQ (one active relay per database; others stand by)."""
    refuse_embedded(settings, allow_embedded)
    process = bootstrap.relay(settings)
    _run_until_signalled(process, metrics_port)


@main.command()
@ALLOW_EMBEDDED
@METRICS_PORT
@click.pass_obj
def worker(settings: Settings, allow_embedded: bool, metrics_port: int | None) -> None:
    """Consume events: build the projections and cascade deletions."""
    refuse_embedded(settings, allow_embedded)
    process = bootstrap.worker(settings)
    _run_until_signalled(process, metrics_port)


@main.command()
@ALLOW_EMBEDDED
@METRICS_PORT
@click.pass_obj
def notifier(settings: Settings, allow_embedded: bool, metrics_port: int | None) -> None:
    """Mail each candidate issued a key with an email their invitation, once (to
    ASSESSMENTS_SMTP_URL; or, for development, as .eml files into ASSESSMENTS_MAIL_DIR)."""
    refuse_embedded(settings, allow_embedded)
    if not settings.smtp_url and not settings.mail_dir:
        raise Misconfigured("ASSESSMENTS_SMTP_URL is not set: the notifier needs an SMTP server")
    try:
        process = bootstrap.notifier(settings)
    except ValueError as error:
        raise Misconfigured(str(error)) from None
    _run_until_signalled(process, metrics_port)


@main.command()
@ALLOW_EMBEDDED
@METRICS_PORT
@click.pass_obj
def webhooks(settings: Settings, allow_embedded: bool, metrics_port: int | None) -> None:
    """Deliver events to the organisations' webhook endpoints (its own queue,
    ASSESSMENTS_WEBHOOKS_QUEUE): signed, retried on a schedule, in order per assessment."""
    refuse_embedded(settings, allow_embedded)
    process = bootstrap.dispatcher(settings)
    _run_until_signalled(process, metrics_port)


@main.command()
@click.option("--bind", help="host:port for the API.")
@METRICS_PORT
def run(bind: str | None, metrics_port: int | None) -> None:
    """api + relay + worker + notifier + webhooks in the foreground, for a developer. Ctrl-C
    stops them all. Readable logs unless ASSESSMENTS_LOG_FORMAT says otherwise; with
    --metrics-port P the relay serves its metrics on P, the worker on P+1, the notifier on P+2
    and the webhooks dispatcher on P+3."""
    sys.exit(run_service(bind, metrics_port))
