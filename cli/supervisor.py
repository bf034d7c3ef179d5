"""`assessments run`: the API, the relay, the worker, the notifier and the webhooks dispatcher
as child processes in the foreground, for a developer who wants the whole service from one
command. Without `ASSESSMENTS_SMTP_URL` (e.g. a local mail catcher's) the notifier writes
invitations as .eml files to `ASSESSMENTS_MAIL_DIR`, by default `assessments-mail/` in the
working directory.

Each child is `python -m cli <command>`, so it runs exactly as it would in production. When one
exits, or the developer presses Ctrl-C or sends SIGTERM, every child gets SIGTERM and a grace
period to stop cleanly before it is killed; the exit status is the worst of theirs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence

#: How long the children have, after SIGTERM, before they are killed.
STOP_TIMEOUT_SECONDS = 30
POLL_SECONDS = 0.2


DEFAULT_MAIL_DIR = "assessments-mail"


def child_arguments(bind: str | None, metrics_port: int | None) -> list[list[str]]:
    """The api, relay, worker, notifier and webhooks commands; with a metrics port P the relay
    serves its metrics on P, the worker on P+1, the notifier on P+2 and the webhooks dispatcher
    on P+3."""
    api_args = ["api"] + (["--bind", bind] if bind else [])
    relay_args, worker_args, notifier_args, webhooks_args = ["relay"], ["worker"], ["notifier"], ["webhooks"]
    if metrics_port:
        relay_args += ["--metrics-port", str(metrics_port)]
        worker_args += ["--metrics-port", str(metrics_port + 1)]
        notifier_args += ["--metrics-port", str(metrics_port + 2)]
        webhooks_args += ["--metrics-port", str(metrics_port + 3)]
    return [api_args, relay_args, worker_args, notifier_args, webhooks_args]


def child_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """Readable logs unless ASSESSMENTS_LOG_FORMAT says otherwise; no shared metrics port, which
    the relay and the worker would both try to take."""
    env = {**environ, "ASSESSMENTS_LOG_FORMAT": environ.get("ASSESSMENTS_LOG_FORMAT") or "text"}
    env.pop("ASSESSMENTS_METRICS_PORT", None)
    if not env.get("ASSESSMENTS_SMTP_URL") and not env.get("ASSESSMENTS_MAIL_DIR"):
        env["ASSESSMENTS_MAIL_DIR"] = os.path.abspath(DEFAULT_MAIL_DIR)
    return env


class Supervisor:
    """Runs `python -m cli ARGS` for each of `commands` until one exits or a signal comes."""

    def __init__(self, commands: Sequence[Sequence[str]], env: Mapping[str, str]) -> None:
        self.commands = commands
        self.env = dict(env)
        self.children: list[subprocess.Popen] = []

    def run(self) -> int:
        """Start the children, wait, stop them all; the exit status to leave with."""
        self.children = [
            subprocess.Popen([sys.executable, "-m", "cli", *args], env=self.env) for args in self.commands
        ]
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
        while all(child.poll() is None for child in self.children):
            time.sleep(POLL_SECONDS)
        self.stop()
        self._wait_or_kill()
        return max(abs(child.returncode or 0) for child in self.children)

    def stop(self, *_) -> None:
        """SIGTERM to every child still running; safe as a signal handler."""
        for child in self.children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)

    def _wait_or_kill(self) -> None:
        deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
        for child in self.children:
            try:
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()


def run_service(bind: str | None, metrics_port: int | None) -> int:
    """What `assessments run` does; its exit status."""
    env = child_environment(os.environ)
    if not env.get("ASSESSMENTS_SMTP_URL"):
        print(
            f"assessments run: invitations written to {env['ASSESSMENTS_MAIL_DIR']} (no ASSESSMENTS_SMTP_URL)"
        )
    return Supervisor(child_arguments(bind, metrics_port), env).run()
