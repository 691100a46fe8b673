"""The parts of an evidence pack, each built from the rows and audit events of one case.

An event is matched to its row by the id its details name; once the retention policy has
erased the details, by the same actor closest in time (see `recording`).
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

from connectors.base import ELSEWHERE, KEEP, Message
from offboarding.domain.models import (
    ApprovalDecision,
    Attestation,
    Case,
    RevocationPlanRecord,
    RevocationStep,
    as_utc,
)
from offboarding.domain.plan import RevocationPlan
from offboarding.evidence.rows import (
    AttestationRow,
    CheckRow,
    DecisionRow,
    Event,
    KeptRow,
    PlanVersion,
    RefusalRow,
    StepRow,
    VerificationRun,
    when,
)

ERASED_PLAN = "{}"  # what the retention policy leaves of a plan's canonical JSON
FINAL_ACTIONS = ("case.completed", "case.rejected", "case.needs_attention")


def recording(
    events: list[Event],
    action: str,
    key: str,
    wanted: str,
    actor: str,
    at: datetime | None,
    taken: set[int],
) -> Event | None:
    """The event of `action` that recorded a row: the one whose details name it (`key`),
    else (details erased by the retention policy) the one by the same actor closest in time."""
    mine = [e for e in events if e.action == action]
    named = next((e for e in mine if str(e.details.get(key, "")) == wanted), None)
    if named is not None or at is None:
        return named
    # `taken`: events already matched to another row
    erased = [e for e in mine if not e.details and e.actor == actor and e.seq not in taken]
    return min(erased, key=lambda e: abs(e.moment - as_utc(at)), default=None)


def case_view(case: Case) -> dict[str, Any]:
    return {
        "id": case.id,
        "employee_id": case.employee_id,
        "display_name": case.display_name,
        "email": case.employee_email,
        "manager_id": case.manager_id or "",
        "requested_by": case.requested_by,
        "last_working_day": case.last_working_day.isoformat(),
        "urgent": case.urgent,
        "status": case.status.value,
        "status_detail": case.status_detail,
        "created_at": when(case.created_at),
        "updated_at": when(case.updated_at),
    }


def trigger_of(case: Case, events: list[Event]) -> dict[str, Any]:
    opened = next((e for e in events if e.action == "case.opened"), None)
    return {
        "event_id": case.event_id,
        "occurred_at": when(case.occurred_at),
        "received_at": opened.at if opened else when(case.created_at),
        "actor": opened.actor if opened else "",
        "scheduled_for": (opened.details.get("scheduled_for") or "") if opened else "",
        "seq": opened.seq if opened else None,
    }


def stored_plan(record: RevocationPlanRecord) -> RevocationPlan | None:
    """The stored plan; None once the retention policy erased its content."""
    if record.canonical == ERASED_PLAN:
        return None
    return RevocationPlan.from_canonical(record.canonical)


def plan_version(record: RevocationPlanRecord, plan: RevocationPlan | None) -> PlanVersion:
    recomputed = hashlib.sha256(record.canonical.encode()).hexdigest()
    if plan is None:
        return PlanVersion(
            version=record.version,
            plan_hash=record.plan_hash,
            hash_verified=False,
            status=record.status.value,
            created_at=when(record.created_at),
            steps=[],
            erased=True,
        )
    return PlanVersion(
        version=record.version,
        plan_hash=record.plan_hash,
        hash_verified=recomputed == record.plan_hash == plan.plan_hash,
        status=record.status.value,
        created_at=when(record.created_at),
        steps=plan.rows(),
    )


def _signed_in_as(event: Event | None) -> str:
    """The account a decision's approver signed in with (approver sign-in), else ""."""
    identity = event.details.get("identity") if event else None
    if not isinstance(identity, dict) or identity.get("proven_by") != "entra_sign_in":
        return ""
    return f"{identity.get('value', '')} ({identity.get('claim', '')})"


def decision_rows(
    stored: list[ApprovalDecision], events: list[Event], records: list[RevocationPlanRecord]
) -> list[DecisionRow]:
    """Every recorded decision, at the time and by the actor of its audit event."""
    versions = {r.plan_hash: r.version for r in records}
    rows: list[DecisionRow] = []
    cited: set[int] = set()
    for row in sorted(stored, key=lambda d: as_utc(d.decided_at)):
        actor = f"employee:{row.approver_id}"
        event = recording(
            events, "decision.recorded", "decision_id", row.id, actor, row.decided_at, cited
        )
        if event is not None:
            cited.add(event.seq)
        rows.append(
            DecisionRow(
                at=event.at if event else when(row.decided_at),
                actor=event.actor if event else actor,
                approver_id=row.approver_id,
                decision=row.decision.value,
                plan_hash=row.plan_hash,
                plan_version=versions.get(row.plan_hash),
                reason=row.reason,
                seq=event.seq if event else None,
                signed_in_as=_signed_in_as(event),
            )
        )
    for event in events:  # an event whose stored decision is gone: shown as recorded
        if event.action == "decision.recorded" and event.seq not in cited:
            plan_hash = str(event.details.get("plan_hash", ""))
            rows.append(
                DecisionRow(
                    at=event.at,
                    actor=event.actor,
                    approver_id=event.actor.removeprefix("employee:"),
                    decision=event.outcome,
                    plan_hash=plan_hash,
                    plan_version=versions.get(plan_hash),
                    reason=str(event.details.get("reason", "")),
                    seq=event.seq,
                    signed_in_as=_signed_in_as(event),
                )
            )
    return sorted(rows, key=lambda r: (r.seq is None, r.seq or 0))


def refusal_row(event: Event) -> RefusalRow:
    details = event.details
    reasons = details.get("refusals") or [details.get("why") or details.get("status") or ""]
    return RefusalRow(
        at=event.at,
        actor=event.actor,
        action=event.action,
        outcome=event.outcome,
        reasons=[str(r) for r in reasons if r != ""],
        seq=event.seq,
    )


def label_of(labels: dict[str, Message], key: str) -> Message:
    return labels.get(key) or Message.plain(key)


def step_row(event: Event, labels: dict[str, Message]) -> StepRow:
    grant = str(event.details.get("grant", ""))
    return StepRow(
        at=event.at,
        actor=event.actor,
        grant=grant,
        label=label_of(labels, grant),
        action=str(event.details.get("action", "")),
        outcome=event.outcome,
        detail=str(event.details.get("detail", "")),
        seq=event.seq,
    )


def attestation_rows(
    stored: list[Attestation], events: list[Event], labels: dict[str, Message]
) -> list[AttestationRow]:
    rows = []
    taken: set[int] = set()
    for row in sorted(stored, key=lambda a: (as_utc(a.created_at), a.label)):
        event = recording(
            events,
            "manual_step.attested",
            "attestation_id",
            row.id,
            f"employee:{row.attested_by}",
            row.attested_at,
            taken,
        )
        if event is not None:
            taken.add(event.seq)
        rows.append(
            AttestationRow(
                step=labels.get(row.grant_key) or Message.plain(row.label),
                assignee_id=row.assignee_id,
                requested_at=when(row.created_at),
                due_at=when(row.due_at),
                attested_at=event.at if event else when(row.attested_at),
                actor=event.actor
                if event
                else (f"employee:{row.attested_by}" if row.attested_by else ""),
                remark=row.remark,
                seq=event.seq if event else None,
            )
        )
    return rows


def verification_run(event: Event, labels: dict[str, Message]) -> VerificationRun:
    checks: list[CheckRow] = []
    remaining: list[Message] = []
    for connector, result in sorted(event.details.items()):
        if not isinstance(result, dict):
            continue
        for check in result.get("checks", []):
            checks.append(
                CheckRow(
                    connector=connector,
                    check=str(check.get("check", "")),
                    name=str(check.get("name", "")),
                    passed=bool(check.get("passed")),
                    detail=str(check.get("detail", "")),
                )
            )
        remaining.extend(label_of(labels, str(key)) for key in result.get("remaining", []))
    return VerificationRun(
        at=event.at, outcome=event.outcome, seq=event.seq, checks=checks, remaining=remaining
    )


def kept_rows(
    records: list[RevocationPlanRecord],
    plans: dict[str, RevocationPlan | None],
    stored: list[RevocationStep],
) -> list[KeptRow]:
    """What the last plan keeps on purpose or leaves to another system, with the recorded
    detail ("kept: ...") once the step was taken."""
    last_plan = plans[records[-1].id] if records else None
    if last_plan is None:
        return []
    last = records[-1]
    done = {s.grant_key: s for s in stored if s.plan_id == last.id}
    return [
        KeptRow(
            connector=step.grant.connector,
            action=step.action,
            label=step.grant.label,
            detail=done[step.grant.key].detail if step.grant.key in done else "",
            recorded_at=when(done[step.grant.key].attempted_at) if step.grant.key in done else "",
        )
        for step in last_plan.steps
        if step.action in (KEEP, ELSEWHERE)
    ]


def final_status(case: Case, events: list[Event]) -> dict[str, Any]:
    closing = [e for e in events if e.action in FINAL_ACTIONS]
    last = closing[-1] if closing else None
    return {
        "status": case.status.value,
        "detail": case.status_detail,
        "at": last.at if last else when(case.updated_at),
        "actor": last.actor if last else "",
        "reason": str(last.details.get("reason") or last.details.get("problem") or "")
        if last
        else "",
        "seq": last.seq if last else None,
    }
