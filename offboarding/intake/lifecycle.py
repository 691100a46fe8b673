"""What a later HR event does to an employee's case: upgrade, reschedule, cancel.

Each change is decided and recorded in the intake's one transaction: the case row (locked on
PostgreSQL, so two events for one employee are decided one after the other), and its audit
event, whose `once_key` is the event id (a resend finds it and changes nothing again). Nothing
here talks to Prefect: the dispatcher brings the case's run in line with the case on its next
pass (woken at once), also after a crash between the two (`offboarding.orchestration.lifecycle`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import exists, update
from sqlalchemy import select as core_select
from sqlmodel import Session, col, select

from offboarding.domain import audit
from offboarding.domain.cases import start_time
from offboarding.domain.models import (
    TERMINAL_STATUSES,
    AuditEvent,
    Case,
    CaseStatus,
    utcnow,
)
from offboarding.intake.hris import CancellationEvent, TerminationEvent

# an upgrade or a cancellation reaches a case only before anything is revoked
BEFORE_REVOCATION = (CaseStatus.SCHEDULED, CaseStatus.RECEIVED, CaseStatus.AWAITING_APPROVAL)
CHANGED = ("opened", "upgraded", "rescheduled", "cancelled")  # answered 202; the rest 200
_TOO_LATE = {
    CaseStatus.REVOKING: "access is being revoked",
    CaseStatus.AWAITING_ATTESTATION: "access was revoked; manual steps are being attested",
    CaseStatus.COMPLETED: "access was revoked and the case is completed",
    CaseStatus.REJECTED: "the second manager rejected it",
    CaseStatus.NEEDS_ATTENTION: "it needs attention: a person has to look at it first",
    CaseStatus.RECEIVED: "its run has started",
    CaseStatus.AWAITING_APPROVAL: "its run has started",
}


@dataclass(frozen=True)
class Change:
    """The case an event concerns and what it did to it."""

    case: Case
    outcome: str
    scheduled: datetime | None = None


class Conflict(Exception):
    """The event cannot change the case; answered `status` with `detail`, nothing changed."""

    def __init__(self, status: int, reason: str, detail: str, case_id: str | None) -> None:
        super().__init__(detail)
        self.status = status
        self.reason = reason
        self.detail = detail
        self.case_id = case_id


def once_key(event_id: str) -> str:
    return f"hris-event:{event_id}"


def nothing_known(session: Session, event_id: str, employee_id: str) -> bool:
    """Nothing is known yet of this event or this employee: no case under the event id, no
    lifecycle event with its id, no open case of the employee (a new leaver, the usual
    case). One statement in place of the three reads that find out what is known."""
    cases, events = Case.__table__.c, AuditEvent.__table__.c  # type: ignore[attr-defined]
    known = (
        session.connection()
        .execute(
            core_select(
                exists().where(cases.event_id == event_id),
                exists().where(events.once_key == once_key(event_id)),
                exists().where(
                    cases.employee_id == employee_id,
                    cases.status.not_in(list(TERMINAL_STATUSES)),
                ),
            )
        )
        .one()
    )
    return not any(known)


def seen(session: Session, event_id: str) -> Change | None:
    """A lifecycle event received before (a resend): the case it concerned, unchanged."""
    case_id = session.exec(
        select(AuditEvent.case_id).where(AuditEvent.once_key == once_key(event_id))
    ).first()
    if case_id is None:
        return None
    case = session.get(Case, case_id)
    if case is None:
        return None
    return Change(case, "unchanged")


def locked_open_case(session: Session, employee_id: str) -> Case | None:
    """The employee's open case, locked until the transaction ends (usually there is none:
    only its id is asked for first, which costs less)."""
    case_id = session.exec(
        select(Case.id)
        .where(Case.employee_id == employee_id, col(Case.status).not_in(list(TERMINAL_STATUSES)))
        .with_for_update()
    ).first()
    return None if case_id is None else session.get(Case, case_id)


def _record(
    session: Session, case: Case, action: str, actor: str, event_id: str, **details: Any
) -> None:
    audit.append(
        session,
        action=action,
        actor=actor,
        case_id=case.id,
        outcome="ok" if action != "intake.unchanged" else "unchanged",
        details={"event_id": event_id, **details},
        once_key=once_key(event_id),
    )


def _claim(session: Session, case: Case, still: list[Any], **values: Any) -> bool:
    """Change the case only while `still` holds, in one statement: a racing event or the
    run's own move is seen, also on SQLite (which reads outside the write lock). `case` is
    read again afterwards, either way."""
    changed = session.execute(
        update(Case)
        .where(col(Case.id) == case.id, *still)
        .values(**values, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    session.refresh(case)
    return changed.rowcount == 1  # type: ignore[attr-defined, no-any-return]


def _too_late(case: Case, doing: str) -> Conflict:
    done = {"upgrade": "upgraded", "reschedule": "rescheduled", "cancel": "cancelled"}[doing]
    why = _TOO_LATE.get(case.status, case.status.value)
    return Conflict(
        409,
        f"{doing}_too_late",
        f"case {case.id} ({case.status.value}) cannot be {done}: {why}; nothing was changed",
        case.id,
    )


def change_open_case(
    session: Session,
    case: Case,
    event: TerminationEvent,
    *,
    zone: ZoneInfo,
    end_of_day: str,
) -> Change:
    """Another termination event for an employee whose case is open (`case`, locked)."""
    actor = f"hris:{event.requested_by}"
    previous = case.status
    if event.urgent and case.urgent:
        _record(session, case, "intake.unchanged", actor, event.id, why="already urgent")
        return Change(case, "unchanged")
    if event.urgent:
        if case.status not in BEFORE_REVOCATION:
            raise _too_late(case, "upgrade")
        now = utcnow()
        if not _claim(session, case, [col(Case.urgent).is_(False)], urgent=True, upgraded_at=now):
            if case.urgent:  # a racing urgent event was first
                _record(session, case, "intake.unchanged", actor, event.id, why="already urgent")
                return Change(case, "unchanged")
            raise _too_late(case, "upgrade")
        if case.status == CaseStatus.SCHEDULED:
            case.status = CaseStatus.RECEIVED  # its run starts now (the dispatcher moves it)
            session.add(case)
        _record(session, case, "case.upgraded", actor, event.id, previous_status=previous.value)
        return Change(case, "upgraded")
    if event.last_working_day != case.last_working_day:
        if case.status != CaseStatus.SCHEDULED:
            raise Conflict(
                409,
                "reschedule_too_late",
                f"case {case.id} ({case.status.value}) has started: its last working day "
                "can no longer move. Send employee.termination_cancelled first (while it "
                "waits for approval) and then a new event; nothing was changed",
                case.id,
            )
        scheduled = start_time(
            last_working_day=event.last_working_day,
            urgent=False,
            zone=zone,
            end_of_day=end_of_day,
            now=utcnow(),
        )
        before = case.last_working_day
        unchanged = [
            col(Case.status) == CaseStatus.SCHEDULED,
            col(Case.urgent).is_(False),
            col(Case.last_working_day) == before,
        ]
        moved = {"last_working_day": event.last_working_day}
        if scheduled is None:  # today or past: it starts now
            moved["status"] = CaseStatus.RECEIVED  # type: ignore[assignment]
        if not _claim(session, case, unchanged, **moved):
            raise _too_late(case, "reschedule")  # a racing event changed it first
        _record(
            session,
            case,
            "case.rescheduled",
            actor,
            event.id,
            last_working_day=event.last_working_day.isoformat(),
            previous_last_working_day=before.isoformat(),
            scheduled_for=scheduled.isoformat() if scheduled else None,
        )
        return Change(case, "rescheduled", scheduled)
    if case.event_id == event.id:
        # the event that opened this case, delivered again (an HR system that keeps one event
        # id per person, e.g. Personio, with a newer timestamp): nothing to change
        _record(session, case, "intake.unchanged", actor, event.id, why="redelivered")
        return Change(case, "unchanged")
    raise Conflict(
        409,
        "case_open",
        f"an offboarding case for {event.employee.id} is already open: "
        f"{case.id} ({case.status.value}); nothing was created",
        case.id,
    )


def cancel(
    session: Session,
    event: CancellationEvent,
    *,
    decided: Callable[[Case], str | None],
) -> Change:
    """Withdraw the employee's case while nothing is revoked. `decided` names a verdict the
    recorded approvals already reached (the run acts on it: too late to cancel)."""
    case = locked_open_case(session, event.employee.id)
    if case is None:
        latest = session.exec(
            select(Case)
            .where(Case.employee_id == event.employee.id)
            .order_by(col(Case.created_at).desc())
        ).first()
        if latest is None:
            raise Conflict(
                404,
                "no_case",
                f"no offboarding case for employee {event.employee.id}; nothing was changed",
                None,
            )
        if latest.status == CaseStatus.CANCELLED:
            return Change(latest, "unchanged")
        raise _too_late(latest, "cancel")
    if case.status not in BEFORE_REVOCATION:
        raise _too_late(case, "cancel")
    verdict = decided(case)
    if verdict is not None:
        raise Conflict(
            409,
            "cancel_too_late",
            f"case {case.id} was already {verdict} by the second manager; the run acts on "
            "that decision; nothing was changed",
            case.id,
        )
    previous = case.status
    detail = f"cancelled by {event.requested_by}: {event.reason}".strip(": ")[:2000]
    if not _claim(
        session,
        case,
        [col(Case.status) == previous],
        status=CaseStatus.CANCELLED,
        status_detail=detail,
    ):
        raise _too_late(case, "cancel")  # the run moved on meanwhile
    _record(
        session,
        case,
        "case.cancelled",
        f"hris:{event.requested_by}",
        event.id,
        previous_status=previous.value,
        reason=event.reason,
        requested_by=event.requested_by,
    )
    return Change(case, "cancelled")
