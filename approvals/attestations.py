"""Attested manual steps: what a person does and then confirms through a signed link.

A plan step whose action is `manual` (the work instruction's own steps, and what a
connector can only report — a dynamic group, an unmapped git login) is never sent to a
system. Once the plan is approved, each gets one `Attestation`, assigned to a named person
(the step's assignee; else the policy's `manual_assignee`; else the case's requester), who
gets an email with a personal link. The page shows the step (GET decides nothing: mail
scanners fetch links); a POST with the CSRF token attests it, once, with an optional
remark — the attestation, the step's record and the audit event in one transaction. The
case is completed only when every manual step is attested; past `attest_within_hours`
the dispatcher puts it in "needs attention" (the links keep working).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

import structlog
from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from approvals.ports import ApprovalPorts
from approvals.tokens import AttestationClaims, AttestationSigner
from connectors.base import MANUAL, Message, Person
from offboarding.domain import audit
from offboarding.domain.cases import get_plan, leaver_view
from offboarding.domain.models import (
    Attestation,
    Case,
    RevocationPlanRecord,
    RevocationStep,
    StepStatus,
    as_utc,
    utcnow,
)
from offboarding.domain.plan import PlanStep, RevocationPlan
from offboarding.domain.policy import Policy
from offboarding.domain.revocation import ATTESTED_PREFIX
from offboarding.notification.mail import OutgoingEmail
from offboarding.notification.rendering import pick_language, render_email

log = structlog.get_logger(__name__)
LINK_DAYS = 30  # an attestation link works at most this long (and only while the step is open)


class AttestationPorts(ApprovalPorts, Protocol):
    @property
    def attestations(self) -> AttestationSigner: ...

    @property
    def rules(self) -> Policy: ...


class NoAssignee(Exception):
    """A manual step names someone the people directory does not know."""


@dataclass(frozen=True)
class IssuedAttestation:
    assignee: Person
    url: str
    step: str


def manual_steps(plan: RevocationPlan) -> list[PlanStep]:
    return [step for step in plan.steps if step.action == MANUAL]


def assignee_of(rules: Policy, case: Case, step: PlanStep) -> str:
    return step.grant.revoke_data.get("assignee") or rules.manual_assignee or case.requested_by


def attestations_of(services: Any, plan_id: str) -> dict[str, Attestation]:
    """The plan's attestations by grant key."""
    with Session(services.engine, expire_on_commit=False) as session:
        rows = session.exec(select(Attestation).where(Attestation.plan_id == plan_id)).all()
    return {row.grant_key: row for row in rows}


def unattested(services: Any, record: RevocationPlanRecord) -> list[PlanStep]:
    """The plan's manual steps nobody has attested yet."""
    done = {k for k, a in attestations_of(services, record.id).items() if a.attested_at}
    plan = RevocationPlan.from_canonical(record.canonical)
    return [step for step in manual_steps(plan) if step.grant.key not in done]


def attestation_url(services: AttestationPorts, token: str) -> str:
    return f"{services.settings.base_url}/attest/{token}"


def request_attestations(
    services: AttestationPorts, case: Case, record: RevocationPlanRecord
) -> list[IssuedAttestation]:
    """Create (once) an attestation per manual step of the approved plan and email each
    assignee their link. Idempotent: a re-run only mails what was not mailed yet."""
    plan = RevocationPlan.from_canonical(record.canonical)
    steps = manual_steps(plan)
    if not steps:
        return []
    existing = attestations_of(services, record.id)
    due = utcnow() + timedelta(hours=services.rules.attest_within_hours)
    issued: list[IssuedAttestation] = []
    for step in steps:
        row = existing.get(step.grant.key)
        if row is not None and row.notified_at is not None:
            continue
        assignee_id = row.assignee_id if row else assignee_of(services.rules, case, step)
        person = services.people.find_person(assignee_id)
        if person is None or not person.email:
            raise NoAssignee(
                f"manual step {step.grant.label.text!r}: its assignee {assignee_id!r} is not in "
                "the people directory (or has no email); fix [policy] manual_steps / "
                "manual_assignee and retry the run"
            )
        row = row or _create(services, case, record, step, person, due)
        token = services.attestations.issue(
            AttestationClaims(
                attestation_id=row.id,
                case_id=case.id,
                assignee_id=row.assignee_id,
                grant_key=row.grant_key,
            )
        )
        url = attestation_url(services, token)
        rendered = render_email(
            services.templates,
            "attestation_request",
            row.language,
            {
                **step_context(case, step, row),
                "assignee": {"display_name": person.display_name},
                "link": url,
            },
        )
        message_id = services.mailer.send(
            OutgoingEmail(
                to=[person.email], subject=rendered.subject, text=rendered.text, html=rendered.html
            )
        )
        audit.record(
            services.engine,
            action="email.attestation_request",
            actor="service",
            case_id=case.id,
            details={
                "to": person.email,
                "assignee_id": person.employee_id,
                "attestation_id": row.id,
                "step": step.grant.key,
                "due_at": as_utc(row.due_at).isoformat(),
                "message_id": message_id,
                "language": row.language,
            },
        )
        with Session(services.engine) as session:
            stored = session.get(Attestation, row.id)
            if stored is not None:
                stored.notified_at = utcnow()
                session.add(stored)
                session.commit()
        issued.append(IssuedAttestation(person, url, step.grant.key))
    return issued


def _create(
    services: AttestationPorts,
    case: Case,
    record: RevocationPlanRecord,
    step: PlanStep,
    person: Person,
    due: datetime,
) -> Attestation:
    row = Attestation(
        case_id=case.id,
        plan_id=record.id,
        plan_hash=record.plan_hash,
        grant_key=step.grant.key,
        label=step.grant.label.text[:1000],
        assignee_id=person.employee_id,
        assignee_email=person.email,
        language=pick_language(person.language, services.settings.default_language),
        due_at=due,
    )

    def store(session: Session) -> Attestation:
        session.add(row)
        audit.append(
            session,
            action="attestation.requested",
            actor="service",
            case_id=case.id,
            details={
                "attestation_id": row.id,
                "step": step.grant.key,
                "assignee_id": person.employee_id,
                "plan_hash": record.plan_hash,
                "due_at": due.isoformat(),
            },
        )
        return row

    try:
        return audit.in_transaction(services.engine, store)
    except IntegrityError:  # a run recovered at the same moment created it first
        found = attestations_of(services, record.id).get(step.grant.key)
        if found is None:
            raise
        return found


def step_context(case: Case, step: PlanStep, row: Attestation) -> dict[str, Any]:
    """What the assignee is shown, in the email and on the page."""
    return {
        "leaver": leaver_view(case),
        "case_id": case.id,
        "step": step.grant.label,
        "system": step.grant.connector,
        "due_at": as_utc(row.due_at).strftime("%Y-%m-%d %H:%M UTC"),
        "plan_hash": row.plan_hash,
    }


class AlreadyAttested(Exception):
    def __init__(self, row: Attestation) -> None:
        super().__init__(f"attested by {row.attested_by} at {row.attested_at}")
        self.row = row


def attest(services: Any, attestation_id: str, *, remark: str) -> Attestation:
    """Record that the assignee did the step: the attestation, the plan step's record and
    the audit event, in one transaction; a second attempt raises AlreadyAttested."""
    now = utcnow()

    def store(session: Session) -> Attestation:
        claimed = session.execute(
            update(Attestation)
            .where(col(Attestation.id) == attestation_id, col(Attestation.attested_at).is_(None))
            .values(attested_at=now, remark=remark)
        )
        row = session.get(Attestation, attestation_id)
        if row is None:
            raise LookupError(f"attestation {attestation_id} not found")
        if claimed.rowcount != 1:  # type: ignore[attr-defined]
            raise AlreadyAttested(row)
        row.attested_by = row.assignee_id
        session.add(row)
        step = session.exec(
            select(RevocationStep).where(
                RevocationStep.plan_id == row.plan_id, RevocationStep.grant_key == row.grant_key
            )
        ).first() or RevocationStep(
            case_id=row.case_id,
            plan_id=row.plan_id,
            grant_key=row.grant_key,
            label=row.label,
            status=StepStatus.DONE,
        )
        step.status = StepStatus.DONE
        step.detail = attested_detail(row)
        step.attempted_at = now
        session.add(step)
        audit.append(
            session,
            action="manual_step.attested",
            actor=f"employee:{row.assignee_id}",
            outcome="attested",
            case_id=row.case_id,
            details={
                "attestation_id": row.id,
                "step": row.grant_key,
                "plan_hash": row.plan_hash,
                "remark": remark,
            },
        )
        return row

    return audit.in_transaction(services.engine, store)


def attested_detail(row: Attestation) -> str:
    when = as_utc(row.attested_at).strftime("%Y-%m-%d %H:%M UTC") if row.attested_at else "?"
    remark = f": {row.remark}" if row.remark else ""
    return f"{ATTESTED_PREFIX}{row.assignee_id} at {when}{remark}"


def overdue(services: Any, case_id: str, now: datetime | None = None) -> list[Attestation]:
    """The case's unattested attestations past their deadline."""
    moment = now or utcnow()
    with Session(services.engine, expire_on_commit=False) as session:
        rows = session.exec(
            select(Attestation).where(
                Attestation.case_id == case_id, col(Attestation.attested_at).is_(None)
            )
        ).all()
    return [row for row in rows if as_utc(row.due_at) < moment]


def evidence_rows(services: Any, plan_id: str) -> list[dict[str, Any]]:
    """Who attested what, when, with which remark; open ones with their assignee. `step`
    is the step's message (rendered in the reader's language)."""
    record = get_plan(services.engine, plan_id)
    labels = (
        {s.grant.key: s.grant.label for s in RevocationPlan.from_canonical(record.canonical).steps}
        if record is not None
        else {}
    )
    return [
        {
            "step": labels.get(row.grant_key) or Message.plain(row.label),
            "assignee": row.assignee_id,
            "due_at": as_utc(row.due_at).strftime("%Y-%m-%d %H:%M UTC"),
            "attested_at": as_utc(row.attested_at).strftime("%Y-%m-%d %H:%M UTC")
            if row.attested_at
            else "",
            "attested_by": row.attested_by or "",
            "remark": row.remark,
        }
        for row in sorted(attestations_of(services, plan_id).values(), key=lambda r: r.label)
    ]
