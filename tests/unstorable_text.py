"""Text values PostgreSQL cannot store, with the field message each must get."""

from __future__ import annotations

import pytest

UNSTORABLE_TEXT = pytest.mark.parametrize(
    ("value", "message"),
    [
        ("a\x00b", "Must not contain NUL characters."),
        ("a\ud83d", "Must not contain unpaired surrogates (such as \\ud800)."),
        (None, "This field cannot be null."),
    ],
    ids=["nul", "surrogate", "none"],
)
