"""deputies: a manager's deputy for a period

Revision ID: 0006
Revises: 0005
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "deputyship",
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("manager_id", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
        sa.Column("deputy_id", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
        sa.Column("starts_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("ends_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("named_by", sqlmodel.sql.sqltypes.AutoString(length=300), nullable=False),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("ended_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column("ended_by", sqlmodel.sql.sqltypes.AutoString(length=300), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_deputyship_manager_id", "deputyship", ["manager_id"], unique=False)
    op.create_index("ix_deputyship_deputy_id", "deputyship", ["deputy_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_deputyship_deputy_id", table_name="deputyship")
    op.drop_index("ix_deputyship_manager_id", table_name="deputyship")
    op.drop_table("deputyship")
