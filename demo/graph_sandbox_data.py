"""The directory objects of the Graph sandbox (`demo.graph_sandbox`) and the Graph v1.0
calls on them: what each call reads or changes, the permission it needs, and the status
and error body Graph documents for it (see the sandbox's module docstring for sources).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

PASSWORD_METHOD_ID = "28c10230-6103-485e-b985-444c60001490"  # noqa: S105  # the same for every user
# @odata.type of an authentication method -> the path segment its delete goes to
METHOD_SEGMENTS = {
    "#microsoft.graph.passwordAuthenticationMethod": "passwordMethods",
    "#microsoft.graph.microsoftAuthenticatorAuthenticationMethod": "microsoftAuthenticatorMethods",
    "#microsoft.graph.phoneAuthenticationMethod": "phoneMethods",
    "#microsoft.graph.fido2AuthenticationMethod": "fido2Methods",
    "#microsoft.graph.emailAuthenticationMethod": "emailMethods",
    "#microsoft.graph.softwareOathAuthenticationMethod": "softwareOathMethods",
    "#microsoft.graph.temporaryAccessPassAuthenticationMethod": "temporaryAccessPassMethods",
    "#microsoft.graph.windowsHelloForBusinessAuthenticationMethod": (
        "windowsHelloForBusinessMethods"
    ),
}
_DELETABLE = {segment for segment in METHOD_SEGMENTS.values() if segment != "passwordMethods"}

# operation -> application permissions that allow it (the least privileged first)
PERMISSIONS: dict[str, set[str]] = {
    "read_users": {"User.Read.All", "User.ReadWrite.All", "Directory.Read.All"},
    "write_user": {
        "User.ReadWrite.All",
        "User.EnableDisableAccount.All",
        "Directory.ReadWrite.All",
    },
    "revoke_sessions": {"User.RevokeSessions.All", "User.ReadWrite.All", "Directory.ReadWrite.All"},
    "read_member_of": {"GroupMember.Read.All", "Directory.Read.All", "Directory.ReadWrite.All"},
    "remove_member": {
        "GroupMember.ReadWrite.All",
        "Group.ReadWrite.All",
        "Directory.ReadWrite.All",
    },
    "read_app_roles": {
        "Directory.Read.All",
        "AppRoleAssignment.ReadWrite.All",
        "Directory.ReadWrite.All",
    },
    "remove_app_role": {"AppRoleAssignment.ReadWrite.All"},
    "read_methods": {"UserAuthenticationMethod.Read.All", "UserAuthenticationMethod.ReadWrite.All"},
    "delete_method": {"UserAuthenticationMethod.ReadWrite.All"},
    "read_devices": {"Device.Read.All", "Directory.Read.All", "Directory.ReadWrite.All"},
    "read_licences": {
        "User.Read.All",
        "LicenseAssignment.Read.All",
        "User.ReadWrite.All",
        "Directory.Read.All",
    },
    "assign_licence": {
        "LicenseAssignment.ReadWrite.All",
        "User.ReadWrite.All",
        "Directory.ReadWrite.All",
    },
}
PAGE_SIZE = 100
_FILTER = re.compile(r"^(userPrincipalName|mail|employeeId) eq '((?:[^']|'')*)'$")


@dataclass(frozen=True)
class Reply:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)

    def with_request_id(self, client_request_id: str) -> Reply:
        """Graph echoes client-request-id and adds request-id, in headers and error bodies."""
        request_id = str(uuid.uuid4())
        body = self.body
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            inner = body["error"]["innerError"]
            inner.update({"request-id": request_id, "client-request-id": client_request_id})
        headers = {"request-id": request_id, "client-request-id": client_request_id}
        return Reply(self.status, body, {**headers, **self.headers})


def error(status: int, code: str, message: str) -> Reply:
    date = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return Reply(
        status, {"error": {"code": code, "message": message, "innerError": {"date": date}}}
    )


def not_found(object_id: str) -> Reply:
    return error(
        404,
        "Request_ResourceNotFound",
        f"Resource '{object_id}' does not exist or "
        "one of its queried reference-property objects are not present.",
    )


NO_CONTENT = Reply(204)
Handler = Callable[..., Reply]


@dataclass
class GraphData:
    """Users, groups, licences (SKUs), app role assignments, methods and devices."""

    users: dict[str, dict[str, Any]] = field(default_factory=dict)
    groups: dict[str, dict[str, Any]] = field(default_factory=dict)
    members: dict[str, set[str]] = field(default_factory=dict)  # group id -> user ids
    group_licences: dict[str, list[str]] = field(default_factory=dict)  # group id -> skuIds
    skus: dict[str, str] = field(default_factory=dict)  # skuId -> skuPartNumber
    direct_licences: dict[str, list[str]] = field(default_factory=dict)  # user id -> skuIds
    app_roles: dict[str, dict[str, Any]] = field(default_factory=dict)
    methods: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # user id -> methods
    default_method: dict[str, str] = field(default_factory=dict)  # user id -> preference
    devices: dict[str, dict[str, Any]] = field(default_factory=dict)
    owners: dict[str, set[str]] = field(default_factory=dict)  # device id -> user ids

    # -- seeding --------------------------------------------------------------------

    def add_user(
        self,
        upn: str,
        display_name: str,
        employee_id: str,
        *,
        synced: bool = False,
        enabled: bool = True,
    ) -> str:
        user_id = str(uuid.uuid4())
        self.users[user_id] = {
            "id": user_id,
            "userPrincipalName": upn,
            "mail": upn,
            "displayName": display_name,
            "employeeId": employee_id,
            "accountEnabled": enabled,
            "onPremisesSyncEnabled": True if synced else None,
            "signInSessionsValidFromDateTime": "2024-01-01T00:00:00Z",
        }
        self.methods[user_id] = [
            {
                "@odata.type": "#microsoft.graph.passwordAuthenticationMethod",
                "id": PASSWORD_METHOD_ID,
                "password": None,
            }
        ]
        return user_id

    def add_group(
        self,
        name: str,
        members: list[str],
        *,
        dynamic: bool = False,
        synced: bool = False,
        mail_enabled: bool = False,
        security: bool = True,
        unified: bool = False,
        licences: list[str] | None = None,
    ) -> str:
        group_id = str(uuid.uuid4())
        types = (["Unified"] if unified else []) + (["DynamicMembership"] if dynamic else [])
        self.groups[group_id] = {
            "@odata.type": "#microsoft.graph.group",
            "id": group_id,
            "displayName": name,
            "groupTypes": types,
            "securityEnabled": security,
            "mailEnabled": mail_enabled,
            "membershipRule": '(user.department -eq "Engineering")' if dynamic else None,
            "onPremisesSyncEnabled": True if synced else None,
        }
        self.members[group_id] = set(members)
        self.group_licences[group_id] = list(licences or [])
        return group_id

    def add_sku(self, part_number: str) -> str:
        sku_id = str(uuid.uuid4())
        self.skus[sku_id] = part_number
        return sku_id

    def assign_licence(self, user_id: str, sku_id: str) -> None:
        self.direct_licences.setdefault(user_id, []).append(sku_id)

    def add_app_role(self, user_id: str, resource: str) -> str:
        assignment_id = uuid.uuid4().hex
        self.app_roles[assignment_id] = {
            "id": assignment_id,
            "appRoleId": str(uuid.uuid4()),
            "principalId": user_id,
            "principalType": "User",
            "principalDisplayName": self.users[user_id]["displayName"],
            "resourceId": str(uuid.uuid4()),
            "resourceDisplayName": resource,
            "createdDateTime": "2024-03-01T09:00:00Z",
            "deletedDateTime": None,
        }
        return assignment_id

    def add_method(
        self, user_id: str, odata_type: str, *, default_as: str | None = None, **properties: Any
    ) -> str:
        method_id = str(uuid.uuid4())
        self.methods[user_id].append({"@odata.type": odata_type, "id": method_id, **properties})
        if default_as:
            self.default_method[user_id] = default_as
        return method_id

    def add_device(self, owner: str, name: str, operating_system: str) -> str:
        device_id = str(uuid.uuid4())
        self.devices[device_id] = {
            "@odata.type": "#microsoft.graph.device",
            "id": device_id,
            "displayName": name,
            "operatingSystem": operating_system,
            "accountEnabled": True,
            "deviceId": str(uuid.uuid4()),
        }
        self.owners[device_id] = {owner}
        return device_id

    # -- reading the state as Graph shows it ---------------------------------------

    def licence_states(self, user_id: str) -> list[dict[str, Any]]:
        states = [
            {"skuId": s, "assignedByGroup": None, "state": "Active", "error": "None"}
            for s in self.direct_licences.get(user_id, [])
        ]
        for group_id, skus in self.group_licences.items():
            if user_id in self.members[group_id]:
                states += [
                    {"skuId": s, "assignedByGroup": group_id, "state": "Active", "error": "None"}
                    for s in skus
                ]
        return states

    def user_view(self, user_id: str) -> dict[str, Any]:
        states = self.licence_states(user_id)
        assigned = sorted({s["skuId"] for s in states})
        return {
            **self.users[user_id],
            "licenseAssignmentStates": states,
            "assignedLicenses": [{"skuId": s, "disabledPlans": []} for s in assigned],
        }

    # -- the calls ------------------------------------------------------------------

    def route(self, method: str, path: str) -> tuple[str, Handler, list[str]] | None:
        parts = [p for p in path.split("/") if p]
        for verb, pattern, operation, handler in self._routes():
            if verb == method and len(pattern) == len(parts):
                params = [p for want, p in zip(pattern, parts, strict=True) if want == "*"]
                if all(w in ("*", p) for w, p in zip(pattern, parts, strict=True)):
                    return operation, handler, params
        return None

    def _routes(self) -> list[tuple[str, list[str], str, Handler]]:
        return [
            ("GET", ["users"], "read_users", self._list_users),
            ("GET", ["users", "*"], "read_users", self._get_user),
            ("PATCH", ["users", "*"], "write_user", self._patch_user),
            ("POST", ["users", "*", "revokeSignInSessions"], "revoke_sessions", self._revoke),
            ("GET", ["users", "*", "memberOf"], "read_member_of", self._member_of),
            (
                "DELETE",
                ["groups", "*", "members", "*", "$ref"],
                "remove_member",
                self._remove_member,
            ),
            ("GET", ["users", "*", "appRoleAssignments"], "read_app_roles", self._app_roles),
            (
                "DELETE",
                ["users", "*", "appRoleAssignments", "*"],
                "remove_app_role",
                self._remove_app_role,
            ),
            ("GET", ["users", "*", "authentication", "methods"], "read_methods", self._methods),
            (
                "GET",
                ["users", "*", "authentication", "signInPreferences"],
                "read_methods",
                self._preferences,
            ),
            (
                "DELETE",
                ["users", "*", "authentication", "*", "*"],
                "delete_method",
                self._delete_method,
            ),
            ("GET", ["users", "*", "ownedDevices"], "read_devices", self._owned_devices),
            ("GET", ["users", "*", "licenseDetails"], "read_licences", self._licence_details),
            ("POST", ["users", "*", "assignLicense"], "assign_licence", self._assign_licence),
        ]

    def _list_users(self, *, query: dict[str, str], **_: Any) -> Reply:
        wanted = query.get("$filter")
        found = list(self.users)
        if wanted:
            match = _FILTER.match(wanted)
            if not match:
                return error(400, "Request_UnsupportedQuery", f"Invalid filter clause: {wanted}")
            value = match[2].replace("''", "'")
            found = [
                u for u in found if (self.users[u].get(match[1]) or "").lower() == value.lower()
            ]
        top = int(query.get("$top", PAGE_SIZE))
        return _collection([_select(self.user_view(u), query) for u in found][:top])

    def _get_user(self, *, params: list[str], query: dict[str, str], **_: Any) -> Reply:
        user_id = self._user_id(params[0])
        if user_id is None:
            return not_found(params[0])
        return Reply(200, _select(self.user_view(user_id), query))

    def _patch_user(self, *, params: list[str], body: Any, **_: Any) -> Reply:
        user_id = self._user_id(params[0])
        if user_id is None:
            return not_found(params[0])
        user = self.users[user_id]
        if not isinstance(body, dict) or set(body) - {"accountEnabled"}:
            return error(400, "Request_BadRequest", "The sandbox only changes accountEnabled.")
        if user["onPremisesSyncEnabled"]:
            return error(
                400,
                "Request_BadRequest",
                "Unable to update the specified properties "
                "for on-premises mastered Directory Sync objects or objects currently "
                "undergoing migration.",
            )
        user["accountEnabled"] = bool(body["accountEnabled"])
        return NO_CONTENT

    def _revoke(self, *, params: list[str], now: float, **_: Any) -> Reply:
        user_id = self._user_id(params[0])
        if user_id is None:
            return not_found(params[0])
        stamp = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        self.users[user_id]["signInSessionsValidFromDateTime"] = stamp
        return Reply(
            200,
            {
                "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#Edm.Boolean",
                "value": True,
            },
        )

    def _member_of(self, *, params: list[str], query: dict[str, str], **_: Any) -> Reply:
        user_id = self._user_id(params[0])
        if user_id is None:
            return not_found(params[0])
        groups = [g for g, members in self.members.items() if user_id in members]
        rows = [_select(self.groups[g], query) for g in sorted(groups)]
        return _page(rows, query, f"users/{user_id}/memberOf")

    def _remove_member(self, *, params: list[str], **_: Any) -> Reply:
        group_id, member_id = params
        group = self.groups.get(group_id)
        if group is None:
            return not_found(group_id)
        if "DynamicMembership" in group["groupTypes"]:
            return error(
                400,
                "Request_BadRequest",
                "Insufficient privileges to complete the "
                "operation. Members of a group with dynamic membership cannot be "
                "added or removed; they follow the membership rule.",
            )
        if group["onPremisesSyncEnabled"]:
            return error(
                400,
                "Request_BadRequest",
                "Unable to update the specified properties "
                "for on-premises mastered Directory Sync objects or objects currently "
                "undergoing migration.",
            )
        if group["mailEnabled"] and "Unified" not in group["groupTypes"]:
            return error(
                400,
                "Request_BadRequest",
                "Cannot Update a mail-enabled security groups and or distribution list.",
            )
        if member_id not in self.members[group_id]:
            return error(
                404,
                "Request_ResourceNotFound",
                "One or more removed object "
                "references do not exist for the following modified properties: "
                "'members'.",
            )
        self.members[group_id].discard(member_id)
        return NO_CONTENT

    def _app_roles(self, *, params: list[str], **_: Any) -> Reply:
        user_id = self._user_id(params[0])
        if user_id is None:
            return not_found(params[0])
        return _collection([a for a in self.app_roles.values() if a["principalId"] == user_id])

    def _remove_app_role(self, *, params: list[str], **_: Any) -> Reply:
        assignment = self.app_roles.get(params[1])
        if assignment is None or assignment["principalId"] != self._user_id(params[0]):
            return not_found(params[1])
        del self.app_roles[params[1]]
        return NO_CONTENT

    def _methods(self, *, params: list[str], **_: Any) -> Reply:
        user_id = self._user_id(params[0])
        if user_id is None:
            return not_found(params[0])
        return _collection(list(self.methods[user_id]))

    def _preferences(self, *, params: list[str], **_: Any) -> Reply:
        user_id = self._user_id(params[0])
        if user_id is None:
            return not_found(params[0])
        return Reply(
            200,
            {
                "isSystemPreferredAuthenticationMethodEnabled": False,
                "userPreferredMethodForSecondaryAuthentication": self.default_method.get(user_id),
                "systemPreferredAuthenticationMethod": None,
            },
        )

    def _delete_method(self, *, params: list[str], **_: Any) -> Reply:
        user_id = self._user_id(params[0])
        segment, method_id = params[1], params[2]
        if user_id is None:
            return not_found(params[0])
        if segment not in _DELETABLE:
            return error(
                405, "methodNotAllowed", "The method is not allowed for the requested resource."
            )
        methods = self.methods[user_id]
        method = next(
            (
                m
                for m in methods
                if m["id"] == method_id and METHOD_SEGMENTS.get(m["@odata.type"]) == segment
            ),
            None,
        )
        if method is None:
            return error(
                404, "itemNotFound", f"The authentication method '{method_id}' was not found."
            )
        others = [
            m
            for m in methods
            if m is not method and METHOD_SEGMENTS[m["@odata.type"]] in _DELETABLE
        ]
        is_default = _is_default(self.default_method.get(user_id), method)
        if is_default and others:
            return error(
                400,
                "badRequest",
                "The user's default multifactor authentication "
                "method can't be deleted. Change the default method first.",
            )
        methods.remove(method)
        if is_default:
            self.default_method.pop(user_id, None)
        return NO_CONTENT

    def _owned_devices(self, *, params: list[str], **_: Any) -> Reply:
        user_id = self._user_id(params[0])
        if user_id is None:
            return not_found(params[0])
        return _collection([d for i, d in self.devices.items() if user_id in self.owners[i]])

    def _licence_details(self, *, params: list[str], **_: Any) -> Reply:
        user_id = self._user_id(params[0])
        if user_id is None:
            return not_found(params[0])
        skus = sorted({s["skuId"] for s in self.licence_states(user_id)})
        return _collection(
            [
                {
                    "id": f"{user_id}_{s}",
                    "skuId": s,
                    "skuPartNumber": self.skus.get(s, s),
                    "servicePlans": [],
                }
                for s in skus
            ]
        )

    def _assign_licence(self, *, params: list[str], body: Any, **_: Any) -> Reply:
        user_id = self._user_id(params[0])
        if user_id is None:
            return not_found(params[0])
        if not isinstance(body, dict) or "addLicenses" not in body or "removeLicenses" not in body:
            return error(
                400,
                "Request_BadRequest",
                "Invalid value specified for property "
                "'addLicenses' or 'removeLicenses' of resource 'User'.",
            )
        direct = self.direct_licences.setdefault(user_id, [])
        for sku in body["removeLicenses"]:
            if sku not in direct:
                inherited = any(s["skuId"] == sku for s in self.licence_states(user_id))
                return error(
                    400,
                    "Request_BadRequest",
                    "User license is inherited from a group "
                    "membership and it cannot be removed directly from the user."
                    if inherited
                    else "User does not have a corresponding license.",
                )
        for sku in body["removeLicenses"]:
            direct.remove(sku)
        return Reply(200, self.user_view(user_id))

    def _user_id(self, key: str) -> str | None:
        if key in self.users:
            return key
        return next(
            (u for u, v in self.users.items() if v["userPrincipalName"].lower() == key.lower()),
            None,
        )


# userPreferredMethodForSecondaryAuthentication -> (@odata.type, phoneType) of that method
DEFAULT_METHODS = {
    "push": ("#microsoft.graph.microsoftAuthenticatorAuthenticationMethod", None),
    "oath": ("#microsoft.graph.softwareOathAuthenticationMethod", None),
    "sms": ("#microsoft.graph.phoneAuthenticationMethod", "mobile"),
    "voiceMobile": ("#microsoft.graph.phoneAuthenticationMethod", "mobile"),
    "voiceAlternateMobile": ("#microsoft.graph.phoneAuthenticationMethod", "alternateMobile"),
    "voiceOffice": ("#microsoft.graph.phoneAuthenticationMethod", "office"),
}


def _is_default(preference: str | None, method: dict[str, Any]) -> bool:
    wanted = DEFAULT_METHODS.get(preference or "")
    if wanted is None or method["@odata.type"] != wanted[0]:
        return False
    return wanted[1] is None or method.get("phoneType") == wanted[1]


def _select(resource: dict[str, Any], query: dict[str, str]) -> dict[str, Any]:
    wanted = query.get("$select")
    if not wanted:
        return dict(resource)
    keys = {"id", "@odata.type", *wanted.split(",")}
    return {k: v for k, v in resource.items() if k in keys}


def _collection(rows: list[dict[str, Any]]) -> Reply:
    return Reply(200, {"value": rows})


def _page(rows: list[dict[str, Any]], query: dict[str, str], path: str) -> Reply:
    top = min(int(query.get("$top", PAGE_SIZE)), 999)
    skip = int(query.get("$skiptoken", "0"))
    body: dict[str, Any] = {"value": rows[skip : skip + top]}
    if skip + top < len(rows):
        select = f"&$select={query['$select']}" if "$select" in query else ""
        body["@odata.nextLink"] = (
            f"https://graph.microsoft.com/v1.0/{path}?$top={top}&$skiptoken={skip + top}{select}"
        )
    return Reply(200, body)
