from __future__ import annotations

import pytest

from approvals.rules import (
    DecisionClaim,
    FourEyesPolicy,
    Refusal,
    Verdict,
    eligible_approvers,
    refusals,
    verdict,
)
from connectors.base import Person

MANAGERS = ["E0007", "E0010", "E0011"]


def claim(approver: str, *, plan: str = "h1") -> DecisionClaim:
    return DecisionClaim(
        approver_id=approver, requester_id="E0007", leaver_id="E1042", plan_hash=plan
    )


def test_a_second_manager_on_the_current_plan_may_decide() -> None:
    assert refusals(claim("E0010"), managers=MANAGERS, current_plan_hash="h1") == []


def test_the_requester_may_not_approve_even_as_a_manager() -> None:
    assert refusals(claim("E0007"), managers=MANAGERS, current_plan_hash="h1") == [
        Refusal.IS_REQUESTER
    ]


def test_the_leaver_may_not_approve_their_own_offboarding() -> None:
    found = refusals(claim("E1042"), managers=[*MANAGERS, "E1042"], current_plan_hash="h1")
    assert found == [Refusal.IS_LEAVER]


def test_a_non_manager_may_not_approve() -> None:
    assert refusals(claim("E1001"), managers=MANAGERS, current_plan_hash="h1") == [
        Refusal.NOT_A_MANAGER
    ]


def test_a_decision_for_an_older_plan_is_refused() -> None:
    found = refusals(claim("E0010", plan="old"), managers=MANAGERS, current_plan_hash="new")
    assert found == [Refusal.PLAN_CHANGED]


def test_ids_compare_without_case_or_spaces() -> None:
    found = refusals(claim(" e0007 "), managers=["e0010"], current_plan_hash="h1")
    assert set(found) == {Refusal.NOT_A_MANAGER, Refusal.IS_REQUESTER}


def test_every_broken_rule_is_reported() -> None:
    found = refusals(claim("E1042", plan="x"), managers=[], current_plan_hash="h1")
    assert set(found) == {Refusal.NOT_A_MANAGER, Refusal.IS_LEAVER, Refusal.PLAN_CHANGED}


def test_eligible_approvers_exclude_requester_leaver_duplicates_and_mailless() -> None:
    people = [
        Person("E0010", "B", "b@x"),
        Person("E0007", "Requester", "r@x"),
        Person("E1042", "Leaver", "l@x"),
        Person("E0010", "B again", "b@x"),
        Person("E0011", "No mail", ""),
        Person("E0009", "A", "a@x"),
    ]
    chosen = eligible_approvers(people, requester_id="E0007", leaver_id="E1042")
    assert [p.employee_id for p in chosen] == ["E0009", "E0010"]


@pytest.mark.parametrize(
    ("required", "decisions", "expected"),
    [
        (1, [], Verdict.PENDING),
        (1, [("E1", "approve")], Verdict.APPROVED),
        (1, [("E1", "reject")], Verdict.REJECTED),
        (2, [("E1", "approve")], Verdict.PENDING),
        (2, [("E1", "approve"), ("e1", "approve")], Verdict.PENDING),
        (2, [("E1", "approve"), ("E2", "approve")], Verdict.APPROVED),
        (2, [("E1", "approve"), ("E2", "reject")], Verdict.REJECTED),
        (1, [("E1", "maybe")], Verdict.PENDING),
    ],
)
def test_verdict_follows_the_policy(
    required: int, decisions: list[tuple[str, str]], expected: Verdict
) -> None:
    assert verdict(FourEyesPolicy(required_approvals=required), decisions) == expected


def test_policy_needs_at_least_one_approval() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        FourEyesPolicy(required_approvals=0)
