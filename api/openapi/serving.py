"""`/openapi.json`: the document, built on the first request that asks for it and kept on the
app."""

from __future__ import annotations

import threading
from typing import Any

from flask import Blueprint, Flask, current_app, jsonify

from api import docs_page
from api.openapi.document import build_spec

EXTENSION = "openapi"

_LOCK = threading.Lock()


def _spec() -> dict[str, Any]:
    app = current_app
    with _LOCK:
        if EXTENSION not in app.extensions:
            app.extensions[EXTENSION] = build_spec(app)
    return app.extensions[EXTENSION]


bp = Blueprint("openapi", __name__)


@bp.get("/openapi.json", endpoint="spec")
def _serve_spec():
    return jsonify(_spec())


def register(app: Flask) -> None:
    app.register_blueprint(bp)
    docs_page.register(app)
