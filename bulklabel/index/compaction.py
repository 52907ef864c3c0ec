"""When to merge segments: size-tiered, in the manner of Bentley and Saxe.

The plan reads only segment names (they carry their entry counts). Taking segments from
the smallest up, it keeps adding the next while that one is at most twice the size of
what is taken so far (anything under ``SMALL`` entries counts as ``SMALL``): so what is
left has sizes that at least triple from one to the next, and there are O(log n)
segments. An entry is rewritten O(log n) times over the index's life, and a small update
never rewrites a big segment: a segment of n entries is merged only together with n/2
entries or more. Past ``MAX_SEGMENTS``, the smallest are merged as well.
"""

from __future__ import annotations

from collections.abc import Sequence

SMALL = 4096          # entries (64 KiB): below this, merging costs next to nothing
MAX_SEGMENTS = 8


def plan(sizes: Sequence[tuple[str, int]], small: int = SMALL, max_segments: int = MAX_SEGMENTS) -> list[str]:
    """The names of the segments to merge into one (none, or two or more), from (name, entries)."""
    ordered = sorted(sizes, key=lambda item: (item[1], item[0]))
    if len(ordered) < 2:
        return []
    taken, total = 1, ordered[0][1]
    while taken < len(ordered) and ordered[taken][1] <= 2 * max(total, small):
        total += ordered[taken][1]
        taken += 1
    while len(ordered) - taken + 1 > max_segments:
        taken += 1
    return [name for name, _ in ordered[:taken]] if taken >= 2 else []
