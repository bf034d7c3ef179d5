"""The API under gunicorn, configured in code so `assessments api` needs no config file."""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections.abc import Mapping

from gunicorn import util
from gunicorn.app.base import BaseApplication
from gunicorn.glogging import Logger
from gunicorn.http.errors import LimitRequestHeaders, LimitRequestLine
from gunicorn.workers.gthread import ThreadWorker

from api import REQUEST_ID_HEADER
from api.errors import error_document
from cli import bootstrap
from events.runtime import metrics
from events.runtime.settings import Settings

access_log = logging.getLogger("api.access")

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


class JsonErrorWorker(ThreadWorker):
    """gunicorn's threaded worker, but the requests that gunicorn refuses itself before the app
    sees them (a request line or headers over its limits, a malformed request) are answered in
    the API's error shape with an X-Request-Id, not with gunicorn's HTML page. gunicorn still
    decides the status and logs the refusal; only the bytes on the wire differ."""

    def handle_error(self, req, client, addr, exc) -> None:
        page = _Page()
        super().handle_error(req, page, addr, exc)
        if page.status is None:
            return
        request_id = str(uuid.uuid4())
        access_log.info(
            "%s refused by the HTTP server rid=%s",
            page.status,
            request_id,
            extra={"status": page.status, "route": "<unparsed>", "request_id": request_id},
        )
        try:
            util.write_nonblock(
                client, json_error(page.status, page.reason, self._message(page.status, exc), request_id)
            )
        except Exception:
            self.log.debug("Failed to send error message.")

    def _message(self, status: int, exc: BaseException) -> str:
        if isinstance(exc, LimitRequestLine):
            return f"The request line (method, path and query) is over {self.cfg.limit_request_line} bytes."
        if isinstance(exc, LimitRequestHeaders):
            return (
                f"The request has more than {self.cfg.limit_request_fields} header fields, or one over "
                f"{self.cfg.limit_request_field_size} bytes."
            )
        if status >= 500:
            return "Internal server error."
        return f"The request is malformed: {str(exc)[:200]}"


class _Page:
    """Stands in for the client's socket while gunicorn writes its HTML error page, to learn
    the status it chose."""

    status: int | None = None
    reason = ""

    def gettimeout(self) -> float:
        return 0.0

    def sendall(self, data: bytes) -> None:
        _version, status, self.reason = data.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
        self.status = int(status)


def json_error(status: int, reason: str, message: str, request_id: str) -> bytes:
    """A whole HTTP response in the API's error shape; the connection closes after it, as
    after gunicorn's own."""
    body = json.dumps(error_document(status, message), separators=(",", ":")).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\n"
        "Connection: close\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"{REQUEST_ID_HEADER}: {request_id}\r\n"
        "\r\n"
    )
    return head.encode("latin-1") + body


class ApiServer(BaseApplication):
    def __init__(self, settings: Settings, options: dict) -> None:
        self.settings = settings
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            if key in OPTIONAL_SETTINGS and key not in self.cfg.settings:
                continue  # an older gunicorn without it
            self.cfg.set(key, value)
        from_env = self.cfg.parser().parse_args(self.cfg.get_cmd_args_from_env())
        for key, value in vars(from_env).items():
            if value is not None and key in self.cfg.settings:
                self.cfg.set(key.lower(), value)

    def load(self):
        # Built in each worker after the fork: no connection is shared across processes.
        return bootstrap.api_app(self.settings)


def gunicorn_options(bind: str, workers: int, environ: Mapping[str, str] | None = None) -> dict:
    env = os.environ if environ is None else environ
    return {
        "bind": bind,
        "workers": workers,
        "worker_class": JsonErrorWorker,
        **{option: int(env.get(variable, default)) for option, (variable, default) in TUNABLES.items()},
        "accesslog": None,
        "errorlog": "-",
        "logger_class": ProcessLogger,
        # With several workers, each keeps its metrics in PROMETHEUS_MULTIPROC_DIR and any of
        # them answers /metrics for all; a worker that exits must be forgotten.
        "child_exit": lambda _server, worker: metrics.mark_process_dead(worker.pid),
        # gunicorn 25.1+ opens a control socket at one path per user ($HOME/.gunicorn/
        # gunicorn.ctl), which several API processes on one host would take from each other.
        "control_socket_disable": True,
    }


#: Options only recent gunicorn releases know; left out on older ones.
OPTIONAL_SETTINGS = frozenset({"control_socket_disable"})


def serve(settings: Settings, bind: str, workers: int) -> None:
    bootstrap.load_disclosure(settings.disclosure_file)  # a broken file stops us here, not per worker
    metrics.clear_multiprocess_dir()
    ApiServer(settings, {**gunicorn_options(bind, workers), "loglevel": settings.log_level.lower()}).run()
