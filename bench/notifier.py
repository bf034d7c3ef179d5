"""Benchmark of `assessments notifier`: invitations per second to a local SMTP server, and the
notifier's CPU per mail. Prints figures, asserts nothing.

    .venv/bin/python bench/notifier.py [--keys 1000] [--per-assessment 10]

On a database and broker names of its own (removed at the end): issues `--keys` candidate keys
with emails through the real service, starts the real `assessments notifier` process against
an aiosmtpd server on 127.0.0.1 (in this process), waits until it consumes, then puts every
key's `CandidateKeyIssued` message on its queue at once (`events republish --queue`'s code) and
waits until the invitations table says every key was sent. The notifier's CPU is read from
/proc (user + system) from its idle start to the end, so its start-up is not counted; the
SMTP server's, PostgreSQL's and RabbitMQ's CPU is not in it (they share the machine, though).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pika
import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cli import bootstrap  # noqa: E402
from cli.migrate import upgrade  # noqa: E402
from events.aggregate import AssessmentDetails  # noqa: E402
from events.model import CandidateKeyIssued, Metadata  # noqa: E402
from events.rabbitmq.broker import declare_consumer_queue  # noqa: E402
from events.rabbitmq.republish import republish  # noqa: E402
from events.sql import tenancy  # noqa: E402
from events.sql.engine import make_engine  # noqa: E402
from tests.support.smtp import SmtpServer  # noqa: E402

SERVER = "postgresql://root@127.0.0.1:5432/postgres"
BROKER = "amqp://guest:guest@127.0.0.1:5672/%2F"


def admin(sql: str) -> None:
    with psycopg.connect(SERVER, autocommit=True) as conn:
        conn.execute(sql)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.01)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--keys", type=int, default=1000)
    parser.add_argument("--per-assessment", type=int, default=10)
    args = parser.parse_args()

    run = uuid.uuid4().hex[:8]
    database = f"bench_notifier_{run}"
    database_url = f"postgresql+psycopg://root@127.0.0.1:5432/{database}"
    exchange, queue = f"bench-{run}.events", f"bench-{run}.notifier"
    admin(f'CREATE DATABASE "{database}"')
    smtp = SmtpServer().start()
    process = None
    try:
        upgrade(database_url)
        engine = make_engine(database_url, pool_size=2)
        service = bootstrap.assessment_service(engine)
        org = tenancy.create_organisation(engine, "Bench Ltd")
        meta = Metadata(org_id=org.org_id, actor="bench")
        issued = []
        details = AssessmentDetails(title="Bench", role="Engineer", task_brief="b", time_limit_minutes=60)
        while len(issued) < args.keys:
            stream = service.create(org.org_id, details, meta).recorded.stream_id
            count = min(args.per_assessment, args.keys - len(issued))
            pairs = [(f"candidate{len(issued) + n}@example.com", None) for n in range(count)]
            issued += service.issue_keys(org.org_id, stream, pairs, meta)

        connection = pika.BlockingConnection(pika.URLParameters(BROKER))
        channel = connection.channel()
        declare_consumer_queue(channel, exchange, queue, [CandidateKeyIssued.routing_key], "bench")
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("ASSESSMENTS_")},
            "ASSESSMENTS_DATABASE_URL": database_url,
            "ASSESSMENTS_BROKER_URL": BROKER,
            "ASSESSMENTS_EXCHANGE": exchange,
            "ASSESSMENTS_NOTIFIER_QUEUE": queue,
            "ASSESSMENTS_SMTP_URL": smtp.url,
            "ASSESSMENTS_LOG_LEVEL": "WARNING",
        }
        process = subprocess.Popen([sys.executable, "-m", "cli", "notifier"], cwd=ROOT, env=env)
        wait(
            lambda: channel.queue_declare(queue, passive=True).method.consumer_count == 1, 30, "the notifier"
        )
        time.sleep(1.0)  # let its start-up settle before the CPU baseline
        cpu_before = cpu_seconds(process.pid)
        started = time.perf_counter()
        republish(iter(issued), BROKER, exchange, queue)

        def all_sent() -> bool:
            with engine.connect() as conn:
                sent = conn.exec_driver_sql("SELECT count(*) FROM invitations WHERE status = 'sent'").scalar()
            return sent == len(issued)

        wait(all_sent, 600, "every invitation sent")
        seconds = time.perf_counter() - started
        cpu = cpu_seconds(process.pid) - cpu_before
        mails = len(smtp.messages)
        print(f"keys with emails:          {len(issued):,}")
        print(f"mails accepted by SMTP:    {mails:,}")
        print(f"mails per second:          {len(issued) / seconds:,.0f} ({seconds:.2f} s)")
        print(f"notifier CPU per mail:     {cpu / len(issued) * 1000:.2f} ms ({cpu:.2f} s in all)")
        connection.close()
        engine.dispose()
    finally:
        if process is not None:
            process.terminate()
            process.wait(30)
        smtp.stop()
        with pika.BlockingConnection(pika.URLParameters(BROKER)) as cleanup:
            channel = cleanup.channel()
            channel.queue_delete(queue)
            channel.queue_delete(f"{queue}.dead")
            channel.exchange_delete(exchange)
        admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


if __name__ == "__main__":
    main()
