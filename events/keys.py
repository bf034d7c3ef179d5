"""Candidate key strings: `PST-XXXX-XXXX` from a cryptographically secure generator, and the
hint that may be shown where the key itself must not be (events, messages, the history)."""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable

#: Upper-case letters and digits without look-alikes (0/O, 1/I/L).
ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
KEY_PATTERN = re.compile(rf"^PST-[{ALPHABET}]{{4}}-[{ALPHABET}]{{4}}$")
PREFIX = "PST-"
#: How many of a key's last characters its hint shows. Each one shown divides the guesses left
#: for someone who holds the hint by 31; two leave 31**6 (about 8.9e8) of the 31**8 (8.5e11).
HINT_SHOWS = 2

KeyGenerator = Callable[[], str]


def generate_key(choice: Callable[[str], str] = secrets.choice) -> str:
    chars = "".join(choice(ALPHABET) for _ in range(8))
    return f"{PREFIX}{chars[:4]}-{chars[4:]}"


def key_hint(key: str) -> str:
    """`PST-****-**7K` for `PST-ABCD-EF7K`: lets a person tell a candidate's key from the others
    (in a mail log, on a support call) without being a credential. Only the last `HINT_SHOWS`
    characters are shown; every other character is masked and the dashes are kept, so the
    hint has the key's shape."""
    hidden, shown = key.removeprefix(PREFIX)[:-HINT_SHOWS], key[-HINT_SHOWS:]
    return PREFIX + "".join(char if char == "-" else "*" for char in hidden) + shown


def looks_like_key(value: str) -> bool:
    return bool(KEY_PATTERN.match(value))
