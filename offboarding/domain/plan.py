"""The revocation plan: what will be revoked, in which phase, fingerprinted by SHA-256.

Phases: CONTAINMENT steps may run before approval (reserved for urgent-dismissal
policies); REVOCATION steps run only after a valid four-eyes decision.
"""

from __future__ import annotations

import hashlib
from enum import StrEnum

from pydantic import BaseModel, ConfigDict

from connectors.base import AccessGrant, Leaver, Outcome
from offboarding.domain.audit import canonical_json
from offboarding.domain.policy import Policy


class Phase(StrEnum):
    CONTAINMENT = "containment"
    REVOCATION = "revocation"


class PlanStep(BaseModel):
    model_config = ConfigDict(frozen=True)

    grant: AccessGrant
    phase: Phase = Phase.REVOCATION


class RevocationPlan(BaseModel):
    model_config = ConfigDict(frozen=True)

    case_id: str
    leaver: Leaver
    steps: tuple[PlanStep, ...]

    def canonical(self) -> str:
        return canonical_json(self.model_dump(mode="json"))

    @property
    def plan_hash(self) -> str:
        return hashlib.sha256(self.canonical().encode()).hexdigest()

    @property
    def grant_keys(self) -> frozenset[str]:
        return frozenset(step.grant.key for step in self.steps)

    def rows(self) -> list[dict[str, str]]:
        """The plan as table rows, for pages, emails and the run's artifact."""
        return [
            {
                "connector": step.grant.connector,
                "kind": step.grant.kind.value,
                "label": step.grant.label,
                "name": short_name(step.grant.target),
                "target": step.grant.target,
                "phase": step.phase.value,
            }
            for step in self.steps
        ]

    def steps_in(self, phase: Phase) -> list[PlanStep]:
        return [step for step in self.steps if step.phase == phase]

    @classmethod
    def from_canonical(cls, text: str) -> RevocationPlan:
        return cls.model_validate_json(text)


def short_name(target: str) -> str:
    """What people call the object: "developers" for cn=developers,ou=groups,..."""
    first = target.split(",", 1)[0]
    attribute, equals, value = first.partition("=")
    return value.strip() if equals and attribute.strip().isalnum() and value.strip() else target


def describe_outcome(outcome: Outcome) -> dict[str, str]:
    """An outcome as templates show it (`describe` filter): kind, short name, status."""
    return {
        "label": outcome.grant.label,
        "kind": outcome.grant.kind.value,
        "name": short_name(outcome.grant.target),
        "status": outcome.status.value,
    }


def build_plan(
    *,
    case_id: str,
    leaver: Leaver,
    grants: list[AccessGrant],
    policy: Policy | None = None,
    urgent: bool = False,
) -> RevocationPlan:
    """Order grants deterministically (per system, by the policy's effect order) so the
    same access always gives the same hash; an urgent leaver's containment effects are
    put in the containment phase."""
    rules = policy or Policy()
    ordered = sorted(
        set(grants), key=lambda g: (g.connector, rules.rank(g.effect), g.target, g.account)
    )
    steps = tuple(
        PlanStep(
            grant=g,
            phase=Phase.CONTAINMENT
            if rules.contains_at_once(g.effect, urgent=urgent)
            else Phase.REVOCATION,
        )
        for g in ordered
    )
    return RevocationPlan(case_id=case_id, leaver=leaver, steps=steps)


def unapproved_grants(approved: RevocationPlan, current: list[AccessGrant]) -> list[AccessGrant]:
    """Access found now that the approved plan does not cover."""
    keys = approved.grant_keys
    return [g for g in current if g.key not in keys]
