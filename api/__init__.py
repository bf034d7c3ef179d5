"""The HTTP API. `create_app` is the only place it reads configuration."""

from __future__ import annotations

import logging
import uuid

from flask import Flask, g, jsonify, request

from api import assessments, issues
from api.errors import register_error_handlers
from api.http import EXTENSION, Services
from events.db import make_engine
from events.service import AssessmentService
from events.settings import Settings
from events.store import make_store

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1024 * 1024
REQUEST_ID_HEADER = "X-Request-Id"


def create_app(settings: Settings | None = None, services: Services | None = None) -> Flask:
    """Build the app from settings (the environment by default). Nothing connects until the
    first request needs it."""
    settings = settings or Settings.from_env()
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.json.sort_keys = False
    if services is None:
        engine = make_engine(settings.database_url)
        store = make_store(engine)
        # The API's own queries are all reads: no BEGIN and ROLLBACK round trips around them.
        reader = engine.execution_options(isolation_level="AUTOCOMMIT")
        services = Services(settings, reader, store, AssessmentService(store))
    app.extensions[EXTENSION] = services
    register_error_handlers(app)
    app.register_blueprint(assessments.bp)
    app.register_blueprint(issues.bp)
    app.before_request(_assign_request_id)
    app.after_request(_echo_request_id)
    app.add_url_rule("/healthz", "healthz", lambda: jsonify({"status": "ok"}))
    return app


def _assign_request_id() -> None:
    given = request.headers.get(REQUEST_ID_HEADER, "")
    g.request_id = given if 0 < len(given) <= 128 and given.isprintable() else str(uuid.uuid4())


def _echo_request_id(response):
    response.headers[REQUEST_ID_HEADER] = g.get("request_id", "")
    return response
