"""A PostgreSQL primary and a streaming standby of a test's own, with synchronous replication,
removed afterwards (even when the test fails).

Nothing here touches the machine's own PostgreSQL: both clusters are made by `initdb` and
`pg_basebackup` in a temp folder of their own, listen on 127.0.0.1 only, on free ports of their
own, with their sockets in that folder, and are started and stopped by `pg_ctl -D` on their own
data folders (never `pg_ctlcluster`, never /etc/postgresql). PostgreSQL refuses to run as root,
so when the test runs as root the binaries run as the `postgres` user, in a folder it owns.

Replication is synchronous (`synchronous_standby_names = '*'`, `synchronous_commit = on`): a
commit is acknowledged only once the standby has flushed its WAL, so a primary that dies loses
nothing it acknowledged. With asynchronous replication it may. The standby's own
`synchronous_standby_names` is empty: once promoted it has no standby of its own, and a
primary waiting for one would never acknowledge a commit again.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg

#: Where Debian and Ubuntu put each major version's server binaries.
DEBIAN_BINARIES = Path("/usr/lib/postgresql")
SLOT = "failover_standby"


def binaries() -> Path | None:
    """The folder of `initdb`, `pg_ctl` and `pg_basebackup` (the newest version installed), or
    None when the PostgreSQL server is not installed."""
    versions = sorted(
        (path.parent for path in DEBIAN_BINARIES.glob("*/bin/initdb")),
        key=lambda folder: int(folder.parent.name) if folder.parent.name.isdigit() else 0,
    )
    if versions:
        return versions[-1]
    found = shutil.which("initdb")
    return Path(found).resolve().parent if found else None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Server:
    name: str
    port: int
    data: Path

    @property
    def conninfo(self) -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres connect_timeout=2"

    def query(self, sql: str) -> list[tuple]:
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            return conn.execute(sql).fetchall()


class PostgresPair:
    """`with PostgresPair.started() as pair:` a primary streaming synchronously to a standby."""

    def __init__(self, folder: Path, bin_dir: Path) -> None:
        self.folder = folder
        self.bin = bin_dir
        self.primary = Server("primary", free_port(), folder / "primary")
        self.standby = Server("standby", free_port(), folder / "standby")
        self._as_postgres = os.geteuid() == 0

    @classmethod
    @contextlib.contextmanager
    def started(cls):
        bin_dir = binaries()
        if bin_dir is None:
            raise RuntimeError("the PostgreSQL server (initdb, pg_ctl, pg_basebackup) is not installed")
        folder = Path(tempfile.mkdtemp(prefix="assessments-pg-pair-"))
        pair = cls(folder, bin_dir)
        try:
            if pair._as_postgres:
                try:
                    user = pwd.getpwnam("postgres")
                except KeyError:
                    raise RuntimeError(
                        "PostgreSQL refuses to run as root, and there is no postgres user"
                    ) from None
                os.chown(folder, user.pw_uid, user.pw_gid)
            pair._start_primary()
            pair._start_standby()
            pair._await_synchronous_standby()
            yield pair
        finally:
            pair.remove()

    def url(self, database: str) -> str:
        """`ASSESSMENTS_DATABASE_URL` of `database` on whichever of the two accepts writes,
        written as the README shows it: the primary first, then the standby."""
        return (
            f"postgresql+psycopg://postgres@/{database}?host=127.0.0.1:{self.primary.port},"
            f"127.0.0.1:{self.standby.port}&target_session_attrs=read-write"
        )

    # --- what a test does to it ------------------------------------------------------------

    def kill_primary(self) -> None:
        """A primary failure: `pg_ctl stop -m immediate` (no checkpoint, sessions cut off)."""
        self._ctl(self.primary, "stop", "-m", "immediate")

    def promote_standby(self, timeout: float = 30.0) -> None:
        """What an operator or a failover manager does: promote, and wait until it takes writes."""
        self._ctl(self.standby, "promote", "-t", str(int(timeout)))
        deadline = time.monotonic() + timeout
        while self.standby.query("SELECT pg_is_in_recovery()") != [(False,)]:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the standby is still in recovery after {timeout}s")
            time.sleep(0.02)

    # --- the servers' lives ----------------------------------------------------------------

    def _run(self, *args: str, timeout: float = 60) -> str:
        as_user = {"user": "postgres", "group": "postgres", "extra_groups": []} if self._as_postgres else {}
        done = subprocess.run(
            [str(self.bin / args[0]), *args[1:]],
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C", "LC_ALL": "C"},
            cwd=self.folder,
            capture_output=True,
            text=True,
            timeout=timeout,
            **as_user,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(args)}: {done.stderr.strip() or done.stdout.strip()}")
        return done.stdout

    def _ctl(self, server: Server, *args: str) -> str:
        return self._run("pg_ctl", "-D", str(server.data), "-l", str(self._log(server)), "-w", *args)

    def _log(self, server: Server) -> Path:
        return self.folder / f"{server.name}.log"

    def _configure(self, server: Server, **settings: str) -> None:
        lines = [f"{key} = '{value}'" for key, value in settings.items()]
        with (server.data / "postgresql.conf").open("a") as conf:
            conf.write("\n# the test's own\n" + "\n".join(lines) + "\n")

    def _start_primary(self) -> None:
        self._run(
            "initdb", "-D", str(self.primary.data), "-U", "postgres", "--auth=trust",
            "--no-sync", "--locale=C", "--encoding=UTF8",
        )  # fmt: skip
        self._configure(
            self.primary,
            port=str(self.primary.port),
            listen_addresses="127.0.0.1",
            unix_socket_directories=str(self.folder),
            shared_buffers="32MB",
            wal_level="replica",
            max_wal_senders="4",
            synchronous_standby_names="*",
            synchronous_commit="on",
        )
        self._ctl(self.primary, "start")

    def _start_standby(self) -> None:
        # initdb's pg_hba.conf with --auth=trust already lets 127.0.0.1 connect for replication.
        self._run(
            "pg_basebackup", "-h", "127.0.0.1", "-p", str(self.primary.port), "-U", "postgres",
            "-D", str(self.standby.data), "-X", "stream", "-C", "-S", SLOT, "-R",
            "--checkpoint=fast", "--no-sync",
        )  # fmt: skip
        # The base backup copied the primary's postgresql.conf; the lines added here come later
        # in the file, so they win.
        self._configure(self.standby, port=str(self.standby.port), synchronous_standby_names="")
        self._ctl(self.standby, "start")

    def _await_synchronous_standby(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        sql = "SELECT state, sync_state FROM pg_stat_replication"
        while (found := self.primary.query(sql)) != [("streaming", "sync")]:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the standby is not a streaming synchronous standby: {found}")
            time.sleep(0.05)

    def remove(self) -> None:
        """Stop both servers (immediately: their data is thrown away) and delete the folder."""
        for server in (self.primary, self.standby):
            pid_file = server.data / "postmaster.pid"
            if not pid_file.exists():
                continue
            with contextlib.suppress(Exception):
                self._ctl(server, "stop", "-m", "immediate")
            with contextlib.suppress(OSError, ValueError):  # pg_ctl failed: the postmaster itself
                os.kill(int(pid_file.read_text().split()[0]), signal.SIGKILL)
        shutil.rmtree(self.folder, ignore_errors=True)

    def logs(self) -> str:
        """The end of both servers' logs, for a failing test's message."""
        tails = []
        for server in (self.primary, self.standby):
            with contextlib.suppress(OSError):
                tails.append(f"--- {server.name}\n{self._log(server).read_text()[-3000:]}")
        return "\n".join(tails)
