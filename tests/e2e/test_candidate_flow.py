"""The candidate's side as the product's command-line client plays it, call for call: consent,
redeem, the session token as `X-API-Key`, device checks, complete; and keys that run out of
time. Time is moved on the service's clock (`clock`), never slept through."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from datetime import timedelta

import pytest

from tests.e2e.helpers import assert_error, create, is_uuid, issue_keys, listed_keys, parse_time
from tests.support.wait import wait_for

REDEEMED_FIELDS = {
    "sessionId",
    "sessionToken",
    "assessmentId",
    "assessmentTitle",
    "orgName",
    "taskBrief",
    "repoUrl",
    "timeLimitMinutes",
    "issueId",
    "expiresAt",
    "tosAccepted",
    "startedAt",
    "deadline",
}
SESSION_FIELDS = {
    "id",
    "keyId",
    "assessmentId",
    "status",
    "startedAt",
    "deadline",
    "completedAt",
    "expiredAt",
    "consentVersion",
    "consentedAt",
    "signingPubKey",
    "deviceChecks",
}
PUBLIC_KEY = base64.b64encode(os.urandom(32)).decode()
FINGERPRINT = {"os": "linux", "arch": "x86_64", "hostnameHash": "ab12", "cpus": 8}


@pytest.fixture
def invited(client):
    """An assessment with a 60-minute limit and one key, issued with the org's name."""
    assessment = create(client, timeLimitMinutes=60, repoUrl="https://github.com/acme/api")
    (key,) = issue_keys(client, assessment["id"], orgName="Acme Hiring")
    return assessment, key


def consent_to(anonymous, key: str) -> dict:
    shown = anonymous.get("/v1/candidate/consent", params={"key": key})
    assert shown.status_code == 200, shown.text
    recorded = anonymous.post(
        "/v1/candidate/consent", json={"key": key, "disclosureHash": shown.json()["disclosureHash"]}
    )
    assert recorded.status_code == 200, recorded.text
    return shown.json()


def redeem(anonymous, key: str, **fields) -> dict:
    response = anonymous.post("/v1/candidate/redeem", json={"key": key, **fields})
    assert response.status_code == 200, response.text
    return response.json()


def test_the_clients_whole_sequence_from_consent_to_completion(client, anonymous, candidate, invited):
    assessment, key = invited
    assert anonymous.get("/v1/health").status_code == 200

    # 1. the disclosure, not yet confirmed; its hash is SHA-256 of it as serialised
    shown = anonymous.get("/v1/candidate/consent", params={"key": key["key"]})
    assert shown.status_code == 200, shown.text
    document = shown.json()
    assert set(document) == {"alreadyConfirmed", "disclosure", "disclosureHash"}
    assert document["alreadyConfirmed"] is False
    disclosure = document["disclosure"]
    assert set(disclosure) == {"version", "captures", "doesNotCapture", "evaluated", "dataUse", "tosUrl"}
    serialised = json.dumps(disclosure, separators=(",", ":"), ensure_ascii=False).encode()
    assert document["disclosureHash"] == hashlib.sha256(serialised).hexdigest()

    # 2. consent, idempotent
    for _ in range(2):
        recorded = anonymous.post(
            "/v1/candidate/consent", json={"key": key["key"], "disclosureHash": document["disclosureHash"]}
        )
        assert recorded.status_code == 200, recorded.text
    again = anonymous.get("/v1/candidate/consent", params={"key": key["key"]}).json()
    assert again["alreadyConfirmed"] is True

    # 3. redeem: 200, flat, the deadline is the time limit from the start
    redeemed = redeem(anonymous, key["key"], candidateName="Ada Lovelace", signingPubKey=PUBLIC_KEY)
    assert set(redeemed) == REDEEMED_FIELDS
    assert is_uuid(redeemed["sessionId"]) and redeemed["assessmentId"] == assessment["id"]
    assert redeemed["assessmentTitle"] == assessment["title"]
    assert redeemed["orgName"] == "Acme Hiring"
    assert redeemed["taskBrief"] == assessment["taskBrief"]
    assert redeemed["repoUrl"] == "https://github.com/acme/api"
    assert redeemed["timeLimitMinutes"] == 60 and redeemed["issueId"] is None
    assert redeemed["tosAccepted"] is True
    started, deadline = parse_time(redeemed["startedAt"]), parse_time(redeemed["deadline"])
    assert deadline - started == timedelta(minutes=60)
    assert redeemed["expiresAt"] == redeemed["deadline"]

    # the session token reads the assessment like the key does
    as_session = candidate(redeemed["sessionToken"])
    read = as_session.get(f"/v1/assessments/{assessment['id']}")
    assert read.status_code == 200, read.text
    assert read.json()["assessment"]["id"] == assessment["id"]

    # 4. device checks
    for checkpoint in ("start", "midway"):
        checked = as_session.post(
            "/v1/candidate/device-check", json={"checkpoint": checkpoint, "fingerprint": FINGERPRINT}
        )
        assert checked.status_code == 200, checked.text

    # 5. complete, the same answer when repeated
    done = [
        anonymous.post("/v1/candidate/complete", json={"sessionId": redeemed["sessionId"], "key": key["key"]})
        for _ in range(2)
    ]
    assert [response.status_code for response in done] == [200, 200], done[0].text
    assert done[0].json() == done[1].json()
    assert done[0].json()["ok"] is True
    completed_at = parse_time(done[0].json()["completedAt"])

    # the reviewer's view: the key and its session
    (listed,) = listed_keys(client, assessment["id"])
    assert listed["status"] == "completed"
    assert parse_time(listed["redeemedAt"]) == started
    assert parse_time(listed["completedAt"]) == completed_at
    assert listed["candidateName"] == "Ada Lovelace"
    sessions = client.get(f"/v1/assessments/{assessment['id']}/sessions")
    assert sessions.status_code == 200, sessions.text
    (session,) = sessions.json()["sessions"]
    assert set(session) == SESSION_FIELDS
    assert session["id"] == redeemed["sessionId"] and session["keyId"] == key["id"]
    assert session["status"] == "completed"
    assert session["consentVersion"] == disclosure["version"]
    assert session["signingPubKey"] == PUBLIC_KEY
    assert session["deviceChecks"]["count"] == 2 and session["deviceChecks"]["changed"] is False
    one = client.get(f"/v1/sessions/{redeemed['sessionId']}")
    assert one.status_code == 200 and one.json() == {"session": session}

    # a completed session's token and key open nothing any more
    assert_error(as_session.get(f"/v1/assessments/{assessment['id']}"), 401, "unauthorized")
    assert_error(candidate(key["key"]).get(f"/v1/assessments/{assessment['id']}"), 401, "unauthorized")
    assert_error(anonymous.post("/v1/candidate/redeem", json={"key": key["key"]}), 409, "conflict")


def test_redeem_without_consent_is_403_consent_required(anonymous, invited):
    _, key = invited
    response = anonymous.post("/v1/candidate/redeem", json={"key": key["key"]})
    assert_error(response, 403, "consent_required")


def test_a_consent_to_a_text_that_was_not_shown_is_409_and_records_nothing(anonymous, invited):
    _, key = invited
    stale = anonymous.post("/v1/candidate/consent", json={"key": key["key"], "disclosureHash": "0" * 64})
    assert_error(stale, 409, "conflict")
    shown = anonymous.get("/v1/candidate/consent", params={"key": key["key"]}).json()
    assert shown["alreadyConfirmed"] is False


def test_redeeming_an_active_key_again_returns_the_same_session_and_a_working_token(
    anonymous, candidate, invited
):
    assessment, key = invited
    consent_to(anonymous, key["key"])
    first, second = redeem(anonymous, key["key"]), redeem(anonymous, key["key"])
    assert second["sessionId"] == first["sessionId"]
    assert second["startedAt"] == first["startedAt"] and second["deadline"] == first["deadline"]
    assert second["sessionToken"] != first["sessionToken"]
    for token in (first["sessionToken"], second["sessionToken"]):
        assert candidate(token).get(f"/v1/assessments/{assessment['id']}").status_code == 200


def test_unknown_revoked_expired_and_deleted_keys_get_one_identical_401(client, anonymous, clock):
    unknown = "PST-ABCD-EFGH"
    revoked_assessment = create(client)
    (revoked,) = issue_keys(client, revoked_assessment["id"])
    consent_to(anonymous, revoked["key"])
    client.delete(f"/v1/assessments/{revoked_assessment['id']}/keys/{revoked['id']}")
    deleted_assessment = create(client)
    (of_deleted,) = issue_keys(client, deleted_assessment["id"])
    consent_to(anonymous, of_deleted["key"])
    client.delete(f"/v1/assessments/{deleted_assessment['id']}")
    expiring = create(client, expiresInDays=1)
    (expired,) = issue_keys(client, expiring["id"])
    consent_to(anonymous, expired["key"])
    clock.advance(days=1, seconds=1)

    bodies = set()
    for key in (unknown, revoked["key"], of_deleted["key"], expired["key"]):
        response = anonymous.post("/v1/candidate/redeem", json={"key": key})
        assert_error(response, 401, "unauthorized")
        bodies.add(response.text)
    assert len(bodies) == 1


def test_a_malformed_signing_key_is_400(anonymous, invited):
    _, key = invited
    consent_to(anonymous, key["key"])
    for bad in ("not base64!", base64.b64encode(b"short").decode()):
        response = anonymous.post("/v1/candidate/redeem", json={"key": key["key"], "signingPubKey": bad})
        assert_error(response, 400, "validation_error", "signingPubKey")


def test_a_pending_key_expires_by_time_and_the_expiry_is_recorded_once(client, anonymous, clock):
    assessment = create(client, expiresInDays=2)
    (key,) = issue_keys(client, assessment["id"])
    clock.advance(days=2, seconds=1)

    assert_error(anonymous.get("/v1/candidate/consent", params={"key": key["key"]}), 401, "unauthorized")
    assert listed_keys(client, assessment["id"])[0]["status"] == "expired"
    history = wait_for(lambda: _types(client, assessment["id"]).count("CandidateKeyExpired") or None, 20)
    assert history == 1


def test_an_active_session_expires_at_its_deadline(client, anonymous, candidate, invited, clock):
    assessment, key = invited
    consent_to(anonymous, key["key"])
    redeemed = redeem(anonymous, key["key"])
    clock.advance(minutes=60, seconds=1)

    assert_error(
        candidate(redeemed["sessionToken"]).get(f"/v1/assessments/{assessment['id']}"), 401, "unauthorized"
    )
    body = {"sessionId": redeemed["sessionId"], "key": key["key"]}
    late = anonymous.post("/v1/candidate/complete", json=body)
    assert_error(late, 409, "deadline_passed")
    assert listed_keys(client, assessment["id"])[0]["status"] == "expired"
    wait_for(lambda: "CandidateKeyExpired" in _types(client, assessment["id"]), 20)
    session = client.get(f"/v1/sessions/{redeemed['sessionId']}").json()["session"]
    assert session["status"] == "expired"
    assert session["expiredAt"] == redeemed["deadline"]


def _types(client, assessment_id: str) -> list[str]:
    response = client.get(f"/v1/assessments/{assessment_id}/events")
    assert response.status_code == 200, response.text
    return [event["type"] for event in response.json()["events"]]
