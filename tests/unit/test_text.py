"""What the API accepts as text: storable strings, visible names, one rule for the code and the
OpenAPI document's `pattern`."""

from __future__ import annotations

import re
import time
import unicodedata

import pytest
from jsonschema import Draft202012Validator

from api import text


@pytest.mark.parametrize(
    "value",
    [
        "",
        " ",
        "\u200b",
        "\u200c\u200d\u2060\ufeff",
        "\u00ad",
        "\u3000\u00a0\u2003",
        "\t\r\n",
        "\x00",
        "\x00 ",
    ],
)
def test_nothing_visible_is_blank(value):
    assert text.is_blank(value)


@pytest.mark.parametrize("value", ["a", " a ", "\u200ba", "\u00e9", "\U0001f642", "\u0301", "a\nb"])
def test_one_visible_character_is_enough(value):
    assert not text.is_blank(value)


def test_a_nul_anywhere_fails_the_pattern_even_among_visible_characters():
    assert text.is_blank("a\x00b")


def test_every_control_format_and_space_character_of_this_unicode_is_invisible():
    invisible = {
        chr(point)
        for point in range(0x110000)
        if unicodedata.category(chr(point)) in text.INVISIBLE_CATEGORIES
    }

    assert [char for char in invisible if not text.is_blank(char)] == []


def test_the_pattern_takes_linear_time_on_long_invisible_text():
    started = time.perf_counter()
    assert text.is_blank("\u200b" * 50_000 + "\x00")
    assert not text.is_blank("\u200b" * 50_000 + "x")
    assert time.perf_counter() - started < 0.5


@pytest.mark.parametrize("value", ["", "a", "\u200b", "x\u200by", "\x00", "\U000e0001", "\ufeffA", "\u00ad"])
def test_json_schema_reads_the_pattern_as_the_code_does(value):
    validator = Draft202012Validator({"type": "string", "pattern": text.visible_text_pattern()})

    assert validator.is_valid(value) == (not text.is_blank(value))


def test_the_pattern_is_ecma_262_syntax_without_python_only_escapes():
    pattern = text.visible_text_pattern()

    assert not re.search(r"\\[UxNAZ]", pattern), "escapes that ECMA-262 reads otherwise"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("ok", None),
        ("a\x00b", text.NUL_MESSAGE),
        ("a\ud800b", text.SURROGATE_MESSAGE),
        ("\udfff", text.SURROGATE_MESSAGE),
    ],
)
def test_a_string_that_cannot_be_stored_says_why(value, message):
    assert text.problem(value) == message


def test_problems_name_the_top_level_field_and_an_entry_by_position():
    found = text.problems({"title": "a\x00", "names": ["ok", "b\ud800"], "fine": "yes", "count": 3})

    assert found == {"title": [text.NUL_MESSAGE], "names": [f"Entry 1: {text.SURROGATE_MESSAGE}"]}


def test_a_field_name_that_cannot_be_stored_is_named_printably():
    found = text.problems({"x\x00": 1, "y\ud800": 2})

    assert set(found) == {"x\\u0000", "y\\ud800"}
    assert all(messages[0].startswith("Field name:") for messages in found.values())


def test_nested_names_and_values_are_checked_too():
    assert text.problems({"meta": {"a\x00": "x"}}) == {"meta": [f"Field name: {text.NUL_MESSAGE}"]}
    assert text.problems({"meta": [{"a": ["\x00"]}]}) == {"meta": [f"Entry 0: {text.NUL_MESSAGE}"]}


def test_nesting_past_the_limit_is_a_problem_without_recursion():
    deep: list = []
    for _ in range(50_000):
        deep = [deep]

    assert text.problems({"title": deep}) == {"title": [text.DEPTH_MESSAGE]}
    assert text.problems({"title": [[["x"]]]}) == {}
