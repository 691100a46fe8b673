"""The flow's own check of a decision: signature, record, and every four-eyes rule again.

Nothing here trusts the run input: a resume from the Prefect UI or API with
made-up input fails these checks and the run waits again.
"""

from __future__ import annotations

from sqlmodel import Session

from approvals.ports import ApprovalPorts
from approvals.rules import REFUSAL_TEXT, DecisionClaim, Refusal, Verdict, refusals, verdict
from approvals.tokens import SignedDecision
from offboarding.domain import audit
from offboarding.domain.cases import decisions_on
from offboarding.domain.models import ApprovalDecision, Case, RevocationPlanRecord


def _manager_ids(services: ApprovalPorts) -> list[str]:
    return [person.employee_id for person in services.people.managers()]


def check_run_input(
    services: ApprovalPorts, case: Case, record: RevocationPlanRecord, received: SignedDecision
) -> list[str]:
    """Everything wrong with a decision handed to the run; empty means it is genuine and allowed."""
    if not services.decisions.is_genuine(received):
        return [REFUSAL_TEXT[Refusal.BAD_SIGNATURE]]
    with Session(services.engine) as session:
        stored = session.get(ApprovalDecision, received.decision_id)
    if (
        stored is None
        or stored.case_id != case.id
        or stored.case_id != received.case_id
        or stored.plan_hash != received.plan_hash
        or stored.approver_id != received.approver_id
        or stored.decision.value != received.decision
    ):
        return [REFUSAL_TEXT[Refusal.UNKNOWN_DECISION]]
    broken = _rules_broken(stored, case, record, _manager_ids(services))
    return [REFUSAL_TEXT[r] for r in broken]


def _rules_broken(
    stored: ApprovalDecision, case: Case, record: RevocationPlanRecord, managers: list[str]
) -> list[Refusal]:
    claim = DecisionClaim(
        approver_id=stored.approver_id,
        requester_id=case.requested_by,
        leaver_id=case.employee_id,
        plan_hash=stored.plan_hash,
    )
    return refusals(claim, managers=managers, current_plan_hash=record.plan_hash)


def valid_verdict(services: ApprovalPorts, case: Case, record: RevocationPlanRecord) -> Verdict:
    """The verdict from recorded decisions that still pass every rule right now."""
    managers = _manager_ids(services)
    valid: list[tuple[str, str]] = []
    for stored in decisions_on(services.engine, case.id, record.plan_hash):
        broken = _rules_broken(stored, case, record, managers)
        if broken:
            audit.record(
                services.engine,
                action="decision.refused",
                actor="service",
                outcome="refused",
                case_id=case.id,
                details={"decision_id": stored.id, "refusals": [r.value for r in broken]},
                once_key=f"stored-decision:{stored.id}",
            )
            continue
        valid.append((stored.approver_id, stored.decision.value))
    return verdict(services.policy, valid)
