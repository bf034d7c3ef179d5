"""Settings read from the environment, once, by whoever builds the process (CLI, tests)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from events.crypto.cipher import MasterKeys

DEFAULT_DATABASE_URL = "postgresql+psycopg://root@127.0.0.1:5432/assessments"
DEFAULT_BROKER_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
DEFAULT_DISCLOSURE_FILE = Path(__file__).resolve().parents[2] / "data" / "disclosure.json"


@dataclass(frozen=True)
class Settings:
    database_url: str = DEFAULT_DATABASE_URL
    broker_url: str = DEFAULT_BROKER_URL
    bind: str = "127.0.0.1:8000"
    api_workers: int = 2
    exchange: str = "assessments.events"
    worker_queue: str = "assessments.worker"
    #: The type of every queue the service declares (the worker's, the notifier's, the webhooks
    #: dispatcher's and their dead-letter queues): `quorum` (replicated on a cluster) or `classic`.
    queue_type: str = "quorum"
    #: How long a read waits for the worker to apply the caller's own writes.
    read_wait_seconds: float = 1.0
    worker_prefetch: int = 500
    relay_batch_size: int = 500
    #: How long the relay, woken from idle, lets appends gather before it reads a batch.
    relay_linger_ms: float = 2.0
    #: Under load, the least time between two reads of the outbox, so that each serves many events.
    relay_batch_interval_ms: float = 15.0
    #: How long the worker lets deliveries gather into one transaction.
    worker_linger_ms: float = 5.0
    log_level: str = "INFO"
    #: Failed candidate authentications a client address may make per window before it is
    #: refused (429) until the window ends, whatever key it then sends.
    candidate_auth_limit: int = 20
    candidate_auth_window_seconds: int = 60
    #: Reverse proxies in front of the API that append to X-Forwarded-For; 0 trusts only the
    #: socket's peer, since any client can write the header itself.
    trusted_proxies: int = 0
    #: The disclosure candidates consent to (`events.disclosure`); the shipped one by default.
    disclosure_file: str = str(DEFAULT_DISCLOSURE_FILE)
    #: The notifier's queue (`<name>.dead` is its dead-letter queue), bound to key issuance only.
    notifier_queue: str = "assessments.notifier"
    #: Where the notifier sends invitations: smtp://[user:password@]host[:port][?starttls=true]
    #: or smtps://... (implicit TLS). None: no SMTP (`assessments dev` then writes .eml files).
    smtp_url: str | None = None
    mail_from: str = "Assessments <assessments@localhost>"
    #: `assessments dev` without SMTP writes each invitation to this folder as an .eml file.
    mail_dir: str | None = None
    #: How long a claimed invitation belongs to the notifier that claimed it. One killed after
    #: the SMTP server accepted a mail but before it recorded the send is re-sent after this.
    mail_lease_seconds: float = 300.0
    #: Transient SMTP failures (connection, 4xx) are tried again until this many attempts.
    mail_max_attempts: int = 50
    #: The webhooks dispatcher's own queue, bound to the exchange with `#`.
    webhooks_queue: str = "assessments.webhooks"
    #: Local development and tests only: webhook URLs may be http and point at loopback or
    #: private addresses (never at metadata, link-local, multicast or unspecified ones).
    webhooks_allow_private: bool = False
    #: Per attempt: on the connect and on each read of the response.
    webhooks_timeout_seconds: float = 10.0
    webhooks_max_response_bytes: int = 64 * 1024
    #: Attempts in flight at once, and at most this many of them on one endpoint.
    webhooks_concurrency: int = 16
    webhooks_per_endpoint_concurrency: int = 4
    #: Seconds before the 2nd, 3rd, ... attempt (each stretched by up to 20 % of jitter).
    webhooks_retry_schedule: tuple[float, ...] = (5, 300, 1800, 7200, 18000, 36000, 36000)
    #: An endpoint is disabled after this many consecutive failed attempts lasting this long.
    webhooks_disable_after_failures: int = 20
    webhooks_disable_after_seconds: float = 24 * 3600
    #: After a rotation, the previous secret keeps signing beside the new one this long.
    webhooks_rotation_grace_seconds: float = 24 * 3600
    #: How often the delivery loop looks for due retries when nothing wakes it.
    webhooks_poll_seconds: float = 1.0
    #: The master keys that wrap candidates' data keys (`events.personal`): `ID:BASE64` items,
    #: comma-separated, the current one first (each 32 random bytes). Empty: a fixed development
    #: key, which protects nothing (the processes warn at start).
    master_keys: str = field(default="", repr=False)
    #: Days after a candidate's last key ended (completed, expired or revoked) after which the
    #: worker erases the candidate; 0 keeps them until erased on request.
    candidate_retention_days: int = 365

    @property
    def dead_letter_queue(self) -> str:
        return f"{self.worker_queue}.dead"

    @property
    def notifier_dead_letter_queue(self) -> str:
        return f"{self.notifier_queue}.dead"

    @property
    def webhooks_dead_letter_queue(self) -> str:
        return f"{self.webhooks_queue}.dead"

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: Any) -> Settings:
        env = os.environ if environ is None else environ
        read = {
            "database_url": env.get("ASSESSMENTS_DATABASE_URL"),
            "broker_url": env.get("ASSESSMENTS_BROKER_URL"),
            "bind": env.get("ASSESSMENTS_BIND"),
            "api_workers": _int(env.get("ASSESSMENTS_API_WORKERS")),
            "exchange": env.get("ASSESSMENTS_EXCHANGE"),
            "worker_queue": env.get("ASSESSMENTS_WORKER_QUEUE"),
            "queue_type": _queue_type(env.get("ASSESSMENTS_QUEUE_TYPE")),
            "read_wait_seconds": _float(env.get("ASSESSMENTS_READ_WAIT_SECONDS")),
            "worker_prefetch": _int(env.get("ASSESSMENTS_WORKER_PREFETCH")),
            "relay_batch_size": _int(env.get("ASSESSMENTS_RELAY_BATCH_SIZE")),
            "relay_linger_ms": _float(env.get("ASSESSMENTS_RELAY_LINGER_MS")),
            "relay_batch_interval_ms": _float(env.get("ASSESSMENTS_RELAY_BATCH_INTERVAL_MS")),
            "worker_linger_ms": _float(env.get("ASSESSMENTS_WORKER_LINGER_MS")),
            "log_level": env.get("ASSESSMENTS_LOG_LEVEL"),
            "candidate_auth_limit": _int(env.get("ASSESSMENTS_CANDIDATE_AUTH_LIMIT")),
            "candidate_auth_window_seconds": _int(env.get("ASSESSMENTS_CANDIDATE_AUTH_WINDOW_SECONDS")),
            "trusted_proxies": _int(env.get("ASSESSMENTS_TRUSTED_PROXIES")),
            "disclosure_file": env.get("ASSESSMENTS_DISCLOSURE_FILE"),
            "notifier_queue": env.get("ASSESSMENTS_NOTIFIER_QUEUE"),
            "smtp_url": env.get("ASSESSMENTS_SMTP_URL") or None,
            "mail_from": env.get("ASSESSMENTS_MAIL_FROM"),
            "mail_dir": env.get("ASSESSMENTS_MAIL_DIR") or None,
            "mail_lease_seconds": _float(env.get("ASSESSMENTS_MAIL_LEASE_SECONDS")),
            "mail_max_attempts": _int(env.get("ASSESSMENTS_MAIL_MAX_ATTEMPTS")),
            "webhooks_queue": env.get("ASSESSMENTS_WEBHOOKS_QUEUE"),
            "webhooks_allow_private": _bool(env.get("ASSESSMENTS_WEBHOOKS_ALLOW_PRIVATE")),
            "webhooks_timeout_seconds": _float(env.get("ASSESSMENTS_WEBHOOKS_TIMEOUT_SECONDS")),
            "webhooks_max_response_bytes": _int(env.get("ASSESSMENTS_WEBHOOKS_MAX_RESPONSE_BYTES")),
            "webhooks_concurrency": _int(env.get("ASSESSMENTS_WEBHOOKS_CONCURRENCY")),
            "webhooks_per_endpoint_concurrency": _int(
                env.get("ASSESSMENTS_WEBHOOKS_PER_ENDPOINT_CONCURRENCY")
            ),
            "webhooks_retry_schedule": _floats(env.get("ASSESSMENTS_WEBHOOKS_RETRY_SCHEDULE")),
            "webhooks_disable_after_failures": _int(env.get("ASSESSMENTS_WEBHOOKS_DISABLE_AFTER_FAILURES")),
            "webhooks_disable_after_seconds": _float(env.get("ASSESSMENTS_WEBHOOKS_DISABLE_AFTER_SECONDS")),
            "webhooks_rotation_grace_seconds": _float(env.get("ASSESSMENTS_WEBHOOKS_ROTATION_GRACE_SECONDS")),
            "webhooks_poll_seconds": _float(env.get("ASSESSMENTS_WEBHOOKS_POLL_SECONDS")),
            "master_keys": env.get("ASSESSMENTS_MASTER_KEYS"),
            "candidate_retention_days": _int(env.get("ASSESSMENTS_CANDIDATE_RETENTION_DAYS")),
        }
        if read["master_keys"]:
            master_keys(read["master_keys"])  # a key that cannot be read fails here, not at first use
        if read["database_url"]:
            read["database_url"] = database_url(read["database_url"])
        if read["broker_url"] and "," in read["broker_url"]:
            broker_urls(read["broker_url"])  # a list that cannot be read fails here, not at connect
        settings = cls(**{key: value for key, value in read.items() if value is not None})
        return replace(settings, **overrides)


def master_keys(text: str) -> MasterKeys:
    """`ASSESSMENTS_MASTER_KEYS` read, or the development key when it is empty."""
    if not text:
        return MasterKeys.for_development()
    try:
        return MasterKeys.parse(text)
    except ValueError as error:
        raise ValueError(f"ASSESSMENTS_MASTER_KEYS: {error}") from None


def database_url(url: str) -> str:
    """`ASSESSMENTS_DATABASE_URL` as SQLAlchemy reads it. A primary and its standbys may be
    listed the way libpq lists them, `?host=h1:p1,h2:p2`, which SQLAlchemy would take for one
    host name; that list is rewritten into SQLAlchemy's own form, `?host=h1:p1&host=h2:p2`.
    SQLAlchemy's other form (`?host=h1,h2&port=p1,p2`) and any single host pass unchanged."""
    parts = urlsplit(url)
    hostport = parts.netloc.rpartition("@")[2]
    if "," in hostport and ":" in hostport:
        raise ValueError(
            "ASSESSMENTS_DATABASE_URL: list several hosts with their ports in the query string "
            "(postgresql+psycopg://user@/database?host=h1:p1,h2:p2), not before the database name"
        )
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    hosts = [value for key, value in pairs if key == "host"]
    if len(hosts) != 1 or "," not in hosts[0] or ":" not in hosts[0]:
        return url
    if any(key == "port" for key, _ in pairs):
        raise ValueError(
            "ASSESSMENTS_DATABASE_URL: give each host its port (host=h1:p1,h2:p2) "
            "or list the ports apart (host=h1,h2&port=p1,p2), not both"
        )
    items = [item.strip() for item in hosts[0].split(",")]
    if not all(items):
        raise ValueError(f"ASSESSMENTS_DATABASE_URL: an empty item in host={hosts[0]!r}")
    query = []
    for key, value in pairs:
        query.extend([("host", item) for item in items] if key == "host" else [(key, value)])
    return urlunsplit(parts._replace(query=urlencode(query, safe=":/,")))


def broker_urls(broker_url: str) -> list[str]:
    """The nodes of `ASSESSMENTS_BROKER_URL`, in the order to try them: a comma-separated
    list of AMQP URLs, where every item after the first may also be a bare `host[:port]`
    that takes the scheme, the user and password, the virtual host and the options of the
    first URL. So `amqp://u:p@rabbit1/%2F,rabbit2,rabbit3:5673` names three nodes of one
    cluster. A comma inside a password must be percent-encoded (`%2C`)."""
    items = [item.strip() for item in broker_url.split(",") if item.strip()]
    if not items:
        raise ValueError("ASSESSMENTS_BROKER_URL is empty")
    first = urlsplit(items[0])
    if not first.scheme or not first.netloc:
        raise ValueError(f"ASSESSMENTS_BROKER_URL: the first item must be an amqp:// URL, not {items[0]!r}")
    userinfo = first.netloc.rpartition("@")[0]
    urls = [items[0]]
    for item in items[1:]:
        if "://" in item:
            urls.append(item)
            continue
        if not item or any(c in item for c in "/?#@"):
            raise ValueError(f"ASSESSMENTS_BROKER_URL: {item!r} is neither a URL nor a host[:port]")
        netloc = f"{userinfo}@{item}" if userinfo else item
        urls.append(urlunsplit(first._replace(netloc=netloc)))
    return urls


def _queue_type(value: str | None) -> str | None:
    if value is None or not value.strip():
        return None
    lowered = value.strip().lower()
    if lowered not in ("quorum", "classic"):
        raise ValueError(f"ASSESSMENTS_QUEUE_TYPE: {value!r} is not a queue type (quorum or classic)")
    return lowered


def _int(value: str | None) -> int | None:
    return None if value is None else int(value)


def _float(value: str | None) -> float | None:
    return None if value is None else float(value)


def _bool(value: str | None) -> bool | None:
    if value is None:
        return None
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"not a boolean: {value!r}")


def _floats(value: str | None) -> tuple[float, ...] | None:
    """`5,300,1800`: seconds, comma-separated."""
    if value is None:
        return None
    return tuple(float(part) for part in value.split(",") if part.strip())
