"""The webhooks' pure rules: signing (against the Standard Webhooks test vectors), patterns,
the SSRF address rules, the retry schedule, an endpoint's state; and the sender's refusals,
which must come before any connection is attempted."""

from __future__ import annotations

import base64
import ipaddress
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from events import codec
from events.model import (
    EVENT_TYPES,
    RecordedEvent,
    WebhookEndpointDisabled,
    WebhookEndpointRegistered,
    WebhookEndpointRemoved,
    WebhookSecretRotated,
)
from events.webhooks import (
    RETRY_SCHEDULE,
    SECRET_PREFIX,
    UnsafeUrl,
    check_patterns,
    matches,
    matching_types,
    new_secret,
    parse_url,
    rebuild,
    refusal,
    retry_delay,
    safe_addresses,
    sign,
    signature_header,
    subscribable,
    verify,
)
from worker.webhooks import Sender

# --- signing ------------------------------------------------------------------------------

#: The Standard Webhooks specification's test vector (its libraries' tests use the same).
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TIMESTAMP = 1614265330
VECTOR_BODY = b'{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_signatures_match_the_standard_webhooks_test_vector():
    assert sign(VECTOR_SECRET, VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY) == VECTOR_SIGNATURE


def test_a_signature_verifies_only_for_its_secret_id_timestamp_and_body():
    header = signature_header([VECTOR_SECRET], VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY)

    assert verify(VECTOR_SECRET, VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY, header)
    assert not verify(new_secret(), VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY, header)
    assert not verify(VECTOR_SECRET, "msg_other", VECTOR_TIMESTAMP, VECTOR_BODY, header)
    assert not verify(VECTOR_SECRET, VECTOR_ID, VECTOR_TIMESTAMP + 1, VECTOR_BODY, header)
    assert not verify(VECTOR_SECRET, VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY + b" ", header)


def test_with_two_secrets_the_header_carries_two_signatures_either_verifies():
    old, new = new_secret(), new_secret()
    header = signature_header([new, old], "msg", 1, b"{}")

    assert len(header.split(" ")) == 2
    assert verify(new, "msg", 1, b"{}", header) and verify(old, "msg", 1, b"{}", header)


def test_a_secret_is_whsec_and_base64_of_32_random_bytes():
    secret = new_secret()

    assert secret.startswith(SECRET_PREFIX)
    assert len(base64.b64decode(secret.removeprefix(SECRET_PREFIX))) == 32
    assert secret != new_secret()


# --- which events ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("AssessmentCreated", {"AssessmentCreated"}),
        ("assessment.created", {"AssessmentCreated"}),
        ("assessment.*", {"AssessmentCreated", "AssessmentDeleted"}),
        (
            "candidate_key.*",
            {name for name, key in subscribable().items() if key.startswith("candidate_key.")},
        ),
        ("#", set(subscribable())),
        ("*.deleted", {"AssessmentDeleted"}),
        ("nothing.*", set()),
        ("webhook_endpoint.*", set()),
        ("WebhookEndpointRegistered", set()),
    ],
)
def test_patterns_name_types_routing_keys_or_topic_patterns(pattern, expected):
    assert matching_types(pattern) == expected


def test_the_endpoints_own_events_are_never_delivered():
    assert not any(name.startswith("Webhook") for name in subscribable())
    assert set(subscribable()) | {n for n in EVENT_TYPES if n.startswith("Webhook")} == set(EVENT_TYPES)


def test_an_unknown_type_or_pattern_is_a_problem_each():
    assert check_patterns(["assessment.*", "assessment.renamed", "Nope"]) == [
        "Unknown event type or pattern: 'assessment.renamed'.",
        "Unknown event type or pattern: 'Nope'.",
    ]
    assert check_patterns([]) == ["Name at least one event type or pattern."]
    assert check_patterns(["#"]) == []


def test_an_event_matches_when_any_pattern_names_it():
    assert matches(["assessment.deleted", "candidate_key.*"], "CandidateKeyRevoked")
    assert not matches(["assessment.deleted"], "AssessmentCreated")


# --- where: the SSRF rules ------------------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "::1",
        "10.0.0.1",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "169.254.1.1",
        "fe80::1",
        "fc00::1",
        "fd00:ec2::254",
        "100.64.0.1",
        "100.100.100.200",
        "224.0.0.1",
        "ff02::1",
        "0.0.0.0",
        "::",
        "::ffff:10.0.0.1",
        "::ffff:127.0.0.1",
        "64:ff9b::a00:1",
        "192.0.2.1",
        "240.0.0.1",
    ],
)
def test_addresses_that_are_not_public_are_refused(address):
    assert refusal(ipaddress.ip_address(address)) is not None


@pytest.mark.parametrize("address", ["93.184.216.34", "2606:4700:4700::1111", "8.8.8.8"])
def test_public_addresses_are_allowed(address):
    assert refusal(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize(
    ("address", "refused"),
    [
        ("127.0.0.1", False),
        ("10.0.0.1", False),
        ("::1", False),
        ("169.254.169.254", True),
        ("169.254.1.1", True),
        ("224.0.0.1", True),
        ("0.0.0.0", True),
    ],
)
def test_allowing_private_addresses_never_allows_metadata_link_local_multicast_or_unspecified(
    address, refused
):
    assert (refusal(ipaddress.ip_address(address), allow_private=True) is not None) is refused


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com/hook",
        "ftp://example.com/hook",
        "https://10.0.0.1/hook",
        "https://169.254.169.254/latest/meta-data/",
        "https://[::1]/hook",
        "https://127.0.0.1:8443/hook",
        "https://localhost/hook",
        "https://user:pass@example.com/hook",
        "https:///hook",
        "https://example.com/hook#fragment",
        "https://example.com:99999/",
        "https://" + "a" * 2048 + ".com/",
    ],
)
def test_urls_are_refused_by_their_form_or_literal_address(url):
    with pytest.raises(UnsafeUrl):
        parse_url(url)


def test_an_https_url_with_a_name_is_accepted_until_it_resolves():
    target = parse_url("https://hooks.example.com:8443/in?x=1")

    assert (target.scheme, target.host, target.port, target.path) == (
        "https",
        "hooks.example.com",
        8443,
        "/in?x=1",
    )


def test_allowing_private_addresses_allows_http_and_loopback():
    assert parse_url("http://127.0.0.1:9000/hook", allow_private=True).port == 9000
    with pytest.raises(UnsafeUrl):
        parse_url("http://169.254.169.254/", allow_private=True)


def test_a_name_is_refused_when_any_of_its_addresses_is():
    target = parse_url("https://hooks.example.com/")

    assert safe_addresses(target, lambda _h, _p: ["93.184.216.34"]) == ["93.184.216.34"]
    with pytest.raises(UnsafeUrl, match="private"):
        safe_addresses(target, lambda _h, _p: ["93.184.216.34", "10.1.2.3"])
    with pytest.raises(UnsafeUrl, match="metadata"):
        safe_addresses(target, lambda _h, _p: ["169.254.169.254"])


class NoConnection(AssertionError):
    pass


def refuse_to_connect(address, timeout):
    raise NoConnection(f"tried to connect to {address}")


@pytest.mark.parametrize(
    ("url", "addresses"),
    [
        ("https://internal.example.com/hook", ["10.0.0.5"]),
        ("https://metadata.example.com/hook", ["169.254.169.254"]),
        ("https://rebound.example.com/hook", ["93.184.216.34", "127.0.0.1"]),
        ("https://10.0.0.1/hook", ["10.0.0.1"]),
        ("http://public.example.com/hook", ["93.184.216.34"]),
    ],
)
def test_the_sender_refuses_before_connecting(url, addresses):
    looked_up: list[str] = []

    def resolve(host: str, port: int) -> list[str]:
        looked_up.append(host)
        return addresses

    sender = Sender(resolve=resolve, connect=refuse_to_connect)
    attempt = sender.post(url, {}, b"{}")

    assert not attempt.ok and attempt.status is None
    assert attempt.error.startswith("refused:")


def test_the_sender_connects_to_the_checked_address_not_to_the_name_again():
    connected: list[tuple[str, int]] = []

    def connect(address, timeout):
        connected.append(address)
        raise ConnectionRefusedError("nobody there")

    sender = Sender(resolve=lambda _h, _p: ["93.184.216.34"], connect=connect)
    attempt = sender.post("https://hooks.example.com/hook", {}, b"{}")

    assert connected == [("93.184.216.34", 443)]
    assert not attempt.ok and "ConnectionRefusedError" in attempt.error


# --- when: the schedule ---------------------------------------------------------------------


def test_the_schedule_grows_with_jitter_and_ends():
    delays = [retry_delay(n, draw=lambda: 0.0) for n in range(1, len(RETRY_SCHEDULE) + 2)]

    assert delays[:-1] == list(RETRY_SCHEDULE)
    assert delays[-1] is None
    assert RETRY_SCHEDULE == (5, 300, 1800, 7200, 18000, 36000, 36000)
    assert retry_delay(1, draw=lambda: 1.0) == pytest.approx(6.0)
    assert all(5 <= retry_delay(1) <= 6 for _ in range(100))


# --- an endpoint's state ----------------------------------------------------------------


def recorded(event, version: int, position: int) -> RecordedEvent:
    return RecordedEvent(uuid.uuid4(), event.endpoint_id, version, position, datetime.now(UTC), event)


def test_an_endpoint_folds_from_its_events_and_a_rotation_keeps_the_old_secret_for_its_grace():
    endpoint_id, first, second = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    at = datetime(2026, 1, 1, tzinfo=UTC)
    registered = WebhookEndpointRegistered(
        endpoint_id=endpoint_id,
        org_id="org",
        url="https://hooks.example.com/",
        events=("assessment.*",),
        secret_id=first,
        registered_at=at,
    )
    rotated = WebhookSecretRotated(
        endpoint_id=endpoint_id,
        org_id="org",
        secret_id=second,
        previous_valid_until=at + timedelta(hours=24),
        rotated_at=at,
    )

    state = rebuild(endpoint_id, [recorded(registered, 1, 10), recorded(rotated, 2, 11)])

    assert state.active and state.owned_by("org") and not state.owned_by("other")
    assert state.registered_position == 10 and state.version == 2
    assert state.signing_secret_ids(at + timedelta(hours=1)) == [second, first]
    assert state.signing_secret_ids(at + timedelta(hours=25)) == [second]
    disabled = WebhookEndpointDisabled(
        endpoint_id=endpoint_id, org_id="org", reason="consecutive_failures", failures=20, disabled_at=at
    )
    assert rebuild(endpoint_id, [recorded(registered, 1, 10), recorded(disabled, 2, 12)]).status == "disabled"
    removed = WebhookEndpointRemoved(endpoint_id=endpoint_id, org_id="org", removed_at=at)
    assert not rebuild(endpoint_id, [recorded(registered, 1, 10), recorded(removed, 2, 12)]).exists


def test_an_endpoints_events_round_trip_and_hold_no_secret():
    event = WebhookEndpointRegistered(
        endpoint_id=uuid.uuid4(),
        org_id="org",
        url="https://hooks.example.com/",
        events=("assessment.*", "CandidateKeyIssued"),
        description=None,
        secret_id=uuid.uuid4(),
        registered_at=datetime(2026, 1, 1, tzinfo=UTC),
    )

    data = codec.encode(event)

    assert data["events"] == ["assessment.*", "CandidateKeyIssued"]
    assert codec.decode(event.type_name, event.schema_version, data) == event
    assert not any("secret" in key.lower() and key != "secretId" for key in data)
