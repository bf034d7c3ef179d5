"""`events.crypto.cipher`: a token opens only under its subject's key, for its own event and
field; tampering fails; master keys parse strictly; a wrapped data key is bound to its subject."""

from __future__ import annotations

import base64
import uuid

import pytest
from cryptography.exceptions import InvalidTag

from events.crypto.cipher import (
    TOKEN_PREFIX,
    DataKey,
    MasterKey,
    MasterKeys,
    UnknownMasterKey,
    UnreadableToken,
    is_token,
    new_data_key,
)


def b64(secret: bytes) -> str:
    return base64.b64encode(secret).decode()


def keys_text(*pairs: tuple[str, bytes]) -> str:
    return ",".join(f"{key_id}:{b64(secret)}" for key_id, secret in pairs)


@pytest.fixture
def key() -> DataKey:
    return DataKey(new_data_key())


def test_a_token_opens_to_its_value_with_or_without_its_event_id(key):
    event_id = uuid.uuid4()

    token = key.seal(event_id, "candidateEmail", "ada@example.com")

    assert is_token(token) and token.startswith(TOKEN_PREFIX)
    assert "ada" not in token
    assert key.open(token, "candidateEmail", event_id) == "ada@example.com"
    assert key.open(token, "candidateEmail") == "ada@example.com"  # a copy names its own event


def test_two_seals_of_one_value_differ(key):
    event_id = uuid.uuid4()

    assert key.seal(event_id, "candidateName", "Ada") != key.seal(event_id, "candidateName", "Ada")


def test_a_token_does_not_open_for_another_event(key):
    token = key.seal(uuid.uuid4(), "candidateEmail", "ada@example.com")

    with pytest.raises(UnreadableToken):
        key.open(token, "candidateEmail", uuid.uuid4())


def test_a_token_moved_to_another_event_does_not_open(key):
    """The event id inside the token is associated data: rewriting it breaks the tag."""
    token = key.seal(uuid.uuid4(), "candidateEmail", "ada@example.com")
    raw = base64.urlsafe_b64decode(token[len(TOKEN_PREFIX) :])
    other = uuid.uuid4()
    moved = TOKEN_PREFIX + base64.urlsafe_b64encode(other.bytes + raw[16:]).decode()

    with pytest.raises(UnreadableToken):
        key.open(moved, "candidateEmail", other)
    with pytest.raises(UnreadableToken):
        key.open(moved, "candidateEmail")


def test_a_token_does_not_open_for_another_field(key):
    event_id = uuid.uuid4()
    token = key.seal(event_id, "candidateEmail", "ada@example.com")

    with pytest.raises(UnreadableToken):
        key.open(token, "candidateName", event_id)


def test_a_token_does_not_open_under_another_key(key):
    event_id = uuid.uuid4()
    token = key.seal(event_id, "candidateName", "Ada")

    with pytest.raises(UnreadableToken):
        DataKey(new_data_key()).open(token, "candidateName", event_id)


@pytest.mark.parametrize("position", [16, 16 + 12, -1], ids=["nonce", "ciphertext", "tag"])
def test_a_tampered_token_does_not_open(key, position):
    event_id = uuid.uuid4()
    raw = bytearray(base64.urlsafe_b64decode(key.seal(event_id, "candidateName", "Ada")[len(TOKEN_PREFIX) :]))
    raw[position] ^= 0x01
    tampered = TOKEN_PREFIX + base64.urlsafe_b64encode(bytes(raw)).decode()

    with pytest.raises(UnreadableToken):
        key.open(tampered, "candidateName", event_id)


@pytest.mark.parametrize(
    "token",
    ["ada@example.com", "pd1.", "pd1.!!!not-base64!!!", "pd1." + base64.urlsafe_b64encode(b"short").decode()],
    ids=["clear", "empty", "not-base64", "too-short"],
)
def test_malformed_tokens_are_unreadable(key, token):
    with pytest.raises(UnreadableToken):
        key.open(token, "candidateName")


# --- master keys ------------------------------------------------------------------------------


def test_parse_reads_the_current_key_first():
    a, b = new_data_key(), new_data_key()

    keys = MasterKeys.parse(f" B:{b64(b)} , A:{b64(a)} ,")

    assert keys.current.key_id == "B"
    assert "secret" not in repr(keys.current) and b64(b) not in repr(keys.current)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("A:not base64!", "not base64"),
        (f"A:{b64(b'x' * 16)}", "16 bytes"),
        (f"A:{b64(b'x' * 33)}", "33 bytes"),
        (keys_text(("A", b"x" * 32), ("A", b"y" * 32)), "must differ"),
        (b64(b"x" * 32), "ID:BASE64"),
        (f":{b64(b'x' * 32)}", "ID:BASE64"),
        ("", "at least one"),
        (" , ", "at least one"),
    ],
    ids=["bad-base64", "too-short", "too-long", "duplicate-ids", "no-id", "empty-id", "empty", "only-commas"],
)
def test_parse_refuses_what_it_cannot_use(text, message):
    with pytest.raises(ValueError, match=message):
        MasterKeys.parse(text)


def test_wrap_and_unwrap_round_trip():
    keys = MasterKeys([MasterKey("A", new_data_key())])
    subject, secret = uuid.uuid4(), new_data_key()

    key_id, wrapped = keys.wrap(subject, secret)

    assert key_id == "A"
    assert secret not in wrapped
    assert keys.unwrap(subject, key_id, wrapped) == secret


def test_a_wrapped_key_is_bound_to_its_subject():
    keys = MasterKeys([MasterKey("A", new_data_key())])
    key_id, wrapped = keys.wrap(uuid.uuid4(), new_data_key())

    with pytest.raises(InvalidTag):
        keys.unwrap(uuid.uuid4(), key_id, wrapped)


def test_after_a_rotation_the_old_key_still_unwraps_and_the_new_one_wraps():
    a, b = MasterKey("A", new_data_key()), MasterKey("B", new_data_key())
    subject, secret = uuid.uuid4(), new_data_key()
    _, wrapped_by_a = MasterKeys([a]).wrap(subject, secret)

    rotated = MasterKeys([b, a])

    assert rotated.unwrap(subject, "A", wrapped_by_a) == secret
    key_id, wrapped_by_b = rotated.wrap(subject, secret)
    assert key_id == "B"
    assert MasterKeys([b]).unwrap(subject, "B", wrapped_by_b) == secret
    with pytest.raises(UnknownMasterKey):
        MasterKeys([b]).unwrap(subject, "A", wrapped_by_a)
    with pytest.raises(InvalidTag):  # the same id with another secret
        MasterKeys([MasterKey("A", new_data_key())]).unwrap(subject, "A", wrapped_by_a)
