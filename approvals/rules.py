"""The four-eyes rules as plain functions: who may decide, and when a plan is decided.

The web app applies them before it records a decision; the flow applies them
again before it revokes anything. Policy is data (`FourEyesPolicy`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from connectors.base import Person


class Refusal(StrEnum):
    NOT_A_MANAGER = "not_a_manager"
    IS_REQUESTER = "is_requester"
    IS_LEAVER = "is_leaver"
    PLAN_CHANGED = "plan_changed"
    BAD_SIGNATURE = "bad_signature"
    UNKNOWN_DECISION = "unknown_decision"
    DUPLICATE_APPROVER = "duplicate_approver"


REFUSAL_TEXT = {
    Refusal.NOT_A_MANAGER: "the approver is not a manager",
    Refusal.IS_REQUESTER: "the approver requested this offboarding (four-eyes needs someone else)",
    Refusal.IS_LEAVER: "the approver is the person leaving",
    Refusal.PLAN_CHANGED: "the decision is for a different plan than the current one",
    Refusal.BAD_SIGNATURE: "the decision does not carry a valid signature of this service",
    Refusal.UNKNOWN_DECISION: "no such decision was recorded by the approval pages",
    Refusal.DUPLICATE_APPROVER: "this approver already decided on this plan",
}


@dataclass(frozen=True)
class FourEyesPolicy:
    """How many distinct second managers must approve; one rejection rejects."""

    required_approvals: int = 1

    def __post_init__(self) -> None:
        if self.required_approvals < 1:
            raise ValueError("required_approvals must be at least 1")


@dataclass(frozen=True)
class DecisionClaim:
    """A decision as the rules see it: who, on which case's leaver, for which plan."""

    approver_id: str
    requester_id: str
    leaver_id: str
    plan_hash: str


def _norm(employee_id: str) -> str:
    return employee_id.strip().casefold()


def refusals(
    claim: DecisionClaim, *, managers: Iterable[str], current_plan_hash: str
) -> list[Refusal]:
    """Every rule the claim breaks; empty means the approver may decide."""
    found: list[Refusal] = []
    approver = _norm(claim.approver_id)
    if approver not in {_norm(m) for m in managers}:
        found.append(Refusal.NOT_A_MANAGER)
    if approver == _norm(claim.requester_id):
        found.append(Refusal.IS_REQUESTER)
    if approver == _norm(claim.leaver_id):
        found.append(Refusal.IS_LEAVER)
    if claim.plan_hash != current_plan_hash:
        found.append(Refusal.PLAN_CHANGED)
    return found


def eligible_approvers(
    managers: Sequence[Person], *, requester_id: str, leaver_id: str
) -> list[Person]:
    """Managers who may act as the second pair of eyes for this case."""
    excluded = {_norm(requester_id), _norm(leaver_id)}
    seen: set[str] = set()
    eligible: list[Person] = []
    for person in managers:
        key = _norm(person.employee_id)
        if key in excluded or key in seen or not person.email:
            continue
        seen.add(key)
        eligible.append(person)
    return sorted(eligible, key=lambda p: p.employee_id)


class Verdict(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"


def verdict(policy: FourEyesPolicy, decisions: Iterable[tuple[str, str]]) -> Verdict:
    """Outcome of valid (approver_id, "approve"|"reject") decisions on one plan."""
    approvers: set[str] = set()
    for approver_id, decision in decisions:
        if decision == "reject":
            return Verdict.REJECTED
        if decision == "approve":
            approvers.add(_norm(approver_id))
    if len(approvers) >= policy.required_approvals:
        return Verdict.APPROVED
    return Verdict.PENDING
