"""GitLab (self-managed or gitlab.com, REST API v4): memberships, tokens, SSH keys, the account.

What counts as access (`system_id` is GitLab's id, prefixed with group:/project: for places):

- `group-membership` / `project-membership` (membership, remove): a direct membership,
  removed with `DELETE /groups|projects/:id/members/:user_id`. A direct membership below
  another direct group membership declares `cascades_from` it: GitLab removes it together
  (`skip_subresources` defaults to false);
- `inherited-membership` (membership, elsewhere): access to a subgroup or project inherited
  from a group; `cascades_from` that group's direct membership, and it is never sent;
- `personal-access-token` (credential, remove; admin token): `DELETE /personal_access_tokens/:id`;
- `ssh-key` (credential, remove; admin token): `DELETE /users/:id/keys/:key_id`;
- `account` (sign_in): with an admin token, disable = `POST /users/:id/block`; without one
  the account is a MANUAL step, since only an administrator can block a user;
- `unmapped` (sign_in, manual): with `require_mapping`, a leaver GitLab cannot match
  to exactly one user ("manual: not mapped").

See docs/connectors/gitlab.md for token kinds and scopes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from connectors.base import (
    DISABLE,
    ELSEWHERE,
    MANUAL,
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
    Verification,
    revoke_step,
)
from connectors.config import ConnectorKind
from connectors.gitlab_access import GROUP, GitLabUser, Place, Unmatched, role, source_of
from connectors.gitlab_client import GitLabConfig
from connectors.gitlab_proof import (
    GROUP_MEMBER,
    INHERITED,
    PROJECT_MEMBER,
    SSH_KEY,
    TOKEN,
)
from connectors.gitlab_proof import checks as _checks
from connectors.gitlab_writes import GitLabWrites
from connectors.http import NotFound

__all__ = [
    "ACCOUNT",
    "GROUP_MEMBER",
    "INHERITED",
    "KIND",
    "PROJECT_MEMBER",
    "SSH_KEY",
    "TOKEN",
    "UNMAPPED",
    "GitLabConfig",
    "GitLabConnector",
    "from_config",
]

ACCOUNT, UNMAPPED = "account", "unmapped"
_DIRECT = {GROUP: GROUP_MEMBER, "project": PROJECT_MEMBER}


class GitLabConnector(GitLabWrites):
    """A GitLab instance as one offboarding target."""

    @property
    def capabilities(self) -> Capabilities:
        kinds = [
            KindCapability(
                GROUP_MEMBER, Effect.MEMBERSHIP, (REMOVE,), "DELETE member", frozenset({REMOVE})
            ),
            KindCapability(PROJECT_MEMBER, Effect.MEMBERSHIP, (REMOVE,), "DELETE member"),
            KindCapability(INHERITED, Effect.MEMBERSHIP, (ELSEWHERE,), "goes with its group"),
            KindCapability(UNMAPPED, Effect.SIGN_IN, (MANUAL,), "no user matched"),
        ]
        if self.config.admin:
            kinds += [
                KindCapability(TOKEN, Effect.CREDENTIAL, (REMOVE,), "revoke the token"),
                KindCapability(SSH_KEY, Effect.CREDENTIAL, (REMOVE,), "delete the key"),
                KindCapability(ACCOUNT, Effect.SIGN_IN, (DISABLE,), "block the user"),
            ]
        else:
            kinds.append(KindCapability(ACCOUNT, Effect.SIGN_IN, (MANUAL,), "needs an admin"))
        return Capabilities(tuple(kinds))

    # -- the Connector protocol ----------------------------------------------------

    def check(self) -> Health:
        problems: list[str] = []
        notes: list[str] = []
        try:
            with self.session() as client:
                me = self.get_object(client, "user")
                if self.config.admin and not me.get("is_admin"):
                    problems.append(
                        f"the token's user {me.get('username')} is not an administrator of "
                        f"{self.config.base_url}: use an admin's token, or set admin = false "
                        "(then only memberships under `groups` are removed and blocking is manual)"
                    )
                self._check_scopes(client, problems, notes)
                if not self.config.admin:
                    notes.append(
                        "no administrator token: the user cannot be blocked (a MANUAL step), "
                        "and their personal access tokens and SSH keys are not listed"
                    )
                    if not self.config.groups:
                        problems.append("admin is false and no groups are set: set groups")
                for group in self.config.groups:
                    try:
                        self._full_path(client, group)
                    except NotFound:
                        problems.append(
                            f"group {group!r} is not found, or not visible to the token"
                        )
        except ConnectorError as exc:
            problems.append(str(exc))
        return Health(ok=not problems, messages=problems + notes)

    def _check_scopes(self, client: httpx.Client, problems: list[str], notes: list[str]) -> None:
        try:
            scopes = set(self.get_object(client, "personal_access_tokens/self").get("scopes") or [])
        except NotFound:
            notes.append("the token's scopes could not be read (not a personal access token?)")
            return
        if "api" not in scopes:
            problems.append(
                f"the token has the scopes {', '.join(sorted(scopes)) or 'none'}: it can list "
                "access but not remove it; give it the api scope"
            )
        else:
            notes.append("token scope api: can remove")

    def inventory(self, leaver: Leaver) -> list[AccessGrant]:
        with self.session() as client:
            try:
                user = self.find(client, leaver)
            except Unmatched as unmatched:
                return self._unmatched(leaver, unmatched)
            return self._grants(client, user)

    def revoke(self, grant: AccessGrant, action: str | None = None) -> Outcome:
        def perform(chosen: str) -> str:
            if grant.connector != self.name:
                raise PermanentError(f"{self.name}: grant belongs to connector {grant.connector!r}")
            data = grant.revoke_data
            with self.session() as client:
                if grant.kind in (GROUP_MEMBER, PROJECT_MEMBER):
                    kind, source = grant.system_id.split(":", 1)
                    level = int(data.get("level", "0"))
                    return self.remove_member(
                        client, kind, source, grant.target, grant.account, level
                    )
                if grant.kind == TOKEN:
                    return self.revoke_token(client, grant.system_id, grant.target)
                if grant.kind == SSH_KEY:
                    return self.delete_key(client, grant.account, grant.system_id, grant.target)
                return self.block(client, grant.account, grant.target)

        return revoke_step(self.name, self.capabilities, grant, action, perform)

    def verify(self, leaver: Leaver) -> Verification:
        with self.session() as client:
            try:
                user = self.find(client, leaver)
            except Unmatched as unmatched:
                detail = Message.of(
                    "gitlab.detail.unmatched", "%(reason)s", reason=unmatched.reason
                )
                if self.config.require_mapping or unmatched.candidates:
                    name = Message.of("gitlab.check.mapped", "the leaver is one GitLab user")
                    return Verification([], [Check(name, False, detail)])
                return Verification(
                    [], [Check(Message.of("gitlab.check.no_user", "no GitLab user"), True, detail)]
                )
            grants = self._grants(client, user)
            state = self.user_state(client, user.id)
        return Verification(
            [
                g
                for g in grants
                if g.kind not in (INHERITED, UNMAPPED)
                and not (g.kind == ACCOUNT and not self.config.admin)
            ],
            _checks(user, state, grants, admin=self.config.admin),
        )

    # -- building the grants -----------------------------------------------------------

    def _grants(self, client: httpx.Client, user: GitLabUser) -> list[AccessGrant]:
        places = self.places(client, user)
        grants = self._memberships(user, places)
        if self.config.admin:
            for token in self.tokens(client, user):
                scopes = ", ".join(token.get("scopes") or []) or "no scopes"
                label = Message.of(
                    "gitlab.grant.token",
                    "Personal access token %(token)s (%(scopes)s)",
                    token=str(token.get("name")),
                    scopes=scopes,
                )
                grants.append(
                    self._grant(
                        TOKEN,
                        Effect.CREDENTIAL,
                        str(token["id"]),
                        user,
                        str(token.get("name")),
                        label,
                    )
                )
            for key in self.keys(client, user):
                title = str(key.get("title") or key["id"])
                label = Message.of("gitlab.grant.ssh_key", "SSH key %(key)s", key=title)
                grants.append(
                    self._grant(SSH_KEY, Effect.CREDENTIAL, str(key["id"]), user, title, label)
                )
        if not user.blocked:
            if self.config.admin:
                label = Message.of(
                    "gitlab.grant.account", "Sign-in as %(user)s", user=user.username
                )
            else:
                label = Message.of(
                    "gitlab.grant.account_manual",
                    "manual: block %(user)s; the token is not an administrator's, so an "
                    "administrator must block the account (that also stops its tokens and "
                    "SSH keys)",
                    user=user.username,
                )
            grants.append(
                self._grant(ACCOUNT, Effect.SIGN_IN, str(user.id), user, user.username, label)
            )
        return grants

    def _memberships(self, user: GitLabUser, places: list[Place]) -> list[AccessGrant]:
        keys = {
            p.system_id: f"{self.name}|{_DIRECT[p.kind]}|{p.system_id}" for p in places if p.direct
        }
        direct: list[AccessGrant] = []
        inherited: list[AccessGrant] = []
        for place in places:
            parent = source_of(place, places)
            parent_key = keys[parent.system_id] if parent else None
            level = role(place.level)
            if place.direct:
                label = (
                    Message.of(
                        "gitlab.grant.group",
                        "Member of group %(group)s (%(role)s)",
                        group=place.full_path,
                        role=level,
                    )
                    if place.kind == GROUP
                    else Message.of(
                        "gitlab.grant.project",
                        "Member of project %(project)s (%(role)s)",
                        project=place.full_path,
                        role=level,
                    )
                )
                grant = self._grant(
                    _DIRECT[place.kind],
                    Effect.MEMBERSHIP,
                    place.system_id,
                    user,
                    place.full_path,
                    label,
                    {"level": str(place.level)},
                )
                direct.append(grant.model_copy(update={"cascades_from": parent_key}))
                continue
            if parent is not None:
                label = Message.of(
                    "gitlab.grant.inherited",
                    "Access to %(place)s (%(role)s), inherited from group %(source)s: "
                    "goes with that membership",
                    place=place.full_path,
                    role=level,
                    source=parent.full_path,
                )
            else:
                label = Message.of(
                    "gitlab.grant.inherited_outside",
                    "Access to %(place)s (%(role)s), inherited from outside the configured groups "
                    "or through a group share: remove it where it is granted",
                    place=place.full_path,
                    role=level,
                )
            grant = self._grant(
                INHERITED, Effect.MEMBERSHIP, place.system_id, user, place.full_path, label
            )
            inherited.append(grant.model_copy(update={"cascades_from": parent_key}))
        # deepest first: a membership below another is revoked before the one above takes it
        direct.sort(key=lambda g: (-g.target.count("/"), g.target.lower(), g.kind))
        return direct + inherited

    def _grant(
        self,
        kind: str,
        effect: Effect,
        system_id: str,
        user: GitLabUser,
        target: str,
        label: Message,
        data: Mapping[str, str] | None = None,
    ) -> AccessGrant:
        return AccessGrant(
            connector=self.name,
            kind=kind,
            effect=effect,
            system_id=system_id,
            account=str(user.id),
            target=target,
            label=label,
            revoke_data={"username": user.username, **(data or {})},
        )

    def _unmatched(self, leaver: Leaver, unmatched: Unmatched) -> list[AccessGrant]:
        if not self.config.require_mapping:
            if unmatched.candidates:
                raise PermanentError(
                    f"{self.name}: {unmatched.reason}; refusing to guess. Add employee "
                    f"{leaver.employee_id} to the usernames table"
                )
            return []
        label = Message.of(
            "gitlab.grant.not_mapped",
            "manual: not mapped (%(reason)s); add employee %(employee)s to the usernames "
            "table, or remove their GitLab access by hand",
            reason=unmatched.reason,
            employee=leaver.employee_id,
        )
        return [
            AccessGrant(
                connector=self.name,
                kind=UNMAPPED,
                effect=Effect.SIGN_IN,
                system_id=f"employee:{leaver.employee_id}",
                account=leaver.email,
                target=leaver.email,
                label=label,
            )
        ]


def from_config(config: Mapping[str, Any], dry_run: bool, **kwargs: Any) -> GitLabConnector:
    return GitLabConnector(GitLabConfig.model_validate(dict(config)), dry_run=dry_run, **kwargs)


KIND = ConnectorKind(
    kind="gitlab",
    config=GitLabConfig,
    build=lambda config, dry_run: GitLabConnector(config, dry_run=dry_run),
    description="GitLab (self-managed or gitlab.com): remove group and project memberships, "
    "revoke personal access tokens and SSH keys, block the user (admin token)",
)
