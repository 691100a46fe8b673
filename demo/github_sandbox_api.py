"""What the GitHub sandbox's organisation is and how its REST endpoints change it.

Behaviour follows GitHub's REST documentation (docs.github.com/rest, API version
2022-11-28) and the operations of its OpenAPI description (`@octokit/openapi`):

- `GET/DELETE /orgs/{org}/memberships/{username}` (orgs/get-membership-for-user,
  orgs/remove-membership-for-user): state `active` or `pending` (an invitation not yet
  accepted); removing "will remove them from all teams and they will no longer have any
  access to the organization's repositories", and cancels a pending invitation. 404 when
  the user is neither.
- `GET /orgs/{org}/teams`, `GET/DELETE /orgs/{org}/teams/{team_slug}/memberships/{username}`:
  a pending org invitation that names a team shows as a `pending` team membership.
- `GET /orgs/{org}/outside_collaborators`: collaborators on the org's repositories who are
  not members. `GET /repos/{owner}/{repo}/collaborators?affiliation=direct|outside|all`,
  `GET/DELETE /repos/{owner}/{repo}/collaborators/{username}` (the check answers 204 for a
  direct collaborator or an org owner, else 404; removing answers 204).
- `GET /repos/{owner}/{repo}/invitations`, `DELETE .../invitations/{invitation_id}`.
- GitHub Enterprise Cloud only (`ghec.json`): `GET /orgs/{org}/credential-authorizations`
  (`login` filter) and `DELETE .../credential-authorizations/{credential_id}`; an
  organisation without SAML single sign-on answers 404 (assumed: the docs only say the
  endpoints are for organisations that use SAML SSO).
- `GET /users/{username}`, `GET /orgs/{org}`, lists paged with `per_page`/`page` and a
  `Link` header. Errors are `{"message", "documentation_url"}`; 404 "Not Found".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from demo import github_sandbox_json as js

Answer = tuple[int, Any]  # status and JSON body (None: no body)
NOT_FOUND: Answer = (404, js.error("Not Found"))


@dataclass
class Team:
    id: int
    name: str
    members: set[str] = field(default_factory=set)


@dataclass
class Repo:
    id: int
    private: bool = True
    collaborators: dict[str, str] = field(default_factory=dict)  # login -> permission
    invitations: dict[int, tuple[str, str]] = field(default_factory=dict)  # id -> (login, perm)


@dataclass
class Credential:
    login: str
    type: str  # "personal access token", "SSH key", "OAuth app token", "GitHub app token"
    title: str


@dataclass
class GitHubOrg:
    """One organisation and the GitHub users around it; ids are GitHub's numeric ids."""

    login: str = "acme-nl"
    id: int = 4_200_001
    owner: str = "acme-admin"
    saml_sso: bool = True
    users: dict[str, int] = field(default_factory=dict)
    members: dict[str, str] = field(default_factory=dict)  # login -> "admin" / "member"
    invitations: dict[str, tuple[str, tuple[str, ...]]] = field(default_factory=dict)
    teams: dict[str, Team] = field(default_factory=dict)  # slug -> team
    repos: dict[str, Repo] = field(default_factory=dict)  # name -> repo
    credentials: dict[int, Credential] = field(default_factory=dict)
    _next_id: int = 7_000_000

    def new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    # -- seeding ---------------------------------------------------------------------

    def user(self, login: str) -> str:
        self.users.setdefault(login, self.new_id())
        return login

    def add_member(self, login: str, role: str = "member") -> None:
        self.members[self.user(login)] = role

    def invite(self, login: str, role: str = "direct_member", teams: tuple[str, ...] = ()) -> None:
        self.invitations[self.user(login)] = (role, teams)

    def add_team(self, slug: str, *members: str, name: str = "") -> Team:
        team = self.teams.setdefault(slug, Team(self.new_id(), name or slug))
        team.members.update(members)
        return team

    def add_repo(self, name: str, private: bool = True) -> Repo:
        return self.repos.setdefault(name, Repo(self.new_id(), private))

    def add_collaborator(self, repo: str, login: str, permission: str = "write") -> None:
        self.add_repo(repo).collaborators[self.user(login)] = permission

    def invite_to_repo(self, repo: str, login: str, permission: str = "write") -> int:
        invitation_id = self.new_id()
        self.add_repo(repo).invitations[invitation_id] = (self.user(login), permission)
        return invitation_id

    def authorize_credential(self, login: str, kind: str = "personal access token") -> int:
        credential_id = self.new_id()
        self.credentials[credential_id] = Credential(login, kind, f"{login}'s {kind}")
        return credential_id

    def state(self) -> dict[str, Any]:
        """Everything a connector could change, comparable, for tests."""
        return {
            "members": dict(sorted(self.members.items())),
            "invitations": dict(sorted(self.invitations.items())),
            "teams": {s: sorted(t.members) for s, t in sorted(self.teams.items())},
            "repos": {
                n: (dict(sorted(r.collaborators.items())), dict(sorted(r.invitations.items())))
                for n, r in sorted(self.repos.items())
            },
            "credentials": sorted(self.credentials),
        }

    # -- reading ---------------------------------------------------------------------

    def simple(self, base: str, login: str) -> dict[str, Any]:
        return js.simple_user(base, login, self.users[login])

    def org_json(self, base: str) -> dict[str, Any]:
        return js.organization_full(base, self.login, self.id)

    def get_user(self, base: str, login: str) -> Answer:
        if login not in self.users:
            return NOT_FOUND
        return 200, js.public_user(base, login, self.users[login])

    def membership(self, base: str, login: str) -> Answer:
        if login in self.members:
            state, role = "active", self.members[login]
        elif login in self.invitations:
            state, role = "pending", "admin" if self.invitations[login][0] == "admin" else "member"
        else:
            return NOT_FOUND
        user = self.simple(base, login)
        return 200, js.org_membership(base, self.login, self.id, user, state, role)

    def team_list(self, base: str) -> list[dict[str, Any]]:
        return [js.team(base, self.login, s, t.name, t.id) for s, t in sorted(self.teams.items())]

    def team_membership(self, base: str, slug: str, login: str) -> Answer:
        team = self.teams.get(slug)
        if team is None:
            return NOT_FOUND
        if login in team.members:
            state = "active"
        elif slug in self.invitations.get(login, ("", ()))[1]:
            state = "pending"
        else:
            return 404, None  # "if user has no team membership": no body documented
        return 200, js.team_membership(base, self.login, slug, login, state)

    def outside_collaborators(self, base: str) -> list[dict[str, Any]]:
        logins = {u for r in self.repos.values() for u in r.collaborators} - set(self.members)
        return [self.simple(base, login) for login in sorted(logins)]

    def repo_json(self, base: str, name: str) -> dict[str, Any]:
        org = js.simple_user(base, self.login, self.id, "Organization")
        repo = self.repos[name]
        return js.minimal_repository(base, org, name, repo.id, repo.private)

    def repo_list(self, base: str) -> list[dict[str, Any]]:
        return [self.repo_json(base, name) for name in sorted(self.repos)]

    def collaborators(self, base: str, name: str, affiliation: str) -> Answer:
        repo = self.repos.get(name)
        if repo is None:
            return NOT_FOUND
        found = dict(repo.collaborators)
        if affiliation == "outside":
            found = {u: p for u, p in found.items() if u not in self.members}
        elif affiliation == "all":
            found.update({u: "admin" for u, r in self.members.items() if r == "admin"})
        return 200, [js.collaborator(self.simple(base, u), p) for u, p in sorted(found.items())]

    def is_collaborator(self, name: str, login: str) -> Answer:
        repo = self.repos.get(name)
        if repo is None:
            return NOT_FOUND
        if login in repo.collaborators or self.members.get(login) == "admin":
            return 204, None
        return NOT_FOUND

    def repo_invitations(self, base: str, name: str) -> Answer:
        repo = self.repos.get(name)
        if repo is None:
            return NOT_FOUND
        inviter = self.simple(base, self.owner)
        return 200, [
            js.repository_invitation(
                base, i, self.repo_json(base, name), self.simple(base, login), inviter, perm
            )
            for i, (login, perm) in sorted(repo.invitations.items())
        ]

    def credential_list(self, login: str | None) -> Answer:
        if not self.saml_sso:
            return NOT_FOUND
        return 200, [
            js.credential_authorization(c.login, cid, c.type, c.title)
            for cid, c in sorted(self.credentials.items())
            if login is None or c.login.lower() == login.lower()
        ]

    # -- writing ---------------------------------------------------------------------

    def remove_membership(self, login: str) -> Answer:
        if login in self.invitations:
            del self.invitations[login]
            return 204, None
        if login not in self.members:
            return NOT_FOUND
        del self.members[login]
        for team in self.teams.values():
            team.members.discard(login)
        for repo in self.repos.values():
            repo.collaborators.pop(login, None)  # no access to the org's repositories left
        return 204, None

    def remove_team_membership(self, slug: str, login: str) -> Answer:
        team = self.teams.get(slug)
        if team is None or login not in team.members:
            return NOT_FOUND
        team.members.discard(login)
        return 204, None

    def remove_collaborator(self, name: str, login: str) -> Answer:
        repo = self.repos.get(name)
        if repo is None:
            return NOT_FOUND
        repo.collaborators.pop(login, None)
        return 204, None

    def delete_repo_invitation(self, name: str, invitation_id: int) -> Answer:
        repo = self.repos.get(name)
        if repo is None or repo.invitations.pop(invitation_id, None) is None:
            return NOT_FOUND
        return 204, None

    def remove_credential(self, credential_id: int) -> Answer:
        if not self.saml_sso or self.credentials.pop(credential_id, None) is None:
            return NOT_FOUND
        return 204, None
