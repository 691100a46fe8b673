"""SCIM 2.0 (RFC 7643/7644): disable or delete the user, remove their group memberships.

The generic connector for a company's own web apps and the SaaS tools that speak SCIM.
What counts as access (see `ScimConnector.inventory`); `system_id` is the SCIM resource id:

- kind `group` (effect membership, action remove): one per group that lists the user as
  a direct member, from the user's `groups` attribute, or, when the server does not return
  it, from `GET /Groups?filter=members[value eq "<id>"]`. Revoked with `PATCH /Groups/{id}`
  removing `members[value eq "<id>"]`.
- kind `account` (effect sign_in, actions disable and delete): with `on_leave` disable
  (the policy's choice for this connector, else its own setting) the grant is listed while
  the user is active, and revoked by setting `active` to false (the `path` form of PATCH
  first, the value-object form for servers that refuse it). With delete it is listed while
  the user exists, and revoked with `DELETE /Users/{id}`.

Memberships are not declared as cascading from a deleted user: RFC 7644 does not oblige a
server to drop a deleted user from its groups, and scim2-server, the test peer, does not;
so they are removed one by one, before the account. Writes carry `If-Match` with the
resource's ETag when the server versions its resources; a 412 re-reads the resource and
tries once more.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import structlog

from connectors.base import (
    DELETE,
    DISABLE,
    REMOVE,
    AccessGrant,
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
    SubjectNotFound,
    Verification,
    revoke_step,
)
from connectors.config import ConnectorKind
from connectors.scim_client import ScimConfig, filter_string, member_filter, resource_path
from connectors.scim_writes import ScimWrites

__all__ = ["KIND", "ScimConfig", "ScimConnector", "from_config"]

log = structlog.get_logger(__name__)

ACCOUNT, GROUP = "account", "group"
_KIND_ORDER = {GROUP: 0, ACCOUNT: 1}

CHECK_NO_ACCOUNT = Message.of("scim.check.no_account", "no account")
CHECK_DELETED = Message.of("scim.check.account_deleted", "account deleted")
CHECK_INACTIVE = Message.of("scim.check.account_inactive", "account inactive")
CHECK_NO_GROUPS = Message.of("scim.check.no_groups", "no group lists the account")


@dataclass(frozen=True)
class _User:
    id: str
    user_name: str
    active: bool  # an absent `active` counts as active: nothing says sign-in is off
    groups: list[tuple[str, str]] | None  # (id, display) of direct groups; None: not returned

    @classmethod
    def from_resource(cls, resource: dict[str, Any]) -> _User:
        groups = resource.get("groups")
        return cls(
            id=str(resource["id"]),
            user_name=str(resource.get("userName") or resource["id"]),
            active=resource.get("active") is not False,
            groups=None
            if groups is None
            else [
                (str(g["value"]), str(g.get("display") or g["value"]))
                for g in groups
                if isinstance(g, dict) and g.get("value") and g.get("type") != "indirect"
            ],
        )

    @property
    def path(self) -> str:
        return resource_path("Users", self.id)


class ScimConnector(ScimWrites):
    """A SCIM 2.0 service provider as one offboarding target."""

    @property
    def capabilities(self) -> Capabilities:
        account_actions = (DELETE, DISABLE) if self.deletes else (DISABLE, DELETE)
        return Capabilities(
            (
                KindCapability(ACCOUNT, Effect.SIGN_IN, account_actions, "active=false or DELETE"),
                KindCapability(GROUP, Effect.MEMBERSHIP, (REMOVE,), "PATCH remove member"),
            )
        )

    # -- the Connector protocol ------------------------------------------------

    def check(self) -> Health:
        problems: list[str] = []
        notes: list[str] = []
        try:
            with self.session() as client:
                spc, _ = self.get_json(client, "ServiceProviderConfig")
                for feature, why in (
                    ("patch", "needed to deactivate users and remove group members"),
                    ("filter", "needed to find the leaver"),
                    ("etag", "writes are sent without If-Match"),
                ):
                    if _supported(spc, feature):
                        notes.append(f"{feature}: supported")
                    elif feature == "etag":
                        notes.append(f"{feature}: not supported; {why}")
                    else:
                        problems.append(f"the server does not support {feature}: {why}")
                # /ServiceProviderConfig needs no authentication (RFC 7644 §4): prove the token
                self.get_json(client, "Users", {"count": "1", "attributes": "userName"})
        except ConnectorError as exc:
            problems.append(str(exc))
        return Health(ok=not problems, messages=problems + notes)

    def inventory(self, leaver: Leaver) -> list[AccessGrant]:
        with self.session() as client:
            try:
                user = self._find(client, leaver)
            except SubjectNotFound:
                return []
            return self._grants(user, self._memberships(client, user)[0])

    def revoke(self, grant: AccessGrant, action: str | None = None) -> Outcome:
        def perform(chosen: str) -> str:
            with self.session() as client:
                return self._revoke(client, grant, chosen)

        return revoke_step(self.name, self.capabilities, grant, action, perform)

    def verify(self, leaver: Leaver) -> Verification:
        with self.session() as client:
            try:
                user = self._find(client, leaver)
            except SubjectNotFound:
                detail = Message.of(
                    "scim.detail.no_user", "no user matches %(filter)s", filter=self._filter(leaver)
                )
                return Verification([], [Check(CHECK_NO_ACCOUNT, True, detail)])
            groups, from_attribute = self._memberships(client, user)
        remaining = self._grants(user, groups)
        who = {"user": user.user_name, "path": user.path}
        if self.deletes:
            exists = Message.of("scim.detail.user_exists", "%(path)s (%(user)s) exists", **who)
            account = Check(CHECK_DELETED, False, exists)
        elif user.active:
            state = Message.of("scim.detail.user_active", "%(path)s is still ACTIVE", **who)
            account = Check(CHECK_INACTIVE, False, state)
        else:
            state = Message.of("scim.detail.user_inactive", "%(path)s is inactive", **who)
            account = Check(CHECK_INACTIVE, True, state)
        return Verification(remaining, [account, _groups_check(user, groups, from_attribute)])

    # -- finding the leaver and their access -------------------------------------

    def _match_value(self, leaver: Leaver) -> str:
        return leaver.email if self.config.match_value == "email" else leaver.employee_id

    def _filter(self, leaver: Leaver) -> str:
        return f"{self.config.match_attribute} eq {filter_string(self._match_value(leaver))}"

    def _find(self, client: httpx.Client, leaver: Leaver) -> _User:
        scim_filter = self._filter(leaver)
        found = self.search(client, "Users", scim_filter)
        if not found:
            raise SubjectNotFound(f"{self.name}: no user matches {scim_filter}")
        if len(found) > 1:
            names = ", ".join(sorted(f"Users/{u.get('id')} ({u.get('userName')})" for u in found))
            raise PermanentError(
                f"{self.name}: {len(found)} users match {scim_filter}: {names}; refusing to "
                "guess. Make the attribute unique or pick another match_attribute/match_value"
            )
        if not found[0].get("id"):
            raise PermanentError(f"{self.name}: the user matching {scim_filter} has no id")
        return _User.from_resource(found[0])

    def _grants(self, user: _User, groups: list[tuple[str, str]]) -> list[AccessGrant]:
        def grant(
            kind: str, effect: Effect, system_id: str, target: str, label: Message, path: str
        ) -> AccessGrant:
            return AccessGrant(
                connector=self.name,
                kind=kind,
                effect=effect,
                system_id=system_id,
                account=user.id,
                target=target,
                label=label,
                revoke_data={"path": path, "user_path": user.path},
            )

        grants = [
            grant(
                GROUP,
                Effect.MEMBERSHIP,
                gid,
                name,
                Message.of("scim.grant.group", "Member of %(group)s", group=name),
                resource_path("Groups", gid),
            )
            for gid, name in groups
        ]
        if user.active or self.deletes:
            label = (
                Message.of("scim.grant.account", "Sign-in as %(user)s", user=user.user_name)
                if user.active
                else Message.of(
                    "scim.grant.inactive_account", "Inactive account %(user)s", user=user.user_name
                )
            )
            grants.append(grant(ACCOUNT, Effect.SIGN_IN, user.id, user.user_name, label, user.path))
        return sorted(grants, key=lambda g: (_KIND_ORDER[g.kind], g.target.lower(), g.system_id))

    def _memberships(self, client: httpx.Client, user: _User) -> tuple[list[tuple[str, str]], bool]:
        """The (id, name) of the groups that list the user, and whether that was read from
        the user's `groups` attribute (else from a search on the groups' members).

        From the user's `groups` attribute when the server returns it; otherwise (the
        server does not compute it, or the user is in no group, RFC 7643 §2.5) from
        the groups whose members match. A server refusing that filter is an error.
        """
        if user.groups is not None:
            groups, from_attribute = user.groups, True
        else:
            from_attribute = False
            found = self.search(client, "Groups", member_filter(user.id))
            groups = [(str(g["id"]), str(g.get("displayName") or g["id"])) for g in found]
        return sorted(groups, key=lambda group: (group[1].lower(), group[0])), from_attribute

    # -- revoking ------------------------------------------------------------------

    def _revoke(self, client: httpx.Client, grant: AccessGrant, action: str) -> str:
        if grant.connector != self.name:
            raise PermanentError(f"{self.name}: grant belongs to connector {grant.connector!r}")
        user_path = resource_path("Users", grant.account)
        if grant.kind == GROUP:
            path = resource_path("Groups", grant.system_id)
            return self._conditional(client, path, self._remove_member(grant.account))
        if action == DELETE:
            return self._conditional(client, user_path, self._delete_user)
        return self._conditional(client, user_path, self._deactivate)


def _supported(service_provider_config: dict[str, Any], feature: str) -> bool:
    section = service_provider_config.get(feature)
    return isinstance(section, dict) and section.get("supported") is True


def _groups_check(user: _User, groups: list[tuple[str, str]], from_attribute: bool) -> Check:
    names = ", ".join(f"{name} (Groups/{gid})" for gid, name in groups)
    if from_attribute and groups:
        detail = Message.of(
            "scim.detail.groups_attribute",
            "the groups attribute of %(path)s: %(groups)s",
            path=user.path,
            groups=names,
        )
    elif groups:
        detail = Message.of(
            "scim.detail.groups_search",
            "groups whose members include %(path)s: %(groups)s",
            path=user.path,
            groups=names,
        )
    elif from_attribute:
        detail = Message.of(
            "scim.detail.no_groups_attribute",
            "the groups attribute of %(path)s: none",
            path=user.path,
        )
    else:
        detail = Message.of(
            "scim.detail.no_groups_search",
            "groups whose members include %(path)s: none",
            path=user.path,
        )
    return Check(CHECK_NO_GROUPS, not groups, detail)


def from_config(config: Mapping[str, Any], dry_run: bool) -> ScimConnector:
    return ScimConnector(ScimConfig.model_validate(dict(config)), dry_run=dry_run)


KIND = ConnectorKind(
    kind="scim",
    config=ScimConfig,
    build=lambda config, dry_run: ScimConnector(config, dry_run=dry_run),
    description="SCIM 2.0 service provider: remove group memberships, then disable "
    "(active=false) or delete the user",
)
