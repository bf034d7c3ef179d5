"""`/docs` in a real browser: Swagger UI renders every operation of `/openapi.json` from assets the
service serves itself, and the page asks no other host for anything, under each way the API is
served (the test run's werkzeug server, gunicorn via `assessments api`, `assessments dev`).

The browser is headless Chromium from the system packages (`apt-get install chromium`), run once
per page as `--dump-dom`. Every host name resolves to nothing, so nothing leaves the machine, and
Chromium's network log shows which URLs the page itself asked for (Chromium's own background
requests have no page as initiator, and are left out).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from events.runtime.settings import Settings
from tests.support.system import Client, System
from tests.support.wait import wait_for

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",  # the tests run as root
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
]
#: Virtual time: it advances only while the page is idle, so slow loading on a busy machine
#: does not use it up.
VIRTUAL_TIME_BUDGET_MS = 30_000
BROWSER_TIMEOUT_SECONDS = 120
METHODS = {"get", "put", "post", "delete", "patch"}


# --- the browser ------------------------------------------------------------------------------


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    message = "Chromium is not installed: `apt-get install chromium` (the docs page is tested in it)."
    if os.environ.get("ASSESSMENTS_TEST_ALLOW_SKIP") == "1":
        pytest.skip(message)
    pytest.fail(message, pytrace=False)


def load(url: str, directory: Path) -> tuple[str, list[dict]]:
    """The page's DOM once the browser is idle, and the network log's requests."""
    net_log = directory / "net-log.json"
    command = [
        chromium(),
        *CHROMIUM_FLAGS,
        f"--user-data-dir={directory / 'profile'}",
        f"--log-net-log={net_log}",
        f"--virtual-time-budget={VIRTUAL_TIME_BUDGET_MS}",
        "--dump-dom",
        url,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=BROWSER_TIMEOUT_SECONDS)
    assert done.returncode == 0, f"chromium exited {done.returncode}: {done.stderr[-2000:]}"
    return done.stdout, requests_started(net_log.read_text())


def requests_started(net_log: str) -> list[dict]:
    """Each request's URL and initiator (the origin of the page that asked for it)."""
    try:
        log = json.loads(net_log)
    except json.JSONDecodeError:  # a log cut short at exit lacks its closing brackets
        log = json.loads(net_log.rstrip().rstrip(",") + "]}")
    start = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    return [
        event["params"]
        for event in log["events"]
        if event["type"] == start and "url" in event.get("params", {})
    ]


class Operations(HTMLParser):
    """The (METHOD, path) of each operation block Swagger UI rendered, in page order."""

    def __init__(self) -> None:
        super().__init__()
        self.blocks = 0
        self.methods: list[str] = []
        self.paths: list[str] = []
        self._in_method = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        classes = (attributes.get("class") or "").split()
        self.blocks += "opblock" in classes
        self._in_method = "opblock-summary-method" in classes
        if "opblock-summary-path" in classes:
            self.paths.append(attributes["data-path"] or "")

    def handle_data(self, data: str) -> None:
        if self._in_method:
            self.methods.append(data.strip())
            self._in_method = False

    @classmethod
    def of(cls, dom: str) -> list[tuple[str, str]]:
        parser = cls()
        parser.feed(dom)
        assert parser.blocks == len(parser.methods) == len(parser.paths), "one method, one path"
        return list(zip(parser.methods, parser.paths, strict=True))


# --- the servers ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.ConnectionError:
        return False


def command_line(name: str, port: int, directory: Path) -> list[str]:
    if name == "gunicorn":
        return ["api", "--bind", f"127.0.0.1:{port}", "--workers", "1"]
    return ["dev", "--bind", f"127.0.0.1:{port}", "--database", str(directory / "dev.sqlite3")]


@contextlib.contextmanager
def process(name: str, settings: Settings, directory: Path) -> Iterator[str]:
    """`assessments api` (gunicorn) or `assessments dev` on a port of its own; its base URL."""
    port = free_port()
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("ASSESSMENTS_", "PROMETHEUS_"))}
    environment = {
        **inherited,
        "ASSESSMENTS_DATABASE_URL": settings.database_url,
        "ASSESSMENTS_BROKER_URL": settings.broker_url,
    }
    with (directory / f"{name}.stderr").open("w") as stderr:
        server = subprocess.Popen(
            [sys.executable, "-m", "cli", *command_line(name, port, directory)],
            cwd=ROOT,
            env=environment,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: server.poll() is not None or answers(f"{base}/healthz"), 30, f"{name} to answer")
        assert server.poll() is None, f"{name} exited: {(directory / f'{name}.stderr').read_text()[-2000:]}"
        yield base
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@pytest.fixture(params=["werkzeug", "gunicorn", "dev"])
def served(request: pytest.FixtureRequest, shared_system: System, tmp_path: Path) -> Iterator[str]:
    """The base URL of the API served one way or another."""
    if request.param == "werkzeug":
        yield shared_system.api.url
    else:
        with process(request.param, shared_system.settings, tmp_path) as base:
            yield base


@pytest.fixture(scope="module")
def spec_operations(shared_system: System) -> list[tuple[str, str]]:
    with Client(shared_system.api.url) as anonymous:
        spec = anonymous.get("/openapi.json").json()
    return [
        (method.upper(), path) for path, item in spec["paths"].items() for method in item if method in METHODS
    ]


# --- the page in the browser ------------------------------------------------------------------


def test_the_page_renders_every_operation_with_nothing_but_the_services_own_assets(
    served: str, spec_operations: list[tuple[str, str]], tmp_path: Path
):
    dom, started = load(f"{served}/docs", tmp_path)

    rendered = Operations.of(dom)
    assert ("GET", "/v1/assessments/{assessmentId}") in rendered, dom[-2000:]
    assert sorted(rendered) == sorted(spec_operations)
    asked = [request["url"] for request in started if request.get("initiator") == served]
    assert f"{served}/openapi.json" in asked
    assert any(url.startswith(f"{served}/docs/assets/swagger-ui-bundle.js") for url in asked), asked
    assert [url for url in asked if not url.startswith(f"{served}/")] == []


# --- the page and its assets over HTTP ----------------------------------------------------------

LINK = re.compile(r"""\b(?:src|href)\s*=\s*["']([^"']*)["']""", re.IGNORECASE)
ASSET_TYPES = {".css": "text/css", ".js": "text/javascript", ".png": "image/png"}


def test_the_page_links_only_its_own_assets_and_allows_only_its_own_origin(anonymous: Client):
    page = anonymous.get("/docs")

    assert page.status_code == 200
    links = LINK.findall(page.text)
    assert links and all(link.startswith("/") and not link.startswith("//") for link in links), links
    assert "://" not in page.text
    policy = dict(
        directive.strip().split(" ", 1) for directive in page.headers["Content-Security-Policy"].split(";")
    )
    assert policy["default-src"] == "'none'"
    assert policy["script-src"] == policy["style-src"] == policy["connect-src"] == "'self'"
    assert not any("*" in sources or "http" in sources for sources in policy.values()), policy
    assert page.headers["Cache-Control"] == "no-cache"
    for link in links:
        asset = anonymous.get(link)
        assert asset.status_code == 200, link
        suffix = Path(link.split("?")[0]).suffix
        assert asset.headers["Content-Type"].split(";")[0] == ASSET_TYPES[suffix], link
        assert asset.headers["Cache-Control"] == "public, max-age=31536000, immutable", link
        assert asset.headers["X-Content-Type-Options"] == "nosniff"
        assert len(asset.content) > 0


def test_an_asset_asked_for_without_its_version_is_revalidated_by_its_etag(anonymous: Client):
    first = anonymous.get("/docs/assets/swagger-ui.css")
    again = anonymous.get("/docs/assets/swagger-ui.css", headers={"If-None-Match": first.headers["ETag"]})
    start = anonymous.get("/docs/assets/start.js")
    start_again = anonymous.get("/docs/assets/start.js", headers={"If-None-Match": start.headers["ETag"]})

    assert (first.status_code, first.headers["Cache-Control"]) == (200, "no-cache")
    assert b".swagger-ui" in first.content
    assert (again.status_code, again.content) == (304, b"")
    assert (start.status_code, start_again.status_code) == (200, 304)
    assert b"SwaggerUIBundle" in start.content


@pytest.mark.parametrize(
    "path",
    [
        "/docs/assets/LICENSE",  # in the package, not an asset of the page
        "/docs/assets/index.css",
        "/docs/assets/..%2F__init__.py",
        "/docs/assets/%2e%2e",
        "/docs/assets/../openapi.py",
        "/docs/assets/",
        "/docs/assets/swagger-ui.css/..%2F..%2Fflask_swagger_ui.py",
    ],
)
def test_only_the_pages_assets_are_served(anonymous: Client, path: str):
    response = anonymous.get(path)

    assert response.status_code == 404, response.text[:200]
    assert response.json()["error"]["code"] == "not_found"


def test_the_pages_routes_stay_out_of_the_document_and_count_under_their_rule(anonymous: Client):
    anonymous.get("/docs/assets/start.js")
    spec = anonymous.get("/openapi.json").json()
    exposition = anonymous.get("/metrics").text

    assert [path for path in spec["paths"] if path.startswith("/docs")] == []
    routes = {
        sample.labels["route"]
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
        if sample.name == "assessments_http_requests_total"
    }
    assert "/docs/assets/<name>" in routes
    assert not any(route.startswith("/docs/assets/") and route != "/docs/assets/<name>" for route in routes)
