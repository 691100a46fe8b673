"""The work instruction as data, read from the same settings the service executes.

Everything the document states comes from here: the policy (approvals, containment, step
order, disable-or-delete, manual steps and their deadline), the configured connectors and
what each declares it can do (`Capabilities`, read from a connector built with
`dry_run=True`), and the settings that set deadlines and retention. The plan builder's own
`choose_action` says which action each kind of access gets, so the document cannot promise
another action than a plan would hold.

Its `version` is a short SHA-256 over the canonical JSON of exactly that input (never a
secret, a host or a URL): the same configuration always gives the same version, on any day.
With a work instruction file (`work_instruction`, see `file.py`) the policy is that file:
the document then carries the file's own version label and the SHA-256 of its bytes (what
each plan records), its title and owner, and lists the systems in the file's order.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

from pydantic import ValidationError

from connectors.base import (
    NOT_SENT,
    AccessGrant,
    Capabilities,
    ConnectorError,
    Effect,
    Message,
)
from connectors.registry import build_connector, connector_kind
from offboarding.domain.plan import choose_action
from offboarding.domain.policy import Policy
from offboarding.wiring.settings import Settings

VERSION_LENGTH = 12  # hex digits of the SHA-256 shown as the version
# Settings of the people directory that say who may approve (not secret, no host).
_MANAGER_SETTINGS = ("managers_group", "managers")

BuildCapabilities = Callable[[Mapping[str, Any]], Capabilities]


@dataclass(frozen=True)
class AccessRule:
    """What the service does to one kind of access in one system."""

    kind: str
    effect: Effect
    action: str  # what a plan will hold for it (the policy's choice, else the default)
    actions: tuple[str, ...]  # every action the connector supports on it
    description: str  # the connector's own words, in English
    sent: bool  # False: kept, manual or elsewhere (reported and recorded, never sent)
    contained_at_once: bool  # revoked before approval on instant dismissal
    problem: str = ""  # the policy asks for an action this kind does not support


@dataclass(frozen=True)
class SystemSection:
    """One configured connector: the kinds of access it takes away, in plan order."""

    name: str
    kind: str
    description: str  # the kind's description, in English
    on_leave: str | None  # the policy's disable or delete for the account; None: not named
    people_directory: bool  # also where employees and managers are looked up
    rules: tuple[AccessRule, ...] = ()
    problem: str = ""  # building it failed: the document says so instead of failing


@dataclass(frozen=True)
class ManualTask:
    id: str
    text: str
    text_nl: str
    assignee: str
    effect: Effect


@dataclass(frozen=True)
class WorkInstruction:
    version: str  # short SHA-256 of the canonical input
    fingerprint: str  # the full SHA-256
    issued: date
    required_approvals: int
    eligible_from: str  # the people directory's connector name
    managers: tuple[tuple[str, str], ...]  # (setting, value) that names the managers
    urgent_containment: tuple[Effect, ...]  # in effect order
    effect_order: tuple[Effect, ...]
    systems: tuple[SystemSection, ...]
    manual_steps: tuple[ManualTask, ...]
    manual_assignee: str | None  # None: the case's requester
    attest_within_hours: float
    approval_ttl_hours: int
    retention_days: int
    timezone: str
    end_of_day: str
    retry_delays_seconds: tuple[float, ...]
    recovery_delays_seconds: tuple[float, ...]
    remind_after_hours: float = 24
    escalate_after_hours: float = 48
    escalation_managers: tuple[str, ...] = ()
    recheck_after_days: tuple[float, ...] = ()
    # From the work instruction file, when there is one (else the configuration's hash).
    source: str = ""  # the file's name
    title: str = ""
    owner: str = ""

    @property
    def assignees(self) -> tuple[str, ...]:
        """Everyone named to do a manual step, in order of first appearance."""
        return tuple(dict.fromkeys(step.assignee for step in self.manual_steps))

    @property
    def contained_rules(self) -> tuple[tuple[str, AccessRule], ...]:
        """(system, rule) for each kind of access revoked at once on instant dismissal."""
        return tuple(
            (system.name, rule)
            for system in self.systems
            for rule in system.rules
            if rule.contained_at_once
        )


def _manager_settings(settings: Settings) -> tuple[tuple[str, str], ...]:
    try:
        config = settings.connector_config(settings.people.connector)
    except LookupError:
        return ()
    found = []
    for key in _MANAGER_SETTINGS:
        value = config.get(key)
        if isinstance(value, list | tuple):
            value = ", ".join(str(v) for v in value)
        if value:
            found.append((key, str(value)))
    return tuple(found)


def canonical_input(settings: Settings) -> dict[str, Any]:
    """What the document is generated from, without secrets, hosts or URLs."""
    policy = settings.policy.model_dump(mode="json")
    policy["urgent_containment"] = sorted(policy["urgent_containment"])
    return {
        "policy": policy,
        "connectors": [{"name": c["name"], "kind": c["kind"]} for c in settings.connectors],
        "people": settings.people.connector,
        "managers": [list(pair) for pair in _manager_settings(settings)],
        "approval_ttl_hours": settings.approval_ttl_hours,
        "retention_days": settings.retention_days,
        "timezone": settings.timezone,
        "end_of_day": settings.end_of_day,
        "retry_delays_seconds": list(settings.retry_delays_seconds),
        "recovery_delays_seconds": list(settings.recovery_delays_seconds),
    }


def fingerprint(settings: Settings) -> str:
    """SHA-256 over the canonical JSON of `canonical_input` (sorted keys, no whitespace)."""
    text = json.dumps(
        canonical_input(settings), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    return hashlib.sha256(text.encode()).hexdigest()


def dry_run_capabilities(config: Mapping[str, Any]) -> Capabilities:
    """A connector's capabilities, read from it built with dry_run=True (nothing is sent)."""
    return build_connector(config, dry_run=True).capabilities


def _rules(name: str, capabilities: Capabilities, policy: Policy) -> tuple[AccessRule, ...]:
    """Each kind the connector declares, with the action a plan would give it, in the order
    the plan takes them (by effect; the connector's own order within one effect)."""
    ranked = []
    for position, capability in enumerate(capabilities.kinds):
        probe = AccessGrant(
            connector=name,
            kind=capability.kind,
            effect=capability.effect,
            system_id="-",
            account="-",
            target="-",
            label=Message.plain(capability.kind),
        )
        problem = ""
        try:
            action = choose_action(probe, policy, capabilities)
        except ConnectorError as exc:
            action, problem = capability.default_action, str(exc)
        sent = action not in NOT_SENT
        rule = AccessRule(
            kind=capability.kind,
            effect=capability.effect,
            action=action,
            actions=capability.actions,
            description=capability.description,
            sent=sent,
            contained_at_once=sent and capability.effect in policy.urgent_containment,
            problem=problem,
        )
        ranked.append((policy.rank(capability.effect), position, rule))
    return tuple(rule for _, _, rule in sorted(ranked, key=lambda item: item[:2]))


def _on_leave(policy: Policy, name: str) -> str | None:
    choice = policy.on_leave.get(name)
    return choice.value if choice is not None else None


def _problem(exc: Exception) -> str:
    """Why a connector could not be built, on one line: each invalid setting by name (never
    its value), else the error's first line."""
    if isinstance(exc, ValidationError):
        return "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or 'config'}: "
            + ("missing; this setting is required" if error["type"] == "missing" else error["msg"])
            for error in exc.errors(include_url=False, include_input=False, include_context=False)
        )
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _system(
    config: Mapping[str, Any], settings: Settings, capabilities_of: BuildCapabilities
) -> SystemSection:
    name, kind = str(config["name"]), str(config["kind"])
    policy = settings.policy
    try:
        spec = connector_kind(kind, name)
        description, people = spec.description, spec.people is not None
    except ValueError as exc:
        return SystemSection(name, kind, "", _on_leave(policy, name), False, (), str(exc))
    section = SystemSection(
        name=name,
        kind=kind,
        description=description,
        on_leave=_on_leave(policy, name),
        people_directory=people and settings.people.connector == name,
    )
    try:
        capabilities = capabilities_of(config)
    except (ValueError, TypeError, LookupError, OSError, ConnectorError) as exc:
        return SystemSection(**{**section.__dict__, "problem": _problem(exc)})
    return SystemSection(**{**section.__dict__, "rules": _rules(name, capabilities, policy)})


def build(
    settings: Settings,
    *,
    issued: date,
    capabilities_of: BuildCapabilities = dry_run_capabilities,
) -> WorkInstruction:
    """The work instruction for `settings`, dated `issued`; a connector that cannot be built
    is named with its problem in its section, the rest is still described."""
    policy = settings.policy
    full = fingerprint(settings)
    loaded = settings.work_instruction_file
    connectors = list(settings.connectors)
    if loaded is not None:  # the file's order of systems
        order = [system.connector for system in loaded.spec.systems]
        connectors.sort(key=lambda c: order.index(c["name"]) if c["name"] in order else len(order))
    return WorkInstruction(
        version=loaded.version if loaded else full[:VERSION_LENGTH],
        fingerprint=loaded.sha256 if loaded else full,
        source=loaded.path.name if loaded else "",
        title=loaded.spec.title if loaded else "",
        owner=loaded.spec.owner if loaded else "",
        issued=issued,
        required_approvals=policy.required_approvals,
        eligible_from=settings.people.connector,
        managers=_manager_settings(settings),
        urgent_containment=tuple(e for e in policy.effect_order if e in policy.urgent_containment),
        effect_order=policy.effect_order,
        systems=tuple(_system(c, settings, capabilities_of) for c in connectors),
        manual_steps=tuple(
            ManualTask(s.id, s.text, s.text_nl, s.assignee, s.effect) for s in policy.manual_steps
        ),
        manual_assignee=policy.manual_assignee,
        attest_within_hours=policy.attest_within_hours,
        approval_ttl_hours=settings.approval_ttl_hours,
        retention_days=settings.retention_days,
        timezone=settings.timezone,
        end_of_day=settings.end_of_day,
        retry_delays_seconds=tuple(settings.retry_delays_seconds),
        recovery_delays_seconds=tuple(settings.recovery_delays_seconds),
        remind_after_hours=policy.remind_after_hours,
        escalate_after_hours=policy.escalate_after_hours,
        escalation_managers=policy.escalation_managers,
        recheck_after_days=policy.recheck_after_days,
    )
