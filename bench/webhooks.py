"""Benchmark of the webhooks dispatcher on the local services; prints figures, asserts nothing.

    .venv/bin/python bench/webhooks.py [--events 2000] [--endpoints 2]

Fills a fresh database with `--events` events (assessments created through the service) for
an organisation with `--endpoints` endpoints that subscribe to everything, all pointing at a
receiver on 127.0.0.1 (a threaded http.server in this process that answers 200). Then it starts
`assessments webhooks` as a process of its own and, once it is idle, `assessments relay`, which
publishes the backlog at once; it measures deliveries per second (first to last receipt) and
the dispatcher process's CPU (user + system, from /proc) per delivery while it worked.
Nothing is sent anywhere but 127.0.0.1. It uses a database and broker names of its own and
removes them afterwards.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pika
import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cli import bootstrap  # noqa: E402
from events.aggregate import AssessmentDetails  # noqa: E402
from events.model import Metadata  # noqa: E402
from events.runtime.settings import Settings  # noqa: E402
from events.sql import tenancy  # noqa: E402
from events.sql.engine import make_engine  # noqa: E402

SERVER = os.environ.get("BENCH_POSTGRES", "postgresql+psycopg://root@127.0.0.1:5432/postgres")
BROKER = os.environ.get("BENCH_BROKER", "amqp://guest:guest@127.0.0.1:5672/%2F")
TICKS = os.sysconf("SC_CLK_TCK")


class Counter:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.count = 0
        self.first = 0.0
        self.last = 0.0

    def hit(self) -> None:
        now = time.monotonic()
        with self.lock:
            self.count += 1
            self.first = self.first or now
            self.last = now


def receiver(counter: Counter) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            counter.hit()
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def admin(sql: str) -> None:
    with psycopg.connect(SERVER.replace("+psycopg", ""), autocommit=True) as conn:
        conn.execute(sql)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--endpoints", type=int, default=2)
    args = parser.parse_args()
    run = uuid.uuid4().hex[:8]
    name = f"assessments_bench_webhooks_{run}"
    url = SERVER.rsplit("/", 1)[0] + f"/{name}"
    settings = Settings(
        database_url=url,
        broker_url=BROKER,
        exchange=f"bench-{run}.events",
        worker_queue=f"bench-{run}.worker",
        webhooks_queue=f"bench-{run}.webhooks",
        webhooks_allow_private=True,
    )
    counter = Counter()
    server = receiver(counter)
    admin(f'CREATE DATABASE "{name}"')
    processes: list[subprocess.Popen] = []
    try:
        from cli.migrate import upgrade

        upgrade(url)
        engine = make_engine(url, pool_size=2)
        org = tenancy.create_organisation(engine, "Bench")
        metadata = Metadata(org.org_id, "bench")
        hooks = bootstrap.webhook_service(settings, engine)
        for n in range(args.endpoints):
            hooks.register(
                org.org_id, f"http://127.0.0.1:{server.server_port}/hook/{n}", ["#"], None, metadata
            )
        service = bootstrap.assessment_service(engine)
        details = AssessmentDetails(title="Backend take-home", role="Engineer", task_brief="Build it.")
        for _ in range(args.events):
            service.create(org.org_id, details, metadata)
        engine.dispose()
        expected = args.events * args.endpoints
        print(f"{args.events:,} events x {args.endpoints} endpoint(s) = {expected:,} deliveries", flush=True)

        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "ASSESSMENTS_DATABASE_URL": url,
            "ASSESSMENTS_BROKER_URL": BROKER,
            "ASSESSMENTS_EXCHANGE": settings.exchange,
            "ASSESSMENTS_WORKER_QUEUE": settings.worker_queue,
            "ASSESSMENTS_WEBHOOKS_QUEUE": settings.webhooks_queue,
            "ASSESSMENTS_WEBHOOKS_ALLOW_PRIVATE": "true",
            "ASSESSMENTS_LOG_LEVEL": "WARNING",
        }
        dispatcher = subprocess.Popen([sys.executable, "-m", "cli", "webhooks"], env=env, cwd=ROOT)
        processes.append(dispatcher)
        time.sleep(4)  # started, queue declared, idle: its start-up is not what we measure
        before = cpu_seconds(dispatcher.pid)
        processes.append(subprocess.Popen([sys.executable, "-m", "cli", "relay"], env=env, cwd=ROOT))
        deadline = time.monotonic() + 600
        while counter.count < expected and time.monotonic() < deadline:
            time.sleep(0.05)
        spent = cpu_seconds(dispatcher.pid) - before
        seconds = counter.last - counter.first
        print(f"delivered {counter.count:,} in {seconds:.1f}s = {counter.count / seconds:,.0f} deliveries/s")
        print(
            f"dispatcher CPU: {spent:.2f}s = {spent / max(counter.count, 1) * 1000:.2f} ms per delivery "
            f"(recording the deliveries included)"
        )
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
        server.shutdown()
        connection = pika.BlockingConnection(pika.URLParameters(BROKER))
        channel = connection.channel()
        for queue in (settings.worker_queue, settings.webhooks_queue):
            channel.queue_delete(queue)
            channel.queue_delete(f"{queue}.dead")
        channel.exchange_delete(settings.exchange)
        connection.close()
        admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
