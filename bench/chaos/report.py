"""The run's report: the load, the faults, the checks' table, and the exceptions the API logged."""

from __future__ import annotations

import contextlib
import json
from collections import Counter, defaultdict
from pathlib import Path

from bench.chaos.checks import CHECKS, acknowledged_writes
from bench.chaos.evidence import Evidence
from bench.chaos.processes import exception_summary
from bench.chaos.records import Check


def print_load(evidence: Evidence) -> None:
    by_route: dict[tuple[str, str], Counter] = defaultdict(Counter)
    for record in evidence.requests:
        by_route[(record.method, record.route)][record.status if record.status is not None else "none"] += 1
    writes = Counter(r.wrote.kind for r in acknowledged_writes(evidence))
    print(f"\nload: {len(evidence.requests)} requests; acknowledged writes: {dict(writes)}")
    for (method, route), statuses in sorted(by_route.items()):
        detail = ", ".join(f"{status}: {n}" for status, n in sorted(statuses.items(), key=str))
        print(f"  {method:6} {route:40} {detail}")
    print(f"store: {len(evidence.store)} events; audit queue: {len(evidence.published)} messages")


def print_faults(evidence: Evidence) -> None:
    print("\nfaults:")
    for window in evidence.windows:
        print(
            f"  {window.describe():45} {window.detail}{'  FAILED ' + window.failed if window.failed else ''}"
        )
    drained = f"{evidence.quiescent_after:.1f} s" if evidence.quiescent_after is not None else "never"
    print(f"pipeline drained {drained} after the load")


def print_table(checks: list[Check]) -> None:
    width = max(len(c.name) for c in checks)
    print(f"\n{'check':{width}}  {'count':>6}  result")
    for c in checks:
        print(f"{c.name:{width}}  {c.count:>6}  {'ok' if c.count == 0 else 'VIOLATED'}")
    for c in checks:
        if c.count:
            print(f"\n{c.name} ({c.count}), e.g.:")
            for example in c.examples:
                print(f"  {example}")


def print_api_errors(log_path: Path) -> None:
    """The exceptions the API logged (those behind its 500s among them), with the place in the
    project's code they came through; the full tracebacks are in its log (--logs)."""
    if not log_path.exists():
        return
    causes: Counter = Counter()
    for line in log_path.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith("{") and '"exception"' in line:
            with contextlib.suppress(ValueError):
                causes[exception_summary(json.loads(line)["exception"])] += 1
    if causes:
        print("\nexceptions in the API's log:")
        for cause, count in causes.most_common(8):
            print(f"  {count:5}  {cause}")


def report(evidence: Evidence, logs: Path) -> int:
    checks = [run_check(evidence) for run_check in CHECKS]
    print_load(evidence)
    print_faults(evidence)
    print_table(checks)
    print_api_errors(logs / "api.log")
    violated = [c.name for c in checks if c.count]
    print(f"\n{'VIOLATED: ' + '; '.join(violated) if violated else 'all checks passed'}")
    return 1 if violated else 0
