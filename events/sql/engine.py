"""Database engines (PostgreSQL; SQLite for `assessments dev`): connection timeouts, the pool's
dead-connection check, and the bare driver connection of the hot paths."""

from __future__ import annotations

import contextlib
import select
import weakref
from collections.abc import Iterator
from typing import Any

import psycopg
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError

#: What every connection to PostgreSQL (pooled or dedicated) is told, so that a database that
#: stops answering, whether down or cut off by a partition, costs a bounded wait instead of
#: the kernel's 15 minutes: a connect gives up after 2 s; a statement whose packets go
#: unacknowledged, or an idle session whose keepalive probes go unanswered, after 3 s. The
#: URL's own query string overrides any of them (e.g. `?tcp_user_timeout=10000`).
CONNECTION_TIMEOUTS = {
    "connect_timeout": "2",
    "tcp_user_timeout": "3000",
    "keepalives": "1",
    "keepalives_idle": "2",
    "keepalives_interval": "1",
    "keepalives_count": "2",
}
#: How long a checkout waits for a pooled connection while all of them are in use.
POOL_TIMEOUT_SECONDS = 3

#: PostgreSQL engines whose connections are in autocommit mode from the start.
_AUTOCOMMIT_ENGINES: weakref.WeakSet[Engine] = weakref.WeakSet()


def make_engine(
    database_url: str, pool_size: int = 10, autocommit: bool = False, durable_commits: bool = True
) -> Engine:
    """`autocommit=True` (PostgreSQL only) for a process that runs nothing but single
    statements, like the API: none of them pays for BEGIN and COMMIT round trips, or for
    switching a pooled connection to autocommit and back (see `autocommit`).

    `durable_commits=False` (PostgreSQL only): a commit returns before its WAL is on disk, so
    it never waits behind other sessions' flushes; a crash may undo the last commits. Only for
    writes whose loss is harmless: the relay's deletes of published outbox rows (an undone
    delete publishes its event once more, and consumers skip duplicates)."""
    if database_url.startswith("sqlite"):
        return _sqlite_engine(database_url)
    engine = _postgres_engine(database_url, pool_size, autocommit, durable_commits)
    if autocommit:
        _AUTOCOMMIT_ENGINES.add(engine)
    return engine


def autocommit(engine: Engine) -> Engine:
    """The engine to run single statements on, each committed on its own. An engine made
    with `make_engine(..., autocommit=True)` is returned as it is; any other gets SQLAlchemy's
    per-checkout switch, which costs about 50 µs of CPU each time (measured), so hot paths
    should be given an autocommit engine."""
    if engine in _AUTOCOMMIT_ENGINES:
        return engine
    return engine.execution_options(isolation_level="AUTOCOMMIT")


@contextlib.contextmanager
def driver_connection(engine: Engine) -> Iterator[Any]:
    """One of the engine's pooled connections as the bare psycopg connection, in autocommit
    mode, for the few static statements every request runs (token lookup, append).

    Why: SQLAlchemy's work around a statement (a `Connection`, an execution context, result
    metadata) costs about 80 µs of CPU here, as much as the statement itself; a plain psycopg
    `execute` of prepared SQL costs about 40 µs. What SQLAlchemy would still do is kept:
    errors come out as its exceptions (as `driver_errors` makes them), and a lost connection
    throws the whole pool away, so one failed request, not one per pooled connection, finds out
    that the database restarted."""
    try:
        fairy = engine.raw_connection()
    except engine.dialect.loaded_dbapi.Error as error:  # the pool could not connect
        raise _as_sqlalchemy_error(engine, None, error) from error
    conn = fairy.driver_connection
    switched = not conn.autocommit
    try:
        if switched:
            conn.autocommit = True
        yield conn
    except engine.dialect.loaded_dbapi.Error as error:
        wrapped = _as_sqlalchemy_error(engine, conn, error)
        if wrapped.connection_invalidated:
            fairy.invalidate(error)
            engine.dispose()
        raise wrapped from error
    finally:
        # Back to the pool as it came out, also after an error (a lost append race): left in
        # autocommit, the next transaction on it would commit each statement on its own.
        if switched and not conn.closed:
            try:
                conn.autocommit = False
            except engine.dialect.loaded_dbapi.Error:
                fairy.invalidate()
        fairy.close()


@contextlib.contextmanager
def driver_errors(engine: Engine, conn: Any) -> Iterator[None]:
    """Errors of the driver connection `conn` raised inside come out as SQLAlchemy's
    (`IntegrityError`, `OperationalError`, ...), parameters hidden, as from any statement run
    through SQLAlchemy: callers tell a lost database from a bad statement the same way."""
    try:
        yield
    except engine.dialect.loaded_dbapi.Error as error:
        raise _as_sqlalchemy_error(engine, conn, error) from error


def _as_sqlalchemy_error(engine: Engine, conn: Any, error: Exception) -> DBAPIError:
    return DBAPIError.instance(
        None,
        None,
        error,
        engine.dialect.loaded_dbapi.Error,
        hide_parameters=True,
        connection_invalidated=engine.dialect.is_disconnect(error, conn, None),
        dialect=engine.dialect,
    )


def _postgres_engine(database_url: str, pool_size: int, autocommit: bool, durable_commits: bool) -> Engine:
    """No pre-ping: it would cost a round trip per checkout on the hot path. Instead a
    checkout drops a connection whose socket already tells it is dead (`_discard_if_dead`),
    and a connection found dead by a statement invalidates the whole pool at once: the API
    answers that one request with a 503, the relay and the worker retry."""
    # In autocommit mode no transaction can be left open, so a returned connection needs no
    # ROLLBACK either.
    options = {"isolation_level": "AUTOCOMMIT", "pool_reset_on_return": None} if autocommit else {}
    engine = create_engine(
        with_timeouts(make_url(database_url)),
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_recycle=1800,
        pool_timeout=POOL_TIMEOUT_SECONDS,
        hide_parameters=True,  # errors must not quote parameters: they may hold candidate keys
        connect_args={} if durable_commits else {"options": "-c synchronous_commit=off"},
        **options,
    )
    event.listen(engine, "checkout", _discard_if_dead)
    return engine


def with_timeouts(url: URL) -> URL:
    """`url` with `CONNECTION_TIMEOUTS` for whatever its query string does not set."""
    return url.update_query_dict({k: v for k, v in CONNECTION_TIMEOUTS.items() if k not in url.query})


def _discard_if_dead(dbapi_connection, _record, _proxy) -> None:
    """An idle connection has nothing to read: a readable socket means the server closed the
    session (a restart, `pg_terminate_backend`, keepalives that went unanswered) and said so.
    Checking costs one non-blocking poll, not a round trip; a false alarm (a notice arriving
    on an idle session) costs a new connection, not an error."""
    if dbapi_connection.closed or dbapi_connection.broken:
        raise DisconnectionError("the connection is closed")
    poller = select.poll()
    poller.register(dbapi_connection.fileno(), select.POLLIN)
    if poller.poll(0):
        raise DisconnectionError("the server closed the session")


def ensure_database(database_url: str) -> bool:
    """Create the database named in the URL if it is missing, so a fresh machine needs no
    manual `createdb`. Returns whether it had to be created."""
    url = make_url(database_url)
    server = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with server.connect() as conn:
            exists = conn.scalar(
                text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": url.database}
            )
            if not exists:
                conn.exec_driver_sql(f'CREATE DATABASE "{url.database}"')
            return not exists
    finally:
        server.dispose()


def libpq_url(engine: Engine) -> str:
    """The engine's connection for a plain psycopg connection (LISTEN, COPY, named cursors),
    with the same `CONNECTION_TIMEOUTS`: a libpq conninfo string made by the dialect, as the
    engine's own connections are, so that every host of a multi-host URL
    (`?host=h1:p1&host=h2:p2`, which libpq cannot read as a URL) and its
    `target_session_attrs` reach libpq."""
    _, params = engine.dialect.create_connect_args(with_timeouts(engine.url))
    params.pop("context", None)  # the psycopg dialect's adapters, not a connection parameter
    return psycopg.conninfo.make_conninfo("", **params)


def _sqlite_engine(database_url: str) -> Engine:
    """SQLite for `assessments dev`: WAL so readers never block the writer, a busy timeout
    instead of "database is locked", and write transactions that take the lock up front
    (BEGIN IMMEDIATE) so two of them cannot deadlock upgrading a read lock."""
    engine = create_engine(database_url, connect_args={"check_same_thread": False, "timeout": 30})

    @event.listens_for(engine, "connect")
    def _configure(dbapi_connection, _record) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy, not the driver, starts transactions
        for pragma in ("journal_mode=WAL", "busy_timeout=30000", "synchronous=NORMAL"):
            dbapi_connection.execute(f"PRAGMA {pragma}")

    @event.listens_for(engine, "begin")
    def _begin(conn) -> None:
        # The execution option, not `get_isolation_level()`: SQLite reports SERIALIZABLE even
        # for an autocommit connection, whose statements would then run inside a transaction
        # nobody commits (the relay's deletes of published outbox rows were all undone).
        if conn.get_execution_options().get("isolation_level") != "AUTOCOMMIT":
            conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def is_embedded(database_url: str) -> bool:
    return database_url.startswith("sqlite")
