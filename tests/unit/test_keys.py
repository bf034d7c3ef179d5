"""Candidate key strings and time-ordered ids."""

from __future__ import annotations

import itertools
import time
import uuid

import pytest

from events.keys import ALPHABET, KEY_PATTERN, generate_key, key_hint, looks_like_key
from events.model import uuid7


def test_a_key_has_the_format_pst_xxxx_xxxx():
    key = generate_key()
    assert len(key) == len("PST-XXXX-XXXX")
    assert key.startswith("PST-")
    assert key[8] == "-"
    assert KEY_PATTERN.match(key)


def test_a_key_uses_only_characters_of_the_alphabet():
    for _ in range(200):
        assert set(generate_key().replace("PST-", "", 1).replace("-", "")) <= set(ALPHABET)


def test_the_alphabet_avoids_look_alikes():
    assert not set("0O1IL") & set(ALPHABET)


def test_the_alphabet_is_upper_case_letters_and_digits_without_repeats():
    assert len(set(ALPHABET)) == len(ALPHABET) == 31
    assert all(char.isdigit() or char.isupper() for char in ALPHABET)


def test_ten_thousand_keys_are_all_distinct():
    """31**8 possible keys: a collision among 10,000 has a probability below 1e-4."""
    keys = [generate_key() for _ in range(10_000)]
    assert len(set(keys)) == len(keys)


def test_a_deterministic_choice_gives_a_deterministic_key():
    assert generate_key(choice=lambda alphabet: alphabet[0]) == "PST-AAAA-AAAA"
    assert generate_key(choice=lambda alphabet: alphabet[-1]) == "PST-9999-9999"


def test_the_key_takes_its_characters_in_the_order_chosen():
    letters = iter("ABCDEFGH")
    assert generate_key(choice=lambda alphabet: next(letters)) == "PST-ABCD-EFGH"


def test_looks_like_key_accepts_keys_and_rejects_look_alikes_and_lower_case():
    assert looks_like_key(generate_key())
    assert not looks_like_key("PST-ABC0-EFGH")
    assert not looks_like_key("PST-abcd-efgh")
    assert not looks_like_key("PST-ABCD-EFGHJ")
    assert not looks_like_key("XYZ-ABCD-EFGH")


# --- hints -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "hint"),
    [
        ("PST-ABCD-EF7K", "PST-****-**7K"),
        ("PST-AAAA-AAAA", "PST-****-**AA"),
        ("PST-2345-6789", "PST-****-**89"),
    ],
)
def test_a_hint_shows_the_prefix_the_dashes_and_the_last_two_characters(key, hint):
    assert key_hint(key) == hint


def test_a_hint_has_the_shape_of_a_key_and_is_no_key():
    for _ in range(200):
        key = generate_key()
        hint = key_hint(key)
        assert len(hint) == len(key)
        assert not looks_like_key(hint)


def test_a_hint_reveals_only_the_last_two_characters():
    """Keys that differ anywhere but in their last two characters have the same hint."""
    hints = {key_hint(f"PST-{a}{a}{a}{a}-{b}{b}7K") for a in ALPHABET for b in ALPHABET}
    assert hints == {"PST-****-**7K"}
    assert {key_hint(f"PST-ABCD-EF{c}K") for c in ALPHABET} == {f"PST-****-**{c}K" for c in ALPHABET}


def test_uuid7_is_an_rfc_9562_version_7_uuid():
    value = uuid7()
    assert value.version == 7
    assert value.variant == uuid.RFC_4122


def test_uuid7_starts_with_the_current_unix_time_in_milliseconds():
    """Allowing a little drift ahead: a burst of ids may borrow the next milliseconds."""
    before = time.time_ns() // 1_000_000
    value = uuid7()
    after = time.time_ns() // 1_000_000
    assert before <= value.int >> 80 <= after + 1_000


def test_uuid7_is_strictly_increasing_within_a_process():
    ids = [uuid7() for _ in range(10_000)]
    assert all(earlier < later for earlier, later in itertools.pairwise(ids))
    assert all(value.version == 7 for value in ids)
