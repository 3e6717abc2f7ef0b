"""ckeetcd.core.textcheck.refused_char: its isprintable() shortcut changes no answer."""

from __future__ import annotations

import sys
import unicodedata

from hypothesis import given
from hypothesis import strategies as st

from ckeetcd.core.textcheck import REFUSED_CATEGORIES, refused_char


def test_every_refused_category_is_one_isprintable_refuses() -> None:
    """The shortcut's premise, over every code point."""
    for code in range(sys.maxunicode + 1):
        c = chr(code)
        if unicodedata.category(c) in REFUSED_CATEGORIES:
            assert not c.isprintable(), f"U+{code:04X}"


@given(st.text(st.characters(codec=None), max_size=40))
def test_refused_exactly_when_a_character_is_of_a_refused_category(text: str) -> None:
    first = next((i for i, c in enumerate(text)
                  if unicodedata.category(c) in REFUSED_CATEGORIES), None)
    why = refused_char(text)
    assert (why is None) == (first is None), (text, why)
    if first is not None:
        assert why is not None and why.endswith(f"at index {first})"), (text, why)
