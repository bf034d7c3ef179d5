"""`/v1/webhooks` through HTTP: what registering, reading, removing and rotating answer, the
validation errors, another organisation's endpoints, and the URL rules of production (an API
of the test's own with private addresses not allowed; its resolver is a stub, so no name is
ever looked up)."""

from __future__ import annotations

import ipaddress
import uuid
from collections.abc import Iterator
from dataclasses import replace

import pytest

from events.sql import tenancy
from events.webhooks import UnsafeUrl
from tests.e2e.helpers import assert_error
from tests.support.system import ApiServer, Client, System

RECEIVER = "http://127.0.0.1:9/hook"  # never called: no dispatcher runs on the shared system


def register(client: Client, url: str = RECEIVER, events: list[str] | None = None, **more):
    return client.post("/v1/webhooks", json={"url": url, "events": events or ["assessment.*"], **more})


@pytest.fixture
def hook(client: Client) -> dict:
    response = register(client, description="ATS")
    assert response.status_code == 201, response.text
    return response.json()["webhook"]


def test_registering_answers_201_with_the_endpoint_and_its_secret(client: Client):
    response = register(client, events=["assessment.created", "candidate_key.*"], description="ATS")

    assert response.status_code == 201, response.text
    hook = response.json()["webhook"]
    assert response.headers["Location"] == f"/v1/webhooks/{hook['id']}"
    assert hook["url"] == RECEIVER and hook["events"] == ["assessment.created", "candidate_key.*"]
    assert hook["description"] == "ATS" and hook["status"] == "active"
    assert hook["secret"].startswith("whsec_")
    assert hook["previousSecretValidUntil"] is None
    assert hook["createdAt"].endswith("Z")


def test_reads_never_show_the_secret(client: Client, hook: dict):
    listed = client.get("/v1/webhooks")
    one = client.get(f"/v1/webhooks/{hook['id']}")

    assert listed.status_code == one.status_code == 200
    assert [h["id"] for h in listed.json()["webhooks"]] == [hook["id"]]
    assert "secret" not in listed.json()["webhooks"][0] and "secret" not in one.json()["webhook"]
    assert hook["secret"] not in listed.text + one.text
    assert one.json()["webhook"] == {k: v for k, v in hook.items() if k != "secret"}


def test_rotating_answers_a_new_secret_and_when_the_old_one_stops_signing(client: Client, hook: dict):
    response = client.post(f"/v1/webhooks/{hook['id']}/rotate-secret")

    assert response.status_code == 200, response.text
    rotated = response.json()["webhook"]
    assert rotated["secret"].startswith("whsec_") and rotated["secret"] != hook["secret"]
    assert rotated["previousSecretValidUntil"] > rotated["updatedAt"]


def test_a_removed_endpoint_is_gone(client: Client, hook: dict):
    removed = client.delete(f"/v1/webhooks/{hook['id']}")

    assert removed.status_code == 200 and removed.json() == {"ok": True, "id": hook["id"]}
    assert client.get(f"/v1/webhooks/{hook['id']}").status_code == 404
    assert client.delete(f"/v1/webhooks/{hook['id']}").status_code == 404
    assert client.get("/v1/webhooks").json()["webhooks"] == []


def test_deliveries_start_empty_and_page(client: Client, hook: dict):
    response = client.get(f"/v1/webhooks/{hook['id']}/deliveries", params={"limit": 10})

    assert response.status_code == 200
    assert response.json() == {"deliveries": [], "nextCursor": None}
    assert client.get(f"/v1/webhooks/{hook['id']}/deliveries", params={"limit": 0}).status_code == 400
    assert client.get(f"/v1/webhooks/{hook['id']}/deliveries", params={"after": "x"}).status_code == 400


def test_retrying_an_unknown_delivery_is_404(client: Client, hook: dict):
    response = client.post(f"/v1/webhooks/{hook['id']}/deliveries/{uuid.uuid4()}/retry")

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_another_organisations_endpoint_is_404_everywhere(other_client: Client, hook: dict):
    base = f"/v1/webhooks/{hook['id']}"
    answers = [
        other_client.get(base),
        other_client.delete(base),
        other_client.post(f"{base}/rotate-secret"),
        other_client.get(f"{base}/deliveries"),
        other_client.post(f"{base}/deliveries/{uuid.uuid4()}/retry"),
    ]

    assert [a.status_code for a in answers] == [404] * 5
    assert all(a.json()["error"]["code"] == "not_found" for a in answers)
    assert other_client.get("/v1/webhooks").json()["webhooks"] == []


def test_an_endpoints_id_names_no_assessment(client: Client, hook: dict):
    """An endpoint is a stream of the store too; the assessment routes know it not."""
    path = f"/v1/assessments/{hook['id']}"
    for response in (
        client.get(path),
        client.get(f"{path}/events"),
        client.get(f"{path}/keys"),
        client.post(f"{path}/keys", json={"count": 1}),
        client.get(f"{path}/sessions"),
        client.delete(path),
    ):
        assert_error(response, 404, "not_found")
    assert client.get(f"/v1/webhooks/{hook['id']}").status_code == 200


def test_ids_that_are_not_uuids_are_404(client: Client):
    assert client.get("/v1/webhooks/not-a-uuid").status_code == 404


def test_without_a_token_it_is_401(anonymous: Client):
    assert anonymous.post("/v1/webhooks", json={"url": RECEIVER, "events": ["#"]}).status_code == 401
    assert anonymous.get("/v1/webhooks").status_code == 401


@pytest.mark.parametrize(
    ("sent", "field"),
    [
        ({"url": RECEIVER, "events": ["assessment.renamed"]}, "events"),
        ({"url": RECEIVER, "events": ["WebhookEndpointRegistered"]}, "events"),
        ({"url": RECEIVER, "events": []}, "events"),
        ({"url": RECEIVER}, "events"),
        ({"events": ["#"]}, "url"),
        ({"url": "not a url", "events": ["#"]}, "url"),
        ({"url": "http://169.254.169.254/latest/meta-data/", "events": ["#"]}, "url"),
        ({"url": RECEIVER, "events": ["#"], "secret": "mine"}, "secret"),
        ({"url": RECEIVER, "events": ["#"], "description": "x" * 1001}, "description"),
    ],
)
def test_invalid_registrations_are_400_naming_the_field(client: Client, sent: dict, field: str):
    response = client.post("/v1/webhooks", json=sent)

    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert field in error["details"]


# --- the rules of production: https only, no private addresses ---------------------------

NAMES = {"hooks.example.com": ["93.184.216.34"], "internal.example.com": ["10.0.0.7"]}


def stub_resolver(host: str, port: int) -> list[str]:
    """Names from the table, literals as themselves; nothing is looked up."""
    if host in NAMES:
        return NAMES[host]
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        raise UnsafeUrl(f"The host {host!r} does not resolve.") from None


@pytest.fixture
def production_client(shared_system: System) -> Iterator[Client]:
    settings = replace(shared_system.settings, webhooks_allow_private=False)
    server = ApiServer(settings, resolve=stub_resolver)
    org = tenancy.create_organisation(shared_system.engine, f"Prod {uuid.uuid4().hex[:6]}")
    with Client(server.url, org.token) as client:
        yield client
    server.stop()


@pytest.mark.parametrize(
    "url",
    [
        "http://hooks.example.com/hook",
        "https://10.0.0.1/hook",
        "https://192.168.0.10/hook",
        "https://169.254.169.254/latest/meta-data/",
        "https://[::1]/hook",
        "https://127.0.0.1/hook",
        "https://localhost/hook",
        "https://100.64.0.1/hook",
        "https://internal.example.com/hook",
        "https://unknown.example.com/hook",
    ],
)
def test_in_production_only_https_to_public_addresses_is_accepted(production_client: Client, url: str):
    response = production_client.post("/v1/webhooks", json={"url": url, "events": ["#"]})

    assert response.status_code == 400, response.text
    assert list(response.json()["error"]["details"]) == ["url"]


def test_in_production_an_https_name_resolving_to_a_public_address_is_accepted(production_client: Client):
    response = production_client.post(
        "/v1/webhooks", json={"url": "https://hooks.example.com/in", "events": ["#"]}
    )

    assert response.status_code == 201, response.text
