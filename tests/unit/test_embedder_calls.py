"""``plan_embedder_calls``: how the embed stage cuts a batch's texts into embedder calls."""

from __future__ import annotations

import pytest

from actors.pipeline import next_call_size, plan_embedder_calls
from actors.resources import EMBED_CALL_TARGET_SECONDS, EmbedPace


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


@pytest.mark.parametrize(
    ("remaining", "limit", "size"), [(100, 64, 50), (64, 64, 64), (10, 64, 10), (129, 64, 43), (0, 64, 0), (5, 16, 5)]
)
def test_the_next_call_keeps_the_remaining_calls_equal(remaining: int, limit: int, size: int) -> None:
    assert next_call_size(remaining, limit) == size


def test_calls_shrink_to_the_target_time_on_a_slow_embedder_and_stay_whole_on_a_fast_one() -> None:
    pace = EmbedPace()
    assert pace.call_size(64) == 16  # nothing measured yet: one forward pass, to measure soon
    pace.observe(64, 64 * 0.02)  # 50 texts/s: 64 texts in 1.3 s, under the target
    assert pace.call_size(64) == 64
    slow = EmbedPace()
    slow.observe(64, 64 * 0.1)  # 10 texts/s (a shared machine): 64 texts would take 6.4 s
    assert slow.call_size(64) == int(EMBED_CALL_TARGET_SECONDS / 0.1) == 30
    slow.observe(64, 64 * 0.5)  # slower still: smoothed (0.22 s/text), never below a forward pass
    assert slow.call_size(64) == 16
    assert slow.call_size(8) == 8  # nor above the setting
