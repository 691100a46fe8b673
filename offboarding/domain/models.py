"""Database tables: cases, plans, approval requests and decisions, steps, the audit log."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from enum import StrEnum

from sqlalchemy import Column, Index, Text, UniqueConstraint, insert, text
from sqlmodel import Field, Session, SQLModel


def insert_now(session: Session, row: SQLModel) -> None:
    """Write `row` at once, in one INSERT, without the session's unit of work (a tenth of
    the work on the intake's hot path). The row's own object stays detached; a duplicate
    key raises IntegrityError here, as a flush would."""
    table = row.__table__  # type: ignore[attr-defined]
    # the statement is the same for every row of the table: compiled once, then cached
    session.connection().execute(
        insert(table), {c.name: getattr(row, c.name) for c in table.columns}
    )


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(moment: datetime) -> datetime:
    """Aware UTC; a naive value is taken to be UTC already."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def new_id() -> str:
    return uuid.uuid4().hex


class CaseStatus(StrEnum):
    SCHEDULED = "scheduled"  # waiting for the last working day
    RECEIVED = "received"  # run starting
    AWAITING_APPROVAL = "awaiting_approval"
    REVOKING = "revoking"
    AWAITING_ATTESTATION = "awaiting_attestation"  # revoked; manual steps not all attested
    COMPLETED = "completed"
    REJECTED = "rejected"
    NEEDS_ATTENTION = "needs_attention"
    CANCELLED = "cancelled"  # withdrawn by HR before anything was revoked


TERMINAL_STATUSES = frozenset({CaseStatus.COMPLETED, CaseStatus.REJECTED, CaseStatus.CANCELLED})
# The database stores enum names; a case is open until it reaches one of these.
_OPEN_CASE = text("status NOT IN ('COMPLETED', 'REJECTED', 'CANCELLED')")
# PostgreSQL: the same test as an immutable function (migration 0005): an index may not cast
# an enum to text, nor name an enum value added in the same transaction
_OPEN_CASE_PG = text("case_is_open(status)")


class Case(SQLModel, table=True):
    """One leaver's offboarding, from the HR event to verified revocation."""

    __table_args__ = (
        # at most one open case per employee, even when two events race
        Index(
            "uq_case_open_employee",
            "employee_id",
            unique=True,
            sqlite_where=_OPEN_CASE,
            postgresql_where=_OPEN_CASE_PG,
        ),
    )

    id: str = Field(default_factory=new_id, primary_key=True)
    # the event that opened it; not unique: a rehire may reuse an HR system's stable id
    event_id: str = Field(index=True, max_length=200)
    employee_id: str = Field(index=True, max_length=100)
    employee_email: str = Field(max_length=320)
    display_name: str = Field(max_length=300)
    manager_id: str | None = Field(default=None, max_length=100)
    requested_by: str = Field(max_length=100)
    last_working_day: date
    urgent: bool = False
    occurred_at: datetime
    status: CaseStatus = Field(default=CaseStatus.RECEIVED)
    status_detail: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    flow_run_id: str | None = Field(default=None, max_length=64)
    # automatic recoveries of a crashed or failed run (bounded; see the dispatcher)
    recovery_attempts: int = 0
    recovered_at: datetime | None = None
    # an urgent event for the open case (instant dismissal after a normal notice), and
    # when the run had contained the leaver after it (the dispatcher wakes it until then)
    upgraded_at: datetime | None = None
    contained_at: datetime | None = None
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class PlanStatus(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    SUPERSEDED = "superseded"


class RevocationPlanRecord(SQLModel, table=True):
    """A stored revocation plan: its canonical JSON and the SHA-256 over it."""

    __tablename__ = "revocation_plan"
    __table_args__ = (UniqueConstraint("case_id", "version"),)

    id: str = Field(default_factory=new_id, primary_key=True)
    case_id: str = Field(foreign_key="case.id", index=True)
    version: int
    plan_hash: str = Field(max_length=64, index=True)
    canonical: str = Field(sa_column=Column(Text, nullable=False))
    status: PlanStatus = Field(default=PlanStatus.PENDING)
    created_at: datetime = Field(default_factory=utcnow)


class ApprovalRequest(SQLModel, table=True):
    """One emailed link: a case, one approver, one plan hash; usable once."""

    __tablename__ = "approval_request"
    __table_args__ = (UniqueConstraint("plan_id", "approver_id"),)

    id: str = Field(default_factory=new_id, primary_key=True)
    case_id: str = Field(foreign_key="case.id", index=True)
    plan_id: str = Field(foreign_key="revocation_plan.id", index=True)
    plan_hash: str = Field(max_length=64)
    approver_id: str = Field(max_length=100)
    approver_email: str = Field(max_length=320)
    language: str = Field(default="en", max_length=5)
    created_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime
    notified_at: datetime | None = None  # set once the email went out
    used_at: datetime | None = None


class Decision(StrEnum):
    APPROVE = "approve"
    REJECT = "reject"


class ApprovalDecision(SQLModel, table=True):
    """A second manager's decision on exactly one plan hash."""

    __tablename__ = "approval_decision"

    id: str = Field(default_factory=new_id, primary_key=True)
    case_id: str = Field(foreign_key="case.id", index=True)
    request_id: str = Field(foreign_key="approval_request.id", unique=True)
    plan_hash: str = Field(max_length=64)
    approver_id: str = Field(max_length=100)
    decision: Decision
    reason: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    decided_at: datetime = Field(default_factory=utcnow)


class StepStatus(StrEnum):
    DONE = "done"
    ALREADY_DONE = "already_done"
    DRY_RUN = "dry_run"
    FAILED = "failed"


class RevocationStep(SQLModel, table=True):
    """What happened to one grant of an approved plan (latest attempt wins)."""

    __tablename__ = "revocation_step"
    __table_args__ = (UniqueConstraint("plan_id", "grant_key"),)

    id: str = Field(default_factory=new_id, primary_key=True)
    case_id: str = Field(foreign_key="case.id", index=True)
    plan_id: str = Field(foreign_key="revocation_plan.id")
    grant_key: str = Field(max_length=1000)
    label: str = Field(max_length=1000)
    status: StepStatus
    detail: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    attempted_at: datetime = Field(default_factory=utcnow)


class Attestation(SQLModel, table=True):
    """One manual step of an approved plan, assigned to a person who attests it once."""

    __tablename__ = "attestation"
    __table_args__ = (UniqueConstraint("plan_id", "grant_key"),)

    id: str = Field(default_factory=new_id, primary_key=True)
    case_id: str = Field(foreign_key="case.id", index=True)
    plan_id: str = Field(foreign_key="revocation_plan.id")
    plan_hash: str = Field(max_length=64)
    grant_key: str = Field(max_length=1000)
    label: str = Field(max_length=1000)
    assignee_id: str = Field(max_length=100)
    assignee_email: str = Field(max_length=320)
    language: str = Field(default="en", max_length=5)
    created_at: datetime = Field(default_factory=utcnow)
    due_at: datetime  # past this, unattested: the case needs attention
    notified_at: datetime | None = None  # set once the email went out
    attested_at: datetime | None = None
    attested_by: str | None = Field(default=None, max_length=100)
    remark: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))


class AuditEvent(SQLModel, table=True):
    """Append-only, hash-chained: each event stores the hash of the one before."""

    __tablename__ = "audit_event"

    seq: int = Field(primary_key=True)  # 1, 2, 3 ... assigned by the chain, never reused
    at: datetime
    case_id: str | None = Field(default=None, index=True, max_length=64)
    actor: str = Field(max_length=300)
    action: str = Field(max_length=100, index=True)
    outcome: str = Field(max_length=50)
    details: str = Field(sa_column=Column(Text, nullable=False))  # canonical JSON
    details_digest: str = Field(max_length=64)  # SHA-256 of details; the chain covers this
    erased: bool = False  # details removed by the retention policy; the digest still chains
    once_key: str | None = Field(default=None, unique=True, max_length=300)
    prev_hash: str = Field(max_length=64, unique=True)
    hash: str = Field(max_length=64)


# -- the watch after a case (see offboarding.domain.watch) ---------------------------------


class RecheckStatus(StrEnum):
    DUE = "due"  # waits for its moment (or for the next pass, after a system failed)
    RUNNING = "running"  # claimed by one oversight run
    CLEAN = "clean"  # nothing found again
    FOUND_AGAIN = "found_again"  # reported; a follow-up case takes it away
    SKIPPED = "skipped"  # the case's personal data was erased before the recheck was due


class Recheck(SQLModel, table=True):
    """One re-inventory of a completed case's leaver, `day` days after completion."""

    __tablename__ = "recheck"
    __table_args__ = (UniqueConstraint("case_id", "day"),)

    id: str = Field(default_factory=new_id, primary_key=True)
    case_id: str = Field(foreign_key="case.id", index=True)
    day: float
    due_at: datetime = Field(index=True)
    status: RecheckStatus = Field(default=RecheckStatus.DUE)
    attempts: int = 0  # passes that claimed it (a failing system is retried every pass)
    claimed_by: str | None = Field(default=None, max_length=64)  # the claiming pass
    claimed_at: datetime | None = None
    done_at: datetime | None = None
    follow_up_case_id: str | None = Field(default=None, max_length=64)
    detail: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))


# --- deputies (approvals/deputies.py) --------------------------------------------------------


class Deputyship(SQLModel, table=True):
    """A manager's deputy for a period: asked for approvals with the manager while it is
    active, and counted as one with them (a manager and their own deputy are one voice)."""

    __tablename__ = "deputyship"

    id: str = Field(default_factory=new_id, primary_key=True)
    manager_id: str = Field(max_length=100, index=True)
    deputy_id: str = Field(max_length=100, index=True)
    starts_at: datetime
    ends_at: datetime  # not included; an early end sets `ended_at` instead
    named_by: str = Field(max_length=300)
    created_at: datetime = Field(default_factory=utcnow)
    ended_at: datetime | None = None
    ended_by: str | None = Field(default=None, max_length=300)


# --- end of deputies -------------------------------------------------------------------------
