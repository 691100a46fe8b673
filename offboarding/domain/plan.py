"""The revocation plan: what will be revoked, how, in which phase, fingerprinted by SHA-256.

A step is a grant and the action taken on it: the connector's default for that kind
("remove" a membership), or, for the account itself, the policy's `on_leave` choice for
that connector (disable or delete) — refused here, before anyone approves, when the
connector does not support it. A grant that cascades from another grant in the plan (and
whose parent's action removes it) is listed right under its parent and not revoked on its
own; verification still checks it.

Phases: CONTAINMENT steps may run before approval (reserved for urgent-dismissal
policies); REVOCATION steps run only after a valid four-eyes decision.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator

from connectors.base import (
    DELETE,
    DISABLE,
    REMOVE,
    AccessGrant,
    Capabilities,
    Effect,
    Leaver,
    Outcome,
    UnsupportedAction,
)
from offboarding.domain.audit import canonical_json
from offboarding.domain.policy import Policy


class Phase(StrEnum):
    CONTAINMENT = "containment"
    REVOCATION = "revocation"


class PlanStep(BaseModel):
    model_config = ConfigDict(frozen=True)

    grant: AccessGrant
    action: str
    phase: Phase = Phase.REVOCATION
    # the key of the step this one goes with: removing that grant removes this one
    cascades_from: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _stored_before_actions(cls, data: Any) -> Any:
        """A step of a plan stored by an older version has no action: derive it."""
        if isinstance(data, dict) and "action" not in data:
            grant = AccessGrant.model_validate(data.get("grant"))
            data = {**data, "action": DISABLE if grant.effect is Effect.SIGN_IN else REMOVE}
        return data

    @property
    def cascaded(self) -> bool:
        return self.cascades_from is not None


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

    def rows(self) -> list[dict[str, Any]]:
        """The plan as rows for pages and emails (the `describe` filter reads `message`)."""
        labels = {step.grant.key: step.grant.label for step in self.steps}
        return [
            {
                "key": step.grant.key,
                "connector": step.grant.connector,
                "kind": step.grant.kind,
                "effect": step.grant.effect.value,
                "action": step.action,
                "label": step.grant.label.text,
                "message": step.grant.label.model_dump(),
                "name": short_name(step.grant.target),
                "target": step.grant.target,
                "phase": step.phase.value,
                "parent": step.cascades_from or "",
                "parent_message": labels[step.cascades_from].model_dump()
                if step.cascades_from in labels
                else None,
            }
            for step in self.steps
        ]

    def table(self) -> list[dict[str, str]]:
        """The plan as a flat table of English text, for the run's artifact."""
        labels = {step.grant.key: step.grant.label.text for step in self.steps}
        return [
            {
                "system": step.grant.connector,
                "kind": step.grant.kind,
                "effect": step.grant.effect.value,
                "action": "with parent" if step.cascades_from else step.action,
                "description": step.grant.label.text,
                "goes with": labels.get(step.cascades_from or "", ""),
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


def describe_outcome(outcome: Outcome) -> dict[str, Any]:
    """An outcome as templates show it (`describe` filter): label, kind, action, status."""
    return {
        "label": outcome.grant.label.text,
        "message": outcome.grant.label.model_dump(),
        "kind": outcome.grant.kind,
        "effect": outcome.grant.effect.value,
        "action": outcome.action,
        "name": short_name(outcome.grant.target),
        "status": outcome.status.value,
    }


def choose_action(grant: AccessGrant, rules: Policy, capabilities: Capabilities | None) -> str:
    """The account's action from the policy's `on_leave` when it names the connector (and
    the kind can be disabled or deleted at all); otherwise the kind's default."""
    capability = capabilities.of(grant.kind) if capabilities is not None else None
    account_like = capability is None or {DISABLE, DELETE} & set(capability.actions)
    if grant.effect is Effect.SIGN_IN and grant.connector in rules.on_leave and account_like:
        wanted = rules.on_leave[grant.connector].value
        if capability is not None and wanted not in capability.actions:
            raise UnsupportedAction(
                f"the policy asks to {wanted} accounts in {grant.connector!r}, but that "
                f"connector can only {' or '.join(capability.actions)} grants of kind "
                f"{grant.kind!r}; set [policy.on_leave] {grant.connector} = "
                f'"{capability.default_action}" (or leave it out)'
            )
        return wanted
    if capability is not None:
        return capability.default_action
    return DISABLE if grant.effect is Effect.SIGN_IN else REMOVE


def build_plan(
    *,
    case_id: str,
    leaver: Leaver,
    grants: list[AccessGrant],
    policy: Policy | None = None,
    urgent: bool = False,
    capabilities: Mapping[str, Capabilities] | None = None,
) -> RevocationPlan:
    """Order grants deterministically (per system, by the policy's effect order) so the
    same access always gives the same hash; pick each step's action; put cascaded grants
    right under the grant they go with, in its phase; an urgent leaver's containment
    effects go in the containment phase.

    `capabilities` (per connector name) checks the actions and which actions cascade;
    without them every declared cascade is trusted and actions are not checked.
    """
    rules = policy or Policy()
    known = capabilities or {}
    unique: dict[str, AccessGrant] = {}
    for grant in grants:
        unique.setdefault(grant.key, grant)
    actions = {key: choose_action(g, rules, known.get(g.connector)) for key, g in unique.items()}
    roots = {key: _root(key, unique, actions, known) for key in unique}

    def order(grant: AccessGrant) -> tuple[str, int, str, str, str]:
        return (
            grant.connector,
            rules.rank(grant.effect),
            grant.target,
            grant.kind,
            grant.system_id,
        )

    steps: list[PlanStep] = []
    for grant in sorted((g for g in unique.values() if roots[g.key] is None), key=order):
        contained = rules.contains_at_once(grant.effect, urgent=urgent)
        phase = Phase.CONTAINMENT if contained else Phase.REVOCATION
        steps.append(PlanStep(grant=grant, action=actions[grant.key], phase=phase))
        children = sorted((g for g in unique.values() if roots[g.key] == grant.key), key=order)
        steps.extend(
            PlanStep(grant=child, action=actions[child.key], phase=phase, cascades_from=grant.key)
            for child in children
        )
    return RevocationPlan(case_id=case_id, leaver=leaver, steps=tuple(steps))


def _root(
    key: str,
    grants: Mapping[str, AccessGrant],
    actions: Mapping[str, str],
    capabilities: Mapping[str, Capabilities],
) -> str | None:
    """The key of the top grant whose removal removes this one; None when it is revoked
    on its own (no parent in the plan, or the parent's action does not cascade)."""
    root: str | None = None
    seen = {key}
    grant = grants[key]
    while (above := grant.cascades_from) is not None and above in grants and above not in seen:
        parent = grants[above]
        known = capabilities.get(parent.connector)
        capability = known.of(parent.kind) if known is not None else None
        if capability is not None and actions[parent.key] not in capability.cascade_actions:
            if root is None:
                return None
            break
        root = parent.key
        seen.add(parent.key)
        grant = parent
    return root


def unapproved_grants(approved: RevocationPlan, current: list[AccessGrant]) -> list[AccessGrant]:
    """Access found now that the approved plan does not cover."""
    keys = approved.grant_keys
    return [g for g in current if g.key not in keys]
