"""The baseline for bench/core.py: Flask + one INSERT per create, under the same gunicorn
settings as the real API. `python -m bench.baseline_app HOST:PORT WORKERS`."""

from __future__ import annotations

import json
import os
import sys
import uuid
from datetime import UTC, datetime

from flask import Flask, jsonify, request
from sqlalchemy import text

from cli.server import gunicorn_options
from events.sql.engine import make_engine


def create_app() -> Flask:
    app = Flask(__name__)
    engine = make_engine(os.environ["BENCH_DATABASE_URL"])

    @app.get("/")
    def alive():
        return "ok"

    @app.post("/v1/assessments")
    def create():
        body = request.get_json()
        row = {"id": uuid.uuid4(), "body": json.dumps(body), "created_at": datetime.now(UTC)}
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO baseline VALUES (:id, CAST(:body AS jsonb), :created_at)"), row)
        return jsonify({"assessment": {**body, "id": str(row["id"])}}), 201

    return app


if __name__ == "__main__":
    from gunicorn.app.base import BaseApplication

    class Baseline(BaseApplication):
        def load_config(self):
            options = gunicorn_options(sys.argv[1], int(sys.argv[2]))
            for key, value in options.items():
                self.cfg.set(key, value)

        def load(self):
            return create_app()

    Baseline().run()
