"""`DELETE /v1/candidates?email=`: a candidate of the caller's organisation erased, as a client
sees it: their keys' email and name null with `erased: true`, in the key list and the history,
the same answer again, another organisation's candidate untouched, bad input refused."""

from __future__ import annotations

from tests.e2e.helpers import assert_error, create, issue_keys, listed_keys
from tests.support.wait import wait_for


def _erase(client, email: str):
    return client.delete("/v1/candidates", params={"email": email})


def test_erasing_a_candidate_nulls_their_email_and_name_and_leaves_the_others(client):
    assessment = create(client)
    ada, alan = issue_keys(
        client,
        assessment["id"],
        count=2,
        candidateEmails=["ada@example.com", "alan@example.com"],
        candidateNames=["Ada", "Alan"],
    )

    response = _erase(client, "ADA@Example.com")  # the same address, whatever its case

    assert response.status_code == 200, response.text
    assert response.json() == {"ok": True}
    keys = {key["id"]: key for key in listed_keys(client, assessment["id"])}
    assert (keys[ada["id"]]["candidateEmail"], keys[ada["id"]]["candidateName"]) == (None, None)
    assert keys[ada["id"]]["erased"] is True
    assert (keys[alan["id"]]["candidateEmail"], keys[alan["id"]]["candidateName"]) == (
        "alan@example.com",
        "Alan",
    )
    assert "erased" not in keys[alan["id"]]
    assert keys[ada["id"]]["key"] == ada["key"]  # the key itself still works for the candidate


def test_the_history_shows_an_erased_candidate_s_fields_as_null(client):
    assessment = create(client)
    issue_keys(
        client, assessment["id"], count=1, candidateEmails=["grace@example.com"], candidateNames=["Grace"]
    )

    assert _erase(client, "grace@example.com").status_code == 200

    events = client.get(f"/v1/assessments/{assessment['id']}/events").json()["events"]
    (issued,) = [e["data"] for e in events if e["type"] == "CandidateKeyIssued"]
    assert (issued["candidateEmail"], issued["candidateName"], issued["erased"]) == (None, None, True)


def test_erasing_twice_or_someone_unknown_answers_the_same(client):
    assessment = create(client)
    issue_keys(client, assessment["id"], count=1, candidateEmails=["twice@example.com"])

    first, second = _erase(client, "twice@example.com"), _erase(client, "twice@example.com")
    unknown = _erase(client, "nobody@example.com")

    assert [r.status_code for r in (first, second, unknown)] == [200, 200, 200]
    assert first.json() == second.json() == unknown.json()


def test_another_organisation_cannot_erase_the_candidate(client, other_client):
    assessment = create(client)
    issue_keys(client, assessment["id"], count=1, candidateEmails=["kept@example.com"])

    assert _erase(other_client, "kept@example.com").status_code == 200

    (listed,) = listed_keys(client, assessment["id"])
    assert listed["candidateEmail"] == "kept@example.com" and "erased" not in listed


def test_a_key_issued_again_after_the_erasure_is_readable(client):
    assessment = create(client)
    issue_keys(client, assessment["id"], count=1, candidateEmails=["again@example.com"])
    assert _erase(client, "again@example.com").status_code == 200

    (fresh,) = issue_keys(client, assessment["id"], count=1, candidateEmails=["again@example.com"])

    keys = {key["id"]: key for key in listed_keys(client, assessment["id"])}
    assert keys[fresh["id"]]["candidateEmail"] == "again@example.com"
    assert sum(1 for key in keys.values() if key.get("erased")) == 1


def test_a_missing_or_malformed_email_is_a_400_and_erases_nothing(client):
    assessment = create(client)
    issue_keys(client, assessment["id"], count=1, candidateEmails=["safe@example.com"])

    assert_error(client.delete("/v1/candidates"), 400, "validation_error", "email")
    assert_error(_erase(client, "not-an-email"), 400, "validation_error", "email")
    assert_error(
        client.delete("/v1/candidates", params={"email": "a@b.co", "x": "1"}), 400, "validation_error", "x"
    )

    (listed,) = listed_keys(client, assessment["id"])
    assert listed["candidateEmail"] == "safe@example.com"


def test_without_a_token_erasure_is_refused(anonymous):
    assert_error(_erase(anonymous, "ada@example.com"), 401, "unauthorized")


def test_the_key_list_is_erased_for_a_redeemed_candidate_too(client, candidate):
    assessment = create(client)
    (key,) = issue_keys(client, assessment["id"], count=1, candidateEmails=["redeemer@example.com"])
    with candidate(key["key"]) as session:
        assert session.post("/v1/candidate/consent", json={"key": key["key"]}).status_code == 200
        redeemed = session.post("/v1/candidate/redeem", json={"key": key["key"], "candidateName": "Rita R."})
        assert redeemed.status_code == 200, redeemed.text
    wait_for(lambda: listed_keys(client, assessment["id"])[0]["candidateName"] == "Rita R.", 10, "the name")

    assert _erase(client, "redeemer@example.com").status_code == 200

    (listed,) = listed_keys(client, assessment["id"])
    assert (listed["candidateEmail"], listed["candidateName"], listed["erased"]) == (None, None, True)
