"""models.migrate.script_heads reads the migration heads without alembic, and agrees with alembic."""

from __future__ import annotations

from pathlib import Path

from alembic.script import ScriptDirectory

from models.migrate import alembic_config, script_heads


def test_the_heads_are_alembics_heads() -> None:
    assert script_heads() == frozenset(ScriptDirectory.from_config(alembic_config()).get_heads())


def test_branches_merges_and_unreadable_scripts(tmp_path: Path) -> None:
    def script(name: str, revision: str, down: str) -> None:
        (tmp_path / name).write_text(f'"""x"""\nrevision: str = {revision}\ndown_revision = {down}\n', encoding="utf-8")

    script("a.py", '"0001"', "None")
    script("b.py", '"0002"', '"0001"')
    script("c.py", "'0003'", "'0001'")  # a second branch off 0001: two heads
    assert script_heads(tmp_path) == {"0002", "0003"}
    script("d.py", '"0004"', '("0002", "0003")')  # a merge
    assert script_heads(tmp_path) == {"0004"}
    (tmp_path / "e.py").write_text("revision = make_id()\ndown_revision = '0004'\n", encoding="utf-8")
    assert script_heads(tmp_path) is None  # not plain literals: alembic decides
