"""The one contract every target system fits: inventory, revoke, verify, check.

Every implementation passes the conformance suite in `connectors/testing.py`.

A connector maps one leaver to the access they hold in one system, removes it
grant by grant, and proves afterwards what is left. Connectors never read
settings, Prefect or the database: their config and client are passed in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict


class GrantKind(StrEnum):
    """What kind of access a grant is; revocation differs per kind."""

    ACCOUNT = "account"  # the ability to sign in at all (lock / disable)
    CREDENTIAL = "credential"  # a secret that proves identity (password, key, token)
    MEMBERSHIP = "membership"  # membership of a group, team or role


class Effect(StrEnum):
    """What removing a grant takes away. The core orders and phases plan steps by effect,
    never by a connector's own kinds, so a new kind of access needs no change in the core."""

    SIGN_IN = "sign_in"  # the ability to authenticate at all (lock, disable)
    SESSION = "session"  # live sessions and refresh tokens
    CREDENTIAL = "credential"  # secrets that prove identity (password, key, token)
    MEMBERSHIP = "membership"  # groups, teams, roles, licences
    DATA = "data"  # what the person owns: mailboxes, files, repositories


_EFFECT_OF_KIND = {
    GrantKind.ACCOUNT: Effect.SIGN_IN,
    GrantKind.CREDENTIAL: Effect.CREDENTIAL,
    GrantKind.MEMBERSHIP: Effect.MEMBERSHIP,
}


class Leaver(BaseModel):
    """The person leaving, as the HR system identifies them."""

    model_config = ConfigDict(frozen=True)

    employee_id: str
    email: str
    display_name: str


class AccessGrant(BaseModel):
    """One piece of access one leaver holds in one system."""

    model_config = ConfigDict(frozen=True)

    connector: str  # the configured connector's name, e.g. "directory"
    kind: GrantKind
    account: str  # the leaver's identifier in that system (e.g. their DN)
    target: str  # what the access is to (a group DN; the account itself)
    label: str  # short human description for plans and evidence

    @property
    def effect(self) -> Effect:
        return _EFFECT_OF_KIND[self.kind]

    @property
    def key(self) -> str:
        """Stable identity of the grant, used to compare plans."""
        return f"{self.connector}|{self.kind.value}|{self.account}|{self.target}"


class OutcomeStatus(StrEnum):
    REVOKED = "revoked"
    ALREADY_DONE = "already_done"
    DRY_RUN = "dry_run"


@dataclass(frozen=True)
class Outcome:
    """What revoking one grant did."""

    grant: AccessGrant
    status: OutcomeStatus
    detail: str = ""


@dataclass(frozen=True)
class Check:
    """One verification that a person can read in the evidence."""

    name: str
    passed: bool
    detail: str = ""


@dataclass(frozen=True)
class Verification:
    """Access still present after revocation, plus the checks that prove it."""

    remaining: list[AccessGrant] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.remaining and all(c.passed for c in self.checks)


@dataclass(frozen=True)
class Health:
    """Result of `check()`: can the connector do its work, and what to fix if not."""

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


class ConnectorError(Exception):
    """Base for every error a connector raises; vendor errors are mapped into these."""


class TransientError(ConnectorError):
    """Worth retrying: network trouble, busy or unavailable peer, throttling."""


class PermanentError(ConnectorError):
    """Retrying will not help: a person has to look (rights, schema, config)."""


class AlreadyDone(ConnectorError):
    """The change is already in place; callers treat it as success."""


class SubjectNotFound(PermanentError):
    """The leaver has no account in this system."""


# -- the protocols ------------------------------------------------------------


@runtime_checkable
class Connector(Protocol):
    """One target system."""

    name: str

    def check(self) -> Health:
        """Can we reach the system with enough rights? Report what to fix."""
        ...

    def inventory(self, leaver: Leaver) -> list[AccessGrant]:
        """Every access the leaver holds here. Empty when they have no account."""
        ...

    def revoke(self, grant: AccessGrant) -> Outcome:
        """Remove one grant. Revoking again reports ALREADY_DONE, never fails."""
        ...

    def verify(self, leaver: Leaver) -> Verification:
        """Read back what is left after revocation, with proof (e.g. a refused sign-in)."""
        ...


@runtime_checkable
class PeopleDirectory(Protocol):
    """Who is who: finds employees by HR id and knows who counts as a manager."""

    def find_person(self, employee_id: str) -> Person | None: ...

    def managers(self) -> list[Person]: ...
