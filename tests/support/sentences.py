"""What a person reads when something stops: one sentence on one line."""

from __future__ import annotations

import re


def assert_one_sentence(message: str) -> None:
    """One line, ending with a full stop, with no sentence break inside (paths and URLs may hold dots)."""
    assert "\n" not in message.strip(), message
    assert message.strip().endswith("."), message
    assert not re.search(r"[.!?] [A-Z]", message), f"more than one sentence: {message}"
