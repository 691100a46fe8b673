"""The work instruction file (`workinstruction.yaml`): one versioned file that is the policy
the service executes and the document management hands an auditor.

`load` reads it with `yaml.compose`, so every value keeps the line it was written on, turns
it into plain data, validates it (unknown keys, types, effects, duplicate ids, the
configured connectors it names) and maps it onto the `Policy` and the few settings it
decides. Every problem is one plain line, `FILE:LINE: field.path: message`, on the line of
the offending value (or of the nearest enclosing key for a missing one), all at once.

The file's version label is chosen by its owner ("2026.1"); the SHA-256 of its bytes says
which text exactly was executed. Both are recorded with every plan.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from connectors.base import Effect
from connectors.manual import ManualStep
from offboarding.domain.policy import DEFAULT_ORDER, OnLeave, Policy

Loc = tuple[int | str, ...]
# The only deadline the service executes for a departure: its run starts at `run_at` on
# the last working day (instant dismissal: at once).
END_OF_LAST_WORKING_DAY = "end_of_last_working_day"


class InvalidWorkInstruction(ValueError):
    """The file cannot be executed; `problems` are its plain lines (`FILE:LINE: field: ...`)."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = tuple(problems)


# -- the file's shape ------------------------------------------------------------------------


class _Part(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=False)


class Approvals(_Part):
    # Distinct eligible second managers who must approve; one rejection rejects.
    required: int = Field(ge=1, le=10)
    required_urgent: int | None = Field(default=None, ge=1, le=10)  # instant dismissal
    # The connector whose managers may approve (the people directory); default: as configured.
    approvers_from: str | None = None
    # Who may approve: this people-directory group's members (default: the managers).
    approvers_group: str | None = Field(default=None, min_length=1)
    approvers_group_urgent: str | None = Field(default=None, min_length=1)
    deputies_may_be_non_managers: bool = False
    # An approval link is valid this long; then the case needs attention (never auto-approved).
    approve_within_hours: int = Field(ge=1, le=24 * 90)
    remind_after_hours: float = Field(default=24, gt=0, le=24 * 90)
    escalate_after_hours: float = Field(default=48, gt=0, le=24 * 90)
    escalation_managers: tuple[str, ...] = ()


class InstantDismissal(_Part):
    containment: tuple[Effect, ...] = ()


class System(_Part):
    connector: str = Field(min_length=1)
    on_leave: OnLeave | None = None  # None: the default (disable), as when not named


class Deadlines(_Part):
    access_removed: Literal["end_of_last_working_day"]
    run_at: str | None = Field(default=None, pattern=r"^([01]\d|2[0-3]):[0-5]\d$")


class Retention(_Part):
    case_data_days: int = Field(ge=1)


class WorkInstructionSpec(_Part):
    """What the file holds; `to_policy` is what the flow executes of it."""

    version: str = Field(min_length=1, max_length=40)
    title: str = Field(min_length=1, max_length=200)
    owner: str = Field(min_length=1, max_length=200)
    approvals: Approvals
    instant_dismissal: InstantDismissal = InstantDismissal()
    effect_order: tuple[Effect, ...] = DEFAULT_ORDER
    systems: tuple[System, ...]
    manual_steps: tuple[ManualStep, ...] = ()
    manual_assignee: str | None = None
    attest_within_hours: float = Field(default=48, gt=0, le=24 * 90)
    recheck_after_days: tuple[float, ...] = (1, 7, 30)
    deadlines: Deadlines
    retention: Retention

    @field_validator("version")
    @classmethod
    def _one_line(cls, value: str) -> str:
        if value.strip() != value or "\n" in value:
            raise ValueError('a short label on one line, e.g. "2026.1"')
        return value

    def to_policy(self) -> Policy:
        return Policy(
            urgent_containment=frozenset(self.instant_dismissal.containment),
            required_approvals=self.approvals.required,
            required_approvals_urgent=self.approvals.required_urgent,
            approvers_group=self.approvals.approvers_group,
            approvers_group_urgent=self.approvals.approvers_group_urgent,
            deputies_may_be_non_managers=self.approvals.deputies_may_be_non_managers,
            effect_order=self.effect_order,
            on_leave={s.connector: s.on_leave for s in self.systems if s.on_leave is not None},
            manual_steps=self.manual_steps,
            manual_assignee=self.manual_assignee,
            attest_within_hours=self.attest_within_hours,
            remind_after_hours=self.approvals.remind_after_hours,
            escalate_after_hours=self.approvals.escalate_after_hours,
            escalation_managers=self.approvals.escalation_managers,
            recheck_after_days=self.recheck_after_days,
        )


# Where each Policy field is written in the file (its errors are named there).
POLICY_FIELDS: dict[str, Loc] = {
    "urgent_containment": ("instant_dismissal", "containment"),
    "required_approvals": ("approvals", "required"),
    "required_approvals_urgent": ("approvals", "required_urgent"),
    "approvers_group": ("approvals", "approvers_group"),
    "approvers_group_urgent": ("approvals", "approvers_group_urgent"),
    "deputies_may_be_non_managers": ("approvals", "deputies_may_be_non_managers"),
    "effect_order": ("effect_order",),
    "on_leave": ("systems",),
    "manual_steps": ("manual_steps",),
    "manual_assignee": ("manual_assignee",),
    "attest_within_hours": ("attest_within_hours",),
    "remind_after_hours": ("approvals", "remind_after_hours"),
    "escalate_after_hours": ("approvals", "escalate_after_hours"),
    "escalation_managers": ("approvals", "escalation_managers"),
    "recheck_after_days": ("recheck_after_days",),
}
_ORDERED_HOURS: Loc = ("approvals", "escalate_after_hours")  # the policy's one cross-field rule


@dataclass(frozen=True)
class WorkInstructionFile:
    """A valid file, as the service executes it."""

    path: Path
    sha256: str  # of the file's bytes
    spec: WorkInstructionSpec
    policy: Policy

    @property
    def version(self) -> str:
        return self.spec.version

    @property
    def settings(self) -> dict[str, Any]:
        """The service settings the file decides (each must not be set otherwise to another
        value): approval link lifetime, retention, the run's time, who may approve."""
        decided: dict[str, Any] = {
            "approval_ttl_hours": self.spec.approvals.approve_within_hours,
            "retention_days": self.spec.retention.case_data_days,
        }
        if self.spec.deadlines.run_at is not None:
            decided["end_of_day"] = self.spec.deadlines.run_at
        if self.spec.approvals.approvers_from is not None:
            decided["people_connector"] = self.spec.approvals.approvers_from
        return decided

    def details(self) -> dict[str, str]:
        """What a plan records of the file (its `plan.created` audit event)."""
        return {"instruction_label": self.version, "instruction_sha256": self.sha256}


# -- reading ---------------------------------------------------------------------------------


class _Lines:
    """The line each value of the file was written on, by its path in the data."""

    def __init__(self) -> None:
        self.at: dict[Loc, int] = {(): 1}

    def of(self, loc: Loc) -> int:
        """The line of `loc`, else of its nearest parent that is in the file."""
        for length in range(len(loc), -1, -1):
            if loc[:length] in self.at:
                return self.at[loc[:length]]
        return 1


def _plain(node: yaml.Node, loc: Loc, lines: _Lines, problems: list[tuple[Loc, str]]) -> Any:
    """A composed YAML node as plain data (dicts, lists, str/int/float/bool/None); keys must
    be text and appear once."""
    lines.at.setdefault(loc, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            if not isinstance(key, str) or key_node.tag != "tag:yaml.org,2002:str":
                lines.at.setdefault((*loc, "?"), key_node.start_mark.line + 1)
                problems.append(((*loc, "?"), "a key must be a plain name"))
                continue
            lines.at[(*loc, key)] = key_node.start_mark.line + 1
            if key in result:
                problems.append(((*loc, key), "given twice; give each key once"))
                continue
            result[key] = _plain(value_node, (*loc, key), lines, problems)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_plain(item, (*loc, i), lines, problems) for i, item in enumerate(node.value)]
    if loc == ("version",):
        return node.value  # the label as written: 2026.10 stays "2026.10", not a number
    return yaml.constructor.SafeConstructor().construct_object(node, deep=True)


def _field(loc: Loc) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")


def _message(error: Mapping[str, Any]) -> str:
    if error["type"] == "extra_forbidden":
        return "unknown key; check its spelling against workinstruction.example.yaml"
    if error["type"] == "missing":
        return "missing; this key is required"
    text = str(error["msg"]).replace("Input should be", "must be")
    for prefix in ("Value error, ", "Assertion failed, "):
        text = text.removeprefix(prefix)
    return text


def _pydantic_problems(exc: ValidationError, at: Loc = ()) -> list[tuple[Loc, str]]:
    return [
        ((*at, *error["loc"]), _message(error))
        for error in exc.errors(include_url=False, include_input=False, include_context=False)
    ]


def _cross_checks(
    spec: WorkInstructionSpec, connectors: Sequence[str] | None
) -> list[tuple[Loc, str]]:
    """Duplicates and names of configured connectors, each on the line that holds it."""
    found: list[tuple[Loc, str]] = []
    seen: set[str] = set()
    for index, step in enumerate(spec.manual_steps):
        if step.id in seen:
            found.append((("manual_steps", index, "id"), f"{step.id!r} is used twice; ids differ"))
        seen.add(step.id)
    systems: set[str] = set()
    for index, system in enumerate(spec.systems):
        if system.connector in systems:
            found.append((("systems", index, "connector"), f"{system.connector!r} is listed twice"))
        systems.add(system.connector)
    if connectors is None:
        return found
    configured = ", ".join(connectors) or "none"
    for index, system in enumerate(spec.systems):
        if system.connector not in connectors:
            found.append(
                (
                    ("systems", index, "connector"),
                    f"{system.connector!r} is not a configured connector; configured: {configured}",
                )
            )
    for name in connectors:
        if name not in systems:
            found.append(
                (
                    ("systems",),
                    f"the configured connector {name!r} is not in the work instruction; "
                    "add it (each system the service revokes in is described here)",
                )
            )
    source = spec.approvals.approvers_from
    if source is not None and source not in connectors:
        found.append(
            (
                ("approvals", "approvers_from"),
                f"{source!r} is not a configured connector; configured: {configured}",
            )
        )
    return found


def parse(
    text: bytes, path: Path, *, connectors: Sequence[str] | None = None
) -> WorkInstructionFile:
    """The file's bytes as an executable work instruction, or `InvalidWorkInstruction`.
    `connectors`: the configured connector names the file must describe (None: not checked)."""
    where = str(path)
    try:
        node = yaml.compose(text.decode("utf-8"), Loader=yaml.SafeLoader)
    except UnicodeDecodeError:
        raise InvalidWorkInstruction([f"{where}:1: not UTF-8 text"]) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        reason = " ".join(str(part) for part in (exc.context, exc.problem) if part)
        raise InvalidWorkInstruction([f"{where}:{line}: not valid YAML: {reason}"]) from None
    except yaml.YAMLError as exc:
        raise InvalidWorkInstruction([f"{where}:1: not valid YAML: {exc}"]) from None
    if node is None:
        raise InvalidWorkInstruction(
            [f"{where}:1: the file is empty; see workinstruction.example.yaml"]
        )
    lines = _Lines()
    problems: list[tuple[Loc, str]] = []
    try:
        data = _plain(node, (), lines, problems)
    except yaml.MarkedYAMLError as exc:  # an unknown tag (!!python/...) or a bad scalar
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        raise InvalidWorkInstruction([f"{where}:{line}: not valid here: {exc.problem}"]) from None
    if not isinstance(data, dict):
        problems.append(((), "the file must be a mapping of keys (version:, title:, ...)"))
    spec = policy = None
    if not problems:
        try:
            spec = WorkInstructionSpec.model_validate(data)
        except ValidationError as exc:
            problems += _pydantic_problems(exc)
    if spec is not None:
        crossed = _cross_checks(spec, connectors)
        problems += crossed
        try:
            policy = spec.to_policy()
        except ValidationError as exc:
            said = {loc[0] for loc, _ in crossed}  # a duplicate id is named once, on its line
            problems += [
                (
                    (*POLICY_FIELDS.get(str(loc[0]), loc[:1]), *loc[1:]) if loc else _ORDERED_HOURS,
                    message,
                )
                for loc, message in _pydantic_problems(exc)
                if not loc or loc[0] not in said
            ]
    if problems or spec is None or policy is None:
        ordered = sorted(problems, key=lambda p: lines.of(p[0]))
        raise InvalidWorkInstruction(
            list(
                dict.fromkeys(
                    f"{where}:{lines.of(loc)}: {_field(loc) or 'file'}: {message}"
                    for loc, message in ordered
                )
            )
        )
    digest = hashlib.sha256(text).hexdigest()
    return WorkInstructionFile(path=path, sha256=digest, spec=spec, policy=policy)


def load(path: Path, *, connectors: Iterable[str] | None = None) -> WorkInstructionFile:
    """Read and validate the file at `path` (see `parse`)."""
    try:
        text = path.read_bytes()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise InvalidWorkInstruction(
            [f"{path}:1: cannot be read: {reason}; work_instruction names this file"]
        ) from None
    return parse(text, path, connectors=None if connectors is None else list(connectors))


def _on_leave(policy: Policy, connector: str) -> dict[str, str]:
    choice = policy.on_leave.get(connector)
    return {"on_leave": choice.value} if choice is not None else {}


def to_yaml(
    policy: Policy,
    *,
    version: str,
    title: str,
    owner: str,
    approve_within_hours: int,
    retention_days: int,
    connectors: Sequence[str],
) -> str:
    """A work instruction file that `load`s back to `policy` (for `connectors`, in their
    order): how an installation's `[policy]` becomes a file, and what the demo runs."""
    approvals: dict[str, Any] = {
        "required": policy.required_approvals,
        "required_urgent": policy.required_approvals_urgent,
        "approvers_group": policy.approvers_group,
        "approvers_group_urgent": policy.approvers_group_urgent,
        "deputies_may_be_non_managers": policy.deputies_may_be_non_managers,
        "approve_within_hours": approve_within_hours,
        "remind_after_hours": policy.remind_after_hours,
        "escalate_after_hours": policy.escalate_after_hours,
        "escalation_managers": list(policy.escalation_managers),
    }
    data = {
        "version": version,
        "title": title,
        "owner": owner,
        "approvals": {key: value for key, value in approvals.items() if value is not None},
        "instant_dismissal": {
            "containment": [e.value for e in policy.effect_order if e in policy.urgent_containment]
        },
        "effect_order": [e.value for e in policy.effect_order],
        "systems": [{"connector": name, **_on_leave(policy, name)} for name in connectors],
        "manual_steps": [step.model_dump(mode="json") for step in policy.manual_steps],
        **({"manual_assignee": policy.manual_assignee} if policy.manual_assignee else {}),
        "attest_within_hours": policy.attest_within_hours,
        "recheck_after_days": list(policy.recheck_after_days),
        "deadlines": {"access_removed": END_OF_LAST_WORKING_DAY},
        "retention": {"case_data_days": retention_days},
    }
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
