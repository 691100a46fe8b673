"""The one contract every target system fits: inventory, revoke, verify, check.

Every implementation passes the conformance suite in `connectors/testing.py`; the README's
"Writing a connector" section walks through it.

A connector maps one leaver to the access they hold in one system (`AccessGrant`s),
declares what it can do to each kind of access (`Capabilities`), removes grants one plan
step (grant + action) at a time, and proves afterwards what is left. What it says to people
is a `Message` the service renders in the reader's language. Connectors never read
settings, Prefect or the database: their config and client are passed in.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

import structlog
from pydantic import BaseModel, ConfigDict, model_validator

_log = structlog.get_logger(__name__)


class Effect(StrEnum):
    """What removing a grant takes away. The core orders and phases plan steps by effect,
    never by a connector's own kinds, so a new kind of access needs no change in the core."""

    SIGN_IN = "sign_in"  # the ability to authenticate at all (lock, disable, delete)
    SESSION = "session"  # live sessions and refresh tokens
    CREDENTIAL = "credential"  # secrets that prove identity (password, key, token)
    MEMBERSHIP = "membership"  # groups, teams, roles, licences
    DATA = "data"  # what the person owns: mailboxes, files, repositories


# Action names the core knows; a connector may declare others ("forward", "keep", ...).
REMOVE = "remove"  # take this grant away (a membership, a credential, a token)
DISABLE = "disable"  # switch the account off and keep it (lock, active=false)
DELETE = "delete"  # remove the account itself
# Actions the service never sends to the connector; the plan shows them with the reason in
# the grant's label, and the evidence records them:
KEEP = "keep"  # stays on purpose: a primary group, an inherited licence, a mailbox kept N days
MANUAL = "manual"  # a person must do it (no API reaches it) and attests it through a signed link
ELSEWHERE = "elsewhere"  # goes with another system's step (an Entra group synced from AD)
NOT_SENT = frozenset({KEEP, MANUAL, ELSEWHERE})


class Message(BaseModel):
    """Something a connector says to people: a catalog id with parameters.

    The service renders it in the reader's language from its message catalogs
    (`templates/connectors/messages.{lang}.json`); `default` is the plain-English
    %-format used when the catalog has no entry and in logs and the audit (`text`).
    """

    model_config = ConfigDict(frozen=True)

    id: str  # e.g. "ldap.grant.group"; "" for text that has no translation
    params: dict[str, str] = {}
    default: str  # e.g. "Member of %(group)s"

    @classmethod
    def of(cls, id: str, default: str, **params: str) -> Message:
        return cls(id=id, default=default, params=params)

    @classmethod
    def plain(cls, text: str) -> Message:
        return cls(id="", default=text)

    @property
    def text(self) -> str:
        """The plain-English text, for logs, the audit and readers without a catalog."""
        return format_message(self.default, self.params)

    def __str__(self) -> str:
        return self.text

    def __hash__(self) -> int:
        return hash((self.id, tuple(sorted(self.params.items())), self.default))


def format_message(phrase: str, params: Mapping[str, str]) -> str:
    """`phrase % params`; the phrase as it is when it has no parameters or does not fit."""
    if not params:
        return phrase
    try:
        return phrase % dict(params)
    except (KeyError, ValueError, TypeError):
        return phrase


class Leaver(BaseModel):
    """The person leaving, as the HR system identifies them."""

    model_config = ConfigDict(frozen=True)

    employee_id: str
    email: str
    display_name: str


# Plans stored before grants carried their effect named one of these three kinds.
_LEGACY_EFFECTS = {
    "account": Effect.SIGN_IN,
    "credential": Effect.CREDENTIAL,
    "membership": Effect.MEMBERSHIP,
}


class AccessGrant(BaseModel):
    """One piece of access one leaver holds in one system."""

    model_config = ConfigDict(frozen=True)

    connector: str  # the configured connector's name, e.g. "directory"
    kind: str  # the connector's own word: "account", "group", "mailbox", "ssh-key", ...
    effect: Effect  # what removing it takes away; the core orders and phases by this
    system_id: str  # the system's stable id of the object (entryUUID, SCIM id, node id)
    account: str  # the leaver's id in that system
    target: str  # what the access is to, for people (a group's DN or name; the account)
    label: Message  # short description for plans and evidence
    revoke_data: dict[str, str] = {}  # opaque: what the connector needs back to revoke
    cascades_from: str | None = None  # key of a grant whose removal removes this one too

    @property
    def key(self) -> str:
        """Stable, unique identity of the grant, used to compare plans and record steps."""
        return f"{self.connector}|{self.kind}|{self.system_id}"

    def __hash__(self) -> int:
        return hash(self.key)

    @model_validator(mode="before")
    @classmethod
    def _stored_before_effects(cls, data: Any) -> Any:
        """A grant of a plan stored by an older version (kind enum, label text) still loads."""
        if isinstance(data, dict) and "effect" not in data and data.get("kind") in _LEGACY_EFFECTS:
            data = {**data, "effect": _LEGACY_EFFECTS[data["kind"]]}
            data.setdefault("system_id", f"{data.get('account')}|{data.get('target')}")
            if isinstance(data.get("label"), str):
                data["label"] = Message.plain(data["label"])
        return data


# -- what a connector can do ------------------------------------------------------


@dataclass(frozen=True)
class KindCapability:
    """What a connector can do to one kind of grant (baton-sdk: a resource type's capability)."""

    kind: str
    effect: Effect
    actions: tuple[str, ...]  # the first is the default
    description: str = ""
    # actions on this kind that also remove the grants that cascade from it
    cascade_actions: frozenset[str] = frozenset()

    @property
    def default_action(self) -> str:
        return self.actions[0]

    @property
    def revocable(self) -> bool:
        """False for a kind the service only reports (every action is keep/manual/elsewhere)."""
        return any(action not in NOT_SENT for action in self.actions)


@dataclass(frozen=True)
class Capabilities:
    """Every kind of grant a connector lists, and the actions it supports on each."""

    kinds: tuple[KindCapability, ...]

    def of(self, kind: str) -> KindCapability | None:
        return next((k for k in self.kinds if k.kind == kind), None)

    def action_for(self, connector: str, grant: AccessGrant, action: str | None) -> str:
        """The action to take on `grant` (its kind's default when None); refuses one the
        connector does not support, naming what it does support."""
        capability = self.of(grant.kind)
        if capability is None:
            raise UnsupportedAction(
                f"{connector}: grants of kind {grant.kind!r} are not something this connector "
                f"revokes; it lists: {', '.join(k.kind for k in self.kinds)}"
            )
        chosen = action or capability.default_action
        if chosen not in capability.actions:
            raise UnsupportedAction(
                f"{connector}: cannot {chosen!r} a grant of kind {grant.kind!r}; supported: "
                f"{', '.join(capability.actions)}. Change the policy (on_leave) for {connector!r}"
            )
        return chosen


# -- what revoking did, and what is left --------------------------------------------


class OutcomeStatus(StrEnum):
    REVOKED = "revoked"
    ALREADY_DONE = "already_done"
    DRY_RUN = "dry_run"
    CASCADED = "cascaded"  # removed together with the grant it cascades from; not sent
    KEPT = "kept"  # stays on purpose (action keep); reported, not sent
    ELSEWHERE = "elsewhere"  # goes with another system's step (action elsewhere); not sent
    ATTESTED = "attested"  # a manual step a person did and attested
    AWAITING_ATTESTATION = "awaiting_attestation"  # a manual step not attested yet


@dataclass(frozen=True)
class Outcome:
    """What one plan step (a grant and an action) did."""

    grant: AccessGrant
    status: OutcomeStatus
    detail: str = ""  # for operators and the audit, in English
    action: str = ""


@dataclass(frozen=True)
class Check:
    """One verification that a person can read in the evidence."""

    name: Message
    passed: bool
    detail: Message | None = None


@dataclass(frozen=True)
class Verification:
    """Access still present after revocation, plus the checks that prove it."""

    # access the service should have removed: never a grant of a kind whose action is
    # keep, manual or elsewhere (those are reported by the plan, not by verification)
    remaining: list[AccessGrant] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.remaining and all(c.passed for c in self.checks)


@dataclass(frozen=True)
class Health:
    """Result of `check()`: can the connector do its work, and what to fix if not (for
    operators, in English)."""

    ok: bool
    messages: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Person:
    """Someone in the people directory: a leaver, a requester or an approver."""

    employee_id: str
    display_name: str
    email: str
    language: str | None = None  # "nl" / "en" when the directory knows it


# -- the shared error set -----------------------------------------------------
# Every vendor error is mapped into one of these, at the connector's one choke point.


class ConnectorError(Exception):
    """Base for every error a connector raises; vendor errors are mapped into these."""


class TransientError(ConnectorError):
    """Worth retrying: network trouble, busy or unavailable peer, throttling.

    `retry_after` is the delay in seconds the peer asked for, when it said.
    """

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentError(ConnectorError):
    """Retrying will not help: a person has to look (rights, schema, config)."""


class AlreadyDone(ConnectorError):
    """The change is already in place; callers treat it as success."""


class SubjectNotFound(PermanentError):
    """The leaver has no account in this system."""


class UnsupportedAction(PermanentError):
    """The plan asks for an action the connector does not support on that kind of grant."""


class DryRunRefused(ConnectorError):
    """A write was attempted by a connector built with dry_run=True; nothing was sent."""


# -- the protocols ------------------------------------------------------------


@runtime_checkable
class Connector(Protocol):
    """One target system."""

    name: str

    @property
    def capabilities(self) -> Capabilities:
        """The kinds of grant it lists and the actions it supports on each."""
        ...

    def check(self) -> Health:
        """Can we reach the system with enough rights? Report what to fix. Writes nothing."""
        ...

    def inventory(self, leaver: Leaver) -> list[AccessGrant]:
        """Every access the leaver holds here. Empty when they have no account."""
        ...

    def revoke(self, grant: AccessGrant, action: str | None = None) -> Outcome:
        """Take one plan step: `action` (the kind's default when None) on `grant`.
        Revoking again reports ALREADY_DONE, never fails; an action the connector does not
        support raises UnsupportedAction before anything is sent."""
        ...

    def verify(self, leaver: Leaver) -> Verification:
        """Read back what is left after revocation, with proof (e.g. a refused sign-in)."""
        ...


@runtime_checkable
class PeopleDirectory(Protocol):
    """Who is who: finds employees by HR id and knows who counts as a manager."""

    def find_person(self, employee_id: str) -> Person | None: ...

    def find_people(self, employee_ids: Sequence[str]) -> dict[str, Person]:
        """The people among `employee_ids`, keyed by the id asked for (one lookup)."""
        ...

    def managers(self) -> list[Person]: ...


def revoke_step(
    name: str,
    capabilities: Capabilities,
    grant: AccessGrant,
    action: str | None,
    perform: Callable[[str], str],
) -> Outcome:
    """The part of `revoke` every connector shares: pick the action the grant's kind
    supports, run `perform(action)` (which returns a detail line), and turn a refused dry-run
    write or an "already done" into the matching outcome, logged once."""
    chosen = capabilities.action_for(name, grant, action)
    if chosen in NOT_SENT:
        raise UnsupportedAction(
            f"{name}: {chosen!r} is not sent to a connector; the service records it ({grant.label})"
        )
    try:
        outcome = Outcome(grant, OutcomeStatus.REVOKED, perform(chosen), chosen)
    except DryRunRefused:
        detail = f"dry run: would {chosen} {grant.label}"
        outcome = Outcome(grant, OutcomeStatus.DRY_RUN, detail, chosen)
    except AlreadyDone as exc:
        outcome = Outcome(grant, OutcomeStatus.ALREADY_DONE, str(exc), chosen)
    _log.info(
        "grant revoked",
        connector=name,
        kind=grant.kind,
        action=chosen,
        account=grant.account,
        target=grant.target,
        status=outcome.status.value,
    )
    return outcome
