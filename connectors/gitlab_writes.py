"""Writing to GitLab: remove a membership, revoke a personal access token, delete an SSH key,
block the user. Each answers with what it did, or raises AlreadyDone when there was nothing
left to do (GitLab's 404, a token already revoked, a user already blocked).

GitLab's own behaviour this follows (lib/api/members.rb, lib/api/users.rb):

- `DELETE /groups|projects/:id/members/:user_id` only finds *direct* members (404 for an
  inherited one), answers 204, and without `skip_subresources` also removes the user's direct
  memberships in the subgroups and projects below;
- removing the last owner of a group is refused with 403 "403 Forbidden" (administrators
  too): the error says to add another owner first;
- `POST /users/:id/block` answers 201 `true` when it blocked the user and 201 `null` when the
  user was already blocked.
"""

from __future__ import annotations

import httpx

from connectors.base import AlreadyDone, PermanentError
from connectors.gitlab_access import GROUP, GitLabAccess, role
from connectors.gitlab_client import Forbidden
from connectors.http import HttpError, NotFound

OWNER = 50


class GitLabWrites(GitLabAccess):
    """The GitLab writes a leaver's offboarding needs."""

    def remove_member(
        self, client: httpx.Client, kind: str, source: str, path: str, user: str, level: int
    ) -> str:
        where = f"{'groups' if kind == GROUP else 'projects'}/{source}"
        try:
            self._request(client, "DELETE", f"{where}/members/{user}")
        except NotFound as exc:
            raise AlreadyDone(f"user {user} is no longer a direct member of {path}") from exc
        except Forbidden as exc:
            if kind == GROUP and level >= OWNER and exc.status == 403 and exc.code is None:
                raise PermanentError(
                    f"{self.name}: GitLab refused to remove user {user} from {path} (HTTP 403). "
                    "They are an Owner there, and GitLab never removes a group's last owner: "
                    f"make someone else Owner of {path}, then retry. (Or the token lacks "
                    "Owner rights on the group.)"
                ) from exc
            raise
        return f"removed user {user} ({role(level)}) from {kind} {path} ({where})"

    def revoke_token(self, client: httpx.Client, token_id: str, name: str) -> str:
        path = f"personal_access_tokens/{token_id}"
        self._token_still_active(client, path, name)
        try:
            self._request(client, "DELETE", path)
        except NotFound as exc:
            raise AlreadyDone(f"token {name} ({path}) no longer exists") from exc
        except HttpError as exc:
            if exc.status != 400:  # GitLab: 400 "not revoked"; see whether it is now
                raise
            self._token_still_active(client, path, name)
            raise
        return f"revoked personal access token {name} ({path})"

    def _token_still_active(self, client: httpx.Client, path: str, name: str) -> None:
        try:
            token = self.get_object(client, path)
        except NotFound as exc:
            raise AlreadyDone(f"token {name} ({path}) no longer exists") from exc
        if token.get("revoked") or token.get("active") is False:
            raise AlreadyDone(f"token {name} ({path}) is already revoked or expired")

    def delete_key(self, client: httpx.Client, user: str, key_id: str, title: str) -> str:
        path = f"users/{user}/keys/{key_id}"
        try:
            self._request(client, "DELETE", path)
        except NotFound as exc:
            raise AlreadyDone(f"SSH key {title} ({path}) no longer exists") from exc
        return f"deleted SSH key {title} ({path})"

    def block(self, client: httpx.Client, user: str, username: str) -> str:
        try:
            current = self.user_state(client, int(user))
        except NotFound as exc:
            raise AlreadyDone(f"user {username} (users/{user}) no longer exists") from exc
        if current.blocked:
            raise AlreadyDone(f"user {username} is already {current.state}")
        try:
            response = self._request(client, "POST", f"users/{user}/block")
        except NotFound as exc:
            raise AlreadyDone(f"user {username} (users/{user}) no longer exists") from exc
        if response.content.strip() == b"null":  # 201 null: it was blocked already
            raise AlreadyDone(f"user {username} was already blocked (GitLab answered null)")
        return f"blocked user {username} (POST users/{user}/block)"
