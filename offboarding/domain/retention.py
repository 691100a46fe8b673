"""The retention policy: personal data of closed cases is kept for a bounded time.

After `retention_days`, a completed or rejected case keeps only what proves that the
offboarding happened as required: the HR employee id, dates, statuses, plan
fingerprints, who decided (by employee id) and the audit chain. Names, email
addresses, directory names of the leaver, plan contents, reasons and the
event details are erased; the outbox copies of its emails are deleted.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from offboarding.domain import audit
from offboarding.domain.models import (
    TERMINAL_STATUSES,
    ApprovalDecision,
    ApprovalRequest,
    Case,
    RevocationPlanRecord,
    RevocationStep,
    as_utc,
)

ERASED = "[erased]"


@dataclass(frozen=True)
class RetentionReport:
    cases: list[str]
    audit_events: int
    outbox_files: int


def due_cases(engine: Engine, *, cutoff: datetime) -> list[Case]:
    """Closed cases last changed before the cutoff, not yet erased."""
    with Session(engine, expire_on_commit=False) as session:
        found = session.exec(
            select(Case).where(
                col(Case.status).in_(list(TERMINAL_STATUSES)),
                Case.updated_at < cutoff,
                Case.display_name != ERASED,
            )
        ).all()
    return list(found)


def _erase_case(session: Session, case: Case) -> None:
    case.display_name = ERASED
    case.employee_email = ERASED
    case.status_detail = ""
    session.add(case)
    for plan in session.exec(
        select(RevocationPlanRecord).where(RevocationPlanRecord.case_id == case.id)
    ):
        plan.canonical = "{}"
        session.add(plan)
    for request in session.exec(select(ApprovalRequest).where(ApprovalRequest.case_id == case.id)):
        request.approver_email = ERASED
        session.add(request)
    for decision in session.exec(
        select(ApprovalDecision).where(ApprovalDecision.case_id == case.id)
    ):
        decision.reason = ERASED if decision.reason else ""
        session.add(decision)
    for step in session.exec(select(RevocationStep).where(RevocationStep.case_id == case.id)):
        step.label = ERASED
        step.detail = ""
        session.add(step)


def apply_retention(
    engine: Engine, *, retention_days: int, now: datetime, outbox: Path | None = None
) -> RetentionReport:
    """Erase personal data of closed cases older than the retention period."""
    cutoff = as_utc(now) - timedelta(days=retention_days)
    erased_events = 0
    cases = due_cases(engine, cutoff=cutoff)
    for case in cases:
        with Session(engine) as session:
            stored = session.get(Case, case.id)
            if stored is None:
                continue
            _erase_case(session, stored)
            session.commit()
        erased_events += audit.erase_details(engine, case.id)
    files = 0
    if outbox is not None and outbox.is_dir():
        for path in outbox.glob("*.eml"):
            if path.stat().st_mtime < cutoff.timestamp():
                path.unlink(missing_ok=True)
                files += 1
    if cases or files:
        audit.record(
            engine,
            action="retention.applied",
            actor="service",
            details={
                "cases": [c.id for c in cases],
                "retention_days": retention_days,
                "outbox_files_deleted": files,
            },
        )
    return RetentionReport([c.id for c in cases], erased_events, files)


def erased_with_run(engine: Engine) -> list[tuple[str, str | None]]:
    """(case id, flow run id) of erased cases whose Prefect data is not deleted yet: a case
    erased today, or one whose deletion in Prefect failed on an earlier day."""
    with Session(engine) as session:
        rows = session.exec(
            select(Case.id, Case.flow_run_id).where(
                col(Case.status).in_(list(TERMINAL_STATUSES)),
                Case.display_name == ERASED,
                col(Case.flow_run_id).is_not(None),
            )
        ).all()
    return [(case_id, run_id) for case_id, run_id in rows]


def forget_run(engine: Engine, case_id: str) -> None:
    """The case's flow run is deleted in Prefect: the case no longer names it."""
    with Session(engine) as session:
        case = session.get(Case, case_id)
        if case is not None and case.display_name == ERASED:
            case.flow_run_id = None
            session.add(case)
            session.commit()
