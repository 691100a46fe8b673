"""Proving a leaver's AD access is gone: read back the account, and a refused sign-in.

The sign-in probe only runs once the account is disabled, so it cannot count towards a
lockout: it gives the account a fresh random password known only to this call (pwdLastSet
is put back to 0 at once), then binds as the leaver with it. A disabled account answers
invalidCredentials with `data 533` ("account disabled") and, as measured on Samba 4.17, its
badPwdCount does not change; the check passes only when the bind is refused, and says
why in words (see `BIND_REASONS`).
"""

from __future__ import annotations

import ldap3

from connectors.active_directory_account import AdAccount, random_password
from connectors.active_directory_client import AdClient
from connectors.base import Check, Message

CHECK_NO_ACCOUNT = Message.of("active_directory.check.no_account", "no account")
CHECK_DISABLED = Message.of("active_directory.check.disabled", "account disabled")
CHECK_GROUPS = Message.of(
    "active_directory.check.memberships", "no group memberships except the primary group"
)
CHECK_OU = Message.of("active_directory.check.disabled_ou", "account in the Disabled OU")
CHECK_PROBE = Message.of("active_directory.check.sign_in_refused", "sign-in refused")


class AdProofs(AdClient):
    """The checks `verify()` returns for an account that still exists."""

    def no_account_check(self, search_filter: str) -> Check:
        detail = Message.of(
            "active_directory.detail.no_account",
            "no user matches %(filter)s",
            filter=search_filter,
        )
        return Check(CHECK_NO_ACCOUNT, True, detail)

    def account_checks(self, conn: ldap3.Connection, account: AdAccount) -> list[Check]:
        uac = Message.of(
            "active_directory.detail.uac",
            "userAccountControl is %(uac)s",
            uac=str(account.uac),
        )
        groups = Message.of(
            "active_directory.detail.member_of",
            "memberOf lists %(count)s groups",
            count=str(len(account.member_of)),
        )
        where = Message.of("active_directory.detail.dn", "the account is %(dn)s", dn=account.dn)
        checks = [
            Check(CHECK_DISABLED, account.disabled, uac),
            Check(CHECK_GROUPS, not account.member_of, groups),
        ]
        if self.config.on_leave == "disable":
            checks.append(Check(CHECK_OU, account.in_ou(self.config.disabled_ou), where))
        checks.append(self._sign_in_probe(conn, account))
        return checks

    def _sign_in_probe(self, conn: ldap3.Connection, account: AdAccount) -> Check:
        if self.dry_run:
            detail = Message.of(
                "active_directory.detail.probe_dry_run", "not attempted: a dry run writes nothing"
            )
            return Check(CHECK_PROBE, False, detail)
        if not account.disabled:
            detail = Message.of(
                "active_directory.detail.probe_not_yet",
                "not attempted: the account is not disabled yet (a failed bind could count "
                "towards a lockout)",
            )
            return Check(CHECK_PROBE, False, detail)
        password = random_password()
        encoded = f'"{password}"'.encode("utf-16-le")
        self.modify(conn, account.dn, {"unicodePwd": [(ldap3.MODIFY_REPLACE, [encoded])]})
        self.modify(conn, account.dn, {"pwdLastSet": [(ldap3.MODIFY_REPLACE, ["0"])]})
        probe = self._connect(account.dn, password)
        try:
            refusal = self.open_and_bind(probe, account.dn)
        finally:
            probe.unbind()
        if refusal is None:
            detail = Message.of(
                "active_directory.detail.probe_succeeded",
                "a bind as %(account)s with a freshly set password SUCCEEDED",
                account=account.dn,
            )
            return Check(CHECK_PROBE, False, detail)
        code, reason = refusal
        detail = Message.of(
            "active_directory.detail.probe_refused",
            "a bind as %(account)s with a freshly set password was refused: %(reason)s "
            "(data %(code)s)",
            account=account.dn,
            reason=reason,
            code=code or "?",
        )
        return Check(CHECK_PROBE, True, detail)
