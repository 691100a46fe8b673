"""one open case per employee (enforced), run recovery bookkeeping

Revision ID: 0002
Revises: 0001
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OPEN_CASE = sa.text("status NOT IN ('COMPLETED', 'REJECTED')")


def upgrade() -> None:
    with op.batch_alter_table("case", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("recovery_attempts", sa.Integer(), nullable=False, server_default="0")
        )
        batch_op.add_column(
            sa.Column("recovered_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True)
        )
    op.create_index(
        "uq_case_open_employee",
        "case",
        ["employee_id"],
        unique=True,
        sqlite_where=_OPEN_CASE,
        postgresql_where=_OPEN_CASE,
    )


def downgrade() -> None:
    op.drop_index("uq_case_open_employee", table_name="case")
    with op.batch_alter_table("case", schema=None) as batch_op:
        batch_op.drop_column("recovered_at")
        batch_op.drop_column("recovery_attempts")
