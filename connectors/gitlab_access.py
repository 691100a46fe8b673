"""Reading a leaver's GitLab access: who they are, and where they are a member.

Finding the user (`GitLabAccess.find`), in this order:

1. the mapping table `usernames` (employee id -> username), read with `GET /users?username=`;
2. with `match_email`, `GET /users?search=<email>`, keeping only users whose email is
   exactly the leaver's (an admin token sees private emails; another token only the
   public email a user chose to show).

No user, or more than one, is `Unmatched`: the connector then lists nothing (or, with
`require_mapping`, one MANUAL step), and refuses to guess between several.

Memberships (`GitLabAccess.places`): with an admin token, the direct ones from
`GET /users/:id/memberships`, and below each direct group its descendant groups and
projects, where the user's access is inherited. Without one, the configured top-level
groups are walked: `/groups/:id/descendant_groups`, `/groups/:id/projects?include_subgroups`,
and for each group or project `/members/all?user_ids=` (any access) against `/members?user_ids=`
(direct). `cascades_from` is computed from the full paths: GitLab's member removal also
removes the user's direct memberships in the subgroups and projects below
(`skip_subresources` is false by default), and inherited access goes with the membership
it comes from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from connectors.base import Leaver
from connectors.gitlab_client import GitLabClient, segment

GROUP, PROJECT = "group", "project"
BLOCKED_STATES = frozenset({"blocked", "ldap_blocked", "banned", "blocked_pending_approval"})
ROLES = {5: "Minimal access", 10: "Guest", 15: "Planner", 20: "Reporter", 30: "Developer"}
ROLES |= {40: "Maintainer", 50: "Owner"}


def role(level: int) -> str:
    return ROLES.get(level, f"access level {level}")


@dataclass(frozen=True)
class GitLabUser:
    id: int
    username: str
    state: str

    @property
    def blocked(self) -> bool:
        return self.state in BLOCKED_STATES

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> GitLabUser:
        return cls(int(body["id"]), str(body.get("username") or body["id"]), str(body.get("state")))


class Unmatched(Exception):
    """The leaver is not one GitLab user: `reason` says why, `candidates` who came close."""

    def __init__(self, reason: str, candidates: tuple[str, ...] = ()) -> None:
        super().__init__(reason)
        self.reason = reason
        self.candidates = candidates


@dataclass(frozen=True)
class Place:
    """A group or project the user can reach, directly or through a parent group."""

    kind: str  # GROUP or PROJECT
    id: int
    full_path: str
    level: int
    direct: bool

    @property
    def system_id(self) -> str:
        return f"{self.kind}:{self.id}"

    @property
    def api_path(self) -> str:
        return f"{'groups' if self.kind == GROUP else 'projects'}/{self.id}"

    def is_below(self, group: Place) -> bool:
        return group.kind == GROUP and self.full_path.startswith(group.full_path + "/")


class GitLabAccess(GitLabClient):
    """The reads the inventory needs."""

    def find(self, client: httpx.Client, leaver: Leaver) -> GitLabUser:
        username = self.config.usernames.get(leaver.employee_id)
        if username is not None:
            found = self.list_all(client, "users", {"username": username})
            if len(found) != 1:
                raise Unmatched(
                    f"the usernames table maps {leaver.employee_id} to {username!r}, which "
                    f"GitLab does not know"
                )
            return GitLabUser.from_json(found[0])
        if not self.config.match_email:
            raise Unmatched(f"employee {leaver.employee_id} is not in the usernames table")
        wanted = leaver.email.strip().lower()
        found = [
            user
            for user in self.list_all(client, "users", {"search": leaver.email})
            if wanted in {str(user.get(k) or "").strip().lower() for k in ("email", "public_email")}
        ]
        if not found:
            how = "email" if self.config.admin else "public email"
            raise Unmatched(f"no GitLab user has the {how} {leaver.email}")
        if len(found) > 1:
            names = tuple(sorted(str(u.get("username")) for u in found))
            raise Unmatched(
                f"{len(found)} GitLab users have the email {leaver.email}: {', '.join(names)}",
                names,
            )
        return GitLabUser.from_json(found[0])

    def user_state(self, client: httpx.Client, user_id: int) -> GitLabUser:
        return GitLabUser.from_json(self.get_object(client, f"users/{user_id}"))

    # -- memberships ------------------------------------------------------------------

    def places(self, client: httpx.Client, user: GitLabUser) -> list[Place]:
        found = self._admin_places(client, user) if self.config.admin else []
        if not self.config.admin:
            for group in self.config.groups:
                found.extend(self._walk(client, user, group))
        unique = {p.system_id: p for p in found if p.direct}
        for place in found:  # inherited: the highest role of the groups above counts
            known = unique.get(place.system_id)
            if known is None or (not known.direct and known.level < place.level):
                unique[place.system_id] = place
        return sorted(unique.values(), key=lambda p: (p.full_path.lower(), p.kind))

    def _admin_places(self, client: httpx.Client, user: GitLabUser) -> list[Place]:
        direct: list[Place] = []
        for row in self.list_all(client, f"users/{user.id}/memberships"):
            source, level = int(row["source_id"]), int(row.get("access_level") or 0)
            if row.get("source_type") == "Namespace":
                group = self.get_object(client, f"groups/{source}")
                direct.append(Place(GROUP, source, str(group["full_path"]), level, True))
            else:
                project = self.get_object(client, f"projects/{source}")
                path = str(project["path_with_namespace"])
                direct.append(Place(PROJECT, source, path, level, True))
        scopes = [self._full_path(client, g) for g in self.config.groups]
        if scopes:
            direct = [p for p in direct if any(_within(p.full_path, s) for s in scopes)]
        below: list[Place] = []
        for member_of in (p for p in direct if p.kind == GROUP):
            for kind, item in self._descendants(client, member_of.id):
                path = str(item.get("full_path") or item.get("path_with_namespace"))
                below.append(Place(kind, int(item["id"]), path, member_of.level, False))
        return direct + below

    def _walk(self, client: httpx.Client, user: GitLabUser, top: str) -> list[Place]:
        root = self.get_object(client, f"groups/{segment(top)}")
        nodes = [(GROUP, root), *self._descendants(client, int(root["id"]))]
        found: list[Place] = []
        for kind, item in nodes:
            where = f"{'groups' if kind == GROUP else 'projects'}/{item['id']}"
            query = {"user_ids": str(user.id)}
            every = _level(self.list_all(client, f"{where}/members/all", query), user.id)
            if every is None:
                continue
            direct = _level(self.list_all(client, f"{where}/members", query), user.id)
            path = str(item.get("full_path") or item.get("path_with_namespace"))
            found.append(Place(kind, int(item["id"]), path, direct or every, direct is not None))
        return found

    def _descendants(self, client: httpx.Client, group_id: int) -> list[tuple[str, dict[str, Any]]]:
        groups = self.list_all(client, f"groups/{group_id}/descendant_groups")
        projects = self.list_all(
            client, f"groups/{group_id}/projects", {"include_subgroups": "true", "simple": "true"}
        )
        return [(GROUP, g) for g in groups] + [(PROJECT, p) for p in projects]

    def _full_path(self, client: httpx.Client, group: str) -> str:
        return str(self.get_object(client, f"groups/{segment(group)}")["full_path"])

    # -- credentials ------------------------------------------------------------------

    def tokens(self, client: httpx.Client, user: GitLabUser) -> list[dict[str, Any]]:
        query = {"user_id": str(user.id), "state": "active"}
        found = self.list_all(client, "personal_access_tokens", query)
        return [t for t in found if t.get("active", True) and not t.get("revoked")]

    def keys(self, client: httpx.Client, user: GitLabUser) -> list[dict[str, Any]]:
        return self.list_all(client, f"users/{user.id}/keys")


def source_of(place: Place, places: list[Place]) -> Place | None:
    """The nearest group above `place` where the user is a direct member."""
    above = [g for g in places if g.direct and place.is_below(g)]
    return max(above, key=lambda g: len(g.full_path), default=None)


def _within(path: str, scope: str) -> bool:
    return path == scope or path.startswith(scope + "/")


def _level(members: list[dict[str, Any]], user_id: int) -> int | None:
    return next((int(m.get("access_level") or 0) for m in members if m.get("id") == user_id), None)
