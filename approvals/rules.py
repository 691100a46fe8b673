"""The four-eyes rules as plain functions: who may decide, and when a plan is decided.

The web app applies them before it records a decision; the flow applies them
again before it revokes anything. Policy is data (`FourEyesPolicy`).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING

from connectors.base import Person

if TYPE_CHECKING:
    from offboarding.domain.policy import Policy


class Refusal(StrEnum):
    NOT_A_MANAGER = "not_a_manager"
    IS_REQUESTER = "is_requester"
    IS_LEAVER = "is_leaver"
    PLAN_CHANGED = "plan_changed"
    BAD_SIGNATURE = "bad_signature"
    UNKNOWN_DECISION = "unknown_decision"
    DUPLICATE_APPROVER = "duplicate_approver"


REFUSAL_TEXT = {
    Refusal.NOT_A_MANAGER: (
        "the approver is not a manager who may approve (not in the approvers group) nor the "
        "active deputy of one"
    ),
    Refusal.IS_REQUESTER: "the approver requested this offboarding (four-eyes needs someone else)",
    Refusal.IS_LEAVER: "the approver is the person leaving",
    Refusal.PLAN_CHANGED: "the decision is for a different plan than the current one",
    Refusal.BAD_SIGNATURE: "the decision does not carry a valid signature of this service",
    Refusal.UNKNOWN_DECISION: "no such decision was recorded by the approval pages",
    Refusal.DUPLICATE_APPROVER: "this approver already decided on this plan",
}


@dataclass(frozen=True)
class FourEyesPolicy:
    """How many distinct approvers must approve, from which group, per kind of case; one
    rejection rejects. `None` for a group means the people directory's managers."""

    required_approvals: int = 1
    required_approvals_urgent: int | None = None
    approvers_group: str | None = None
    approvers_group_urgent: str | None = None
    deputies_may_be_non_managers: bool = False

    def __post_init__(self) -> None:
        if self.required_approvals < 1 or (self.required_approvals_urgent or 1) < 1:
            raise ValueError("required_approvals must be at least 1")

    @classmethod
    def from_policy(cls, policy: Policy) -> FourEyesPolicy:
        return cls(
            required_approvals=policy.required_approvals,
            required_approvals_urgent=policy.required_approvals_urgent,
            approvers_group=policy.approvers_group,
            approvers_group_urgent=policy.approvers_group_urgent,
            deputies_may_be_non_managers=policy.deputies_may_be_non_managers,
        )

    def required_for(self, *, urgent: bool) -> int:
        """The approvals a case needs: an instant dismissal may need more."""
        if urgent and self.required_approvals_urgent is not None:
            return self.required_approvals_urgent
        return self.required_approvals

    def group_for(self, *, urgent: bool) -> str | None:
        if urgent and self.approvers_group_urgent is not None:
            return self.approvers_group_urgent
        return self.approvers_group


@dataclass(frozen=True)
class DeputyPeriod:
    """A manager's deputy from `starts_at` until (not including) `ends_at`."""

    manager_id: str
    deputy_id: str
    starts_at: datetime
    ends_at: datetime

    def active_at(self, moment: datetime) -> bool:
        return self.starts_at <= moment < self.ends_at


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
    claim: DecisionClaim,
    *,
    managers: Iterable[str],
    current_plan_hash: str,
    deputies: Sequence[DeputyPeriod] = (),
    at: datetime | None = None,
) -> list[Refusal]:
    """Every rule the claim breaks; empty means the approver may decide.

    `managers` are the approvers for this case; someone outside them may decide as the
    deputy of one of them whose period covers `at` (the moment of the decision), unless
    that one is the requester or the leaver: a deputy speaks for their manager, never for
    someone the four-eyes rule excludes. The deputy themselves must pass every rule too.
    """
    found: list[Refusal] = []
    approver = _norm(claim.approver_id)
    if approver not in {_norm(m) for m in managers} and not acting_for(
        claim, managers=managers, deputies=deputies, at=at
    ):
        found.append(Refusal.NOT_A_MANAGER)
    if approver == _norm(claim.requester_id):
        found.append(Refusal.IS_REQUESTER)
    if approver == _norm(claim.leaver_id):
        found.append(Refusal.IS_LEAVER)
    if claim.plan_hash != current_plan_hash:
        found.append(Refusal.PLAN_CHANGED)
    return found


def acting_for(
    claim: DecisionClaim,
    *,
    managers: Iterable[str],
    deputies: Sequence[DeputyPeriod],
    at: datetime | None,
) -> list[str]:
    """The approvers for this case whose deputy the claimant is at `at` (sorted)."""
    if at is None:
        return []
    approver = _norm(claim.approver_id)
    excluded = {_norm(claim.requester_id), _norm(claim.leaver_id)}
    eligible = {_norm(m) for m in managers} - excluded
    return sorted(
        {
            d.manager_id
            for d in deputies
            if _norm(d.deputy_id) == approver
            and _norm(d.manager_id) in eligible
            and d.active_at(at)
        }
    )


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


def verdict(
    policy: FourEyesPolicy,
    decisions: Iterable[tuple[str, str]],
    *,
    urgent: bool = False,
    ties: Collection[frozenset[str]] = (),
) -> Verdict:
    """Outcome of valid (approver_id, "approve"|"reject") decisions on one plan.

    `ties` are pairs of approvers who count once together (a manager and their own deputy):
    the approvals count as the largest number of approvers no two of whom are tied.
    """
    approvers: set[str] = set()
    for approver_id, decision in decisions:
        if decision == "reject":
            return Verdict.REJECTED
        if decision == "approve":
            approvers.add(_norm(approver_id))
    normalised = {frozenset(_norm(p) for p in pair) for pair in ties}
    if independent_count(sorted(approvers), normalised) >= policy.required_for(urgent=urgent):
        return Verdict.APPROVED
    return Verdict.PENDING


def independent_count(people: Sequence[str], ties: Collection[frozenset[str]]) -> int:
    """The most of `people` that can be counted without counting two tied ones.

    A handful of approvers per plan, so an exact search is cheap: someone tied to nobody left
    always counts; otherwise try with and without them.
    """
    if not people:
        return 0
    first, rest = people[0], people[1:]
    tied_to_first = [p for p in rest if frozenset((first, p)) in ties]
    if not tied_to_first:
        return 1 + independent_count(rest, ties)
    without_neighbours = [p for p in rest if p not in tied_to_first]
    return max(independent_count(rest, ties), 1 + independent_count(without_neighbours, ties))


def ties_between(
    deputies: Iterable[DeputyPeriod], decisions: Iterable[tuple[str, datetime]]
) -> set[frozenset[str]]:
    """Pairs of deciders who count once: a manager and their deputy, when the deputyship was
    active at the moment either of them decided."""
    moments: dict[str, list[datetime]] = {}
    for approver_id, at in decisions:
        moments.setdefault(_norm(approver_id), []).append(at)
    found: set[frozenset[str]] = set()
    for period in deputies:
        manager, deputy = _norm(period.manager_id), _norm(period.deputy_id)
        if manager not in moments or deputy not in moments or manager == deputy:
            continue
        if any(period.active_at(at) for at in (*moments[manager], *moments[deputy])):
            found.add(frozenset((manager, deputy)))
    return found
