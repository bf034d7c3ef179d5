"""`/docs`: Swagger UI over `/openapi.json`, served entirely by the service itself.

Swagger UI's script and styles come from the `flask-swagger-ui` package, which ships Swagger UI's
own distribution and follows its releases; only its files are used, not its blueprint. So the page
works on a host without internet, and no visitor's browser fetches third-party code: its
Content-Security-Policy allows the service's own origin only.

Assets are served by name from a fixed list, so no part of a URL ever reaches the file system.
Their URLs carry the version of what they serve, so browsers may keep them for a year.
"""

from __future__ import annotations

import hashlib
from importlib import metadata
from pathlib import Path

import flask_swagger_ui
from flask import Blueprint, Flask, Response, abort, request, send_file, url_for
from markupsafe import escape

#: Where the package keeps Swagger UI's distribution.
DIST = Path(flask_swagger_ui.__file__).parent / "dist"

#: Starts Swagger UI on the page's `#docs` element. A file of its own, not an inline script, so the
#: page's policy can allow scripts from the service only. `validatorUrl: null`: by default Swagger UI
#: sends the document's URL to validator.swagger.io for a badge.
_START_SCRIPT = """\
"use strict";
(function () {
  var element = document.getElementById("docs");
  window.ui = SwaggerUIBundle({url: element.dataset.specUrl, domNode: element, validatorUrl: null});
})();
"""

#: Every asset the page loads: name → (content type, the packaged file, or None for the script above).
_ASSETS: dict[str, tuple[str, Path | None]] = {
    "swagger-ui.css": ("text/css", DIST / "swagger-ui.css"),
    "swagger-ui-bundle.js": ("text/javascript", DIST / "swagger-ui-bundle.js"),
    "favicon-32x32.png": ("image/png", DIST / "favicon-32x32.png"),
    "start.js": ("text/javascript", None),
}

#: Changes whenever any asset does: Swagger UI's version, or the start script.
_START_DIGEST = hashlib.sha256(_START_SCRIPT.encode()).hexdigest()[:8]
ASSET_VERSION = f"{metadata.version('flask-swagger-ui')}-{_START_DIGEST}"

_IMMUTABLE = "public, max-age=31536000, immutable"

#: The service's own origin only. `data:` images: Swagger UI's stylesheet draws its icons with them.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)

_PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Assessments API</title>
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <link rel="icon" type="image/png" href="{favicon}">
  <link rel="stylesheet" href="{stylesheet}">
</head>
<body>
  <div id="docs" data-spec-url="{spec_url}"></div>
  <script src="{bundle}"></script>
  <script src="{start}"></script>
</body>
</html>
"""

bp = Blueprint("docs", __name__)

#: The endpoints of this page, which the OpenAPI document leaves out: they are not the API.
ENDPOINTS = frozenset({"docs.page", "docs.asset"})


def _asset_url(name: str) -> str:
    return url_for("docs.asset", name=name, v=ASSET_VERSION)


def _page() -> str:
    urls = {
        "favicon": _asset_url("favicon-32x32.png"),
        "stylesheet": _asset_url("swagger-ui.css"),
        "bundle": _asset_url("swagger-ui-bundle.js"),
        "start": _asset_url("start.js"),
        "spec_url": url_for("openapi.spec"),
    }
    return _PAGE.format(**{key: escape(url) for key, url in urls.items()})


def _asset(name: str) -> Response:
    """The named asset, conditional on its ETag. Cached for good only when asked for by the
    versioned URL the page uses: any other URL may outlive an upgrade."""
    if name not in _ASSETS:
        abort(404)
    content_type, path = _ASSETS[name]
    if path is None:
        response = Response(_START_SCRIPT, mimetype=content_type)
        response.add_etag()
        response.make_conditional(request)
    else:
        response = send_file(path, mimetype=content_type, conditional=True, etag=True)
    response.headers["Cache-Control"] = _IMMUTABLE if request.args.get("v") == ASSET_VERSION else "no-cache"
    for superseded in ("Expires", "Date"):  # by Cache-Control, and by the server's own Date
        response.headers.pop(superseded, None)
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


@bp.get("/docs", endpoint="page")
def _serve_page():
    """The API's documentation, browsable."""
    headers = {
        "Content-Type": "text/html; charset=utf-8",
        "Content-Security-Policy": CONTENT_SECURITY_POLICY,
        "Cache-Control": "no-cache",
        "X-Content-Type-Options": "nosniff",
    }
    return _page(), 200, headers


@bp.get("/docs/assets/<name>", endpoint="asset")
def _serve_asset(name: str):
    """A script, stylesheet or icon of the documentation page."""
    return _asset(name)


def register(app: Flask) -> None:
    app.register_blueprint(bp)
