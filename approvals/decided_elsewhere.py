"""Telling the other asked managers that the plan was decided, so nobody opens a dead link.

Sent once per request (an audit `once_key`, claimed before the mail goes out), and only
when the plan is settled: with two approvals required, the first approval leaves the
others with work to do, and they hear nothing.
"""

from __future__ import annotations

import structlog
from sqlmodel import Session, col, select

from approvals.decisions import settle
from approvals.reminders import FollowUpPorts, local_time
from approvals.rules import Verdict
from offboarding.domain import audit
from offboarding.domain.cases import leaver_view
from offboarding.domain.models import (
    ApprovalDecision,
    ApprovalRequest,
    Case,
    RevocationPlanRecord,
)
from offboarding.notification.mail import MailError, OutgoingEmail
from offboarding.notification.rendering import render_email

log = structlog.get_logger(__name__)


def tell_other_approvers(
    services: FollowUpPorts,
    case: Case,
    record: RevocationPlanRecord,
    decision: ApprovalDecision,
) -> list[str]:
    """Mail every other asked approver with an unused link: "decided by X at T, nothing to
    do". The addresses mailed (empty while the plan still waits for more approvals)."""
    settlement = settle(services, case, record)
    if settlement.verdict == Verdict.PENDING or settlement.deciding is None:
        return []
    deciding = settlement.deciding  # the one that counts (normally `decision` itself)
    decider = services.people.find_person(deciding.approver_id)
    with Session(services.engine, expire_on_commit=False) as session:
        others = list(
            session.exec(
                select(ApprovalRequest).where(
                    ApprovalRequest.plan_id == record.id,
                    col(ApprovalRequest.used_at).is_(None),
                    col(ApprovalRequest.notified_at).is_not(None),
                    ApprovalRequest.approver_id != decision.approver_id,
                    ApprovalRequest.approver_id != deciding.approver_id,
                )
            )
        )
    mailed: list[str] = []
    for request in others:
        claimed = audit.record(
            services.engine,
            action="email.decided_elsewhere",
            actor="service",
            case_id=case.id,
            details={
                "to": request.approver_email,
                "request_id": request.id,
                "decision_id": deciding.id,
                "language": request.language,
            },
            once_key=f"email.decided_elsewhere:{request.id}",
        )
        if claimed is None:
            continue
        person = services.people.find_person(request.approver_id)
        rendered = render_email(
            services.templates,
            "approval_decided_elsewhere",
            request.language,
            {
                "recipient": {
                    "display_name": person.display_name if person else request.approver_id
                },
                "leaver": leaver_view(case),
                "case_id": case.id,
                "decided_by": decider.display_name if decider else deciding.approver_id,
                "decided_at": local_time(deciding.decided_at, services.settings.zone),
                "approved": settlement.verdict == Verdict.APPROVED,
            },
        )
        try:
            services.mailer.send(
                OutgoingEmail(
                    to=[request.approver_email],
                    subject=rendered.subject,
                    text=rendered.text,
                    html=rendered.html,
                )
            )
        except MailError as exc:  # courtesy mail: the decision stands; record and go on
            log.error("decided-elsewhere mail not sent", case_id=case.id, error=str(exc))
            audit.record(
                services.engine,
                action="email.decided_elsewhere",
                actor="service",
                outcome="failed",
                case_id=case.id,
                details={"to": request.approver_email, "error": str(exc)},
            )
            continue
        mailed.append(request.approver_email)
    return mailed
