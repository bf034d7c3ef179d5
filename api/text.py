"""What the API accepts as text, in one place for the code and the OpenAPI document alike.

PostgreSQL's text and JSON columns refuse the NUL character and lone surrogates (which Python's
`json` module lets through from `"\\ud800"`), so no request string may carry either: they are
refused here, naming the field, before any work is done. And a name that shows nothing (only
spaces, zero-width or other format characters, controls, invisible fillers) is blank.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections import deque
from collections.abc import Iterator, Mapping
from typing import Any

#: Categories of characters that show nothing by themselves: controls, format characters
#: (zero-width spaces and joiners, direction marks, the BOM, soft hyphen, tags), and spaces,
#: line and paragraph separators of every width.
INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Zs", "Zl", "Zp"})
#: Invisible characters of other categories: the combining grapheme joiner, variation
#: selectors, Khmer inherent vowels, Hangul fillers and the blank Braille pattern.
INVISIBLE_EXTRA = (
    (0x034F, 0x034F),
    (0x17B4, 0x17B5),
    (0x180B, 0x180F),
    (0xFE00, 0xFE0F),
    (0xE0100, 0xE01EF),
    (0x115F, 0x1160),
    (0x3164, 0x3164),
    (0xFFA0, 0xFFA0),
    (0x2800, 0x2800),
)
#: Where Unicode puts the categories above: the basic and supplementary multilingual planes and
#: the supplementary special-purpose plane (tags); the other planes hold none of them.
_SCANNED = (range(0x0000, 0x20000), range(0xE0000, 0xE1000))

NUL_MESSAGE = "Must not contain the NUL character (U+0000)."
SURROGATE_MESSAGE = "Must be valid Unicode text: no lone surrogate (U+D800 to U+DFFF)."
BLANK_MESSAGE = "Must not be blank (spaces and invisible characters only)."
#: Request bodies are small flat objects; anything deeper is refused before it is walked.
MAX_DEPTH = 16
DEPTH_MESSAGE = f"Must not nest more than {MAX_DEPTH} levels deep."


@functools.cache
def invisible_ranges() -> tuple[tuple[int, int], ...]:
    """The invisible characters as sorted, merged (first, last) code point ranges, from this
    Python's Unicode database (computed once: about 30 ms)."""
    points = {
        point
        for scanned in _SCANNED
        for point in scanned
        if unicodedata.category(chr(point)) in INVISIBLE_CATEGORIES
    }
    points.update(point for first, last in INVISIBLE_EXTRA for point in range(first, last + 1))
    ranges: list[tuple[int, int]] = []
    for point in sorted(points):
        if ranges and ranges[-1][1] == point - 1:
            ranges[-1] = (ranges[-1][0], point)
        else:
            ranges.append((point, point))
    return tuple(ranges)


def _escaped(point: int) -> str:
    """A code point as regex syntax that Python's `re` and ECMA-262 (JSON Schema's dialect)
    read alike: `\\uXXXX` in the basic plane, the character itself beyond it."""
    return f"\\u{point:04X}" if point <= 0xFFFF else chr(point)


def _character_class(ranges: tuple[tuple[int, int], ...]) -> str:
    return "".join(
        _escaped(first) if first == last else f"{_escaped(first)}-{_escaped(last)}" for first, last in ranges
    )


@functools.cache
def visible_text_pattern() -> str:
    """A regular expression that text matches when it has no NUL and at least one visible
    character. Its parts are disjoint (invisible characters other than NUL, then the first
    visible one, then anything but NUL), so it runs in linear time in any engine."""
    invisible = invisible_ranges()
    assert invisible[0][0] == 0, "NUL is invisible"
    without_nul = ((1, invisible[0][1]), *invisible[1:])
    return f"^[{_character_class(without_nul)}]*[^{_character_class(invisible)}][^\\u0000]*$"


#: Any text without NUL (lone surrogates cannot be written in a valid JSON document's text).
NO_NUL_PATTERN = "^[^\\u0000]*$"
_LABEL = "[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_TOP_LEVEL_DOMAIN = "[A-Za-z](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST = (
    f"(?:(?:{_LABEL}\\.)+{_TOP_LEVEL_DOMAIN}\\.?"  # a domain name with a top-level domain
    "|localhost"
    "|[0-9]{1,3}(?:\\.[0-9]{1,3}){3}"  # IPv4
    "|\\[[0-9A-Fa-f:.]+\\])"  # IPv6, bracketed
)


@functools.cache
def http_url_pattern() -> str:
    """An absolute http(s) URL: scheme, host, optional port, then anything visible from the
    first `/`, `?` or `#` on. No user or password in it: a repository URL is shown to
    candidates and travels in events."""
    rest = f"(?:[/?#][^{_character_class(invisible_ranges())}]*)?"
    return f"^[Hh][Tt][Tt][Pp][Ss]?://{_HOST}(?::[0-9]{{1,5}})?{rest}$"


@functools.cache
def _visible_text() -> re.Pattern[str]:
    return re.compile(visible_text_pattern())


def is_blank(value: str) -> bool:
    """Nothing visible in it (NUL counts as nothing)."""
    return _visible_text().fullmatch(value) is None


def problem(value: str) -> str | None:
    """Why a string cannot be stored as text, or None."""
    if "\x00" in value:
        return NUL_MESSAGE
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return SURROGATE_MESSAGE
    return None


def printable_name(name: str) -> str:
    """A field name as it can be shown back (NUL and lone surrogates escaped)."""
    return name.replace("\x00", "\\u0000").encode("utf-8", "backslashreplace").decode("utf-8")


def problems(document: Mapping[str, Any]) -> dict[str, list[str]]:
    """For each top-level field of a parsed JSON object that holds a string (or a name) that
    cannot be stored, or nests too deeply: the messages, in the shape of `details`. An entry
    of a list is named by its position, as the schemas' own errors are."""
    found: dict[str, list[str]] = {}
    for name, value in document.items():
        messages = [message for message in _value_problems(value, 1) if message]
        if (name_problem := problem(name)) is not None:
            messages.insert(0, f"Field name: {name_problem}")
        if messages:
            found[printable_name(name)] = list(dict.fromkeys(messages))
    return found


def _value_problems(value: Any, depth: int) -> Iterator[str]:
    """Walks without recursion (the body may be as deep as the JSON parser allowed)."""
    pending: deque[tuple[Any, int, str]] = deque([(value, depth, "")])
    while pending:
        current, level, where = pending.popleft()
        if isinstance(current, str):
            if (message := problem(current)) is not None:
                yield where + message
        elif isinstance(current, dict | list):
            if level > MAX_DEPTH:
                yield DEPTH_MESSAGE
                continue
            items = current.items() if isinstance(current, dict) else enumerate(current)
            for key, item in items:
                label = where or (f"Entry {key}: " if level == 1 and isinstance(current, list) else "")
                if isinstance(key, str) and (message := problem(key)) is not None:
                    yield label + "Field name: " + message
                pending.append((item, level + 1, label))
