"""The shortest path through the system: create, then read it back at once."""


def test_created_assessment_is_listed_and_gettable_at_once(client):
    created = client.post("/v1/assessments", json={"title": "API", "role": "Backend", "taskBrief": "Do it"})
    assert created.status_code == 201, created.text
    assessment = created.json()["assessment"]

    listed = client.get("/v1/assessments")
    got = client.get(f"/v1/assessments/{assessment['id']}")

    assert [a["id"] for a in listed.json()["assessments"]] == [assessment["id"]]
    assert got.status_code == 200
    assert got.json()["assessment"] == {**assessment, "issue": None}
