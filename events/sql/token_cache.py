"""Reviewer tokens kept in memory by each API process, for as long as PostgreSQL vouches that no
token changed since they were looked up.

Why: looking the bearer token up was a statement on every request, about a tenth of a create's
CPU in the API alone (measured with callgrind), plus the database's share. Why it is safe: any
change to `api_tokens` (the CLI's revoke, or an operator's own SQL) notifies the channel
`assessments_tokens` in its transaction (migration 0002); a session of this process LISTENs,
and on every notification, and whenever it loses the session, it forgets everything. While the
session is down nothing is cached or served from memory: every request asks the database. A
request racing a revocation by less than the notification's delivery (well under a
millisecond here) may still pass, as it could have passed a moment earlier.

Only positive answers are kept: a token created a moment ago is looked up, never refused from
memory.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import Generic, TypeVar

import psycopg

log = logging.getLogger(__name__)

CHANNEL = "assessments_tokens"
#: How the session shows in `pg_stat_activity`.
APPLICATION_NAME = "assessments-token-cache"
#: How often the session is checked to be alive between notifications.
PING_SECONDS = 1.0
RECONNECT_SECONDS = 1.0
MAX_ENTRIES = 10_000

V = TypeVar("V")


class TokenCache(Generic[V]):
    def __init__(self, conninfo: str, max_entries: int = MAX_ENTRIES) -> None:
        self._conninfo = conninfo
        self._max_entries = max_entries
        self._entries: dict[str, V] = {}
        self._lock = threading.Lock()
        #: Changes whenever the entries are forgotten; None while nothing may be cached.
        self._generation: int | None = None
        self._counter = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- what requests use ----------------------------------------------------------------

    def get(self, token_hash: str) -> V | None:
        self._start_once()
        return self._entries.get(token_hash) if self._generation is not None else None

    def generation(self) -> int | None:
        """Read before a database lookup and hand to `put`: an answer that a revocation
        overtook (it was forgotten meanwhile) is then not kept."""
        return self._generation

    def put(self, token_hash: str, value: V, generation: int | None) -> None:
        with self._lock:
            if (
                generation is not None
                and generation == self._generation
                and len(self._entries) < self._max_entries
            ):
                self._entries[token_hash] = value

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(PING_SECONDS + 5)

    # --- the listening session ------------------------------------------------------------

    def _start_once(self) -> None:
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="token-cache", daemon=True)
                    self._thread.start()

    def _forget(self, trusted: bool) -> None:
        with self._lock:
            self._entries.clear()
            self._counter += 1
            self._generation = self._counter if trusted else None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._listen()
            except psycopg.Error as error:
                log.warning("token cache off until its session is back: %r", error)
            finally:
                self._forget(trusted=False)
            self._stop.wait(RECONNECT_SECONDS)

    def _listen(self) -> None:
        with contextlib.closing(
            psycopg.connect(
                self._conninfo, autocommit=True, connect_timeout=5, application_name=APPLICATION_NAME
            )
        ) as conn:
            conn.execute(f"LISTEN {CHANNEL}")
            self._forget(trusted=True)  # what was cached before the session may be stale
            while not self._stop.is_set():
                for _ in conn.notifies(timeout=PING_SECONDS):
                    self._forget(trusted=True)
                conn.execute("SELECT 1")  # a silently dead session must not keep vouching
