"""Who the leaver is on GitHub, and what they hold in the organisation: the reads.

The login comes from the config's `logins` table (employee id -> login), else, when
`login_from_email` is on, from the local part of the leaver's email; either way GitHub is
asked whether that user exists. Nothing is acted on when the match is missing or in doubt:

- a mapped login that GitHub does not know, or an email-derived login that `logins` gives
  to another employee, is a MANUAL grant (a person checks the organisation);
- a leaver without a login is a MANUAL grant only with `require_mapping` (the operator
  says every employee could hold access here); without it they have nothing here, as for
  every other system that does not know them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx

from connectors.base import Leaver, Message
from connectors.github_client import GitHubClient
from connectors.http import NotFound


def segment(value: str) -> str:
    return quote(value, safe="")


def repo_path(full_name: str) -> str:
    """`repos/{owner}/{repo}` for a repository's full name."""
    owner, _, name = full_name.partition("/")
    return f"repos/{segment(owner)}/{segment(name)}"


@dataclass(frozen=True)
class Login:
    """The leaver's GitHub login, or why there is none to act on."""

    login: str | None
    user_id: int | None = None
    problem: Message | None = None  # set: a person must look (a MANUAL grant)
    how: str = ""  # "logins", "email" or why nothing was found, for the evidence


@dataclass
class Holdings:
    """What the login holds in the organisation, as GitHub answered."""

    membership: dict[str, Any] | None = None  # org-membership, state active or pending
    teams: list[tuple[dict[str, Any], str]] = field(default_factory=list)  # (team, state)
    collaborations: list[tuple[dict[str, Any], str]] = field(default_factory=list)  # (repo, perm)
    outside: bool = False  # an outside collaborator: not a member
    invitations: list[dict[str, Any]] = field(default_factory=list)  # repository-invitation
    credentials: list[dict[str, Any]] = field(default_factory=list)  # credential-authorization


class GitHubReads(GitHubClient):
    """Finding the leaver and reading what they hold."""

    @property
    def org_path(self) -> str:
        return f"orgs/{segment(self.config.organization)}"

    def resolve(self, client: httpx.Client, leaver: Leaver) -> Login:
        org = self.config.organization
        mapped = self.config.logins.get(leaver.employee_id)
        if mapped is not None:
            user = self._user(client, mapped)
            if user is None:
                return Login(
                    None,
                    problem=Message.of(
                        "github.grant.unknown_login",
                        "manual: the mapped login %(login)s does not exist on GitHub",
                        login=mapped,
                    ),
                    how="logins",
                )
            return Login(str(user["login"]), int(user["id"]), how="logins")
        if self.config.login_from_email:
            guess = leaver.email.partition("@")[0]
            owner = next(
                (e for e, login in self.config.logins.items() if login.lower() == guess.lower()),
                None,
            )
            if owner is not None:
                return Login(
                    None,
                    problem=Message.of(
                        "github.grant.ambiguous",
                        "manual: ambiguous login %(login)s (mapped to employee %(other)s)",
                        login=guess,
                        other=owner,
                    ),
                    how="email",
                )
            user = self._user(client, guess) if guess else None
            if user is not None:
                return Login(str(user["login"]), int(user["id"]), how="email")
        if self.config.require_mapping:
            return Login(
                None,
                problem=Message.of(
                    "github.grant.unmapped",
                    "manual: not mapped (no GitHub login for %(employee)s in %(org)s)",
                    employee=leaver.employee_id,
                    org=org,
                ),
                how="unmapped",
            )
        return Login(None, how="unmapped")

    def _user(self, client: httpx.Client, login: str) -> dict[str, Any] | None:
        try:
            user = self.get_json(client, f"users/{segment(login)}")
        except NotFound:
            return None
        return user if isinstance(user, dict) and user.get("login") else None

    def holdings(self, client: httpx.Client, login: str) -> Holdings:
        held = Holdings()
        try:
            held.membership = self.get_json(client, f"{self.org_path}/memberships/{segment(login)}")
        except NotFound:
            held.membership = None
        if held.membership is not None:
            held.teams = self._teams(client, login)
        member = held.membership is not None and held.membership.get("state") == "active"
        if not member:
            outside = self.get_pages(client, f"{self.org_path}/outside_collaborators")
            held.outside = any(str(u.get("login", "")).lower() == login.lower() for u in outside)
        repos: list[dict[str, Any]] = []
        if member or held.outside or self.config.repository_invitations:
            repos = self.get_pages(client, f"{self.org_path}/repos", {"type": "all"})
        for repo in repos:
            if member or held.outside:
                permission = self.direct_permission(client, str(repo["full_name"]), login)
                if permission is not None:
                    held.collaborations.append((repo, permission))
            if self.config.repository_invitations:
                held.invitations += [
                    i
                    for i in self.get_pages(
                        client, f"{repo_path(str(repo['full_name']))}/invitations"
                    )
                    if str((i.get("invitee") or {}).get("login", "")).lower() == login.lower()
                ]
        if self.config.saml_sso:
            held.credentials = self.get_pages(
                client, f"{self.org_path}/credential-authorizations", {"login": login}
            )
        return held

    def _teams(self, client: httpx.Client, login: str) -> list[tuple[dict[str, Any], str]]:
        found = []
        for team in self.get_pages(client, f"{self.org_path}/teams"):
            path = (
                f"{self.org_path}/teams/{segment(str(team['slug']))}/memberships/{segment(login)}"
            )
            try:
                membership = self.get_json(client, path)
            except NotFound:
                continue
            found.append((team, str(membership.get("state", "active"))))
        return found

    def direct_permission(self, client: httpx.Client, full_name: str, login: str) -> str | None:
        """The login's permission as a direct collaborator on the repository, or None."""
        try:
            collaborators = self.get_pages(
                client, f"{repo_path(full_name)}/collaborators", {"affiliation": "direct"}
            )
        except NotFound:
            return None
        for user in collaborators:
            if str(user.get("login", "")).lower() == login.lower():
                return str(user.get("role_name") or "access")
        return None
