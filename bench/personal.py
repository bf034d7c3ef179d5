"""Benchmark of sealing candidates' personal data; prints figures, asserts nothing.

    .venv/bin/python bench/personal.py [--rounds 7] [--requests 200]

What issue 15 asks of it: issuing keys with emails and reading key lists must not fall by more
than 10 %. In one process, on a database of its own, two API apps built by the composition
root differ only in whether their store seals (`events.personal`): the sealing one is the
product, the other stands for the code before sealing (keys without a data subject, fields in
clear). Each round runs, on each app in turn (so a slow spell of the machine hits both),
`--requests` POSTs of 5 keys with 5 emails and names, then `--requests` GETs of a list of 50
such keys; the ratio is the median of the rounds' ratios. Requests go through Flask's test
client: no network, so the figures are the service's own cost, database round trips included.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
import uuid
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from api import create_app  # noqa: E402
from cli import bootstrap  # noqa: E402
from cli.migrate import upgrade  # noqa: E402
from events.runtime.settings import Settings  # noqa: E402
from events.sql import tenancy  # noqa: E402
from events.sql.engine import make_engine  # noqa: E402

SERVER = "postgresql://root@127.0.0.1:5432/postgres"
BODY = {"title": "Backend take-home", "role": "Senior Backend Engineer", "taskBrief": "Build it."}
KEYS_PER_POST = 5
LISTED_KEYS = 50
LABELS = {"issue": "POST 5 keys with emails", "list": "GET a list of 50 keys"}


def admin(sql: str) -> None:
    with psycopg.connect(SERVER, autocommit=True) as conn:
        conn.execute(sql)


def apps(database_url: str):
    """(sealing app, clear app, their services) over one database."""
    settings = Settings(database_url=database_url, candidate_auth_limit=1_000_000)
    engine = make_engine(database_url, autocommit=True)
    sealing = bootstrap.api_services(settings, engine)
    clear_service = bootstrap.assessment_service(engine, bootstrap.event_store(engine))
    clear = dataclasses.replace(sealing, assessments=clear_service)
    return create_app(sealing).test_client(), create_app(clear).test_client(), sealing


def keys_body(n: int) -> dict:
    emails = [f"candidate-{uuid.uuid4().hex[:10]}@example.com" for _ in range(n)]
    return {"count": n, "candidateEmails": emails, "candidateNames": [f"Name {i}" for i in range(n)]}


def timed(requests: int, run) -> tuple[float, float]:
    """(requests per second, CPU milliseconds of this process per request) of `run()`."""
    wall, cpu = time.perf_counter(), time.process_time()
    run()
    return requests / (time.perf_counter() - wall), (time.process_time() - cpu) / requests * 1000


def issue_rate(client, headers: dict, requests: int) -> tuple[float, float]:
    """Each POST to an assessment of its own (made beforehand): a stream as short as most are,
    so the figure is the issuing, not the reading of a long stream."""
    assessments = [
        client.post("/v1/assessments", json=BODY, headers=headers).get_json()["assessment"]["id"]
        for _ in range(requests)
    ]
    bodies = [keys_body(KEYS_PER_POST) for _ in range(requests)]

    def run() -> None:
        for assessment, body in zip(assessments, bodies, strict=True):
            response = client.post(f"/v1/assessments/{assessment}/keys", json=body, headers=headers)
            assert response.status_code == 201, response.get_data(as_text=True)

    return timed(requests, run)


def list_rate(client, headers: dict, requests: int, project) -> tuple[float, float]:
    assessment = client.post("/v1/assessments", json=BODY, headers=headers).get_json()["assessment"]["id"]
    for _ in range(LISTED_KEYS // KEYS_PER_POST):
        client.post(f"/v1/assessments/{assessment}/keys", json=keys_body(KEYS_PER_POST), headers=headers)
    project()  # what the worker would do: the list is read from the projection, fresh

    def run() -> None:
        for _ in range(requests):
            response = client.get(f"/v1/assessments/{assessment}/keys", headers=headers)
            assert response.status_code == 200 and len(response.get_json()["keys"]) == LISTED_KEYS

    return timed(requests, run)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    name = f"assessments_bench_personal_{uuid.uuid4().hex[:8]}"
    url = SERVER.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://") + f"/{name}"
    admin(f'CREATE DATABASE "{name}"')
    try:
        upgrade(url)
        token = tenancy.create_organisation(make_engine(url), "Bench").token
        headers = {"Authorization": f"Bearer {token}"}
        sealing, clear, services = apps(url)
        worker = bootstrap.event_handler(make_engine(url))

        def project() -> None:
            while worker.sweep(older_than_seconds=0, limit=1000):
                pass

        runs = {
            "issue": lambda c: issue_rate(c, headers, args.requests),
            "list": lambda c: list_rate(c, headers, args.requests, project),
        }
        ratios: dict[str, list[float]] = {op: [] for op in runs}
        cpu: dict[tuple[str, str], list[float]] = {}
        for round_ in range(1, args.rounds + 1):
            line = []
            for op, run in runs.items():
                rates = {}
                for label, client in (("clear", clear), ("sealed", sealing)):
                    rates[label], used = run(client)
                    cpu.setdefault((op, label), []).append(used)
                ratios[op].append(rates["sealed"] / rates["clear"])
                line.append(
                    f"{LABELS[op]} clear {rates['clear']:.0f}/s sealed {rates['sealed']:.0f}/s "
                    f"= {ratios[op][-1]:.2f}x"
                )
            print(f"round {round_}: " + "; ".join(line), flush=True)
        for op, values in ratios.items():
            median = statistics.median(values)
            verdict = "met" if median >= 0.9 else "NOT met"
            clear_cpu, sealed_cpu = (statistics.median(cpu[(op, label)]) for label in ("clear", "sealed"))
            print(
                f"{LABELS[op]}: sealed / clear median {median:.2f}x ({min(values):.2f}-{max(values):.2f}), "
                f"target >= 0.90x {verdict}; this process's CPU per request {clear_cpu:.2f} ms clear, "
                f"{sealed_cpu:.2f} ms sealed"
            )
        services.close()
    finally:
        admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
