"""The one policy: data, loaded from configuration (`[policy]` in config.toml).

It answers what the work instruction leaves to the organisation: which effects are
contained at once when someone is dismissed on the spot, how many second managers must
approve, the order in which a system's access is taken away, and whether an account is
disabled or deleted per system. The plan builder, the approval pages, the flow and the
CLI all read it from here.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from connectors.base import Effect
from connectors.manual import ManualStep


class OnLeave(StrEnum):
    DISABLE = "disable"  # keep the account, switched off (the default: evidence stays)
    DELETE = "delete"  # remove the account where the system supports it


# Within a system: what the person can reach goes first, sign-in after, live sessions last
# (ended once no new sign-in is possible), so that a half-finished run never leaves a locked
# account with live group rights unnoticed.
DEFAULT_ORDER = (
    Effect.MEMBERSHIP,
    Effect.DATA,
    Effect.CREDENTIAL,
    Effect.SIGN_IN,
    Effect.SESSION,
)


class Policy(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    # Instant dismissal ("ontslag op staande voet"): effects revoked at once, before the
    # second manager decides (e.g. ["sign_in", "session"]). Empty: nothing before approval.
    urgent_containment: frozenset[Effect] = frozenset()
    # How many distinct eligible second managers must approve; one rejection rejects.
    required_approvals: int = Field(default=1, ge=1, le=10)
    # An instant dismissal (urgent case) may need more: e.g. 2 of the management team.
    # Unset: `required_approvals`.
    required_approvals_urgent: int | None = Field(default=None, ge=1, le=10)
    # Who may approve: the members of this people-directory group (a DN, or a cn under the
    # directory's groups_base). Unset: the managers (managers_group and managers), as before.
    approvers_group: str | None = Field(default=None, min_length=1)
    # The group for an instant dismissal. Unset: `approvers_group`.
    approvers_group_urgent: str | None = Field(default=None, min_length=1)
    # A deputy (see `offboarding deputy`) must be a manager per the people directory; true
    # lets a manager name any employee with an email address (never the requester or the
    # leaver of a case: the four-eyes rules hold for deputies too).
    deputies_may_be_non_managers: bool = False
    # The order of a system's steps by effect; effects not listed go last, in this order.
    effect_order: tuple[Effect, ...] = DEFAULT_ORDER
    # Per connector name: disable (default) or delete the account.
    on_leave: dict[str, OnLeave] = Field(default_factory=dict)
    # Steps a person performs and attests through a signed link (laptop, badge, a SaaS
    # tool without an API): in every plan, approved with it; the case completes only when
    # each is attested.
    manual_steps: tuple[ManualStep, ...] = ()
    # Who attests what a connector can only report as manual (a dynamic group, an unmapped
    # git login): an employee id; the case's requester when unset.
    manual_assignee: str | None = None
    # Hours after approval within which every manual step must be attested; past that the
    # case goes to "needs attention" (the links keep working).
    attest_within_hours: float = Field(default=48, gt=0, le=24 * 90)
    # Approvals that wait: after `remind_after_hours` a pending approver gets one reminder;
    # after `escalate_after_hours` without a decision the `escalation_managers` (employee
    # ids; each must still be an eligible manager) who were not asked yet get a link too.
    # A case whose every link expired goes to "needs attention"; it is never approved
    # automatically.
    remind_after_hours: float = Field(default=24, gt=0, le=24 * 90)
    escalate_after_hours: float = Field(default=48, gt=0, le=24 * 90)
    escalation_managers: tuple[str, ...] = ()
    # The watch after a case: days after completion on which the leaver is inventoried again
    # in every system; access found again is reported and needs a second manager's approval
    # before it is revoked. Empty: no watch.
    recheck_after_days: tuple[float, ...] = (1, 7, 30)

    @field_validator("urgent_containment", mode="before")
    @classmethod
    def _kinds_to_effects(cls, value: object) -> object:
        """Older configurations named grant kinds; "account" is the sign-in effect."""
        if isinstance(value, list | tuple | set | frozenset):
            return [Effect.SIGN_IN if item == "account" else item for item in value]
        return value

    @field_validator("effect_order")
    @classmethod
    def _complete_order(cls, value: tuple[Effect, ...]) -> tuple[Effect, ...]:
        if len(set(value)) != len(value):
            raise ValueError("effect_order names an effect twice")
        return (*value, *(e for e in DEFAULT_ORDER if e not in value))

    def rank(self, effect: Effect) -> int:
        return self.effect_order.index(effect)

    def contains_at_once(self, effect: Effect, *, urgent: bool) -> bool:
        return urgent and effect in self.urgent_containment

    @field_validator("manual_steps")
    @classmethod
    def _unique_steps(cls, value: tuple[ManualStep, ...]) -> tuple[ManualStep, ...]:
        ids = [step.id for step in value]
        doubles = sorted({i for i in ids if ids.count(i) > 1})
        if doubles:
            raise ValueError(f"manual step ids must be unique; used twice: {', '.join(doubles)}")
        return value

    @field_validator("escalation_managers")
    @classmethod
    def _clean_escalation(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        ids = [item.strip() for item in value]
        if any(not i for i in ids):
            raise ValueError("escalation_managers holds an empty employee id")
        folded = [i.casefold() for i in ids]
        doubles = sorted({i for i in ids if folded.count(i.casefold()) > 1})
        if doubles:
            raise ValueError(f"escalation_managers names an employee twice: {', '.join(doubles)}")
        return tuple(ids)

    @field_validator("recheck_after_days")
    @classmethod
    def _ordered_rechecks(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if any(day <= 0 or day > 366 for day in value):
            raise ValueError(
                "recheck_after_days must be days after completion, above 0, at most 366"
            )
        if len(set(value)) != len(value):
            raise ValueError("recheck_after_days names a day twice")
        return tuple(sorted(value))

    @model_validator(mode="after")
    def _escalate_after_reminding(self) -> Policy:
        if self.escalate_after_hours < self.remind_after_hours:
            raise ValueError(
                "escalate_after_hours must not be earlier than remind_after_hours "
                f"({self.escalate_after_hours} < {self.remind_after_hours})"
            )
        return self

    def on_leave_for(self, connector: str) -> OnLeave:
        return self.on_leave.get(connector, OnLeave.DISABLE)
