"""File roles (code, test, fixture, example, docs) for ``search_code``'s ``scope``.

``files.role`` is decided from the path when the file is stored (:func:`models.roles.file_role`);
the rows already indexed are classified here with the same function, so an existing index ranks
implementation first without re-indexing.

Revision ID: 0005
Revises: 0004 (relinked to 0004 at the merge)
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from models.roles import file_role

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("ALTER TABLE files ADD COLUMN role text NOT NULL DEFAULT 'code'")
    bind = op.get_bind()
    rows = bind.execute(sa.text("SELECT id, path FROM files")).all()
    updates = [{"id": row.id, "role": role} for row in rows if (role := file_role(row.path)) != "code"]
    if updates:
        bind.execute(sa.text("UPDATE files SET role = :role WHERE id = :id"), updates)


def downgrade() -> None:
    op.execute("ALTER TABLE files DROP COLUMN role")
