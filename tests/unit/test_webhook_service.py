"""The webhook endpoints' service on the in-memory store: registration (its checks, its event,
its secret kept only in a reservation), rotation and its grace period, removal, the dispatcher's
disable, another organisation's endpoints, lost races; and the pure URL and pattern rules the
service applies, with their exact messages.

No database, no broker, no network: names are "resolved" by a stub, the clock is moved by hand,
the directory (the SQL side) is a fake that records what it was asked."""

from __future__ import annotations

import base64
import ipaddress
import re
import uuid
from datetime import datetime, timedelta

import pytest

from events import codec
from events.memory.store import InMemoryEventStore
from events.model import (
    Metadata,
    WebhookEndpointDisabled,
    WebhookEndpointRegistered,
    WebhookEndpointRemoved,
    WebhookSecretRotated,
)
from events.ports import ConcurrencyConflict
from events.webhooks import (
    ACTIVE,
    DISABLED,
    DISABLED_FOR_FAILURES,
    MAX_PATTERNS,
    MAX_URL,
    REMOVED,
    ROTATION_GRACE,
    SECRET_SCOPE,
    Delivery,
    DeliveryNotFound,
    Endpoint,
    EndpointNotActive,
    EndpointNotFound,
    InvalidEndpoint,
    SecretVersion,
    Target,
    UnsafeUrl,
    WebhookService,
    _topic_matches,
    check_patterns,
    endpoint_scope,
    matching_types,
    new_secret,
    parse_url,
    refusal,
    safe_addresses,
    subscribable,
    system_resolver,
)
from tests.unit.builders import NOW

ORG = "org-acme"
OTHER_ORG = "org-other"
URL = "https://hooks.example.com/in?x=1"
META = Metadata(ORG, "user:alice", correlation_id="corr-1", causation_id="cause-1")
SECRET_FORMAT = re.compile(r"^whsec_[A-Za-z0-9+/]{43}=$")


class Clock:
    def __init__(self, now: datetime = NOW) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


class Resolver:
    """A stub for `socket.getaddrinfo`: every name resolves to `addresses`; calls are kept."""

    def __init__(self, *addresses: str) -> None:
        self.addresses = list(addresses) or ["93.184.216.34"]
        self.calls: list[tuple[str, int]] = []

    def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append((host, port))
        return list(self.addresses)


class Directory:
    """The SQL side's fake: the endpoint ids it lists, the deliveries and retries asked for."""

    def __init__(self) -> None:
        self.ids: dict[str, list[uuid.UUID]] = {}
        self.deliveries_asked: list[tuple[uuid.UUID, int, uuid.UUID | None]] = []
        self.retries: list[tuple[uuid.UUID, uuid.UUID, datetime]] = []
        self.page: tuple[list[Delivery], uuid.UUID | None] = ([], None)
        self.retried: Delivery | None = None

    def endpoint_ids(self, org_id: str) -> list[uuid.UUID]:
        return list(self.ids.get(org_id, []))

    def deliveries(self, endpoint_id, limit, after):
        self.deliveries_asked.append((endpoint_id, limit, after))
        return self.page

    def retry(self, endpoint_id, delivery_id, now):
        self.retries.append((endpoint_id, delivery_id, now))
        return self.retried


class RacingStore(InMemoryEventStore):
    """Runs the queued `before` writes just before the service's next appends (a competitor
    that got there first); `conflicts` appends are refused outright."""

    def __init__(self, clock) -> None:
        super().__init__(clock)
        self.before: list = []
        self.appends = 0
        self.conflicts = 0

    def append(self, stream_id, expected_version, events, metadata, reservations=()):
        self.appends += 1
        if self.conflicts:
            self.conflicts -= 1
            raise ConcurrencyConflict("lost")
        if self.before:
            self.before.pop(0)()
        return super().append(stream_id, expected_version, events, metadata, reservations)

    def sneak(self, stream_id, version, event, metadata=None):
        metadata = metadata or Metadata(ORG, "other")
        return InMemoryEventStore.append(self, stream_id, version, [event], metadata)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(clock) -> RacingStore:
    return RacingStore(clock)


@pytest.fixture
def directory() -> Directory:
    return Directory()


@pytest.fixture
def resolver() -> Resolver:
    return Resolver()


@pytest.fixture
def service(store, directory, resolver, clock) -> WebhookService:
    return WebhookService(store, directory, resolve=resolver, clock=clock)


def register(service, org=ORG, url=URL, events=("CandidateKeyIssued",), description="Hooks"):
    endpoint, secret = service.register(org, url, list(events), description, Metadata(org, "user:alice"))
    service.directory.ids.setdefault(org, []).append(endpoint.id)
    return endpoint, secret


def everything(store) -> list:
    return list(store.read_all())


# --- registration ------------------------------------------------------------------------


def test_registration_records_one_event_with_every_field_and_the_metadata(service, store, resolver):
    endpoint, _secret = service.register(
        ORG, URL, ["CandidateKeyIssued", "assessment.*", "CandidateKeyIssued"], "Our hooks", META
    )

    [recorded] = store.load(endpoint.id)
    event = recorded.event
    assert type(event) is WebhookEndpointRegistered
    assert event.endpoint_id == endpoint.id
    assert event.org_id == ORG
    assert event.url == URL
    assert event.events == ("CandidateKeyIssued", "assessment.*")
    assert event.description == "Our hooks"
    assert event.registered_at == NOW
    assert isinstance(event.secret_id, uuid.UUID) and event.secret_id != endpoint.id
    assert recorded.stream_version == 1
    assert recorded.metadata == {
        "orgId": ORG,
        "actor": "user:alice",
        "correlationId": "corr-1",
        "causationId": "cause-1",
    }
    assert resolver.calls == [("hooks.example.com", 443)]

    assert endpoint == Endpoint(
        id=endpoint.id,
        version=1,
        org_id=ORG,
        url=URL,
        events=("CandidateKeyIssued", "assessment.*"),
        description="Our hooks",
        created_at=NOW,
        updated_at=NOW,
        registered_position=recorded.position,
        status=ACTIVE,
        disabled_reason=None,
        secrets=(SecretVersion(event.secret_id),),
    )
    assert service.load(endpoint.id) == endpoint
    assert service.load_owned(ORG, endpoint.id) == endpoint


def test_the_registered_position_is_the_global_position_of_the_registration(service, store):
    other = uuid.uuid4()
    store.sneak(other, 0, WebhookEndpointRemoved(endpoint_id=other, org_id=ORG, removed_at=NOW))
    endpoint, _ = register(service)

    assert endpoint.registered_position == 2
    assert service.load(endpoint.id).registered_position == 2


def test_the_secret_is_whsec_base64_of_32_bytes_and_is_kept_only_in_its_reservation(service, store):
    endpoint, secret = service.register(ORG, URL, ["CandidateKeyIssued"], None, META)

    assert SECRET_FORMAT.match(secret)
    assert len(base64.b64decode(secret.removeprefix("whsec_"))) == 32
    [recorded] = store.load(endpoint.id)
    reservation = store.reservation(SECRET_SCOPE, secret)
    assert reservation is not None
    assert reservation.stream_id == endpoint.id
    assert reservation.subject_id == recorded.event.secret_id
    assert reservation.payload == {}
    listing = store.reservation(endpoint_scope(ORG), str(endpoint.id))
    assert listing is not None and listing.stream_id == endpoint.id and listing.subject_id is None
    assert endpoint_scope(ORG) == "webhook_endpoint:org-acme"
    assert SECRET_SCOPE == "webhook_secret"
    # Neither the event, as stored, nor its metadata holds the secret or its key bytes.
    stored = store._events[0]
    body = secret.removeprefix("whsec_")
    assert body not in repr(stored.data) and body not in repr(stored.metadata)
    assert body not in repr(codec.encode(recorded.event)) and body not in repr(recorded)
    assert service.signing_secrets(endpoint) == [secret]


def test_two_registrations_draw_two_secrets_and_two_ids(service):
    first, first_secret = register(service)
    second, second_secret = register(service)

    assert first.id != second.id
    assert first_secret != second_secret
    assert first.secrets[0].secret_id != second.secrets[0].secret_id


def test_new_secrets_are_32_random_bytes():
    secret = new_secret()
    assert SECRET_FORMAT.match(secret)
    assert len(base64.b64decode(secret[6:])) == 32


def test_a_registration_with_a_bad_url_and_bad_patterns_reports_both_and_stores_nothing(service, store):
    with pytest.raises(InvalidEndpoint) as refused:
        service.register(ORG, "http://hooks.example.com/", ["nope.*", "CandidateKeyIssued", "x"], None, META)

    assert refused.value.problems == {
        "url": ["The URL must be https."],
        "events": ["Unknown event type or pattern: 'nope.*'.", "Unknown event type or pattern: 'x'."],
    }
    assert refused.value.args == (refused.value.problems,)
    assert everything(store) == []


def test_only_the_url_or_only_the_events_are_reported(service):
    with pytest.raises(InvalidEndpoint) as bad_url:
        service.check("https://hooks.example.com/#frag", ["CandidateKeyIssued"])
    assert bad_url.value.problems == {"url": ["The URL must not have a fragment."]}

    with pytest.raises(InvalidEndpoint) as no_events:
        service.check(URL, [])
    assert no_events.value.problems == {"events": ["Name at least one event type or pattern."]}

    service.check(URL, ["#"])  # no problems: no exception


def test_a_name_resolving_to_a_private_address_is_refused_by_the_service(store, directory):
    resolver = Resolver("93.184.216.34", "10.1.2.3")
    service = WebhookService(store, directory, resolve=resolver, clock=Clock())

    with pytest.raises(InvalidEndpoint) as refused:
        service.register(ORG, "https://hooks.example.com:8443/x", ["#"], None, META)

    assert refused.value.problems == {
        "url": ["The host 'hooks.example.com' resolves to a private or reserved address."]
    }
    assert resolver.calls == [("hooks.example.com", 8443)]
    assert everything(store) == []


def test_a_name_resolving_to_nothing_is_refused(store, directory):
    resolver = Resolver()
    resolver.addresses = []
    service = WebhookService(store, directory, resolve=resolver, clock=Clock())

    with pytest.raises(InvalidEndpoint) as refused:
        service.check(URL, ["#"])
    assert refused.value.problems == {"url": ["The host 'hooks.example.com' does not resolve."]}


def test_allow_private_lets_http_and_loopback_through_but_not_link_local(store, directory):
    resolver = Resolver("127.0.0.1")
    service = WebhookService(store, directory, allow_private=True, resolve=resolver, clock=Clock())

    endpoint, _ = service.register(ORG, "http://localhost/hook", ["#"], None, META)
    assert endpoint.url == "http://localhost/hook"
    assert resolver.calls == [("localhost", 80)]

    resolver.addresses = ["fe80::1%eth0"]
    with pytest.raises(InvalidEndpoint) as refused:
        service.check("http://localhost/hook", ["#"])
    assert refused.value.problems == {"url": ["The host 'localhost' resolves to a link-local address."]}

    with pytest.raises(InvalidEndpoint) as scheme:
        service.check("ftp://localhost/hook", ["#"])
    assert scheme.value.problems == {"url": ["The URL must be http(s)."]}


def test_without_allow_private_loopback_is_refused(service, resolver):
    resolver.addresses = ["127.0.0.1"]
    with pytest.raises(InvalidEndpoint) as refused:
        service.check(URL, ["#"])
    assert refused.value.problems == {"url": ["The host 'hooks.example.com' resolves to a loopback address."]}


def test_at_most_fifty_patterns(service):
    fifty = ["CandidateKeyIssued"] * MAX_PATTERNS
    service.check(URL, fifty)
    with pytest.raises(InvalidEndpoint) as refused:
        service.check(URL, [*fifty, "#"])
    assert refused.value.problems == {"events": ["At most 50 event types or patterns."]}
    assert check_patterns(fifty) == []


# --- listing and loading ------------------------------------------------------------------


def test_an_unknown_endpoint_does_not_exist_and_is_not_found(service):
    unknown = uuid.uuid4()

    assert service.load(unknown) == Endpoint(unknown)
    assert service.load(unknown).id == unknown
    with pytest.raises(EndpointNotFound) as missing:
        service.load_owned(ORG, unknown)
    assert str(missing.value) == str(unknown)


def test_another_organisations_endpoint_is_not_found(service, store):
    endpoint, _ = register(service)

    with pytest.raises(EndpointNotFound) as missing:
        service.load_owned(OTHER_ORG, endpoint.id)
    assert str(missing.value) == str(endpoint.id)
    for command in (
        lambda: service.remove(OTHER_ORG, endpoint.id, Metadata(OTHER_ORG, "mallory")),
        lambda: service.rotate(OTHER_ORG, endpoint.id, Metadata(OTHER_ORG, "mallory")),
        lambda: service.deliveries(OTHER_ORG, endpoint.id, 10, None),
        lambda: service.retry(OTHER_ORG, endpoint.id, uuid.uuid4()),
    ):
        with pytest.raises(EndpointNotFound) as refused:
            command()
        assert str(refused.value) == str(endpoint.id)
    assert len(everything(store)) == 1
    assert service.directory.deliveries_asked == [] and service.directory.retries == []


def test_the_endpoints_of_an_org_sorted_by_creation_then_id_without_removed_or_foreign_ones(
    service, clock, directory
):
    clock.now = NOW + timedelta(minutes=5)
    later, _ = register(service, url="https://b.example.com/")
    clock.now = NOW
    first, _ = register(service, url="https://a.example.com/")
    same_time, _ = register(service, url="https://c.example.com/")
    gone, _ = register(service, url="https://d.example.com/")
    service.remove(ORG, gone.id, META)
    foreign, _ = register(service, org=OTHER_ORG)
    # Listed in the reverse order of their ids, so that the tie is broken by the sort.
    directory.ids[ORG] = sorted(directory.ids[ORG], key=str, reverse=True)
    directory.ids[ORG].append(foreign.id)  # a stale listing must not leak it
    directory.ids[ORG].append(uuid.uuid4())  # nor an unknown id

    listed = service.endpoints(ORG)

    assert [e.id for e in listed] == [*sorted([first.id, same_time.id], key=str), later.id]
    assert listed[-1] == service.load(later.id)
    assert [e.id for e in service.endpoints(OTHER_ORG)] == [foreign.id]
    assert service.endpoints("org-none") == []


def test_an_endpoint_wants_the_types_its_patterns_name(service):
    endpoint, _ = register(service, events=("candidate_key.*",))

    assert endpoint.wants("CandidateKeyIssued") is True
    assert endpoint.wants("CandidateKeyExpired") is True
    assert endpoint.wants("AssessmentCreated") is False


# --- rotation ------------------------------------------------------------------------------


def test_rotation_records_the_new_secret_id_and_the_end_of_the_previous_ones_grace(service, store, clock):
    endpoint, old = register(service)
    clock.now = NOW + timedelta(hours=1)

    rotated, new = service.rotate(ORG, endpoint.id, META)

    assert SECRET_FORMAT.match(new) and new != old
    [_, recorded] = store.load(endpoint.id)
    event = recorded.event
    assert type(event) is WebhookSecretRotated
    assert event.endpoint_id == endpoint.id
    assert event.org_id == ORG
    assert event.rotated_at == NOW + timedelta(hours=1)
    assert event.previous_valid_until == NOW + timedelta(hours=25)
    assert event.secret_id not in (endpoint.secrets[0].secret_id, endpoint.id)
    assert recorded.stream_version == 2
    assert recorded.metadata == META.as_dict()

    reservation = store.reservation(SECRET_SCOPE, new)
    assert reservation is not None
    assert reservation.subject_id == event.secret_id and reservation.stream_id == endpoint.id
    assert new.removeprefix("whsec_") not in repr(store._events[1].data)
    assert new.removeprefix("whsec_") not in repr(store._events[1].metadata)

    assert rotated == Endpoint(
        id=endpoint.id,
        version=2,
        org_id=ORG,
        url=URL,
        events=("CandidateKeyIssued",),
        description="Hooks",
        created_at=NOW,
        updated_at=NOW + timedelta(hours=1),
        registered_position=1,
        secrets=(
            SecretVersion(endpoint.secrets[0].secret_id, NOW + timedelta(hours=25)),
            SecretVersion(event.secret_id),
        ),
    )
    assert service.load(endpoint.id) == rotated


def test_the_previous_secret_signs_beside_the_new_one_until_the_grace_period_ends(service, clock):
    endpoint, old = register(service)
    rotated, new = service.rotate(ORG, endpoint.id, META)

    assert timedelta(hours=24) == ROTATION_GRACE
    assert service.signing_secrets(rotated) == [new, old]
    clock.now = NOW + timedelta(hours=24) - timedelta(milliseconds=1)
    assert service.signing_secrets(rotated) == [new, old]
    assert rotated.signing_secret_ids(clock.now) == [
        rotated.secrets[1].secret_id,
        rotated.secrets[0].secret_id,
    ]
    clock.now = NOW + timedelta(hours=24)
    assert service.signing_secrets(rotated) == [new]
    assert rotated.signing_secret_ids(clock.now) == [rotated.secrets[1].secret_id]
    clock.now = NOW + timedelta(days=30)
    assert service.signing_secrets(service.load(endpoint.id)) == [new]


def test_a_second_rotation_ends_only_the_current_secret_and_keeps_the_older_end(service, clock):
    endpoint, first = register(service)
    _, second = service.rotate(ORG, endpoint.id, META)
    clock.now = NOW + timedelta(hours=2)
    twice, third = service.rotate(ORG, endpoint.id, META)

    assert [s.valid_until for s in twice.secrets] == [
        NOW + timedelta(hours=24),
        NOW + timedelta(hours=26),
        None,
    ]
    assert service.signing_secrets(twice) == [third, second, first]
    clock.now = NOW + timedelta(hours=25)
    assert service.signing_secrets(twice) == [third, second]


def test_the_grace_period_is_the_services(store, directory, resolver, clock):
    service = WebhookService(store, directory, resolve=resolver, clock=clock, grace=timedelta(minutes=5))
    endpoint, _old = register(service)

    rotated, new = service.rotate(ORG, endpoint.id, META)

    assert rotated.secrets[0].valid_until == NOW + timedelta(minutes=5)
    clock.now = NOW + timedelta(minutes=5)
    assert service.signing_secrets(rotated) == [new]


def test_a_secret_whose_reservation_is_missing_is_left_out(service, store):
    endpoint, secret = register(service)
    ghost = Endpoint(endpoint.id, org_id=ORG, secrets=(SecretVersion(uuid.uuid4()), *endpoint.secrets))

    assert service.signing_secrets(ghost) == [secret]
    assert service.signing_secrets(Endpoint(endpoint.id)) == []


def test_a_disabled_endpoint_is_not_rotated(service, store):
    endpoint, _ = register(service)
    assert service.disable(endpoint.id, 20, "dispatcher") is True

    with pytest.raises(EndpointNotActive) as refused:
        service.rotate(ORG, endpoint.id, META)

    assert str(refused.value) == str(endpoint.id)
    assert len(store.load(endpoint.id)) == 2


def test_a_removed_or_unknown_endpoint_is_not_rotated(service):
    endpoint, _ = register(service)
    service.remove(ORG, endpoint.id, META)

    for endpoint_id in (endpoint.id, uuid.uuid4()):
        with pytest.raises(EndpointNotFound) as missing:
            service.rotate(ORG, endpoint_id, META)
        assert str(missing.value) == str(endpoint_id)


# --- removal -------------------------------------------------------------------------------


def test_removal_records_the_event_and_the_endpoint_is_gone(service, store, clock):
    endpoint, _secret = register(service)
    clock.now = NOW + timedelta(minutes=3)

    assert service.remove(ORG, endpoint.id, META) is None

    [_, recorded] = store.load(endpoint.id)
    assert recorded.event == WebhookEndpointRemoved(
        endpoint_id=endpoint.id, org_id=ORG, removed_at=NOW + timedelta(minutes=3)
    )
    assert recorded.stream_version == 2
    assert recorded.metadata == META.as_dict()
    state = service.load(endpoint.id)
    assert state.status == REMOVED and state.updated_at == NOW + timedelta(minutes=3)
    assert state.exists is False and state.active is False
    with pytest.raises(EndpointNotFound):
        service.load_owned(ORG, endpoint.id)
    with pytest.raises(EndpointNotFound):
        service.remove(ORG, endpoint.id, META)
    assert len(store.load(endpoint.id)) == 2


def test_a_disabled_endpoint_can_still_be_removed(service, store):
    endpoint, _ = register(service)
    service.disable(endpoint.id, 20, "dispatcher")

    service.remove(ORG, endpoint.id, META)

    assert service.load(endpoint.id).status == REMOVED
    assert service.disable(endpoint.id, 21, "dispatcher") is False
    assert len(store.load(endpoint.id)) == 3


# --- the dispatcher's disable ---------------------------------------------------------------


def test_disable_records_the_failures_and_the_reason_under_the_endpoints_org(service, store, clock):
    endpoint, _ = register(service)
    clock.now = NOW + timedelta(hours=30)

    assert service.disable(endpoint.id, 23, "worker:webhooks") is True

    [_, recorded] = store.load(endpoint.id)
    assert recorded.event == WebhookEndpointDisabled(
        endpoint_id=endpoint.id,
        org_id=ORG,
        reason="consecutive_failures",
        failures=23,
        disabled_at=NOW + timedelta(hours=30),
    )
    assert DISABLED_FOR_FAILURES == "consecutive_failures"
    assert recorded.stream_version == 2
    assert recorded.metadata == {
        "orgId": ORG,
        "actor": "worker:webhooks",
        "correlationId": None,
        "causationId": None,
    }
    state = service.load(endpoint.id)
    assert state.status == DISABLED
    assert state.disabled_reason == "consecutive_failures"
    assert state.updated_at == NOW + timedelta(hours=30)
    assert state.exists is True and state.active is False
    assert service.load_owned(ORG, endpoint.id) == state


def test_disable_twice_or_of_an_unknown_endpoint_writes_nothing(service, store):
    endpoint, _ = register(service)
    service.disable(endpoint.id, 20, "dispatcher")

    assert service.disable(endpoint.id, 21, "dispatcher") is False
    assert service.disable(uuid.uuid4(), 20, "dispatcher") is False
    assert len(everything(store)) == 2


def test_disable_after_a_lost_race_decides_again_on_the_newer_state(service, store, clock):
    endpoint, _ = register(service)
    rotated = WebhookSecretRotated(
        endpoint_id=endpoint.id,
        org_id=ORG,
        secret_id=uuid.uuid4(),
        previous_valid_until=NOW + timedelta(hours=24),
        rotated_at=NOW,
    )
    store.before.append(lambda: store.sneak(endpoint.id, 1, rotated))

    assert service.disable(endpoint.id, 20, "dispatcher") is True

    assert [type(r.event) for r in store.load(endpoint.id)] == [
        WebhookEndpointRegistered,
        WebhookSecretRotated,
        WebhookEndpointDisabled,
    ]
    assert store.appends == 3  # register, the lost one, the retried one


def test_disable_losing_to_another_dispatcher_is_false(service, store):
    endpoint, _ = register(service)
    other = WebhookEndpointDisabled(
        endpoint_id=endpoint.id, org_id=ORG, reason=DISABLED_FOR_FAILURES, failures=20, disabled_at=NOW
    )
    store.before.append(lambda: store.sneak(endpoint.id, 1, other))

    assert service.disable(endpoint.id, 25, "dispatcher") is False

    assert [r.event.failures for r in store.load(endpoint.id)[1:]] == [20]


def test_disable_gives_up_after_max_attempts_lost_races(store, directory, resolver, clock):
    service = WebhookService(store, directory, resolve=resolver, clock=clock, max_attempts=3)
    endpoint, _ = register(service)
    store.appends = 0
    store.conflicts = 3

    assert service.disable(endpoint.id, 20, "dispatcher") is False
    assert store.appends == 3
    assert service.load(endpoint.id).status == ACTIVE

    store.appends = 0
    store.conflicts = 2
    assert service.disable(endpoint.id, 20, "dispatcher") is True
    assert store.appends == 3


def test_the_default_is_eight_attempts(service, store):
    endpoint, _ = register(service)
    store.appends = 0
    store.conflicts = 100

    assert service.disable(endpoint.id, 20, "dispatcher") is False
    assert store.appends == 8


# --- lost races of the org's commands ----------------------------------------------------------


def test_a_rotation_that_lost_a_race_is_decided_again_on_the_newer_state(service, store, clock):
    endpoint, old = register(service)
    competing = WebhookSecretRotated(
        endpoint_id=endpoint.id,
        org_id=ORG,
        secret_id=uuid.uuid4(),
        previous_valid_until=NOW + timedelta(hours=1),
        rotated_at=NOW,
    )
    store.before.append(lambda: store.sneak(endpoint.id, 1, competing))

    state, new = service.rotate(ORG, endpoint.id, META)

    assert state.version == 3
    assert [s.secret_id for s in state.secrets][:2] == [endpoint.secrets[0].secret_id, competing.secret_id]
    assert [s.valid_until for s in state.secrets] == [
        NOW + timedelta(hours=1),
        NOW + timedelta(hours=24),
        None,
    ]
    assert state == service.load(endpoint.id)
    assert service.signing_secrets(state) == [new, old]  # the competitor's secret has no reservation


def test_a_removal_that_lost_to_a_disable_still_removes(service, store):
    endpoint, _ = register(service)
    disabled = WebhookEndpointDisabled(
        endpoint_id=endpoint.id, org_id=ORG, reason=DISABLED_FOR_FAILURES, failures=20, disabled_at=NOW
    )
    store.before.append(lambda: store.sneak(endpoint.id, 1, disabled))

    service.remove(ORG, endpoint.id, META)

    assert [r.stream_version for r in store.load(endpoint.id)] == [1, 2, 3]
    assert service.load(endpoint.id).status == REMOVED


def test_a_rotation_that_lost_to_a_removal_is_not_found(service, store):
    endpoint, _ = register(service)
    removed = WebhookEndpointRemoved(endpoint_id=endpoint.id, org_id=ORG, removed_at=NOW)
    store.before.append(lambda: store.sneak(endpoint.id, 1, removed))

    with pytest.raises(EndpointNotFound):
        service.rotate(ORG, endpoint.id, META)
    assert len(store.load(endpoint.id)) == 2


def test_too_many_lost_races_are_a_conflict(store, directory, resolver, clock):
    service = WebhookService(store, directory, resolve=resolver, clock=clock, max_attempts=2)
    endpoint, _ = register(service)
    store.appends = 0
    store.conflicts = 2

    with pytest.raises(ConcurrencyConflict) as conflict:
        service.remove(ORG, endpoint.id, META)

    assert str(conflict.value) == f"{endpoint.id}: too many concurrent writers"
    assert store.appends == 2
    assert service.load(endpoint.id).status == ACTIVE

    store.appends = 0
    store.conflicts = 1
    state, _ = service.rotate(ORG, endpoint.id, META)
    assert store.appends == 2
    assert state.version == 2


def test_the_org_commands_also_try_eight_times_by_default(service, store):
    endpoint, _ = register(service)
    store.appends = 0
    store.conflicts = 100

    with pytest.raises(ConcurrencyConflict):
        service.rotate(ORG, endpoint.id, META)
    assert store.appends == 8


# --- deliveries --------------------------------------------------------------------------------


def delivery(endpoint_id: uuid.UUID) -> Delivery:
    return Delivery(
        id=uuid.uuid4(),
        endpoint_id=endpoint_id,
        event_id=uuid.uuid4(),
        event_type="CandidateKeyIssued",
        stream_id=uuid.uuid4(),
        status="pending",
        attempts=0,
        created_at=NOW,
    )


def test_deliveries_are_asked_of_the_directory_for_an_owned_endpoint(service, directory):
    endpoint, _ = register(service)
    page = ([delivery(endpoint.id)], uuid.uuid4())
    directory.page = page
    after = uuid.uuid4()

    assert service.deliveries(ORG, endpoint.id, 25, after) == page
    assert directory.deliveries_asked == [(endpoint.id, 25, after)]


def test_deliveries_of_a_disabled_endpoint_are_listed_but_not_of_a_removed_one(service, directory):
    endpoint, _ = register(service)
    service.disable(endpoint.id, 20, "dispatcher")
    assert service.deliveries(ORG, endpoint.id, 10, None) == ([], None)

    service.remove(ORG, endpoint.id, META)
    with pytest.raises(EndpointNotFound):
        service.deliveries(ORG, endpoint.id, 10, None)
    assert directory.deliveries_asked == [(endpoint.id, 10, None)]


def test_a_retry_asks_the_directory_with_the_clocks_time(service, directory, clock):
    endpoint, _ = register(service)
    clock.now = NOW + timedelta(minutes=7)
    directory.retried = delivery(endpoint.id)
    delivery_id = directory.retried.id

    assert service.retry(ORG, endpoint.id, delivery_id) == directory.retried
    assert directory.retries == [(endpoint.id, delivery_id, NOW + timedelta(minutes=7))]


def test_a_retry_of_an_unknown_delivery_is_not_found(service, directory):
    endpoint, _ = register(service)
    missing = uuid.uuid4()

    with pytest.raises(DeliveryNotFound) as refused:
        service.retry(ORG, endpoint.id, missing)
    assert str(refused.value) == str(missing)
    assert directory.retries == [(endpoint.id, missing, NOW)]


def test_a_retry_on_a_disabled_endpoint_is_refused_before_the_directory(service, directory):
    endpoint, _ = register(service)
    service.disable(endpoint.id, 20, "dispatcher")

    with pytest.raises(EndpointNotActive) as refused:
        service.retry(ORG, endpoint.id, uuid.uuid4())
    assert str(refused.value) == str(endpoint.id)
    assert directory.retries == []


# --- the URL rules, exactly ----------------------------------------------------------------


def refused_url(url: str, allow_private: bool = False) -> str:
    with pytest.raises(UnsafeUrl) as refused:
        parse_url(url, allow_private)
    return str(refused.value)


def test_parse_url_messages():
    assert refused_url("https://a.example.com/" + "x" * (MAX_URL - 21)) == "At most 2048 characters."
    assert refused_url("https://a.example.com:99999/") == "Not a valid URL."
    assert refused_url("http://a.example.com/") == "The URL must be https."
    assert refused_url("HTTPS://a.example.com/".replace("HTTPS", "ftp"), True) == "The URL must be http(s)."
    assert refused_url("https:///path") == "The URL has no host."
    assert refused_url("https://user@a.example.com/") == "The URL must not hold credentials."
    assert refused_url("https://:pw@a.example.com/") == "The URL must not hold credentials."
    assert refused_url("https://u:pw@a.example.com/") == "The URL must not hold credentials."
    assert refused_url("https://a.example.com/#x") == "The URL must not have a fragment."
    assert refused_url("https://10.0.0.1/") == "The URL points at a private or reserved address."
    assert refused_url("https://[::1]/") == "The URL points at a loopback address."
    assert refused_url("https://localhost/") == "The URL points at a loopback address."
    assert refused_url("https://api.localhost/") == "The URL points at a loopback address."
    assert refused_url("https://API.LOCALHOST/") == "The URL points at a loopback address."
    assert refused_url("http://169.254.169.254/", True) == "The URL points at a cloud metadata address."


def test_parse_url_parts():
    assert parse_url("https://a.example.com/" + "x" * (MAX_URL - 22)).port == 443
    assert parse_url("https://a.example.com") == Target("https", "a.example.com", 443, "/")
    assert parse_url("https://a.example.com:8443/p?q=1&r=2") == Target(
        "https", "a.example.com", 8443, "/p?q=1&r=2"
    )
    assert parse_url("http://a.example.com", True) == Target("http", "a.example.com", 80, "/")
    assert parse_url("https://a.example.com", True) == Target("https", "a.example.com", 443, "/")
    assert parse_url("http://localhost:3000/h", True) == Target("http", "localhost", 3000, "/h")
    assert parse_url("http://127.0.0.1/h", True) == Target("http", "127.0.0.1", 80, "/h")


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("169.254.169.254", "a cloud metadata address"),
        ("fd00:ec2::254", "a cloud metadata address"),
        ("100.100.100.200", "a cloud metadata address"),
        ("0.0.0.0", "an unspecified address"),
        ("::", "an unspecified address"),
        ("224.0.0.1", "a multicast address"),
        ("169.254.1.1", "a link-local address"),
        ("fe80::1", "a link-local address"),
        ("127.0.0.1", "a loopback address"),
        ("::1", "a loopback address"),
        ("100.64.0.1", "a shared (CGNAT) address"),
        ("10.0.0.1", "a private or reserved address"),
        ("192.168.1.1", "a private or reserved address"),
        ("240.0.0.1", "a private or reserved address"),
        ("2001:db8::1", "a private or reserved address"),
        # reserved but (by the registry's table) global and not private: refused all the same
        ("4000::1", "a private or reserved address"),
        ("5f00::1", "a private or reserved address"),
        ("::ffff:10.0.0.1", "a private or reserved address"),
        ("64:ff9b::a00:1", "a private or reserved address"),
        ("64:ff9b::808:808", None),
        ("8.8.8.8", None),
        ("2606:4700::1111", None),
    ],
)
def test_refusal_reasons(address, why):
    assert refusal(ipaddress.ip_address(address)) == why


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("127.0.0.1", None),
        ("10.0.0.1", None),
        ("100.64.0.1", None),
        ("169.254.169.254", "a cloud metadata address"),
        ("169.254.1.1", "a link-local address"),
        ("224.0.0.1", "a multicast address"),
        ("0.0.0.0", "an unspecified address"),
    ],
)
def test_refusal_reasons_when_private_addresses_are_allowed(address, why):
    assert refusal(ipaddress.ip_address(address), allow_private=True) == why


def test_safe_addresses_checks_every_address_with_the_scope_stripped():
    resolver = Resolver("2606:4700::1111", "93.184.216.34")
    target = Target("https", "a.example.com", 8443, "/")

    assert safe_addresses(target, resolver) == ["2606:4700::1111", "93.184.216.34"]
    assert resolver.calls == [("a.example.com", 8443)]

    resolver.addresses = ["fe80::1%eth0"]
    with pytest.raises(UnsafeUrl) as refused:
        safe_addresses(target, resolver)
    assert str(refused.value) == "The host 'a.example.com' resolves to a link-local address."

    # A scope is cut off before the check: a scoped address would not equal the metadata one.
    for scoped in ("fd00:ec2::254%eth0", "fd00:ec2::254%eth0%1"):
        resolver.addresses = ["93.184.216.34", scoped]
        with pytest.raises(UnsafeUrl) as metadata:
            safe_addresses(target, resolver)
        assert str(metadata.value) == "The host 'a.example.com' resolves to a cloud metadata address."

    resolver.addresses = ["10.0.0.1"]
    assert safe_addresses(target, resolver, allow_private=True) == ["10.0.0.1"]
    resolver.addresses = []
    with pytest.raises(UnsafeUrl) as unresolved:
        safe_addresses(target, resolver)
    assert str(unresolved.value) == "The host 'a.example.com' does not resolve."


# --- patterns --------------------------------------------------------------------------------

KEY_TYPES = {
    "CandidateKeyIssued",
    "CandidateKeyRevoked",
    "CandidateConsented",
    "CandidateKeyRedeemed",
    "CandidateSessionResumed",
    "CandidateDeviceChecked",
    "CandidateKeyCompleted",
    "CandidateKeyExpired",
}
ASSESSMENT_TYPES = {"AssessmentCreated", "AssessmentDeleted"}
ERASURE_TYPES = {"CandidateErased"}


@pytest.mark.parametrize(
    ("pattern", "types"),
    [
        ("CandidateKeyIssued", {"CandidateKeyIssued"}),
        ("candidate_key.issued", {"CandidateKeyIssued"}),
        ("candidate_key.*", KEY_TYPES),
        ("candidate_key.#", KEY_TYPES),
        ("*.created", {"AssessmentCreated"}),
        ("*.*", KEY_TYPES | ASSESSMENT_TYPES | ERASURE_TYPES),
        ("#", KEY_TYPES | ASSESSMENT_TYPES | ERASURE_TYPES),
        ("candidate.erased", ERASURE_TYPES),
        ("#.deleted", {"AssessmentDeleted"}),
        ("#.#", KEY_TYPES | ASSESSMENT_TYPES | ERASURE_TYPES),
        ("assessment.#.created", {"AssessmentCreated"}),
        ("#.assessment.created", {"AssessmentCreated"}),
        ("assessment.created.#", {"AssessmentCreated"}),
        ("*", set()),
        ("*.*.*", set()),
        ("assessment", set()),
        ("assessment.created.x", set()),
        ("assessment.*.x", set()),
        ("x.#", set()),
        ("#.x", set()),
        ("candidate_key.issued.*", set()),
        ("webhook_endpoint.*", set()),
        ("WebhookEndpointRegistered", set()),
        ("", set()),
    ],
)
def test_the_types_a_pattern_names(pattern, types):
    matching_types.cache_clear()
    assert matching_types(pattern) == frozenset(types)
    # A type's name is not a routing-key pattern: it names its type by the lookup alone.
    by_key = frozenset() if pattern in subscribable() else frozenset(types)
    assert frozenset(name for name, key in subscribable().items() if _topic_matches(pattern, key)) == by_key


@pytest.mark.parametrize(
    ("pattern", "key", "matched"),
    [
        ("a.b", "a.b", True),
        ("a.b", "a.c", False),
        ("a.b", "a", False),
        ("a", "a.b", False),
        ("a.b", "a.b.c", False),
        ("*", "a", True),
        ("*", "a.b", False),
        ("a.*", "a.b", True),
        ("a.*", "a", False),
        ("a.*", "b.c", False),
        ("*.b", "a.b", True),
        ("*.b", "a.c", False),
        ("a.*.c", "a.b.c", True),
        ("a.*.c", "a.b.d", False),
        ("a.*.c", "a.c", False),
        ("#", "a", True),
        ("#", "a.b.c", True),
        ("#", "", True),
        ("a.#", "a", True),
        ("a.#", "a.b", True),
        ("a.#", "a.b.c", True),
        ("a.#", "b.a", False),
        ("#.c", "a.b.c", True),
        ("#.c", "c", True),
        ("#.c", "c.a", False),
        ("#.b.#", "a.b.c", True),
        ("#.b.#", "b", True),
        ("#.b.#", "a.c", False),
        ("a.#.c", "a.c", True),
        ("a.#.c", "a.b.b.c", True),
        ("a.#.c", "a.b.b.d", False),
        ("#.#", "a.b", True),
        ("a.b.c", "a.b.c", True),
        ("a.b.c", "a.x.c", False),
        ("a.b.c", "a.b.x", False),
        ("x.b.c", "a.b.c", False),
        ("b", "a.b", False),
        ("a b", "a b", True),
        ("a b", "a", False),
        ("*.*", "a b", False),
        ("a", "a", True),
        ("", "", True),
        ("", "a", False),
        ("a", "", False),
    ],
)
def test_topic_matching(pattern, key, matched):
    assert _topic_matches(pattern, key) is matched


def test_an_unknown_pattern_is_reported_with_its_repr():
    assert check_patterns(["#", "nope"]) == ["Unknown event type or pattern: 'nope'."]
    assert check_patterns([]) == ["Name at least one event type or pattern."]
    assert check_patterns(["#"] * 51) == ["At most 50 event types or patterns."]


# --- the production resolver, with socket.getaddrinfo stubbed (nothing is resolved) -----------


def test_the_system_resolver_asks_for_stream_sockets_and_keeps_each_address_once(monkeypatch):
    import socket

    calls = []

    def getaddrinfo(host, port, family=0, type=0, proto=0, flags=0):
        calls.append((host, port, family, type))
        return [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", port)),
            (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("2606:2800::1", port, 0, 0)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", port)),
        ]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)

    assert system_resolver("hooks.example.com", 8443) == ["93.184.216.34", "2606:2800::1"]
    assert calls == [("hooks.example.com", 8443, 0, socket.SOCK_STREAM)]


@pytest.mark.parametrize("error", [OSError("no such name"), UnicodeError("bad label")])
def test_a_name_the_system_cannot_resolve_is_unsafe(monkeypatch, error):
    import socket

    def getaddrinfo(*args, **kwargs):
        raise error

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)

    with pytest.raises(UnsafeUrl) as refused:
        system_resolver("nowhere.example", 443)
    assert str(refused.value) == "The host 'nowhere.example' does not resolve."
    assert refused.value.__cause__ is error
