"""The flow's own check of a decision: signature, record, and every four-eyes rule again.

Nothing here trusts the run input: a resume from the Prefect UI or API with
made-up input fails these checks and the run waits again.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlmodel import Session

from approvals.deputies import RuleInputs, rule_inputs
from approvals.ports import ApprovalPorts
from approvals.rules import (
    REFUSAL_TEXT,
    DecisionClaim,
    Refusal,
    Verdict,
    refusals,
    ties_between,
    verdict,
)
from approvals.tokens import SignedDecision
from offboarding.domain import audit
from offboarding.domain.cases import decisions_on
from offboarding.domain.models import ApprovalDecision, Case, RevocationPlanRecord, as_utc


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
    broken = _rules_broken(stored, case, record, rule_inputs(services, case))
    return [REFUSAL_TEXT[r] for r in broken]


def _rules_broken(
    stored: ApprovalDecision, case: Case, record: RevocationPlanRecord, people: RuleInputs
) -> list[Refusal]:
    claim = DecisionClaim(
        approver_id=stored.approver_id,
        requester_id=case.requested_by,
        leaver_id=case.employee_id,
        plan_hash=stored.plan_hash,
    )
    return refusals(
        claim,
        managers=people.approvers,
        current_plan_hash=record.plan_hash,
        deputies=people.deputies,
        at=as_utc(stored.decided_at),  # a deputy counts for the period they decided in
    )


@dataclass(frozen=True)
class Settlement:
    """Where a plan stands: the verdict of the recorded decisions that pass every rule now,
    the decision that settled it (if any), and the recorded ones the rules refuse."""

    verdict: Verdict
    deciding: ApprovalDecision | None = None
    refused: tuple[tuple[ApprovalDecision, tuple[Refusal, ...]], ...] = ()


def settle(
    services: ApprovalPorts,
    case: Case,
    record: RevocationPlanRecord,
    people: RuleInputs | None = None,
) -> Settlement:
    """THE decision function: the approval page, the flow, the dispatcher and the CLI all
    ask this, so they cannot disagree. Pure: it records nothing (see `audit_refused`).
    `people`: the case's approvers and deputies when the caller has just read them."""
    people = people if people is not None else rule_inputs(services, case)
    valid: list[ApprovalDecision] = []
    refused: list[tuple[ApprovalDecision, tuple[Refusal, ...]]] = []
    for stored in decisions_on(services.engine, case.id, record.plan_hash):
        broken = _rules_broken(stored, case, record, people)
        if broken:
            refused.append((stored, tuple(broken)))
        else:
            valid.append(stored)
    ordered = sorted(valid, key=lambda d: d.decided_at)
    outcome = verdict(
        services.policy,
        [(d.approver_id, d.decision.value) for d in ordered],
        urgent=case.urgent,  # an instant dismissal may need more approvals
        ties=ties_between(
            people.deputies, [(d.approver_id, as_utc(d.decided_at)) for d in ordered]
        ),
    )
    deciding = None
    if outcome != Verdict.PENDING:
        wanted = "reject" if outcome == Verdict.REJECTED else "approve"
        deciding = next(d for d in reversed(ordered) if d.decision.value == wanted)
    return Settlement(outcome, deciding, tuple(refused))


def audit_refused(services: ApprovalPorts, case: Case, settlement: Settlement) -> None:
    """Record (once each) the stored decisions the rules no longer accept."""
    for stored, broken in settlement.refused:
        audit.record(
            services.engine,
            action="decision.refused",
            actor="service",
            outcome="refused",
            case_id=case.id,
            details={"decision_id": stored.id, "refusals": [r.value for r in broken]},
            once_key=f"stored-decision:{stored.id}",
        )


def valid_verdict(services: ApprovalPorts, case: Case, record: RevocationPlanRecord) -> Verdict:
    """The flow's view: `settle`, with refused stored decisions recorded in the audit log."""
    settlement = settle(services, case, record)
    audit_refused(services, case, settlement)
    return settlement.verdict
