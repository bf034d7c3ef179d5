"""The OSS issue catalogue: reference data that operators import from a JSON file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Connection, Engine

from projections.tables import oss_issues, upsert

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
        upsert(conn, oss_issues, "id", rows)
    return len(rows)


def list_issues(conn: Connection) -> list[Any]:
    return list(conn.execute(select(oss_issues).order_by(oss_issues.c.id)))


def get_issue(conn: Connection, issue_id: str) -> Any | None:
    return conn.execute(select(oss_issues).where(oss_issues.c.id == issue_id)).first()
