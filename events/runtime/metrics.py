"""How each process exposes its Prometheus metrics. The metric objects live beside the code
that counts: `api.metrics`, `events.rabbitmq.metrics` (the relay) and `worker.metrics`, in
the process-wide default registry, as `prometheus_client` intends. A process imports only its
own, and none of them is made until its module is imported.

With `PROMETHEUS_MULTIPROC_DIR` set (the API under several gunicorn workers)
`prometheus_client` keeps every value in a file of that directory, which the API's server
creates before it starts (`clear_multiprocess_dir()`), and `exposition()` merges the files of
all the processes; otherwise each process answers for itself. The relay and the worker are
single processes and serve their metrics on a port of their own (`serve()`); the API serves
them at `GET /metrics`.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    generate_latest,
    start_http_server,
)

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = CONTENT_TYPE_LATEST

# --- exposition -----------------------------------------------------------------------------


def multiprocess() -> bool:
    return bool(os.environ.get(MULTIPROCESS_ENV))


def exposition() -> bytes:
    """The text exposition of this process, or of every process sharing the multiprocess
    directory."""
    if not multiprocess():
        return generate_latest(REGISTRY)
    from prometheus_client import multiprocess as mp

    registry = CollectorRegistry()
    mp.MultiProcessCollector(registry)
    return generate_latest(registry)


def serve(port: int, addr: str = "0.0.0.0"):
    """Serve `/metrics` on `port` from a daemon thread; returns the server (call `shutdown()`
    and `server_close()` to stop it)."""
    server, _thread = start_http_server(port, addr)
    return server


def clear_multiprocess_dir() -> None:
    """Remove the value files of earlier runs: prometheus_client expects an empty directory
    when the first process starts (gunicorn's master calls this before forking)."""
    directory = os.environ.get(MULTIPROCESS_ENV)
    if not directory:
        return
    os.makedirs(directory, exist_ok=True)
    for name in os.listdir(directory):
        if name.endswith(".db"):
            os.remove(os.path.join(directory, name))


def mark_process_dead(pid: int) -> None:
    """Forget a gunicorn worker's live gauges when it exits."""
    if multiprocess():
        from prometheus_client import multiprocess as mp

        mp.mark_process_dead(pid)
