"""Chaos run: the whole service under a bounded mixed load while its broker and its database fail
the ways they fail in production, then its guarantees checked against the event store.

    .venv/bin/python -m bench.chaos [--duration 120] [--seed N] [--keep] [--logs DIR]
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

The faults (`faults.FAULTS`), at times drawn from the seed, one at a time: SIGKILL of a worker and of
the active relay (restarted a second later, as a supervisor would), the broker cut with
connections refused and with connections accepted then reset, `rabbitmqctl
close_all_connections` on the vhost, the database cut with connections refused, its sessions
terminated, and its port blackholed in the kernel (a network partition).

Then, once the pipeline is quiet, the checks (`checks.CHECKS`), printed as a table; the run exits 1 if
any count is not 0. Needs root and nft for the blackhole (apt-get install nftables), and
rabbitmqctl on this machine (the vhost, close_all_connections). Processes, database, vhost and
nftables tables are removed on the way out, also on Ctrl-C or failure (`--keep` leaves the
database and the vhost for inspection).

The package, one module per job: `sandbox` (the run's database, vhost and proxies), `processes`
(the service's processes and their supervisor), `faults` (what is injected, and when), `load`
(the clients), `evidence` (what is gathered once the pipeline is quiet), `checks`, `report`
(the table), `run` (the whole run, and its command line); `records` holds what they pass on.
This module holds the run's numbers and names.
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

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
