"""The HTTP API. `create_app` builds the app around the parts the composition root
(`cli.bootstrap`) made for it; the API reads no configuration of its own."""

from __future__ import annotations

import logging
import time
import uuid

from flask import Flask, g, request

from api import assessments, candidate, erasure, health, issues, metrics, sessions, webhooks
from api.errors import register_error_handlers
from api.http import EXTENSION, PathSegment, Services

log = logging.getLogger(__name__)
access_log = logging.getLogger("api.access")

MAX_BODY_BYTES = 1024 * 1024
REQUEST_ID_HEADER = "X-Request-Id"
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def create_app(services: Services) -> Flask:
    """The app around its services. Nothing connects until the first request needs it."""
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.json.sort_keys = False
    app.extensions[EXTENSION] = services
    app.url_map.converters["default"] = app.url_map.converters["string"] = PathSegment
    register_error_handlers(app)
    app.register_blueprint(assessments.bp)
    app.register_blueprint(issues.bp)
    app.register_blueprint(candidate.bp)
    app.register_blueprint(sessions.bp)
    app.register_blueprint(webhooks.bp)
    app.register_blueprint(erasure.bp)
    from api import openapi  # `/openapi.json` and `/docs`, built lazily from the URL map

    openapi.register(app)
    app.before_request(_assign_request_id)
    app.after_request(_finish_request)
    health.register(app)
    return app


def _assign_request_id() -> None:
    given = request.headers.get(REQUEST_ID_HEADER, "")
    g.request_id = given if 0 < len(given) <= 128 and given.isprintable() else str(uuid.uuid4())
    g.started = time.perf_counter()


def _finish_request(response):
    """Echo the request id; count and time the request; write its one access-log line (at
    DEBUG for the probes, which are polled every second). Never the headers: they hold the
    credentials."""
    request_id = g.get("request_id", "")
    response.headers[REQUEST_ID_HEADER] = request_id
    seconds = time.perf_counter() - g.get("started", time.perf_counter())
    route = request.url_rule.rule if request.url_rule is not None else "<unmatched>"
    method = request.method if request.method in KNOWN_METHODS else "OTHER"
    status = response.status_code
    metrics.http_requests.labels(method, route, status).inc()
    metrics.http_request_seconds.labels(method, route, status).observe(seconds)
    level = logging.DEBUG if route in health.PROBE_ROUTES else logging.INFO
    if access_log.isEnabledFor(level):
        duration_ms = round(seconds * 1000, 2)
        reviewer = g.get("reviewer")
        access_log.log(
            level,
            "%s %s %s %.1fms rid=%s",
            method,
            request.path,
            status,
            duration_ms,
            request_id,
            extra={
                "method": method,
                "route": route,
                "path": request.path,
                "status": status,
                "duration_ms": duration_ms,
                "request_id": request_id,
                "org_id": reviewer.org_id if reviewer is not None else None,
            },
        )
    return response
