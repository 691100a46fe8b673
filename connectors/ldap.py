"""OpenLDAP: lock the account, replace the password, remove group memberships.

What counts as access (see `LdapConnector.inventory`):

- ACCOUNT: the leaver can sign in. Revoked by setting the ppolicy attribute
  `pwdAccountLockedTime: 000001010000Z`, which locks until an administrator
  unlocks. It only takes effect when the password policy has `pwdLockout: TRUE`;
  `check()` and `verify()` report a policy that does not.
- CREDENTIAL: the leaver's password. Revoked by replacing it with a random one
  nobody sees, together with `pwdReset: TRUE`, the ppolicy mark for "an
  administrator set this password and its holder has not chosen one since". The
  grant is listed while that mark is absent, so listing, revoking and listing
  again ends empty, and a second revoke reports ALREADY_DONE. A password an
  administrator reset before the leaver left carries the same mark and is not
  listed; it stays unusable while the account is locked, and only an
  administrator removing the lock by hand could make it usable again (a password
  change removes the lock, but also that password).
- MEMBERSHIP: `member` of a groupOfNames or `memberUid` of a posixGroup under
  `groups_base`. A groupOfNames must keep one member, so when the leaver is the
  last one the configured placeholder takes their place in the same modify.

ppolicy unlocks an account whenever its password changes, so every password
write here is followed by putting the lock back when the account was locked.

`verify()` proves the lock rather than trusting it: once the account is locked
and its password replaced, it sets another random password known only to that
call and binds with it; the check passes only if slapd refuses the bind.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import ldap3
import structlog
from ldap3.core import results
from ldap3.utils.conv import escape_filter_chars

from connectors.base import (
    AccessGrant,
    AlreadyDone,
    Check,
    ConnectorError,
    GrantKind,
    Health,
    Leaver,
    Outcome,
    OutcomeStatus,
    PermanentError,
    Verification,
)
from connectors.ldap_client import (
    ConnectionFactory,
    DryRunRefused,
    LdapClient,
    LdapConfig,
    LdapResultError,
    NoSuchEntry,
    build_tls,
)
from connectors.ldap_people import LdapPeopleDirectory

__all__ = [
    "LdapConfig",
    "LdapConnector",
    "LdapPeopleDirectory",
    "build_tls",
    "from_config",
    "people_from_config",
]

log = structlog.get_logger(__name__)

PERMANENT_LOCK = "000001010000Z"
_KIND_ORDER = {GrantKind.ACCOUNT: 0, GrantKind.CREDENTIAL: 1, GrantKind.MEMBERSHIP: 2}
_USER_ATTRIBUTES = ["uid", "pwdAccountLockedTime", "pwdReset", "pwdPolicySubentry"]


@dataclass(frozen=True)
class _Account:
    dn: str
    uid: str | None
    locked: bool  # permanently, by an administrator
    password_reset: bool  # pwdReset: TRUE
    policy: str | None  # pwdPolicySubentry: a policy of its own instead of the default

    @classmethod
    def from_entry(cls, dn: str, attributes: dict[str, list[str]]) -> _Account:
        return cls(
            dn=dn,
            uid=next(iter(attributes.get("uid", [])), None),
            locked=PERMANENT_LOCK in attributes.get("pwdaccountlockedtime", []),
            password_reset=[v.upper() for v in attributes.get("pwdreset", [])] == ["TRUE"],
            policy=next(iter(attributes.get("pwdpolicysubentry", [])), None),
        )


class LdapConnector(LdapClient):
    """An OpenLDAP directory with the ppolicy overlay, as one offboarding target."""

    def __init__(
        self, config: LdapConfig, *, connect: ConnectionFactory | None = None, dry_run: bool = False
    ) -> None:
        super().__init__(config, connect=connect, dry_run=dry_run)

    # -- the Connector protocol ------------------------------------------------

    def check(self) -> Health:
        messages: list[str] = []
        bind_dn = self.config.bind_dn
        try:
            with self.session() as conn:
                for what, base in (
                    ("users_base", self.config.users_base),
                    ("groups_base", self.config.groups_base),
                ):
                    if self.read(conn, base, ["1.1"]) is None:
                        messages.append(f"{what} {base} does not exist or {bind_dn} cannot read it")
                passed, detail = self._lockout_policy(conn, None)
                if not passed:
                    messages.append(detail)
        except ConnectorError as exc:
            messages.append(str(exc))
        return Health(ok=not messages, messages=messages)

    def inventory(self, leaver: Leaver) -> list[AccessGrant]:
        with self.session() as conn:
            account = self._find(conn, leaver)
            if account is None:
                return []
            return self._grants(conn, account)

    def revoke(self, grant: AccessGrant) -> Outcome:
        try:
            with self.session() as conn:
                outcome = Outcome(grant, OutcomeStatus.REVOKED, self._revoke(conn, grant))
        except DryRunRefused:
            outcome = Outcome(grant, OutcomeStatus.DRY_RUN, f"dry run: would revoke {grant.label}")
        except AlreadyDone as exc:
            outcome = Outcome(grant, OutcomeStatus.ALREADY_DONE, str(exc))
        log.info(
            "grant revoked",
            connector=self.name,
            kind=grant.kind.value,
            account=grant.account,
            target=grant.target,
            status=outcome.status.value,
        )
        return outcome

    def verify(self, leaver: Leaver) -> Verification:
        with self.session() as conn:
            account = self._find(conn, leaver)
            if account is None:
                what = f"{self.config.match_attribute}={self._match_value(leaver)}"
                return Verification([], [Check("no account", True, f"no entry matches {what}")])
            remaining = self._grants(conn, account)
            policy_ok, policy_detail = self._lockout_policy(conn, account.policy)
            checks = [Check("lockout policy enforced", policy_ok, policy_detail)]
            checks.append(self._sign_in_probe(conn, account))
        return Verification(remaining, checks)

    # -- finding the leaver and their access -------------------------------------

    def _match_value(self, leaver: Leaver) -> str:
        return leaver.email if self.config.match_attribute == "mail" else leaver.employee_id

    def _find(self, conn: ldap3.Connection, leaver: Leaver) -> _Account | None:
        value = escape_filter_chars(self._match_value(leaver))
        search_filter = f"({self.config.match_attribute}={value})"
        found = self.search(conn, self.config.users_base, search_filter, _USER_ATTRIBUTES)
        if len(found) > 1:
            names = ", ".join(sorted(entry["dn"] for entry in found))
            raise PermanentError(
                f"{self.name}: {len(found)} entries match {search_filter} under "
                f"{self.config.users_base}: {names}; make the attribute unique or pick "
                "another match_attribute"
            )
        return _Account.from_entry(found[0]["dn"], found[0]["attributes"]) if found else None

    def _grants(self, conn: ldap3.Connection, account: _Account) -> list[AccessGrant]:
        def grant(kind: GrantKind, target: str, label: str) -> AccessGrant:
            return AccessGrant(
                connector=self.name, kind=kind, account=account.dn, target=target, label=label
            )

        rdn = account.dn.split(",", 1)[0]
        grants = []
        if not account.locked:
            grants.append(
                grant(GrantKind.ACCOUNT, account.dn, f"Sign-in to directory account {rdn}")
            )
        if not account.password_reset:
            grants.append(
                grant(GrantKind.CREDENTIAL, account.dn, f"Password of directory account {rdn}")
            )
        for group in self._groups_of(conn, account):
            grants.append(grant(GrantKind.MEMBERSHIP, group, f"Member of {group.split(',', 1)[0]}"))
        return sorted(grants, key=lambda g: (_KIND_ORDER[g.kind], g.target.lower()))

    def _groups_of(self, conn: ldap3.Connection, account: _Account) -> list[str]:
        clauses = [f"(&(objectClass=groupOfNames)(member={escape_filter_chars(account.dn)}))"]
        if account.uid:
            clauses.append(
                f"(&(objectClass=posixGroup)(memberUid={escape_filter_chars(account.uid)}))"
            )
        found = self.search(conn, self.config.groups_base, f"(|{''.join(clauses)})", ["1.1"])
        return [entry["dn"] for entry in found]

    def _read_account(self, conn: ldap3.Connection, dn: str) -> _Account:
        attributes = self.read(conn, dn, _USER_ATTRIBUTES)
        if attributes is None:
            raise AlreadyDone(f"{dn} no longer exists")
        return _Account.from_entry(dn, attributes)

    # -- revoking ------------------------------------------------------------------

    def _revoke(self, conn: ldap3.Connection, grant: AccessGrant) -> str:
        if grant.connector != self.name:
            raise PermanentError(f"{self.name}: grant belongs to connector {grant.connector!r}")
        account = self._read_account(conn, grant.account)
        if grant.kind is GrantKind.ACCOUNT:
            if account.locked:
                raise AlreadyDone(f"{account.dn} is already locked")
            self.modify(
                conn,
                account.dn,
                {"pwdAccountLockedTime": [(ldap3.MODIFY_REPLACE, [PERMANENT_LOCK])]},
            )
            return f"locked {account.dn}"
        if grant.kind is GrantKind.CREDENTIAL:
            if account.password_reset:
                raise AlreadyDone(f"the password of {account.dn} was already replaced")
            self._replace_password(conn, account, secrets.token_urlsafe(32))
            return f"replaced the password of {account.dn} with a random one nobody has seen"
        return self._remove_member(conn, account, grant.target)

    def _replace_password(self, conn: ldap3.Connection, account: _Account, password: str) -> None:
        """Set a password no person knows, marked as reset; keep the account locked if it was."""
        changes = {
            "userPassword": [(ldap3.MODIFY_REPLACE, [password])],
            "pwdReset": [(ldap3.MODIFY_REPLACE, ["TRUE"])],
        }
        self.modify(conn, account.dn, changes)
        if account.locked:  # ppolicy removed the lock along with the old password
            self.modify(
                conn,
                account.dn,
                {"pwdAccountLockedTime": [(ldap3.MODIFY_REPLACE, [PERMANENT_LOCK])]},
            )

    def _remove_member(self, conn: ldap3.Connection, account: _Account, group: str) -> str:
        changes: dict[str, list[tuple[str, list[str]]]] = {}
        if self._holds(conn, group, "member", account.dn):
            changes["member"] = [(ldap3.MODIFY_DELETE, [account.dn])]
        if account.uid and self._holds(conn, group, "memberUid", account.uid):
            changes["memberUid"] = [(ldap3.MODIFY_DELETE, [account.uid])]
        if not changes:
            raise AlreadyDone(f"{account.dn} is no longer a member of {group}")
        try:
            self.modify(conn, group, changes)
        except LdapResultError as exc:
            if exc.code != results.RESULT_OBJECT_CLASS_VIOLATION or "member" not in changes:
                raise
            return self._replace_last_member(conn, account, group, changes)
        return f"removed {' and '.join(sorted(changes))} of {account.dn} from {group}"

    def _holds(self, conn: ldap3.Connection, group: str, attribute: str, value: str) -> bool:
        search_filter = f"({attribute}={escape_filter_chars(value)})"
        try:
            return bool(self.search(conn, group, search_filter, ["1.1"], scope=ldap3.BASE))
        except NoSuchEntry:
            return False  # the group itself is gone

    def _replace_last_member(
        self,
        conn: ldap3.Connection,
        account: _Account,
        group: str,
        changes: dict[str, list[tuple[str, list[str]]]],
    ) -> str:
        """A groupOfNames keeps one member: swap the leaver for the placeholder in one modify."""
        placeholder = self.config.empty_group_placeholder
        if placeholder is None:
            raise PermanentError(
                f"{self.name}: {account.dn} is the last member of {group}, which may not be empty; "
                "remove the group by hand or set empty_group_placeholder"
            )
        changes["member"] = [
            (ldap3.MODIFY_DELETE, [account.dn]),
            (ldap3.MODIFY_ADD, [placeholder]),
        ]
        self.modify(conn, group, changes)
        return (
            f"removed member {account.dn} from {group}, its last member; "
            f"placeholder {placeholder!r} keeps the group valid"
        )

    # -- proving it ----------------------------------------------------------------

    def _lockout_policy(self, conn: ldap3.Connection, own_policy: str | None) -> tuple[bool, str]:
        """Whether the policy that governs the account (its own, else the default) locks."""
        policy_dn = own_policy or self.config.lockout_policy_dn
        if policy_dn is None:
            return False, (
                "lockout_policy_dn is not set: set it to the ppolicy default policy "
                "(olcPPolicyDefault) so the connector can confirm locked accounts cannot sign in"
            )
        policy = self.read(conn, policy_dn, ["pwdLockout", "pwdAttribute"])
        if policy is None:
            return False, (
                f"password policy {policy_dn} does not exist: create it with pwdAttribute: "
                "userPassword and pwdLockout: TRUE, or locking an account has no effect"
            )
        if [v.upper() for v in policy.get("pwdlockout", [])] != ["TRUE"]:
            return (
                False,
                f"password policy {policy_dn} lacks pwdLockout: TRUE, "
                "so locked accounts can still sign in",
            )
        return True, f"{policy_dn} has pwdLockout: TRUE"

    def _sign_in_probe(self, conn: ldap3.Connection, account: _Account) -> Check:
        """Give the account a password only this call knows, then show signing in with it fails."""
        name = "sign-in refused"
        if self.dry_run:
            return Check(name, False, "not attempted: a dry run writes nothing")
        if not (account.locked and account.password_reset):
            return Check(name, False, "not attempted: revoke the account and password grants first")
        password = secrets.token_urlsafe(32)
        self._replace_password(conn, account, password)
        probe = ldap3.Connection(
            conn.server,
            user=account.dn,
            password=password,
            auto_referrals=False,
            raise_exceptions=False,
            receive_timeout=self.config.timeout_seconds,
        )
        try:
            signed_in = self.open_and_bind(probe, account.dn)
        finally:
            probe.unbind()
        if signed_in:
            return Check(
                name, False, f"a bind as {account.dn} with a freshly set password SUCCEEDED"
            )
        return Check(name, True, f"a bind as {account.dn} with a freshly set password was refused")


def from_config(config: Mapping[str, Any], dry_run: bool) -> LdapConnector:
    return LdapConnector(LdapConfig.model_validate(dict(config)), dry_run=dry_run)


def people_from_config(config: Mapping[str, Any]) -> LdapPeopleDirectory:
    return LdapPeopleDirectory(LdapConfig.model_validate(dict(config)))
