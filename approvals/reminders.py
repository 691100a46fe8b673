"""Approvals that wait: a reminder, an escalation, and "needs attention" when links expire.

The dispatcher calls these once per pass, with the time it uses as `now` (tests pass any
moment). Each change is claimed in the audit log first (a `once_key`), so several
dispatchers never remind or escalate twice. Nothing here ever approves: a case whose every
link expired goes to a person ("needs attention"), who renews the links.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo

import structlog
from sqlmodel import Session, col, select

from approvals.decisions import settle
from approvals.deputies import approvers_for, periods
from approvals.ports import ApprovalPorts, ApprovalSettings
from approvals.requests import (
    IssuedLink,
    approval_url,
    ask_deputies,
    decision_context,
    new_request,
)
from approvals.rules import Verdict, eligible_approvers
from approvals.tokens import LinkClaims
from connectors.base import Person
from offboarding.domain import audit
from offboarding.domain.cases import latest_plan
from offboarding.domain.models import (
    ApprovalRequest,
    AuditEvent,
    Case,
    CaseStatus,
    PlanStatus,
    RevocationPlanRecord,
    as_utc,
)
from offboarding.domain.plan import RevocationPlan
from offboarding.domain.policy import Policy
from offboarding.notification.mail import MailError, OutgoingEmail
from offboarding.notification.rendering import render_email

log = structlog.get_logger(__name__)


class FollowUpSettings(ApprovalSettings, Protocol):
    @property
    def zone(self) -> ZoneInfo:
        """The company's timezone: every time a person reads is shown in it."""
        ...


class FollowUpPorts(ApprovalPorts, Protocol):
    @property
    def settings(self) -> FollowUpSettings: ...

    @property
    def rules(self) -> Policy: ...


def local_time(moment: datetime, zone: ZoneInfo) -> str:
    """A stored (UTC) moment as people in the company read it: "2026-12-01 09:30 CET"."""
    return as_utc(moment).astimezone(zone).strftime("%Y-%m-%d %H:%M %Z")


def waiting_plans(services: ApprovalPorts) -> list[tuple[Case, RevocationPlanRecord]]:
    """Cases waiting for a decision on a pending plan, with that plan."""
    with Session(services.engine, expire_on_commit=False) as session:
        cases = list(session.exec(select(Case).where(Case.status == CaseStatus.AWAITING_APPROVAL)))
    found = []
    for case in cases:
        record = latest_plan(services.engine, case.id)
        if record is not None and record.status == PlanStatus.PENDING:
            found.append((case, record))
    return found


def requests_for(services: ApprovalPorts, record: RevocationPlanRecord) -> list[ApprovalRequest]:
    with Session(services.engine, expire_on_commit=False) as session:
        return list(
            session.exec(
                select(ApprovalRequest)
                .where(ApprovalRequest.plan_id == record.id)
                .order_by(col(ApprovalRequest.created_at))
            )
        )


def _undecided(services: ApprovalPorts, case: Case, record: RevocationPlanRecord) -> bool:
    return settle(services, case, record).verdict == Verdict.PENDING


def _mail_link(
    services: FollowUpPorts,
    case: Case,
    record: RevocationPlanRecord,
    request: ApprovalRequest,
    template: str,
    display_name: str,
) -> str:
    """Mail one approver their (freshly signed) link to `request`; the message id."""
    token = services.links.issue(
        LinkClaims(
            request_id=request.id,
            case_id=case.id,
            approver_id=request.approver_id,
            plan_hash=record.plan_hash,
        )
    )
    plan = RevocationPlan.from_canonical(record.canonical)
    rendered = render_email(
        services.templates,
        template,
        request.language,
        {
            **decision_context(services, case, plan),
            "approver": {"display_name": display_name},
            "link": approval_url(services, token),
            "asked_at": local_time(request.created_at, services.settings.zone),
            "expires_at": local_time(request.expires_at, services.settings.zone),
        },
    )
    return services.mailer.send(
        OutgoingEmail(
            to=[request.approver_email],
            subject=rendered.subject,
            text=rendered.text,
            html=rendered.html,
        )
    )


def _name(services: ApprovalPorts, employee_id: str) -> str:
    person = services.people.find_person(employee_id)
    return person.display_name if person else employee_id


def due_reminders(services: FollowUpPorts, now: datetime) -> list[ApprovalRequest]:
    """Remind, once, each approver whose link is older than `remind_after_hours`, still
    unused and unexpired, while the plan is undecided. The requests reminded."""
    after = timedelta(hours=services.rules.remind_after_hours)
    reminded: list[ApprovalRequest] = []
    for case, record in waiting_plans(services):
        due = [
            r
            for r in requests_for(services, record)
            if r.used_at is None
            and r.notified_at is not None
            and as_utc(r.created_at) + after <= now < as_utc(r.expires_at)
        ]
        if not due or not _undecided(services, case, record):
            continue
        for request in due:
            claimed = audit.record(
                services.engine,
                action="approval.reminded",
                actor="service",
                case_id=case.id,
                details={"request_id": request.id, "approver_id": request.approver_id},
                once_key=f"approval.reminded:{request.id}",
            )
            if claimed is None:
                continue  # reminded before (or by another dispatcher just now)
            _send_logged(services, case, record, request, "approval_reminder")
            reminded.append(request)
    return reminded


def _send_logged(
    services: FollowUpPorts,
    case: Case,
    record: RevocationPlanRecord,
    request: ApprovalRequest,
    template: str,
) -> None:
    """Send and record the mail; a mail failure is recorded and logged, not raised, so one
    unreachable mailbox does not stop the others (the claim stays: no retry storm)."""
    details = {
        "to": request.approver_email,
        "approver_id": request.approver_id,
        "request_id": request.id,
        "language": request.language,
    }
    try:
        message_id = _mail_link(
            services, case, record, request, template, _name(services, request.approver_id)
        )
    except MailError as exc:
        log.error("mail not sent", case_id=case.id, template=template, error=str(exc))
        audit.record(
            services.engine,
            action=f"email.{template}",
            actor="service",
            outcome="failed",
            case_id=case.id,
            details={**details, "error": str(exc)},
        )
        return
    audit.record(
        services.engine,
        action=f"email.{template}",
        actor="service",
        case_id=case.id,
        details={**details, "message_id": message_id},
    )


def escalation_candidates(
    services: FollowUpPorts, case: Case, asked: Sequence[str]
) -> list[Person]:
    """Who the escalation asks, each passing the four-eyes rules for this case (not the
    requester, not the leaver, with an email) and not asked yet.

    Without an approvers group for the case: the configured escalation managers who are
    managers. With one (`approvers_group`, `approvers_group_urgent`), only its members may
    decide, so only they are asked: the configured escalation managers who are members,
    else the next member not asked yet (by employee id); a configured one outside the
    group is never asked.
    """
    wanted = [i.casefold() for i in services.rules.escalation_managers]
    done = {_key(i) for i in asked}
    group = services.policy.group_for(urgent=case.urgent)
    pool = approvers_for(services, urgent=case.urgent) if group else services.people.managers()
    open_ = [
        p
        for p in eligible_approvers(
            pool, requester_id=case.requested_by, leaver_id=case.employee_id
        )
        if _key(p.employee_id) not in done
    ]
    chosen = sorted(
        (p for p in open_ if _key(p.employee_id) in wanted),
        key=lambda p: wanted.index(_key(p.employee_id)),
    )
    if group is None:
        return chosen
    outside = sorted(set(wanted) - {_key(p.employee_id) for p in pool})
    if outside:
        log.warning(
            "escalation managers outside the approvers group are not asked",
            case_id=case.id,
            group=group,
            employee_ids=outside,
        )
    return chosen or open_[:1]


def _key(employee_id: str) -> str:
    return employee_id.strip().casefold()


def _escalated_before(services: FollowUpPorts, record: RevocationPlanRecord) -> bool:
    with Session(services.engine) as session:
        return (
            session.exec(
                select(AuditEvent.seq).where(
                    col(AuditEvent.once_key).startswith(
                        f"approval.escalated:{record.id}:", autoescape=True
                    )
                )
            ).first()
            is not None
        )


def escalations(services: FollowUpPorts, now: datetime) -> list[ApprovalRequest]:
    """After `escalate_after_hours` without a decision, escalate once per plan: ask those
    `escalation_candidates` names, each a request of their own (same plan hash, full
    lifetime) and its link by mail. The requests created."""
    after = timedelta(hours=services.rules.escalate_after_hours)
    ttl = timedelta(hours=services.settings.approval_ttl_hours)
    created: list[ApprovalRequest] = []
    if not services.rules.escalation_managers:
        return created
    for case, record in waiting_plans(services):
        requests = requests_for(services, record)
        if not requests or as_utc(requests[0].created_at) + after > now:
            continue
        if _escalated_before(services, record):
            continue
        candidates = escalation_candidates(services, case, [r.approver_id for r in requests])
        if not candidates or not _undecided(services, case, record):
            continue
        for person in candidates:
            request = _claim_escalation(services, case, record, person, now, ttl)
            if request is None:
                continue
            _send_logged(services, case, record, request, "approval_request")
            created.append(request)
    return created


def deputies_due(services: FollowUpPorts, now: datetime) -> list[IssuedLink]:
    """On every plan still waiting for a decision, ask each active deputy of an asked
    approver who has no link yet (a deputyship that started after the requests went out):
    once per plan and deputy, also when two passes run at once (`ask_deputies`)."""
    away = {_key(p.manager_id) for p in periods(services.engine) if p.active_at(now)}
    issued: list[IssuedLink] = []
    if not away:
        return issued  # the common case: no directory or decision read at all
    for case, record in waiting_plans(services):
        if not away & {_key(r.approver_id) for r in requests_for(services, record)}:
            continue
        if _undecided(services, case, record):
            issued += ask_deputies(services, case, record, now)
    return issued


def _claim_escalation(
    services: FollowUpPorts,
    case: Case,
    record: RevocationPlanRecord,
    person: Person,
    now: datetime,
    ttl: timedelta,
) -> ApprovalRequest | None:
    """The new request and its audit event, together; None when someone else was first."""
    request = new_request(services.settings.default_language, record, person, now, ttl)

    def claim(session: Session) -> bool:
        event = audit.append(
            session,
            action="approval.escalated",
            actor="service",
            case_id=case.id,
            details={
                "request_id": request.id,
                "approver_id": person.employee_id,
                "plan_hash": record.plan_hash,
                "after_hours": services.rules.escalate_after_hours,
            },
            once_key=f"approval.escalated:{record.id}:{person.employee_id.casefold()}",
        )
        if event is None:
            return False
        request.notified_at = now  # the mail follows at once; a failure is audited
        session.add(request)
        return True

    return request if audit.in_transaction(services.engine, claim) else None


def expired_cases(services: FollowUpPorts, now: datetime) -> list[tuple[Case, str]]:
    """Cases still undecided whose every unused link has expired (or that have no usable
    link at all): each with the problem a person reads. The dispatcher puts them in
    "needs attention"; nothing is approved."""
    zone = services.settings.zone
    stuck: list[tuple[Case, str]] = []
    for case, record in waiting_plans(services):
        requests = requests_for(services, record)
        if not requests:
            continue  # the run has not asked yet
        unused = [r for r in requests if r.used_at is None]
        if any(now < as_utc(r.expires_at) for r in unused):
            continue
        if not _undecided(services, case, record):
            continue  # decided: the run acts on it
        if unused:
            last = max(as_utc(r.expires_at) for r in unused)
            problem = (
                f"every approval link expired (the last at {local_time(last, zone)}) "
                "without a decision; nothing was approved. Send new links with "
                f"`offboarding approvals resend {case.id}`"
            )
        else:
            problem = (
                "every asked manager used their link, yet the plan is not decided "
                "(a decision was refused or more approvals are needed); nothing was "
                "approved. Add an eligible manager, then send links with "
                f"`offboarding approvals resend {case.id}`"
            )
        stuck.append((case, problem))
    return stuck
