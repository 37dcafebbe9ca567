"""Watched repositories: the watch is stored with the repository, so it survives a server restart.

``watched``: the repository is kept fresh on every save by the server that holds the watch lease
(server/watcher.py). ``watch_caught_up_at``: end of the last job the watch started that completed
(the index matched the disk as of that job's scan). ``watch_error``: why the watch cannot keep it
fresh right now (directory gone, broker down), cleared by the next job that completes.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("ALTER TABLE repositories ADD COLUMN watched boolean NOT NULL DEFAULT false")
    op.execute("ALTER TABLE repositories ADD COLUMN watch_caught_up_at timestamptz")
    op.execute("ALTER TABLE repositories ADD COLUMN watch_error text")


def downgrade() -> None:
    op.execute("ALTER TABLE repositories DROP COLUMN watch_error")
    op.execute("ALTER TABLE repositories DROP COLUMN watch_caught_up_at")
    op.execute("ALTER TABLE repositories DROP COLUMN watched")
