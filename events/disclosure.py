"""What the candidate is told before their session starts, and the hash that proves which text
they consented to.

The text ships as a versioned data file (`data/disclosure.json`) that an operator may replace
(`ASSESSMENTS_DISCLOSURE_FILE`). The hash is SHA-256 over the disclosure exactly as the service
serialises it in `GET /v1/candidate/consent` (compact JSON, keys in the order below, UTF-8), so
a client that parses the document and serialises it again the usual way gets the same bytes.
A consent names the hash it was given: a consent to any other text is refused, so the audit
trail never holds a consent to a text that was not shown.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cached_property
from typing import Any

LISTS = ("captures", "doesNotCapture", "evaluated", "dataUse")


class InvalidDisclosure(ValueError):
    """A disclosure document without a field it needs, or with a field of the wrong type."""


@dataclass(frozen=True)
class Disclosure:
    version: str
    captures: tuple[str, ...]
    does_not_capture: tuple[str, ...]
    evaluated: tuple[str, ...]
    data_use: tuple[str, ...]
    tos_url: str

    def document(self) -> dict[str, Any]:
        """The disclosure as the API shows it (and hashes it), in this order."""
        return {
            "version": self.version,
            "captures": list(self.captures),
            "doesNotCapture": list(self.does_not_capture),
            "evaluated": list(self.evaluated),
            "dataUse": list(self.data_use),
            "tosUrl": self.tos_url,
        }

    @cached_property
    def serialised(self) -> bytes:
        return json.dumps(self.document(), separators=(",", ":"), ensure_ascii=False).encode()

    @cached_property
    def hash(self) -> str:
        return hashlib.sha256(self.serialised).hexdigest()


def disclosure_from(document: Any) -> Disclosure:
    """A disclosure from its document (the data file's content), checked: a file an operator
    edited by hand fails here, at start-up, not in front of a candidate."""
    if not isinstance(document, dict):
        raise InvalidDisclosure("the disclosure must be a JSON object")
    version, tos_url = document.get("version"), document.get("tosUrl")
    if not isinstance(version, str) or not version.strip():
        raise InvalidDisclosure("`version` must be a non-empty string")
    if not isinstance(tos_url, str) or not tos_url.startswith(("https://", "http://")):
        raise InvalidDisclosure("`tosUrl` must be an http(s) URL")
    lists = {}
    for name in LISTS:
        items = document.get(name)
        if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
            raise InvalidDisclosure(f"`{name}` must be a list of strings")
        lists[name] = tuple(items)
    return Disclosure(
        version=version,
        captures=lists["captures"],
        does_not_capture=lists["doesNotCapture"],
        evaluated=lists["evaluated"],
        data_use=lists["dataUse"],
        tos_url=tos_url,
    )
