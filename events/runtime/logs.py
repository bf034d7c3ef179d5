"""Logging of the processes: one JSON object per line in production, readable text in development.

Plain `logging`; the fields a line carries beyond the message come from `extra=` (for example
`request_id`, `correlation_id`, `route`, `duration_ms`), so a log pipeline can follow one
request through the API, the relay, the worker and the cascade.

No code logs a secret on purpose. As a second line of defence both formats mask anything shaped
like a reviewer token, a `Bearer` credential or a candidate key, because some messages quote
text we do not control (a database driver's error repeats the failing statement's parameters).
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

FORMATS = ("json", "text")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s"

_SECRETS = re.compile(
    r"(?P<bearer>(?i:bearer)\s+)[^\s\"',\\]+"
    r"|ast_[\w-]{8}_[\w-]{16,}"  # a reviewer token (its 12-character prefix alone is public)
    r"|PST-[A-Z0-9]{4}-[A-Z0-9]{4}"  # a candidate key
)

#: Attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


def redact(text: str) -> str:
    if "ast_" not in text and "PST-" not in text and "earer" not in text:
        return text  # the common case costs three substring checks
    return _SECRETS.sub(lambda m: f"{m['bearer']}[redacted]" if m["bearer"] else "[redacted]", text)


class JsonFormatter(logging.Formatter):
    """`{"time", "level", "logger", "message", ...extra fields, "exception"?}` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.process,
            "thread": record.threadName,
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return redact(json.dumps(line, default=str, ensure_ascii=False))


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def configure(level: str = "INFO", fmt: str = "text", stream: TextIO | None = None) -> None:
    """Replace the root logger's handlers with one writing `fmt` lines to stderr."""
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    # werkzeug's own request lines (`assessments dev`) would double the app's access log.
    for noisy in ("alembic", "werkzeug"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # pika logs every failed connect at ERROR, in several lines; the relay and the worker log
    # each outage once themselves (`events.reconnect`), with pika's error in the line.
    logging.getLogger("pika").setLevel(logging.DEBUG if level.upper() == "DEBUG" else logging.CRITICAL)
