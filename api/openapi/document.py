"""The document itself: an OpenAPI 3.1 description of every route of an app.

Paths come from the app's own URL map, so a route cannot be left out: a route without an entry
in `operations` still appears, marked `x-undocumented`.
"""

from __future__ import annotations

import re
from importlib import metadata
from typing import Any

from apispec import APISpec
from flask import Flask

from api import docs_page
from api.openapi import components
from api.openapi.operations import PATH_PARAMETERS, operations
from events import codec

OPENAPI_VERSION = "3.1.0"
#: Routes that serve the document itself; not part of the API it describes.
SELF_ENDPOINTS = {"static", "openapi.spec", *docs_page.ENDPOINTS}


_RULE_ARGUMENT = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")


def openapi_path(rule: str) -> str:
    """`/v1/assessments/<assessment_id>` → `/v1/assessments/{assessmentId}`."""
    return _RULE_ARGUMENT.sub(lambda m: "{" + codec.camel(m.group(1)) + "}", rule)


def _path_parameters(rule: str) -> list[dict[str, Any]]:
    default = {"description": "", "schema": {"type": "string"}}
    return [
        {"in": "path", "name": codec.camel(name), "required": True, **PATH_PARAMETERS.get(name, default)}
        for name in _RULE_ARGUMENT.findall(rule)
    ]


def _undocumented(app: Flask, endpoint: str) -> dict[str, Any]:
    doc = (app.view_functions[endpoint].__doc__ or endpoint).strip().splitlines()[0]
    return {
        "summary": doc,
        "x-undocumented": True,
        "responses": {"default": {"description": "Undocumented."}},
    }


def _version() -> str:
    try:
        return metadata.version("assessments")
    except metadata.PackageNotFoundError:
        return "0.0.0"


def build_spec(app: Flask) -> dict[str, Any]:
    plugin = components.Plugin()
    spec = APISpec(
        title="Assessments API",
        version=_version(),
        openapi_version=OPENAPI_VERSION,
        plugins=[plugin],
        info={
            "description": "Assessments, their candidate keys and the OSS issue catalogue. Errors always "
            "have the shape of the Error schema. Timestamps are UTC with millisecond precision."
        },
    )
    components.register(spec)
    documented = operations(plugin.converter)

    by_path: dict[str, dict[str, Any]] = {}
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        if rule.endpoint in SELF_ENDPOINTS:
            continue
        path = by_path.setdefault(rule.rule, {"operations": {}, "parameters": _path_parameters(rule.rule)})
        methods = sorted((rule.methods or set()) - {"HEAD", "OPTIONS"})
        for method in methods:
            operation = documented.get((rule.rule, method)) or _undocumented(app, rule.endpoint)
            operation_id = rule.endpoint if len(methods) == 1 else f"{rule.endpoint}.{method.lower()}"
            path["operations"][method.lower()] = {"operationId": operation_id, **operation}
    for rule, path in by_path.items():
        spec.path(path=openapi_path(rule), operations=path["operations"], parameters=path["parameters"])

    document = spec.to_dict()
    components.refine(document)
    return document
