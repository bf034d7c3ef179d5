"""Benchmark of the core on the local services; prints figures, asserts nothing.

    .venv/bin/python bench/core.py [--seconds 10] [--connections 16] [--api-workers 2]

Measures, in one run and on the same machine:
1. appends per second through the event store (one event per transaction);
2. HTTP creates per second through the API (gunicorn) while the relay and the worker run,
   against a baseline: a plain Flask app doing one INSERT per request, under the same gunicorn
   settings and the same load (wrk, or a Python client when wrk is missing);
3. the time from a `201 Created` to the row being in the projection (p50/p99), sampled while
   the create load runs.

It uses a database and broker names of its own and removes them afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
from sqlalchemy import text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from api import auth  # noqa: E402
from events.aggregate import AssessmentDetails  # noqa: E402
from events.db import make_engine  # noqa: E402
from events.model import Metadata  # noqa: E402
from events.service import AssessmentService  # noqa: E402
from events.store import PostgresEventStore  # noqa: E402

SERVER = os.environ.get("BENCH_POSTGRES", "postgresql+psycopg://root@127.0.0.1:5432/postgres")
BROKER = os.environ.get("BENCH_BROKER", "amqp://guest:guest@127.0.0.1:5672/%2F")
BODY = {"title": "Backend take-home", "role": "Senior Backend Engineer", "taskBrief": "Build it."}

WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = [[%s]]
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer %s"
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def admin(sql: str) -> None:
    engine = make_engine(SERVER, pool_size=1).execution_options(isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(sql))
    engine.dispose()


def wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            requests.get(url, timeout=1)
            return
        except requests.ConnectionError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer")


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


# --- 1. appends through the store -------------------------------------------------------


def bench_appends(database_url: str, seconds: float) -> float:
    engine = make_engine(database_url, pool_size=2)
    service = AssessmentService(PostgresEventStore(engine))
    details = AssessmentDetails(title="t", role="r", task_brief="b")
    metadata = Metadata(org_id="bench", actor="bench")
    count, deadline = 0, time.monotonic() + seconds
    started = time.monotonic()
    while time.monotonic() < deadline:
        service.create("bench", details, metadata)
        count += 1
    rate = count / (time.monotonic() - started)
    engine.dispose()
    return rate


# --- 2. HTTP load ---------------------------------------------------------------------------


def load(url: str, token: str, seconds: float, connections: int) -> float:
    """Creates per second under `connections` concurrent clients."""
    if shutil.which("wrk"):
        with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
            script.write(WRK_SCRIPT % (json.dumps(BODY), token))
        out = subprocess.run(
            ["wrk", "-t2", f"-c{connections}", f"-d{int(seconds)}s", "-s", script.name, url],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        os.unlink(script.name)
        non2xx = [line for line in out.splitlines() if "Non-2xx" in line]
        if non2xx:
            raise RuntimeError(f"errors under load: {non2xx}")
        return float(next(line.split()[1] for line in out.splitlines() if line.startswith("Requests/sec")))
    return python_load(url, token, seconds, connections)


def python_load(url: str, token: str, seconds: float, connections: int) -> float:
    deadline = time.monotonic() + seconds
    headers = {"Authorization": f"Bearer {token}"}

    def client() -> int:
        done = 0
        with requests.Session() as session:
            while time.monotonic() < deadline:
                session.post(url, json=BODY, headers=headers, timeout=10).raise_for_status()
                done += 1
        return done

    with ThreadPoolExecutor(connections) as pool:
        total = sum(pool.map(lambda _: client(), range(connections)))
    return total / seconds


def paced_load(url: str, token: str, rate: float, seconds: float, threads: int = 8) -> float:
    """Creates at a steady `rate` per second (not flat out): how the system behaves below
    saturation. Returns the rate achieved."""
    headers = {"Authorization": f"Bearer {token}"}
    started = time.monotonic()
    total = int(rate * seconds)

    def client(offset: int) -> int:
        done = 0
        with requests.Session() as session:
            for n in range(offset, total, threads):
                delay = started + n / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                session.post(url, json=BODY, headers=headers, timeout=10).raise_for_status()
                done += 1
        return done

    with ThreadPoolExecutor(threads) as pool:
        sent = sum(pool.map(client, range(threads)))
    return sent / (time.monotonic() - started)


def measure_latency(url: str, token: str, database_url: str, make_load) -> tuple[float, list[float]]:
    """Run a load while sampling 201 -> projected; (creates per second, samples in ms)."""
    stop, samples = threading.Event(), []
    sampler = threading.Thread(
        target=sample_create_to_projected, args=(url, token, database_url, stop, samples)
    )
    sampler.start()
    monitor = threading.Thread(target=watch_backlog, args=(database_url, stop), daemon=True)
    monitor.start()
    try:
        rate = make_load()
    finally:
        stop.set()
        sampler.join()
    return rate, samples


def describe(samples: list[float]) -> str:
    return (
        f"p50 {percentile(samples, 50):.1f} ms, p99 {percentile(samples, 99):.1f} ms, "
        f"max {max(samples):.1f} ms (n={len(samples)})"
    )


def sample_create_to_projected(
    url: str, token: str, database_url: str, stop: threading.Event, samples: list[float]
) -> None:
    """POST, then poll the projection for the new row; the gap is what a reader could see."""
    engine = make_engine(database_url, pool_size=1)
    headers = {"Authorization": f"Bearer {token}"}
    with requests.Session() as session, engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT")
        while not stop.is_set():
            response = session.post(url, json=BODY, headers=headers, timeout=10)
            created_at = time.perf_counter()
            assessment_id = response.json()["assessment"]["id"]
            while not conn.scalar(
                text("SELECT 1 FROM assessments_view WHERE id = :id"), {"id": assessment_id}
            ):
                time.sleep(0.0005)
            samples.append((time.perf_counter() - created_at) * 1000)
            time.sleep(0.02)
    engine.dispose()


def watch_backlog(database_url: str, stop: threading.Event) -> None:
    """With BENCH_VERBOSE=1: the outbox and pending counts every second, to see who lags."""
    if not os.environ.get("BENCH_VERBOSE"):
        return
    engine = make_engine(database_url, pool_size=1)
    while not stop.wait(1.0):
        with engine.connect() as conn:
            outbox = conn.scalar(text("SELECT count(*) FROM outbox"))
            pending = conn.scalar(text("SELECT count(*) FROM projection_pending"))
        print(f"  outbox {outbox}, pending projection {pending}", flush=True)
    engine.dispose()


# --- processes ------------------------------------------------------------------------------


class Processes:
    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.children: list[subprocess.Popen] = []

    def start(self, *args: str) -> None:
        self.children.append(
            subprocess.Popen(
                [sys.executable, "-m", *args],
                cwd=ROOT,
                env=self.env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )

    def stop(self) -> None:
        for child in self.children:
            child.send_signal(signal.SIGTERM)
        for child in self.children:
            try:
                child.wait(30)
            except subprocess.TimeoutExpired:
                child.kill()
        self.children.clear()


def with_database(name: str, body: Callable[[str], None]) -> None:
    admin(f'CREATE DATABASE "{name}"')
    try:
        body(SERVER.rsplit("/", 1)[0] + f"/{name}")
    finally:
        admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def appends(database_url: str, seconds: float) -> None:
    """In a database of its own: its events are never published, and must not become a
    backlog for the HTTP part."""
    from cli.migrate import upgrade

    upgrade(database_url)
    rate = bench_appends(database_url, seconds)
    print(f"store appends: {rate:.0f}/s (one event per transaction, one thread)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--api-workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--paced",
        type=float,
        nargs="*",
        default=[0.25, 0.5],
        help="also run steady loads at these fractions of the baseline's rate",
    )
    args = parser.parse_args()
    run_id = uuid.uuid4().hex[:8]
    results: dict[str, float] = {}

    def run(database_url: str) -> None:
        from cli.migrate import upgrade

        upgrade(database_url)

        engine = make_engine(database_url, pool_size=1)
        token = auth.create_organisation(engine, "bench").token
        with engine.begin() as conn:
            conn.execute(
                text("CREATE TABLE baseline (id uuid PRIMARY KEY, body jsonb, created_at timestamptz)")
            )
        engine.dispose()

        env = {
            **os.environ,
            "ASSESSMENTS_DATABASE_URL": database_url,
            "ASSESSMENTS_BROKER_URL": BROKER,
            "ASSESSMENTS_EXCHANGE": f"bench-{run_id}.events",
            "ASSESSMENTS_WORKER_QUEUE": f"bench-{run_id}.worker",
            "ASSESSMENTS_API_WORKERS": str(args.api_workers),
            "ASSESSMENTS_LOG_LEVEL": "WARNING",
            "BENCH_DATABASE_URL": database_url,
        }
        # Baseline: the same gunicorn settings around a one-INSERT Flask app. Both servers stay
        # up and are measured in turns, so a slow spell of the machine (fsync times vary a lot
        # here) hits both alike; the ratio is the median of the rounds' ratios.
        base_port, port = free_port(), free_port()
        baseline = Processes({**env, "PYTHONPATH": str(ROOT)})
        baseline.start("bench.baseline_app", f"127.0.0.1:{base_port}", str(args.api_workers))
        service = Processes({**env, "ASSESSMENTS_BIND": f"127.0.0.1:{port}"})
        for command in ("api", "relay", "worker"):
            service.start("cli", command)
        base_url = f"http://127.0.0.1:{base_port}/v1/assessments"
        url = f"http://127.0.0.1:{port}/v1/assessments"
        wait_http(f"http://127.0.0.1:{base_port}/")
        wait_http(f"http://127.0.0.1:{port}/healthz")
        try:
            load(base_url, token, 2, args.connections)  # warm-up
            load(url, token, 2, args.connections)
            ratios, all_samples = [], []
            for round_number in range(1, args.rounds + 1):
                base_rate = load(base_url, token, args.seconds, args.connections)
                rate, samples = measure_latency(
                    url, token, database_url, lambda: load(url, token, args.seconds, args.connections)
                )
                ratios.append(rate / base_rate)
                all_samples += samples
                print(
                    f"round {round_number}: baseline (Flask + one INSERT) {base_rate:.0f}/s, "
                    f"API flat out (relay + worker running) {rate:.0f}/s = {rate / base_rate:.2f}x; "
                    f"201 -> projected {describe(samples)}",
                    flush=True,
                )
                results["baseline_per_s"] = base_rate
            print(
                f"API / baseline, median of {args.rounds} rounds: {statistics.median(ratios):.2f}x; "
                f"201 -> projected flat out, all rounds: {describe(all_samples)}",
                flush=True,
            )
            for share in args.paced:
                target = share * results["baseline_per_s"]
                achieved, samples = measure_latency(
                    url, token, database_url, lambda t=target: paced_load(url, token, t, args.seconds)
                )
                print(
                    f"paced at {share:.2f}x baseline ({target:.0f}/s, achieved {achieved:.0f}/s): "
                    f"201 -> projected {describe(samples)}",
                    flush=True,
                )
        finally:
            service.stop()
            baseline.stop()

    try:
        with_database(f"assessments_bench_{run_id}_store", lambda url: appends(url, args.seconds))
        with_database(f"assessments_bench_{run_id}", run)
    finally:
        delete_broker_names(run_id)


def delete_broker_names(run_id: str) -> None:
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(BROKER))
    channel = connection.channel()
    for queue in (f"bench-{run_id}.worker", f"bench-{run_id}.worker.dead"):
        channel.queue_delete(queue)
    channel.exchange_delete(f"bench-{run_id}.events")
    connection.close()


if __name__ == "__main__":
    main()
