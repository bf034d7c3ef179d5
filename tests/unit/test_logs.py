"""The log formats: one JSON object per line with the record's extra fields, and credentials
masked in every format even when a message quotes them."""

from __future__ import annotations

import json
import logging
import sys

from events.runtime.logs import JsonFormatter, TextFormatter

TOKEN = "ast_k3J9xQ2a_0123456789abcdefghijklmnopqrstuvwxyzABCDEFG"
KEY = "PST-ABCD-EF23"


def record(message: str, *args, exc_info=None, **extra) -> logging.LogRecord:
    made = logging.LogRecord("worker.handler", logging.INFO, __file__, 1, message, args, exc_info)
    made.__dict__.update(extra)
    return made


def test_a_json_line_holds_time_level_logger_message_and_the_extra_fields():
    line = json.loads(JsonFormatter().format(record("applied %d", 3, correlation_id="rid-1")))

    assert line["level"] == "INFO"
    assert line["logger"] == "worker.handler"
    assert line["message"] == "applied 3"
    assert line["correlation_id"] == "rid-1"
    assert line["time"].endswith("+00:00")


def test_a_json_line_carries_the_exception_on_the_same_line():
    try:
        raise ValueError("boom")
    except ValueError:
        formatted = JsonFormatter().format(record("failed", exc_info=sys.exc_info()))

    assert "\n" not in formatted
    assert "ValueError: boom" in json.loads(formatted)["exception"]


def test_tokens_bearer_credentials_and_candidate_keys_are_masked_in_both_formats():
    quoted = record("params (%s, %s) header Authorization: Bearer abc.def", TOKEN, KEY, token=TOKEN)

    for formatter in (JsonFormatter(), TextFormatter()):
        formatted = formatter.format(quoted)
        assert TOKEN not in formatted
        assert KEY not in formatted
        assert "abc.def" not in formatted
        assert "[redacted]" in formatted


def test_a_token_prefix_alone_is_not_a_secret_and_stays():
    assert "ast_k3J9xQ2a" in TextFormatter().format(record("revoked tokens ast_k3J9xQ2a"))
