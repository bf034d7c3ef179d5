"""The API under gunicorn, configured in code so `assessments api` needs no config file."""

from __future__ import annotations

from gunicorn.app.base import BaseApplication

from api import create_app
from events.settings import Settings


class ApiServer(BaseApplication):
    def __init__(self, settings: Settings, options: dict) -> None:
        self.settings = settings
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self):
        # Built in each worker after the fork: no connection is shared across processes.
        return create_app(self.settings)


def gunicorn_options(bind: str, workers: int) -> dict:
    return {
        "bind": bind,
        "workers": workers,
        # Threads, because a read may wait briefly for the worker (read-your-writes).
        "worker_class": "gthread",
        "threads": 8,
        "timeout": 30,
        "graceful_timeout": 20,
        "keepalive": 5,
        "accesslog": "-",
        "errorlog": "-",
        "access_log_format": '%(h)s "%(r)s" %(s)s %(b)s %(M)sms rid=%({x-request-id}o)s',
    }


def serve(settings: Settings, bind: str, workers: int) -> None:
    ApiServer(settings, gunicorn_options(bind, workers)).run()
