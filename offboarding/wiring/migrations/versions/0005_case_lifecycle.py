"""case lifecycle: cancellation, urgent upgrade, reschedule, rehire

A cancelled case is closed (so a later termination opens a new case); an HR system's event id
no longer has to be unique (a rehire may bring the same stable id again); a case records when
it was upgraded to urgent and when its run had contained the leaver after that.

Revision ID: 0005
Revises: 0004
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BEFORE = (
    "SCHEDULED",
    "RECEIVED",
    "AWAITING_APPROVAL",
    "REVOKING",
    "AWAITING_ATTESTATION",
    "COMPLETED",
    "REJECTED",
    "NEEDS_ATTENTION",
)
_AFTER = (*_BEFORE, "CANCELLED")
_OPEN_BEFORE = sa.text("status NOT IN ('COMPLETED', 'REJECTED')")
_OPEN_AFTER = sa.text("status NOT IN ('COMPLETED', 'REJECTED', 'CANCELLED')")
# All migrations run in one transaction, and an index may neither cast an enum to text nor
# name an enum value added in the same transaction: on PostgreSQL an immutable function
# (comparing the names as text) is the index's condition.
_IS_OPEN_FUNCTION = """
CREATE OR REPLACE FUNCTION case_is_open(status casestatus) RETURNS boolean
LANGUAGE sql IMMUTABLE
AS $$ SELECT status::text NOT IN ('COMPLETED', 'REJECTED', 'CANCELLED') $$
"""


def _postgresql() -> bool:
    return op.get_bind().dialect.name == "postgresql"


def _open_case_index(where: sa.TextClause, postgresql_where: sa.TextClause) -> None:
    op.create_index(
        "uq_case_open_employee",
        "case",
        ["employee_id"],
        unique=True,
        sqlite_where=where,
        postgresql_where=postgresql_where,
    )


def upgrade() -> None:
    if _postgresql():
        op.execute("ALTER TYPE casestatus ADD VALUE IF NOT EXISTS 'CANCELLED'")
        op.execute(_IS_OPEN_FUNCTION)
    with op.batch_alter_table("case", schema=None) as batch_op:
        if not _postgresql():  # SQLite keeps the enum as a VARCHAR as long as its longest name
            batch_op.alter_column(
                "status",
                existing_type=sa.Enum(*_BEFORE, name="casestatus"),
                type_=sa.Enum(*_AFTER, name="casestatus"),
                existing_nullable=False,
            )
        batch_op.add_column(
            sa.Column("upgraded_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True)
        )
        batch_op.add_column(
            sa.Column("contained_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True)
        )
        batch_op.drop_index("ix_case_event_id")
        batch_op.create_index("ix_case_event_id", ["event_id"], unique=False)
    op.drop_index("uq_case_open_employee", table_name="case")
    _open_case_index(_OPEN_AFTER, sa.text("case_is_open(status)"))


def downgrade() -> None:
    op.drop_index("uq_case_open_employee", table_name="case")
    _open_case_index(_OPEN_BEFORE, _OPEN_BEFORE)
    with op.batch_alter_table("case", schema=None) as batch_op:
        batch_op.drop_index("ix_case_event_id")
        batch_op.create_index("ix_case_event_id", ["event_id"], unique=True)
        batch_op.drop_column("contained_at")
        batch_op.drop_column("upgraded_at")
    if _postgresql():  # the enum keeps CANCELLED: PostgreSQL cannot drop an enum value
        op.execute("DROP FUNCTION IF EXISTS case_is_open(casestatus)")
