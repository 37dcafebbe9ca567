"""``plan_embedder_calls``: how the embed stage cuts a batch's texts into embedder calls."""

from __future__ import annotations

import pytest

from actors.pipeline import plan_embedder_calls


@pytest.mark.parametrize(
    ("count", "max_size", "sizes"),
    [(0, 64, []), (10, 64, [10]), (64, 64, [64]), (100, 64, [50, 50]), (129, 64, [43, 43, 43])],
)
def test_embedder_calls_are_equal_longest_first_and_cover_every_text(
    count: int, max_size: int, sizes: list[int]
) -> None:
    items = [(bytes([n % 256, n // 256]), "x" * ((n * 37) % 301)) for n in range(count)]
    calls = plan_embedder_calls(items, max_size)
    assert [len(call) for call in calls] == sizes
    flat = [item for call in calls for item in call]
    assert sorted(flat) == sorted(items)
    lengths = [len(body) for _, body in flat]
    assert lengths == sorted(lengths, reverse=True)
