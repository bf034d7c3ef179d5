"""Where invitations go: an SMTP server (`ASSESSMENTS_SMTP_URL`), or a folder of .eml files in
`assessments dev`.

Failures are told apart here, once: `PermanentFailure` for a 5xx reply to the recipient or the
message (550, no such mailbox: it will be the same next time), `TransientFailure` for the rest
(a refused connection, a timeout, a dropped connection, a 4xx reply such as greylisting, and
also refusals of our own settings — the login, the sender, STARTTLS — which no message can be
blamed for and which an operator can fix while the mail waits).

The standard library's smtplib, with a timeout on every socket operation. One connection is
kept between mails (a server accepts many messages per connection); after being idle for a
while it is checked with a NOOP first, since servers drop idle clients.
"""

from __future__ import annotations

import contextlib
import logging
import smtplib
import ssl
import time
from email.message import EmailMessage
from pathlib import Path
from typing import Protocol
from urllib.parse import parse_qs, unquote, urlsplit

from events.invitations import is_permanent

log = logging.getLogger(__name__)

#: Seconds any one socket operation of the SMTP dialogue may take (connect, each command).
SMTP_TIMEOUT_SECONDS = 30.0
#: A kept connection idle longer than this is checked with NOOP before the next mail.
IDLE_CHECK_SECONDS = 5.0
DEFAULT_PORTS = {"smtp": 25, "smtps": 465}
TRUE = {"1", "true", "yes", "on"}


class SendFailure(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TransientFailure(SendFailure):
    """Worth another attempt later."""


class PermanentFailure(SendFailure):
    """This message can never be sent (the server refused the address or the message for good)."""


class Sender(Protocol):
    def send(self, message: EmailMessage, recipient: str) -> None: ...

    def close(self) -> None: ...


class InvalidSmtpUrl(ValueError):
    pass


class SmtpSender:
    """`smtp://[user:password@]host[:port][?starttls=true]` (port 25 by default; STARTTLS
    required when asked for), or `smtps://...` for TLS from the first byte (port 465)."""

    def __init__(self, url: str, mail_from: str, timeout: float = SMTP_TIMEOUT_SECONDS) -> None:
        parts = urlsplit(url)
        if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
            raise InvalidSmtpUrl(
                f"ASSESSMENTS_SMTP_URL: expected smtp://host[:port] or smtps://..., got {parts.scheme}://"
            )
        query = parse_qs(parts.query)
        self.host = parts.hostname
        self.port = parts.port or DEFAULT_PORTS[parts.scheme]
        self.implicit_tls = parts.scheme == "smtps"
        self.starttls = any(value.lower() in TRUE for value in query.get("starttls", []))
        self.user = unquote(parts.username) if parts.username else None
        self.password = unquote(parts.password) if parts.password else None
        self.envelope_from = _address_of(mail_from)
        self.timeout = timeout
        self._smtp: smtplib.SMTP | None = None
        self._last_used = 0.0

    def send(self, message: EmailMessage, recipient: str) -> None:
        try:
            smtp = self._connection()
            smtp.send_message(message, from_addr=self.envelope_from, to_addrs=[recipient])
            self._last_used = time.monotonic()
        except smtplib.SMTPRecipientsRefused as error:
            self.close_quietly()
            ((code, reply),) = [(code, reply) for code, reply in error.recipients.values()][:1] or [
                (None, b"")
            ]
            raise _by_code(code, f"recipient refused: {code} {_text(reply)}") from error
        except smtplib.SMTPDataError as error:
            self.close_quietly()
            raise _by_code(
                error.smtp_code, f"message refused: {error.smtp_code} {_text(error.smtp_error)}"
            ) from error
        except smtplib.SMTPSenderRefused as error:
            self.close_quietly()
            raise TransientFailure(f"sender refused: {error.smtp_code} {_text(error.smtp_error)}") from error
        except smtplib.SMTPResponseException as error:
            self.close_quietly()
            raise TransientFailure(f"{error.smtp_code} {_text(error.smtp_error)}") from error
        except (smtplib.SMTPException, OSError) as error:
            self.close_quietly()
            raise TransientFailure(f"{type(error).__name__}: {error}") from error

    def _connection(self) -> smtplib.SMTP:
        if self._smtp is not None and time.monotonic() - self._last_used > IDLE_CHECK_SECONDS:
            try:
                code, _ = self._smtp.noop()
                if code != 250:
                    raise smtplib.SMTPServerDisconnected(f"NOOP answered {code}")
            except (smtplib.SMTPException, OSError):
                self.close_quietly()
        if self._smtp is None:
            self._smtp = self._connect()
        return self._smtp

    def _connect(self) -> smtplib.SMTP:
        context = ssl.create_default_context()
        if self.implicit_tls:
            smtp: smtplib.SMTP = smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout, context=context)
        else:
            smtp = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
        try:
            smtp.ehlo()
            if self.starttls:
                smtp.starttls(context=context)
                smtp.ehlo()
            if self.user:
                smtp.login(self.user, self.password or "")
        except BaseException:
            with contextlib.suppress(Exception):
                smtp.close()
            raise
        return smtp

    def close_quietly(self) -> None:
        smtp, self._smtp = self._smtp, None
        if smtp is not None:
            with contextlib.suppress(Exception):
                smtp.close()

    def close(self) -> None:
        smtp, self._smtp = self._smtp, None
        if smtp is not None:
            with contextlib.suppress(smtplib.SMTPException, OSError):
                smtp.quit()
            with contextlib.suppress(Exception):
                smtp.close()


class MailDirSender:
    """`assessments dev` without SMTP: each mail becomes `<folder>/<key's message id>.eml`
    (open it with any mail program). Written whole, then renamed into place."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    def send(self, message: EmailMessage, recipient: str) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        name = message["Message-ID"].strip("<>").split("@")[0] + ".eml"
        partial = self.folder / f".{name}.partial"
        partial.write_bytes(message.as_bytes())
        partial.replace(self.folder / name)

    def close(self) -> None:
        pass


def _by_code(code: int | None, reason: str) -> SendFailure:
    return PermanentFailure(reason) if is_permanent(code) else TransientFailure(reason)


def _text(reply: bytes | str) -> str:
    return reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)


def _address_of(mail_from: str) -> str:
    from email.utils import parseaddr

    return parseaddr(mail_from)[1] or mail_from
