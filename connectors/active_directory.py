"""Active Directory over LDAPS/StartTLS: disable, expire and park the account, replace the
password, remove group memberships; report the primary group and nested groups.

What counts as access; `system_id` is the object's objectGUID (a DN changes when an
account moves, the GUID does not: revoke finds the account by `<GUID=...>`):

- `group` (membership, remove; cascade: remove): a direct `memberOf` group, removed with a
  modify of the group's `member`. AD answers noSuchAttribute (Samba) or unwillingToPerform
  (Windows) for a non-member: already done.
- `nested-group` (membership, elsewhere): a group held through another group (matching rule
  1.2.840.113556.1.4.1941, LDAP_MATCHING_RULE_IN_CHAIN). It `cascades_from` the direct group
  it is held through (the first by DN when several lead to it) and goes with that group.
- `primary-group` (membership, keep): primaryGroupID (Domain Users). It is not a `member`
  value and cannot be removed; it stays with the disabled account.
- `password` (credential, remove): replaced with a random password meeting the domain's
  complexity rule (`unicodePwd`, which needs the encrypted connection), with pwdLastSet = 0;
  listed while pwdLastSet is not 0.
- `account` (sign_in, disable or delete): with disable one step sets userAccountControl |=
  ACCOUNTDISABLE (other flags kept) and accountExpires = now in one modify, then moves the
  object to `disabled_ou` (modify_dn). The move is part of this step, not a kind of its own:
  parking the account is how an admin marks it disabled, and both must happen together.
  Listed until the account is disabled, expired and in that OU. With delete: the object
  is deleted.

Every write step first reads the account (by GUID) and puts a snapshot of it (DN,
userAccountControl, accountExpires, memberOf) in the Outcome detail, so the audit holds the
state before the change. With on_leave = disable every write step also checks that
`disabled_ou` exists and refuses before any change when it does not, so a missing OU
leaves the whole plan undone rather than half done. The plan orders steps by effect:
memberships, then the password, then the account.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import ldap3
from ldap3.core import results
from ldap3.utils.conv import escape_filter_chars

from connectors.active_directory_account import (
    UAC_DISABLED,
    USER_ATTRIBUTES,
    AdAccount,
    filetime_now,
    filetime_text,
    guid_of,
    random_password,
)
from connectors.active_directory_client import AdConfig, build_tls
from connectors.active_directory_proof import AdProofs
from connectors.base import (
    DELETE,
    DISABLE,
    ELSEWHERE,
    KEEP,
    REMOVE,
    AccessGrant,
    AlreadyDone,
    Capabilities,
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
from connectors.ldap_client import LdapResultError

__all__ = ["KIND", "ActiveDirectoryConnector", "AdConfig", "build_tls", "from_config"]

ACCOUNT, PASSWORD, GROUP = "account", "password", "group"
NESTED, PRIMARY = "nested-group", "primary-group"
IN_CHAIN = "1.2.840.113556.1.4.1941"
_KIND_ORDER = {ACCOUNT: 0, PASSWORD: 1, PRIMARY: 2, GROUP: 3, NESTED: 4}
_NOT_A_MEMBER = frozenset({results.RESULT_NO_SUCH_ATTRIBUTE, results.RESULT_UNWILLING_TO_PERFORM})


def _cn(dn: str) -> str:
    return dn.split(",", 1)[0].partition("=")[2] or dn


class ActiveDirectoryConnector(AdProofs):
    """One Active Directory domain as an offboarding target."""

    @property
    def deletes(self) -> bool:
        return self.config.on_leave == DELETE

    @property
    def capabilities(self) -> Capabilities:
        account = (DELETE, DISABLE) if self.deletes else (DISABLE, DELETE)
        return Capabilities(
            (
                KindCapability(ACCOUNT, Effect.SIGN_IN, account, "disable+expire+move, or delete"),
                KindCapability(PASSWORD, Effect.CREDENTIAL, (REMOVE,), "random unicodePwd"),
                KindCapability(
                    GROUP, Effect.MEMBERSHIP, (REMOVE,), "remove member", frozenset({REMOVE})
                ),
                KindCapability(NESTED, Effect.MEMBERSHIP, (ELSEWHERE,), "goes with its group"),
                KindCapability(PRIMARY, Effect.MEMBERSHIP, (KEEP,), "stays with the account"),
            )
        )

    # -- the Connector protocol ------------------------------------------------

    def check(self) -> Health:
        messages: list[str] = []
        try:
            with self.session() as conn:
                for what, dn in (
                    ("base_dn", self.config.base_dn),
                    ("users_base", self.config.search_base),
                    ("disabled_ou", self.config.disabled_ou),
                ):
                    if self.read(conn, dn, ["1.1"]) is None:
                        messages.append(
                            f"{what} {dn} does not exist on {self.config.host} or "
                            f"{self.config.bind_user} cannot read it; create it or fix {what}"
                        )
        except ConnectorError as exc:
            messages.append(str(exc))
        return Health(ok=not messages, messages=messages)

    def inventory(self, leaver: Leaver) -> list[AccessGrant]:
        with self.session() as conn:
            account = self._find(conn, leaver)
            return [] if account is None else self._grants(conn, account)

    def revoke(self, grant: AccessGrant, action: str | None = None) -> Outcome:
        def perform(chosen: str) -> str:
            with self.session() as conn:
                return self._revoke(conn, grant, chosen)

        return revoke_step(self.name, self.capabilities, grant, action, perform)

    def verify(self, leaver: Leaver) -> Verification:
        with self.session() as conn:
            account = self._find(conn, leaver)
            if account is None:
                return Verification([], [self.no_account_check(self._filter(leaver))])
            grants = self._grants(conn, account)
            remaining = [g for g in grants if g.kind in (ACCOUNT, PASSWORD, GROUP)]
            return Verification(remaining, self.account_checks(conn, account))

    # -- finding the leaver and their access -------------------------------------

    def _filter(self, leaver: Leaver) -> str:
        attribute = self.config.match_attribute
        how = self.config.match_value or (
            "email" if attribute in ("mail", "userPrincipalName") else "employee_id"
        )
        value = {
            "email": leaver.email,
            "employee_id": leaver.employee_id,
            "email_local_part": leaver.email.partition("@")[0],
        }[how]
        match = f"({attribute}={escape_filter_chars(value)})"
        return f"(&(objectCategory=person)(objectClass=user){match})"

    def _bases(self) -> list[str]:
        """Where leavers are looked for: users_base, and disabled_ou when outside it."""
        base = self.config.search_base
        ou = self.config.disabled_ou
        inside = ou.lower().replace(" ", "").endswith(base.lower().replace(" ", ""))
        return [base] if inside else [base, ou]

    def _find(self, conn: ldap3.Connection, leaver: Leaver) -> AdAccount | None:
        search_filter = self._filter(leaver)
        found: dict[str, dict[str, Any]] = {}
        for base in self._bases():
            for entry in self.search(conn, base, search_filter, USER_ATTRIBUTES):
                found[entry["dn"]] = entry
        if len(found) > 1:
            raise PermanentError(
                f"{self.name}: {len(found)} users match {search_filter}: "
                f"{', '.join(sorted(found))}; make {self.config.match_attribute} unique "
                "or choose another match_attribute"
            )
        return AdAccount.from_entry(next(iter(found.values()))) if found else None

    def _grant(
        self, kind: str, account: AdAccount, system_id: str, target: str, label: Message
    ) -> AccessGrant:
        capability = self.capabilities.of(kind)
        assert capability is not None
        return AccessGrant(
            connector=self.name,
            kind=kind,
            effect=capability.effect,
            system_id=system_id,
            account=account.sam or account.guid,
            target=target,
            label=label,
            revoke_data={"account_guid": account.guid},
        )

    def _grants(self, conn: ldap3.Connection, account: AdAccount) -> list[AccessGrant]:
        name, grants = account.sam or _cn(account.dn), []
        done = self.deletes is False and (
            account.disabled and account.expired and account.in_ou(self.config.disabled_ou)
        )
        if not done:
            label = Message.of(
                "active_directory.grant.account",
                "Account %(account)s (userAccountControl %(uac)s, expires %(expires)s)",
                account=name,
                uac=str(account.uac),
                expires=filetime_text(account.account_expires),
            )
            grants.append(self._grant(ACCOUNT, account, account.guid, account.sam, label))
        if not account.password_replaced:
            label = Message.of(
                "active_directory.grant.password", "Password of %(account)s", account=name
            )
            grants.append(self._grant(PASSWORD, account, account.guid, account.sam, label))
        grants += self._primary_group(conn, account)
        direct = self._groups(conn, f"(member={escape_filter_chars(account.dn)})")
        for dn, guid in direct.items():
            label = Message.of("active_directory.grant.group", "Member of %(group)s", group=_cn(dn))
            grants.append(self._grant(GROUP, account, guid, dn, label))
        grants += self._nested(conn, account, direct)
        return sorted(grants, key=lambda g: (_KIND_ORDER[g.kind], g.target.lower()))

    def _groups(self, conn: ldap3.Connection, clause: str) -> dict[str, str]:
        """DN -> objectGUID of the groups matching `clause`, sorted by DN."""
        found = self.search(
            conn, self.config.base_dn, f"(&(objectClass=group){clause})", ["objectGUID"]
        )
        pairs = {e["dn"]: guid_of(e["raw"]["objectguid"][0]) for e in found}
        return dict(sorted(pairs.items(), key=lambda item: item[0].lower()))

    def _nested(
        self, conn: ldap3.Connection, account: AdAccount, direct: dict[str, str]
    ) -> list[AccessGrant]:
        """Groups held only through another group, each with the direct group it goes with."""
        chain = self._groups(conn, f"(member:{IN_CHAIN}:={escape_filter_chars(account.dn)})")
        nested = {dn: guid for dn, guid in chain.items() if dn not in direct}
        grants: list[AccessGrant] = []
        for dn, guid in nested.items():
            # the direct groups it is held through; the first by DN is the one it goes with
            via = self._groups(conn, f"(memberOf:{IN_CHAIN}:={escape_filter_chars(dn)})")
            parent_dn = next((d for d in via if d in direct), None)
            if parent_dn is None:  # changed between the two searches
                continue
            label = Message.of(
                "active_directory.grant.nested_group",
                "Member of %(group)s through %(via)s; goes with that membership",
                group=_cn(dn),
                via=_cn(parent_dn),
            )
            grant = self._grant(NESTED, account, guid, dn, label)
            parent_key = f"{self.name}|{GROUP}|{direct[parent_dn]}"
            grants.append(grant.model_copy(update={"cascades_from": parent_key}))
        return grants

    def _primary_group(self, conn: ldap3.Connection, account: AdAccount) -> list[AccessGrant]:
        if not account.primary_group_id or not account.sid:
            return []
        found = self._groups(conn, f"(objectSid={account.primary_group_sid})")
        return [
            self._grant(
                PRIMARY,
                account,
                guid,
                dn,
                Message.of(
                    "active_directory.grant.primary_group",
                    "Primary group %(group)s: cannot be removed through member; "
                    "stays with the disabled account",
                    group=_cn(dn),
                ),
            )
            for dn, guid in found.items()
        ]

    # -- revoking ------------------------------------------------------------------

    def _account_by_guid(self, conn: ldap3.Connection, grant: AccessGrant) -> AdAccount:
        guid = grant.revoke_data.get("account_guid")
        if grant.connector != self.name or not guid:
            raise PermanentError(f"{self.name}: grant {grant.key} is not one of this connector's")
        entry = self.read(conn, f"<GUID={guid}>", USER_ATTRIBUTES)
        if entry is None:
            raise AlreadyDone(f"the account {grant.account} (objectGUID {guid}) no longer exists")
        return AdAccount.from_entry(entry)

    def _require_disabled_ou(self, conn: ldap3.Connection) -> None:
        if self.deletes:
            return
        if self.read(conn, self.config.disabled_ou, ["1.1"]) is None:
            raise PermanentError(
                f"{self.name}: disabled_ou {self.config.disabled_ou} does not exist on "
                f"{self.config.host}; nothing was changed. Create the OU (or fix disabled_ou) "
                "and run the revocation again"
            )

    def _revoke(self, conn: ldap3.Connection, grant: AccessGrant, action: str) -> str:
        account = self._account_by_guid(conn, grant)
        self._require_disabled_ou(conn)
        before = f"before: {account.snapshot()}"
        if grant.kind == GROUP:
            return f"{self._remove_member(conn, account, grant)}; {before}"
        if grant.kind == PASSWORD:
            if account.password_replaced:
                raise AlreadyDone(f"the password of {account.dn} was already replaced; {before}")
            password = f'"{random_password()}"'.encode("utf-16-le")
            self.modify(conn, account.dn, {"unicodePwd": [(ldap3.MODIFY_REPLACE, [password])]})
            self.modify(conn, account.dn, {"pwdLastSet": [(ldap3.MODIFY_REPLACE, ["0"])]})
            return f"set a random password nobody has seen on {account.dn}; {before}"
        if action == DELETE:
            self._request(conn, "delete", account.dn)
            return f"deleted {account.dn}; {before}"
        return f"{self._disable(conn, account)}; {before}"

    def _remove_member(self, conn: ldap3.Connection, account: AdAccount, grant: AccessGrant) -> str:
        group = self.read(conn, f"<GUID={grant.system_id}>", ["1.1"])
        if group is None:
            raise AlreadyDone(f"the group {grant.target} no longer exists")
        if group["dn"].lower() not in {dn.lower() for dn in account.member_of}:
            raise AlreadyDone(f"{account.dn} is no longer a member of {group['dn']}")
        try:
            self.modify(conn, group["dn"], {"member": [(ldap3.MODIFY_DELETE, [account.dn])]})
        except LdapResultError as exc:
            if exc.code in _NOT_A_MEMBER:
                raise AlreadyDone(f"{account.dn} is not a member of {group['dn']}") from exc
            raise
        return f"removed {account.dn} from {group['dn']}"

    def _disable(self, conn: ldap3.Connection, account: AdAccount) -> str:
        ou = self.config.disabled_ou
        moved = account.in_ou(ou)
        if account.disabled and account.expired and moved:
            raise AlreadyDone(f"{account.dn} is already disabled, expired and in {ou}")
        rdn = account.dn.split(",", 1)[0]
        if not moved and self.read(conn, f"{rdn},{ou}", ["1.1"]) is not None:
            raise PermanentError(
                f"{self.name}: {ou} already holds an object named {rdn}; nothing was changed. "
                "Rename or remove that object and run the revocation again"
            )
        done, changes = [], {}
        if not account.disabled:
            uac = account.uac | UAC_DISABLED
            changes["userAccountControl"] = [(ldap3.MODIFY_REPLACE, [str(uac)])]
            done.append(f"userAccountControl {account.uac} -> {uac}")
        if not account.expired:
            now = filetime_now()
            changes["accountExpires"] = [(ldap3.MODIFY_REPLACE, [str(now)])]
            done.append(f"accountExpires -> {filetime_text(now)}")
        if changes:
            self.modify(conn, account.dn, changes)
        if not moved:
            self._request(conn, "modify_dn", account.dn, rdn, new_superior=ou)
            done.append(f"moved to {ou}")
        return f"{account.dn}: " + ", ".join(done)


def from_config(config: Mapping[str, Any], dry_run: bool) -> ActiveDirectoryConnector:
    return ActiveDirectoryConnector(AdConfig.model_validate(dict(config)), dry_run=dry_run)


KIND = ConnectorKind(
    kind="active_directory",
    config=AdConfig,
    build=lambda config, dry_run: ActiveDirectoryConnector(config, dry_run=dry_run),
    description="Active Directory over LDAPS/StartTLS: disable, expire and move the account "
    "(or delete it), replace the password, remove group memberships",
)
