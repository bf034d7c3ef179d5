"""A TCP proxy in front of a real server, so a test can cut the network and bring it back.

The service under test connects to the proxy's port; `cut()` drops every live connection and
refuses new ones (what a broker outage looks like from the client), `restore()` lets
connections through again. The server itself is never touched.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from urllib.parse import urlsplit, urlunsplit

ACCEPT_POLL_SECONDS = 0.05


class _Link:
    """One client connection and its upstream twin; closed once both directions ended."""

    def __init__(self, client: socket.socket, upstream: socket.socket) -> None:
        self.sockets = (client, upstream)
        self._lock = threading.Lock()
        self._open_pumps = 2

    def shutdown(self) -> None:
        """Wake both pumps (a blocked `recv` returns); they close the sockets on the way out."""
        for sock in self.sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def pump_finished(self) -> bool:
        with self._lock:
            self._open_pumps -= 1
            last = self._open_pumps == 0
        if last:
            for sock in self.sockets:
                sock.close()
        return last


class TcpProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(ACCEPT_POLL_SECONDS)
        self.port: int = self._server.getsockname()[1]
        self._lock = threading.Lock()
        self._links: set[_Link] = set()
        self._all_closed = threading.Condition(self._lock)
        self._refusing = False
        self._closing = threading.Event()
        self.accepted = 0
        self.refused = 0
        self._acceptor = threading.Thread(target=self._accept_loop, name=f"proxy:{self.port}", daemon=True)
        self._acceptor.start()

    @classmethod
    def for_url(cls, url: str) -> TcpProxy:
        parts = urlsplit(url)
        return cls(parts.hostname or "127.0.0.1", parts.port or 5672)

    def url_for(self, url: str) -> str:
        """`url` with its host and port replaced by the proxy's."""
        parts = urlsplit(url)
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = f"{userinfo}@127.0.0.1:{self.port}" if userinfo else f"127.0.0.1:{self.port}"
        return urlunsplit(parts._replace(netloc=netloc))

    # --- faults -------------------------------------------------------------------------

    def cut(self, timeout: float = 5.0) -> None:
        """Drop every live connection and refuse new ones until `restore()`. Returns once every
        dropped connection is fully closed."""
        with self._lock:
            self._refusing = True
            links = list(self._links)
        for link in links:
            link.shutdown()
        with self._lock:
            if not self._all_closed.wait_for(lambda: not self._links, timeout):
                raise RuntimeError("proxy connections did not close")

    def restore(self) -> None:
        with self._lock:
            self._refusing = False

    @property
    def live_connections(self) -> int:
        with self._lock:
            return len(self._links)

    def close(self) -> None:
        self._closing.set()
        self._acceptor.join(5)
        self.cut()
        self._server.close()

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(self, *_exc) -> None:
        self.close()

    # --- forwarding ---------------------------------------------------------------------

    def _accept_loop(self) -> None:
        while not self._closing.is_set():
            try:
                client, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            with self._lock:
                refusing = self._refusing
            if refusing:
                self.refused += 1
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            self._start(_Link(client, upstream))

    def _start(self, link: _Link) -> None:
        client, upstream = link.sockets
        with self._lock:
            if self._refusing:
                link.shutdown()
            self._links.add(link)
            self.accepted += 1
        for source, sink in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pump, args=(link, source, sink), daemon=True).start()

    def _pump(self, link: _Link, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            link.shutdown()  # one direction ended: end the other one too
            if link.pump_finished():
                with self._lock:
                    self._links.discard(link)
                    self._all_closed.notify_all()
