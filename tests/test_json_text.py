"""server.json_text: string literals found in one linear pass, and lone surrogates after parsing.

The scanner is checked against a character-by-character reference on any
text, against `json.loads` on any JSON, and against the clock on the input
that froze the server through the regex it replaces (issue 19, finding 1).
"""

from __future__ import annotations

import json
import time

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from server.json_text import lone_surrogate, longest_string_literal, string_literals

# The hostile message of the report: a string that never closes, full of escaped `"data:` openings.
QUADRATIC_UNIT = '\\"data:'


def quadratic(repeats: int) -> str:
    return '"data:' + QUADRATIC_UNIT * repeats


def reference_literals(text: str) -> list[tuple[int, int]]:
    """The same rule, one character at a time: the slow, obvious reading."""
    spans, i = [], 0
    while i < len(text):
        if text[i] != '"':
            i += 1
            continue
        j = i + 1
        while j < len(text) and text[j] != '"':
            j += 2 if text[j] == "\\" else 1
        if j >= len(text):
            break  # never closed
        spans.append((i, j + 1))
        i = j + 1
    return spans


def strings_in_order(value) -> list[str]:
    """Every string of a value parsed with object_pairs_hook=list, keys included, in the order they are written."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(pair, tuple) for pair in value) and value:
        return [s for key, child in value for s in [key, *strings_in_order(child)]]
    if isinstance(value, list):
        return [s for child in value for s in strings_in_order(child)]
    return []


# --- string literals -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, spans",
    [
        ('{"a": "b"}', [(1, 4), (6, 9)]),
        (r'"a\"b" "c"', [(0, 6), (7, 10)]),  # an escaped quote does not close
        (r'"a\\" "c"', [(0, 5), (6, 9)]),  # an escaped backslash does not escape the quote
        (r'"a\\\"" "c"', [(0, 7), (8, 11)]),
        ('"a" "b', [(0, 3)]),  # one left open ends the scan
        ('"a\\', []),  # a backslash at the very end escapes nothing
        ('"\\u0022" x', [(0, 8)]),  # \u0022 is a quote only once decoded
        ('"multi\nline"', [(0, 12)]),  # not JSON, but the scan still knows where it ends
        ("no strings", []),
        ("", []),
    ],
)
def test_string_literals(text, spans):
    assert list(string_literals(text)) == spans


adversarial = st.text(st.sampled_from('"\\\\ad:ta{}[],u0\n/é\ud800'), max_size=200)


@given(adversarial | st.text(max_size=200))
@example('"\\"')
@example('"\\\\" "\\\\\\"')
@example(quadratic(50))
@settings(max_examples=800, deadline=None)
def test_the_scan_agrees_with_a_character_by_character_reading(text):
    assert list(string_literals(text)) == reference_literals(text)


any_string = st.text(st.characters(codec=None, exclude_categories=()), max_size=20) | st.sampled_from(
    ['"', "\\", '\\"', '"data:', "data:image/png;base64,AA==", "/", "\ud800", "\ud83d\ude00", "\x00\x1f"]
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | any_string,
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(any_string, kids, max_size=4),
    max_leaves=25,
)


@given(json_values, st.booleans(), st.sampled_from([None, 1]), st.booleans())
@settings(max_examples=600, deadline=None)
def test_for_any_json_the_literals_are_exactly_the_parsers_strings(value, ascii_only, indent, escape_slashes):
    text = json.dumps(value, ensure_ascii=ascii_only, indent=indent)
    if escape_slashes:  # as PHP's json_encode writes them; a "/" only ever stands inside a string
        text = text.replace("/", "\\/")
    spans = list(string_literals(text))
    assert [json.loads(text[start:end]) for start, end in spans] == strings_in_order(
        json.loads(text, object_pairs_hook=list)
    )


# --- the longest data: literal ------------------------------------------------------------


def test_the_longest_data_literal_is_measured_with_its_quotes():
    text = json.dumps({"a": "data:x", "image_url": "DATA:image/png;base64,AAAA", "b": "not data:"})
    assert longest_string_literal(text, "data:", opens_within=len(text)) == len('"DATA:image/png;base64,AAAA"')
    assert longest_string_literal('{"image_url": "data:AAA', "data:", opens_within=100) == 0  # never closed


def test_a_literal_opening_past_the_window_is_not_counted_nor_scanned_to():
    url = "data:image/png;base64," + "A" * 100
    text = '{"pad": "' + "x" * 50 + '", "image_url": "' + url + '"}'
    start = text.index('"data:')
    assert longest_string_literal(text, "data:", opens_within=start) == len(url) + 2
    assert longest_string_literal(text, "data:", opens_within=start - 1) == 0
    # Past the window, quotes are never even looked at: a million of them cost nothing.
    crowded = text + '""' * 1_000_000
    started = time.thread_time()
    assert longest_string_literal(crowded, "data:", opens_within=start) == len(url) + 2
    assert time.thread_time() - started < 0.05


@pytest.mark.parametrize(
    "text",
    [
        quadratic(9_000),  # 63 KB: froze the whole server 13 s through the old regex
        quadratic(20_000),  # 140 KB: 60 s
        quadratic(4_000_000),  # 28 MB, what the frame limit lets through: weeks
        '"data:' + '\\"' * 14_000_000,  # 28 MB of nothing but escapes
        '"data:' + "A" * 28_000_000,  # 28 MB never closed
    ],
    ids=["63KB", "140KB", "28MB", "28MB-escapes", "28MB-unclosed"],
)
def test_the_hostile_literal_costs_one_pass(text):
    started = time.thread_time()  # this thread's CPU: others' load on the machine does not count
    assert longest_string_literal(text, "data:", opens_within=65536) == 0
    spent = time.thread_time() - started
    assert spent < 0.5, f"{len(text):,} characters took {spent:.2f} s of CPU"


def test_a_28_mb_data_literal_is_measured_in_one_pass():
    url = "data:image/png;base64," + "AAAAAAAAAAAAAAA/" * 1_750_000  # 28 MB, a "/" in 64 as in base64
    text = '{"image_url": ' + json.dumps(url).replace("/", "\\/") + ', "boxes": []}'
    started = time.thread_time()
    assert longest_string_literal(text, "data:", opens_within=65536) == len(url) + 2 + url.count("/")
    assert time.thread_time() - started < 0.5


# --- lone surrogates ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, where",
    [
        ({"image_url": "http://h/\ud800.png"}, "image_url"),
        ({"prompts": [{"box": {}}, {"mask_input": {"id": "a\udfffb"}}]}, "prompts[1].mask_input.id"),
        ({"image_url": "x", "\udc80": 1}, "a key of the request"),
        ({"prompts": [{"\ud800": 1}]}, "a key of prompts[0]"),
        ("\ud800", "the request"),
        (["ok", ["\ud83d"]], "[1][0]"),
    ],
)
def test_a_lone_surrogate_is_found_and_named(value, where):
    assert lone_surrogate(value) == where


@pytest.mark.parametrize(
    "value", [{"image_url": "http://h/😀.png"}, json.loads('"\\ud83d\\ude00"'), {"é": ["ü", 1, None, 2.5]}, 7, None, ""]
)
def test_unicode_text_has_no_lone_surrogate(value):
    assert lone_surrogate(value) is None
