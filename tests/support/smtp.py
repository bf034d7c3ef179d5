"""A real SMTP server for tests: aiosmtpd on 127.0.0.1, in-process, recording what it accepts.

It can refuse a recipient (`refuse`, e.g. 550 for a bad address, 451 for a temporary
problem), run code when it accepts a message (`on_accept`, before its 250 is sent: the moment
a client dies after the server took the mail), and be stopped and started again on the same
port (`stop`, `start`: a server that is down refuses connections). With a certificate it
requires STARTTLS (`tls="starttls"`) or speaks TLS from the first byte (`tls="implicit"`).
"""

from __future__ import annotations

import socket
import ssl
import subprocess
import threading
from collections.abc import Callable
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A certificate and key for 127.0.0.1 (made with the openssl command line)."""
    cert, key = directory / "smtp-cert.pem", directory / "smtp-key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    return cert, key


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Recorder:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.messages: list[EmailMessage] = []
        self.envelopes: list[tuple[str, list[str]]] = []
        #: address -> reply, e.g. "550 5.1.1 No such user"; a reply with a count refuses that
        #: many times only (then accepts).
        self.refusals: dict[str, tuple[str, int | None]] = {}
        self.refused: list[str] = []
        self.on_accept: Callable[[EmailMessage], None] | None = None

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802 (aiosmtpd)
        with self.lock:
            refusal = self.refusals.get(address)
            if refusal is not None:
                reply, times = refusal
                if times == 1:
                    del self.refusals[address]
                elif times is not None:
                    self.refusals[address] = (reply, times - 1)
                self.refused.append(address)
                return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd)
        message = message_from_bytes(envelope.content, policy=policy.default)
        if self.on_accept is not None:
            self.on_accept(message)
        with self.lock:
            self.messages.append(message)
            self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        return "250 Message accepted for delivery"


class SmtpServer:
    def __init__(
        self,
        port: int | None = None,
        credentials: tuple[str, str] | None = None,
        tls: str | None = None,
        certificate: tuple[Path, Path] | None = None,
    ) -> None:
        self.port = port or free_port()
        self.tls = tls
        self.certificate = certificate
        self.recorder = Recorder()
        self.credentials = credentials
        self.logins: list[str] = []
        self._controller: Controller | None = None

    @property
    def url(self) -> str:
        scheme = "smtps" if self.tls == "implicit" else "smtp"
        login = "{}:{}@".format(*self.credentials) if self.credentials else ""
        query = "?starttls=true" if self.tls == "starttls" else ""
        return f"{scheme}://{login}127.0.0.1:{self.port}{query}"

    @property
    def messages(self) -> list[EmailMessage]:
        with self.recorder.lock:
            return list(self.recorder.messages)

    def refuse(self, address: str, reply: str, times: int | None = None) -> None:
        with self.recorder.lock:
            self.recorder.refusals[address] = (reply, times)

    def start(self) -> SmtpServer:
        options: dict = {}
        if self.credentials:
            options = {"authenticator": self._authenticate, "auth_require_tls": False}
        if self.tls:
            assert self.certificate is not None, "TLS needs a certificate"
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(*self.certificate)
            if self.tls == "starttls":
                options.update(tls_context=context, require_starttls=True)
            else:
                options.update(ssl_context=context)
        self._controller = Controller(self.recorder, hostname="127.0.0.1", port=self.port, **options)
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def _authenticate(self, server, session, envelope, mechanism, auth_data) -> AuthResult:
        if isinstance(auth_data, LoginPassword) and self.credentials:
            user, password = self.credentials
            if auth_data.login.decode() == user and auth_data.password.decode() == password:
                self.logins.append(user)
                return AuthResult(success=True)
        return AuthResult(success=False, handled=False)
