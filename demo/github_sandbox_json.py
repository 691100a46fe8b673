"""The JSON bodies the GitHub sandbox answers with, shaped as GitHub's OpenAPI description
(`@octokit/openapi`, `generated/api.github.com.json`) requires them: every required field of
`public-user`, `simple-user`, `org-membership`, `team`, `team-membership`,
`minimal-repository`, `collaborator`, `repository-invitation`, `organization-full`,
`installation-token`, `credential-authorization` (from `ghec.json`) and `basic-error`.

The tests validate every response against that description, so a field left out here fails
them; nothing here is read from the description at run time.
"""

from __future__ import annotations

from typing import Any

DOCS = "https://docs.github.com/rest"
CREATED = "2020-01-01T00:00:00Z"
_USER_URLS = (
    "events_url",
    "followers_url",
    "following_url",
    "gists_url",
    "organizations_url",
    "received_events_url",
    "repos_url",
    "starred_url",
    "subscriptions_url",
)
_REPO_URLS = (
    "archive_url assignees_url blobs_url branches_url collaborators_url comments_url "
    "commits_url compare_url contents_url contributors_url deployments_url downloads_url "
    "events_url forks_url git_commits_url git_refs_url git_tags_url hooks_url "
    "issue_comment_url issue_events_url issues_url keys_url labels_url languages_url "
    "merges_url milestones_url notifications_url pulls_url releases_url stargazers_url "
    "statuses_url subscribers_url subscription_url tags_url teams_url trees_url"
).split()


def error(message: str, doc: str = "") -> dict[str, Any]:
    """GitHub's error body (`basic-error`): a message and where the docs explain it."""
    return {"message": message, "documentation_url": f"{DOCS}{doc}", "status": ""}


def validation_failed(resource: str, field: str, code: str) -> dict[str, Any]:
    """GitHub's 422 body (`validation-error`)."""
    return {
        "message": "Validation Failed",
        "documentation_url": DOCS,
        "errors": [{"resource": resource, "field": field, "code": code}],
    }


def simple_user(base: str, login: str, user_id: int, kind: str = "User") -> dict[str, Any]:
    url = f"{base}/users/{login}"
    user: dict[str, Any] = {name: f"{url}/{name.removesuffix('_url')}" for name in _USER_URLS}
    user.update(
        login=login,
        id=user_id,
        node_id=f"U_{user_id}",
        avatar_url=f"{base}/avatars/{user_id}",
        gravatar_id="",
        url=url,
        html_url=f"https://github.example/{login}",
        type=kind,
        site_admin=False,
    )
    return user


def public_user(base: str, login: str, user_id: int) -> dict[str, Any]:
    user = simple_user(base, login, user_id)
    user.update(
        user_view_type="public",
        name=None,
        company=None,
        blog=None,
        location=None,
        email=None,
        hireable=None,
        bio=None,
        public_repos=0,
        public_gists=0,
        followers=0,
        following=0,
        created_at=CREATED,
        updated_at=CREATED,
    )
    return user


def organization_simple(base: str, org: str, org_id: int) -> dict[str, Any]:
    url = f"{base}/orgs/{org}"
    return {
        "login": org,
        "id": org_id,
        "node_id": f"O_{org_id}",
        "url": url,
        "repos_url": f"{url}/repos",
        "events_url": f"{url}/events",
        "hooks_url": f"{url}/hooks",
        "issues_url": f"{url}/issues",
        "members_url": f"{url}/members{{/member}}",
        "public_members_url": f"{url}/public_members{{/member}}",
        "avatar_url": f"{base}/avatars/{org_id}",
        "description": None,
    }


def organization_full(base: str, org: str, org_id: int) -> dict[str, Any]:
    full = organization_simple(base, org, org_id)
    full.update(
        html_url=f"https://github.example/{org}",
        has_organization_projects=True,
        has_repository_projects=True,
        public_repos=0,
        public_gists=0,
        followers=0,
        following=0,
        type="Organization",
        created_at=CREATED,
        updated_at=CREATED,
        archived_at=None,
    )
    return full


def org_membership(
    base: str, org: str, org_id: int, user: dict[str, Any], state: str, role: str
) -> dict[str, Any]:
    return {
        "url": f"{base}/orgs/{org}/memberships/{user['login']}",
        "state": state,
        "role": role,
        "organization_url": f"{base}/orgs/{org}",
        "organization": organization_simple(base, org, org_id),
        "user": user,
    }


def team(base: str, org: str, slug: str, name: str, team_id: int) -> dict[str, Any]:
    url = f"{base}/orgs/{org}/teams/{slug}"
    return {
        "id": team_id,
        "node_id": f"T_{team_id}",
        "url": url,
        "html_url": f"https://github.example/orgs/{org}/teams/{slug}",
        "members_url": f"{url}/members{{/member}}",
        "repositories_url": f"{url}/repos",
        "name": name,
        "slug": slug,
        "description": None,
        "privacy": "closed",
        "permission": "pull",
        "parent": None,
        "type": "organization",
    }


def team_membership(base: str, org: str, slug: str, login: str, state: str) -> dict[str, Any]:
    return {
        "url": f"{base}/orgs/{org}/teams/{slug}/memberships/{login}",
        "role": "member",
        "state": state,
    }


def minimal_repository(
    base: str, owner: dict[str, Any], name: str, repo_id: int, private: bool
) -> dict[str, Any]:
    full_name = f"{owner['login']}/{name}"
    url = f"{base}/repos/{full_name}"
    repo: dict[str, Any] = {key: f"{url}/{key.removesuffix('_url')}" for key in _REPO_URLS}
    repo.update(
        id=repo_id,
        node_id=f"R_{repo_id}",
        name=name,
        full_name=full_name,
        owner=owner,
        private=private,
        html_url=f"https://github.example/{full_name}",
        description=None,
        fork=False,
        url=url,
    )
    return repo


def collaborator(user: dict[str, Any], permission: str) -> dict[str, Any]:
    """A `collaborator`: the user, their role and the permissions it gives."""
    levels = ("pull", "triage", "push", "maintain", "admin")
    role = {"read": "pull", "write": "push"}.get(permission, permission)
    rank = levels.index(role) if role in levels else 0
    return {
        **user,
        "role_name": permission,
        "permissions": {level: i <= rank for i, level in enumerate(levels)},
    }


def repository_invitation(
    base: str,
    invitation_id: int,
    repository: dict[str, Any],
    invitee: dict[str, Any],
    inviter: dict[str, Any],
    permission: str,
) -> dict[str, Any]:
    return {
        "id": invitation_id,
        "node_id": f"RI_{invitation_id}",
        "repository": repository,
        "invitee": invitee,
        "inviter": inviter,
        "permissions": permission,
        "created_at": CREATED,
        "url": f"{base}/user/repository_invitations/{invitation_id}",
        "html_url": f"{repository['html_url']}/invitations",
    }


def credential_authorization(
    login: str, credential_id: int, credential_type: str, title: str
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "login": login,
        "credential_id": credential_id,
        "credential_type": credential_type,
        "credential_authorized_at": CREATED,
        "credential_accessed_at": None,
        "authorized_credential_id": 9_000_000 + credential_id,
        "scopes": ["repo"],
    }
    if credential_type == "SSH key":
        body.update(fingerprint=f"SHA256:{credential_id:08d}", authorized_credential_title=title)
    else:
        body.update(token_last_eight=f"{credential_id:08d}"[-8:], authorized_credential_note=title)
    return body
