"""Hypothesis example counts per test tier.

The full suite (CI, `./scripts/test`) runs every property with its full count.
`./scripts/test --fast` loads the `fast` profile (`--hypothesis-profile=fast`):
a tenth of each count, at least FAST_FLOOR, so the quick tier still draws every
strategy but stays under 30 s; nothing is tested less in CI. Tests with their
own count write `settings(max_examples=examples(300))`; the rest take the
profile's max_examples.
"""

from __future__ import annotations

from hypothesis import settings

FAST_PROFILE = "fast"
FAST_FLOOR = 10
settings.register_profile(FAST_PROFILE, max_examples=FAST_FLOOR)


def examples(full: int) -> int:
    """`full` examples, or a tenth of them (at least FAST_FLOOR) under the fast profile."""
    if settings.get_current_profile_name() == FAST_PROFILE:
        return min(full, max(FAST_FLOOR, full // 10))
    return full
