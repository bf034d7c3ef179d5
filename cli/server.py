"""The API under gunicorn, configured in code so `assessments api` needs no config file."""

from __future__ import annotations

import os
from collections.abc import Mapping

from gunicorn.app.base import BaseApplication
from gunicorn.glogging import Logger

from api import create_app
from events import metrics
from events.settings import Settings

#: gunicorn settings an operator may change without code, with their defaults. Any other
#: gunicorn option can be given in GUNICORN_CMD_ARGS (e.g. "--max-requests 10000").
TUNABLES = {
    # Threads, because a read may wait briefly for the worker (read-your-writes).
    "threads": ("ASSESSMENTS_API_THREADS", 8),
    # A worker silent for this long is killed and replaced.
    "timeout": ("ASSESSMENTS_API_TIMEOUT", 30),
    # On SIGTERM, requests in flight get this long to finish.
    "graceful_timeout": ("ASSESSMENTS_API_GRACEFUL_TIMEOUT", 20),
    "keepalive": ("ASSESSMENTS_API_KEEPALIVE", 5),
}


class ProcessLogger(Logger):
    """gunicorn's own lines (start, worker boot and exit, timeouts) go through the process's
    logging setup (JSON or text, see `events.logs`) instead of gunicorn's formats. Its access log
    stays off: the app writes one line per request itself, with the route and the request id."""

    def setup(self, cfg) -> None:
        super().setup(cfg)
        for logger in (self.error_log, self.access_log):
            logger.handlers.clear()
            logger.propagate = True


class ApiServer(BaseApplication):
    def __init__(self, settings: Settings, options: dict) -> None:
        self.settings = settings
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)
        from_env = self.cfg.parser().parse_args(self.cfg.get_cmd_args_from_env())
        for key, value in vars(from_env).items():
            if value is not None and key in self.cfg.settings:
                self.cfg.set(key.lower(), value)

    def load(self):
        # Built in each worker after the fork: no connection is shared across processes.
        return create_app(self.settings)


def gunicorn_options(bind: str, workers: int, environ: Mapping[str, str] | None = None) -> dict:
    env = os.environ if environ is None else environ
    return {
        "bind": bind,
        "workers": workers,
        "worker_class": "gthread",
        **{option: int(env.get(variable, default)) for option, (variable, default) in TUNABLES.items()},
        "accesslog": None,
        "errorlog": "-",
        "logger_class": ProcessLogger,
        # With several workers, each keeps its metrics in PROMETHEUS_MULTIPROC_DIR and any of
        # them answers /metrics for all; a worker that exits must be forgotten.
        "child_exit": lambda _server, worker: metrics.mark_process_dead(worker.pid),
    }


def serve(settings: Settings, bind: str, workers: int) -> None:
    metrics.clear_multiprocess_dir()
    ApiServer(settings, {**gunicorn_options(bind, workers), "loglevel": settings.log_level.lower()}).run()
