"""Microsoft Entra ID (Azure AD) through Microsoft Graph, as an app (client credentials).

Finds the leaver by `match_attribute` (userPrincipalName, mail or employeeId; the OData
string literal with single quotes doubled); `system_id` is the Graph object id. The kinds
of access and what happens to each are listed in `connectors.entra_access`.

Order. The service takes a system's steps in the policy's effect order (by default
membership, data, credential, sign_in, session; the urgent containment phase first runs
sign_in and session) and calls `revoke` once per grant. So, per effect: memberships
(groups, app roles, direct licences), then sign-in methods, then the account is disabled,
then `revokeSignInSessions` - after the disable, so no new session can start. The user's
default MFA method cannot be deleted while others remain (Graph refuses it): revoking it
deletes the other methods first, so it always goes last, whatever order the plan has.
`revoke_many` does the whole list for bulk runs and the benchmark in the order disable,
sessions, memberships and app roles (one `$batch`), methods (default last), licences.

A 404 on a removal means it is already done. Verification reads everything back; grants
the service only reports (keep, manual, elsewhere) never count as remaining.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC
from typing import Any

import httpx
import structlog

from connectors.base import (
    NOT_SENT,
    AccessGrant,
    Capabilities,
    Check,
    ConnectorError,
    Health,
    Leaver,
    Message,
    Outcome,
    OutcomeStatus,
    PermanentError,
    SubjectNotFound,
    Verification,
    revoke_step,
)
from connectors.config import ConnectorKind
from connectors.entra_access import (
    ACCOUNT,
    APP_ROLE,
    CAPABILITIES,
    DEFAULT_METHOD,
    GROUP,
    GROUP_FIELDS,
    LICENCE,
    METHOD,
    SESSIONS,
    USER_FIELDS,
    EntraUser,
    UserAccess,
    grants_of,
)
from connectors.entra_graph import BatchItem, EntraConfig, PermissionMissing
from connectors.entra_writes import EntraWrites

__all__ = ["KIND", "EntraConfig", "EntraConnector", "from_config"]

log = structlog.get_logger(__name__)


class EntraConnector(EntraWrites):
    """One Entra tenant as an offboarding target."""

    @property
    def capabilities(self) -> Capabilities:
        return CAPABILITIES

    # -- the Connector protocol ------------------------------------------------------

    def check(self) -> Health:
        problems: list[str] = []
        notes: list[str] = []
        try:
            with self.session() as client:
                found = (
                    self.get_json(client, "users", "find_user", {"$top": "1", "$select": "id"}).get(
                        "value"
                    )
                    or []
                )
                if found:
                    uid = str(found[0]["id"])
                    for path, operation in (
                        (f"users/{uid}/memberOf", "member_of"),
                        (f"users/{uid}/appRoleAssignments", "app_roles"),
                        (f"users/{uid}/authentication/methods", "methods"),
                        (f"users/{uid}/ownedDevices", "devices"),
                        (f"users/{uid}/licenseDetails", "licences"),
                    ):
                        try:
                            self.get_json(client, path, operation)
                        except PermissionMissing as exc:
                            problems.append(str(exc))
        except ConnectorError as exc:
            problems.append(str(exc))
        notes.append(
            "writes need (not probed, a probe would change something): "
            "User.EnableDisableAccount.All, User.RevokeSessions.All, GroupMember.ReadWrite.All, "
            "AppRoleAssignment.ReadWrite.All, UserAuthenticationMethod.ReadWrite.All, "
            "LicenseAssignment.ReadWrite.All"
        )
        return Health(ok=not problems, messages=problems + notes)

    def inventory(self, leaver: Leaver) -> list[AccessGrant]:
        with self.session() as client:
            try:
                access = self._read(client, leaver)
            except SubjectNotFound:
                return []
        return grants_of(self.name, access, self.config.sessions_window_hours)

    def revoke(self, grant: AccessGrant, action: str | None = None) -> Outcome:
        def perform(chosen: str) -> str:
            with self.session() as client:
                return self.revoke_one(client, grant, chosen)

        return revoke_step(self.name, self.capabilities, grant, action, perform)

    def verify(self, leaver: Leaver) -> Verification:
        with self.session() as client:
            try:
                access = self._read(client, leaver)
            except SubjectNotFound:
                detail = Message.of(
                    "entra.detail.no_user", "no user has %(filter)s", filter=self._filter(leaver)
                )
                return Verification([], [Check(CHECK_NO_ACCOUNT, True, detail)])
        grants = grants_of(self.name, access, self.config.sessions_window_hours)
        remaining = [
            g for g in grants if CAPABILITIES.action_for(self.name, g, None) not in NOT_SENT
        ]
        return Verification(remaining, _checks(access, remaining))

    def revoke_many(self, grants: list[AccessGrant]) -> list[Outcome]:
        """Every grant the service sends, in one go: the bulk path (`$batch`)."""
        sent = [g for g in grants if CAPABILITIES.action_for(self.name, g, None) not in NOT_SENT]
        if self.dry_run:
            return [
                Outcome(
                    g,
                    OutcomeStatus.DRY_RUN,
                    f"dry run: would revoke {g.label}",
                    CAPABILITIES.action_for(self.name, g, None),
                )
                for g in sent
            ]
        with self.session() as client:
            return self.revoke_in_bulk(client, sent)

    # -- reading -----------------------------------------------------------------------

    def _match_value(self, leaver: Leaver) -> str:
        return leaver.email if self.config.match_value == "email" else leaver.employee_id

    def _filter(self, leaver: Leaver) -> str:
        literal = self._match_value(leaver).replace("'", "''")
        return f"{self.config.match_attribute} eq '{literal}'"

    def find_user(self, client: httpx.Client, leaver: Leaver) -> EntraUser:
        odata = self._filter(leaver)
        found = self.collect(
            client,
            self.get_json(client, "users", "find_user", {"$filter": odata, "$select": USER_FIELDS}),
            "find_user",
        )
        if not found:
            raise SubjectNotFound(f"{self.name}: no user has {odata}")
        if len(found) > 1:
            names = ", ".join(sorted(str(u.get("userPrincipalName")) for u in found))
            raise PermanentError(
                f"{self.name}: {len(found)} users have {odata}: {names}; "
                "refusing to guess. Pick another match_attribute"
            )
        return EntraUser.from_graph(found[0])

    def _read(self, client: httpx.Client, leaver: Leaver) -> UserAccess:
        user = self.find_user(client, leaver)
        base = f"users/{user.id}"
        items = [
            BatchItem("memberOf", "GET", f"{base}/memberOf?$select={GROUP_FIELDS}", "member_of"),
            BatchItem("appRoles", "GET", f"{base}/appRoleAssignments", "app_roles"),
            BatchItem("methods", "GET", f"{base}/authentication/methods", "methods"),
            BatchItem("preferences", "GET", f"{base}/authentication/signInPreferences", "methods"),
            BatchItem(
                "devices",
                "GET",
                f"{base}/ownedDevices?$select=id,displayName,operatingSystem",
                "devices",
            ),
            BatchItem("licences", "GET", f"{base}/licenseDetails", "licences"),
        ]
        results = self.batch(client, items)
        rows: dict[str, Any] = {}
        for item in items:
            result = results[item.id]
            if result.status == 404:
                raise SubjectNotFound(f"{self.name}: user {user.upn} vanished while reading")
            self.check_item(item, result)
            body = result.body if isinstance(result.body, dict) else {}
            rows[item.id] = (
                body if item.id == "preferences" else self.collect(client, body, item.operation)
            )
        return UserAccess(
            user=user,
            member_of=rows["memberOf"],
            app_roles=rows["appRoles"],
            methods=rows["methods"],
            default_method=rows["preferences"].get("userPreferredMethodForSecondaryAuthentication"),
            devices=rows["devices"],
            sku_names={
                str(r.get("skuId")): str(r.get("skuPartNumber") or r.get("skuId"))
                for r in rows["licences"]
            },
        )


CHECK_NO_ACCOUNT = Message.of("entra.check.no_account", "no user in the tenant")
CHECK_DISABLED = Message.of("entra.check.account_disabled", "account disabled")
CHECK_SESSIONS = Message.of("entra.check.sessions_revoked", "sign-in sessions revoked")
CHECK_MEMBERSHIPS = Message.of(
    "entra.check.no_memberships", "no group, app role or licence left to remove"
)
CHECK_METHODS = Message.of("entra.check.no_methods", "no sign-in method left to remove")


def _checks(access: UserAccess, remaining: list[AccessGrant]) -> list[Check]:
    user = access.user
    kinds = {g.kind for g in remaining}
    if user.synced:
        state = Message.of(
            "entra.detail.synced_account",
            "%(user)s is synced from on-premises "
            "AD: accountEnabled is %(enabled)s, AD's step disables it",
            user=user.upn,
            enabled=str(user.enabled).lower(),
        )
        account = Check(CHECK_DISABLED, True, state)
    else:
        state = Message.of(
            "entra.detail.account_enabled",
            "%(user)s: accountEnabled is %(enabled)s",
            user=user.upn,
            enabled=str(user.enabled).lower(),
        )
        account = Check(CHECK_DISABLED, ACCOUNT not in kinds, state)
    since = (
        user.sessions_valid_from.astimezone(UTC).isoformat()
        if user.sessions_valid_from
        else "never"
    )
    sessions = Check(
        CHECK_SESSIONS,
        SESSIONS not in kinds,
        Message.of(
            "entra.detail.sessions", "signInSessionsValidFromDateTime: %(since)s", since=since
        ),
    )
    left = [g.target for g in remaining if g.kind in (GROUP, APP_ROLE, LICENCE)]
    memberships = Check(
        CHECK_MEMBERSHIPS,
        not left,
        Message.of(
            "entra.detail.memberships", "still there: %(left)s", left=", ".join(left) or "none"
        ),
    )
    methods = [g.label.text for g in remaining if g.kind in (METHOD, DEFAULT_METHOD)]
    method_check = Check(
        CHECK_METHODS,
        not methods,
        Message.of(
            "entra.detail.methods", "still there: %(left)s", left="; ".join(methods) or "none"
        ),
    )
    return [account, sessions, memberships, method_check]


def from_config(config: Mapping[str, Any], dry_run: bool, **kwargs: Any) -> EntraConnector:
    """Build from a config table; tests pass `transport=` (and `msal_transport=`)."""
    return EntraConnector(EntraConfig.model_validate(dict(config)), dry_run=dry_run, **kwargs)


KIND = ConnectorKind(
    kind="entra",
    config=EntraConfig,
    build=lambda config, dry_run: EntraConnector(config, dry_run=dry_run),
    description="Microsoft Entra ID via Microsoft Graph (app with a secret or certificate): "
    "remove group memberships, app roles, sign-in methods and direct licences, disable the "
    "account, revoke sign-in sessions",
)
