"""Progress of a long command (a rebuild) for the operator who started it."""

from __future__ import annotations

import logging
import sys
import time

import click

log = logging.getLogger("assessments")


class Progress:
    """Events done / total, rate and ETA: redrawn in place on a terminal, logged otherwise."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.started = time.monotonic()
        self.last_shown = 0.0
        self.tty = sys.stderr.isatty()

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if now - self.last_shown < (0.5 if self.tty else 5.0) and done < total:
            return
        self.last_shown = now
        rate = done / max(now - self.started, 1e-9)
        eta = (total - done) / rate if rate else 0.0
        line = f"{self.label}: {done:,}/{total:,} events, {rate:,.0f}/s, ETA {eta:,.0f}s"
        if self.tty:
            click.echo(f"\r{line}\033[K", nl=done >= total, err=True)
        else:
            log.info(line)
