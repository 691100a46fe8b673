"""The GitHub sandbox's endpoints: which method and path reach which operation of the
organisation (`demo.github_sandbox_api.GitHubOrg`), and what each needs (a token that may
read, one that may write, or a GitHub App's JWT). Anything else is 404 "Not Found", as at
GitHub, wrong verbs included."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from demo.github_sandbox_api import NOT_FOUND, Answer, GitHubOrg

Handler = Callable[[GitHubOrg, str, dict[str, str], Mapping[str, str]], Answer]


def _org(handler: Handler) -> Handler:
    """404 for any organisation but the sandbox's own."""

    def checked(org: GitHubOrg, base: str, p: dict[str, str], q: Mapping[str, str]) -> Answer:
        name = p.get("org") or p.get("owner")
        if name is not None and name.lower() != org.login.lower():
            return NOT_FOUND
        return handler(org, base, p, q)

    return checked


def _int(value: str) -> int | None:
    return int(value) if value.isdigit() else None


def _remove_credential(org: GitHubOrg, base: str, p: dict[str, str], q: Any) -> Answer:
    credential_id = _int(p["credential_id"])
    return NOT_FOUND if credential_id is None else org.remove_credential(credential_id)


def _delete_invitation(org: GitHubOrg, base: str, p: dict[str, str], q: Any) -> Answer:
    invitation_id = _int(p["invitation_id"])
    if invitation_id is None:
        return NOT_FOUND
    return org.delete_repo_invitation(p["repo"], invitation_id)


def _no_handler(org: GitHubOrg, base: str, p: dict[str, str], q: Any) -> Answer:
    return NOT_FOUND  # the JWT route is answered by the sandbox itself


_ROUTES: list[tuple[str, str, Handler, str]] = [
    ("POST", "/app/installations/{installation_id}/access_tokens", _no_handler, "jwt"),
    ("GET", "/users/{username}", lambda o, b, p, q: o.get_user(b, p["username"]), "read"),
    ("GET", "/orgs/{org}", lambda o, b, p, q: (200, o.org_json(b)), "read"),
    (
        "GET",
        "/orgs/{org}/memberships/{username}",
        lambda o, b, p, q: o.membership(b, p["username"]),
        "read",
    ),
    (
        "DELETE",
        "/orgs/{org}/memberships/{username}",
        lambda o, b, p, q: o.remove_membership(p["username"]),
        "write",
    ),
    ("GET", "/orgs/{org}/teams", lambda o, b, p, q: (200, o.team_list(b)), "read"),
    (
        "GET",
        "/orgs/{org}/teams/{team_slug}/memberships/{username}",
        lambda o, b, p, q: o.team_membership(b, p["team_slug"], p["username"]),
        "read",
    ),
    (
        "DELETE",
        "/orgs/{org}/teams/{team_slug}/memberships/{username}",
        lambda o, b, p, q: o.remove_team_membership(p["team_slug"], p["username"]),
        "write",
    ),
    (
        "GET",
        "/orgs/{org}/outside_collaborators",
        lambda o, b, p, q: (200, o.outside_collaborators(b)),
        "read",
    ),
    ("GET", "/orgs/{org}/repos", lambda o, b, p, q: (200, o.repo_list(b)), "read"),
    (
        "GET",
        "/repos/{owner}/{repo}/collaborators",
        lambda o, b, p, q: o.collaborators(b, p["repo"], q.get("affiliation", "all")),
        "read",
    ),
    (
        "GET",
        "/repos/{owner}/{repo}/collaborators/{username}",
        lambda o, b, p, q: o.is_collaborator(p["repo"], p["username"]),
        "read",
    ),
    (
        "DELETE",
        "/repos/{owner}/{repo}/collaborators/{username}",
        lambda o, b, p, q: o.remove_collaborator(p["repo"], p["username"]),
        "write",
    ),
    (
        "GET",
        "/repos/{owner}/{repo}/invitations",
        lambda o, b, p, q: o.repo_invitations(b, p["repo"]),
        "read",
    ),
    ("DELETE", "/repos/{owner}/{repo}/invitations/{invitation_id}", _delete_invitation, "write"),
    (
        "GET",
        "/orgs/{org}/credential-authorizations",
        lambda o, b, p, q: o.credential_list(q.get("login")),
        "read",
    ),
    (
        "DELETE",
        "/orgs/{org}/credential-authorizations/{credential_id}",
        _remove_credential,
        "write",
    ),
]


def _pattern(template: str) -> re.Pattern[str]:
    return re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", template) + "/?$")


_COMPILED = [(method, _pattern(path), _org(h), needs) for method, path, h, needs in _ROUTES]


def route(method: str, path: str) -> tuple[Handler, dict[str, str], str] | None:
    """The handler, path parameters and need ("read", "write", "jwt") of a request."""
    for route_method, pattern, handler, needs in _COMPILED:
        match = pattern.match(path)
        if match and route_method == method:
            return handler, match.groupdict(), needs
    return None
