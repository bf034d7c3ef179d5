"""Benchmark of a full rebuild of every projection; prints figures, asserts nothing.

    .venv/bin/python bench/rebuild.py [--events 1000000]

Fills a fresh database with about `--events` events (a quarter of them assessments, each with
candidate keys issued to an email and a name, sealed as the store seals them, `events.personal`,
or with `--clear` in clear as before sealing existed; a quarter of the assessments deleted, with
the cascade's revocations), in two halves. After each half it runs a full rebuild in a child
process and reports its speed and peak memory (RSS), so you can see that memory does not grow
with the number of events. In the same run it times a bare psycopg pass over the same events
(server-side cursor, JSON decode, COPY into a scratch table) and prints the rebuild's rate as a
ratio of it.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path

import psycopg
from psycopg.types.json import Jsonb

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from events import codec  # noqa: E402
from events.crypto.cipher import MasterKeys  # noqa: E402
from events.keys import key_hint  # noqa: E402
from events.model import (  # noqa: E402
    AssessmentCreated,
    AssessmentDeleted,
    CandidateKeyIssued,
    CandidateKeyRevoked,
    utcnow,
    uuid7,
)
from events.sql.engine import make_engine  # noqa: E402
from events.sql.vault import SqlVault  # noqa: E402

SERVER = "postgresql://root@127.0.0.1:5432/postgres"
KEYS_PER_ASSESSMENT = 2
ALL_COLUMNS = (
    "position, event_id, stream_id, stream_version, type, schema_version, data, metadata, recorded_at"
)


def admin(sql: str) -> None:
    with psycopg.connect(SERVER, autocommit=True) as conn:
        conn.execute(sql)


def generate(conn: psycopg.Connection, assessments: int, rng: random.Random, vault: SqlVault | None) -> int:
    """Append a realistic interleaving: all creations, then keys, then deletions with their
    cascade and a few reviewer revocations. Written with COPY: this is set-up, not the test."""
    now = utcnow()
    org = str(uuid.uuid4())
    emails = [f"candidate-{n}@example.com" for n in range(100)]
    subjects: list[dict] = []  # each key's data subject (`events.sql.vault`), when sealing
    streams = []
    rows = []

    def add(stream_id, version, event):
        event_id = uuid7()
        payload = codec.encode(event)
        if vault is not None:
            sealed = vault.seal(event_id, event, payload)
            payload = sealed.data
            if sealed.subject is not None:
                subjects.append(sealed.subject)
        rows.append(
            (event_id, stream_id, version, event.type_name, event.schema_version, json.dumps(payload), meta)
        )

    meta = json.dumps({"orgId": org, "actor": "bench"})
    for _ in range(assessments):
        stream_id = uuid7()
        streams.append([stream_id, 1, []])
        created = AssessmentCreated(
            assessment_id=stream_id, org_id=org, title="t", role="r", task_brief="b", created_at=now
        )
        add(stream_id, 1, created)
    for stream in streams:
        for _ in range(KEYS_PER_ASSESSMENT):
            stream[1] += 1
            key_id = uuid7()
            stream[2].append(key_id)
            key = f"PST-{rng.randrange(16**4):04X}-{rng.randrange(16**4):04X}"
            email = rng.choice(emails)
            issued = CandidateKeyIssued(
                key_id,
                stream[0],
                org,
                key_hint(key),
                email,
                "A",
                None,
                now + timedelta(days=7),
                now,
                key_id if vault is not None else None,  # a key is its own data subject
            )
            add(stream[0], stream[1], issued)
    for stream_id, version, keys in streams:
        if rng.random() < 0.25:
            add(stream_id, version + 1, AssessmentDeleted(stream_id, org, now))
            for offset, key_id in enumerate(keys, start=2):
                add(
                    stream_id,
                    version + offset,
                    CandidateKeyRevoked(key_id, stream_id, org, "assessment_deleted", now),
                )
        elif rng.random() < 0.25:
            add(stream_id, version + 1, CandidateKeyRevoked(keys[0], stream_id, org, "revoked", now))
    with (
        conn.cursor() as cursor,
        cursor.copy(
            "COPY events (event_id, stream_id, stream_version, type, schema_version, data, metadata) "
            "FROM STDIN"
        ) as copy,
    ):
        for row in rows:
            copy.write_row(row)
    with (
        conn.cursor() as cursor,
        cursor.copy(
            "COPY subject_keys (subject_id, org_id, lookup, master_key_id, wrapped_key) FROM STDIN"
        ) as copy,
    ):
        for subject in subjects:
            copy.write_row(
                (
                    subject["subject_id"],
                    subject["org_id"],
                    subject["lookup"],
                    subject["master_key_id"],
                    subject["wrapped_key"],
                )
            )
    conn.commit()
    return len(rows)


def bare_pass(url: str) -> float:
    """Events per second for the least a pass over the events can do: every event read whole
    through a server-side cursor (psycopg decoding its JSON), and COPY'd into a scratch table
    of the same shape. No domain code at all."""
    with psycopg.connect(url) as reader, psycopg.connect(url) as writer:
        writer.execute("DROP TABLE IF EXISTS scratch")
        writer.execute("CREATE TABLE scratch (LIKE events)")
        writer.commit()
        started = time.perf_counter()
        cursor = reader.cursor(name="bare")
        cursor.itersize = 10_000
        cursor.execute(f"SELECT {ALL_COLUMNS} FROM events ORDER BY position")
        count = 0
        with writer.cursor() as out, out.copy(f"COPY scratch ({ALL_COLUMNS}) FROM STDIN") as copy:
            for row in cursor:
                copy.write_row((*row[:6], Jsonb(row[6]), Jsonb(row[7]), row[8]))
                count += 1
        writer.commit()
        elapsed = time.perf_counter() - started
        writer.execute("DROP TABLE scratch")
        writer.commit()
    return count / elapsed


REBUILD_CHILD = """
import sys, time
sys.path.insert(0, {root!r})
from events.sql.engine import make_engine
from projections import default_projections
from projections.rebuild import rebuild
engine = make_engine({url!r}, pool_size=2)
report = rebuild(engine, default_projections())
print(report.events, report.seconds)
"""


def rebuild_in_child(url: str) -> tuple[int, float, float]:
    """(events, seconds, peak RSS in MiB) of a full rebuild in a fresh process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    code = REBUILD_CHILD.format(root=str(ROOT), url=url.replace("postgresql://", "postgresql+psycopg://"))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    events, seconds = out.split()
    return int(events), float(seconds), max(peak, before) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument(
        "--clear", action="store_true", help="Keys' emails and names in clear, as before sealing existed."
    )
    args = parser.parse_args()
    name = f"assessments_bench_rebuild_{uuid.uuid4().hex[:8]}"
    url = SERVER.rsplit("/", 1)[0] + f"/{name}"
    rng = random.Random(7)
    admin(f'CREATE DATABASE "{name}"')
    try:
        from cli.migrate import upgrade

        upgrade(url.replace("postgresql://", "postgresql+psycopg://"))
        per_half = args.events // 2 // 4
        total = 0
        engine = make_engine(url.replace("postgresql://", "postgresql+psycopg://"), pool_size=1)
        vault = None if args.clear else SqlVault(engine, MasterKeys.for_development())
        print("keys' personal data", "in clear (as before sealing)" if args.clear else "sealed", flush=True)
        with psycopg.connect(url) as conn:
            for _half in (1, 2):
                started = time.perf_counter()
                total += generate(conn, per_half, rng, vault)
                conn.execute("ANALYZE events")
                conn.commit()
                print(f"filled {total:,} events ({time.perf_counter() - started:.0f}s)", flush=True)
                events, seconds, peak = rebuild_in_child(url)
                print(
                    f"  full rebuild: {events:,} events in {seconds:.1f}s "
                    f"= {events / seconds:,.0f} events/s, "
                    f"peak RSS {peak:.0f} MiB",
                    flush=True,
                )
        bare = bare_pass(url)
        print(f"bare psycopg pass: {bare:,.0f} events/s")
        print(f"rebuild / bare = {events / seconds / bare:.2f}x")
    finally:
        if os.environ.get("BENCH_KEEP"):
            print("kept", url)
        else:
            admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
