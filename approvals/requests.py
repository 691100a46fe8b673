"""Asking for a decision: one personal link per eligible second manager, by email."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from approvals.decisions import settle
from approvals.deputies import approvers_for, deputies_to_ask
from approvals.ports import ApprovalPorts
from approvals.rules import Verdict, eligible_approvers
from approvals.tokens import LinkClaims
from connectors.base import Person
from offboarding.domain import audit
from offboarding.domain.cases import latest_plan, leaver_view
from offboarding.domain.models import (
    ApprovalRequest,
    Case,
    CaseStatus,
    RevocationPlanRecord,
    as_utc,
    utcnow,
)
from offboarding.domain.plan import RevocationPlan
from offboarding.notification.mail import MailError, OutgoingEmail
from offboarding.notification.rendering import pick_language, render_email

log = structlog.get_logger(__name__)


class NoEligibleApprover(Exception):
    """Nobody may act as second manager for this case; a person must fix the managers list."""


@dataclass(frozen=True)
class IssuedLink:
    approver: Person
    url: str
    deputy_for: Person | None = None  # asked as this manager's deputy


def approval_url(services: ApprovalPorts, token: str) -> str:
    return f"{services.settings.base_url}/approvals/{token}"


def request_approvals(
    services: ApprovalPorts, case: Case, record: RevocationPlanRecord
) -> list[IssuedLink]:
    """Create (once) a request per eligible manager for this plan and email each their link.

    Idempotent: a re-run reuses the requests and only mails those not yet mailed.
    """
    engine = services.engine
    with Session(engine, expire_on_commit=False) as session:
        existing = {
            r.approver_id: r
            for r in session.exec(
                select(ApprovalRequest).where(ApprovalRequest.plan_id == record.id)
            ).all()
        }
    approvers = eligible_approvers(
        approvers_for(services, urgent=case.urgent),
        requester_id=case.requested_by,
        leaver_id=case.employee_id,
    )
    if not approvers:
        raise NoEligibleApprover(
            "no eligible second manager: every approver is the requester or the leaver; "
            "add a manager to the managers group or list (or to the approvers group)"
        )
    required = services.policy.required_for(urgent=case.urgent)
    if len(approvers) < required:
        raise NoEligibleApprover(
            f"{required} approvals are needed for this case, but only {len(approvers)} "
            "approver(s) may give one (not the requester, not the leaver; a deputy counts "
            "with their manager); add approvers to the group or lower the policy's count"
        )
    # an active deputy is asked too, next to the manager they stand in for
    asked: list[tuple[Person, Person | None]] = [(a, None) for a in approvers]
    asked += deputies_to_ask(services, case, approvers, utcnow())
    ttl = timedelta(hours=services.settings.approval_ttl_hours)
    issued: list[IssuedLink] = []
    for approver, deputy_for in asked:
        request = existing.get(approver.employee_id)
        if request is not None and request.notified_at is not None:
            continue
        request = _stored(
            engine,
            request
            or ApprovalRequest(
                case_id=case.id,
                plan_id=record.id,
                plan_hash=record.plan_hash,
                approver_id=approver.employee_id,
                approver_email=approver.email,
                language=pick_language(approver.language, services.settings.default_language),
                expires_at=utcnow() + ttl,
            ),
        )
        if request.notified_at is not None:
            continue  # asked meanwhile (a deputy's request from the follow-up pass)
        url = mail_request(services, case, record, request, approver, deputy_for)
        with Session(engine) as session:
            request.notified_at = utcnow()
            session.add(request)
            session.commit()
        issued.append(IssuedLink(approver=approver, url=url, deputy_for=deputy_for))
    return issued


def _stored(engine: Engine, request: ApprovalRequest) -> ApprovalRequest:
    """`request` saved; when another writer stored one for the same plan and approver first
    (the unique key), that one instead."""
    try:
        with Session(engine, expire_on_commit=False) as session:
            session.add(request)
            session.commit()
            return request
    except IntegrityError:
        with Session(engine, expire_on_commit=False) as session:
            found = session.exec(
                select(ApprovalRequest).where(
                    ApprovalRequest.plan_id == request.plan_id,
                    ApprovalRequest.approver_id == request.approver_id,
                )
            ).first()
        if found is None:
            raise
        return found


def mail_request(
    services: ApprovalPorts,
    case: Case,
    record: RevocationPlanRecord,
    request: ApprovalRequest,
    approver: Person,
    deputy_for: Person | None,
) -> str:
    """Mail `approver` a freshly signed link to `request` and record it
    (`email.approval_request`); the link. The link itself is never logged."""
    token = services.links.issue(
        LinkClaims(
            request_id=request.id,
            case_id=case.id,
            approver_id=approver.employee_id,
            plan_hash=record.plan_hash,
        )
    )
    url = approval_url(services, token)
    rendered = render_email(
        services.templates,
        "approval_request",
        request.language,
        {
            **decision_context(services, case, RevocationPlan.from_canonical(record.canonical)),
            "approver": {"display_name": approver.display_name},
            "deputy_for": deputy_for.display_name if deputy_for else None,
            "link": url,
            "expires_at": as_utc(request.expires_at).strftime("%Y-%m-%d %H:%M UTC"),
        },
    )
    message_id = services.mailer.send(
        OutgoingEmail(
            to=[request.approver_email],
            subject=rendered.subject,
            text=rendered.text,
            html=rendered.html,
        )
    )
    audit.record(
        services.engine,
        action="email.approval_request",
        actor="service",
        case_id=case.id,
        details={
            "to": request.approver_email,
            "approver_id": approver.employee_id,
            "deputy_for": deputy_for.employee_id if deputy_for else None,
            "request_id": request.id,
            "plan_hash": record.plan_hash,
            "message_id": message_id,
            "language": request.language,
        },
    )
    return url


class NotAwaitingApproval(Exception):
    """Links can only be renewed while the case waits for a decision."""


def renew_approvals(services: ApprovalPorts, case: Case, *, actor: str) -> list[IssuedLink]:
    """Fresh links (new lifetime) to every manager who has not used theirs yet.

    For a case whose links expired before anyone decided: the run is still waiting,
    and the new links are bound to the same plan hash.
    """
    # a case whose links all expired was handed to a person (needs attention): new links
    # put it back to waiting for the decision
    if case.status not in (CaseStatus.AWAITING_APPROVAL, CaseStatus.NEEDS_ATTENTION):
        raise NotAwaitingApproval(f"case {case.id} is {case.status.value}, not awaiting approval")
    record = latest_plan(services.engine, case.id)
    if record is None:
        raise NotAwaitingApproval(f"case {case.id} has no plan yet")
    settled = settle(services, case, record)  # the same answer the page and the flow get
    if settled.verdict != Verdict.PENDING:
        by = f" by {settled.deciding.approver_id}" if settled.deciding else ""
        raise NotAwaitingApproval(
            f"case {case.id} is already {settled.verdict.value}{by}; the run acts on that "
            "decision (no new links are needed)"
        )
    ttl = timedelta(hours=services.settings.approval_ttl_hours)

    def renew(session: Session) -> None:
        for request in session.exec(
            select(ApprovalRequest).where(
                ApprovalRequest.plan_id == record.id, col(ApprovalRequest.used_at).is_(None)
            )
        ):
            request.expires_at = utcnow() + ttl
            request.notified_at = None
            session.add(request)
        current = session.get(Case, case.id)
        if current is not None and current.status == CaseStatus.NEEDS_ATTENTION:
            current.status = CaseStatus.AWAITING_APPROVAL
            current.status_detail = ""
            current.updated_at = utcnow()
            session.add(current)
        audit.append(
            session,
            action="approval.renewed",
            actor=actor,
            case_id=case.id,
            details={"plan_hash": record.plan_hash},
        )

    audit.in_transaction(services.engine, renew)
    return request_approvals(services, case, record)


def ask_deputies(
    services: ApprovalPorts, case: Case, record: RevocationPlanRecord, now: datetime
) -> list[IssuedLink]:
    """Ask, on a plan waiting for a decision, each active deputy of an approver who was asked
    on it and whose deputy has no request yet: a deputyship that started (or was named)
    after the requests went out. Each deputy is asked once per plan: the request is claimed
    with its audit event (`approval.deputy_asked`, a `once_key`) in one transaction, so two
    passes at once ask once. The four-eyes rules hold (`deputies_to_ask`)."""
    engine = services.engine
    with Session(engine, expire_on_commit=False) as session:
        requests = list(
            session.exec(select(ApprovalRequest).where(ApprovalRequest.plan_id == record.id))
        )
    asked = {_key(r.approver_id) for r in requests}
    approvers = [
        p
        for p in eligible_approvers(
            approvers_for(services, urgent=case.urgent),
            requester_id=case.requested_by,
            leaver_id=case.employee_id,
        )
        if _key(p.employee_id) in asked
    ]
    ttl = timedelta(hours=services.settings.approval_ttl_hours)
    issued: list[IssuedLink] = []
    for deputy, manager in deputies_to_ask(services, case, approvers, now):
        if _key(deputy.employee_id) in asked:
            continue
        request = _claim_deputy_request(services, case, record, deputy, manager, now, ttl)
        if request is None:
            continue  # asked before, or by another pass just now
        try:
            url = mail_request(services, case, record, request, deputy, manager)
        except MailError as exc:  # the claim stays (no retry storm); a person can resend
            log.error("deputy not mailed", case_id=case.id, error=str(exc))
            audit.record(
                engine,
                action="email.approval_request",
                actor="service",
                outcome="failed",
                case_id=case.id,
                details={
                    "to": request.approver_email,
                    "approver_id": deputy.employee_id,
                    "deputy_for": manager.employee_id,
                    "request_id": request.id,
                    "error": str(exc),
                },
            )
            continue
        issued.append(IssuedLink(approver=deputy, url=url, deputy_for=manager))
    return issued


def new_request(
    default_language: str,
    record: RevocationPlanRecord,
    person: Person,
    now: datetime,
    ttl: timedelta,
) -> ApprovalRequest:
    """A request for `person` to decide on `record`, valid `ttl` from `now` (not yet stored)."""
    return ApprovalRequest(
        case_id=record.case_id,
        plan_id=record.id,
        plan_hash=record.plan_hash,
        approver_id=person.employee_id,
        approver_email=person.email,
        language=pick_language(person.language, default_language),
        created_at=now,
        expires_at=now + ttl,
    )


def _claim_deputy_request(
    services: ApprovalPorts,
    case: Case,
    record: RevocationPlanRecord,
    deputy: Person,
    manager: Person,
    now: datetime,
    ttl: timedelta,
) -> ApprovalRequest | None:
    """The deputy's new request and its audit event, together; None when it exists."""
    request = new_request(services.settings.default_language, record, deputy, now, ttl)

    def claim(session: Session) -> bool:
        stored = session.exec(
            select(ApprovalRequest).where(
                ApprovalRequest.plan_id == record.id,
                ApprovalRequest.approver_id == deputy.employee_id,
            )
        ).first()
        if stored is not None:
            return False  # asked in the first round, or by another pass
        event = audit.append(
            session,
            action="approval.deputy_asked",
            actor="service",
            case_id=case.id,
            details={
                "request_id": request.id,
                "approver_id": deputy.employee_id,
                "deputy_for": manager.employee_id,
                "plan_hash": record.plan_hash,
            },
            once_key=f"approval.deputy_asked:{record.id}:{_key(deputy.employee_id)}",
        )
        if event is None:
            return False
        request.notified_at = now  # the mail follows at once; a failure is audited
        session.add(request)
        return True

    return request if audit.in_transaction(services.engine, claim) else None


def _key(employee_id: str) -> str:
    return employee_id.strip().casefold()


def decision_context(services: ApprovalPorts, case: Case, plan: RevocationPlan) -> dict[str, Any]:
    """What a second manager is shown, in the email and on the page: who, why, exactly what."""
    requester = services.people.find_person(case.requested_by)
    return {
        "leaver": leaver_view(case),
        "requester": {
            "employee_id": case.requested_by,
            "display_name": requester.display_name if requester else case.requested_by,
        },
        "case_id": case.id,
        "last_working_day": case.last_working_day.isoformat(),
        "urgent": case.urgent,
        "plan": plan.rows(),
        "plan_hash": plan.plan_hash,
    }
