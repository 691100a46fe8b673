"""Gather the evidence of one finished case from the database and the audit log.

Everything the pack shows is read here, once, and only from what the service stored: the
case row (the leaver and the HR trigger), every plan version with its canonical JSON and
SHA-256 (recomputed, so a changed plan shows), the decisions and the refused attempts, each
revocation step as the audit log recorded it, the attestations of the manual steps, the
verification checks, what was deliberately kept, and the audit-chain anchor: the hash of the
case's last event and of the chain's head when the pack was made. Nobody is looked up in a
directory: the pack says what the service recorded, not what is true today.

Times are UTC, shown to the second; an event's time is the audit log's.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from offboarding.domain.audit import canonical_json, verify_chain
from offboarding.domain.models import (
    ApprovalDecision,
    Attestation,
    AuditEvent,
    Case,
    CaseStatus,
    RevocationPlanRecord,
    RevocationStep,
    as_utc,
    utcnow,
)
from offboarding.evidence.rows import Anchor, Event, EvidencePack, when
from offboarding.evidence.sections import (
    attestation_rows,
    case_view,
    decision_rows,
    final_status,
    kept_rows,
    plan_version,
    refusal_row,
    step_row,
    stored_plan,
    trigger_of,
    verification_run,
)

FINISHED = (CaseStatus.COMPLETED, CaseStatus.REJECTED, CaseStatus.NEEDS_ATTENTION)
REFUSED_ACTIONS = ("decision.refused", "decision.missing", "intake.refused")


class UnknownCase(LookupError):
    def __init__(self, case_id: str) -> None:
        super().__init__(f"No case {case_id}; `offboarding cases` lists the cases.")
        self.case_id = case_id


class CaseNotFinished(ValueError):
    def __init__(self, case: Case) -> None:
        super().__init__(
            f"case {case.id} is {case.status.value}: an evidence pack is only made for a "
            "finished case (completed, rejected or needs_attention)."
        )
        self.case_id = case.id
        self.status = case.status


def _event(row: AuditEvent) -> Event:
    details = {} if row.erased else json.loads(row.details)
    return Event(
        seq=row.seq,
        at=when(row.at),
        actor=row.actor,
        action=row.action,
        outcome=row.outcome,
        hash=row.hash,
        details=details if isinstance(details, dict) else {"value": details},
        moment=as_utc(row.at),
    )


def gather(engine: Engine, case_id: str, *, now: datetime | None = None) -> EvidencePack:
    """The evidence pack of a finished case; UnknownCase / CaseNotFinished otherwise."""
    with Session(engine) as session:
        case = session.get(Case, case_id)
        if case is None:
            raise UnknownCase(case_id)
        if case.status not in FINISHED:
            raise CaseNotFinished(case)
        records = list(
            session.exec(
                select(RevocationPlanRecord)
                .where(RevocationPlanRecord.case_id == case_id)
                .order_by(col(RevocationPlanRecord.version))
            )
        )
        decisions = list(session.exec(select(ApprovalDecision).where(_of(ApprovalDecision, case))))
        stored_steps = list(session.exec(select(RevocationStep).where(_of(RevocationStep, case))))
        attestations = list(session.exec(select(Attestation).where(_of(Attestation, case))))
        rows = list(
            session.exec(
                select(AuditEvent)
                .where(AuditEvent.case_id == case_id)
                .order_by(col(AuditEvent.seq))
            )
        )
        rows += _intake_refusals(session, case)
        head = session.exec(select(AuditEvent).order_by(col(AuditEvent.seq).desc())).first()
    own = [r for r in rows if r.case_id == case_id]
    if not own or head is None:
        raise UnknownCase(case_id)  # a case without its audit trail is not evidence
    events = sorted((_event(r) for r in rows), key=lambda e: e.seq)
    plans = {r.id: stored_plan(r) for r in records}
    labels = {s.grant.key: s.grant.label for p in plans.values() if p for s in p.steps}
    chain = verify_chain(engine)
    return EvidencePack(
        case=case_view(case),
        trigger=trigger_of(case, events),
        plans=[
            replace(
                plan_version(r, plans[r.id]),
                instruction=instruction_of(r, events),
                instruction_label=instruction_file_of(r, events)[0],
                instruction_sha256=instruction_file_of(r, events)[1],
            )
            for r in records
        ],
        decisions=decision_rows(decisions, events, records),
        refusals=[refusal_row(e) for e in events if e.action in REFUSED_ACTIONS],
        steps=[step_row(e, labels) for e in events if e.action == "revocation.step"],
        attestations=attestation_rows(attestations, events, labels),
        verifications=[verification_run(e, labels) for e in events if e.action == "verification"],
        kept=kept_rows(records, plans, stored_steps),
        final=final_status(case, events),
        anchor=Anchor(
            case_seq=own[-1].seq,
            case_hash=own[-1].hash,
            head_seq=head.seq,
            head_hash=head.hash,
            chain_verified=chain.ok,
            chain_events=chain.events,
            chain_problem=chain.problem,
        ),
        timeline=events,
        generated_at=when(now or utcnow()),
    )


def _of(table: Any, case: Case) -> Any:
    return table.case_id == case.id


def instruction_of(record: RevocationPlanRecord, events: list[Event]) -> str:
    """The work instruction version recorded with the plan's `plan.created` event."""
    for event in events:
        if event.action == "plan.created" and event.details.get("plan_hash") == record.plan_hash:
            return str(event.details.get("instruction") or "")
    return ""


def instruction_file_of(record: RevocationPlanRecord, events: list[Event]) -> tuple[str, str]:
    """The work instruction file's version label and SHA-256 recorded with the plan."""
    for event in events:
        if event.action == "plan.created" and event.details.get("plan_hash") == record.plan_hash:
            details = event.details
            return str(details.get("instruction_label") or ""), str(
                details.get("instruction_sha256") or ""
            )
    return "", ""


def _intake_refusals(session: Session, case: Case) -> list[AuditEvent]:
    """HR events about this case that the intake refused. The intake records them without a
    case id; they are found by the HR event id the case was opened with."""
    needle = f'"event_id":{canonical_json(case.event_id)}'
    found = session.exec(
        select(AuditEvent).where(
            AuditEvent.action == "intake.refused",
            col(AuditEvent.case_id).is_(None),
            col(AuditEvent.details).contains(needle),
        )
    ).all()
    return [row for row in found if _event(row).details.get("event_id") == case.event_id]
