"""Cases: opening one from an HR event, reading it back, moving its status."""

from __future__ import annotations

import re
import unicodedata
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from connectors.base import Leaver
from offboarding.domain import audit, watch
from offboarding.domain.models import (
    TERMINAL_STATUSES,
    ApprovalDecision,
    Case,
    CaseStatus,
    PlanStatus,
    RevocationPlanRecord,
    as_utc,
    utcnow,
)


class UnknownEmployee(LookupError):
    """The event names someone the people directory does not know."""


class CaseCancelled(Exception):
    """HR withdrew the case: it never changes status again (a run still going stops)."""


def run_name(employee_id: str, email: str) -> str:
    """`offboard-E1042-jdevries`: readable in the Prefect UI, safe in URLs."""
    local = email.split("@", 1)[0]
    ascii_local = unicodedata.normalize("NFKD", local).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_local.lower()).strip("-") or "leaver"
    return f"offboard-{employee_id}-{slug}"


def start_time(
    *, last_working_day: date, urgent: bool, zone: ZoneInfo, end_of_day: str, now: datetime
) -> datetime | None:
    """When the run should start: None = now (urgent, or the last working day is today or
    past); for a future last working day, the end of that day in the company timezone."""
    if urgent or last_working_day <= now.astimezone(zone).date():
        return None
    hour, minute = (int(part) for part in end_of_day.split(":", 1))
    return datetime.combine(last_working_day, time(hour, minute), tzinfo=zone)


_CASE_NAMESPACE = uuid.UUID("5b0f6a0e-2f43-4c1c-9a55-0ff0b0a4d1e2")


def case_id_for(event_id: str, occurred_at: datetime | None = None) -> str:
    """Deterministic: the same event always names the same case (a racing copy collides).
    `occurred_at` only for a later case under an event id an earlier case already has."""
    name = event_id if occurred_at is None else f"{event_id}@{as_utc(occurred_at).isoformat()}"
    return uuid.uuid5(_CASE_NAMESPACE, name).hex


def find_by_event(
    session: Session, event_id: str, occurred_at: datetime | None = None
) -> Case | None:
    """The case this event opened: the same id (and, when given, the same moment), the
    newest first. An HR system that keeps one id per person (Personio) sends it again for a
    rehire's later leaving, with a later `occurred_at`: that is a new case, not a resend."""
    return pick_by_event(cases_of_event(session, event_id), occurred_at)


def cases_of_event(session: Session, event_id: str) -> list[Case]:
    """Every case opened under this event id, the newest first."""
    return list(
        session.exec(
            select(Case).where(Case.event_id == event_id).order_by(col(Case.created_at).desc())
        ).all()
    )


def pick_by_event(found: list[Case], occurred_at: datetime | None = None) -> Case | None:
    """`find_by_event` among the cases of one event id (`cases_of_event`)."""
    if occurred_at is None:
        return found[0] if found else None
    same = [c for c in found if as_utc(c.occurred_at) == as_utc(occurred_at)]
    if same:
        return same[0]
    still_open = [c for c in found if c.status not in TERMINAL_STATUSES]
    return still_open[0] if still_open else None  # a resend with another time: same case


def find_open_case(session: Session, employee_id: str) -> Case | None:
    """A case for this employee that has not reached an end (completed or rejected)."""
    return session.exec(
        select(Case).where(
            Case.employee_id == employee_id, col(Case.status).not_in(list(TERMINAL_STATUSES))
        )
    ).first()


def leaver_of(case: Case) -> Leaver:
    return Leaver(
        employee_id=case.employee_id, email=case.employee_email, display_name=case.display_name
    )


def leaver_view(case: Case) -> dict[str, str]:
    """The leaver as emails, pages and reports show them."""
    return {
        "employee_id": case.employee_id,
        "display_name": case.display_name,
        "email": case.employee_email,
    }


def get_case(engine: Engine, case_id: str) -> Case | None:
    with Session(engine, expire_on_commit=False) as session:
        return session.get(Case, case_id)


@dataclass(frozen=True)
class Recorded:
    """An audit event that is written together with the change it records."""

    action: str
    actor: str = "service"
    outcome: str = "ok"
    details: dict[str, Any] | None = None
    once_key: str | None = None


def set_status(
    engine: Engine,
    case_id: str,
    status: CaseStatus,
    detail: str = "",
    *,
    event: Recorded | None = None,
    plan: tuple[str, PlanStatus] | None = None,
    rechecks: Sequence[float] = (),
) -> None:
    """Move the case (and optionally its plan) to a new status; the audit event that
    records it is committed in the same transaction, or neither is. A completed case
    gets its `rechecks` (days after completion; see `offboarding.domain.watch`) in it too."""

    def change(session: Session) -> None:
        # one statement checks and takes the row, so that a cancellation and a move on
        # cannot both win (SQLite reads outside its write lock)
        taken = session.execute(
            update(Case)
            .where(col(Case.id) == case_id, col(Case.status) != CaseStatus.CANCELLED)
            .values(updated_at=utcnow())
            .execution_options(synchronize_session=False)
        )
        case = session.get(Case, case_id)
        if case is None:
            raise LookupError(f"no case {case_id}")
        if taken.rowcount != 1:  # type: ignore[attr-defined]
            raise CaseCancelled(f"case {case_id} was cancelled by HR")
        case.status = status
        case.status_detail = detail
        case.updated_at = utcnow()
        session.add(case)
        if plan is not None:
            record = session.get(RevocationPlanRecord, plan[0])
            if record is None:
                raise LookupError(f"no plan {plan[0]}")
            record.status = plan[1]
            session.add(record)
        if status == CaseStatus.COMPLETED and rechecks:
            watch.schedule(session, case_id, rechecks, case.updated_at)
        if event is not None:
            audit.append(
                session,
                action=event.action,
                actor=event.actor,
                outcome=event.outcome,
                case_id=case_id,
                details=event.details,
                once_key=event.once_key,
            )

    audit.in_transaction(engine, change)


def get_plan(engine: Engine, plan_id: str) -> RevocationPlanRecord | None:
    with Session(engine, expire_on_commit=False) as session:
        return session.get(RevocationPlanRecord, plan_id)


def latest_plan(engine: Engine, case_id: str) -> RevocationPlanRecord | None:
    with Session(engine, expire_on_commit=False) as session:
        return session.exec(
            select(RevocationPlanRecord)
            .where(RevocationPlanRecord.case_id == case_id)
            .order_by(col(RevocationPlanRecord.version).desc())
        ).first()


def set_plan_status(engine: Engine, plan_id: str, status: PlanStatus) -> None:
    with Session(engine) as session:
        record = session.get(RevocationPlanRecord, plan_id)
        if record is None:
            raise LookupError(f"no plan {plan_id}")
        record.status = status
        session.add(record)
        session.commit()


def decisions_on(engine: Engine, case_id: str, plan_hash: str) -> list[ApprovalDecision]:
    """The decisions recorded on one plan of a case."""
    with Session(engine, expire_on_commit=False) as session:
        return list(
            session.exec(
                select(ApprovalDecision).where(
                    ApprovalDecision.case_id == case_id, ApprovalDecision.plan_hash == plan_hash
                )
            ).all()
        )


def mark_contained(engine: Engine, case_id: str) -> None:
    """The run contained the urgent leaver (or found nothing to contain) after the case's
    last upgrade: from now on the dispatcher does not wake the run for it."""
    with Session(engine) as session:
        case = session.get(Case, case_id)
        if case is None or (
            case.contained_at is not None
            and (case.upgraded_at is None or as_utc(case.contained_at) >= as_utc(case.upgraded_at))
        ):
            return
        case.contained_at = utcnow()
        session.add(case)
        session.commit()
