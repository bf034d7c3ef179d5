"""What the HTTP servers answer by themselves: requests over gunicorn's limits or malformed
ones (answered before the app sees them) follow the API's error shape with an X-Request-Id, and
the body limit holds for chunked bodies as for those with a Content-Length, under the real
`assessments api` (gunicorn) and under the werkzeug server of the other e2e tests."""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from api import MAX_BODY_BYTES
from events.tenancy import IssuedToken
from tests.e2e.helpers import body
from tests.e2e.test_health_metrics import Process, answers, free_port
from tests.support.system import System
from tests.support.wait import wait_for

#: gunicorn's defaults, which `assessments api` keeps (see README, "Running in production").
LIMIT_REQUEST_LINE = 4094
LIMIT_REQUEST_FIELDS = 100
LIMIT_REQUEST_FIELD_SIZE = 8190


@pytest.fixture(scope="module")
def gunicorn(shared_system: System, tmp_path_factory) -> Iterator[tuple[str, int]]:
    """`assessments api` on the shared system's database: (host, port)."""
    port = free_port()
    directory: Path = tmp_path_factory.mktemp("gunicorn")
    api = Process(["api", "--bind", f"127.0.0.1:{port}", "--workers", "1"], shared_system.settings, directory)
    try:
        wait_for(lambda: answers(f"http://127.0.0.1:{port}/healthz"), 30, "the API to answer")
        yield "127.0.0.1", port
    finally:
        api.stop()


@pytest.fixture(scope="module")
def werkzeug(shared_system: System) -> tuple[str, int]:
    host, port = shared_system.api.url.removeprefix("http://").split(":")
    return host, int(port)


@pytest.fixture(params=["gunicorn", "werkzeug"])
def server(request) -> tuple[str, int]:
    return request.getfixturevalue(request.param)


@dataclass(frozen=True)
class Answer:
    status: int
    headers: http.client.HTTPMessage
    body: bytes


def exchange(address: tuple[str, int], raw: bytes) -> Answer:
    """Send raw bytes as they are (no client library to tidy them up) and read the answer."""
    sock = socket.create_connection(address, timeout=10)
    try:
        with contextlib.suppress(OSError):  # the server may answer and close before reading it all
            sock.sendall(raw)
        response = http.client.HTTPResponse(sock)
        response.begin()
        return Answer(response.status, response.headers, response.read())
    finally:
        sock.close()


def request_bytes(request_line: str, *headers: str, body: bytes = b"") -> bytes:
    return "\r\n".join([request_line, "Host: localhost", *headers, "", ""]).encode("latin-1") + body


def assert_error_shape(response: Answer, status: int) -> dict:
    assert response.status == status, (response.status, response.body[:300])
    assert response.headers.get("Content-Type", "").startswith("application/json")
    assert uuid.UUID(response.headers.get("X-Request-Id", ""))
    document = json.loads(response.body)
    assert set(document) == {"error"}
    error = document["error"]
    assert set(error) == {"code", "message", "details"}
    assert isinstance(error["code"], str) and error["code"]
    assert isinstance(error["message"], str) and error["message"]
    assert error["details"] == {}
    return error


# --- what gunicorn answers itself ------------------------------------------------------------


def test_a_request_line_over_the_limit_is_414_in_the_error_shape(gunicorn):
    path = "/v1/assessments?after=" + "a" * LIMIT_REQUEST_LINE

    response = exchange(gunicorn, request_bytes(f"GET {path} HTTP/1.1"))

    assert assert_error_shape(response, 414)["code"] == "uri_too_long"


def test_too_many_header_fields_is_431_in_the_error_shape(gunicorn):
    headers = [f"X-Filler-{n}: {n}" for n in range(LIMIT_REQUEST_FIELDS + 1)]

    response = exchange(gunicorn, request_bytes("GET /v1/assessments HTTP/1.1", *headers))

    assert assert_error_shape(response, 431)["code"] == "request_header_fields_too_large"


def test_a_header_field_over_the_limit_is_431_in_the_error_shape(gunicorn):
    header = "X-Filler: " + "a" * LIMIT_REQUEST_FIELD_SIZE

    response = exchange(gunicorn, request_bytes("GET /v1/assessments HTTP/1.1", header))

    assert_error_shape(response, 431)


@pytest.mark.parametrize(
    "raw",
    [
        request_bytes("GET /v1/assessments HTTP/1.1", "X-Request-Id: a\x00b"),
        request_bytes("POST /v1/assessments HTTP/1.1", "Idempotency-Key: a\x00b", "Content-Length: 0"),
        request_bytes("GET /v1/assessments HTTP/1.1", "Bad Header: x"),
        request_bytes("GET /v1/assessments HTTP/9.9"),
        b"NOT HTTP AT ALL\r\n\r\n",
        request_bytes("GET /v1/assessments HTTP/1.1", "Content-Length: 5", "Content-Length: 6"),
    ],
    ids=[
        "nul-in-request-id",
        "nul-in-idempotency-key",
        "space-in-header-name",
        "http-9",
        "garbage",
        "two-lengths",
    ],
)
def test_a_malformed_request_is_400_in_the_error_shape(gunicorn, raw):
    response = exchange(gunicorn, raw)

    assert assert_error_shape(response, 400)["code"] == "validation_error"


def test_a_malformed_chunked_body_is_400_in_the_error_shape(gunicorn, org: IssuedToken):
    raw = request_bytes(
        "POST /v1/assessments HTTP/1.1",
        f"Authorization: Bearer {org.token}",
        "Content-Type: application/json",
        "Transfer-Encoding: chunked",
        body=b"zz\r\n{}\r\n0\r\n\r\n",
    )

    response = exchange(gunicorn, raw)

    assert_error_shape(response, 400)


# --- the body limit, chunked or not, under both servers --------------------------------------


def chunked(payload: bytes, size: int = 64 * 1024) -> bytes:
    pieces = [payload[start : start + size] for start in range(0, len(payload), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces) + b"0\r\n\r\n"


def create_of_exactly(size: int) -> bytes:
    """A valid create body padded with JSON whitespace to `size` bytes."""
    sent = json.dumps(body()).encode()
    return sent + b" " * (size - len(sent))


def post_create(server, token: str, payload: bytes, *, chunk: bool) -> Answer:
    framing = "Transfer-Encoding: chunked" if chunk else f"Content-Length: {len(payload)}"
    raw = request_bytes(
        "POST /v1/assessments HTTP/1.1",
        f"Authorization: Bearer {token}",
        "Content-Type: application/json",
        "Connection: close",
        framing,
        body=chunked(payload) if chunk else payload,
    )
    return exchange(server, raw)


@pytest.mark.parametrize("chunk", [True, False], ids=["chunked", "content-length"])
def test_a_body_over_the_limit_is_413_in_the_error_shape(server, org: IssuedToken, chunk):
    response = post_create(server, org.token, create_of_exactly(MAX_BODY_BYTES + 1), chunk=chunk)

    assert assert_error_shape(response, 413)["code"] == "payload_too_large"


@pytest.mark.parametrize("chunk", [True, False], ids=["chunked", "content-length"])
def test_a_body_of_exactly_the_limit_is_accepted(server, org: IssuedToken, chunk):
    response = post_create(server, org.token, create_of_exactly(MAX_BODY_BYTES), chunk=chunk)

    assert response.status == 201, response.body[:300]


def test_an_unsupported_method_answers_405_with_allow_under_gunicorn(gunicorn, org: IssuedToken):
    raw = request_bytes(
        "PUT /v1/assessments HTTP/1.1", f"Authorization: Bearer {org.token}", "Content-Length: 0"
    )

    response = exchange(gunicorn, raw)

    assert response.status == 405
    assert set(response.headers.get("Allow", "").split(", ")) >= {"GET", "POST"}
