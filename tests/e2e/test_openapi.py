"""`/openapi.json` describes the API as it is: a valid OpenAPI document, every route of the app
in it, and real responses of the API valid against the schemas it documents for them."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate as validate_openapi
from referencing import Registry
from referencing.jsonschema import DRAFT202012

from api.schemas import STRICT_INTEGER_NOTE
from cli import bootstrap
from tests.e2e.helpers import MISSING, body, create, issue_keys
from tests.support.system import Client, MovableClock, System

#: Rules that serve the document itself, not the API it describes.
SELF_RULES = {"/openapi.json", "/docs", "/docs/assets/<name>"}
SPEC_URI = "urn:assessments:openapi"
METHODS = {"get", "put", "post", "delete", "patch"}


@pytest.fixture(scope="module")
def spec(shared_system: System) -> dict[str, Any]:
    with Client(shared_system.api.url) as anonymous:
        response = anonymous.get("/openapi.json")
    assert response.status_code == 200, response.text
    return response.json()


def openapi_path(rule: str) -> str:
    """`/v1/assessments/<assessment_id>` → `/v1/assessments/{assessmentId}`."""
    segments = []
    for segment in rule.split("/"):
        if segment.startswith("<") and segment.endswith(">"):
            head, *rest = segment[1:-1].split(":")[-1].split("_")
            segment = "{" + head + "".join(part.title() for part in rest) + "}"
        segments.append(segment)
    return "/".join(segments)


def app_operations(shared_system: System) -> set[tuple[str, str]]:
    return {
        (openapi_path(rule.rule), method.lower())
        for rule in shared_system.api.app.url_map.iter_rules()
        if rule.endpoint != "static" and rule.rule not in SELF_RULES
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }


# --- the document ----------------------------------------------------------------------------


def test_openapi_json_is_a_valid_openapi_document_served_without_credentials(anonymous: Client):
    response = anonymous.get("/openapi.json")

    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    document = response.json()
    assert document["openapi"].startswith("3.")
    validate_openapi(document)


def test_every_route_of_the_app_is_documented(shared_system: System, spec: dict[str, Any]):
    missing = []
    for path, method in sorted(app_operations(shared_system)):
        operation = spec["paths"].get(path, {}).get(method)
        if operation is None or operation.get("x-undocumented") or not operation.get("summary"):
            missing.append(f"{method.upper()} {path}")

    assert missing == []


def test_the_document_has_no_route_the_app_does_not_serve(shared_system: System, spec: dict[str, Any]):
    documented = {(path, method) for path, item in spec["paths"].items() for method in set(item) & METHODS}

    assert documented - app_operations(shared_system) == set()


#: The candidate's calls that carry the key in the query or the body, and the client's
#: reachability check: no credential header.
WITHOUT_CREDENTIALS = {
    "GET /v1/candidate/consent",
    "POST /v1/candidate/consent",
    "POST /v1/candidate/redeem",
    "POST /v1/candidate/complete",
    "GET /v1/health",
}
#: Reads open to reviewers and to a candidate of the assessment, by key or session token.
CANDIDATE_READS = {"GET /v1/assessments/{assessmentId}", "GET /v1/issues/{issueId}"}


def test_reviewer_routes_take_a_bearer_token_and_candidates_their_key_or_session_token(spec: dict[str, Any]):
    schemes = {
        f"{method.upper()} {path}": sorted(
            name for requirement in operation["security"] for name in requirement
        )
        for path, item in spec["paths"].items()
        if path.startswith("/v1/")
        for method, operation in item.items()
        if method in METHODS
    }

    for label in CANDIDATE_READS:
        assert schemes.pop(label) == ["bearerAuth", "candidateKey", "sessionToken"], label
        assert len(spec_operation(spec, label)["security"]) == 3, "any one of the three, not all together"
    assert schemes.pop("POST /v1/candidate/device-check") == ["sessionToken"]
    for label in WITHOUT_CREDENTIALS:
        assert schemes.pop(label) == [], label
    assert schemes and set(map(tuple, schemes.values())) == {("bearerAuth",)}
    for name in ("candidateKey", "sessionToken"):
        scheme = spec["components"]["securitySchemes"][name]
        assert (scheme["type"], scheme["in"], scheme["name"]) == ("apiKey", "header", "X-API-Key")
    assert spec["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"


def spec_operation(spec: dict[str, Any], label: str) -> dict[str, Any]:
    method, path = label.split(" ", 1)
    return spec["paths"][path][method.lower()]


def test_candidate_errors_are_documented_with_their_codes(spec: dict[str, Any]):
    def responses(label: str) -> dict[str, str]:
        return {
            status: response["$ref"].rsplit("/", 1)[-1]
            for status, response in spec_operation(spec, label)["responses"].items()
            if "$ref" in response
        }

    assert responses("POST /v1/candidate/redeem")["403"] == "ConsentRequired"
    assert responses("POST /v1/candidate/redeem")["409"] == "KeyCompleted"
    assert responses("POST /v1/candidate/consent")["409"] == "ConsentConflict"
    assert responses("POST /v1/candidate/complete")["409"] == "CompleteConflict"
    codes = {
        name: response["content"]["application/json"]["schema"]["properties"]["error"]["properties"]["code"]
        for name, response in spec["components"]["responses"].items()
        if "allOf" in response["content"]["application/json"]["schema"]
    }
    assert codes["ConsentRequired"] == {"enum": ["consent_required"]}
    assert codes["CompleteConflict"] == {"enum": ["conflict", "deadline_passed"]}


def test_the_docs_page_renders_the_document(anonymous: Client):
    response = anonymous.get("/docs")

    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/html")
    assert "/openapi.json" in response.text


def test_the_document_is_built_on_first_request_and_kept(shared_system: System):
    app = bootstrap.api_app(shared_system.settings)
    try:
        assert "openapi" not in app.extensions
        with app.test_client() as http:
            first = http.get("/openapi.json")
            kept = app.extensions["openapi"]
            second = http.get("/openapi.json")
        assert first.status_code == second.status_code == 200
        assert app.extensions["openapi"] is kept
        assert first.get_json() == second.get_json() == kept
    finally:
        app.extensions["assessments"].close()


def test_a_route_without_documentation_is_still_listed_and_marked_undocumented(shared_system: System):
    app = bootstrap.api_app(shared_system.settings)
    app.add_url_rule("/v1/extra/<thing_id>", "extra", lambda thing_id: "", methods=["PUT"])
    try:
        with app.test_client() as http:
            document = http.get("/openapi.json").get_json()
    finally:
        app.extensions["assessments"].close()

    operation = document["paths"]["/v1/extra/{thingId}"]["put"]
    assert operation["x-undocumented"] is True
    assert "x-undocumented" not in document["paths"]["/v1/assessments"]["post"]


# --- responses against the document ----------------------------------------------------------


def _pointer(*parts: str) -> str:
    return "/".join(part.replace("~", "~0").replace("/", "~1") for part in parts)


def _resolve(spec: dict[str, Any], ref: str) -> tuple[list[str], dict[str, Any]]:
    assert ref.startswith("#/"), ref
    parts = [part.replace("~1", "/").replace("~0", "~") for part in ref[2:].split("/")]
    found: Any = spec
    for part in parts:
        found = found[part]
    return parts, found


def documented_path(spec: dict[str, Any], path: str) -> str:
    segments = path.split("/")
    for template in spec["paths"]:
        parts = template.split("/")
        if len(parts) == len(segments) and all(
            part == segment or (part.startswith("{") and part.endswith("}") and segment)
            for part, segment in zip(parts, segments, strict=True)
        ):
            return template
    raise AssertionError(f"{path} matches no documented path")


def documented_response(spec: dict[str, Any], response: requests.Response) -> tuple[list[str], dict] | None:
    """Where in the document the response for this path, method and status is, and what it
    says; None when that status is not documented."""
    path = documented_path(spec, requests.utils.urlparse(response.request.url).path)
    method = response.request.method.lower()
    status = str(response.status_code)
    documented = spec["paths"][path][method]["responses"].get(status)
    if documented is None:
        return None
    if "$ref" in documented:
        return _resolve(spec, documented["$ref"])
    return ["paths", path, method, "responses", status], documented


def schema_violations(spec: dict[str, Any], where: list[str], media_type: str, body: Any) -> list[str]:
    registry = Registry().with_resource(SPEC_URI, DRAFT202012.create_resource(spec))
    validator = Draft202012Validator(
        {"$ref": f"{SPEC_URI}#/{_pointer(*where, 'content', media_type, 'schema')}"},
        registry=registry,
        format_checker=Draft202012Validator.FORMAT_CHECKER,
    )
    return [f"{list(error.absolute_path)}: {error.message}" for error in validator.iter_errors(body)]


def violations(spec: dict[str, Any], response: requests.Response) -> list[str]:
    """What in `response` the document does not allow for its path, method and status: an
    undocumented status, a missing required header, another media type, a body off schema."""
    found = documented_response(spec, response)
    if found is None:
        return [
            f"status {response.status_code} is not documented for {response.request.method} {response.url}"
        ]
    where, documented = found
    problems = []
    for name, header in documented.get("headers", {}).items():
        if "$ref" in header:
            header = _resolve(spec, header["$ref"])[1]
        if header.get("required") and name not in response.headers:
            problems.append(f"header {name} is missing")
    media_type = response.headers.get("Content-Type", "").split(";")[0].strip()
    if media_type not in documented.get("content", {}):
        return [*problems, f"media type {media_type!r} is not documented"]
    body = response.json() if media_type == "application/json" else response.text
    return problems + schema_violations(spec, where, media_type, body)


@dataclass
class Callers:
    client: Client
    anonymous: Client
    candidate: Callable[[str], Client]
    issue: dict[str, Any]
    clock: MovableClock


CASES: list[tuple[str, int, Callable[[Callers], requests.Response]]] = []


def case(name: str, status: int):
    def add(send: Callable[[Callers], requests.Response]):
        CASES.append((name, status, send))
        return send

    return add


@case("create", 201)
def _(c: Callers):
    return c.client.post(
        "/v1/assessments",
        json=body(repoUrl="https://github.com/acme/api", timeLimitMinutes=90, rubricId=str(uuid.uuid4())),
    )


@case("create from an OSS issue", 201)
def _(c: Callers):
    return c.client.post("/v1/assessments", json=body(issueId=c.issue["id"], taskBrief=MISSING))


@case("create replayed by Idempotency-Key", 201)
def _(c: Callers):
    sent = body()
    headers = {"Idempotency-Key": uuid.uuid4().hex}
    assert c.client.post("/v1/assessments", json=sent, headers=headers).status_code == 201
    return c.client.post("/v1/assessments", json=sent, headers=headers)


@case("list", 200)
def _(c: Callers):
    create(c.client, issueId=c.issue["id"])
    create(c.client, repoUrl=None, timeLimitMinutes=None)
    return c.client.get("/v1/assessments")


@case("list, a page with more after it", 200)
def _(c: Callers):
    create(c.client)
    create(c.client)
    return c.client.get("/v1/assessments", params={"limit": 1})


@case("list, the last page", 200)
def _(c: Callers):
    create(c.client)
    create(c.client)
    cursor = c.client.get("/v1/assessments", params={"limit": 1}).json()["nextCursor"]
    return c.client.get("/v1/assessments", params={"limit": 5, "after": cursor})


@case("get as reviewer", 200)
def _(c: Callers):
    return c.client.get(f"/v1/assessments/{create(c.client, issueId=c.issue['id'])['id']}")


@case("get as candidate", 200)
def _(c: Callers):
    assessment = create(c.client)
    key = issue_keys(c.client, assessment["id"])[0]["key"]
    return c.candidate(key).get(f"/v1/assessments/{assessment['id']}")


@case("issue keys", 201)
def _(c: Callers):
    return c.client.post(
        f"/v1/assessments/{create(c.client)['id']}/keys",
        json={
            "count": 2,
            "candidateEmails": ["a@example.com", "b@example.com"],
            "candidateNames": ["A", "B"],
        },
    )


@case("list keys", 200)
def _(c: Callers):
    assessment = create(c.client)
    issue_keys(c.client, assessment["id"], count=2)
    return c.client.get(f"/v1/assessments/{assessment['id']}/keys")


@case("revoke a key", 200)
def _(c: Callers):
    assessment = create(c.client)
    key = issue_keys(c.client, assessment["id"])[0]
    return c.client.delete(f"/v1/assessments/{assessment['id']}/keys/{key['id']}")


@case("delete", 200)
def _(c: Callers):
    return c.client.delete(f"/v1/assessments/{create(c.client)['id']}")


@case("history", 200)
def _(c: Callers):
    assessment = create(c.client)
    issue_keys(c.client, assessment["id"])
    c.client.delete(f"/v1/assessments/{assessment['id']}")
    return c.client.get(f"/v1/assessments/{assessment['id']}/events")


@case("history, a page with more after it", 200)
def _(c: Callers):
    assessment = create(c.client)
    issue_keys(c.client, assessment["id"])
    return c.client.get(f"/v1/assessments/{assessment['id']}/events", params={"limit": 1})


@case("list issues", 200)
def _(c: Callers):
    return c.client.get("/v1/issues")


@case("get an issue", 200)
def _(c: Callers):
    return c.client.get(f"/v1/issues/{c.issue['id']}")


@case("liveness", 200)
def _(c: Callers):
    return c.anonymous.get("/healthz")


# --- the candidate's side, as the client plays it, and the reviewers' sessions

SIGNING_KEY = base64.b64encode(bytes(range(32))).decode()
FINGERPRINT = {"os": "linux", "arch": "x86_64", "cpus": 8}


def invited(c: Callers, **overrides: Any) -> tuple[dict[str, Any], str]:
    """An assessment and one key string of it."""
    assessment = create(c.client, **overrides)
    return assessment, issue_keys(c.client, assessment["id"])[0]["key"]


def consented(c: Callers, **overrides: Any) -> tuple[dict[str, Any], str]:
    assessment, key = invited(c, **overrides)
    shown = c.anonymous.get("/v1/candidate/consent", params={"key": key})
    assert shown.status_code == 200, shown.text
    sent = {"key": key, "disclosureHash": shown.json()["disclosureHash"]}
    assert c.anonymous.post("/v1/candidate/consent", json=sent).status_code == 200
    return assessment, key


def redeemed(c: Callers, **overrides: Any) -> tuple[dict[str, Any], str, dict[str, Any]]:
    assessment, key = consented(c, **overrides)
    response = c.anonymous.post("/v1/candidate/redeem", json={"key": key})
    assert response.status_code == 200, response.text
    return assessment, key, response.json()


def completed(c: Callers, **overrides: Any) -> tuple[dict[str, Any], str, dict[str, Any]]:
    assessment, key, session = redeemed(c, **overrides)
    done = c.anonymous.post("/v1/candidate/complete", json={"sessionId": session["sessionId"], "key": key})
    assert done.status_code == 200, done.text
    return assessment, key, session


@case("candidate: the disclosure", 200)
def _(c: Callers):
    return c.anonymous.get("/v1/candidate/consent", params={"key": invited(c)[1]})


@case("candidate: the disclosure, consented", 200)
def _(c: Callers):
    return c.anonymous.get("/v1/candidate/consent", params={"key": consented(c)[1]})


@case("candidate: consent", 200)
def _(c: Callers):
    key = invited(c)[1]
    shown = c.anonymous.get("/v1/candidate/consent", params={"key": key}).json()
    sent = {"key": key, "disclosureHash": shown["disclosureHash"]}
    return c.anonymous.post("/v1/candidate/consent", json=sent)


@case("candidate: consent without a hash, repeated", 200)
def _(c: Callers):
    return c.anonymous.post("/v1/candidate/consent", json={"key": consented(c)[1], "disclosureHash": None})


@case("candidate: redeem", 200)
def _(c: Callers):
    key = consented(c, repoUrl="https://github.com/acme/api", timeLimitMinutes=60)[1]
    return c.anonymous.post(
        "/v1/candidate/redeem", json={"key": key, "candidateName": "Ada", "signingPubKey": SIGNING_KEY}
    )


@case("candidate: redeem a key of an OSS issue, no time limit", 200)
def _(c: Callers):
    key = consented(c, issueId=c.issue["id"], taskBrief=MISSING, repoUrl=None, timeLimitMinutes=None)[1]
    return c.anonymous.post("/v1/candidate/redeem", json={"key": key, "candidateName": None})


@case("candidate: redeem an active key again", 200)
def _(c: Callers):
    return c.anonymous.post("/v1/candidate/redeem", json={"key": redeemed(c)[1]})


@case("candidate: device check", 200)
def _(c: Callers):
    token = redeemed(c)[2]["sessionToken"]
    return c.candidate(token).post(
        "/v1/candidate/device-check", json={"checkpoint": "start", "fingerprint": FINGERPRINT}
    )


@case("candidate: complete", 200)
def _(c: Callers):
    _, key, session = redeemed(c)
    return c.anonymous.post("/v1/candidate/complete", json={"sessionId": session["sessionId"], "key": key})


@case("candidate: complete, repeated", 200)
def _(c: Callers):
    _, key, session = completed(c)
    return c.anonymous.post("/v1/candidate/complete", json={"sessionId": session["sessionId"], "key": key})


@case("candidate: get the assessment with a session token", 200)
def _(c: Callers):
    assessment, _, session = redeemed(c)
    return c.candidate(session["sessionToken"]).get(f"/v1/assessments/{assessment['id']}")


@case("candidate: get the assessment's issue with the key", 200)
def _(c: Callers):
    key = invited(c, issueId=c.issue["id"])[1]
    return c.candidate(key).get(f"/v1/issues/{c.issue['id']}")


@case("candidate: get the assessment's issue with a session token", 200)
def _(c: Callers):
    token = redeemed(c, issueId=c.issue["id"])[2]["sessionToken"]
    return c.candidate(token).get(f"/v1/issues/{c.issue['id']}")


@case("candidate: reachability", 200)
def _(c: Callers):
    return c.anonymous.get("/v1/health")


@case("sessions of an assessment", 200)
def _(c: Callers):
    assessment, key, session = redeemed(c, issueId=c.issue["id"])
    c.candidate(session["sessionToken"]).post(
        "/v1/candidate/device-check", json={"checkpoint": "start", "fingerprint": FINGERPRINT}
    )
    (other,) = issue_keys(c.client, assessment["id"])
    c.anonymous.post("/v1/candidate/consent", json={"key": other["key"]})
    c.anonymous.post("/v1/candidate/redeem", json={"key": other["key"], "signingPubKey": SIGNING_KEY})
    c.anonymous.post("/v1/candidate/complete", json={"sessionId": session["sessionId"], "key": key})
    return c.client.get(f"/v1/assessments/{assessment['id']}/sessions")


@case("sessions, a page with more after it", 200)
def _(c: Callers):
    assessment = create(c.client)
    for issued in issue_keys(c.client, assessment["id"], count=2):
        c.anonymous.post("/v1/candidate/consent", json={"key": issued["key"]})
        assert c.anonymous.post("/v1/candidate/redeem", json={"key": issued["key"]}).status_code == 200
    return c.client.get(f"/v1/assessments/{assessment['id']}/sessions", params={"limit": 1})


@case("sessions, none yet, paged", 200)
def _(c: Callers):
    return c.client.get(f"/v1/assessments/{invited(c)[0]['id']}/sessions", params={"limit": 5})


@case("one session", 200)
def _(c: Callers):
    return c.client.get(f"/v1/sessions/{completed(c)[2]['sessionId']}")


@case("one session, expired", 200)
def _(c: Callers):
    session = redeemed(c, timeLimitMinutes=30)[2]
    c.clock.advance(minutes=30, seconds=1)
    return c.client.get(f"/v1/sessions/{session['sessionId']}")


@case("redeem without consent", 403)
def _(c: Callers):
    return c.anonymous.post("/v1/candidate/redeem", json={"key": invited(c)[1]})


@case("candidate: the disclosure of a completed key", 409)
def _(c: Callers):
    return c.anonymous.get("/v1/candidate/consent", params={"key": completed(c)[1]})


@case("consent to a text that was not shown", 409)
def _(c: Callers):
    return c.anonymous.post("/v1/candidate/consent", json={"key": invited(c)[1], "disclosureHash": "0" * 64})


@case("redeem a completed key", 409)
def _(c: Callers):
    return c.anonymous.post("/v1/candidate/redeem", json={"key": completed(c)[1]})


@case("complete before redeeming", 409)
def _(c: Callers):
    sent = {"sessionId": str(uuid.uuid4()), "key": invited(c)[1]}
    return c.anonymous.post("/v1/candidate/complete", json=sent)


@case("complete after the deadline", 409)
def _(c: Callers):
    _, key, session = redeemed(c, timeLimitMinutes=30)
    c.clock.advance(minutes=30, seconds=1)
    return c.anonymous.post("/v1/candidate/complete", json={"sessionId": session["sessionId"], "key": key})


@case("redeem with a malformed signing key", 400)
def _(c: Callers):
    key = consented(c)[1]
    return c.anonymous.post("/v1/candidate/redeem", json={"key": key, "signingPubKey": "bm90IDMyIGJ5dGVz"})


@case("sessions with a limit out of range", 400)
def _(c: Callers):
    return c.client.get(f"/v1/assessments/{create(c.client)['id']}/sessions", params={"limit": 0})


@case("redeem an unknown key", 401)
def _(c: Callers):
    return c.anonymous.post("/v1/candidate/redeem", json={"key": "PST-ABCD-EFGH"})


@case("device check without a session token", 401)
def _(c: Callers):
    return c.anonymous.post("/v1/candidate/device-check", json={"checkpoint": "start", "fingerprint": {}})


@case("get an issue with a key of an assessment without it", 401)
def _(c: Callers):
    return c.candidate(invited(c)[1]).get(f"/v1/issues/{c.issue['id']}")


@case("sessions without a token", 401)
def _(c: Callers):
    return c.anonymous.get(f"/v1/assessments/{create(c.client)['id']}/sessions")


@case("a missing session", 404)
def _(c: Callers):
    return c.client.get(f"/v1/sessions/{uuid.uuid4()}")


@case("sessions of a missing assessment", 404)
def _(c: Callers):
    return c.client.get(f"/v1/assessments/{uuid.uuid4()}/sessions")


@case("redeem with a form body", 415)
def _(c: Callers):
    return c.anonymous.post("/v1/candidate/redeem", data={"key": "PST-ABCD-EFGH"})


@case("create with an unknown field", 400)
def _(c: Callers):
    return c.client.post("/v1/assessments", json=body(timeLimit=30))


@case("create with a body that is not JSON", 400)
def _(c: Callers):
    return c.client.post("/v1/assessments", data="{not json", headers={"Content-Type": "application/json"})


@case("issue keys with too few emails", 400)
def _(c: Callers):
    return c.client.post(
        f"/v1/assessments/{create(c.client)['id']}/keys",
        json={"count": 2, "candidateEmails": ["a@example.com"]},
    )


@case("list with a limit out of range", 400)
def _(c: Callers):
    return c.client.get("/v1/assessments", params={"limit": 0})


@case("create without a token", 401)
def _(c: Callers):
    return c.anonymous.post("/v1/assessments", json=body())


@case("get with a key of another assessment", 401)
def _(c: Callers):
    key = issue_keys(c.client, create(c.client)["id"])[0]["key"]
    return c.candidate(key).get(f"/v1/assessments/{create(c.client)['id']}")


@case("get a missing assessment", 404)
def _(c: Callers):
    return c.client.get(f"/v1/assessments/{uuid.uuid4()}")


@case("delete a missing assessment", 404)
def _(c: Callers):
    return c.client.delete(f"/v1/assessments/{uuid.uuid4()}")


@case("revoke a missing key", 404)
def _(c: Callers):
    return c.client.delete(f"/v1/assessments/{create(c.client)['id']}/keys/{uuid.uuid4()}")


@case("issue keys for a missing assessment", 404)
def _(c: Callers):
    return c.client.post(f"/v1/assessments/{uuid.uuid4()}/keys", json={"count": 1})


@case("history of a missing assessment", 404)
def _(c: Callers):
    return c.client.get(f"/v1/assessments/{uuid.uuid4()}/events")


@case("get a missing issue", 404)
def _(c: Callers):
    return c.client.get(f"/v1/issues/no-such-issue-{uuid.uuid4().hex[:8]}")


@case("Idempotency-Key reused with another body", 409)
def _(c: Callers):
    headers = {"Idempotency-Key": uuid.uuid4().hex}
    assert c.client.post("/v1/assessments", json=body(), headers=headers).status_code == 201
    return c.client.post("/v1/assessments", json=body(), headers=headers)


@case("create with a form body", 415)
def _(c: Callers):
    return c.client.post("/v1/assessments", data={"title": "x"})


@case("issue keys with a text body", 415)
def _(c: Callers):
    return c.client.post(
        f"/v1/assessments/{create(c.client)['id']}/keys",
        data="count=1",
        headers={"Content-Type": "text/plain"},
    )


# --- webhooks (no dispatcher runs on the shared system: nothing is ever sent) ---------------

RECEIVER = "http://127.0.0.1:9/hook"


def webhook(c: Callers) -> dict[str, Any]:
    response = c.client.post("/v1/webhooks", json={"url": RECEIVER, "events": ["assessment.*"]})
    assert response.status_code == 201, response.text
    return response.json()["webhook"]


@case("register a webhook", 201)
def _(c: Callers):
    return c.client.post(
        "/v1/webhooks", json={"url": RECEIVER, "events": ["candidate_key.*"], "description": "ATS"}
    )


@case("list webhooks", 200)
def _(c: Callers):
    webhook(c)
    return c.client.get("/v1/webhooks")


@case("get a webhook", 200)
def _(c: Callers):
    return c.client.get(f"/v1/webhooks/{webhook(c)['id']}")


@case("rotate a webhook's secret", 200)
def _(c: Callers):
    return c.client.post(f"/v1/webhooks/{webhook(c)['id']}/rotate-secret")


@case("a webhook's deliveries", 200)
def _(c: Callers):
    return c.client.get(f"/v1/webhooks/{webhook(c)['id']}/deliveries")


@case("remove a webhook", 200)
def _(c: Callers):
    return c.client.delete(f"/v1/webhooks/{webhook(c)['id']}")


@case("register a webhook for an unknown event type", 400)
def _(c: Callers):
    return c.client.post("/v1/webhooks", json={"url": RECEIVER, "events": ["assessment.renamed"]})


@case("retry a missing delivery", 404)
def _(c: Callers):
    return c.client.post(f"/v1/webhooks/{webhook(c)['id']}/deliveries/{uuid.uuid4()}/retry")


@case("a missing webhook", 404)
def _(c: Callers):
    return c.client.get(f"/v1/webhooks/{uuid.uuid4()}")


@pytest.fixture
def callers(client: Client, anonymous: Client, candidate, issue: dict[str, Any], clock) -> Iterator[Callers]:
    yield Callers(client, anonymous, candidate, issue, clock)


@pytest.mark.parametrize(("name", "status", "send"), CASES, ids=[name for name, _, _ in CASES])
def test_responses_match_the_documented_schema(spec, callers: Callers, name: str, status: int, send):
    response = send(callers)

    assert response.status_code == status, response.text
    assert violations(spec, response) == []


def test_the_check_rejects_what_the_document_does_not_allow(spec: dict[str, Any], client: Client):
    response = client.post("/v1/assessments", json=body())
    where, _ = documented_response(spec, response)
    assessment = response.json()["assessment"]
    assert schema_violations(spec, where, "application/json", {"assessment": assessment}) == []

    for wrong in (
        {**assessment, "timeLimitMinutes": "90"},
        {**assessment, "id": "not-a-uuid"},
        {**assessment, "createdAt": "2026-04-01T09:00:00Z"},
        {key: value for key, value in assessment.items() if key != "repoUrl"},
        {**assessment, "timeLimit": 90},
    ):
        assert schema_violations(spec, where, "application/json", {"assessment": wrong}) != [], wrong


# --- requests against the document: it accepts exactly what the API accepts -----------------


def request_violations(spec: dict[str, Any], where: str, value: Any) -> list[str]:
    """What the document says is wrong with `value` at `where` (a JSON pointer into it)."""
    registry = Registry().with_resource(SPEC_URI, DRAFT202012.create_resource(spec))
    validator = Draft202012Validator({"$ref": f"{SPEC_URI}#{where}"}, registry=registry)
    return [error.message for error in validator.iter_errors(value)]


def parameter_pointer(spec: dict[str, Any], path: str, method: str, name: str) -> str:
    parameters = spec["paths"][path][method]["parameters"]
    index = next(i for i, parameter in enumerate(parameters) if parameter["name"] == name)
    return "/" + _pointer("paths", path, method, "parameters", str(index), "schema")


ISSUE = object()  #: Stands for the id of an issue in the catalogue.

CREATE_BODIES = [
    ("minimal", {}, True),
    ("taskBrief missing", {"taskBrief": MISSING}, False),
    ("taskBrief empty", {"taskBrief": ""}, False),
    ("taskBrief blank", {"taskBrief": "  \t"}, False),
    ("taskBrief zero-width", {"taskBrief": "\u200b\u2060"}, False),
    ("taskBrief null", {"taskBrief": None}, False),
    ("taskBrief null, issueId null", {"taskBrief": None, "issueId": None}, False),
    ("taskBrief empty with issueId", {"taskBrief": "", "issueId": ISSUE}, True),
    ("taskBrief missing with issueId", {"taskBrief": MISSING, "issueId": ISSUE}, True),
    ("taskBrief with a NUL", {"taskBrief": "a\x00b"}, False),
    ("title zero-width", {"title": "\u200b"}, False),
    ("title soft hyphen and BOM", {"title": "\u00ad\ufeff"}, False),
    ("title with a NUL", {"title": "a\x00"}, False),
    ("title of 255 emoji", {"title": "\U0001f642" * 255}, True),
    ("role of 256", {"role": "r" * 256}, False),
    ("issueId blank", {"issueId": " "}, False),
    ("timeLimitMinutes 1.5", {"timeLimitMinutes": 1.5}, False),
    ("timeLimitMinutes true", {"timeLimitMinutes": True}, False),
    ("timeLimitMinutes 10081", {"timeLimitMinutes": 10081}, False),
    ("expiresInDays null", {"expiresInDays": None}, False),
    ("repoUrl http localhost", {"repoUrl": "http://localhost:8080/repo"}, True),
    ("repoUrl upper case", {"repoUrl": "HTTPS://GITHUB.COM/A/B"}, True),
    ("repoUrl ftp", {"repoUrl": "ftp://github.com/a"}, False),
    ("repoUrl without a top-level domain", {"repoUrl": "https://intranet/a"}, False),
    ("repoUrl with credentials", {"repoUrl": "https://u:p@github.com/a"}, False),
    ("repoUrl with a space", {"repoUrl": "https://github.com/a b"}, False),
    ("repoUrl empty", {"repoUrl": ""}, False),
    ("rubricId", {"rubricId": str(uuid.uuid4())}, True),
    ("unknown field", {"timeLimit": 5}, False),
]


@pytest.mark.parametrize(
    ("overrides", "accepted"), [c[1:] for c in CREATE_BODIES], ids=[c[0] for c in CREATE_BODIES]
)
def test_the_document_allows_a_create_body_exactly_when_the_api_accepts_it(
    spec, client, issue, overrides, accepted
):
    sent = body(**{name: issue["id"] if value is ISSUE else value for name, value in overrides.items()})

    documented = request_violations(spec, "/components/schemas/CreateAssessment", sent)
    response = client.post("/v1/assessments", json=sent)

    assert (documented == [], response.status_code == 201) == (accepted, accepted), (
        documented,
        response.text,
    )


EMAILS = ["a@example.com", "b@example.com"]
KEYS_BODIES = [
    ("count alone", {"count": 2}, True),
    ("count 0", {"count": 0}, False),
    ("count 51", {"count": 51}, False),
    ("emails of count", {"count": 2, "candidateEmails": EMAILS}, True),
    ("too few emails", {"count": 2, "candidateEmails": EMAILS[:1]}, False),
    ("too many emails", {"count": 1, "candidateEmails": EMAILS}, False),
    ("names paired", {"count": 2, "candidateEmails": EMAILS, "candidateNames": ["A", "B"]}, True),
    ("names without emails", {"count": 2, "candidateNames": ["A", "B"]}, False),
    ("names with null emails", {"count": 2, "candidateEmails": None, "candidateNames": ["A", "B"]}, False),
    ("null names", {"count": 2, "candidateEmails": EMAILS, "candidateNames": None}, True),
    ("too few names", {"count": 2, "candidateEmails": EMAILS, "candidateNames": ["A"]}, False),
    ("a blank name", {"count": 2, "candidateEmails": EMAILS, "candidateNames": ["A", "\u200b"]}, False),
    ("an email without a domain", {"count": 1, "candidateEmails": ["a@b"]}, False),
    ("orgName invisible", {"count": 1, "orgName": "\u2060\u00a0"}, False),
    ("orgName", {"count": 1, "orgName": "Acme"}, True),
]


@pytest.mark.parametrize(("sent", "accepted"), [c[1:] for c in KEYS_BODIES], ids=[c[0] for c in KEYS_BODIES])
def test_the_document_allows_a_keys_body_exactly_when_the_api_accepts_it(spec, client, sent, accepted):
    assessment = create(client)

    documented = request_violations(spec, "/components/schemas/IssueKeys", sent)
    response = client.post(f"/v1/assessments/{assessment['id']}/keys", json=sent)

    assert (documented == [], response.status_code == 201) == (accepted, accepted), (
        documented,
        response.text,
    )


INTEGERS_AS_FLOATS = [
    ("CreateAssessment", "timeLimitMinutes", {"timeLimitMinutes": 60.0}),
    ("CreateAssessment", "expiresInDays", {"expiresInDays": 14.0}),
    ("IssueKeys", "count", {"count": 2.0}),
]


@pytest.mark.parametrize(
    ("schema", "field", "sent"),
    INTEGERS_AS_FLOATS,
    ids=[c[1] for c in INTEGERS_AS_FLOATS],
)
def test_an_integer_sent_as_a_float_is_refused_as_the_document_says_in_words(
    spec, client, schema, field, sent
):
    """JSON Schema counts 60.0 as an integer and has no way to say otherwise: the one rule the
    document can only state in the field's description. A client generated from the document
    types the field as an integer and sends `60`."""
    assert STRICT_INTEGER_NOTE in spec["components"]["schemas"][schema]["properties"][field]["description"]
    if schema == "CreateAssessment":
        response = client.post("/v1/assessments", json=body(**sent))
    else:
        response = client.post(f"/v1/assessments/{create(client)['id']}/keys", json=sent)
    assert response.status_code == 400
    assert list(response.json()["error"]["details"]) == [field]


def test_an_email_the_document_leaves_out_may_still_be_accepted(spec, client):
    """The document's email pattern is the portable (ASCII) subset of what the service takes."""
    sent = {"count": 1, "candidateEmails": ["j\u00fcrgen@example.com"]}

    assert request_violations(spec, "/components/schemas/IssueKeys", sent) != []
    assert client.post(f"/v1/assessments/{create(client)['id']}/keys", json=sent).status_code == 201


QUERIES = [
    ("/v1/assessments", "after", "0", False),
    ("/v1/assessments", "after", "A" * 32, True),
    ("/v1/assessments", "after", "A" * 31 + "=", False),
    ("/v1/assessments/{assessmentId}/events", "after", 0, True),
    ("/v1/assessments/{assessmentId}/events", "after", -1, False),
    ("/v1/assessments/{assessmentId}/events", "limit", 1000, True),
    ("/v1/assessments/{assessmentId}/events", "limit", 1001, False),
]


@pytest.mark.parametrize(
    ("path", "name", "value", "accepted"), QUERIES, ids=[f"{q[0]}?{q[1]}={q[2]}" for q in QUERIES]
)
def test_the_document_allows_a_query_parameter_exactly_when_the_api_accepts_it(
    spec, client, path, name, value, accepted
):
    url = path.format(assessmentId=create(client)["id"])

    documented = request_violations(spec, parameter_pointer(spec, path, "get", name), value)
    response = client.get(url, params={name: value})

    assert (documented == [], response.status_code == 200) == (accepted, accepted), (
        documented,
        response.text,
    )


@pytest.mark.parametrize(
    ("key", "accepted"),
    [
        ("a-uuid-or-anything-printable", True),
        ("with inner spaces", True),
        ("a\x01b", False),
        ("x" * 256, False),
    ],
)
def test_the_document_allows_an_idempotency_key_exactly_when_the_api_accepts_it(spec, client, key, accepted):
    documented = request_violations(
        spec, parameter_pointer(spec, "/v1/assessments", "post", "Idempotency-Key"), key
    )
    response = client.post("/v1/assessments", json=body(), headers={"Idempotency-Key": key})

    assert (documented == [], response.status_code == 201) == (accepted, accepted), (
        documented,
        response.text,
    )


REDEEM_BODIES = [
    ("key alone", {}, True),
    ("nulls", {"candidateName": None, "signingPubKey": None}, True),
    ("a name", {"candidateName": "Ada"}, True),
    ("a blank name", {"candidateName": "\u200b "}, False),
    ("a name of 256", {"candidateName": "n" * 256}, False),
    ("a signing key", {"signingPubKey": SIGNING_KEY}, True),
    ("a signing key without its padding", {"signingPubKey": SIGNING_KEY.rstrip("=")}, False),
    ("a signing key of 31 bytes", {"signingPubKey": base64.b64encode(bytes(31)).decode()}, False),
    ("a signing key of 33 bytes", {"signingPubKey": base64.b64encode(bytes(33)).decode()}, False),
    ("a signing key in base64url", {"signingPubKey": base64.urlsafe_b64encode(b"\xfb" * 32).decode()}, False),
    ("a signing key with a space", {"signingPubKey": SIGNING_KEY[:10] + " " + SIGNING_KEY[10:]}, False),
    ("an unknown field", {"publicKey": SIGNING_KEY}, False),
]


@pytest.mark.parametrize(
    ("fields", "accepted"), [c[1:] for c in REDEEM_BODIES], ids=[c[0] for c in REDEEM_BODIES]
)
def test_the_document_allows_a_redeem_body_exactly_when_the_api_accepts_it(
    spec, client, anonymous, fields, accepted
):
    assessment = create(client)
    key = issue_keys(client, assessment["id"])[0]["key"]
    assert anonymous.post("/v1/candidate/consent", json={"key": key}).status_code == 200
    sent = {"key": key, **fields}

    documented = request_violations(spec, "/components/schemas/Redeem", sent)
    response = anonymous.post("/v1/candidate/redeem", json=sent)

    assert (documented == [], response.status_code == 200) == (accepted, accepted), (
        documented,
        response.text,
    )


def nested(levels: int) -> Any:
    """`levels` arrays, one inside the other, around a string."""
    value: Any = "x"
    for _ in range(levels):
        value = [value]
    return value


DEVICE_CHECK_BODIES = [
    ("flat", {"checkpoint": "start", "fingerprint": FINGERPRINT}, True),
    ("empty fingerprint", {"checkpoint": "start", "fingerprint": {}}, True),
    ("15 levels inside the fingerprint", {"checkpoint": "start", "fingerprint": {"deep": nested(15)}}, True),
    ("a NUL in a property name", {"checkpoint": "start", "fingerprint": {"o\x00s": "linux"}}, False),
    ("a NUL in a nested string", {"checkpoint": "start", "fingerprint": {"os": ["linux\x00"]}}, False),
    ("a blank checkpoint", {"checkpoint": "\u2060", "fingerprint": {}}, False),
    ("a fingerprint that is not an object", {"checkpoint": "start", "fingerprint": ["linux"]}, False),
    ("no fingerprint", {"checkpoint": "start"}, False),
]


@pytest.mark.parametrize(
    ("sent", "accepted"), [c[1:] for c in DEVICE_CHECK_BODIES], ids=[c[0] for c in DEVICE_CHECK_BODIES]
)
def test_the_document_allows_a_device_check_body_exactly_when_the_api_accepts_it(
    spec, client, anonymous, candidate, sent, accepted
):
    token = _session_token(client, anonymous)

    documented = request_violations(spec, "/components/schemas/DeviceCheck", sent)
    response = candidate(token).post("/v1/candidate/device-check", json=sent)

    assert (documented == [], response.status_code == 200) == (accepted, accepted), (
        documented,
        response.text,
    )


def test_a_fingerprint_nested_deeper_than_a_body_may_is_refused_as_the_document_says_in_words(
    spec, client, anonymous, candidate
):
    """JSON Schema cannot count levels of a recursive value: the fingerprint's description
    states the bound every body has."""
    token = _session_token(client, anonymous)
    sent = {"checkpoint": "start", "fingerprint": {"deep": nested(16)}}

    assert (
        "at most 15 levels"
        in spec["components"]["schemas"]["DeviceCheck"]["properties"]["fingerprint"]["description"]
    )
    assert request_violations(spec, "/components/schemas/DeviceCheck", sent) == []
    response = candidate(token).post("/v1/candidate/device-check", json=sent)
    assert response.status_code == 400 and list(response.json()["error"]["details"]) == ["fingerprint"]


def _session_token(client: Client, anonymous: Client) -> str:
    key = issue_keys(client, create(client)["id"])[0]["key"]
    assert anonymous.post("/v1/candidate/consent", json={"key": key}).status_code == 200
    redeemed = anonymous.post("/v1/candidate/redeem", json={"key": key})
    assert redeemed.status_code == 200, redeemed.text
    return redeemed.json()["sessionToken"]
