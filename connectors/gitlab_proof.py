"""What `verify` shows as proof for a GitLab user: memberships left, the account's state, and,
with an admin token, active personal access tokens and SSH keys."""

from __future__ import annotations

from connectors.base import AccessGrant, Check, Message
from connectors.gitlab_access import GitLabUser

GROUP_MEMBER, PROJECT_MEMBER = "group-membership", "project-membership"
INHERITED, TOKEN, SSH_KEY = "inherited-membership", "personal-access-token", "ssh-key"


def checks(
    user: GitLabUser, state: GitLabUser, grants: list[AccessGrant], *, admin: bool
) -> list[Check]:
    def listed(*kinds: str) -> str:
        return ", ".join(g.target for g in grants if g.kind in kinds) or "none"

    places = listed(GROUP_MEMBER, PROJECT_MEMBER, INHERITED)
    checks = [
        Check(
            Message.of("gitlab.check.no_memberships", "no group or project membership"),
            places == "none",
            Message.of(
                "gitlab.detail.memberships",
                "%(user)s can reach: %(places)s",
                user=user.username,
                places=places,
            ),
        )
    ]
    if admin:
        tokens, keys = listed(TOKEN), listed(SSH_KEY)
        checks += [
            Check(
                Message.of("gitlab.check.blocked", "account blocked"),
                state.blocked,
                Message.of(
                    "gitlab.detail.state",
                    "%(user)s is %(state)s",
                    user=user.username,
                    state=state.state,
                ),
            ),
            Check(
                Message.of("gitlab.check.no_tokens", "no active personal access token"),
                tokens == "none",
                Message.of(
                    "gitlab.detail.tokens",
                    "active tokens of %(user)s: %(tokens)s",
                    user=user.username,
                    tokens=tokens,
                ),
            ),
            Check(
                Message.of("gitlab.check.no_keys", "no SSH key"),
                keys == "none",
                Message.of(
                    "gitlab.detail.keys",
                    "SSH keys of %(user)s: %(keys)s",
                    user=user.username,
                    keys=keys,
                ),
            ),
        ]
    return checks
