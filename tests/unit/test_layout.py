"""The import rules of design.md, checked rather than only reviewed: the one-way direction
events <- projections <- api | worker <- cli, a core of the standard library only (the
contracts are in pyproject.toml, `[tool.importlinter]`), and an API process that loads none of
the relay's or the worker's modules."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def test_the_import_contracts_are_kept():
    done = subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


def test_an_api_process_loads_neither_the_relay_nor_the_worker():
    """Their metrics are made as their modules load, and under the API's multiprocess
    registry each would open a file in a process that never uses it."""
    probe = (
        "import sys, cli.main, cli.server\n"
        "print(sorted(m for m in sys.modules if m.startswith(('worker', 'events.rabbitmq.relay'))))"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
