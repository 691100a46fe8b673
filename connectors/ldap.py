"""OpenLDAP: lock the account, replace the password, remove group memberships.

What counts as access (see `LdapConnector.inventory`); every grant's `system_id` is the
entry's `entryUUID`, so a renamed entry is still found and a new entry that took over a DN
is never touched:

- kind `account` (effect sign_in, action disable): the leaver can sign in. Revoked by
  setting the ppolicy attribute `pwdAccountLockedTime: 000001010000Z`, which locks until
  an administrator unlocks. It only takes effect when the password policy has
  `pwdLockout: TRUE`; `check()` and `verify()` report a policy that does not. Deleting
  accounts is not supported: the policy may not ask for it.
- kind `password` (effect credential, action remove): the leaver's password. Revoked by
  replacing it with a random one nobody sees, together with `pwdReset: TRUE`, the ppolicy
  mark for "an administrator set this password and its holder has not chosen one since".
  The grant is listed while that mark is absent, so listing, revoking and listing again
  ends empty, and a second revoke reports ALREADY_DONE. A password an administrator reset
  before the leaver left carries the same mark and is not listed; it stays unusable while
  the account is locked.
- kind `group` (effect membership, action remove): `member` of a groupOfNames or
  `memberUid` of a posixGroup under `groups_base`. A groupOfNames must keep one member, so
  when the leaver is the last one the configured placeholder takes their place in the same
  modify.

How the lock is proved is in `connectors/ldap_proof.py`.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Any

import ldap3
import structlog
from ldap3.core import results
from ldap3.utils.conv import escape_filter_chars

from connectors.base import (
    DISABLE,
    REMOVE,
    AccessGrant,
    AlreadyDone,
    Capabilities,
    Check,
    ConnectorError,
    Effect,
    Health,
    KindCapability,
    Leaver,
    Message,
    Outcome,
    PermanentError,
    Verification,
    revoke_step,
)
from connectors.config import ConnectorKind
from connectors.ldap_client import (
    ConnectionFactory,
    LdapConfig,
    LdapResultError,
    build_tls,
)
from connectors.ldap_people import LdapPeopleDirectory
from connectors.ldap_proof import (
    CHECK_NO_ACCOUNT,
    CHECK_POLICY,
    PERMANENT_LOCK,
    USER_ATTRIBUTES,
    LdapProofs,
    _Account,
)

__all__ = [
    "KIND",
    "LdapConfig",
    "LdapConnector",
    "LdapPeopleDirectory",
    "build_tls",
    "from_config",
    "people_from_config",
]

log = structlog.get_logger(__name__)

ACCOUNT, PASSWORD, GROUP = "account", "password", "group"
CAPABILITIES = Capabilities(
    (
        KindCapability(ACCOUNT, Effect.SIGN_IN, (DISABLE,), "lock (ppolicy pwdAccountLockedTime)"),
        KindCapability(PASSWORD, Effect.CREDENTIAL, (REMOVE,), "replace with a random password"),
        KindCapability(GROUP, Effect.MEMBERSHIP, (REMOVE,), "remove member / memberUid"),
    )
)
_KIND_ORDER = {ACCOUNT: 0, PASSWORD: 1, GROUP: 2}


def _rdn_value(dn: str) -> str:
    return dn.split(",", 1)[0].partition("=")[2] or dn


class LdapConnector(LdapProofs):
    """An OpenLDAP directory with the ppolicy overlay, as one offboarding target."""

    def __init__(
        self, config: LdapConfig, *, connect: ConnectionFactory | None = None, dry_run: bool = False
    ) -> None:
        super().__init__(config, connect=connect, dry_run=dry_run)

    @property
    def capabilities(self) -> Capabilities:
        return CAPABILITIES

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
                    messages.append(detail.text)
        except ConnectorError as exc:
            messages.append(str(exc))
        return Health(ok=not messages, messages=messages)

    def inventory(self, leaver: Leaver) -> list[AccessGrant]:
        with self.session() as conn:
            account = self._find(conn, leaver)
            if account is None:
                return []
            return self._grants(conn, account)

    def revoke(self, grant: AccessGrant, action: str | None = None) -> Outcome:
        def perform(_chosen: str) -> str:  # LDAP has one action per kind
            with self.session() as conn:
                return self._revoke(conn, grant)

        return revoke_step(self.name, self.capabilities, grant, action, perform)

    def verify(self, leaver: Leaver) -> Verification:
        with self.session() as conn:
            account = self._find(conn, leaver)
            if account is None:
                what = f"{self.config.match_attribute}={self._match_value(leaver)}"
                detail = Message.of(
                    "ldap.detail.no_entry", "no entry matches %(filter)s", filter=what
                )
                return Verification([], [Check(CHECK_NO_ACCOUNT, True, detail)])
            remaining = self._grants(conn, account)
            policy_ok, policy_detail = self._lockout_policy(conn, account.policy)
            checks = [Check(CHECK_POLICY, policy_ok, policy_detail)]
            checks.append(self._sign_in_probe(conn, account))
        return Verification(remaining, checks)

    # -- finding the leaver and their access -------------------------------------

    def _match_value(self, leaver: Leaver) -> str:
        return leaver.email if self.config.match_attribute == "mail" else leaver.employee_id

    def _find(self, conn: ldap3.Connection, leaver: Leaver) -> _Account | None:
        value = escape_filter_chars(self._match_value(leaver))
        search_filter = f"({self.config.match_attribute}={value})"
        found = self.search(conn, self.config.users_base, search_filter, USER_ATTRIBUTES)
        if len(found) > 1:
            names = ", ".join(sorted(entry["dn"] for entry in found))
            raise PermanentError(
                f"{self.name}: {len(found)} entries match {search_filter} under "
                f"{self.config.users_base}: {names}; make the attribute unique or pick "
                "another match_attribute"
            )
        return _Account.from_entry(found[0]["dn"], found[0]["attributes"]) if found else None

    def _grants(self, conn: ldap3.Connection, account: _Account) -> list[AccessGrant]:
        def grant(kind: str, system_id: str, target: str, label: Message) -> AccessGrant:
            capability = CAPABILITIES.of(kind)
            assert capability is not None
            return AccessGrant(
                connector=self.name,
                kind=kind,
                effect=capability.effect,
                system_id=system_id,
                account=account.dn,
                target=target,
                label=label,
                revoke_data={"dn": target, "account_uuid": account.uuid},
            )

        name = _rdn_value(account.dn)
        grants = []
        if not account.locked:
            label = Message.of("ldap.grant.account", "Sign-in as %(account)s", account=name)
            grants.append(grant(ACCOUNT, account.uuid, account.dn, label))
        if not account.password_reset:
            label = Message.of("ldap.grant.password", "Password of %(account)s", account=name)
            grants.append(grant(PASSWORD, account.uuid, account.dn, label))
        for group_dn, group_uuid in self._groups_of(conn, account):
            label = Message.of(
                "ldap.grant.group", "Member of %(group)s", group=_rdn_value(group_dn)
            )
            grants.append(grant(GROUP, group_uuid, group_dn, label))
        return sorted(grants, key=lambda g: (_KIND_ORDER[g.kind], g.target.lower()))

    def _groups_of(self, conn: ldap3.Connection, account: _Account) -> list[tuple[str, str]]:
        """(DN, entryUUID) of every group that lists the account."""
        clauses = [f"(&(objectClass=groupOfNames)(member={escape_filter_chars(account.dn)}))"]
        if account.uid:
            clauses.append(
                f"(&(objectClass=posixGroup)(memberUid={escape_filter_chars(account.uid)}))"
            )
        found = self.search(conn, self.config.groups_base, f"(|{''.join(clauses)})", ["entryUUID"])
        return [
            (entry["dn"], next(iter(entry["attributes"].get("entryuuid", [])), entry["dn"]))
            for entry in found
        ]

    def _read_account(self, conn: ldap3.Connection, grant: AccessGrant) -> _Account:
        """The grant's account as it is now: found by entryUUID, so a renamed entry is still
        found and a new entry that took over the DN is never touched."""
        uuid = grant.revoke_data.get("account_uuid")
        if uuid is None:
            raise PermanentError(f"{self.name}: grant {grant.key} lacks its account's entryUUID")
        found = self._by_uuid(conn, self.config.users_base, uuid, USER_ATTRIBUTES)
        if found is None:
            raise AlreadyDone(f"{grant.account} (entryUUID {uuid}) no longer exists")
        return _Account.from_entry(found["dn"], found["attributes"])

    def _by_uuid(
        self, conn: ldap3.Connection, base: str, uuid: str, attributes: list[str]
    ) -> dict[str, Any] | None:
        """The entry with this entryUUID; a server without entryUUIDs had the DN stand in."""
        if "=" in uuid:  # a DN: the server returned no entryUUID
            entry = self.read(conn, uuid, attributes)
            return None if entry is None else {"dn": uuid, "attributes": entry}
        search_filter = f"(entryUUID={escape_filter_chars(uuid)})"
        found = self.search(conn, base, search_filter, attributes)
        return found[0] if found else None

    # -- revoking ------------------------------------------------------------------

    def _revoke(self, conn: ldap3.Connection, grant: AccessGrant) -> str:
        if grant.connector != self.name:
            raise PermanentError(f"{self.name}: grant belongs to connector {grant.connector!r}")
        account = self._read_account(conn, grant)
        if grant.kind == ACCOUNT:
            if account.locked:
                raise AlreadyDone(f"{account.dn} is already locked")
            self.modify(
                conn,
                account.dn,
                {"pwdAccountLockedTime": [(ldap3.MODIFY_REPLACE, [PERMANENT_LOCK])]},
            )
            return f"locked {account.dn}"
        if grant.kind == PASSWORD:
            if account.password_reset:
                raise AlreadyDone(f"the password of {account.dn} was already replaced")
            self._replace_password(conn, account, secrets.token_urlsafe(32))
            return f"replaced the password of {account.dn} with a random one nobody has seen"
        group = self._by_uuid(conn, self.config.groups_base, grant.system_id, ["1.1"])
        if group is None:
            raise AlreadyDone(f"{grant.target} (entryUUID {grant.system_id}) no longer exists")
        return self._remove_member(conn, account, group["dn"])

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
        return bool(self.search(conn, group, search_filter, ["1.1"], scope=ldap3.BASE))

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


def from_config(config: Mapping[str, Any], dry_run: bool) -> LdapConnector:
    return LdapConnector(LdapConfig.model_validate(dict(config)), dry_run=dry_run)


def people_from_config(config: Mapping[str, Any]) -> LdapPeopleDirectory:
    return LdapPeopleDirectory(LdapConfig.model_validate(dict(config)))


KIND = ConnectorKind(
    kind="ldap",
    config=LdapConfig,
    build=lambda config, dry_run: LdapConnector(config, dry_run=dry_run),
    people=LdapPeopleDirectory,
    description="OpenLDAP with ppolicy: lock the account, replace the password, "
    "remove group memberships; can also be the people directory",
)
