"""The OSS issue catalogue in the database: reference data that operators import from a JSON
file, and the `events.ports.Catalogue` the service reads it through."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sqlalchemy import Column, MetaData, Table, Text, select, text
from sqlalchemy.engine import Engine

from events.ports import Issue
from events.sql.dialect import dialect_of
from events.sql.types import Json

metadata = MetaData()

oss_issues = Table(
    "oss_issues",
    metadata,
    Column("id", Text, primary_key=True),
    Column("title", Text, nullable=False),
    Column("repo_url", Text, nullable=False),
    Column("issue_url", Text, nullable=False),
    Column("task_brief", Text, nullable=False),
    Column("language", Text, nullable=False),
    Column("difficulty", Text, nullable=False),
    Column("labels", Json, nullable=False, server_default=text("'[]'")),
)

REQUIRED = ("id", "title", "repoUrl", "issueUrl", "taskBrief", "language", "difficulty")


class InvalidCatalogue(ValueError):
    pass


def parse_catalogue(doc: Any) -> list[dict[str, Any]]:
    """Catalogue JSON (a list of issue objects, camelCase as the API shows them) to rows."""
    if isinstance(doc, dict):
        doc = doc.get("issues")
    if not isinstance(doc, list):
        raise InvalidCatalogue('expected a list of issues (or {"issues": [...]})')
    rows = []
    for index, item in enumerate(doc):
        if not isinstance(item, dict):
            raise InvalidCatalogue(f"issue #{index}: expected an object")
        missing = [name for name in REQUIRED if not isinstance(item.get(name), str) or not item[name]]
        if missing:
            raise InvalidCatalogue(f"issue #{index}: missing or empty {', '.join(missing)}")
        labels = item.get("labels", [])
        if not isinstance(labels, list) or not all(isinstance(label, str) for label in labels):
            raise InvalidCatalogue(f"issue #{index}: labels must be a list of strings")
        rows.append(
            {
                "id": item["id"],
                "title": item["title"],
                "repo_url": item["repoUrl"],
                "issue_url": item["issueUrl"],
                "task_brief": item["taskBrief"],
                "language": item["language"],
                "difficulty": item["difficulty"],
                "labels": labels,
            }
        )
    ids = [row["id"] for row in rows]
    if len(set(ids)) != len(ids):
        raise InvalidCatalogue(f"duplicate ids: {sorted({i for i in ids if ids.count(i) > 1})}")
    return rows


def import_catalogue(engine: Engine, path: Path) -> int:
    rows = parse_catalogue(json.loads(Path(path).read_text(encoding="utf-8")))
    with engine.begin() as conn:
        dialect_of(conn).upsert(conn, oss_issues, "id", rows)
    return len(rows)


class SqlCatalogue:
    """`events.ports.Catalogue` on the catalogue's table."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def issue(self, issue_id: str) -> Issue | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(oss_issues).where(oss_issues.c.id == issue_id)).first()
        return None if row is None else issue_of(row._mapping)

    def issues(self) -> list[Issue]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(oss_issues).order_by(oss_issues.c.id))
            return [issue_of(row._mapping) for row in rows]


def issue_of(row: Mapping[str, Any]) -> Issue:
    return Issue(**{**row, "labels": tuple(row["labels"] or ())})
