"""What the personal-data tests share: a running system with an organisation, its reviewer's
HTTP client, and the service, candidates' side and erasure on the system's clock; unique
emails and names; and readers of the raw tables."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from cli import bootstrap
from events.candidates import CandidateService
from events.crypto.cipher import is_token
from events.erasure import Erasure
from events.service import AssessmentService
from events.sql import tenancy
from tests.e2e.helpers import create, issue_keys, listed_keys
from tests.integration.helpers import metadata, rows, wait_until_quiet
from tests.support.system import Client, System

#: The fields that hold personal data, per event type, in the stored and published `data`.
PERSONAL_FIELDS = {
    "CandidateKeyIssued": ("candidateEmail", "candidateName"),
    "CandidateKeyRedeemed": ("candidateName",),
}


def person(label: str) -> tuple[str, str]:
    """An email and a name no other test (nor any token's base64) holds."""
    tag = uuid.uuid4().hex[:10]
    return f"{label}.{tag}@example.com", f"{label.title()} Q{tag}"


@dataclass
class Scene:
    system: System
    org: tenancy.IssuedToken
    client: Client
    service: AssessmentService
    candidates: CandidateService
    erasure: Erasure

    @property
    def org_id(self) -> str:
        return self.org.org_id

    @property
    def engine(self):
        return self.system.engine

    def assessment(self) -> str:
        return create(self.client)["id"]

    def issue(self, assessment_id: str, people: list[tuple[str, str | None]]) -> list[dict[str, Any]]:
        """Keys issued through the API, one per (email, name)."""
        fields: dict[str, Any] = {"candidateEmails": [email for email, _ in people]}
        if any(name for _, name in people):
            fields["candidateNames"] = [name for _, name in people]
        return issue_keys(self.client, assessment_id, count=len(people), **fields)

    def issue_by_service(self, assessment_id: str, people: list[tuple[str | None, str | None]]) -> list[Any]:
        return self.service.issue_keys(self.org_id, uuid.UUID(assessment_id), people, metadata(self.org_id))

    def key_string(self, key_id: uuid.UUID) -> str:
        return self.service.key_strings([key_id])[key_id]

    def redeem(self, key: str, name: str | None) -> None:
        """The candidate consents and redeems, giving a name, through the API."""
        with Client(self.system.api.url) as candidate:
            candidate.headers["X-API-Key"] = key
            consented = candidate.post("/v1/candidate/consent", json={"key": key})
            assert consented.status_code == 200, consented.text
            body = {"key": key} if name is None else {"key": key, "candidateName": name}
            redeemed = candidate.post("/v1/candidate/redeem", json=body)
            assert redeemed.status_code == 200, redeemed.text

    def erase(self, email: str) -> None:
        response = self.client.delete("/v1/candidates", params={"email": email})
        assert response.status_code == 200, response.text

    def keys(self, assessment_id: str) -> dict[str, dict[str, Any]]:
        return {key["id"]: key for key in listed_keys(self.client, assessment_id)}

    def history(self, assessment_id: str) -> list[dict[str, Any]]:
        response = self.client.get(f"/v1/assessments/{assessment_id}/events")
        assert response.status_code == 200, response.text
        return response.json()["events"]

    def quiet(self) -> None:
        wait_until_quiet(self.engine, 20)


def running_scene(system: System) -> Scene:
    """Relay, worker and API started; an organisation of the test's own."""
    system.start_relay()
    system.start_worker()
    system.start_api()
    org = tenancy.create_organisation(system.engine, f"Acme {uuid.uuid4().hex[:6]}")
    service = bootstrap.assessment_service(system.engine, system.store, clock=system.clock)
    return Scene(
        system,
        org,
        Client(system.api.url, org.token),
        service,
        bootstrap.candidate_service(system.settings, service),
        bootstrap.erasure(system.settings, system.engine, system.store, clock=system.clock),
    )


def shown(key: dict[str, Any]) -> tuple[Any, Any, bool]:
    """A listed key's (email, name, erased)."""
    return key["candidateEmail"], key["candidateName"], key.get("erased", False)


def issued_data(history: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The history's CandidateKeyIssued data, by key id."""
    return {e["data"]["keyId"]: e["data"] for e in history if e["type"] == "CandidateKeyIssued"}


def raw_events(engine) -> list[tuple[str, int, str]]:
    """(type, schema version, data as text) of every stored event, in order."""
    return [
        tuple(row)
        for row in rows(engine, "SELECT type, schema_version, data::text FROM events ORDER BY position")
    ]


def personal_values_stored(engine) -> list[Any]:
    """Every non-null personal field of the events table, as stored."""
    found = []
    for type_name, _, data in raw_events(engine):
        decoded = json.loads(data)
        found += [decoded[f] for f in PERSONAL_FIELDS.get(type_name, ()) if decoded.get(f) is not None]
    return found


def view_personal_values(engine) -> list[Any]:
    return [
        value
        for row in rows(engine, "SELECT candidate_email, candidate_name FROM candidate_keys_view")
        for value in row
        if value is not None
    ]


def all_tokens(values: list[Any]) -> bool:
    return bool(values) and all(is_token(v) for v in values)


def readable(texts: list[str] | str, secrets: list[str]) -> list[str]:
    """The secrets that occur in any of `texts` (case-insensitively)."""
    haystack = ("\n".join(texts) if isinstance(texts, list) else texts).casefold()
    return [s for s in secrets if s.casefold() in haystack]
