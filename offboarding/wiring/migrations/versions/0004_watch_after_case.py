"""the watch after a case: the recheck table (re-inventories due after completion)

Revision ID: 0004
Revises: 0003
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_STATUS = sa.Enum("DUE", "RUNNING", "CLEAN", "FOUND_AGAIN", "SKIPPED", name="recheckstatus")


def upgrade() -> None:
    op.create_table(
        "recheck",
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("case_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("day", sa.Float(), nullable=False),
        sa.Column("due_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("status", _STATUS, nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("claimed_by", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("claimed_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column("done_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column("follow_up_case_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["case_id"], ["case.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("case_id", "day"),
    )
    op.create_index("ix_recheck_case_id", "recheck", ["case_id"], unique=False)
    op.create_index("ix_recheck_due_at", "recheck", ["due_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_recheck_due_at", table_name="recheck")
    op.drop_index("ix_recheck_case_id", table_name="recheck")
    op.drop_table("recheck")
    _STATUS.drop(op.get_bind(), checkfirst=True)
