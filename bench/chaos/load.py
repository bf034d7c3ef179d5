"""The load: client threads making a mix of writes and reads as a real client would (retrying a
create with the same Idempotency-Key after a 5xx or no answer), recording every request and
every acknowledged write."""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from collections.abc import Callable

import requests

from bench.chaos import (
    CLIENT_THREADS,
    CLIENT_TIMEOUT_SECONDS,
    IDEMPOTENT_ATTEMPTS,
    ISSUES_FILE,
    THINK_SECONDS,
)
from bench.chaos.records import Clock, RequestRecord, Write


class Known:
    """One organisation's live assessments and keys, as the clients saw them acknowledged."""

    def __init__(self, token: str) -> None:
        self.token = token
        self._lock = threading.Lock()
        self.assessments: dict[str, set[str]] = {}  # id -> live key ids
        self.keys: dict[str, tuple[str, str]] = {}  # key id -> (assessment id, key)

    def add_assessment(self, assessment_id: str) -> None:
        with self._lock:
            self.assessments.setdefault(assessment_id, set())

    def forget_assessment(self, assessment_id: str) -> None:
        with self._lock:
            for key_id in self.assessments.pop(assessment_id, set()):
                self.keys.pop(key_id, None)

    def add_keys(self, assessment_id: str, keys: list[dict]) -> None:
        with self._lock:
            if assessment_id in self.assessments:
                for key in keys:
                    self.assessments[assessment_id].add(key["id"])
                    self.keys[key["id"]] = (assessment_id, key["key"])

    def forget_key(self, key_id: str) -> None:
        with self._lock:
            assessment_id, _ = self.keys.pop(key_id, (None, None))
            self.assessments.get(assessment_id, set()).discard(key_id)

    def any_assessment(self, rng: random.Random) -> str | None:
        with self._lock:
            return rng.choice(list(self.assessments)) if self.assessments else None

    def any_key(self, rng: random.Random) -> tuple[str, str, str] | None:
        with self._lock:
            if not self.keys:
                return None
            key_id = rng.choice(list(self.keys))
            return (key_id, *self.keys[key_id])


class LoadClient(threading.Thread):
    def __init__(
        self,
        index: int,
        api_url: str,
        known: Known,
        issue_ids: list[str],
        seed: int,
        clock: Clock,
        stop: threading.Event,
        records: list[RequestRecord],
        idempotency: dict[str, list[str]],
    ) -> None:
        super().__init__(name=f"client-{index}", daemon=True)
        self.index = index
        self.api_url = api_url
        self.known = known
        self.issue_ids = issue_ids
        self.rng = random.Random(seed * 1000 + index)
        self.clock = clock
        self.stop = stop
        self.records = records
        self.idempotency = idempotency  # key -> request ids of every attempt
        self.session = requests.Session()

    def run(self) -> None:
        weights = [weight for weight, _ in OPERATIONS]
        while not self.stop.is_set():
            _, operation = self.rng.choices(OPERATIONS, weights)[0]
            operation(self)
            time.sleep(THINK_SECONDS)
        self.session.close()

    def call(
        self, method: str, route: str, path: str, *, as_candidate: str | None = None, **kwargs
    ) -> tuple[RequestRecord, requests.Response | None]:
        request_id = str(uuid.uuid4())
        headers = {"X-Request-Id": request_id, **kwargs.pop("headers", {})}
        if as_candidate:
            headers["X-API-Key"] = as_candidate
        else:
            headers["Authorization"] = f"Bearer {self.known.token}"
        started = self.clock.now()
        response, error = None, None
        try:
            response = self.session.request(
                method, self.api_url + path, headers=headers, timeout=CLIENT_TIMEOUT_SECONDS, **kwargs
            )
        except requests.RequestException as failure:
            error = type(failure).__name__
        record = RequestRecord(
            started=started,
            duration=self.clock.now() - started,
            method=method,
            route=route,
            status=response.status_code if response is not None else None,
            request_id=request_id,
            retry_after=response.headers.get("Retry-After") if response is not None else None,
            error=error,
        )
        self.records.append(record)
        return record, response


def ok(response: requests.Response | None) -> bool:
    return response is not None and 200 <= response.status_code < 300


def retryable(response: requests.Response | None) -> bool:
    return response is None or response.status_code >= 500


def assessment_body(client: LoadClient) -> dict:
    body = {"title": f"Chaos {client.rng.randrange(10**6)}", "role": "Backend engineer"}
    if client.issue_ids and client.rng.random() < 0.25:
        body["issueId"] = client.rng.choice(client.issue_ids)
    else:
        body["taskBrief"] = "Build a rate limiter."
    if client.rng.random() < 0.5:
        body["timeLimitMinutes"] = client.rng.randint(30, 240)
    return body


def create(client: LoadClient) -> None:
    record, response = client.call("POST", "/v1/assessments", "/v1/assessments", json=assessment_body(client))
    if ok(response):
        assessment_id = response.json()["assessment"]["id"]
        record.wrote = Write("create", assessment_id)
        client.known.add_assessment(assessment_id)


def create_idempotently(client: LoadClient) -> None:
    """A retrying client: after a 5xx or no answer, the same key and body again."""
    key, body = f"chaos-{uuid.uuid4()}", assessment_body(client)
    attempts = client.idempotency.setdefault(key, [])
    for _ in range(IDEMPOTENT_ATTEMPTS):
        record, response = client.call(
            "POST", "/v1/assessments", "/v1/assessments", json=body, headers={"Idempotency-Key": key}
        )
        attempts.append(record.request_id)
        if ok(response):
            assessment_id = response.json()["assessment"]["id"]
            record.wrote = Write("create", assessment_id, idempotency_key=key)
            client.known.add_assessment(assessment_id)
            return
        if not retryable(response):
            return
        time.sleep(float(record.retry_after or 1))


def issue_keys(client: LoadClient) -> None:
    assessment_id = client.known.any_assessment(client.rng)
    if assessment_id is None:
        return create(client)
    count = client.rng.randint(1, 3)
    body: dict = {"count": count}
    if client.rng.random() < 0.6:
        body["candidateEmails"] = [f"c{client.rng.randrange(10**6)}@example.com" for _ in range(count)]
        if client.rng.random() < 0.5:
            body["candidateNames"] = [f"Candidate {n}" for n in range(count)]
    if client.rng.random() < 0.3:
        body["orgName"] = "Chaos Ltd"
    path = f"/v1/assessments/{assessment_id}/keys"
    record, response = client.call("POST", "/v1/assessments/<id>/keys", path, json=body)
    if ok(response):
        keys = response.json()["keys"]
        record.wrote = Write("issue", assessment_id, tuple(key["id"] for key in keys))
        client.known.add_keys(assessment_id, keys)


def revoke_key(client: LoadClient) -> None:
    picked = client.known.any_key(client.rng)
    if picked is None:
        return issue_keys(client)
    key_id, assessment_id, _ = picked
    path = f"/v1/assessments/{assessment_id}/keys/{key_id}"
    record, response = client.call("DELETE", "/v1/assessments/<id>/keys/<keyId>", path)
    if ok(response):
        record.wrote = Write("revoke", assessment_id, (key_id,))
    if ok(response) or (response is not None and response.status_code == 404):
        client.known.forget_key(key_id)


def delete_assessment(client: LoadClient) -> None:
    assessment_id = client.known.any_assessment(client.rng)
    if assessment_id is None:
        return create(client)
    record, response = client.call("DELETE", "/v1/assessments/<id>", f"/v1/assessments/{assessment_id}")
    if ok(response):
        record.wrote = Write("delete", assessment_id)
    if ok(response) or (response is not None and response.status_code == 404):
        client.known.forget_assessment(assessment_id)


def get_assessment(client: LoadClient) -> None:
    assessment_id = client.known.any_assessment(client.rng) or str(uuid.uuid4())
    client.call("GET", "/v1/assessments/<id>", f"/v1/assessments/{assessment_id}")


def list_assessments(client: LoadClient) -> None:
    limit = client.rng.randint(1, 100)
    client.call("GET", "/v1/assessments", f"/v1/assessments?limit={limit}")


def list_keys(client: LoadClient) -> None:
    assessment_id = client.known.any_assessment(client.rng) or str(uuid.uuid4())
    client.call("GET", "/v1/assessments/<id>/keys", f"/v1/assessments/{assessment_id}/keys")


def candidate_read(client: LoadClient) -> None:
    picked = client.known.any_key(client.rng)
    if picked is None:
        return get_assessment(client)
    _, assessment_id, key = picked
    client.call(
        "GET", "/v1/assessments/<id> (candidate)", f"/v1/assessments/{assessment_id}", as_candidate=key
    )


#: (weight, operation): writes and reads about evenly, more creates than deletes so that there
#: is always something to read, issue keys for and delete.
OPERATIONS: list[tuple[int, Callable[[LoadClient], None]]] = [
    (12, create),
    (8, create_idempotently),
    (14, issue_keys),
    (7, revoke_key),
    (7, delete_assessment),
    (16, get_assessment),
    (10, list_assessments),
    (8, list_keys),
    (12, candidate_read),
]


def pools_by_client(tokens: list[str]) -> list[Known]:
    """Clients share their organisation's pool, so deletes race key issuance and revokes."""
    pools = [Known(token) for token in tokens]
    return [pools[index % len(pools)] for index in range(CLIENT_THREADS)]


def issue_ids() -> list[str]:
    return [issue["id"] for issue in json.loads(ISSUES_FILE.read_text(encoding="utf-8"))]
