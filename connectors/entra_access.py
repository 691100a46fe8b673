"""What a leaver holds in Entra ID, as grants: read from Graph, classified per kind.

Kinds, their effect, and what the service does with them (first action the default):

- `account` (sign_in; disable: accountEnabled=false); `synced-account` (sign_in; elsewhere)
  for a user synced from on-premises AD, whose accountEnabled AD owns;
- `sessions` (session; remove: revokeSignInSessions) - listed unless revoked within
  `sessions_window_hours` on an account that can no longer sign in here;
- `group` (membership; remove) for a cloud security or Microsoft 365 group;
  `dynamic-group` (manual: the rule decides), `synced-group` (elsewhere: AD decides),
  `mail-group` (manual: Exchange decides) for the groups Graph refuses to change;
  `directory-role` (manual: an admin role, removed in the Entra admin center);
- `app-role` (membership; remove) an enterprise app assignment;
- `auth-method` (credential; remove) MFA methods; `default-auth-method` the user's default
  one, a kind of its own so that it sorts after the others in the plan (Graph refuses to
  delete the default while others remain);
  `password` (credential; keep): Graph cannot delete it, the disabled account makes it useless;
- `licence` (membership; remove) a directly assigned licence; `group-licence` (keep) one
  that comes with a group;
- `device` (data; manual) a device the leaver owns: collect it, wipe or retire it in Intune.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from connectors.base import (
    DISABLE,
    ELSEWHERE,
    KEEP,
    MANUAL,
    REMOVE,
    AccessGrant,
    Capabilities,
    Effect,
    KindCapability,
    Message,
)

ACCOUNT, SYNCED_ACCOUNT, SESSIONS = "account", "synced-account", "sessions"
GROUP, DYNAMIC_GROUP, SYNCED_GROUP, MAIL_GROUP = (
    "group",
    "dynamic-group",
    "synced-group",
    "mail-group",
)
DIRECTORY_ROLE, APP_ROLE = "directory-role", "app-role"
METHOD, PASSWORD, LICENCE, GROUP_LICENCE, DEVICE = (
    "auth-method",
    "password",
    "licence",
    "group-licence",
    "device",
)
# after "auth-method" in the plan's order (same effect and target; kinds sort by name)
DEFAULT_METHOD = "default-auth-method"

CAPABILITIES = Capabilities(
    (
        KindCapability(ACCOUNT, Effect.SIGN_IN, (DISABLE,), "PATCH accountEnabled=false"),
        KindCapability(SYNCED_ACCOUNT, Effect.SIGN_IN, (ELSEWHERE,), "disabled in on-premises AD"),
        KindCapability(SESSIONS, Effect.SESSION, (REMOVE,), "POST revokeSignInSessions"),
        KindCapability(GROUP, Effect.MEMBERSHIP, (REMOVE,), "DELETE members/{id}/$ref"),
        KindCapability(DYNAMIC_GROUP, Effect.MEMBERSHIP, (MANUAL,), "membership by rule"),
        KindCapability(SYNCED_GROUP, Effect.MEMBERSHIP, (ELSEWHERE,), "synced from AD"),
        KindCapability(MAIL_GROUP, Effect.MEMBERSHIP, (MANUAL,), "changed in Exchange"),
        KindCapability(DIRECTORY_ROLE, Effect.MEMBERSHIP, (MANUAL,), "Entra admin role"),
        KindCapability(APP_ROLE, Effect.MEMBERSHIP, (REMOVE,), "DELETE appRoleAssignments/{id}"),
        KindCapability(METHOD, Effect.CREDENTIAL, (REMOVE,), "DELETE authentication/{type}/{id}"),
        KindCapability(DEFAULT_METHOD, Effect.CREDENTIAL, (REMOVE,), "the default one, last"),
        KindCapability(PASSWORD, Effect.CREDENTIAL, (KEEP,), "cannot be deleted"),
        KindCapability(LICENCE, Effect.MEMBERSHIP, (REMOVE,), "POST assignLicense"),
        KindCapability(GROUP_LICENCE, Effect.MEMBERSHIP, (KEEP,), "goes with the group"),
        KindCapability(DEVICE, Effect.DATA, (MANUAL,), "collect; wipe or retire in Intune"),
    )
)

USER_FIELDS = (
    "id,userPrincipalName,displayName,accountEnabled,onPremisesSyncEnabled,"
    "assignedLicenses,licenseAssignmentStates,signInSessionsValidFromDateTime"
)
GROUP_FIELDS = (
    "id,displayName,groupTypes,membershipRule,onPremisesSyncEnabled,mailEnabled,securityEnabled"
)
# @odata.type of an authentication method -> (segment its DELETE goes to, name for people)
METHOD_TYPES = {
    "#microsoft.graph.microsoftAuthenticatorAuthenticationMethod": (
        "microsoftAuthenticatorMethods",
        "Microsoft Authenticator",
    ),
    "#microsoft.graph.phoneAuthenticationMethod": ("phoneMethods", "phone"),
    "#microsoft.graph.fido2AuthenticationMethod": ("fido2Methods", "FIDO2 security key"),
    "#microsoft.graph.emailAuthenticationMethod": ("emailMethods", "email"),
    "#microsoft.graph.softwareOathAuthenticationMethod": ("softwareOathMethods", "OATH app"),
    "#microsoft.graph.temporaryAccessPassAuthenticationMethod": (
        "temporaryAccessPassMethods",
        "Temporary Access Pass",
    ),
    "#microsoft.graph.windowsHelloForBusinessAuthenticationMethod": (
        "windowsHelloForBusinessMethods",
        "Windows Hello for Business",
    ),
}
PASSWORD_TYPE = "#microsoft.graph.passwordAuthenticationMethod"  # noqa: S105
# signInPreferences.userPreferredMethodForSecondaryAuthentication -> (@odata.type, phoneType)
DEFAULT_METHODS = {
    "push": ("#microsoft.graph.microsoftAuthenticatorAuthenticationMethod", None),
    "oath": ("#microsoft.graph.softwareOathAuthenticationMethod", None),
    "sms": ("#microsoft.graph.phoneAuthenticationMethod", "mobile"),
    "voiceMobile": ("#microsoft.graph.phoneAuthenticationMethod", "mobile"),
    "voiceAlternateMobile": ("#microsoft.graph.phoneAuthenticationMethod", "alternateMobile"),
    "voiceOffice": ("#microsoft.graph.phoneAuthenticationMethod", "office"),
}


@dataclass(frozen=True)
class EntraUser:
    id: str
    upn: str
    enabled: bool
    synced: bool
    sessions_valid_from: datetime | None
    licence_states: tuple[dict[str, Any], ...]

    @classmethod
    def from_graph(cls, user: dict[str, Any]) -> EntraUser:
        stamp = user.get("signInSessionsValidFromDateTime")
        return cls(
            id=str(user["id"]),
            upn=str(user.get("userPrincipalName") or user["id"]),
            enabled=user.get("accountEnabled") is not False,
            synced=user.get("onPremisesSyncEnabled") is True,
            sessions_valid_from=_parse_time(stamp) if isinstance(stamp, str) else None,
            licence_states=tuple(
                s for s in user.get("licenseAssignmentStates") or [] if isinstance(s, dict)
            ),
        )

    def sessions_revoked(self, window_hours: float, now: datetime | None = None) -> bool:
        """Revoked recently enough, on an account that cannot sign in here again."""
        if self.sessions_valid_from is None or (self.enabled and not self.synced):
            return False
        now = now or datetime.now(UTC)
        return now - self.sessions_valid_from <= timedelta(hours=window_hours)


@dataclass(frozen=True)
class UserAccess:
    """What Graph returned for one user: the reads of one inventory."""

    user: EntraUser
    member_of: list[dict[str, Any]]
    app_roles: list[dict[str, Any]]
    methods: list[dict[str, Any]]
    default_method: str | None
    devices: list[dict[str, Any]]
    sku_names: dict[str, str]


def is_default(method: dict[str, Any], preference: str | None) -> bool:
    wanted = DEFAULT_METHODS.get(preference or "")
    if wanted is None or method.get("@odata.type") != wanted[0]:
        return False
    return wanted[1] is None or method.get("phoneType") == wanted[1]


def grants_of(connector: str, access: UserAccess, window_hours: float) -> list[AccessGrant]:
    """Every grant, sorted: the plan's own order is by effect, this keeps it deterministic."""
    user = access.user

    def grant(
        kind: str, system_id: str, target: str, label: Message, **revoke_data: str
    ) -> AccessGrant:
        capability = CAPABILITIES.of(kind)
        assert capability is not None
        return AccessGrant(
            connector=connector,
            kind=kind,
            effect=capability.effect,
            system_id=system_id,
            account=user.id,
            target=target,
            label=label,
            revoke_data=revoke_data,
        )

    grants: list[AccessGrant] = []
    if user.enabled and user.synced:
        grants.append(
            grant(
                SYNCED_ACCOUNT,
                user.id,
                user.upn,
                Message.of(
                    "entra.grant.synced_account",
                    "Sign-in as %(user)s: synced from on-premises AD, "
                    "disabled there (handled by AD)",
                    user=user.upn,
                ),
            )
        )
    elif user.enabled:
        grants.append(
            grant(
                ACCOUNT,
                user.id,
                user.upn,
                Message.of("entra.grant.account", "Sign-in as %(user)s", user=user.upn),
            )
        )
    if not user.sessions_revoked(window_hours):
        grants.append(
            grant(
                SESSIONS,
                user.id,
                user.upn,
                Message.of(
                    "entra.grant.sessions",
                    "Sign-in sessions and refresh tokens of %(user)s",
                    user=user.upn,
                ),
            )
        )
    group_names: dict[str, str] = {}
    for entry in access.member_of:
        grants += _membership(grant, entry, group_names)
    for role in access.app_roles:
        resource = str(role.get("resourceDisplayName") or role.get("resourceId"))
        grants.append(
            grant(
                APP_ROLE,
                str(role["id"]),
                resource,
                Message.of(
                    "entra.grant.app_role", "Assigned to the enterprise app %(app)s", app=resource
                ),
            )
        )
    for method in access.methods:
        grants.append(_method(grant, method, access.default_method, user.upn))
    for state in user.licence_states:
        sku = str(state.get("skuId"))
        name = access.sku_names.get(sku, sku)
        by_group = state.get("assignedByGroup")
        if by_group:
            group = group_names.get(str(by_group), str(by_group))
            grants.append(
                grant(
                    GROUP_LICENCE,
                    f"{sku}/{by_group}",
                    name,
                    Message.of(
                        "entra.grant.group_licence",
                        "Licence %(licence)s: kept, goes with group %(group)s",
                        licence=name,
                        group=group,
                    ),
                )
            )
        else:
            grants.append(
                grant(
                    LICENCE,
                    sku,
                    name,
                    Message.of(
                        "entra.grant.licence",
                        "Licence %(licence)s, assigned directly",
                        licence=name,
                    ),
                    sku=sku,
                )
            )
    for device in access.devices:
        name = str(device.get("displayName") or device["id"])
        grants.append(
            grant(
                DEVICE,
                str(device["id"]),
                name,
                Message.of(
                    "entra.grant.device",
                    "Owns the device %(device)s (%(os)s): collect it; wipe or retire it in Intune",
                    device=name,
                    os=str(device.get("operatingSystem") or "?"),
                ),
            )
        )
    unique = {g.key: g for g in grants}
    return sorted(unique.values(), key=lambda g: (g.kind, g.target.lower(), g.system_id))


def _membership(grant: Any, entry: dict[str, Any], names: dict[str, str]) -> list[AccessGrant]:
    odata = entry.get("@odata.type")
    name = str(entry.get("displayName") or entry["id"])
    gid = str(entry["id"])
    if odata == "#microsoft.graph.directoryRole":
        return [
            grant(
                DIRECTORY_ROLE,
                gid,
                name,
                Message.of(
                    "entra.grant.directory_role",
                    "Holds the admin role %(role)s: remove it in the "
                    "Entra admin center (Roles and administrators)",
                    role=name,
                ),
            )
        ]
    if odata not in (None, "#microsoft.graph.group"):
        return []  # administrative units: scope, not access
    names[gid] = name
    types = entry.get("groupTypes") or []
    if "DynamicMembership" in types:
        return [
            grant(
                DYNAMIC_GROUP,
                gid,
                name,
                Message.of(
                    "entra.grant.dynamic_group",
                    "Member of %(group)s: membership by rule: change the "
                    "rule or the user's attributes",
                    group=name,
                ),
            )
        ]
    if entry.get("onPremisesSyncEnabled") is True:
        return [
            grant(
                SYNCED_GROUP,
                gid,
                name,
                Message.of(
                    "entra.grant.synced_group",
                    "Member of %(group)s: synced from on-premises AD, handled by AD",
                    group=name,
                ),
            )
        ]
    if entry.get("mailEnabled") is True and "Unified" not in types:
        return [
            grant(
                MAIL_GROUP,
                gid,
                name,
                Message.of(
                    "entra.grant.mail_group",
                    "Member of %(group)s: a mail-enabled group, change in Exchange",
                    group=name,
                ),
            )
        ]
    return [
        grant(GROUP, gid, name, Message.of("entra.grant.group", "Member of %(group)s", group=name))
    ]


def _method(grant: Any, method: dict[str, Any], preference: str | None, upn: str) -> AccessGrant:
    odata = str(method.get("@odata.type"))
    mid = str(method["id"])
    if odata == PASSWORD_TYPE:
        return grant(
            PASSWORD,
            mid,
            upn,
            Message.of(
                "entra.grant.password",
                "Password of %(user)s: kept, Graph cannot delete it; the "
                "disabled account and revoked sessions make it useless",
                user=upn,
            ),
        )
    segment, kind_name = METHOD_TYPES.get(odata, ("", odata.rsplit(".", 1)[-1]))
    detail = str(
        method.get("displayName")
        or method.get("phoneNumber")
        or method.get("model")
        or method.get("emailAddress")
        or ""
    )
    what = f"{kind_name} {detail}".strip()
    default = is_default(method, preference)
    label = (
        Message.of(
            "entra.grant.default_method",
            "Sign-in method %(method)s (the default, removed last)",
            method=what,
        )
        if default
        else Message.of("entra.grant.method", "Sign-in method %(method)s", method=what)
    )
    return grant(
        DEFAULT_METHOD if default else METHOD,
        mid,
        upn,
        label,
        segment=segment,
        default="true" if default else "",
    )


def _parse_time(text: str) -> datetime | None:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
