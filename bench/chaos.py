"""Chaos run: the whole service under a bounded mixed load while its broker and its database fail
the ways they fail in production, then its guarantees checked against the event store.

    .venv/bin/python bench/chaos.py [--duration 120] [--seed N] [--keep] [--logs DIR]
                                    [--postgres URL] [--broker URL]

What runs: the API (`assessments api`, gunicorn), two relays and two workers, each an OS process
of its own (`python -m cli ...`), on a database and a RabbitMQ vhost of the run's own. They reach
PostgreSQL and RabbitMQ through TCP proxies of this process (`tests.support.proxy`), so it can
cut them; this process itself talks to both directly. Before the load, a durable audit queue is
bound to `#` on the exchange, to see every event the relays publish.

The load: a few client threads making creates (with and without Idempotency-Key, retried with
the same key after a 5xx or no answer, as a retrying client does), key issuance, key revokes,
deletes, gets, lists and candidate reads; each request is recorded, and each acknowledged (2xx)
write with what it wrote.

The faults (`FAULTS`), at times drawn from the seed, one at a time: SIGKILL of a worker and of
the active relay (restarted a second later, as a supervisor would), the broker cut with
connections refused and with connections accepted then reset, `rabbitmqctl
close_all_connections` on the vhost, the database cut with connections refused, its sessions
terminated, and its port blackholed in the kernel (a network partition).

Then, once the pipeline is quiet, the checks (`CHECKS`), printed as a table; the run exits 1 if
any count is not 0. Needs root and nft for the blackhole (apt-get install nftables), and
rabbitmqctl on this machine (the vhost, close_all_connections). Processes, database, vhost and
nftables tables are removed on the way out, also on Ctrl-C or failure (`--keep` leaves the
database and the vhost for inspection).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pika
import psycopg
import requests
from pika.exceptions import AMQPError

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support import netfilter  # noqa: E402
from tests.support.proxy import Refusal, TcpProxy  # noqa: E402
from tests.support.wait import wait_for  # noqa: E402

SERVER = os.environ.get("CHAOS_POSTGRES", "postgresql+psycopg://root@127.0.0.1:5432/postgres")
BROKER = os.environ.get("CHAOS_BROKER", "amqp://guest:guest@127.0.0.1:5672/%2F")

#: The longest any request may take, whatever fails behind the API (README, "Chaos").
REQUEST_BOUND_SECONDS = 5.0
#: A fault's window stays open this long after the fault ends: the time the service may take to
#: notice that what it lost is back (the 5xx row forgives only what falls in a window).
FAULT_GRACE_SECONDS = 2.0
#: Well above the bound, so that a hang is measured as a hang rather than cut short.
CLIENT_TIMEOUT_SECONDS = 30.0
CLIENT_THREADS = 4
#: Pause of each client between two requests: a bounded load that leaves the 2 cores some air.
THINK_SECONDS = 0.02
#: Attempts of a create with an Idempotency-Key that gets a 5xx or no answer.
IDEMPOTENT_ATTEMPTS = 3
#: How long the supervisor waits before restarting a process that exited (systemd's RestartSec).
RESTART_SECONDS = 1.0
WARM_UP_SECONDS = 3.0
#: The load goes on this long after the last fault ended, to see the service recover.
COOL_DOWN_SECONDS = 3.0
#: A fault begins on average this often; a short run still gets every fault once.
FAULT_EVERY_SECONDS = 10.0
#: Longer than the bound: a request that waits on the database for the whole partition
#: breaks REQUEST_BOUND_SECONDS, one that gives up in time answers 503.
BLACKHOLE_SECONDS = REQUEST_BOUND_SECONDS + 3.0
#: Least time between a fault's end and the next fault's start.
RECOVERY_SECONDS = 1.0
QUIESCENCE_TIMEOUT_SECONDS = 120.0
STOP_TIMEOUT_SECONDS = 30.0
EXCHANGE = "assessments.events"
WORKER_QUEUE = "assessments.worker"
DEAD_LETTER_QUEUE = f"{WORKER_QUEUE}.dead"
AUDIT_QUEUE = "chaos.audit"
ISSUES_FILE = ROOT / "data" / "oss-issues.json"


# --- records ----------------------------------------------------------------------------------


class Clock:
    """Seconds since the run began: requests, faults and exits share it."""

    def __init__(self) -> None:
        self.origin = time.monotonic()

    def now(self) -> float:
        return time.monotonic() - self.origin


@dataclass(frozen=True)
class Write:
    """What an acknowledged (2xx) write wrote, to be found in the event store."""

    kind: str  # "create", "delete", "issue" or "revoke"
    assessment_id: str
    key_ids: tuple[str, ...] = ()
    idempotency_key: str | None = None


@dataclass
class RequestRecord:
    started: float
    duration: float
    method: str
    route: str
    status: int | None  # None: no answer (connection error or client timeout)
    request_id: str
    retry_after: str | None = None
    error: str | None = None
    wrote: Write | None = None

    @property
    def ended(self) -> float:
        return self.started + self.duration

    def describe(self) -> str:
        answer = self.status if self.status is not None else f"no answer ({self.error})"
        return (
            f"{self.method} {self.route} -> {answer} at {self.started:.1f}s "
            f"in {self.duration:.2f}s (rid {self.request_id})"
        )


@dataclass
class FaultWindow:
    name: str
    started: float
    ended: float | None = None
    detail: str = ""
    failed: str | None = None  # the harness could not inject or restore it

    def covers(self, started: float, ended: float, grace: float = FAULT_GRACE_SECONDS) -> bool:
        """Whether a request over [started, ended] overlapped the fault or its grace."""
        end = (self.ended if self.ended is not None else float("inf")) + grace
        return started <= end and ended >= self.started

    def describe(self) -> str:
        end = f"{self.ended:.1f}" if self.ended is not None else "?"
        return f"{self.name} {self.started:.1f}-{end}s"


@dataclass(frozen=True)
class ProcessExit:
    process: str
    pid: int
    at: float
    returncode: int
    last_words: str


@dataclass
class Check:
    name: str
    count: int
    examples: list[str] = field(default_factory=list)


# --- the sandbox: a database, a vhost, two proxies --------------------------------------------


def libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def with_database(url: str, name: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).set(database=name).render_as_string(hide_password=False)


def rabbitmqctl(*args: str) -> str:
    """The broker's own command line: it manages the broker of this machine only."""
    done = subprocess.run(["rabbitmqctl", *args], capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"rabbitmqctl {' '.join(args)}: {(done.stderr or done.stdout).strip()}")
    return done.stdout


def broker_user(url: str) -> str:
    return pika.URLParameters(url).credentials.username


@dataclass
class Sandbox:
    server_url: str  # a maintenance database of the PostgreSQL server
    broker_url: str  # the RabbitMQ server (its vhost is replaced by the run's)
    run_id: str

    @property
    def database(self) -> str:
        return f"assessments_chaos_{self.run_id}"

    @property
    def vhost(self) -> str:
        return f"chaos-{self.run_id}"

    @property
    def database_url(self) -> str:
        return with_database(self.server_url, self.database)

    @property
    def vhost_url(self) -> str:
        return self.broker_url.rsplit("/", 1)[0] + f"/{self.vhost}"

    def admin(self, sql: str, *params) -> list[tuple]:
        """On the maintenance database, directly: never through a proxy, never in the run's."""
        with psycopg.connect(libpq(self.server_url), autocommit=True) as conn:
            cursor = conn.execute(sql, params or None)
            return cursor.fetchall() if cursor.description else []


@contextlib.contextmanager
def sandbox(server_url: str, broker_url: str, keep: bool) -> Iterator[Sandbox]:
    box = Sandbox(server_url, broker_url, uuid.uuid4().hex[:8])
    try:
        box.admin(f'CREATE DATABASE "{box.database}"')
        rabbitmqctl("add_vhost", box.vhost)
        rabbitmqctl("set_permissions", "-p", box.vhost, broker_user(broker_url), ".*", ".*", ".*")
        yield box
    finally:
        if keep:
            print(f"kept database {box.database} and vhost {box.vhost}; remove them with:")
            print(f"  psql -c 'DROP DATABASE \"{box.database}\" WITH (FORCE)'")
            print(f"  rabbitmqctl delete_vhost {box.vhost}")
        else:
            with contextlib.suppress(Exception):
                box.admin(f'DROP DATABASE IF EXISTS "{box.database}" WITH (FORCE)')
            with contextlib.suppress(Exception):
                rabbitmqctl("delete_vhost", box.vhost)


def prepare_database(box: Sandbox) -> list[str]:
    """Migrated, with the sample catalogue; returns two organisations' tokens."""
    from cli.migrate import upgrade
    from events.sql import catalogue, tenancy
    from events.sql.engine import make_engine

    upgrade(box.database_url)
    engine = make_engine(box.database_url, pool_size=1)
    try:
        catalogue.import_catalogue(engine, ISSUES_FILE)
        return [tenancy.create_organisation(engine, f"Chaos {n}").token for n in (1, 2)]
    finally:
        engine.dispose()


def bind_audit_queue(box: Sandbox) -> None:
    """Declared before any event exists, so it receives every event the relays publish."""
    connection = pika.BlockingConnection(pika.URLParameters(box.vhost_url))
    try:
        channel = connection.channel()
        channel.exchange_declare(exchange=EXCHANGE, exchange_type="topic", durable=True)
        channel.queue_declare(queue=AUDIT_QUEUE, durable=True)
        channel.queue_bind(queue=AUDIT_QUEUE, exchange=EXCHANGE, routing_key="#")
    finally:
        connection.close()


@contextlib.contextmanager
def proxy_to(url: str, default_port: int) -> Iterator[TcpProxy]:
    parsed = urlsplit(url)
    with TcpProxy(parsed.hostname or "127.0.0.1", parsed.port or default_port) as proxy:
        yield proxy


# --- the service's processes and their supervisor ---------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class ServiceProcess:
    name: str
    role: str  # "api", "relay" or "worker"
    args: list[str]
    env: dict[str, str]
    log_path: Path
    metrics_port: int | None = None
    popen: subprocess.Popen | None = None
    killed: bool = False  # by the chaos: its exit is expected
    _log_offset: int = 0

    def start(self) -> None:
        """In a session of its own: a Ctrl-C in the terminal reaches this script only, which
        then stops every process in order."""
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "cli", *self.args],
                cwd=ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.killed = False

    def last_words(self) -> str:
        """What this incarnation said last: the traceback or error it died of."""
        with self.log_path.open("rb") as log:
            log.seek(self._log_offset)
            text = log.read().decode("utf-8", "replace")
        return last_error(text)

    def signal_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, sig)


FRAME = re.compile(r'^\s*File "(?P<path>[^"]+)", line (?P<line>\d+), in (?P<function>\S+)')
NOT_AN_EXCEPTION = ("Traceback", "During handling", "The above exception")


def exception_summary(traceback: str) -> str:
    """`Type: message (at path:line in function)`: the last exception of a traceback and the
    innermost frame of the project's own code it went through."""
    lines = traceback.strip().splitlines()
    heads = [line for line in lines if line[:1].strip() and not line.startswith(NOT_AN_EXCEPTION)]
    ours = [
        match
        for line in lines
        if (match := FRAME.match(line))
        and match["path"].startswith(str(ROOT))
        and "/.venv/" not in match["path"]
    ]
    where = ""
    if ours:
        path = Path(ours[-1]["path"]).relative_to(ROOT)
        where = f" (at {path}:{ours[-1]['line']} in {ours[-1]['function']})"
    return (heads[-1] if heads else lines[-1] if lines else "?")[:250] + where


def last_error(log_text: str) -> str:
    """What a process died of: the traceback Python printed on its way out, or else the last
    exception or ERROR of its JSON lines."""
    plain = "\n".join(line for line in log_text.splitlines() if not line.startswith("{"))
    if "Traceback (most recent call last):" in plain:
        return exception_summary(plain.rsplit("Traceback (most recent call last):", 1)[1])
    for line in reversed(log_text.strip().splitlines()):
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if record.get("exception"):
                return exception_summary(record["exception"])
            if record.get("level") in ("ERROR", "CRITICAL"):
                return record.get("message", "")[:300]
    return "(nothing in its log)"


class Supervisor:
    """Runs the service's processes and restarts any that exits, as systemd or Kubernetes would;
    records every exit the chaos did not cause itself."""

    def __init__(self, processes: list[ServiceProcess], clock: Clock) -> None:
        self.processes = processes
        self.clock = clock
        self.exits: list[ProcessExit] = []
        self.unclean_stops: list[str] = []
        self._lock = threading.Lock()
        self._due: dict[str, float] = {}  # process name -> when to restart it
        self._stop = threading.Event()
        self._stopped = False
        self._watcher = threading.Thread(target=self._watch, name="supervisor", daemon=True)

    def start(self) -> None:
        for process in self.processes:
            process.start()
        self._watcher.start()

    def of_role(self, role: str) -> list[ServiceProcess]:
        return [p for p in self.processes if p.role == role]

    def kill(self, process: ServiceProcess) -> None:
        with self._lock:
            process.killed = True
            process.signal_group(signal.SIGKILL)
        process.popen.wait(10)

    def restart_killed(self) -> None:
        with self._lock:
            for process in self.processes:
                if process.killed:
                    self._due.pop(process.name, None)
                    process.start()

    def _watch(self) -> None:
        while not self._stop.wait(0.2):
            with self._lock:
                for process in self.processes:
                    self._check(process)

    def _check(self, process: ServiceProcess) -> None:
        due = self._due.get(process.name)
        if due is not None:
            if self.clock.now() >= due:
                del self._due[process.name]
                if process.popen.poll() is not None:
                    process.start()
            return
        code = process.popen.poll()
        if code is None or process.killed:
            return
        self.exits.append(
            ProcessExit(process.name, process.popen.pid, self.clock.now(), code, process.last_words())
        )
        self._due[process.name] = self.clock.now() + RESTART_SECONDS

    def stop(self) -> None:
        """SIGTERM to all, as an orchestrator stops them; records any that does not exit 0 in
        time (then killed). Once: a second call finds nothing to stop."""
        if self._stopped:
            return
        self._stopped = True
        self._stop.set()
        if self._watcher.is_alive():
            self._watcher.join(5)
        running = [p for p in self.processes if p.popen is not None and p.popen.poll() is None]
        for process in running:
            process.popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
        for process in running:
            try:
                code = process.popen.wait(max(0.1, deadline - time.monotonic()))
                if code != 0:
                    self.unclean_stops.append(f"{process.name}: exit {code} on SIGTERM")
            except subprocess.TimeoutExpired:
                self.unclean_stops.append(
                    f"{process.name}: still running {STOP_TIMEOUT_SECONDS:.0f}s after SIGTERM"
                )
        for process in self.processes:  # gunicorn's workers too, and anything that hung
            if process.popen is not None:
                process.signal_group(signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.popen.wait(10)


def service_processes(database_url: str, broker_url: str, api_port: int, logs: Path) -> list[ServiceProcess]:
    """The API, two relays (one active, one standing by) and two workers, configured only by
    this run (none of the caller's ASSESSMENTS_* settings leaks in)."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("ASSESSMENTS_")},
        "ASSESSMENTS_DATABASE_URL": database_url,
        "ASSESSMENTS_BROKER_URL": broker_url,
        "ASSESSMENTS_EXCHANGE": EXCHANGE,
        "ASSESSMENTS_WORKER_QUEUE": WORKER_QUEUE,
        "ASSESSMENTS_BIND": f"127.0.0.1:{api_port}",
        "ASSESSMENTS_API_WORKERS": "2",
        "ASSESSMENTS_LOG_FORMAT": "json",
        "ASSESSMENTS_LOG_LEVEL": "INFO",
    }
    processes = [ServiceProcess("api", "api", ["api"], env, logs / "api.log")]
    for n in (1, 2):
        port = free_port()
        processes.append(
            ServiceProcess(
                f"relay-{n}",
                "relay",
                ["relay", "--metrics-port", str(port)],
                env,
                logs / f"relay-{n}.log",
                port,
            )
        )
    for n in (1, 2):
        processes.append(ServiceProcess(f"worker-{n}", "worker", ["worker"], env, logs / f"worker-{n}.log"))
    return processes


def relay_is_active(process: ServiceProcess) -> bool:
    try:
        text = requests.get(f"http://127.0.0.1:{process.metrics_port}/metrics", timeout=1).text
    except requests.RequestException:
        return False
    return any(line.startswith("assessments_relay_active 1") for line in text.splitlines())


def wait_until_ready(api_url: str) -> None:
    def ready() -> bool:
        try:
            return requests.get(f"{api_url}/readyz", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    wait_for(ready, timeout=60, message="the API's /readyz")


# --- faults ---------------------------------------------------------------------------------


@dataclass
class Rig:
    """What the faults act on."""

    box: Sandbox
    supervisor: Supervisor
    database_proxy: TcpProxy
    broker_proxy: TcpProxy
    rng: random.Random


@dataclass(frozen=True)
class Fault:
    name: str
    inject: Callable[[Rig], str]  # returns a detail for the report
    restore: Callable[[Rig], None] = lambda rig: None
    hold: float = 0.0  # seconds between inject and restore


def kill_worker(rig: Rig) -> str:
    victim = rig.rng.choice(rig.supervisor.of_role("worker"))
    rig.supervisor.kill(victim)
    return victim.name


def kill_active_relay(rig: Rig) -> str:
    relays = rig.supervisor.of_role("relay")
    active = [relay for relay in relays if relay_is_active(relay)]
    victim = rig.rng.choice(active or relays)
    rig.supervisor.kill(victim)
    return f"{victim.name} ({'active' if active else 'none reported active'})"


def restart_killed(rig: Rig) -> None:
    rig.supervisor.restart_killed()


def cut(proxy_of: Callable[[Rig], TcpProxy], how: Refusal) -> Callable[[Rig], str]:
    def inject(rig: Rig) -> str:
        proxy = proxy_of(rig)
        live = proxy.live_connections
        proxy.cut(how)
        return f"{live} connections dropped, new ones {how.value}"

    return inject


def restore(proxy_of: Callable[[Rig], TcpProxy]) -> Callable[[Rig], None]:
    return lambda rig: proxy_of(rig).restore()


def broker(rig: Rig) -> TcpProxy:
    return rig.broker_proxy


def database(rig: Rig) -> TcpProxy:
    return rig.database_proxy


def close_broker_connections(rig: Rig) -> str:
    rabbitmqctl("close_all_connections", "-p", rig.box.vhost, "chaos")
    return f"vhost {rig.box.vhost}"


def terminate_database_sessions(rig: Rig) -> str:
    killed = rig.box.admin(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE datname = %s AND pid <> pg_backend_pid()",
        rig.box.database,
    )
    return f"{len(killed)} sessions"


def blackhole_database(rig: Rig) -> str:
    rig.database_proxy.blackhole()
    return f"port {rig.database_proxy.port} dropped by nftables"


FAULTS: tuple[Fault, ...] = (
    Fault("worker SIGKILL", kill_worker, restart_killed, hold=RESTART_SECONDS),
    Fault("relay SIGKILL", kill_active_relay, restart_killed, hold=RESTART_SECONDS),
    Fault("broker refused", cut(broker, Refusal.REFUSE), restore(broker), hold=2.0),
    Fault("broker reset", cut(broker, Refusal.RESET), restore(broker), hold=2.0),
    Fault("broker close_all_connections", close_broker_connections),
    Fault("database refused", cut(database, Refusal.REFUSE), restore(database), hold=2.0),
    Fault("database sessions terminated", terminate_database_sessions),
    Fault("database blackholed", blackhole_database, restore(database), hold=BLACKHOLE_SECONDS),
)


@dataclass(frozen=True)
class PlannedFault:
    at: float
    fault: Fault


def time_needed(faults: list[Fault] | tuple[Fault, ...]) -> float:
    return sum(fault.hold + RECOVERY_SECONDS for fault in faults)


def least_duration() -> float:
    return WARM_UP_SECONDS + COOL_DOWN_SECONDS + time_needed(FAULTS)


def plan_faults(duration: float, rng: random.Random) -> list[PlannedFault]:
    """Every fault at least once, then more in shuffled rounds (one per FAULT_EVERY_SECONDS),
    one at a time: the time the faults leave free is split into random gaps between them."""
    span = duration - WARM_UP_SECONDS - COOL_DOWN_SECONDS
    order: list[Fault] = []
    while len(order) < max(len(FAULTS), span / FAULT_EVERY_SECONDS):
        order += rng.sample(FAULTS, len(FAULTS))
    order = order[: max(len(FAULTS), int(span / FAULT_EVERY_SECONDS))]
    while time_needed(order) > span:
        order.pop()
    cuts = sorted(rng.uniform(0, span - time_needed(order)) for _ in order)
    plan, needed = [], 0.0
    for cut_at, fault in zip(cuts, order, strict=True):
        plan.append(PlannedFault(WARM_UP_SECONDS + cut_at + needed, fault))
        needed += fault.hold + RECOVERY_SECONDS
    return plan


class Injector:
    """Applies the plan on a thread of its own; every fault it injects, it restores."""

    def __init__(self, rig: Rig, plan: list[PlannedFault], clock: Clock) -> None:
        self.rig, self.plan, self.clock = rig, plan, clock
        self.windows: list[FaultWindow] = []
        self._cancelled = threading.Event()
        self._thread = threading.Thread(target=self._run, name="injector", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        for planned in self.plan:
            if self._cancelled.wait(max(0.0, planned.at - self.clock.now())):
                return
            self._apply(planned.fault)

    def _apply(self, fault: Fault) -> None:
        window = FaultWindow(fault.name, self.clock.now())
        self.windows.append(window)
        try:
            window.detail = fault.inject(self.rig)
            time.sleep(fault.hold)  # not cut short by stop(): restore always follows
        except Exception as error:
            window.failed = f"inject: {error!r}"
        finally:
            try:
                fault.restore(self.rig)
            except Exception as error:
                window.failed = f"restore: {error!r}"
            window.ended = self.clock.now()

    def finish(self) -> float:
        """Waits until the plan is done; returns when the last fault ended."""
        self._thread.join()
        return max((w.ended or 0.0 for w in self.windows), default=0.0)

    def stop(self) -> None:
        self._cancelled.set()
        if self._thread.is_alive():
            self._thread.join(30)


# --- the load -----------------------------------------------------------------------------------


class Known:
    """One organisation's live assessments and keys, as the clients saw them acknowledged."""

    def __init__(self, token: str) -> None:
        self.token = token
        self._lock = threading.Lock()
        self.assessments: dict[str, set[str]] = {}  # id -> live key ids
        self.keys: dict[str, tuple[str, str]] = {}  # key id -> (assessment id, key)

    def add_assessment(self, assessment_id: str) -> None:
        with self._lock:
            self.assessments.setdefault(assessment_id, set())

    def forget_assessment(self, assessment_id: str) -> None:
        with self._lock:
            for key_id in self.assessments.pop(assessment_id, set()):
                self.keys.pop(key_id, None)

    def add_keys(self, assessment_id: str, keys: list[dict]) -> None:
        with self._lock:
            if assessment_id in self.assessments:
                for key in keys:
                    self.assessments[assessment_id].add(key["id"])
                    self.keys[key["id"]] = (assessment_id, key["key"])

    def forget_key(self, key_id: str) -> None:
        with self._lock:
            assessment_id, _ = self.keys.pop(key_id, (None, None))
            self.assessments.get(assessment_id, set()).discard(key_id)

    def any_assessment(self, rng: random.Random) -> str | None:
        with self._lock:
            return rng.choice(list(self.assessments)) if self.assessments else None

    def any_key(self, rng: random.Random) -> tuple[str, str, str] | None:
        with self._lock:
            if not self.keys:
                return None
            key_id = rng.choice(list(self.keys))
            return (key_id, *self.keys[key_id])


class LoadClient(threading.Thread):
    def __init__(
        self,
        index: int,
        api_url: str,
        known: Known,
        issue_ids: list[str],
        seed: int,
        clock: Clock,
        stop: threading.Event,
        records: list[RequestRecord],
        idempotency: dict[str, list[str]],
    ) -> None:
        super().__init__(name=f"client-{index}", daemon=True)
        self.index = index
        self.api_url = api_url
        self.known = known
        self.issue_ids = issue_ids
        self.rng = random.Random(seed * 1000 + index)
        self.clock = clock
        self.stop = stop
        self.records = records
        self.idempotency = idempotency  # key -> request ids of every attempt
        self.session = requests.Session()

    def run(self) -> None:
        weights = [weight for weight, _ in OPERATIONS]
        while not self.stop.is_set():
            _, operation = self.rng.choices(OPERATIONS, weights)[0]
            operation(self)
            time.sleep(THINK_SECONDS)
        self.session.close()

    def call(
        self, method: str, route: str, path: str, *, as_candidate: str | None = None, **kwargs
    ) -> tuple[RequestRecord, requests.Response | None]:
        request_id = str(uuid.uuid4())
        headers = {"X-Request-Id": request_id, **kwargs.pop("headers", {})}
        if as_candidate:
            headers["X-API-Key"] = as_candidate
        else:
            headers["Authorization"] = f"Bearer {self.known.token}"
        started = self.clock.now()
        response, error = None, None
        try:
            response = self.session.request(
                method, self.api_url + path, headers=headers, timeout=CLIENT_TIMEOUT_SECONDS, **kwargs
            )
        except requests.RequestException as failure:
            error = type(failure).__name__
        record = RequestRecord(
            started=started,
            duration=self.clock.now() - started,
            method=method,
            route=route,
            status=response.status_code if response is not None else None,
            request_id=request_id,
            retry_after=response.headers.get("Retry-After") if response is not None else None,
            error=error,
        )
        self.records.append(record)
        return record, response


def ok(response: requests.Response | None) -> bool:
    return response is not None and 200 <= response.status_code < 300


def retryable(response: requests.Response | None) -> bool:
    return response is None or response.status_code >= 500


def assessment_body(client: LoadClient) -> dict:
    body = {"title": f"Chaos {client.rng.randrange(10**6)}", "role": "Backend engineer"}
    if client.issue_ids and client.rng.random() < 0.25:
        body["issueId"] = client.rng.choice(client.issue_ids)
    else:
        body["taskBrief"] = "Build a rate limiter."
    if client.rng.random() < 0.5:
        body["timeLimitMinutes"] = client.rng.randint(30, 240)
    return body


def create(client: LoadClient) -> None:
    record, response = client.call("POST", "/v1/assessments", "/v1/assessments", json=assessment_body(client))
    if ok(response):
        assessment_id = response.json()["assessment"]["id"]
        record.wrote = Write("create", assessment_id)
        client.known.add_assessment(assessment_id)


def create_idempotently(client: LoadClient) -> None:
    """A retrying client: after a 5xx or no answer, the same key and body again."""
    key, body = f"chaos-{uuid.uuid4()}", assessment_body(client)
    attempts = client.idempotency.setdefault(key, [])
    for _ in range(IDEMPOTENT_ATTEMPTS):
        record, response = client.call(
            "POST", "/v1/assessments", "/v1/assessments", json=body, headers={"Idempotency-Key": key}
        )
        attempts.append(record.request_id)
        if ok(response):
            assessment_id = response.json()["assessment"]["id"]
            record.wrote = Write("create", assessment_id, idempotency_key=key)
            client.known.add_assessment(assessment_id)
            return
        if not retryable(response):
            return
        time.sleep(float(record.retry_after or 1))


def issue_keys(client: LoadClient) -> None:
    assessment_id = client.known.any_assessment(client.rng)
    if assessment_id is None:
        return create(client)
    count = client.rng.randint(1, 3)
    body: dict = {"count": count}
    if client.rng.random() < 0.6:
        body["candidateEmails"] = [f"c{client.rng.randrange(10**6)}@example.com" for _ in range(count)]
        if client.rng.random() < 0.5:
            body["candidateNames"] = [f"Candidate {n}" for n in range(count)]
    if client.rng.random() < 0.3:
        body["orgName"] = "Chaos Ltd"
    path = f"/v1/assessments/{assessment_id}/keys"
    record, response = client.call("POST", "/v1/assessments/<id>/keys", path, json=body)
    if ok(response):
        keys = response.json()["keys"]
        record.wrote = Write("issue", assessment_id, tuple(key["id"] for key in keys))
        client.known.add_keys(assessment_id, keys)


def revoke_key(client: LoadClient) -> None:
    picked = client.known.any_key(client.rng)
    if picked is None:
        return issue_keys(client)
    key_id, assessment_id, _ = picked
    path = f"/v1/assessments/{assessment_id}/keys/{key_id}"
    record, response = client.call("DELETE", "/v1/assessments/<id>/keys/<keyId>", path)
    if ok(response):
        record.wrote = Write("revoke", assessment_id, (key_id,))
    if ok(response) or (response is not None and response.status_code == 404):
        client.known.forget_key(key_id)


def delete_assessment(client: LoadClient) -> None:
    assessment_id = client.known.any_assessment(client.rng)
    if assessment_id is None:
        return create(client)
    record, response = client.call("DELETE", "/v1/assessments/<id>", f"/v1/assessments/{assessment_id}")
    if ok(response):
        record.wrote = Write("delete", assessment_id)
    if ok(response) or (response is not None and response.status_code == 404):
        client.known.forget_assessment(assessment_id)


def get_assessment(client: LoadClient) -> None:
    assessment_id = client.known.any_assessment(client.rng) or str(uuid.uuid4())
    client.call("GET", "/v1/assessments/<id>", f"/v1/assessments/{assessment_id}")


def list_assessments(client: LoadClient) -> None:
    limit = client.rng.randint(1, 100)
    client.call("GET", "/v1/assessments", f"/v1/assessments?limit={limit}")


def list_keys(client: LoadClient) -> None:
    assessment_id = client.known.any_assessment(client.rng) or str(uuid.uuid4())
    client.call("GET", "/v1/assessments/<id>/keys", f"/v1/assessments/{assessment_id}/keys")


def candidate_read(client: LoadClient) -> None:
    picked = client.known.any_key(client.rng)
    if picked is None:
        return get_assessment(client)
    _, assessment_id, key = picked
    client.call(
        "GET", "/v1/assessments/<id> (candidate)", f"/v1/assessments/{assessment_id}", as_candidate=key
    )


#: (weight, operation): writes and reads about evenly, more creates than deletes so that there
#: is always something to read, issue keys for and delete.
OPERATIONS: list[tuple[int, Callable[[LoadClient], None]]] = [
    (12, create),
    (8, create_idempotently),
    (14, issue_keys),
    (7, revoke_key),
    (7, delete_assessment),
    (16, get_assessment),
    (10, list_assessments),
    (8, list_keys),
    (12, candidate_read),
]


def pools_by_client(tokens: list[str]) -> list[Known]:
    """Clients share their organisation's pool, so deletes race key issuance and revokes."""
    pools = [Known(token) for token in tokens]
    return [pools[index % len(pools)] for index in range(CLIENT_THREADS)]


def issue_ids() -> list[str]:
    return [issue["id"] for issue in json.loads(ISSUES_FILE.read_text(encoding="utf-8"))]


# --- quiescence and evidence --------------------------------------------------------------------


def queue_depth(box: Sandbox, queue: str) -> int:
    """Messages ready in a queue (a worker's unacknowledged batch is not counted: quiescence asks
    for two quiet looks in a row, and a batch a killed worker held is ready again)."""
    connection = pika.BlockingConnection(pika.URLParameters(box.vhost_url))
    try:
        return connection.channel().queue_declare(queue=queue, passive=True).method.message_count
    finally:
        connection.close()


def pipeline_backlog(box: Sandbox) -> dict[str, int]:
    with psycopg.connect(libpq(box.database_url), autocommit=True) as conn:
        outbox = conn.execute("SELECT count(*) FROM outbox").fetchone()[0]
        pending = conn.execute("SELECT count(*) FROM projection_pending").fetchone()[0]
    return {
        "outbox": outbox,
        "projection_pending": pending,
        "worker queue": queue_depth(box, WORKER_QUEUE),
    }


def wait_for_quiescence(box: Sandbox) -> tuple[float | None, dict[str, int]]:
    """Seconds until the outbox, the pending projections and the worker's queue are empty twice
    in a row (a cascade appends after its delete is applied); None past the deadline."""
    started = time.monotonic()
    quiet_once = False
    backlog: dict[str, int] = {}
    while time.monotonic() - started < QUIESCENCE_TIMEOUT_SECONDS:
        try:
            backlog = pipeline_backlog(box)
        except (psycopg.Error, AMQPError) as error:
            backlog = {"error": repr(error)}  # type: ignore[dict-item]
        quiet = not any(backlog.values())
        if quiet and quiet_once:
            return time.monotonic() - started, backlog
        quiet_once = quiet
        time.sleep(1.0)
    return None, backlog


@dataclass(frozen=True)
class StoredRow:
    event_id: str
    stream_id: str
    type: str
    key_id: str | None
    correlation_id: str | None


def read_store(box: Sandbox) -> list[StoredRow]:
    query = (
        "SELECT event_id::text, stream_id::text, type, data->>'keyId', metadata->>'correlationId' "
        "FROM events ORDER BY position"
    )
    with psycopg.connect(libpq(box.database_url), autocommit=True) as conn:
        return [StoredRow(*row) for row in conn.execute(query)]


def read_audit_queue(box: Sandbox) -> list[str]:
    """The message ids of everything the relays published (duplicates included)."""
    connection = pika.BlockingConnection(pika.URLParameters(box.vhost_url))
    ids = []
    try:
        channel = connection.channel()
        expected = channel.queue_declare(queue=AUDIT_QUEUE, passive=True).method.message_count
        for method, properties, _ in channel.consume(AUDIT_QUEUE, auto_ack=True, inactivity_timeout=2):
            if method is None:
                break
            ids.append(properties.message_id)
            if len(ids) >= expected:
                break
        channel.cancel()
    finally:
        connection.close()
    return ids


def rebuild_projections(box: Sandbox, dry_run: bool) -> tuple[dict[str, int], str | None]:
    """What `assessments projections rebuild --all [--dry-run]` does, in this process and on one
    core (a fresh interpreter costs seconds on a busy machine): per table, the rows only in the
    rebuilt or only in the live view (dry runs); and the error, if it failed."""
    from events.sql.engine import make_engine
    from projections import default_projections
    from projections.rebuild import rebuild

    engine = make_engine(box.database_url, pool_size=2)
    try:
        report = rebuild(engine, default_projections(), dry_run=dry_run, workers=1)
    except Exception as error:
        return {}, repr(error)
    finally:
        engine.dispose()
    return {table: sum(counts.values()) for table, counts in report.differences.items()}, None


@dataclass
class DryRun:
    differences: dict[str, int]  # table -> rows in one of the two views only
    error: str | None


def dry_run_rebuild(box: Sandbox) -> DryRun:
    return DryRun(*rebuild_projections(box, dry_run=True))


def projection_tables() -> list[str]:
    from projections import default_projections

    return [table.name for projection in default_projections() for table in projection.tables]


def snapshot_projections(box: Sandbox) -> Counter:
    """Every row of every projection table, as (table, row as JSON)."""
    rows: Counter = Counter()
    with psycopg.connect(libpq(box.database_url), autocommit=True) as conn:
        for table in projection_tables():
            for (row,) in conn.execute(f'SELECT to_jsonb(t)::text FROM "{table}" t'):
                rows[(table, row)] += 1
    return rows


@dataclass
class RebuildComparison:
    differing: list[tuple[str, str]]  # (table, row) in one snapshot only
    error: str | None


def rebuild_and_compare(box: Sandbox) -> RebuildComparison:
    before = snapshot_projections(box)
    _, error = rebuild_projections(box, dry_run=False)
    after = snapshot_projections(box)
    return RebuildComparison(list(((before - after) + (after - before)).elements()), error)


@dataclass
class Evidence:
    requests: list[RequestRecord]
    windows: list[FaultWindow]
    exits: list[ProcessExit]
    unclean_stops: list[str]
    idempotency: dict[str, list[str]]
    quiescent_after: float | None = None
    backlog: dict[str, int] = field(default_factory=dict)
    store: list[StoredRow] = field(default_factory=list)
    published: list[str] = field(default_factory=list)
    dead_letters: int = 0
    dry_run: DryRun | None = None
    rebuild: RebuildComparison | None = None


def gather(box: Sandbox, evidence: Evidence) -> None:
    evidence.store = read_store(box)
    evidence.published = read_audit_queue(box)
    evidence.dead_letters = queue_depth(box, DEAD_LETTER_QUEUE)
    evidence.dry_run = dry_run_rebuild(box)
    evidence.rebuild = rebuild_and_compare(box)


# --- checks ---------------------------------------------------------------------------------------

EXAMPLES = 5


def check(name: str, problems: list[str], count: int | None = None) -> Check:
    return Check(name, len(problems) if count is None else count, problems[:EXAMPLES])


def acknowledged_writes(evidence: Evidence) -> list[RequestRecord]:
    return [r for r in evidence.requests if r.wrote is not None]


#: The write an event records, as `Write.kind` names it.
KIND_OF_EVENT = {
    "AssessmentCreated": "create",
    "AssessmentDeleted": "delete",
    "CandidateKeyIssued": "issue",
    "CandidateKeyRevoked": "revoke",
}


def facts_of(write: Write) -> list[tuple[str, str, str | None]]:
    """(kind, assessment id, key id) of each event the write must have appended."""
    return [(write.kind, write.assessment_id, key_id) for key_id in write.key_ids] or [
        (write.kind, write.assessment_id, None)
    ]


def lost_writes(evidence: Evidence) -> Check:
    """Every 2xx write is in the event store."""
    recorded = {(KIND_OF_EVENT[e.type], e.stream_id, e.key_id) for e in evidence.store}
    problems = [
        f"{kind} {assessment_id} {key_id or ''}: {record.describe()}"
        for record in acknowledged_writes(evidence)
        for kind, assessment_id, key_id in facts_of(record.wrote)
        if (kind, assessment_id, key_id) not in recorded
    ]
    return check("acknowledged writes lost", problems)


def never_published(evidence: Evidence) -> Check:
    """Every event id of the store is a message id in the audit queue."""
    published = set(evidence.published)
    problems = [
        f"{e.type} {e.event_id} (stream {e.stream_id})" for e in evidence.store if e.event_id not in published
    ]
    return check("events in the store never published", problems)


def projections_differ(evidence: Evidence) -> Check:
    """`projections rebuild --all --dry-run`: the live views against a fold of the store."""
    dry = evidence.dry_run
    problems = [f"{table}: {count} rows" for table, count in dry.differences.items()]
    if dry.error:
        problems.append(f"the dry run failed: {dry.error}")
    return check(
        "projection rows differing from a fold of the store",
        problems,
        sum(dry.differences.values()) or len(problems),
    )


def applied_twice(evidence: Evidence) -> Check:
    """An event recorded twice for one fact, counted as each extra event:
    - a stream with more than one AssessmentCreated or more than one AssessmentDeleted;
    - a key with more than one CandidateKeyIssued or more than one CandidateKeyRevoked (say a
      reviewer's revoke and the cascade's, or the cascade run twice);
    - an Idempotency-Key whose requests (every attempt, each with its own X-Request-Id, which
      the events carry as their correlation id) appended more than one AssessmentCreated;
    - an Idempotency-Key whose 2xx answers named more than one assessment."""
    facts = Counter()
    for e in evidence.store:
        subject = e.key_id if e.type.startswith("CandidateKey") else e.stream_id
        facts[(e.type, subject)] += 1
    problems = [f"{type_} {subject} x{n}" for (type_, subject), n in facts.items() for _ in range(n - 1)]
    creates_by_request = Counter(e.correlation_id for e in evidence.store if e.type == "AssessmentCreated")
    answers: dict[str, set[str]] = defaultdict(set)
    for record in acknowledged_writes(evidence):
        if record.wrote.idempotency_key:
            answers[record.wrote.idempotency_key].add(record.wrote.assessment_id)
    for key, request_ids in evidence.idempotency.items():
        appended = sum(creates_by_request[rid] for rid in request_ids)
        problems += [f"Idempotency-Key {key}: {appended} AssessmentCreated"] * max(0, appended - 1)
        problems += [f"Idempotency-Key {key} answered {sorted(answers[key])}"] * max(0, len(answers[key]) - 1)
    return check("events applied twice", problems)


def deleted_keys_not_revoked_once(evidence: Evidence) -> Check:
    """Every key of a deleted assessment has exactly one CandidateKeyRevoked."""
    deleted = {e.stream_id for e in evidence.store if e.type == "AssessmentDeleted"}
    revocations = Counter(e.key_id for e in evidence.store if e.type == "CandidateKeyRevoked")
    problems = [
        f"key {e.key_id} of {e.stream_id}: revoked {revocations[e.key_id]} times"
        for e in evidence.store
        if e.type == "CandidateKeyIssued" and e.stream_id in deleted and revocations[e.key_id] != 1
    ]
    return check("keys of deleted assessments not revoked exactly once", problems)


def dead_letters(evidence: Evidence) -> Check:
    problems = (
        [f"{DEAD_LETTER_QUEUE} holds {evidence.dead_letters} messages"] if evidence.dead_letters else []
    )
    return check("dead letters", problems, evidence.dead_letters)


def in_window(evidence: Evidence, started: float, ended: float) -> FaultWindow | None:
    """The fault a request over [started, ended] met (None: none, not even in its grace)."""
    windows = evidence.windows
    return (
        latest([w for w in windows if w.covers(started, started, grace=0)])
        or earliest([w for w in windows if w.covers(started, ended, grace=0)])
        or latest([w for w in windows if w.covers(started, ended)])
    )


def latest(windows: list[FaultWindow]) -> FaultWindow | None:
    return max(windows, key=lambda w: w.started, default=None)


def earliest(windows: list[FaultWindow]) -> FaultWindow | None:
    return min(windows, key=lambda w: w.started, default=None)


def during(evidence: Evidence, moment: float) -> str:
    """The faults going on at a moment (with their grace), or the last one before it: a process
    may die of a fault some time after it, when it next uses the connection."""
    names = [w.describe() for w in evidence.windows if w.covers(moment, moment)]
    if names:
        return f" during {' and '.join(names)}"
    before = latest([w for w in evidence.windows if w.started <= moment])
    return f" after {before.describe()}" if before else ""


def with_window(evidence: Evidence, record: RequestRecord) -> str:
    window = in_window(evidence, record.started, record.ended)
    return record.describe() + (f" during {window.describe()}" if window else " outside any fault")


def by_window(evidence: Evidence, records: list[RequestRecord]) -> list[str]:
    """How many of these requests overlapped each kind of fault (or none)."""
    counts = Counter()
    for record in records:
        window = in_window(evidence, record.started, record.ended)
        counts[f"during {window.name}" if window else "outside any fault"] += 1
    return [f"{n} {where}" for where, n in counts.most_common()]


def internal_errors(evidence: Evidence) -> Check:
    failed = [r for r in evidence.requests if r.status == 500]
    examples = by_window(evidence, failed) + [with_window(evidence, r) for r in failed[:3]]
    return Check("500 responses", len(failed), examples)


def errors_outside_windows(evidence: Evidence) -> Check:
    problems = [
        r.describe()
        for r in evidence.requests
        if r.status is not None and r.status >= 500 and in_window(evidence, r.started, r.ended) is None
    ]
    return check(f"5xx outside fault windows (+{FAULT_GRACE_SECONDS:.0f} s)", problems)


def slow_requests(evidence: Evidence) -> Check:
    problems = [with_window(evidence, r) for r in evidence.requests if r.duration > REQUEST_BOUND_SECONDS]
    return check(f"requests slower than {REQUEST_BOUND_SECONDS:.0f} s", problems)


def unanswered(evidence: Evidence) -> Check:
    """A connection error or a client timeout: the API owes every request an answer."""
    problems = [with_window(evidence, r) for r in evidence.requests if r.status is None]
    return check("requests without an answer", problems)


def unavailable_without_retry_after(evidence: Evidence) -> Check:
    problems = [r.describe() for r in evidence.requests if r.status == 503 and not r.retry_after]
    return check("503 without Retry-After", problems)


def unexpected_exits(evidence: Evidence) -> Check:
    problems = []
    for exit_ in evidence.exits:
        problems.append(
            f"{exit_.process} exit {exit_.returncode} at {exit_.at:.1f}s{during(evidence, exit_.at)}: "
            f"{exit_.last_words}"
        )
    return check("unexpected exits of a relay, worker or the API", problems)


def unclean_stops(evidence: Evidence) -> Check:
    return check("processes not stopping cleanly on SIGTERM", evidence.unclean_stops)


def rebuild_differs(evidence: Evidence) -> Check:
    """`projections rebuild --all` (for real) leaves every projection row as it was."""
    rebuilt = evidence.rebuild
    problems = [f"{table}: {row[:200]}" for table, row in rebuilt.differing]
    if rebuilt.error:
        problems.insert(0, f"the rebuild failed: {rebuilt.error}")
    return check("rows changed by a real rebuild", problems)


def not_quiescent(evidence: Evidence) -> Check:
    problems = (
        []
        if evidence.quiescent_after is not None
        else [f"backlog after {QUIESCENCE_TIMEOUT_SECONDS:.0f} s: {evidence.backlog}"]
    )
    return check("pipeline not drained in time", problems)


def faults_not_injected(evidence: Evidence) -> Check:
    """The harness's own failures: a fault it could not inject or undo proves nothing."""
    return check(
        "faults the harness failed to inject", [f"{w.name}: {w.failed}" for w in evidence.windows if w.failed]
    )


CHECKS: tuple[Callable[[Evidence], Check], ...] = (
    lost_writes,
    never_published,
    projections_differ,
    applied_twice,
    deleted_keys_not_revoked_once,
    dead_letters,
    internal_errors,
    errors_outside_windows,
    slow_requests,
    unanswered,
    unavailable_without_retry_after,
    unexpected_exits,
    unclean_stops,
    rebuild_differs,
    not_quiescent,
    faults_not_injected,
)


# --- report ---------------------------------------------------------------------------------------


def print_load(evidence: Evidence) -> None:
    by_route: dict[tuple[str, str], Counter] = defaultdict(Counter)
    for record in evidence.requests:
        by_route[(record.method, record.route)][record.status if record.status is not None else "none"] += 1
    writes = Counter(r.wrote.kind for r in acknowledged_writes(evidence))
    print(f"\nload: {len(evidence.requests)} requests; acknowledged writes: {dict(writes)}")
    for (method, route), statuses in sorted(by_route.items()):
        detail = ", ".join(f"{status}: {n}" for status, n in sorted(statuses.items(), key=str))
        print(f"  {method:6} {route:40} {detail}")
    print(f"store: {len(evidence.store)} events; audit queue: {len(evidence.published)} messages")


def print_faults(evidence: Evidence) -> None:
    print("\nfaults:")
    for window in evidence.windows:
        print(
            f"  {window.describe():45} {window.detail}{'  FAILED ' + window.failed if window.failed else ''}"
        )
    drained = f"{evidence.quiescent_after:.1f} s" if evidence.quiescent_after is not None else "never"
    print(f"pipeline drained {drained} after the load")


def print_table(checks: list[Check]) -> None:
    width = max(len(c.name) for c in checks)
    print(f"\n{'check':{width}}  {'count':>6}  result")
    for c in checks:
        print(f"{c.name:{width}}  {c.count:>6}  {'ok' if c.count == 0 else 'VIOLATED'}")
    for c in checks:
        if c.count:
            print(f"\n{c.name} ({c.count}), e.g.:")
            for example in c.examples:
                print(f"  {example}")


def print_api_errors(log_path: Path) -> None:
    """The exceptions the API logged (those behind its 500s among them), with the place in the
    project's code they came through; the full tracebacks are in its log (--logs)."""
    if not log_path.exists():
        return
    causes: Counter = Counter()
    for line in log_path.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith("{") and '"exception"' in line:
            with contextlib.suppress(ValueError):
                causes[exception_summary(json.loads(line)["exception"])] += 1
    if causes:
        print("\nexceptions in the API's log:")
        for cause, count in causes.most_common(8):
            print(f"  {count:5}  {cause}")


# --- the run ----------------------------------------------------------------------------------------


def preflight() -> None:
    missing = []
    if not netfilter.available():
        missing.append("the nft command (apt-get install nftables)")
    if os.geteuid() != 0:
        missing.append("root (nftables)")
    if not shutil.which("rabbitmqctl"):
        missing.append("rabbitmqctl on this machine (the broker's vhost and connections)")
    if missing:
        sys.exit(f"bench/chaos.py needs {', '.join(missing)}")


def run_load(
    api_url: str,
    tokens: list[str],
    seed: int,
    clock: Clock,
    duration: float,
    injector: Injector,
    evidence: Evidence,
) -> None:
    """The load runs for `duration`, and past it until the last fault is over plus the cool-down
    (a fault may take longer than planned: rabbitmqctl alone takes seconds)."""
    stop = threading.Event()
    ids = issue_ids()
    clients = [
        LoadClient(n, api_url, known, ids, seed, clock, stop, evidence.requests, evidence.idempotency)
        for n, known in enumerate(pools_by_client(tokens))
    ]
    try:
        for client in clients:
            client.start()
        injector.start()
        last_fault_ended = injector.finish()
        time.sleep(max(0.0, max(duration, last_fault_ended + COOL_DOWN_SECONDS) - clock.now()))
    finally:
        stop.set()  # interrupted, the clients are left to end with the processes (daemon threads)
    for client in clients:
        client.join()


@dataclass
class Service:
    box: Sandbox
    tokens: list[str]
    api_url: str
    supervisor: Supervisor
    database_proxy: TcpProxy
    broker_proxy: TcpProxy


def start_service(stack: contextlib.ExitStack, args: argparse.Namespace, logs: Path, clock: Clock) -> Service:
    """The sandbox, the proxies and the processes, each undone by `stack` on the way out."""
    box = stack.enter_context(sandbox(args.postgres, args.broker, args.keep))
    tokens = prepare_database(box)
    bind_audit_queue(box)
    database_proxy = stack.enter_context(proxy_to(box.database_url, 5432))
    broker_proxy = stack.enter_context(proxy_to(box.vhost_url, 5672))
    api_port = free_port()
    processes = service_processes(
        database_proxy.url_for(box.database_url), broker_proxy.url_for(box.vhost_url), api_port, logs
    )
    supervisor = Supervisor(processes, clock)
    stack.callback(supervisor.stop)
    supervisor.start()
    api_url = f"http://127.0.0.1:{api_port}"
    wait_until_ready(api_url)
    return Service(box, tokens, api_url, supervisor, database_proxy, broker_proxy)


def report(evidence: Evidence, logs: Path) -> int:
    checks = [run_check(evidence) for run_check in CHECKS]
    print_load(evidence)
    print_faults(evidence)
    print_table(checks)
    print_api_errors(logs / "api.log")
    violated = [c.name for c in checks if c.count]
    print(f"\n{'VIOLATED: ' + '; '.join(violated) if violated else 'all checks passed'}")
    return 1 if violated else 0


def chaos(args: argparse.Namespace, logs: Path) -> int:
    rng = random.Random(args.seed)
    plan = plan_faults(args.duration, rng)
    print(f"seed {args.seed}, {args.duration:.0f} s of load, {len(plan)} faults:", flush=True)
    for planned in plan:
        print(f"  {planned.at:6.1f}s  {planned.fault.name}")
    began = time.monotonic()
    with contextlib.ExitStack() as stack:
        clock = Clock()
        service = start_service(stack, args, logs, clock)
        box = service.box
        print(
            f"database {box.database}, vhost {box.vhost}, API {service.api_url}, logs {logs}; "
            f"ready in {time.monotonic() - began:.1f} s",
            flush=True,
        )
        clock.origin = time.monotonic()
        evidence = Evidence([], [], service.supervisor.exits, service.supervisor.unclean_stops, {})
        rig = Rig(box, service.supervisor, service.database_proxy, service.broker_proxy, rng)
        injector = Injector(rig, plan, clock)
        evidence.windows = injector.windows
        stack.callback(injector.stop)
        run_load(service.api_url, service.tokens, args.seed, clock, args.duration, injector, evidence)
        print(f"load done at {clock.now():.1f} s; waiting for the pipeline to drain", flush=True)
        evidence.quiescent_after, evidence.backlog = wait_for_quiescence(box)
        gathering = time.monotonic()
        gather(box, evidence)
        stopping = time.monotonic()
        service.supervisor.stop()
        code = report(evidence, logs)
        print(
            f"checks' evidence (store, audit queue, dry run, rebuild) in {stopping - gathering:.1f} s, "
            f"processes stopped in {time.monotonic() - stopping:.1f} s"
        )
    print(f"whole run {time.monotonic() - began:.0f} s (seed {args.seed})")
    return code


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=120.0, help="seconds of load (default 120)")
    parser.add_argument(
        "--seed", type=int, default=None, help="draws the fault times and the load (default: random)"
    )
    parser.add_argument("--keep", action="store_true", help="leave the database and the vhost for inspection")
    parser.add_argument("--logs", type=Path, help="keep the processes' logs in this directory")
    parser.add_argument(
        "--postgres", default=SERVER, help="a maintenance database URL of the PostgreSQL server"
    )
    parser.add_argument(
        "--broker", default=BROKER, help="the RabbitMQ server's URL (the vhost is the run's own)"
    )
    args = parser.parse_args()
    if args.seed is None:
        args.seed = random.randrange(10**6)
    if args.duration < least_duration():
        parser.error(f"--duration must be at least {least_duration():.0f} s, to fit every fault once")
    return args


def interrupt(*_) -> None:
    """SIGTERM (a CI timeout, `kill`) cleans up like Ctrl-C."""
    raise KeyboardInterrupt


def main() -> int:
    args = parse_args()
    preflight()
    signal.signal(signal.SIGTERM, interrupt)
    with contextlib.ExitStack() as stack:
        if args.logs:
            args.logs.mkdir(parents=True, exist_ok=True)
            logs = args.logs
        else:
            logs = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="chaos-logs-")))
        try:
            return chaos(args, logs)
        except KeyboardInterrupt:
            print("interrupted; cleaning up", file=sys.stderr)
            return 130


if __name__ == "__main__":
    sys.exit(main())
