"""GitHub: take a leaver out of one organisation, over the REST API.

What counts as access (`system_id` is GitHub's own id; the login is found as
`connectors.github_access` explains):

- kind `organization` (effect sign_in, action remove): the org membership, `active`, or
  `pending` (an invitation not accepted yet). `DELETE /orgs/{org}/memberships/{username}`
  removes the member (or cancels the invitation); GitHub then takes them out of every team
  and every repository of the organisation, so those grants declare `cascades_from` it.
- kind `team` (membership, remove): each team that lists the login
  (`GET /orgs/{org}/teams/{team_slug}/memberships/{username}`); on its own,
  `DELETE` of that membership.
- kind `repository` (membership, remove): direct collaborator access to a repository
  (`?affiliation=direct`): a member's (cascades from the membership) or an outside
  collaborator's. `DELETE /repos/{owner}/{repo}/collaborators/{username}`.
- kind `repository-invitation` (membership, remove): a pending invitation to a repository;
  `DELETE /repos/{owner}/{repo}/invitations/{invitation_id}`.
- kind `credential` (credential, remove): with `saml_sso`, each token or SSH key the login
  authorised for the organisation's SAML SSO; `DELETE
  /orgs/{org}/credential-authorizations/{credential_id}`.
- kind `unmapped` (sign_in, manual only): the login is missing or in doubt; the plan shows
  it for a person to check, nothing is sent.

A 404 on removal means the access is already gone (ALREADY_DONE).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx
import structlog

from connectors.base import (
    MANUAL,
    REMOVE,
    AccessGrant,
    AlreadyDone,
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
from connectors.github_access import GitHubReads, Holdings, Login, repo_path, segment
from connectors.github_client import GitHubConfig
from connectors.github_grants import (
    CHECK_LOGIN,
    CREDENTIAL,
    INVITATION,
    ORGANIZATION,
    REPOSITORY,
    TEAM,
    UNMAPPED,
    checks_of,
    grants_of,
)
from connectors.http import NotFound

__all__ = ["KIND", "GitHubConfig", "GitHubConnector", "from_config"]

log = structlog.get_logger(__name__)

_REMOVE = frozenset({REMOVE})


class GitHubConnector(GitHubReads):
    """One GitHub organisation as an offboarding target."""

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(
            (
                KindCapability(
                    ORGANIZATION, Effect.SIGN_IN, (REMOVE,), "DELETE org membership", _REMOVE
                ),
                KindCapability(TEAM, Effect.MEMBERSHIP, (REMOVE,), "DELETE team membership"),
                KindCapability(REPOSITORY, Effect.MEMBERSHIP, (REMOVE,), "DELETE collaborator"),
                KindCapability(INVITATION, Effect.MEMBERSHIP, (REMOVE,), "DELETE invitation"),
                KindCapability(
                    CREDENTIAL, Effect.CREDENTIAL, (REMOVE,), "DELETE SSO authorization"
                ),
                KindCapability(UNMAPPED, Effect.SIGN_IN, (MANUAL,), "a person checks GitHub"),
            )
        )

    # -- the Connector protocol ------------------------------------------------

    def check(self) -> Health:
        problems: list[str] = []
        notes: list[str] = []
        org = self.config.organization
        try:
            with self.session() as client:
                try:
                    self.get_json(client, self.org_path)
                except NotFound:
                    problems.append(
                        f"{self.name}: organisation {org!r} not found at {self.config.base_url}, "
                        "or not visible to the token; check organization and the token's owner"
                    )
                    return Health(ok=False, messages=problems)
                self.get_pages(client, f"{self.org_path}/teams", {"per_page": "1"})
                notes.append(f"organisation {org}: reachable; teams readable")
                if self.config.saml_sso:
                    try:
                        self.get_json(client, f"{self.org_path}/credential-authorizations")
                        notes.append("SAML SSO credential authorizations: readable")
                    except NotFound:
                        problems.append(
                            f"{self.name}: GET /orgs/{org}/credential-authorizations answered "
                            "404: the organisation does not use SAML SSO (set saml_sso = false) "
                            "or the token is not an organisation owner's"
                        )
        except ConnectorError as exc:
            problems.append(str(exc))
        return Health(ok=not problems, messages=problems + notes)

    def inventory(self, leaver: Leaver) -> list[AccessGrant]:
        with self.session() as client:
            login = self.resolve(client, leaver)
            if login.login is None:
                return [self._manual(leaver, login)] if login.problem else []
            return self._grants(login, self.holdings(client, login.login))

    def revoke(self, grant: AccessGrant, action: str | None = None) -> Outcome:
        def perform(chosen: str) -> str:
            if grant.connector != self.name:
                raise PermanentError(f"{self.name}: grant belongs to {grant.connector!r}")
            with self.session() as client:
                return self._remove(client, grant)

        return revoke_step(self.name, self.capabilities, grant, action, perform)

    def verify(self, leaver: Leaver) -> Verification:
        with self.session() as client:
            login = self.resolve(client, leaver)
            if login.login is None:
                detail = Message.of(
                    "github.detail.no_login",
                    "no GitHub login to check for %(employee)s (%(how)s)",
                    employee=leaver.employee_id,
                    how=login.how,
                )
                return Verification([], [Check(CHECK_LOGIN, True, detail)])
            held = self.holdings(client, login.login)
        remaining = self._grants(login, held)
        return Verification(
            remaining, checks_of(self.config.organization, login.login, held, self.config.saml_sso)
        )

    # -- grants ----------------------------------------------------------------------

    def _manual(self, leaver: Leaver, login: Login) -> AccessGrant:
        assert login.problem is not None
        return AccessGrant(
            connector=self.name,
            kind=UNMAPPED,
            effect=Effect.SIGN_IN,
            system_id=f"{self.config.organization}:{leaver.employee_id}",
            account=leaver.employee_id,
            target=self.config.organization,
            label=login.problem,
        )

    def _grants(self, login: Login, held: Holdings) -> list[AccessGrant]:
        return grants_of(self.name, self.config.organization, login, held)

    # -- revoking ----------------------------------------------------------------------

    def _remove(self, client: httpx.Client, grant: AccessGrant) -> str:
        login = grant.revoke_data.get("login") or grant.account
        org = self.config.organization
        if grant.kind == ORGANIZATION:
            path = f"{self.org_path}/memberships/{segment(login)}"
            self._delete(client, path, f"{login} is no longer a member of {org} or invited")
            return f"removed {login} from {org} (DELETE /{path})"
        if grant.kind == TEAM:
            slug = grant.revoke_data["slug"]
            path = f"{self.org_path}/teams/{segment(slug)}/memberships/{segment(login)}"
            try:
                self.get_json(client, path)
            except NotFound as exc:
                raise AlreadyDone(f"{login} is no longer in team {org}/{slug}") from exc
            self._delete(client, path, f"{login} is no longer in team {org}/{slug}")
            return f"removed {login} from team {org}/{slug}"
        if grant.kind == REPOSITORY:
            repo = grant.revoke_data["repo"]
            if self.direct_permission(client, repo, login) is None:
                raise AlreadyDone(f"{login} is no longer a collaborator on {repo}")
            path = f"{repo_path(repo)}/collaborators/{segment(login)}"
            self._delete(client, path, f"{login} is no longer a collaborator on {repo}")
            return f"removed collaborator {login} from {repo}"
        if grant.kind == INVITATION:
            repo, invitation = grant.revoke_data["repo"], grant.revoke_data["invitation_id"]
            path = f"{repo_path(repo)}/invitations/{segment(invitation)}"
            self._delete(client, path, f"the invitation of {login} to {repo} is gone")
            return f"cancelled the invitation of {login} to {repo}"
        credential = grant.revoke_data["credential_id"]
        path = f"{self.org_path}/credential-authorizations/{segment(credential)}"
        self._delete(client, path, f"credential authorization {credential} is gone")
        return f"revoked the SAML SSO authorization of {grant.label} for {org}"

    def _delete(self, client: httpx.Client, path: str, gone: str) -> None:
        try:
            self._request(client, "DELETE", path)
        except NotFound as exc:
            raise AlreadyDone(gone) from exc


def from_config(
    config: Mapping[str, Any], dry_run: bool, *, transport: httpx.BaseTransport | None = None
) -> GitHubConnector:
    return GitHubConnector(
        GitHubConfig.model_validate(dict(config)), dry_run=dry_run, transport=transport
    )


KIND = ConnectorKind(
    kind="github",
    config=GitHubConfig,
    build=lambda config, dry_run: GitHubConnector(config, dry_run=dry_run),
    description="GitHub organisation: remove the member (teams and repositories go with it), "
    "outside-collaborator access, repository invitations and SAML SSO credentials",
)
