"""The whole run: the sandbox, the processes, the load with the faults, the drain, the evidence,
the report; and its command line (`python -m bench.chaos`)."""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import bench.chaos
from bench.chaos import BROKER, COOL_DOWN_SECONDS, SERVER
from bench.chaos.evidence import Evidence, gather, wait_for_quiescence
from bench.chaos.faults import Injector, Rig, least_duration, plan_faults
from bench.chaos.load import LoadClient, issue_ids, pools_by_client
from bench.chaos.processes import Supervisor, free_port, service_processes, wait_until_ready
from bench.chaos.records import Clock
from bench.chaos.report import report
from bench.chaos.sandbox import Sandbox, bind_audit_queue, prepare_database, proxy_to, sandbox
from tests.support import netfilter
from tests.support.proxy import TcpProxy


def preflight() -> None:
    missing = []
    if not netfilter.available():
        missing.append("the nft command (apt-get install nftables)")
    if os.geteuid() != 0:
        missing.append("root (nftables)")
    if not shutil.which("rabbitmqctl"):
        missing.append("rabbitmqctl on this machine (the broker's vhost and connections)")
    if missing:
        sys.exit(f"the chaos run needs {', '.join(missing)}")


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
        prog="python -m bench.chaos",
        description=bench.chaos.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
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
