"""A small connector that deletes directory accounts, for testing cascades on a real peer.

Deleting an entry on the test slapd really does take its `member` values out of every
groupOfNames: the refint overlay (olcRefintAttribute: member) does it, in the background,
right after the delete. So here a groupOfNames membership and the password declare that
they cascade from the account; a posixGroup's `memberUid` is a plain name refint does not
touch, so those memberships are revoked on their own.

Not shipped: the LDAP connector locks accounts and refuses to delete them (its capabilities
say so). This one exists to prove the core's cascade handling against a peer that cascades.
"""

from __future__ import annotations

import time

import ldap3
from ldap3.utils.conv import escape_filter_chars

from connectors.base import (
    DELETE,
    REMOVE,
    AccessGrant,
    AlreadyDone,
    Capabilities,
    Check,
    Effect,
    KindCapability,
    Leaver,
    Message,
    Verification,
)
from connectors.ldap import ACCOUNT, GROUP, PASSWORD, LdapConnector
from connectors.ldap_proof import _Account

CAPABILITIES = Capabilities(
    (
        KindCapability(ACCOUNT, Effect.SIGN_IN, (DELETE,), "delete the entry", frozenset({DELETE})),
        KindCapability(PASSWORD, Effect.CREDENTIAL, (REMOVE,), "replace with a random password"),
        KindCapability(GROUP, Effect.MEMBERSHIP, (REMOVE,), "remove member / memberUid"),
    )
)
REFINT_WAIT_SECONDS = 5.0
NO_DANGLING = Message.of("deleting.check.no_dangling", "no group lists a deleted account")


class DeletingLdapConnector(LdapConnector):
    @property
    def capabilities(self) -> Capabilities:
        return CAPABILITIES

    def _grants(self, conn: ldap3.Connection, account: _Account) -> list[AccessGrant]:
        grants = super()._grants(conn, account)
        key = f"{self.name}|{ACCOUNT}|{account.uuid}"
        if not any(g.key == key for g in grants):  # listed while the entry exists
            label = Message.of("deleting.grant.account", "Account %(dn)s", dn=account.dn)
            grants.insert(0, self._account_grant(account, label))
        posix = set(self._posix_groups(conn, account))
        return [
            g.model_copy(update={"cascades_from": key})
            if g.kind == PASSWORD or (g.kind == GROUP and g.target not in posix)
            else g
            for g in grants
        ]

    def _account_grant(self, account: _Account, label: Message) -> AccessGrant:
        return AccessGrant(
            connector=self.name,
            kind=ACCOUNT,
            effect=Effect.SIGN_IN,
            system_id=account.uuid,
            account=account.dn,
            target=account.dn,
            label=label,
            revoke_data={"dn": account.dn, "account_uuid": account.uuid},
        )

    def _posix_groups(self, conn: ldap3.Connection, account: _Account) -> list[str]:
        if not account.uid:
            return []
        uid = escape_filter_chars(account.uid)
        found = self.search(conn, self.config.groups_base, f"(memberUid={uid})", ["1.1"])
        return [entry["dn"] for entry in found]

    def _revoke(self, conn: ldap3.Connection, grant: AccessGrant) -> str:
        if grant.kind != ACCOUNT:
            return super()._revoke(conn, grant)
        account = self._read_account(conn, grant)
        self._request(conn, "delete", account.dn)
        self._wait_for_refint(conn, account.dn)
        return f"deleted {account.dn}; refint took it out of its groups"

    def _wait_for_refint(self, conn: ldap3.Connection, dn: str) -> None:
        """refint rewrites the groups right after the delete has been answered."""
        deadline = time.monotonic() + REFINT_WAIT_SECONDS
        member = f"(member={escape_filter_chars(dn)})"
        while self.search(conn, self.config.groups_base, member, ["1.1"]):
            if time.monotonic() > deadline:
                raise AlreadyDone(f"{dn} deleted, but groups still list it")  # verify will tell
            time.sleep(0.02)

    def verify(self, leaver: Leaver) -> Verification:
        verification = super().verify(leaver)
        with self.session() as conn:
            found = self.search(conn, self.config.groups_base, "(member=*)", ["member"])
            dangling = sorted(
                f"{entry['dn']}: {member}"
                for entry in found
                for member in entry["attributes"].get("member", [])
                if member.lower().endswith(self.config.users_base.lower())
                and self.read(conn, member, ["1.1"]) is None
            )
        detail = Message.of(
            "deleting.detail.dangling", "%(found)s", found="; ".join(dangling) or "none"
        )
        check = Check(NO_DANGLING, not dangling, detail)
        return Verification(verification.remaining, [*verification.checks, check])
