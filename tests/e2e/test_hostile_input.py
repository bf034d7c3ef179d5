"""Hostile text never gets a 500: NUL characters, lone surrogates, absurd nesting and invisible
"blank" text are refused in the error shape, naming the field, before anything reaches the
database (whose text columns refuse NUL). Through the werkzeug server of the shared system;
`test_gunicorn_limits.py` covers what gunicorn itself answers."""

from __future__ import annotations

import json
import uuid

import pytest

from tests.e2e.helpers import assert_error, body, create, listed

NUL = "\\u0000"  # as it appears in JSON text
SURROGATE = "\\ud800"  # a lone high surrogate, valid JSON text but not Unicode text
JSON = {"Content-Type": "application/json"}


def raw_json(fields: dict[str, str]) -> str:
    """A JSON object whose values are given as JSON text (so escapes reach the server as sent)."""
    return "{" + ",".join(f"{json.dumps(name)}:{value}" for name, value in fields.items()) + "}"


def create_text(**fields: str) -> str:
    """A create body with each given field's value as JSON text."""
    return raw_json({**{name: json.dumps(value) for name, value in body().items()}, **fields})


CREATE_FIELDS = ["title", "role", "taskBrief", "issueId", "repoUrl", "rubricId"]


@pytest.mark.parametrize("escape", [NUL, SURROGATE], ids=["nul", "lone-surrogate"])
@pytest.mark.parametrize("field", CREATE_FIELDS)
def test_a_create_field_with_a_nul_or_a_lone_surrogate_is_refused_naming_it(client, field, escape):
    sent = create_text(**{field: f'"a{escape}b"'})

    response = client.post("/v1/assessments", data=sent, headers=JSON)

    assert_error(response, 400, "validation_error", field)
    assert listed(client) == []


@pytest.mark.parametrize("escape", [NUL, SURROGATE], ids=["nul", "lone-surrogate"])
@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("orgName", '"Acme{}"'),
        ("candidateEmails", '["a{}@example.com"]'),
        ("candidateNames", '["Ada{}"]'),
    ],
)
def test_a_keys_field_with_a_nul_or_a_lone_surrogate_is_refused_naming_it(client, field, value, escape):
    assessment = create(client)
    fields = {"count": "1", "candidateEmails": '["a@example.com"]', field: value.format(escape)}

    response = client.post(f"/v1/assessments/{assessment['id']}/keys", data=raw_json(fields), headers=JSON)

    assert_error(response, 400, "validation_error", field)
    assert client.get(f"/v1/assessments/{assessment['id']}/keys").json()["keys"] == []


def test_an_entry_of_a_list_is_named_by_its_position(client):
    assessment = create(client)
    fields = {"count": "2", "candidateEmails": '["a@example.com","b@example.com"]'}
    fields["candidateNames"] = f'["Ada","B{NUL}"]'

    response = client.post(f"/v1/assessments/{assessment['id']}/keys", data=raw_json(fields), headers=JSON)

    error = assert_error(response, 400, "validation_error", "candidateNames")
    assert error["details"]["candidateNames"][0].startswith("Entry 1:")


@pytest.mark.parametrize("escape", [NUL, SURROGATE], ids=["nul", "lone-surrogate"])
def test_a_field_name_with_a_nul_or_a_lone_surrogate_is_refused(client, escape):
    sent = create_text()[:-1] + f',"x{escape}":1}}'

    response = client.post("/v1/assessments", data=sent, headers=JSON)

    error = assert_error(response, 400, "validation_error")
    assert error["details"] and all(name.startswith("x") for name in error["details"]), error


@pytest.mark.parametrize(
    "sent",
    [
        "[" * 100_000 + "]" * 100_000,
        '{"title":' + "[" * 100_000 + "]" * 100_000 + "}",
        '{"title":' + '{"a":' * 100_000 + "1" + "}" * 100_001,
        '{"title":' + "[" * 200 + "]" * 200 + ',"role":"r","taskBrief":"t"}',
    ],
    ids=["list", "list-in-a-field", "objects-in-a-field", "nested-200-deep"],
)
def test_a_body_nested_absurdly_deep_is_a_validation_error(client, sent):
    response = client.post("/v1/assessments", data=sent, headers=JSON)

    assert_error(response, 400, "validation_error")


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_number_literals_that_are_not_json_are_refused(client, literal):
    sent = create_text(timeLimitMinutes=literal)

    response = client.post("/v1/assessments", data=sent, headers=JSON)

    assert_error(response, 400, "validation_error")


#: Each made only of characters that show nothing: whitespace of every kind, zero-width and
#: other format characters, controls, invisible fillers.
INVISIBLE = [
    "\u200b",
    "\u200c\u200d",
    "\u2060\ufeff",
    "\u00ad",
    "\u3000\u2003\u00a0",
    "\u2028\u2029",
    "\t\n\r\x0b\x0c",
    "\x01\x7f\x85",
    "\u202e\u2066",
    "\u034f\ufe0f",
    "\u3164\u115f",
    "\u2800",
    "\U000e0001\U000e0020",
]
INVISIBLE_IDS = [text.encode("unicode_escape").decode() for text in INVISIBLE]


@pytest.mark.parametrize("text", INVISIBLE, ids=INVISIBLE_IDS)
@pytest.mark.parametrize("field", ["title", "role", "taskBrief"])
def test_text_made_only_of_invisible_characters_is_blank(client, field, text):
    response = client.post("/v1/assessments", json=body(**{field: text}))

    assert_error(response, 400, "validation_error", field)


@pytest.mark.parametrize("text", INVISIBLE, ids=INVISIBLE_IDS)
def test_an_org_name_of_invisible_characters_is_blank(client, text):
    assessment = create(client)

    response = client.post(f"/v1/assessments/{assessment['id']}/keys", json={"count": 1, "orgName": text})

    assert_error(response, 400, "validation_error", "orgName")


@pytest.mark.parametrize("title", ["\u200bA\u200b", "\u0301e", "\u00e9", "\u05d0", "\U0001f642", " x "])
def test_text_with_one_visible_character_is_not_blank(client, title):
    assert create(client, title=title)["title"] == title


@pytest.mark.parametrize(
    "path",
    [
        "/v1/issues/a%00b",
        "/v1/issues/%00",
        "/v1/assessments/a%00b",
        "/v1/assessments/a%00b/keys",
        "/v1/assessments/a%00b/events",
        f"/v1/assessments/{uuid.uuid4()}%00",
    ],
)
def test_a_path_id_with_a_nul_is_not_found(client, catalogue, path):
    assert_error(client.get(path), 404, "not_found")


def test_a_key_id_with_a_nul_is_not_found(client):
    assessment = create(client)

    response = client.delete(f"/v1/assessments/{assessment['id']}/keys/a%00b")

    assert_error(response, 404, "not_found")


@pytest.mark.parametrize(
    ("path", "query", "parameter"),
    [
        ("/v1/assessments", "after=a%00b", "after"),
        ("/v1/assessments", "limit=1%00", "limit"),
        ("/v1/assessments", "after=%ED%A0%80", "after"),
        ("/v1/assessments/{id}/events", "after=1%00", "after"),
        ("/v1/assessments/{id}/events", "limit=%00", "limit"),
    ],
)
def test_a_query_parameter_with_a_nul_is_refused_naming_it(client, path, query, parameter):
    assessment = create(client)

    response = client.get(f"{path.format(id=assessment['id'])}?{query}")

    assert_error(response, 400, "validation_error", parameter)


@pytest.mark.parametrize("value", ["a\x00b", "\x00", "a\x01b", "\x7f"])
def test_an_idempotency_key_with_a_control_character_is_refused_naming_it(client, value):
    response = client.post("/v1/assessments", json=body(), headers={"Idempotency-Key": value})

    assert_error(response, 400, "validation_error", "Idempotency-Key")
    assert listed(client) == []


def test_a_candidate_key_with_a_nul_is_unauthorized(anonymous, client):
    assessment = create(client)

    response = anonymous.get(f"/v1/assessments/{assessment['id']}", headers={"X-API-Key": "PST-\x00"})

    assert_error(response, 401, "unauthorized")


@pytest.mark.parametrize("value", ["a\x00b", "\x01", "x" * 129])
def test_a_request_id_that_cannot_be_echoed_is_replaced(client, value):
    response = client.get("/v1/assessments", headers={"X-Request-Id": value})

    assert response.status_code == 200
    assert uuid.UUID(response.headers["X-Request-Id"])


def test_a_bearer_token_with_a_nul_is_unauthorized(anonymous):
    response = anonymous.get("/v1/assessments", headers={"Authorization": "Bearer ast_\x00"})

    assert_error(response, 401, "unauthorized")
