"""Data keys wrapped by a master key, and the tokens that personal fields are sealed into.

Envelope encryption: each data subject has a random 256-bit data key, kept wrapped by a master
key from the settings (AES-GCM, the subject's id as associated data, so a wrapped key cannot
be moved to another subject). Rotating the master key re-wraps the data keys and touches no
event; destroying a data key makes everything sealed under it unreadable, in every copy.

A sealed value is the token `pd1.<base64url(event id | nonce | ciphertext and tag)>`, sealed
under the subject's data key with the event id and the field's name as associated data: it
cannot be moved to another event or field. The event id travels inside the token so that a copy
of it (the keys view holds the tokens of its key's events) opens without the event at hand.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

TOKEN_PREFIX = "pd1."
NONCE_BYTES = 12
KEY_BYTES = 32


class UnreadableToken(ValueError):
    """A token that is malformed, or was not sealed under this key for this event and field."""


class UnknownMasterKey(LookupError):
    """A data key wrapped by a master key the settings no longer hold."""


def new_data_key() -> bytes:
    return AESGCM.generate_key(bit_length=KEY_BYTES * 8)


#: Opened values a data key remembers (a key list is read again and again; a subject has few).
OPENED_KEPT = 64


class DataKey:
    """One subject's key: seals and opens that subject's personal fields. It remembers what it
    opened (a key list is read again and again): whoever holds it may read them anyway, and
    whoever finds the subject erased drops the key (`events.sql.vault`)."""

    __slots__ = ("_aead", "_opened")

    def __init__(self, secret: bytes) -> None:
        self._aead = AESGCM(secret)
        self._opened: dict[tuple[str, str], tuple[uuid.UUID, str]] = {}

    def seal(self, event_id: uuid.UUID, field: str, value: str) -> str:
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, value.encode(), _associated(event_id, field))
        return TOKEN_PREFIX + base64.urlsafe_b64encode(event_id.bytes + nonce + sealed).decode()

    def open(self, token: str, field: str, event_id: uuid.UUID | None = None) -> str:
        """The value sealed in `token`. `event_id`, when given, is the event the token must
        belong to (a token read from an event); a copy's token names its own."""
        opened = self._opened.get((token, field))
        if opened is None:
            opened = self._open(token, field)
            if len(self._opened) >= OPENED_KEPT:
                self._opened.clear()
            self._opened[(token, field)] = opened
        sealed_for, value = opened
        if event_id is not None and sealed_for != event_id:
            raise UnreadableToken("sealed for another event")
        return value

    def _open(self, token: str, field: str) -> tuple[uuid.UUID, str]:
        sealed_for, nonce, sealed = _parts(token)
        try:
            return sealed_for, self._aead.decrypt(nonce, sealed, _associated(sealed_for, field)).decode()
        except InvalidTag as error:
            raise UnreadableToken("not sealed under this key for this field") from error


def is_token(value: object) -> bool:
    return isinstance(value, str) and value.startswith(TOKEN_PREFIX)


def _associated(event_id: uuid.UUID, field: str) -> bytes:
    return event_id.bytes + field.encode()


def _parts(token: str) -> tuple[uuid.UUID, bytes, bytes]:
    if not is_token(token):
        raise UnreadableToken("not a sealed value")
    try:
        raw = base64.urlsafe_b64decode(token[len(TOKEN_PREFIX) :])
    except (binascii.Error, ValueError) as error:
        raise UnreadableToken("not base64") from error
    if len(raw) < 16 + NONCE_BYTES + 16:
        raise UnreadableToken("too short")
    return uuid.UUID(bytes=raw[:16]), raw[16 : 16 + NONCE_BYTES], raw[16 + NONCE_BYTES :]


@dataclass(frozen=True)
class MasterKey:
    key_id: str
    secret: bytes = b""

    def __repr__(self) -> str:  # never the secret, in a log or a traceback
        return f"MasterKey({self.key_id!r})"


class MasterKeys:
    """The current master key, which wraps every new data key, and older ones kept only to
    unwrap what was wrapped before a rotation (`assessments candidates rotate-master-key`)."""

    def __init__(self, keys: Sequence[MasterKey]) -> None:
        if not keys:
            raise ValueError("at least one master key is needed")
        self.current = keys[0]
        self._by_id = {key.key_id: AESGCM(key.secret) for key in reversed(keys)}

    @classmethod
    def parse(cls, text: str) -> MasterKeys:
        """`ID:BASE64,ID:BASE64,...`, the current key first; each secret is 32 bytes."""
        keys = []
        for item in filter(None, (part.strip() for part in text.split(","))):
            key_id, sep, encoded = item.partition(":")
            if not sep or not key_id:
                raise ValueError("each master key is ID:BASE64")
            try:
                secret = base64.b64decode(encoded, validate=True)
            except (binascii.Error, ValueError) as error:
                raise ValueError(f"master key {key_id!r} is not base64") from error
            if len(secret) != KEY_BYTES:
                raise ValueError(f"master key {key_id!r} has {len(secret)} bytes, not {KEY_BYTES}")
            keys.append(MasterKey(key_id, secret))
        if len({key.key_id for key in keys}) != len(keys):
            raise ValueError("master key ids must differ")
        return cls(keys)

    @classmethod
    def for_development(cls) -> MasterKeys:
        """A fixed key for `assessments dev` and the tests: never for personal data that matters."""
        return cls([MasterKey("dev", hashlib.sha256(b"assessments development master key").digest())])

    def wrap(self, subject_id: uuid.UUID, data_key: bytes) -> tuple[str, bytes]:
        nonce = os.urandom(NONCE_BYTES)
        aead = self._by_id[self.current.key_id]
        return self.current.key_id, nonce + aead.encrypt(nonce, data_key, subject_id.bytes)

    def unwrap(self, subject_id: uuid.UUID, key_id: str, wrapped: bytes) -> bytes:
        aead = self._by_id.get(key_id)
        if aead is None:
            raise UnknownMasterKey(key_id)
        return aead.decrypt(wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], subject_id.bytes)
