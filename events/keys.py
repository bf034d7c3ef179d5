"""Candidate key strings: `PST-XXXX-XXXX` from a cryptographically secure generator."""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable

#: Upper-case letters and digits without look-alikes (0/O, 1/I/L).
ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
KEY_PATTERN = re.compile(rf"^PST-[{ALPHABET}]{{4}}-[{ALPHABET}]{{4}}$")

KeyGenerator = Callable[[], str]


def generate_key(choice: Callable[[str], str] = secrets.choice) -> str:
    chars = "".join(choice(ALPHABET) for _ in range(8))
    return f"PST-{chars[:4]}-{chars[4:]}"


def looks_like_key(value: str) -> bool:
    return bool(KEY_PATTERN.match(value))
