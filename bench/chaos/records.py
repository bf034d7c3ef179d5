"""What the run records as it goes, on one clock: requests, writes, fault windows, exits, and
the checks' verdicts."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from bench.chaos import FAULT_GRACE_SECONDS


class Clock:
    """Seconds since the run began: requests, faults and exits share it."""

    def __init__(self) -> None:
        self.origin = time.monotonic()

    def now(self) -> float:
        return time.monotonic() - self.origin


@dataclass(frozen=True)
class Write:
    """What an acknowledged (2xx) write wrote, to be found in the event store."""

    kind: str  # "create", "delete", "issue" or "revoke"
    assessment_id: str
    key_ids: tuple[str, ...] = ()
    idempotency_key: str | None = None


@dataclass
class RequestRecord:
    started: float
    duration: float
    method: str
    route: str
    status: int | None  # None: no answer (connection error or client timeout)
    request_id: str
    retry_after: str | None = None
    error: str | None = None
    wrote: Write | None = None

    @property
    def ended(self) -> float:
        return self.started + self.duration

    def describe(self) -> str:
        answer = self.status if self.status is not None else f"no answer ({self.error})"
        return (
            f"{self.method} {self.route} -> {answer} at {self.started:.1f}s "
            f"in {self.duration:.2f}s (rid {self.request_id})"
        )


@dataclass
class FaultWindow:
    name: str
    started: float
    ended: float | None = None
    detail: str = ""
    failed: str | None = None  # the harness could not inject or restore it

    def covers(self, started: float, ended: float, grace: float = FAULT_GRACE_SECONDS) -> bool:
        """Whether a request over [started, ended] overlapped the fault or its grace."""
        end = (self.ended if self.ended is not None else float("inf")) + grace
        return started <= end and ended >= self.started

    def describe(self) -> str:
        end = f"{self.ended:.1f}" if self.ended is not None else "?"
        return f"{self.name} {self.started:.1f}-{end}s"


@dataclass(frozen=True)
class ProcessExit:
    process: str
    pid: int
    at: float
    returncode: int
    last_words: str


@dataclass
class Check:
    name: str
    count: int
    examples: list[str] = field(default_factory=list)
