"""The service's processes (the API, two relays, two workers), each an OS process of its own, and
the supervisor that restarts them as systemd would; what a process died of, from its log."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import requests

from bench.chaos import EXCHANGE, RESTART_SECONDS, ROOT, STOP_TIMEOUT_SECONDS, WORKER_QUEUE
from bench.chaos.records import Clock, ProcessExit
from tests.support.wait import wait_for


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class ServiceProcess:
    name: str
    role: str  # "api", "relay" or "worker"
    args: list[str]
    env: dict[str, str]
    log_path: Path
    metrics_port: int | None = None
    popen: subprocess.Popen | None = None
    killed: bool = False  # by the chaos: its exit is expected
    _log_offset: int = 0

    def start(self) -> None:
        """In a session of its own: a Ctrl-C in the terminal reaches this script only, which
        then stops every process in order."""
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "cli", *self.args],
                cwd=ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.killed = False

    def last_words(self) -> str:
        """What this incarnation said last: the traceback or error it died of."""
        with self.log_path.open("rb") as log:
            log.seek(self._log_offset)
            text = log.read().decode("utf-8", "replace")
        return last_error(text)

    def signal_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, sig)


FRAME = re.compile(r'^\s*File "(?P<path>[^"]+)", line (?P<line>\d+), in (?P<function>\S+)')
NOT_AN_EXCEPTION = ("Traceback", "During handling", "The above exception")


def exception_summary(traceback: str) -> str:
    """`Type: message (at path:line in function)`: the last exception of a traceback and the
    innermost frame of the project's own code it went through."""
    lines = traceback.strip().splitlines()
    heads = [line for line in lines if line[:1].strip() and not line.startswith(NOT_AN_EXCEPTION)]
    ours = [
        match
        for line in lines
        if (match := FRAME.match(line))
        and match["path"].startswith(str(ROOT))
        and "/.venv/" not in match["path"]
    ]
    where = ""
    if ours:
        path = Path(ours[-1]["path"]).relative_to(ROOT)
        where = f" (at {path}:{ours[-1]['line']} in {ours[-1]['function']})"
    return (heads[-1] if heads else lines[-1] if lines else "?")[:250] + where


def last_error(log_text: str) -> str:
    """What a process died of: the traceback Python printed on its way out, or else the last
    exception or ERROR of its JSON lines."""
    plain = "\n".join(line for line in log_text.splitlines() if not line.startswith("{"))
    if "Traceback (most recent call last):" in plain:
        return exception_summary(plain.rsplit("Traceback (most recent call last):", 1)[1])
    for line in reversed(log_text.strip().splitlines()):
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if record.get("exception"):
                return exception_summary(record["exception"])
            if record.get("level") in ("ERROR", "CRITICAL"):
                return record.get("message", "")[:300]
    return "(nothing in its log)"


class Supervisor:
    """Runs the service's processes and restarts any that exits, as systemd or Kubernetes would;
    records every exit the chaos did not cause itself."""

    def __init__(self, processes: list[ServiceProcess], clock: Clock) -> None:
        self.processes = processes
        self.clock = clock
        self.exits: list[ProcessExit] = []
        self.unclean_stops: list[str] = []
        self._lock = threading.Lock()
        self._due: dict[str, float] = {}  # process name -> when to restart it
        self._stop = threading.Event()
        self._stopped = False
        self._watcher = threading.Thread(target=self._watch, name="supervisor", daemon=True)

    def start(self) -> None:
        for process in self.processes:
            process.start()
        self._watcher.start()

    def of_role(self, role: str) -> list[ServiceProcess]:
        return [p for p in self.processes if p.role == role]

    def kill(self, process: ServiceProcess) -> None:
        with self._lock:
            process.killed = True
            process.signal_group(signal.SIGKILL)
        process.popen.wait(10)

    def restart_killed(self) -> None:
        with self._lock:
            for process in self.processes:
                if process.killed:
                    self._due.pop(process.name, None)
                    process.start()

    def _watch(self) -> None:
        while not self._stop.wait(0.2):
            with self._lock:
                for process in self.processes:
                    self._check(process)

    def _check(self, process: ServiceProcess) -> None:
        due = self._due.get(process.name)
        if due is not None:
            if self.clock.now() >= due:
                del self._due[process.name]
                if process.popen.poll() is not None:
                    process.start()
            return
        code = process.popen.poll()
        if code is None or process.killed:
            return
        self.exits.append(
            ProcessExit(process.name, process.popen.pid, self.clock.now(), code, process.last_words())
        )
        self._due[process.name] = self.clock.now() + RESTART_SECONDS

    def stop(self) -> None:
        """SIGTERM to all, as an orchestrator stops them; records any that does not exit 0 in
        time (then killed). Once: a second call finds nothing to stop."""
        if self._stopped:
            return
        self._stopped = True
        self._stop.set()
        if self._watcher.is_alive():
            self._watcher.join(5)
        running = [p for p in self.processes if p.popen is not None and p.popen.poll() is None]
        for process in running:
            process.popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
        for process in running:
            try:
                code = process.popen.wait(max(0.1, deadline - time.monotonic()))
                if code != 0:
                    self.unclean_stops.append(f"{process.name}: exit {code} on SIGTERM")
            except subprocess.TimeoutExpired:
                self.unclean_stops.append(
                    f"{process.name}: still running {STOP_TIMEOUT_SECONDS:.0f}s after SIGTERM"
                )
        for process in self.processes:  # gunicorn's workers too, and anything that hung
            if process.popen is not None:
                process.signal_group(signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.popen.wait(10)


def service_processes(database_url: str, broker_url: str, api_port: int, logs: Path) -> list[ServiceProcess]:
    """The API, two relays (one active, one standing by) and two workers, configured only by
    this run (none of the caller's ASSESSMENTS_* settings leaks in)."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("ASSESSMENTS_")},
        "ASSESSMENTS_DATABASE_URL": database_url,
        "ASSESSMENTS_BROKER_URL": broker_url,
        "ASSESSMENTS_EXCHANGE": EXCHANGE,
        "ASSESSMENTS_WORKER_QUEUE": WORKER_QUEUE,
        "ASSESSMENTS_BIND": f"127.0.0.1:{api_port}",
        "ASSESSMENTS_API_WORKERS": "2",
        "ASSESSMENTS_LOG_FORMAT": "json",
        "ASSESSMENTS_LOG_LEVEL": "INFO",
    }
    processes = [ServiceProcess("api", "api", ["api"], env, logs / "api.log")]
    for n in (1, 2):
        port = free_port()
        processes.append(
            ServiceProcess(
                f"relay-{n}",
                "relay",
                ["relay", "--metrics-port", str(port)],
                env,
                logs / f"relay-{n}.log",
                port,
            )
        )
    for n in (1, 2):
        processes.append(ServiceProcess(f"worker-{n}", "worker", ["worker"], env, logs / f"worker-{n}.log"))
    return processes


def relay_is_active(process: ServiceProcess) -> bool:
    try:
        text = requests.get(f"http://127.0.0.1:{process.metrics_port}/metrics", timeout=1).text
    except requests.RequestException:
        return False
    return any(line.startswith("assessments_relay_active 1") for line in text.splitlines())


def wait_until_ready(api_url: str) -> None:
    def ready() -> bool:
        try:
            return requests.get(f"{api_url}/readyz", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    wait_for(ready, timeout=60, message="the API's /readyz")
