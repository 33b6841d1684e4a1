"""the audit log says why a request was refused (the message its user was shown)

Revision ID: audit_reason
Revises: leases
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "audit_reason"
down_revision: str | None = "leases"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("audit_log") as b:
        b.add_column(sa.Column("reason", sa.String(length=500), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("audit_log") as b:
        b.drop_column("reason")
