"""What a leaver's GitHub holdings amount to: the grants (kinds, labels, cascades) and the
checks verification reports. Pure functions over what `connectors.github_access` read."""

from __future__ import annotations

from typing import Any

from connectors.base import AccessGrant, Check, Effect, Message
from connectors.github_access import Holdings, Login

ORGANIZATION, TEAM, REPOSITORY = "organization", "team", "repository"
INVITATION, CREDENTIAL, UNMAPPED = "repository-invitation", "credential", "unmapped"
_ORDER = {TEAM: 0, REPOSITORY: 1, INVITATION: 2, CREDENTIAL: 3, ORGANIZATION: 4, UNMAPPED: 5}


def grants_of(connector: str, org: str, login: Login, held: Holdings) -> list[AccessGrant]:
    """The grants the leaver's holdings amount to, in a stable order."""
    name = login.login or ""
    grants: list[AccessGrant] = []

    def add(
        kind: str,
        effect: Effect,
        system_id: Any,
        target: str,
        label: Message,
        parent: str | None = None,
        **data: str,
    ) -> AccessGrant:
        grant = AccessGrant(
            connector=connector,
            kind=kind,
            effect=effect,
            system_id=str(system_id),
            account=name,
            target=target,
            label=label,
            revoke_data={"login": name, **data},
            cascades_from=parent,
        )
        grants.append(grant)
        return grant

    parent = None
    member = held.membership is not None and held.membership.get("state") == "active"
    if held.membership is not None:
        role = str(held.membership.get("role", "member"))
        label = (
            Message.of("github.grant.member", "Member of %(org)s (%(role)s)", org=org, role=role)
            if member
            else Message.of("github.grant.invited", "Invited to %(org)s (pending)", org=org)
        )
        parent = add(ORGANIZATION, Effect.SIGN_IN, f"{org}:{login.user_id}", org, label).key
    for team, state in held.teams:
        team_name = str(team.get("name") or team["slug"])
        label = (
            Message.of("github.grant.team", "Member of team %(team)s", team=team_name)
            if state == "active"
            else Message.of("github.grant.team_pending", "Invited to team %(team)s", team=team_name)
        )
        add(
            TEAM,
            Effect.MEMBERSHIP,
            team["id"],
            f"{org}/{team['slug']}",
            label,
            parent,
            slug=str(team["slug"]),
        )
    for repo, permission in held.collaborations:
        full_name = str(repo["full_name"])
        label = (
            Message.of(
                "github.grant.collaborator",
                "Collaborator on %(repo)s (%(permission)s)",
                repo=full_name,
                permission=permission,
            )
            if member
            else Message.of(
                "github.grant.outside_collaborator",
                "Outside collaborator on %(repo)s (%(permission)s)",
                repo=full_name,
                permission=permission,
            )
        )
        add(
            REPOSITORY,
            Effect.MEMBERSHIP,
            repo["id"],
            full_name,
            label,
            parent if member else None,
            repo=full_name,
        )
    for invitation in held.invitations:
        full_name = str(invitation["repository"]["full_name"])
        label = Message.of(
            "github.grant.repository_invitation",
            "Invited to %(repo)s (%(permission)s, pending)",
            repo=full_name,
            permission=str(invitation.get("permissions", "")),
        )
        add(
            INVITATION,
            Effect.MEMBERSHIP,
            invitation["id"],
            full_name,
            label,
            repo=full_name,
            invitation_id=str(invitation["id"]),
        )
    for credential in held.credentials:
        kind = str(credential.get("credential_type", "credential"))
        title = str(
            credential.get("authorized_credential_title")
            or credential.get("authorized_credential_note")
            or credential.get("fingerprint")
            or f"…{credential.get('token_last_eight', '')}"
        )
        label = Message.of(
            "github.grant.credential",
            "SSO-authorised %(type)s %(title)s",
            type=kind,
            title=title,
        )
        add(
            CREDENTIAL,
            Effect.CREDENTIAL,
            credential["credential_id"],
            f"{kind}: {title}",
            label,
            credential_id=str(credential["credential_id"]),
        )
    return sorted(grants, key=lambda g: (_ORDER[g.kind], g.target.lower(), g.system_id))


CHECK_LOGIN = Message.of("github.check.login", "leaver's GitHub login")
CHECK_MEMBER = Message.of("github.check.not_member", "not a member of the organisation")
CHECK_REPOS = Message.of("github.check.no_repositories", "no repository access or invitation")
CHECK_SSO = Message.of("github.check.no_sso_credentials", "no SSO-authorised credentials")


def checks_of(org: str, login: str, held: Holdings, sso: bool) -> list[Check]:
    state = str(held.membership.get("state")) if held.membership else "none"
    teams = ", ".join(str(team["slug"]) for team, _ in held.teams) or "none"
    repos = sorted(
        {str(r["full_name"]) for r, _ in held.collaborations}
        | {str(i["repository"]["full_name"]) for i in held.invitations}
    )
    checks = [
        Check(
            CHECK_MEMBER,
            held.membership is None and not held.teams,
            Message.of(
                "github.detail.membership",
                "%(login)s in %(org)s: membership %(state)s; teams: %(teams)s",
                login=login,
                org=org,
                state=state,
                teams=teams,
            ),
        ),
        Check(
            CHECK_REPOS,
            not repos,
            Message.of(
                "github.detail.repositories",
                "repositories %(login)s is a direct collaborator on or invited to: %(repos)s",
                login=login,
                repos=", ".join(repos) or "none",
            ),
        ),
    ]
    if sso:
        ids = ", ".join(str(c["credential_id"]) for c in held.credentials) or "none"
        detail = Message.of(
            "github.detail.credentials",
            "credential authorizations of %(login)s: %(ids)s",
            login=login,
            ids=ids,
        )
        checks.append(Check(CHECK_SSO, not held.credentials, detail))
    return checks
