"""ListDeadLetters' page token: where the last page ended, seq and delivery id."""

from __future__ import annotations

from kizuna_profilesync.api import page_after


def test_a_token_names_the_last_dead_letter_shown() -> None:
    # A delivery id may hold colons of its own; the seq is what comes before the first.
    assert page_after("12:consent:3~1/c-1") == (12, "consent:3~1/c-1")


def test_anything_else_starts_at_the_beginning() -> None:
    for token in ("", "12", "x:y", ":a", "-1:a"):
        assert page_after(token) == (0, ""), token
