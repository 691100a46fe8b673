"""The four-eyes rules for deputies and N-of-M, as plain functions (no server)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from approvals.rules import (
    DecisionClaim,
    DeputyPeriod,
    FourEyesPolicy,
    Refusal,
    Verdict,
    independent_count,
    refusals,
    ties_between,
    verdict,
)

NOW = datetime(2026, 12, 1, 10, tzinfo=UTC)
APPROVERS = ["E0007", "E1004", "E1007"]  # E0007 requests in these tests


def away(manager: str, deputy: str, *, days: int = 7) -> DeputyPeriod:
    return DeputyPeriod(manager, deputy, NOW - timedelta(days=1), NOW + timedelta(days=days))


def claim(approver: str, *, leaver: str = "E1042") -> DecisionClaim:
    return DecisionClaim(
        approver_id=approver, requester_id="E0007", leaver_id=leaver, plan_hash="h1"
    )


def check(approver: str, deputies: list[DeputyPeriod], **kw: str) -> list[Refusal]:
    return refusals(
        claim(approver, **kw), managers=APPROVERS, current_plan_hash="h1", deputies=deputies, at=NOW
    )


def test_an_active_deputy_of_an_approver_may_decide() -> None:
    assert check("E1016", [away("E1004", "E1016")]) == []


def test_a_deputy_outside_their_period_may_not() -> None:
    later = DeputyPeriod("E1004", "E1016", NOW + timedelta(days=1), NOW + timedelta(days=3))
    assert check("E1016", [later]) == [Refusal.NOT_A_MANAGER]
    over = DeputyPeriod("E1004", "E1016", NOW - timedelta(days=3), NOW)  # the end is excluded
    assert check("E1016", [over]) == [Refusal.NOT_A_MANAGER]


def test_a_deputy_who_is_the_requester_is_refused() -> None:
    assert Refusal.IS_REQUESTER in check("E0007", [away("E1004", "E0007")])


def test_a_deputy_who_is_the_leaver_is_refused() -> None:
    found = check("E1016", [away("E1004", "E1016")], leaver="E1016")
    assert Refusal.IS_LEAVER in found


def test_the_requesters_deputy_does_not_speak_for_the_requester() -> None:
    assert check("E1016", [away("E0007", "E1016")]) == [Refusal.NOT_A_MANAGER]


def test_the_leavers_deputy_does_not_speak_for_the_leaver() -> None:
    found = refusals(
        claim("E1016", leaver="E1004"),
        managers=APPROVERS,
        current_plan_hash="h1",
        deputies=[away("E1004", "E1016")],
        at=NOW,
    )
    assert found == [Refusal.NOT_A_MANAGER]


def test_a_manager_and_their_own_deputy_count_once() -> None:
    policy = FourEyesPolicy(required_approvals=2)
    deputies = [away("E1004", "E1016")]
    decided = [("E1004", NOW), ("E1016", NOW)]
    ties = ties_between(deputies, decided)
    assert ties == {frozenset({"e1004", "e1016"})}
    assert verdict(policy, [("E1004", "approve"), ("E1016", "approve")], ties=ties) == (
        Verdict.PENDING
    )
    # a second, independent approver completes it
    assert (
        verdict(
            policy,
            [("E1004", "approve"), ("E1016", "approve"), ("E1007", "approve")],
            ties=ties_between(deputies, [*decided, ("E1007", NOW)]),
        )
        == Verdict.APPROVED
    )


def test_a_deputyship_not_active_when_either_decided_ties_nobody() -> None:
    earlier = DeputyPeriod("E1004", "E1016", NOW - timedelta(days=9), NOW - timedelta(days=8))
    assert ties_between([earlier], [("E1004", NOW), ("E1016", NOW)]) == set()


def test_two_managers_sharing_one_deputy_still_count_twice() -> None:
    ties = {frozenset({"m1", "d"}), frozenset({"m2", "d"})}
    assert independent_count(["d", "m1", "m2"], ties) == 2
    assert independent_count(["d", "m1"], ties) == 1


def test_an_instant_dismissal_needs_its_own_count() -> None:
    policy = FourEyesPolicy(required_approvals=1, required_approvals_urgent=2)
    one = [("E1004", "approve")]
    assert verdict(policy, one) == Verdict.APPROVED
    assert verdict(policy, one, urgent=True) == Verdict.PENDING
    assert verdict(policy, [*one, ("E1007", "approve")], urgent=True) == Verdict.APPROVED
    assert verdict(policy, [*one, ("E1007", "reject")], urgent=True) == Verdict.REJECTED


def test_the_group_follows_the_kind_of_case() -> None:
    policy = FourEyesPolicy(approvers_group="managers", approvers_group_urgent="management")
    assert policy.group_for(urgent=False) == "managers"
    assert policy.group_for(urgent=True) == "management"
    assert FourEyesPolicy().group_for(urgent=True) is None  # the directory's managers
