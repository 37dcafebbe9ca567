"""``actors.pipeline.read_and_chunk``: reading, hashing and chunking one batch's files."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from actors.messages import BatchPayload, ChunkRecord, FileRecord, NotIndexed, decode_payload, encode_payload
from actors.pipeline import read_and_chunk
from models.settings import Settings


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "data", max_file_bytes=10_000, chunk_lines=5, chunk_overlap_lines=1, chunk_max_chars=200
    )


def _run(root: Path, settings: Settings, files: dict[str, bytes]) -> BatchPayload:
    for relative, content in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    entries = [{"path": relative, "size": len(content)} for relative, content in files.items()]
    return read_and_chunk(root, entries, settings)


def _only_file(result: BatchPayload) -> FileRecord:
    assert result.skipped == () and result.failed == ()
    (item,) = result.files
    return item


def test_text_file_is_hashed_chunked_and_described(tmp_path: Path, settings: Settings) -> None:
    raw = b"def greet(name):\n    return 'hi ' + name\n"
    item = _only_file(_run(tmp_path, settings, {"pkg/greet.py": raw}))
    assert item.path == "pkg/greet.py"
    assert item.hash == hashlib.sha256(raw).hexdigest()
    assert item.language == "python"
    assert item.size == len(raw)
    assert item.lines == 2
    assert item.chunks == (
        ChunkRecord(1, 2, "greet", "def greet(name):\n    return 'hi ' + name", "pkg/greet.py · def greet"),
    )


def test_payload_is_plain_json_data(tmp_path: Path, settings: Settings) -> None:
    import json

    result = _run(tmp_path, settings, {"a.py": b"x = 1\n" * 30, "b.png.txt": b"\x00\x01"})
    wire = encode_payload(result)
    assert json.loads(json.dumps(wire)) == wire
    assert decode_payload(json.loads(json.dumps(wire))) == result


@pytest.mark.parametrize(
    ("raw", "lines"),
    [
        (b"", 0),
        (b"one", 1),
        (b"one\n", 1),
        (b"one\ntwo", 2),
        (b"one\ntwo\n", 2),
        (b"\n", 1),
        (b"\n\n\n", 3),
        (b"a\r\nb\r\nc\r\n", 3),
    ],
)
def test_line_counts(tmp_path: Path, settings: Settings, raw: bytes, lines: int) -> None:
    item = _only_file(_run(tmp_path, settings, {"f.txt": raw}))
    assert item.lines == lines


def test_chunk_ranges_stay_within_the_counted_lines(tmp_path: Path, settings: Settings) -> None:
    raw = "".join(f"line_{i} = {i}\n" if i % 7 else "\n" for i in range(1, 58)).encode()
    item = _only_file(_run(tmp_path, settings, {"m.py": raw}))
    assert item.lines == 57
    assert item.chunks, "a file with code has chunks"
    assert all(1 <= start <= end <= 57 for start, end, _symbol, _text, _header in item.chunks)
    assert item.chunks[-1].end_line == 57


def test_chunk_ranges_stay_within_the_counted_lines_with_other_line_breaks(tmp_path: Path, settings: Settings) -> None:
    raw = b"a = 1\rb = 2\rc = 3\r"
    item = _only_file(_run(tmp_path, settings, {"classic_mac.py": raw}))
    assert all(end <= item.lines for _start, end, _symbol, _text, _header in item.chunks)


def test_nul_byte_marks_a_file_binary(tmp_path: Path, settings: Settings) -> None:
    deep = b"y = 2\n" * 1300 + b"\x00"  # NUL past the first line, still within the sniffed 8 KiB
    result = _run(tmp_path, settings, {"data.py": b"x = 1\n\x00\x00", "deep.txt": deep, "ok.py": b"y = 2\n"})
    assert result.skipped == (NotIndexed("data.py", "binary"), NotIndexed("deep.txt", "binary"))
    assert [item.path for item in result.files] == ["ok.py"]
    assert result.failed == ()


def test_nul_byte_past_the_8_kib_sniff_is_binary_too(tmp_path: Path, settings: Settings) -> None:
    # sindresorhus/got's media/logo.ai: text up front, a NUL further on; PostgreSQL text refuses NUL,
    # so indexing it failed write_batch ten times and every file of the batch with it.
    late = b"%PDF-1.5 text up front\n" * 400 + b"\x00 binary part"
    assert len(late) > 8192
    result = _run(tmp_path, settings, {"logo.ai.txt": late, "ok.py": b"y = 2\n"})
    assert result.skipped == (NotIndexed("logo.ai.txt", "binary"),)
    assert [item.path for item in result.files] == ["ok.py"]
    assert all("\x00" not in chunk.content for chunk in result.chunks)


def test_invalid_utf8_is_still_indexed_with_replacement_characters(tmp_path: Path, settings: Settings) -> None:
    raw = b"name = 'caf\xe9'\nother = '\xff\xfe ok'\n"
    item = _only_file(_run(tmp_path, settings, {"latin1.py": raw}))
    assert item.hash == hashlib.sha256(raw).hexdigest()  # of the bytes, not of the decoded text
    assert item.size == len(raw)
    assert item.lines == 2
    (chunk,) = item.chunks
    assert chunk.content == "name = 'caf\ufffd'\nother = '\ufffd\ufffd ok'"


def test_deleted_file_is_reported_as_failed(tmp_path: Path, settings: Settings) -> None:
    (tmp_path / "here.py").write_bytes(b"x = 1\n")
    entries = [{"path": "gone.py", "size": 10}, {"path": "here.py", "size": 6}]
    result = read_and_chunk(tmp_path, entries, settings)
    assert result.failed == (NotIndexed("gone.py", "deleted since the scan"),)
    assert [item.path for item in result.files] == ["here.py"]
    assert result.skipped == ()


def test_unreadable_entry_is_reported_as_failed_not_raised(tmp_path: Path, settings: Settings) -> None:
    (tmp_path / "now_a_dir.py").mkdir()
    result = read_and_chunk(tmp_path, [{"path": "now_a_dir.py", "size": 3}], settings)
    assert result.files == ()
    ((path, reason),) = result.failed
    assert path == "now_a_dir.py"
    assert reason.startswith("unreadable")


def test_file_grown_past_the_limit_is_skipped_as_too_large(tmp_path: Path, settings: Settings) -> None:
    result = _run(tmp_path, settings, {"grew.py": b"a" * 10_001, "fits.py": b"a" * 10_000})
    assert result.skipped == (NotIndexed("grew.py", "too large"),)
    assert [item.path for item in result.files] == ["fits.py"]


def test_blank_file_is_indexed_with_no_chunks(tmp_path: Path, settings: Settings) -> None:
    item = _only_file(_run(tmp_path, settings, {"empty.py": b"\n\n   \n"}))
    assert item.chunks == ()
    assert item.lines == 3


def test_chunks_use_the_settings(tmp_path: Path, settings: Settings) -> None:
    raw = "".join(f"v{i} = {i}\n" for i in range(1, 21)).encode()  # 20 dense lines, no cut points
    item = _only_file(_run(tmp_path, settings, {"v.py": raw}))
    ranges = [(start, end) for start, end, _symbol, _text, _header in item.chunks]
    assert ranges == [(1, 5), (5, 9), (9, 13), (13, 17), (17, 20)]  # window 5, overlap 1
    assert all(len(chunk.content) <= 200 for chunk in item.chunks)


def test_order_of_files_is_preserved(tmp_path: Path, settings: Settings) -> None:
    files = {f"d/{name}.py": b"x = 1\n" for name in ["zz", "aa", "mm"]}
    result = _run(tmp_path, settings, files)
    assert [item.path for item in result.files] == ["d/zz.py", "d/aa.py", "d/mm.py"]
