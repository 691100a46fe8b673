"""A case's run follows what HR changed: an urgent upgrade, a new last working day, a
cancellation (recorded by the intake, `offboarding.intake.lifecycle`).

The intake only records the change (case row and audit event, one transaction) and wakes the
dispatcher; every pass then brings the run in line with the case, so a crash or a Prefect
that was down in between loses nothing:

- **start time** — a run still waiting to start is moved to the case's start: now for an
  urgent case, the end of the (new) last working day in the company timezone otherwise;
- **upgrade** — a run asleep for approval, upgraded after it fell asleep and not yet
  contained, is woken with an upgrade notice (never a decision): it replays, contains the
  leaver as the policy says, and waits for the decision again;
- **cancellation** — a cancelled case's run is cancelled in Prefect, and the requester and
  every approver asked get a mail in their language (once each).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import anyio
import structlog
from prefect.client.schemas.objects import FlowRun, StateType
from sqlmodel import Session, col, select

from offboarding.domain import audit
from offboarding.domain.cases import leaver_view, start_time
from offboarding.domain.models import (
    ApprovalRequest,
    AuditEvent,
    Case,
    CaseStatus,
    RevocationStep,
    StepStatus,
    as_utc,
    utcnow,
)
from offboarding.notification.mail import OutgoingEmail
from offboarding.notification.rendering import pick_language, render_email
from offboarding.orchestration.handovers import Handovers, hand_over
from offboarding.orchestration.runs import OrchestratorUnavailable, RunGateway
from offboarding.wiring.services import Services

log = structlog.get_logger(__name__)
T = TypeVar("T")
RunsByCase = dict[str, tuple[Case, FlowRun | None]]
SLACK = timedelta(seconds=2)  # a start this close to the wanted one is left alone
FOLLOW_CANCELLED_DAYS = 30  # a cancellation not followed up within this is left to a person


class CaseLifecycle:
    """The dispatcher's lifecycle step (one per dispatcher)."""

    def __init__(self, services: Services, gateway: RunGateway) -> None:
        self.services = services
        self.gateway = gateway
        self.limiter = anyio.CapacityLimiter(services.settings.db_concurrency)
        self._woken = Handovers()  # suspensions given the upgrade notice, or to try again

    async def _db(self, fn: Callable[..., T], *args: Any) -> T:
        return await anyio.to_thread.run_sync(fn, *args, limiter=self.limiter)

    async def follow(self, runs: RunsByCase) -> None:
        for case, run in runs.values():
            if run is None or run.state is None:
                continue
            try:
                if run.state.type == StateType.SCHEDULED:
                    await self.start_on_time(case, run)
                elif run.state.type == StateType.PAUSED:
                    await self.tell_upgrade(case, run)
            except OrchestratorUnavailable as exc:
                log.warning("run not brought in line yet", case_id=case.id, error=str(exc))
        await self.follow_cancellations()

    async def start_on_time(self, case: Case, run: FlowRun) -> None:
        if case.status not in (CaseStatus.SCHEDULED, CaseStatus.RECEIVED) or run.state is None:
            return
        details = run.state.state_details
        scheduled = details.scheduled_time if details else None
        if scheduled is None:
            return
        settings = self.services.settings
        now = datetime.now(UTC)
        wanted = start_time(
            last_working_day=case.last_working_day,
            urgent=case.urgent,
            zone=settings.zone,
            end_of_day=settings.end_of_day,
            now=now,
        )
        planned = as_utc(datetime.fromisoformat(scheduled.isoformat()))
        if wanted is None:  # now: only a start still ahead is moved
            if planned <= now + SLACK:
                return
            wanted, why = now, "urgent: starts now" if case.urgent else "last working day passed"
        else:
            if abs(planned - wanted) <= SLACK:
                return
            why = f"last working day moved to {case.last_working_day.isoformat()}"
        await self.gateway.move_start(str(run.id), wanted, why)
        await self._db(
            lambda: audit.record(
                self.services.engine,
                action="run.rescheduled",
                actor="dispatcher",
                case_id=case.id,
                details={
                    "flow_run_id": str(run.id),
                    "from": planned.isoformat(),
                    "to": as_utc(wanted).isoformat(),
                    "why": why,
                },
            )
        )
        log.info("run start moved", case_id=case.id, to=as_utc(wanted).isoformat(), why=why)

    async def tell_upgrade(self, case: Case, run: FlowRun) -> None:
        if case.upgraded_at is None or run.state is None:
            return
        if case.contained_at is not None and as_utc(case.contained_at) >= as_utc(case.upgraded_at):
            return  # the run contained the leaver after the upgrade
        details = run.state.state_details
        pause_key = (details.pause_key or "") if details else ""
        pause = f"{run.id}:{run.state.id}"
        now = asyncio.get_running_loop().time()
        if not pause_key.startswith("decision-") or not self._woken.due(pause, now):
            return
        await hand_over(
            self.gateway,
            self._woken,
            pause,
            {"upgrade": {"case_id": case.id, "reason": "urgent"}},
            engine=self.services.engine,
            case_id=case.id,
            details={"why": "urgent upgrade"},
            in_thread=self._db,
        )

    async def follow_cancellations(self) -> None:
        for case in await self._db(cancellations_to_follow, self.services):
            if case.flow_run_id:
                try:
                    found = await self.gateway.read([case.flow_run_id])
                    run = found.get(case.flow_run_id)
                    if run is not None and run.state is not None and not run.state.is_final():
                        await self.gateway.cancel(
                            case.flow_run_id, run, "the offboarding was cancelled by HR"
                        )
                except OrchestratorUnavailable as exc:
                    log.warning("run not cancelled yet", case_id=case.id, error=str(exc))
                    continue
            try:
                await self._db(tell_cancelled, self.services, case)
            except Exception as exc:  # noqa: BLE001 - the mail is tried again next pass
                log.warning("cancellation not mailed yet", case_id=case.id, problem=str(exc))


# -- database and mail work (worker threads) ------------------------------------


def _done_key(case_id: str) -> str:
    return f"case.cancel_followed:{case_id}"


def cancellations_to_follow(services: Services) -> list[Case]:
    """Cancelled cases whose run and mails were not seen to yet."""
    since = utcnow() - timedelta(days=FOLLOW_CANCELLED_DAYS)
    with Session(services.engine, expire_on_commit=False) as session:
        cases = list(
            session.exec(
                select(Case).where(
                    Case.status == CaseStatus.CANCELLED, col(Case.updated_at) >= since
                )
            )
        )
        if not cases:
            return []
        done = set(
            session.exec(
                select(AuditEvent.once_key).where(
                    col(AuditEvent.once_key).in_([_done_key(c.id) for c in cases])
                )
            )
        )
    return [c for c in cases if _done_key(c.id) not in done]


def tell_cancelled(services: Services, case: Case) -> None:
    """Mail the requester and every approver asked that the case was withdrawn (each
    once, in their language), then mark the cancellation followed up."""
    engine = services.engine
    with Session(engine, expire_on_commit=False) as session:
        asked = list(
            session.exec(
                select(ApprovalRequest).where(
                    ApprovalRequest.case_id == case.id,
                    col(ApprovalRequest.notified_at).is_not(None),
                )
            )
        )
        contained = [
            step.label
            for step in session.exec(
                select(RevocationStep).where(RevocationStep.case_id == case.id)
            )
            if step.status in (StepStatus.DONE, StepStatus.ALREADY_DONE)
        ]
        cancelled = session.exec(
            select(AuditEvent).where(
                AuditEvent.case_id == case.id, AuditEvent.action == "case.cancelled"
            )
        ).first()
    default = services.settings.default_language
    recipients: dict[str, tuple[str, str]] = {}  # email -> (display name, language)
    requester = services.people.find_person(case.requested_by)
    if requester is not None and requester.email:
        recipients[requester.email] = (
            requester.display_name,
            pick_language(requester.language, default),
        )
    for request in asked:
        person = services.people.find_person(request.approver_id)
        name = person.display_name if person else request.approver_id
        recipients.setdefault(
            request.approver_email, (name, pick_language(request.language, default))
        )
    # the audit event is the record of who withdrew it and why (erased by retention: none)
    details = json.loads(cancelled.details) if cancelled and not cancelled.erased else {}
    when = as_utc(cancelled.at if cancelled else case.updated_at)
    context = {
        "leaver": leaver_view(case),
        "case_id": case.id,
        "cancelled_by": _cancelled_by(services, details),
        "reason": str(details.get("reason", "")),
        "cancelled_at": when.astimezone(services.settings.zone).strftime("%Y-%m-%d %H:%M %Z"),
        "contained": contained,
    }
    for email, (name, language) in recipients.items():
        key = f"email:case_cancelled:{case.id}:{email}"
        with Session(engine) as session:
            if session.exec(select(AuditEvent.seq).where(AuditEvent.once_key == key)).first():
                continue  # mailed on an earlier pass
        rendered = render_email(
            services.templates,
            "case_cancelled",
            language,
            {**context, "recipient": {"display_name": name}},
        )
        message_id = services.mailer.send(
            OutgoingEmail(
                to=[email], subject=rendered.subject, text=rendered.text, html=rendered.html
            )
        )
        audit.record(
            engine,
            action="email.case_cancelled",
            actor="service",
            case_id=case.id,
            details={"to": email, "message_id": message_id, "language": language},
            once_key=key,
        )
    audit.record(
        engine,
        action="case.cancel_followed",
        actor="dispatcher",
        case_id=case.id,
        details={"mailed": sorted(recipients), "flow_run_id": case.flow_run_id},
        once_key=_done_key(case.id),
    )


def _cancelled_by(services: Services, details: dict[str, Any]) -> dict[str, str]:
    employee_id = str(details.get("requested_by", "-"))
    person = services.people.find_person(employee_id) if employee_id != "-" else None
    return {
        "employee_id": employee_id,
        "display_name": person.display_name if person else employee_id,
    }
