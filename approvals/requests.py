"""Asking for a decision: one personal link per eligible second manager, by email."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import structlog
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
    PlanStatus,
    RevocationPlanRecord,
    utcnow,
)
from offboarding.domain.plan import RevocationPlan
from offboarding.notification.mail import OutgoingEmail
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
    plan = RevocationPlan.from_canonical(record.canonical)
    ttl = timedelta(hours=services.settings.approval_ttl_hours)
    issued: list[IssuedLink] = []
    for approver, deputy_for in asked:
        language = pick_language(approver.language, services.settings.default_language)
        request = existing.get(approver.employee_id)
        if request is not None and request.notified_at is not None:
            continue
        request = request or ApprovalRequest(
            case_id=case.id,
            plan_id=record.id,
            plan_hash=record.plan_hash,
            approver_id=approver.employee_id,
            approver_email=approver.email,
            language=language,
            expires_at=utcnow() + ttl,
        )
        with Session(engine, expire_on_commit=False) as session:
            session.add(request)
            session.commit()
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
            language,
            {
                **decision_context(services, case, plan),
                "approver": {"display_name": approver.display_name},
                "deputy_for": deputy_for.display_name if deputy_for else None,
                "link": url,
                "expires_at": request.expires_at.strftime("%Y-%m-%d %H:%M UTC"),
            },
        )
        message_id = services.mailer.send(
            OutgoingEmail(
                to=[approver.email],
                subject=rendered.subject,
                text=rendered.text,
                html=rendered.html,
            )
        )
        audit.record(
            engine,
            action="email.approval_request",
            actor="service",
            case_id=case.id,
            details={
                "to": approver.email,
                "approver_id": approver.employee_id,
                "deputy_for": deputy_for.employee_id if deputy_for else None,
                "request_id": request.id,
                "plan_hash": record.plan_hash,
                "message_id": message_id,
                "language": language,
            },
        )
        with Session(engine) as session:
            request.notified_at = utcnow()
            session.add(request)
            session.commit()
        issued.append(IssuedLink(approver=approver, url=url, deputy_for=deputy_for))
    return issued


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


def ask_waiting_cases(services: ApprovalPorts) -> list[IssuedLink]:
    """Ask, on every case waiting for a decision, whoever is newly due a link (a deputy just
    named). Those already mailed are skipped (`request_approvals` is idempotent)."""
    with Session(services.engine, expire_on_commit=False) as session:
        cases = list(session.exec(select(Case).where(Case.status == CaseStatus.AWAITING_APPROVAL)))
    issued: list[IssuedLink] = []
    for case in cases:
        record = latest_plan(services.engine, case.id)
        if record is None or record.status != PlanStatus.PENDING:
            continue
        if settle(services, case, record).verdict != Verdict.PENDING:
            continue
        try:
            issued += request_approvals(services, case, record)
        except NoEligibleApprover as exc:  # the run reports it; naming a deputy still stands
            log.warning("no links sent", case_id=case.id, problem=str(exc))
    return issued


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
