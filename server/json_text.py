"""A client's JSON text, looked at where `json.loads` does not look: pure, and linear in its size.

Before parsing, `string_literals` finds where the string literals lie in the
raw text, in one pass that never goes back, so that a message's size can be
judged before the parser (which costs many times the size) ever runs.
After parsing, `lone_surrogate` finds a string that is not Unicode text: JSON
lets `\\ud800` stand alone, but such a string cannot be encoded as UTF-8, so
it could be neither sent on, nor stored, nor logged.
"""

from __future__ import annotations

import re
from typing import Any, Iterator

# The rest of a string literal after its opening quote, through its closing
# quote: runs of plain characters, each escape a backslash and the character
# after it. Possessive (`*+`), so a literal that never closes fails at the end
# of the text without giving anything back: one pass, never a retry.
_STRING_REST = re.compile(r'[^"\\]*+(?:\\.[^"\\]*+)*+"', re.DOTALL)
_SURROGATE = re.compile("[\ud800-\udfff]")


def string_literals(text: str) -> Iterator[tuple[int, int]]:
    """(start, end) of each string literal in `text`, in order: `text[start:end]` is the literal, quotes included.

    Outside a literal, any `"` opens one; inside, a backslash escapes the next
    character and the first unescaped `"` closes it. For valid JSON these are
    exactly the parser's strings, keys included. A literal left open ends the
    scan. A caller may stop early: what is not yet asked for is not scanned.
    """
    find, rest = text.find, _STRING_REST.match
    position = 0
    while (start := find('"', position)) >= 0:
        literal = rest(text, start + 1)
        if literal is None:
            return
        position = literal.end()
        yield start, position


def longest_string_literal(text: str, prefix: str, *, opens_within: int) -> int:
    """The length, quotes included, of the longest literal that starts with `prefix` (lowercase; any case matches).

    0 when there is none. Only literals that open within the first
    `opens_within` characters count; the scan stops at the first one past them.
    """
    longest = 0
    for start, end in string_literals(text):
        if start > opens_within:
            break
        if text[start + 1 : start + 1 + len(prefix)].lower() == prefix:
            longest = max(longest, end - start)
    return longest


def lone_surrogate(value: Any) -> str | None:
    """Where a parsed JSON value holds a string (or key) with a lone surrogate, e.g. `image_url`; None if nowhere."""
    pending: list[tuple[tuple | None, Any]] = [(None, value)]  # (path, item): a path is (parent's path, key or index)
    while pending:
        path, item = pending.pop()
        if type(item) is str:
            if _is_not_text(item):
                return _name(path) or "the request"
        elif type(item) is dict:
            if any(_is_not_text(key) for key in item):
                return f"a key of {_name(path) or 'the request'}"
            pending += [((path, key), child) for key, child in item.items() if type(child) in _MAY_HOLD_TEXT]
        elif type(item) is list:
            pending += [((path, index), child) for index, child in enumerate(item) if type(child) in _MAY_HOLD_TEXT]
    return None


_MAY_HOLD_TEXT = (str, dict, list)  # what json.loads makes; numbers, booleans and null hold no text


def _is_not_text(string: str) -> bool:
    return not string.isascii() and _SURROGATE.search(string) is not None


def _name(path: tuple | None) -> str:
    """`prompts[0].mask_input.id` for the path ((((None, "prompts"), 0), "mask_input"), "id")."""
    steps = []
    while path is not None:
        path, step = path
        steps.append(f"[{step}]" if type(step) is int else f".{step}")
    return "".join(reversed(steps)).removeprefix(".")
