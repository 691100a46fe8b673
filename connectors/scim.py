"""SCIM 2.0 (RFC 7643/7644): deactivate or delete the user, remove their group memberships.

The generic connector for a company's own web apps and the SaaS tools that speak SCIM.
What counts as access (see `ScimConnector.inventory`):

- MEMBERSHIP: one per group that lists the user as a direct member, from the user's
  `groups` attribute, or, when the server does not return it, from
  `GET /Groups?filter=members[value eq "<id>"]`. Revoked with
  `PATCH /Groups/{id}` removing `members[value eq "<id>"]`.
- ACCOUNT: the user can sign in. With `on_leave = "deactivate"` (the default) the
  grant is listed while the user is active, and revoked by setting `active` to false
  (the `path` form of PATCH first, the value-object form for servers that refuse it).
  With `on_leave = "delete"` it is listed while the user exists, and revoked with
  `DELETE /Users/{id}`.

Memberships come before the account, as in the plan, so a deleted user leaves no group
pointing at it. Grants name resources by their SCIM path (`Users/<id>`, `Groups/<id>`):
ids are stable, display names are not. Writes carry `If-Match` with the resource's ETag
when the server versions its resources; a 412 re-reads the resource and tries once more.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import structlog

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
    SubjectNotFound,
    Verification,
)
from connectors.scim_client import (
    PATCH_OP,
    DryRunRefused,
    PreconditionFailed,
    ResourceNotFound,
    RetryLater,
    ScimClient,
    ScimConfig,
    ScimError,
    filter_string,
    resource_path,
)

__all__ = ["RetryLater", "ScimConfig", "ScimConnector", "from_config"]

log = structlog.get_logger(__name__)

_KIND_ORDER = {GrantKind.MEMBERSHIP: 0, GrantKind.ACCOUNT: 1}
# a server that refuses `"path": "active"` answers one of these; then try the value form
_PATH_FORM_REFUSED = frozenset({"invalidPath", "noTarget", "invalidSyntax"})


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


def _member_filter(user_id: str) -> str:
    return f"members[value eq {filter_string(user_id)}]"


class ScimConnector(ScimClient):
    """A SCIM 2.0 service provider as one offboarding target."""

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

    def revoke(self, grant: AccessGrant) -> Outcome:
        try:
            with self.session() as client:
                outcome = Outcome(grant, OutcomeStatus.REVOKED, self._revoke(client, grant))
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
        with self.session() as client:
            try:
                user = self._find(client, leaver)
            except SubjectNotFound as exc:
                return Verification([], [Check("no account", True, str(exc))])
            groups, source = self._memberships(client, user)
        remaining = self._grants(user, groups)
        if self.config.on_leave == "delete":
            account = Check("account deleted", False, f"{user.path} ({user.user_name}) exists")
        else:
            state = "inactive" if not user.active else "still ACTIVE"
            account = Check("account inactive", not user.active, f"{user.path} is {state}")
        names = ", ".join(f"{name} (Groups/{gid})" for gid, name in groups)
        listed = Check(
            "no group lists the account",
            not groups,
            f"{source}: {names}" if groups else f"{source}: none",
        )
        return Verification(remaining, [account, listed])

    # -- finding the leaver and their access -------------------------------------

    def _match_value(self, leaver: Leaver) -> str:
        return leaver.email if self.config.match_value == "email" else leaver.employee_id

    def _find(self, client: httpx.Client, leaver: Leaver) -> _User:
        scim_filter = f"{self.config.match_attribute} eq {filter_string(self._match_value(leaver))}"
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
        def grant(kind: GrantKind, target: str, label: str) -> AccessGrant:
            return AccessGrant(
                connector=self.name, kind=kind, account=user.path, target=target, label=label
            )

        grants = [
            grant(GrantKind.MEMBERSHIP, resource_path("Groups", gid), f"Member of {name}")
            for gid, name in groups
        ]
        if self.config.on_leave == "delete":
            grants.append(grant(GrantKind.ACCOUNT, user.path, f"Account {user.user_name} (delete)"))
        elif user.active:
            grants.append(grant(GrantKind.ACCOUNT, user.path, f"Sign-in as {user.user_name}"))
        return sorted(grants, key=lambda g: (_KIND_ORDER[g.kind], g.label.lower(), g.target))

    def _memberships(self, client: httpx.Client, user: _User) -> tuple[list[tuple[str, str]], str]:
        """The (id, name) of the groups that list the user, and where that was read.

        From the user's `groups` attribute when the server returns it; otherwise (the
        server does not compute it, or the user is in no group, RFC 7643 §2.5) from
        the groups whose members match. A server refusing that filter is an error.
        """
        if user.groups is not None:
            groups, source = user.groups, f"groups attribute of {user.path}"
        else:
            source = f"groups matching {_member_filter(user.id)}"
            found = self.search(client, "Groups", _member_filter(user.id))
            groups = [(str(g["id"]), str(g.get("displayName") or g["id"])) for g in found]
        return sorted(groups, key=lambda group: (group[1].lower(), group[0])), source

    # -- revoking ------------------------------------------------------------------

    def _revoke(self, client: httpx.Client, grant: AccessGrant) -> str:
        if grant.connector != self.name:
            raise PermanentError(f"{self.name}: grant belongs to connector {grant.connector!r}")
        if not grant.account.startswith("Users/"):
            raise PermanentError(f"{self.name}: {grant.account!r} is not a SCIM user (Users/<id>)")
        user_id = grant.account.removeprefix("Users/")
        if grant.kind is GrantKind.MEMBERSHIP and grant.target.startswith("Groups/"):
            return self._conditional(client, grant.target, self._remove_member(user_id))
        if grant.kind is GrantKind.ACCOUNT and grant.target == grant.account:
            if self.config.on_leave == "delete":
                return self._conditional(client, grant.account, self._delete_user)
            return self._conditional(client, grant.account, self._deactivate)
        raise PermanentError(f"{self.name}: cannot revoke {grant.kind.value} {grant.target!r}")

    def _conditional(
        self,
        client: httpx.Client,
        path: str,
        write: Callable[[httpx.Client, str, dict[str, Any], str | None], str],
    ) -> str:
        """Read the resource, write with its ETag; on 412 read again and write once more."""
        for attempt in (1, 2):
            current = self.read(client, path)
            if current is None:
                raise AlreadyDone(f"{path} no longer exists")
            resource, etag = current
            try:
                return write(client, path, resource, etag)
            except ResourceNotFound as exc:
                raise AlreadyDone(f"{path} no longer exists") from exc
            except PreconditionFailed as exc:
                if attempt == 2:
                    raise RetryLater(
                        f"{self.name}: {path} changed while we wrote to it, twice; retry later"
                    ) from exc
                log.info("scim resource changed; reading it again", connector=self.name, path=path)
        raise AssertionError("unreachable")  # pragma: no cover

    def _remove_member(
        self, user_id: str
    ) -> Callable[[httpx.Client, str, dict[str, Any], str | None], str]:
        def write(client: httpx.Client, path: str, group: dict[str, Any], etag: str | None) -> str:
            members = group.get("members") or []
            if not any(isinstance(m, dict) and m.get("value") == user_id for m in members):
                raise AlreadyDone(f"{path} no longer lists Users/{user_id} as a member")
            operation = {"op": "remove", "path": _member_filter(user_id)}
            try:
                self._patch(client, path, [operation], etag)
            except ScimError as exc:
                if exc.scim_type != "noTarget":  # RFC 7644 §3.5.2.2: the filter matched nobody
                    raise
                raise AlreadyDone(f"{path} no longer lists Users/{user_id} ({exc})") from exc
            name = group.get("displayName") or path
            return f"removed Users/{user_id} from the members of {name} ({path})"

        return write

    def _deactivate(
        self, client: httpx.Client, path: str, user: dict[str, Any], etag: str | None
    ) -> str:
        if user.get("active") is False:
            raise AlreadyDone(f"{path} is already inactive")
        try:
            self._patch(client, path, [{"op": "replace", "path": "active", "value": False}], etag)
            return f"set active=false on {path}"
        except ScimError as exc:
            if not (exc.status == 501 or exc.scim_type in _PATH_FORM_REFUSED):
                raise
            log.info("scim path form refused; sending the value form", connector=self.name)
        self._patch(client, path, [{"op": "replace", "value": {"active": False}}], etag)
        return f"set active=false on {path} (value form; the server refused the path form)"

    def _delete_user(
        self, client: httpx.Client, path: str, user: dict[str, Any], etag: str | None
    ) -> str:
        self._request(client, "DELETE", path, if_match=etag)
        return f"deleted {path} ({user.get('userName', '?')})"

    def _patch(
        self, client: httpx.Client, path: str, operations: list[dict[str, Any]], etag: str | None
    ) -> None:
        body = {"schemas": [PATCH_OP], "Operations": operations}
        self._request(client, "PATCH", path, body=body, if_match=etag)


def _supported(service_provider_config: dict[str, Any], feature: str) -> bool:
    section = service_provider_config.get(feature)
    return isinstance(section, dict) and section.get("supported") is True


def from_config(config: Mapping[str, Any], dry_run: bool) -> ScimConnector:
    return ScimConnector(ScimConfig.model_validate(dict(config)), dry_run=dry_run)
