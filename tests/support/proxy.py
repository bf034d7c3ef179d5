"""A TCP proxy in front of a real server, so a test can cut the network and bring it back.

The service under test connects to the proxy's port. `cut()` drops every live connection
and turns new ones away until `restore()`, in one of the ways an outage looks from the
client: `CLOSE` (accepted, then closed), `RESET` (accepted, then reset at once: a TCP load
balancer with no live node behind it) or `REFUSE` (nothing listens: connection refused).
`blackhole()` drops the port's packets in the kernel instead (a network partition; see
`tests.support.netfilter`). The server itself is never touched.
"""

from __future__ import annotations

import contextlib
import enum
import socket
import struct
import threading
from urllib.parse import urlsplit, urlunsplit

from tests.support.netfilter import Blackhole

ACCEPT_POLL_SECONDS = 0.05


class Refusal(enum.Enum):
    CLOSE = "close"
    RESET = "reset"
    REFUSE = "refuse"


def _reset(sock: socket.socket) -> None:
    """Close with an RST instead of a FIN (SO_LINGER on, zero seconds)."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


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
    def __init__(self, target_host: str, target_port: int, port: int = 0) -> None:
        self.target = (target_host, target_port)
        self._server: socket.socket | None = self._listen(port)
        self.port: int = self._server.getsockname()[1]
        self._lock = threading.Lock()
        self._links: set[_Link] = set()
        self._all_closed = threading.Condition(self._lock)
        self._refusing: Refusal | None = None
        self._blackhole = Blackhole(self.port)
        self._not_listening = threading.Event()
        self._listening = threading.Event()
        self._listening.set()
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

    def cut(self, how: Refusal = Refusal.CLOSE, timeout: float = 5.0) -> None:
        """Drop every live connection and turn new ones away (`how`) until `restore()`.
        Returns once every dropped connection is fully closed."""
        with self._lock:
            self._refusing = how
            links = list(self._links)
        for link in links:
            link.shutdown()
        with self._lock:
            if not self._all_closed.wait_for(lambda: not self._links, timeout):
                raise RuntimeError("proxy connections did not close")
        if how is Refusal.REFUSE and not self._not_listening.wait(timeout):
            raise RuntimeError("the proxy did not stop listening")

    def blackhole(self) -> None:
        """Every packet to or from the proxy's port vanishes, live connections' too, until
        `restore()`: neither side hears from the other, as in a network partition."""
        self._blackhole.drop()

    def restore(self, timeout: float = 5.0) -> None:
        """Let connections through again; returns once the proxy listens."""
        self._blackhole.restore()
        with self._lock:
            self._refusing = None
        if not self._listening.wait(timeout):
            raise RuntimeError("the proxy did not listen again")

    @property
    def live_connections(self) -> int:
        with self._lock:
            return len(self._links)

    def close(self) -> None:
        self._blackhole.restore()
        self._closing.set()
        self._acceptor.join(5)
        self.cut()
        if self._server is not None:
            self._server.close()

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(self, *_exc) -> None:
        self.close()

    # --- forwarding ---------------------------------------------------------------------

    def _stop_listening(self) -> None:
        """Nothing listens on the port while refusing: a connect gets ECONNREFUSED. The port
        stays ours in practice (the kernel does not hand a closed listening port to others'
        ephemeral connects while we re-listen within moments)."""
        if self._server is not None:
            self._server.close()
            self._server = None
            self.refused += 1
            self._listening.clear()
            self._not_listening.set()
        self._closing.wait(ACCEPT_POLL_SECONDS)

    @staticmethod
    def _listen(port: int) -> socket.socket:
        server = socket.create_server(("127.0.0.1", port), reuse_port=False)
        server.settimeout(ACCEPT_POLL_SECONDS)
        return server

    def _accept_loop(self) -> None:
        while not self._closing.is_set():
            with self._lock:
                refusing = self._refusing
            if refusing is Refusal.REFUSE:
                self._stop_listening()
                continue
            if self._server is None:
                self._server = self._listen(self.port)
                self._not_listening.clear()
                self._listening.set()
            try:
                client, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            with self._lock:
                refusing = self._refusing
            if refusing is not None:
                self.refused += 1
                _reset(client) if refusing is Refusal.RESET else client.close()
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
