"""Proving a leaver's directory access is gone: the lockout policy and a refused sign-in.

ppolicy unlocks an account whenever its password changes, so every password write here is
followed by putting the lock back when the account was locked. `verify()` proves the lock
rather than trusting it: once the account is locked and its password replaced, it sets
another random password known only to that call and binds with it; the check passes only if
slapd refuses the bind.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import ldap3

from connectors.base import Check, Message
from connectors.ldap_client import LdapClient

PERMANENT_LOCK = "000001010000Z"
USER_ATTRIBUTES = ["uid", "entryUUID", "pwdAccountLockedTime", "pwdReset", "pwdPolicySubentry"]

# What the connector says to people; the catalogs templates/connectors/messages.*.json
# translate these ids, the defaults are the English text.
CHECK_POLICY = Message.of("ldap.check.lockout_policy", "lockout policy enforced")
CHECK_PROBE = Message.of("ldap.check.sign_in_refused", "sign-in refused")
CHECK_NO_ACCOUNT = Message.of("ldap.check.no_account", "no account")


@dataclass(frozen=True)
class _Account:
    dn: str
    uuid: str
    uid: str | None
    locked: bool  # permanently, by an administrator
    password_reset: bool  # pwdReset: TRUE
    policy: str | None  # pwdPolicySubentry: a policy of its own instead of the default

    @classmethod
    def from_entry(cls, dn: str, attributes: dict[str, list[str]]) -> _Account:
        return cls(
            dn=dn,
            uuid=next(iter(attributes.get("entryuuid", [])), dn),
            uid=next(iter(attributes.get("uid", [])), None),
            locked=PERMANENT_LOCK in attributes.get("pwdaccountlockedtime", []),
            password_reset=[v.upper() for v in attributes.get("pwdreset", [])] == ["TRUE"],
            policy=next(iter(attributes.get("pwdpolicysubentry", [])), None),
        )


class LdapProofs(LdapClient):
    """Password replacement, the lockout policy and the sign-in probe."""

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

    # -- proving it ----------------------------------------------------------------

    def _lockout_policy(
        self, conn: ldap3.Connection, own_policy: str | None
    ) -> tuple[bool, Message]:
        """Whether the policy that governs the account (its own, else the default) locks."""
        policy_dn = own_policy or self.config.lockout_policy_dn
        if policy_dn is None:
            return False, Message.of(
                "ldap.detail.policy_unset",
                "lockout_policy_dn is not set: set it to the ppolicy default policy "
                "(olcPPolicyDefault) so the connector can confirm locked accounts cannot sign in",
            )
        policy = self.read(conn, policy_dn, ["pwdLockout", "pwdAttribute"])
        if policy is None:
            return False, Message.of(
                "ldap.detail.policy_missing",
                "password policy %(policy)s does not exist: create it with pwdAttribute: "
                "userPassword and pwdLockout: TRUE, or locking an account has no effect",
                policy=policy_dn,
            )
        if [v.upper() for v in policy.get("pwdlockout", [])] != ["TRUE"]:
            return False, Message.of(
                "ldap.detail.policy_no_lockout",
                "password policy %(policy)s lacks pwdLockout: TRUE, "
                "so locked accounts can still sign in",
                policy=policy_dn,
            )
        return True, Message.of(
            "ldap.detail.policy_ok", "%(policy)s has pwdLockout: TRUE", policy=policy_dn
        )

    def _sign_in_probe(self, conn: ldap3.Connection, account: _Account) -> Check:
        """Give the account a password only this call knows, then show signing in with it fails."""
        if self.dry_run:
            detail = Message.of(
                "ldap.detail.probe_dry_run", "not attempted: a dry run writes nothing"
            )
            return Check(CHECK_PROBE, False, detail)
        if not (account.locked and account.password_reset):
            detail = Message.of(
                "ldap.detail.probe_not_yet",
                "not attempted: revoke the account and password grants first",
            )
            return Check(CHECK_PROBE, False, detail)
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
            detail = Message.of(
                "ldap.detail.probe_succeeded",
                "a bind as %(account)s with a freshly set password SUCCEEDED",
                account=account.dn,
            )
            return Check(CHECK_PROBE, False, detail)
        detail = Message.of(
            "ldap.detail.probe_refused",
            "a bind as %(account)s with a freshly set password was refused",
            account=account.dn,
        )
        return Check(CHECK_PROBE, True, detail)
