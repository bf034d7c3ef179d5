"""The checks: each counts the violations of one guarantee in the evidence (0: kept), with a few
examples."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable

from bench.chaos import (
    DEAD_LETTER_QUEUE,
    FAULT_GRACE_SECONDS,
    QUIESCENCE_TIMEOUT_SECONDS,
    REQUEST_BOUND_SECONDS,
)
from bench.chaos.evidence import Evidence
from bench.chaos.records import Check, FaultWindow, RequestRecord, Write

EXAMPLES = 5


def check(name: str, problems: list[str], count: int | None = None) -> Check:
    return Check(name, len(problems) if count is None else count, problems[:EXAMPLES])


def acknowledged_writes(evidence: Evidence) -> list[RequestRecord]:
    return [r for r in evidence.requests if r.wrote is not None]


#: The write an event records, as `Write.kind` names it.
KIND_OF_EVENT = {
    "AssessmentCreated": "create",
    "AssessmentDeleted": "delete",
    "CandidateKeyIssued": "issue",
    "CandidateKeyRevoked": "revoke",
}


def facts_of(write: Write) -> list[tuple[str, str, str | None]]:
    """(kind, assessment id, key id) of each event the write must have appended."""
    return [(write.kind, write.assessment_id, key_id) for key_id in write.key_ids] or [
        (write.kind, write.assessment_id, None)
    ]


def lost_writes(evidence: Evidence) -> Check:
    """Every 2xx write is in the event store."""
    recorded = {(KIND_OF_EVENT[e.type], e.stream_id, e.key_id) for e in evidence.store}
    problems = [
        f"{kind} {assessment_id} {key_id or ''}: {record.describe()}"
        for record in acknowledged_writes(evidence)
        for kind, assessment_id, key_id in facts_of(record.wrote)
        if (kind, assessment_id, key_id) not in recorded
    ]
    return check("acknowledged writes lost", problems)


def never_published(evidence: Evidence) -> Check:
    """Every event id of the store is a message id in the audit queue."""
    published = set(evidence.published)
    problems = [
        f"{e.type} {e.event_id} (stream {e.stream_id})" for e in evidence.store if e.event_id not in published
    ]
    return check("events in the store never published", problems)


def projections_differ(evidence: Evidence) -> Check:
    """`projections rebuild --all --dry-run`: the live views against a fold of the store."""
    dry = evidence.dry_run
    problems = [f"{table}: {count} rows" for table, count in dry.differences.items()]
    if dry.error:
        problems.append(f"the dry run failed: {dry.error}")
    return check(
        "projection rows differing from a fold of the store",
        problems,
        sum(dry.differences.values()) or len(problems),
    )


def applied_twice(evidence: Evidence) -> Check:
    """An event recorded twice for one fact, counted as each extra event:
    - a stream with more than one AssessmentCreated or more than one AssessmentDeleted;
    - a key with more than one CandidateKeyIssued or more than one CandidateKeyRevoked (say a
      reviewer's revoke and the cascade's, or the cascade run twice);
    - an Idempotency-Key whose requests (every attempt, each with its own X-Request-Id, which
      the events carry as their correlation id) appended more than one AssessmentCreated;
    - an Idempotency-Key whose 2xx answers named more than one assessment."""
    facts = Counter()
    for e in evidence.store:
        subject = e.key_id if e.type.startswith("CandidateKey") else e.stream_id
        facts[(e.type, subject)] += 1
    problems = [f"{type_} {subject} x{n}" for (type_, subject), n in facts.items() for _ in range(n - 1)]
    creates_by_request = Counter(e.correlation_id for e in evidence.store if e.type == "AssessmentCreated")
    answers: dict[str, set[str]] = defaultdict(set)
    for record in acknowledged_writes(evidence):
        if record.wrote.idempotency_key:
            answers[record.wrote.idempotency_key].add(record.wrote.assessment_id)
    for key, request_ids in evidence.idempotency.items():
        appended = sum(creates_by_request[rid] for rid in request_ids)
        problems += [f"Idempotency-Key {key}: {appended} AssessmentCreated"] * max(0, appended - 1)
        problems += [f"Idempotency-Key {key} answered {sorted(answers[key])}"] * max(0, len(answers[key]) - 1)
    return check("events applied twice", problems)


def deleted_keys_not_revoked_once(evidence: Evidence) -> Check:
    """Every key of a deleted assessment has exactly one CandidateKeyRevoked."""
    deleted = {e.stream_id for e in evidence.store if e.type == "AssessmentDeleted"}
    revocations = Counter(e.key_id for e in evidence.store if e.type == "CandidateKeyRevoked")
    problems = [
        f"key {e.key_id} of {e.stream_id}: revoked {revocations[e.key_id]} times"
        for e in evidence.store
        if e.type == "CandidateKeyIssued" and e.stream_id in deleted and revocations[e.key_id] != 1
    ]
    return check("keys of deleted assessments not revoked exactly once", problems)


def dead_letters(evidence: Evidence) -> Check:
    problems = (
        [f"{DEAD_LETTER_QUEUE} holds {evidence.dead_letters} messages"] if evidence.dead_letters else []
    )
    return check("dead letters", problems, evidence.dead_letters)


def in_window(evidence: Evidence, started: float, ended: float) -> FaultWindow | None:
    """The fault a request over [started, ended] met (None: none, not even in its grace)."""
    windows = evidence.windows
    return (
        latest([w for w in windows if w.covers(started, started, grace=0)])
        or earliest([w for w in windows if w.covers(started, ended, grace=0)])
        or latest([w for w in windows if w.covers(started, ended)])
    )


def latest(windows: list[FaultWindow]) -> FaultWindow | None:
    return max(windows, key=lambda w: w.started, default=None)


def earliest(windows: list[FaultWindow]) -> FaultWindow | None:
    return min(windows, key=lambda w: w.started, default=None)


def during(evidence: Evidence, moment: float) -> str:
    """The faults going on at a moment (with their grace), or the last one before it: a process
    may die of a fault some time after it, when it next uses the connection."""
    names = [w.describe() for w in evidence.windows if w.covers(moment, moment)]
    if names:
        return f" during {' and '.join(names)}"
    before = latest([w for w in evidence.windows if w.started <= moment])
    return f" after {before.describe()}" if before else ""


def with_window(evidence: Evidence, record: RequestRecord) -> str:
    window = in_window(evidence, record.started, record.ended)
    return record.describe() + (f" during {window.describe()}" if window else " outside any fault")


def by_window(evidence: Evidence, records: list[RequestRecord]) -> list[str]:
    """How many of these requests overlapped each kind of fault (or none)."""
    counts = Counter()
    for record in records:
        window = in_window(evidence, record.started, record.ended)
        counts[f"during {window.name}" if window else "outside any fault"] += 1
    return [f"{n} {where}" for where, n in counts.most_common()]


def internal_errors(evidence: Evidence) -> Check:
    failed = [r for r in evidence.requests if r.status == 500]
    examples = by_window(evidence, failed) + [with_window(evidence, r) for r in failed[:3]]
    return Check("500 responses", len(failed), examples)


def errors_outside_windows(evidence: Evidence) -> Check:
    problems = [
        r.describe()
        for r in evidence.requests
        if r.status is not None and r.status >= 500 and in_window(evidence, r.started, r.ended) is None
    ]
    return check(f"5xx outside fault windows (+{FAULT_GRACE_SECONDS:.0f} s)", problems)


def slow_requests(evidence: Evidence) -> Check:
    problems = [with_window(evidence, r) for r in evidence.requests if r.duration > REQUEST_BOUND_SECONDS]
    return check(f"requests slower than {REQUEST_BOUND_SECONDS:.0f} s", problems)


def unanswered(evidence: Evidence) -> Check:
    """A connection error or a client timeout: the API owes every request an answer."""
    problems = [with_window(evidence, r) for r in evidence.requests if r.status is None]
    return check("requests without an answer", problems)


def unavailable_without_retry_after(evidence: Evidence) -> Check:
    problems = [r.describe() for r in evidence.requests if r.status == 503 and not r.retry_after]
    return check("503 without Retry-After", problems)


def unexpected_exits(evidence: Evidence) -> Check:
    problems = []
    for exit_ in evidence.exits:
        problems.append(
            f"{exit_.process} exit {exit_.returncode} at {exit_.at:.1f}s{during(evidence, exit_.at)}: "
            f"{exit_.last_words}"
        )
    return check("unexpected exits of a relay, worker or the API", problems)


def unclean_stops(evidence: Evidence) -> Check:
    return check("processes not stopping cleanly on SIGTERM", evidence.unclean_stops)


def rebuild_differs(evidence: Evidence) -> Check:
    """`projections rebuild --all` (for real) leaves every projection row as it was."""
    rebuilt = evidence.rebuild
    problems = [f"{table}: {row[:200]}" for table, row in rebuilt.differing]
    if rebuilt.error:
        problems.insert(0, f"the rebuild failed: {rebuilt.error}")
    return check("rows changed by a real rebuild", problems)


def not_quiescent(evidence: Evidence) -> Check:
    problems = (
        []
        if evidence.quiescent_after is not None
        else [f"backlog after {QUIESCENCE_TIMEOUT_SECONDS:.0f} s: {evidence.backlog}"]
    )
    return check("pipeline not drained in time", problems)


def faults_not_injected(evidence: Evidence) -> Check:
    """The harness's own failures: a fault it could not inject or undo proves nothing."""
    return check(
        "faults the harness failed to inject", [f"{w.name}: {w.failed}" for w in evidence.windows if w.failed]
    )


CHECKS: tuple[Callable[[Evidence], Check], ...] = (
    lost_writes,
    never_published,
    projections_differ,
    applied_twice,
    deleted_keys_not_revoked_once,
    dead_letters,
    internal_errors,
    errors_outside_windows,
    slow_requests,
    unanswered,
    unavailable_without_retry_after,
    unexpected_exits,
    unclean_stops,
    rebuild_differs,
    not_quiescent,
    faults_not_injected,
)
