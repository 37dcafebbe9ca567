"""``models.ledger.split_into_batches``: batches bounded by file count and bytes, order kept."""

from __future__ import annotations

from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from models.ledger import PlannedBatch, split_into_batches


def _flatten(batches: list[PlannedBatch]) -> list[tuple[str, int]]:
    return [(item["path"], item["size"]) for batch in batches for item in batch.files]


def test_no_files_gives_no_batches() -> None:
    assert split_into_batches([], max_files=10, max_bytes=1000) == []


def test_bounded_by_file_count() -> None:
    files = [(f"f{i}.py", 1) for i in range(7)]
    batches = split_into_batches(files, max_files=3, max_bytes=1_000_000)
    assert [len(b.files) for b in batches] == [3, 3, 1]
    assert [b.byte_count for b in batches] == [3, 3, 1]
    assert _flatten(batches) == files


def test_bounded_by_bytes() -> None:
    files = [("a", 400), ("b", 400), ("c", 300), ("d", 100), ("e", 1)]
    batches = split_into_batches(files, max_files=100, max_bytes=1000)
    assert [[item["path"] for item in b.files] for b in batches] == [["a", "b"], ["c", "d", "e"]]
    assert [b.byte_count for b in batches] == [800, 401]


def test_batch_may_reach_max_bytes_exactly() -> None:
    batches = split_into_batches([("a", 600), ("b", 400), ("c", 1)], max_files=100, max_bytes=1000)
    assert [b.byte_count for b in batches] == [1000, 1]


def test_a_file_larger_than_max_bytes_gets_its_own_batch() -> None:
    files = [("small1", 10), ("small2", 10), ("huge", 5000), ("small3", 10)]
    batches = split_into_batches(files, max_files=100, max_bytes=1000)
    assert [[item["path"] for item in b.files] for b in batches] == [["small1", "small2"], ["huge"], ["small3"]]
    assert batches[1].byte_count == 5000


def test_consecutive_oversized_files_are_each_alone() -> None:
    batches = split_into_batches([("h1", 2000), ("h2", 3000)], max_files=100, max_bytes=1000)
    assert [[item["path"] for item in b.files] for b in batches] == [["h1"], ["h2"]]


def test_files_are_plain_path_and_size_records() -> None:
    (batch,) = split_into_batches([("src/x.py", 12)], max_files=5, max_bytes=100)
    assert batch.files == [{"path": "src/x.py", "size": 12}]
    assert batch.byte_count == 12


@hsettings(max_examples=300, deadline=None, database=None)
@given(
    sizes=st.lists(st.integers(min_value=0, max_value=5000), max_size=200),
    max_files=st.integers(min_value=1, max_value=30),
    max_bytes=st.integers(min_value=1, max_value=4000),
)
def test_property_batches_partition_the_files_in_order_within_bounds(
    sizes: list[int], max_files: int, max_bytes: int
) -> None:
    files = [(f"file_{i:04d}", size) for i, size in enumerate(sizes)]
    batches = split_into_batches(files, max_files=max_files, max_bytes=max_bytes)
    # Every file in exactly one batch, order preserved.
    assert _flatten(batches) == files
    for batch in batches:
        assert batch.files, "no empty batches"
        assert 1 <= len(batch.files) <= max_files
        assert batch.byte_count == sum(item["size"] for item in batch.files)
        # Over the byte bound only when a single file is itself over it.
        if batch.byte_count > max_bytes:
            assert len(batch.files) == 1
    # Greedy: a batch is closed only when the next file would not fit.
    for current, following in zip(batches, batches[1:], strict=False):
        first = following.files[0]["size"]
        assert len(current.files) == max_files or current.byte_count + first > max_bytes
