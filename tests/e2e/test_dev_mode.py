"""`assessments dev`: the whole contract with no PostgreSQL and no RabbitMQ, in one process."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from email import message_from_bytes, policy
from pathlib import Path

import pytest
from standardwebhooks.webhooks import Webhook

from tests.support.receiver import Receiver
from tests.support.system import Client
from tests.support.wait import wait_for

ROOT = Path(__file__).resolve().parents[2]
ENV = {key: value for key, value in os.environ.items() if not key.startswith("ASSESSMENTS_")}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class DevServer:
    def __init__(self, database: Path) -> None:
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cli",
                "dev",
                "--bind",
                f"127.0.0.1:{free_port()}",
                "--database",
                str(database),
            ],
            cwd=ROOT,
            env=ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self.lines: list[str] = []
        banner = wait_for(self._banner, 30, "the dev server's URL and token")
        self.url, self.token = banner["url"], banner["token"]

    def _banner(self) -> dict | None:
        line = self.process.stdout.readline()
        self.lines.append(line)
        return json.loads(line) if line.startswith("{") else None

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(20)
        self.process.stdout.close()
        return code


@pytest.fixture
def database(tmp_path: Path) -> Path:
    return tmp_path / "dev.sqlite3"


def test_the_full_contract_runs_on_sqlite_and_the_in_process_broker(database):
    server = DevServer(database)
    try:
        with Client(server.url, server.token) as client:
            created = client.post("/v1/assessments", json={"title": "T", "role": "R", "taskBrief": "B"})
            assert created.status_code == 201, created.text
            assessment_id = created.json()["assessment"]["id"]
            assert [a["id"] for a in client.get("/v1/assessments").json()["assessments"]] == [assessment_id]
            assert client.get(f"/v1/assessments/{assessment_id}").status_code == 200

            keys = client.post(f"/v1/assessments/{assessment_id}/keys", json={"count": 2}).json()["keys"]
            assert len(client.get(f"/v1/assessments/{assessment_id}/keys").json()["keys"]) == 2
            with Client(server.url) as candidate:
                headers = {"X-API-Key": keys[0]["key"]}
                assert candidate.get(f"/v1/assessments/{assessment_id}", headers=headers).status_code == 200

            assert client.delete(f"/v1/assessments/{assessment_id}").json() == {
                "ok": True,
                "id": assessment_id,
            }
            assert client.get("/v1/assessments").json()["assessments"] == []
            assert client.get(f"/v1/assessments/{assessment_id}").status_code == 404

            def cascaded():
                history = client.get(f"/v1/assessments/{assessment_id}/events").json()["events"]
                return [e["data"]["reason"] for e in history if e["type"] == "CandidateKeyRevoked"]

            assert wait_for(cascaded, 10, "the cascade") == ["assessment_deleted"] * 2
    finally:
        assert server.stop() == 0


def test_a_candidate_takes_an_assessment_in_dev_mode(database):
    """The candidate's side on SQLite: consent, redeem, the token as `X-API-Key`, complete."""
    server = DevServer(database)
    try:
        with Client(server.url, server.token) as client, Client(server.url) as candidate:
            created = client.post("/v1/assessments", json={"title": "T", "role": "R", "taskBrief": "B"})
            assessment_id = created.json()["assessment"]["id"]
            (key,) = client.post(f"/v1/assessments/{assessment_id}/keys", json={"count": 1}).json()["keys"]
            shown = candidate.get("/v1/candidate/consent", params={"key": key["key"]}).json()
            consent = {"key": key["key"], "disclosureHash": shown["disclosureHash"]}
            assert candidate.post("/v1/candidate/consent", json=consent).status_code == 200
            redeemed = candidate.post("/v1/candidate/redeem", json={"key": key["key"]})
            assert redeemed.status_code == 200, redeemed.text
            session = redeemed.json()
            token = {"X-API-Key": session["sessionToken"]}
            assert candidate.get(f"/v1/assessments/{assessment_id}", headers=token).status_code == 200
            done = candidate.post(
                "/v1/candidate/complete", json={"sessionId": session["sessionId"], "key": key["key"]}
            )
            assert done.status_code == 200, done.text

            def completed():
                keys = client.get(f"/v1/assessments/{assessment_id}/keys").json()["keys"]
                return keys[0]["status"] == "completed"

            wait_for(completed, 10, "the completion in the keys' projection")
    finally:
        assert server.stop() == 0


def test_a_restart_on_the_same_file_keeps_the_data(database):
    first = DevServer(database)
    try:
        with Client(first.url, first.token) as client:
            kept = client.post("/v1/assessments", json={"title": "Kept", "role": "R", "taskBrief": "B"})
    finally:
        assert first.stop() == 0

    second = DevServer(database)
    try:
        with Client(second.url, second.token) as client:
            listed = client.get("/v1/assessments").json()["assessments"]
    finally:
        assert second.stop() == 0
    assert [a["id"] for a in listed] == [kept.json()["assessment"]["id"]]


def test_without_smtp_dev_mode_writes_each_invitation_as_an_eml_file_in_the_folder_it_names(database):
    server = DevServer(database)
    folder = database.parent / f"{database.stem}-mail"
    try:
        assert str(folder) in server.lines[0]
        with Client(server.url, server.token) as client:
            created = client.post(
                "/v1/assessments", json={"title": "Dev title", "role": "Dev role", "taskBrief": "B"}
            )
            assessment_id = created.json()["assessment"]["id"]
            body = {"count": 2, "candidateEmails": ["ada@example.com", "alan@example.com"], "orgName": "Devs"}
            keys = client.post(f"/v1/assessments/{assessment_id}/keys", json=body).json()["keys"]

            files = wait_for(
                lambda: len(list(folder.glob("*.eml"))) == 2 and sorted(folder.glob("*.eml")), 15
            )
    finally:
        assert server.stop() == 0
    mails = {}
    for path in files:
        message = message_from_bytes(path.read_bytes(), policy=policy.default)
        mails[message["To"]] = message.get_body(preferencelist=("plain",)).get_content()
    assert set(mails) == {"ada@example.com", "alan@example.com"}
    by_email = {key["candidateEmail"]: key["key"] for key in keys}
    for email, text in mails.items():
        assert f"promptster redeem {by_email[email]}" in text
        assert "Dev title" in text and "Dev role" in text and "Devs" in text


@pytest.mark.parametrize("command", ["api", "relay", "worker", "notifier"])
def test_production_commands_refuse_sqlite_unless_told(command, database):
    env = {**ENV, "ASSESSMENTS_DATABASE_URL": f"sqlite:///{database}"}
    refused = subprocess.run(
        [sys.executable, "-m", "cli", command], cwd=ROOT, env=env, capture_output=True, text=True, timeout=30
    )
    assert refused.returncode == 2
    assert "--allow-embedded" in refused.stderr


def outbox_rows(database: Path) -> int:
    with contextlib.closing(sqlite3.connect(database)) as conn:
        return conn.execute("SELECT count(*) FROM outbox").fetchone()[0]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def test_after_a_write_the_outbox_empties_the_process_goes_idle_and_stops_at_once(database):
    """The relay deletes what it published: nothing is sent twice, an idle dev server costs
    no CPU, and SIGTERM finds nothing to wait for."""
    server = DevServer(database)
    try:
        with Client(server.url, server.token) as client:
            created = client.post("/v1/assessments", json={"title": "T", "role": "R", "taskBrief": "B"})
            assert created.status_code == 201
        wait_for(lambda: outbox_rows(database) == 0, 10, "an empty outbox")

        before = cpu_seconds(server.process.pid)
        window = threading.Event()
        window.wait(2.0)  # a measuring window, not a wait for a condition
        assert cpu_seconds(server.process.pid) - before < 0.2, "an idle dev server keeps a core busy"
        assert outbox_rows(database) == 0
    finally:
        started = time.monotonic()
        assert server.stop() == 0
    assert time.monotonic() - started < 3.0


def test_dev_mode_delivers_webhooks_to_a_local_receiver(database):
    """The dispatcher runs as a thread of `assessments dev`, which allows http to 127.0.0.1."""
    receiver = Receiver()
    server = DevServer(database)
    try:
        with Client(server.url, server.token) as client:
            registered = client.post(
                "/v1/webhooks", json={"url": receiver.endpoint("/dev"), "events": ["assessment.created"]}
            )
            assert registered.status_code == 201, registered.text
            secret = registered.json()["webhook"]["secret"]
            created = client.post("/v1/assessments", json={"title": "T", "role": "R", "taskBrief": "B"})
            assert created.status_code == 201, created.text

            [got] = wait_for(lambda: receiver.received("/dev"), 20, "the dev server's delivery")
            assert got.json["subject"] == created.json()["assessment"]["id"]
            assert Webhook(secret).verify(got.body, got.headers)["type"] == "AssessmentCreated"
    finally:
        assert server.stop() == 0
        receiver.close()
