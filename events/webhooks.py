"""Webhooks: the pure rules and the endpoints' service.

Which events an endpoint subscribes to (types or routing-key patterns), which URLs it may have
(the SSRF rules), when a failed delivery is tried again (the schedule), and how a delivery is
signed (Standard Webhooks: HMAC-SHA256 over "{id}.{timestamp}.{body}"). An endpoint is a stream
of its own (`WebhookEndpointRegistered`, ...); its signing secrets are credentials, so no event
holds one: each secret version lives only in its reservation (scope `webhook_secret`), written in
the same append as the event that names it.

Standard library only: the SQL side is `events.sql.webhooks`, the sending `worker.webhooks`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import random
import secrets
import socket
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from functools import cache, singledispatch
from typing import Protocol
from urllib.parse import urlsplit

from events.model import (
    EVENT_TYPES,
    Event,
    Metadata,
    RecordedEvent,
    WebhookEndpointDisabled,
    WebhookEndpointRegistered,
    WebhookEndpointRemoved,
    WebhookSecretRotated,
    utcnow,
    uuid7,
)
from events.ports import ConcurrencyConflict, EventStore, Reservation

SECRET_SCOPE = "webhook_secret"
SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32
#: How long the previous secret keeps signing (beside the new one) after a rotation.
ROTATION_GRACE = timedelta(hours=24)
#: The delays before the second, third, ... attempt of a delivery (seconds): 5 s, 5 min, 30 min,
#: 2 h, 5 h, 10 h, 10 h. After the last one fails the delivery is `failed` (about 28 hours).
RETRY_SCHEDULE: tuple[float, ...] = (5, 300, 1800, 7200, 18000, 36000, 36000)
#: Each delay is stretched by up to this fraction at random, so that deliveries that failed
#: together do not all come back at the same instant.
JITTER = 0.2
#: Consecutive failed attempts (no success between them) after which an endpoint is disabled,
#: provided the failures have lasted at least DISABLE_AFTER.
DISABLE_AFTER_FAILURES = 20
DISABLE_AFTER = timedelta(hours=24)
DISABLED_FOR_FAILURES = "consecutive_failures"

MAX_URL = 2048
MAX_PATTERNS = 50

ACTIVE, DISABLED, REMOVED = "active", "disabled", "removed"


class WebhookError(Exception):
    """A webhook command refused by the rules; the API turns each into a 4xx."""


class EndpointNotFound(WebhookError):
    pass


class DeliveryNotFound(WebhookError):
    pass


class EndpointNotActive(WebhookError):
    """A command that needs a delivering endpoint (rotate, retry) on a disabled one."""


class InvalidEndpoint(WebhookError):
    """The request names a URL or event patterns the rules refuse: `problems` by field."""

    def __init__(self, problems: dict[str, list[str]]) -> None:
        super().__init__(problems)
        self.problems = problems


class UnsafeUrl(ValueError):
    """A URL the service refuses to send to; the message says why."""


# --- which events an endpoint hears ---------------------------------------------------------


@cache
def subscribable() -> dict[str, str]:
    """Event types an endpoint may subscribe to, with their routing keys: every published
    type except the endpoints' own."""
    return {
        name: cls.routing_key
        for name, cls in EVENT_TYPES.items()
        if not cls.routing_key.startswith("webhook_endpoint.")
    }


def _topic_matches(pattern: str, key: str) -> bool:
    """AMQP topic matching: `*` is one word, `#` zero or more."""

    def match(p: list[str], k: list[str]) -> bool:
        if not p:
            return not k
        if p[0] == "#":
            return any(match(p[1:], k[i:]) for i in range(len(k) + 1))
        return bool(k) and p[0] in ("*", k[0]) and match(p[1:], k[1:])

    return match(pattern.split("."), key.split("."))


@cache
def matching_types(pattern: str) -> frozenset[str]:
    """The event types a pattern names: a type (`CandidateKeyIssued`), a routing key
    (`candidate_key.issued`), or a routing-key pattern (`candidate_key.*`, `#`)."""
    types = subscribable()
    if pattern in types:
        return frozenset({pattern})
    return frozenset(name for name, key in types.items() if _topic_matches(pattern, key))


def check_patterns(patterns: Sequence[str]) -> list[str]:
    """The problems of a subscription: empty, too long, or a pattern that names no type."""
    if not patterns:
        return ["Name at least one event type or pattern."]
    if len(patterns) > MAX_PATTERNS:
        return [f"At most {MAX_PATTERNS} event types or patterns."]
    return [f"Unknown event type or pattern: {p!r}." for p in patterns if not matching_types(p)]


def matches(patterns: Iterable[str], type_name: str) -> bool:
    return any(type_name in matching_types(pattern) for pattern in patterns)


# --- where an endpoint may be: the SSRF rules ---------------------------------------------

#: Cloud metadata services that sit at otherwise ordinary-looking addresses.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200")
)
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
#: (host, port) → the addresses it resolves to (`socket.getaddrinfo` in production).
Resolver = Callable[[str, int], list[str]]


def system_resolver(host: str, port: int) -> list[str]:
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as error:
        raise UnsafeUrl(f"The host {host!r} does not resolve.") from error
    return list(dict.fromkeys(info[4][0] for info in found))


def _embedded(address: Address) -> Address:
    """The IPv4 address inside an IPv4-mapped or NAT64 IPv6 address, else the address."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address in _NAT64:
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address


def refusal(address: Address, allow_private: bool = False) -> str | None:
    """Why the service will not send to `address`, or None. `allow_private` (local development
    and tests only) lets loopback and private addresses through, never metadata, link-local,
    multicast or unspecified ones."""
    address = _embedded(address)
    if address in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if address.is_unspecified:
        return "an unspecified address"
    if address.is_multicast:
        return "a multicast address"
    if address.is_link_local:
        return "a link-local address"
    if allow_private:
        return None
    if address.is_loopback:
        return "a loopback address"
    if isinstance(address, ipaddress.IPv4Address) and address in _CGNAT:
        return "a shared (CGNAT) address"
    if address.is_private or address.is_reserved or not address.is_global:
        return "a private or reserved address"
    return None


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str
    port: int
    #: The path and query to request.
    path: str


def parse_url(url: str, allow_private: bool = False) -> Target:
    """The URL's parts, if its form is acceptable: `https` (or `http` when `allow_private`), a
    host, no credentials in it, and no literal address that `refusal` refuses. Names are
    checked once resolved (`safe_addresses`)."""
    if len(url) > MAX_URL:
        raise UnsafeUrl(f"At most {MAX_URL} characters.")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise UnsafeUrl("Not a valid URL.") from error
    allowed = ("https", "http") if allow_private else ("https",)
    if parts.scheme not in allowed:
        raise UnsafeUrl("The URL must be https." if not allow_private else "The URL must be http(s).")
    host = parts.hostname
    if not host:
        raise UnsafeUrl("The URL has no host.")
    if parts.username is not None or parts.password is not None:
        raise UnsafeUrl("The URL must not hold credentials.")
    if parts.fragment:
        raise UnsafeUrl("The URL must not have a fragment.")
    literal = _literal(host)
    if literal is not None and (why := refusal(literal, allow_private)):
        raise UnsafeUrl(f"The URL points at {why}.")
    if literal is None and (host == "localhost" or host.endswith(".localhost")) and not allow_private:
        raise UnsafeUrl("The URL points at a loopback address.")
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    return Target(parts.scheme, host, port or (443 if parts.scheme == "https" else 80), path)


def _literal(host: str) -> Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def safe_addresses(target: Target, resolve: Resolver, allow_private: bool = False) -> list[str]:
    """The addresses to connect to: all that the host resolves to, each checked; one refused
    address refuses the whole name (a resolver may return them in any order)."""
    addresses = resolve(target.host, target.port)
    if not addresses:
        raise UnsafeUrl(f"The host {target.host!r} does not resolve.")
    for address in addresses:
        parsed = ipaddress.ip_address(address.split("%", 1)[0])
        if why := refusal(parsed, allow_private):
            raise UnsafeUrl(f"The host {target.host!r} resolves to {why}.")
    return addresses


# --- when to try again ----------------------------------------------------------------------


def retry_delay(
    failed_attempts: int,
    schedule: Sequence[float] = RETRY_SCHEDULE,
    draw: Callable[[], float] = random.random,
) -> float | None:
    """Seconds until the next attempt after `failed_attempts` failures, with jitter; None when
    the schedule is used up (the delivery has failed)."""
    if failed_attempts > len(schedule):
        return None
    return schedule[failed_attempts - 1] * (1 + JITTER * draw())


# --- signing: Standard Webhooks -------------------------------------------------------------


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def secret_key(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX))


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """`v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`, keyed with the secret's bytes."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signature_header(secrets_: Sequence[str], message_id: str, timestamp: int, body: bytes) -> str:
    """One signature per valid secret, space-separated (a receiver accepts any one)."""
    return " ".join(sign(secret, message_id, timestamp, body) for secret in secrets_)


def verify(secret: str, message_id: str, timestamp: int, body: bytes, header: str) -> bool:
    """What a receiver does (and the tests): does any signature of the header match?"""
    expected = sign(secret, message_id, timestamp, body)
    return any(hmac.compare_digest(expected, given) for given in header.split())


# --- an endpoint: its state, folded from its stream ----------------------------------------


@dataclass(frozen=True)
class SecretVersion:
    secret_id: uuid.UUID
    #: None while it is the current secret; after a rotation, the end of its grace period.
    valid_until: datetime | None = None


@dataclass(frozen=True)
class Endpoint:
    id: uuid.UUID
    version: int = 0
    org_id: str | None = None
    url: str = ""
    events: tuple[str, ...] = ()
    description: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    #: The global position of the registration: only later events are delivered.
    registered_position: int = 0
    status: str = ACTIVE
    disabled_reason: str | None = None
    secrets: tuple[SecretVersion, ...] = ()

    @property
    def exists(self) -> bool:
        return self.org_id is not None and self.status != REMOVED

    @property
    def active(self) -> bool:
        return self.exists and self.status == ACTIVE

    def owned_by(self, org_id: str) -> bool:
        return self.exists and self.org_id == org_id

    def signing_secret_ids(self, now: datetime) -> list[uuid.UUID]:
        """The current secret first, then those still in their grace period."""
        return [s.secret_id for s in reversed(self.secrets) if s.valid_until is None or s.valid_until > now]

    def wants(self, type_name: str) -> bool:
        return matches(self.events, type_name)


@singledispatch
def _evolve(event: Event, state: Endpoint, recorded: RecordedEvent) -> Endpoint:
    return state


@_evolve.register
def _(event: WebhookEndpointRegistered, state: Endpoint, recorded: RecordedEvent) -> Endpoint:
    return replace(
        state,
        org_id=event.org_id,
        url=event.url,
        events=tuple(event.events),
        description=event.description,
        created_at=event.registered_at,
        updated_at=event.registered_at,
        registered_position=recorded.position,
        secrets=(SecretVersion(event.secret_id),),
    )


@_evolve.register
def _(event: WebhookSecretRotated, state: Endpoint, recorded: RecordedEvent) -> Endpoint:
    ended = tuple(
        replace(s, valid_until=event.previous_valid_until) if s.valid_until is None else s
        for s in state.secrets
    )
    return replace(state, secrets=(*ended, SecretVersion(event.secret_id)), updated_at=event.rotated_at)


@_evolve.register
def _(event: WebhookEndpointRemoved, state: Endpoint, recorded: RecordedEvent) -> Endpoint:
    return replace(state, status=REMOVED, updated_at=event.removed_at)


@_evolve.register
def _(event: WebhookEndpointDisabled, state: Endpoint, recorded: RecordedEvent) -> Endpoint:
    return replace(state, status=DISABLED, disabled_reason=event.reason, updated_at=event.disabled_at)


def rebuild(endpoint_id: uuid.UUID, recorded: Iterable[RecordedEvent]) -> Endpoint:
    state = Endpoint(endpoint_id)
    for r in recorded:
        state = replace(_evolve(r.event, state, r), version=r.stream_version)
    return state


# --- the service ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Delivery:
    """One event to one endpoint, as the dispatcher's table holds it."""

    id: uuid.UUID
    endpoint_id: uuid.UUID
    event_id: uuid.UUID
    event_type: str
    stream_id: uuid.UUID
    status: str
    attempts: int
    created_at: datetime
    next_attempt_at: datetime | None = None
    last_attempt_at: datetime | None = None
    response_status: int | None = None
    latency_ms: int | None = None
    last_error: str | None = None


class WebhookDirectory(Protocol):
    """What the service needs beside the event store (`events.sql.webhooks`)."""

    def endpoint_ids(self, org_id: str) -> list[uuid.UUID]: ...

    def deliveries(
        self, endpoint_id: uuid.UUID, limit: int, after: uuid.UUID | None
    ) -> tuple[list[Delivery], uuid.UUID | None]: ...

    def retry(self, endpoint_id: uuid.UUID, delivery_id: uuid.UUID, now: datetime) -> Delivery | None: ...


def endpoint_scope(org_id: str) -> str:
    """The reservations that list an organisation's endpoints (one per endpoint, keyed by id)."""
    return f"webhook_endpoint:{org_id}"


@dataclass
class WebhookService:
    store: EventStore
    directory: WebhookDirectory
    allow_private: bool = False
    resolve: Resolver = system_resolver
    clock: Callable[[], datetime] = utcnow
    grace: timedelta = ROTATION_GRACE
    max_attempts: int = 8

    def load(self, endpoint_id: uuid.UUID) -> Endpoint:
        return rebuild(endpoint_id, self.store.load(endpoint_id))

    def load_owned(self, org_id: str, endpoint_id: uuid.UUID) -> Endpoint:
        state = self.load(endpoint_id)
        if not state.owned_by(org_id):
            raise EndpointNotFound(str(endpoint_id))
        return state

    def check(self, url: str, events: Sequence[str]) -> None:
        """The registration's rules; every problem at once, by field."""
        problems: dict[str, list[str]] = {}
        try:
            safe_addresses(parse_url(url, self.allow_private), self.resolve, self.allow_private)
        except UnsafeUrl as error:
            problems["url"] = [str(error)]
        if bad := check_patterns(events):
            problems["events"] = bad
        if problems:
            raise InvalidEndpoint(problems)

    def register(
        self, org_id: str, url: str, events: Sequence[str], description: str | None, metadata: Metadata
    ) -> tuple[Endpoint, str]:
        """A new endpoint and its first secret (returned once, kept only in its reservation)."""
        self.check(url, events)
        endpoint_id, secret_id, secret = uuid7(), uuid7(), new_secret()
        event = WebhookEndpointRegistered(
            endpoint_id=endpoint_id,
            org_id=org_id,
            url=url,
            events=tuple(dict.fromkeys(events)),
            description=description,
            secret_id=secret_id,
            registered_at=self.clock(),
        )
        claims = [
            Reservation(SECRET_SCOPE, secret, subject_id=secret_id),
            Reservation(endpoint_scope(org_id), str(endpoint_id)),
        ]
        recorded = self.store.append(endpoint_id, 0, [event], metadata, claims)
        return rebuild(endpoint_id, recorded), secret

    def endpoints(self, org_id: str) -> list[Endpoint]:
        found = (self.load(endpoint_id) for endpoint_id in self.directory.endpoint_ids(org_id))
        return sorted((e for e in found if e.owned_by(org_id)), key=lambda e: (e.created_at, str(e.id)))

    def remove(self, org_id: str, endpoint_id: uuid.UUID, metadata: Metadata) -> None:
        def decide(state: Endpoint, now: datetime) -> list[Event]:
            return [WebhookEndpointRemoved(endpoint_id=state.id, org_id=org_id, removed_at=now)]

        self._decide_and_append(org_id, endpoint_id, metadata, decide)

    def rotate(self, org_id: str, endpoint_id: uuid.UUID, metadata: Metadata) -> tuple[Endpoint, str]:
        """A new secret; the previous one keeps signing beside it for `grace`."""
        secret_id, secret = uuid7(), new_secret()

        def decide(state: Endpoint, now: datetime) -> list[Event]:
            if not state.active:
                raise EndpointNotActive(str(state.id))
            return [
                WebhookSecretRotated(
                    endpoint_id=state.id,
                    org_id=org_id,
                    secret_id=secret_id,
                    previous_valid_until=now + self.grace,
                    rotated_at=now,
                )
            ]

        claims = [Reservation(SECRET_SCOPE, secret, subject_id=secret_id)]
        state = self._decide_and_append(org_id, endpoint_id, metadata, decide, claims)
        return state, secret

    def disable(self, endpoint_id: uuid.UUID, failures: int, metadata_actor: str) -> bool:
        """The dispatcher's decision; False when the endpoint is no longer active (removed, or
        disabled by another dispatcher)."""
        for _ in range(self.max_attempts):
            state = self.load(endpoint_id)
            if not state.active:
                return False
            event = WebhookEndpointDisabled(
                endpoint_id=endpoint_id,
                org_id=state.org_id,
                reason=DISABLED_FOR_FAILURES,
                failures=failures,
                disabled_at=self.clock(),
            )
            try:
                self.store.append(endpoint_id, state.version, [event], Metadata(state.org_id, metadata_actor))
                return True
            except ConcurrencyConflict:
                continue
        return False

    def signing_secrets(self, endpoint: Endpoint) -> list[str]:
        ids = endpoint.signing_secret_ids(self.clock())
        found = self.store.reserved_values(SECRET_SCOPE, ids)
        return [found[i] for i in ids if i in found]

    def deliveries(
        self, org_id: str, endpoint_id: uuid.UUID, limit: int, after: uuid.UUID | None
    ) -> tuple[list[Delivery], uuid.UUID | None]:
        self.load_owned(org_id, endpoint_id)
        return self.directory.deliveries(endpoint_id, limit, after)

    def retry(self, org_id: str, endpoint_id: uuid.UUID, delivery_id: uuid.UUID) -> Delivery:
        """Deliver again as soon as the dispatcher can (with the same `webhook-id`)."""
        if not self.load_owned(org_id, endpoint_id).active:
            raise EndpointNotActive(str(endpoint_id))
        delivery = self.directory.retry(endpoint_id, delivery_id, self.clock())
        if delivery is None:
            raise DeliveryNotFound(str(delivery_id))
        return delivery

    def _decide_and_append(
        self,
        org_id: str,
        endpoint_id: uuid.UUID,
        metadata: Metadata,
        decide: Callable[[Endpoint, datetime], list[Event]],
        reservations: Sequence[Reservation] = (),
    ) -> Endpoint:
        for _ in range(self.max_attempts):
            state = self.load_owned(org_id, endpoint_id)
            events = decide(state, self.clock())
            try:
                recorded = self.store.append(endpoint_id, state.version, events, metadata, reservations)
            except ConcurrencyConflict:
                continue
            for r in recorded:
                state = replace(_evolve(r.event, state, r), version=r.stream_version)
            return state
        raise ConcurrencyConflict(f"{endpoint_id}: too many concurrent writers")
