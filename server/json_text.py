"""A client's JSON text, looked at before `json.loads` runs: pure, and linear in its size.

Before parsing, `string_literals` finds where the string literals lie in the
raw text, in one pass that never goes back, so that a message's size can be
judged before the parser (which costs many times the size) ever runs.
"""

from __future__ import annotations

import re
from typing import Iterator

# The rest of a string literal after its opening quote, through its closing
# quote: runs of plain characters, each escape a backslash and the character
# after it. Possessive (`*+`), so a literal that never closes fails at the end
# of the text without giving anything back: one pass, never a retry.
_STRING_REST = re.compile(r'[^"\\]*+(?:\\.[^"\\]*+)*+"', re.DOTALL)


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

