"""attested manual steps: the attestation table and the case status that waits for them

Revision ID: 0003
Revises: 0002
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


_BEFORE = (
    "SCHEDULED",
    "RECEIVED",
    "AWAITING_APPROVAL",
    "REVOKING",
    "COMPLETED",
    "REJECTED",
    "NEEDS_ATTENTION",
)
_AFTER = (*_BEFORE[:4], "AWAITING_ATTESTATION", *_BEFORE[4:])


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TYPE casestatus ADD VALUE IF NOT EXISTS 'AWAITING_ATTESTATION'")
    else:  # SQLite keeps the enum as a VARCHAR as long as its longest name
        with op.batch_alter_table("case", schema=None) as batch_op:
            batch_op.alter_column(
                "status",
                existing_type=sa.Enum(*_BEFORE, name="casestatus"),
                type_=sa.Enum(*_AFTER, name="casestatus"),
                existing_nullable=False,
            )
    op.create_table(
        "attestation",
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("case_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("plan_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("plan_hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("grant_key", sqlmodel.sql.sqltypes.AutoString(length=1000), nullable=False),
        sa.Column("label", sqlmodel.sql.sqltypes.AutoString(length=1000), nullable=False),
        sa.Column("assignee_id", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
        sa.Column("assignee_email", sqlmodel.sql.sqltypes.AutoString(length=320), nullable=False),
        sa.Column("language", sqlmodel.sql.sqltypes.AutoString(length=5), nullable=False),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("due_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("notified_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column("attested_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column("attested_by", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=True),
        sa.Column("remark", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["case_id"], ["case.id"]),
        sa.ForeignKeyConstraint(["plan_id"], ["revocation_plan.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("plan_id", "grant_key"),
    )
    op.create_index("ix_attestation_case_id", "attestation", ["case_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_attestation_case_id", table_name="attestation")
    op.drop_table("attestation")
