"""A real HTTP receiver for webhook deliveries, on 127.0.0.1 only, and the resolver the tests
give the API and the dispatcher: it knows loopback and nothing else, so no test can send a
delivery (or even a DNS query) anywhere but this machine."""

from __future__ import annotations

import ipaddress
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from events.webhooks import UnsafeUrl


def loopback_only(host: str, port: int) -> list[str]:
    """`localhost` and loopback literals resolve; any other name or address is refused."""
    if host == "localhost":
        return ["127.0.0.1"]
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise UnsafeUrl(f"The host {host!r} does not resolve (tests resolve loopback only).") from None
    if not address.is_loopback:
        raise UnsafeUrl(f"{host} is not loopback: the tests send nowhere else.")
    return [str(address)]


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    @property
    def json(self) -> dict[str, Any]:
        return json.loads(self.body)

    @property
    def webhook_id(self) -> str:
        return self.headers["webhook-id"]


#: What the receiver answers a request with: (status, seconds to wait before answering).
Behaviour = Callable[["Received", int], tuple[int, float]]


@dataclass
class Endpoint:
    """One path of the receiver: what it got, and how it answers (the n-th request, from 0)."""

    behaviour: Behaviour
    received: list[Received] = field(default_factory=list)


class Receiver:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._endpoints: dict[str, Endpoint] = {}
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                got = Received(
                    self.path,
                    {k.lower(): v for k, v in self.headers.items()},
                    self.rfile.read(length),
                    time.time(),
                )
                status, delay = receiver._answer(got)
                if delay:
                    time.sleep(delay)
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")
                except OSError:
                    pass  # the dispatcher gave up waiting

            def log_message(self, *_args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="receiver", daemon=True)
        self.thread.start()
        self.base_url = f"http://127.0.0.1:{self.server.server_port}"

    def endpoint(self, path: str, behaviour: Behaviour | None = None) -> str:
        """A path answering as `behaviour` says (by default 200 at once); its URL."""
        with self._lock:
            self._endpoints[path] = Endpoint(behaviour or (lambda _r, _n: (200, 0.0)))
        return self.base_url + path

    def received(self, path: str) -> list[Received]:
        with self._lock:
            return list(self._endpoints[path].received)

    def _answer(self, got: Received) -> tuple[int, float]:
        with self._lock:
            endpoint = self._endpoints.get(got.path.split("?")[0])
            if endpoint is None:
                return 404, 0.0
            endpoint.received.append(got)
            n = len(endpoint.received) - 1
        return endpoint.behaviour(got, n)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


def failing_first(failures: int, status: int = 500) -> Behaviour:
    return lambda _r, n: (status if n < failures else 200, 0.0)


def always(status: int, delay: float = 0.0) -> Behaviour:
    return lambda _r, _n: (status, delay)
