"""Steps a person performs: hand in the laptop and the badge, remove the leaver from a SaaS
tool without an API, change a shared password.

The work instruction lists them (`[[policy.manual_steps]]`); every leaver's plan holds
each of them as a grant of kind `manual-<effect>` whose only action is `manual`. They are part
of the plan and its hash, approved with it, assigned to a named person, and attested by
that person through a signed link; the service never "revokes" them itself, and the case
is completed only when every one is attested (see `approvals.attestations`).
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator

from connectors.base import (
    MANUAL,
    AccessGrant,
    Capabilities,
    Effect,
    Health,
    KindCapability,
    Leaver,
    Message,
    Outcome,
    Verification,
    revoke_step,
)

NAME = "manual"  # the connector name of the work instruction's manual steps
_SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{0,59}$")


class ManualStep(BaseModel):
    """One step of the work instruction that a person performs and attests."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    """Short stable name, e.g. "laptop" (lowercase letters, digits, dashes)."""
    text: str = Field(min_length=1, max_length=300)
    """What to do, in English, e.g. "Collect the laptop and the door badge"."""
    text_nl: str = Field(default="", max_length=300)
    """The same in Dutch (the English text is shown when empty)."""
    assignee: str = Field(min_length=1, max_length=100)
    """The employee id of the person who does it and attests it."""
    effect: Effect = Effect.DATA
    """What doing it takes away (data: equipment and files; sign_in: a badge or a shared login)."""

    @field_validator("id")
    @classmethod
    def _slug(cls, value: str) -> str:
        if not _SLUG.match(value):
            raise ValueError(f"{value!r} must be 1-60 lowercase letters, digits and dashes")
        return value


def step_label(step: ManualStep) -> Message:
    """The step as people read it; the Dutch catalog uses `text_nl`."""
    return Message.of(
        "manual.grant.step",
        "%(text)s (by %(assignee)s)",
        text=step.text,
        text_nl=step.text_nl or step.text,
        assignee=step.assignee,
    )


def kind_for(effect: Effect) -> str:
    """One kind per effect, so the plan orders and contains a step by what it takes away."""
    return f"manual-{effect.value}"


class ManualSteps:
    """The work instruction's manual steps, presented as a connector so that they are
    planned, ordered, hashed and shown like every other piece of access."""

    name = NAME

    def __init__(self, steps: tuple[ManualStep, ...]) -> None:
        ids = [s.id for s in steps]
        if len(set(ids)) != len(ids):
            raise ValueError(f"manual step ids must be unique: {ids}")
        self.steps = steps

    @property
    def capabilities(self) -> Capabilities:
        effects = sorted({s.effect for s in self.steps}, key=list(Effect).index) or [Effect.DATA]
        return Capabilities(
            tuple(
                KindCapability(kind_for(e), e, (MANUAL,), "a person does it and attests it")
                for e in effects
            )
        )

    def check(self) -> Health:
        return Health(ok=True, messages=[f"{len(self.steps)} manual step(s) in the instruction"])

    def inventory(self, leaver: Leaver) -> list[AccessGrant]:
        return [
            AccessGrant(
                connector=self.name,
                kind=kind_for(step.effect),
                effect=step.effect,
                system_id=step.id,
                account=leaver.employee_id,
                target=step.id,
                label=step_label(step),
                revoke_data={"assignee": step.assignee},
            )
            for step in self.steps
        ]

    def revoke(self, grant: AccessGrant, action: str | None = None) -> Outcome:
        # always refused: a manual step is attested by a person, never sent
        return revoke_step(self.name, self.capabilities, grant, action, lambda _: "")

    def verify(self, leaver: Leaver) -> Verification:
        """Nothing to read back: attestations are the proof, kept by the service."""
        return Verification()
