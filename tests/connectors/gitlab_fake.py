"""A stateful fake of GitLab's REST API v4, served on 127.0.0.1 by uvicorn in a thread.

No GitLab can run here (no Docker, no internet), so this fake reproduces what GitLab's own
code and documentation say, for the endpoints the connector uses:

- errors are GitLab's bodies: `{"message": "404 Not found"}` (ActiveRecord::RecordNotFound,
  lib/api/api.rb), `{"message": "404 User Not Found"}` (`not_found!('User')`),
  `{"message": "403 Forbidden"}` (AccessDeniedError and `authenticated_as_admin!`),
  `{"message": "401 Unauthorized"}` (no or unknown token), and a token without the scope
  `{"error": "insufficient_scope", "error_description": "The request requires higher
  privileges than provided by the access token.", "scope": "api"}` with 403;
- `DELETE /groups|projects/:id/members/:user_id` finds the member among the source's
  *direct* members (`source_members(source).find_by!`: an inherited member is 404), answers
  204, and, as `Members::DestroyService` does without `skip_subresources`, also removes the
  user's direct memberships in the descendant groups and their projects. Removing the last
  owner of a group is refused with 403 "403 Forbidden" (`GroupMemberPolicy`: `last_owner`
  prevents `destroy_group_member`, for administrators too);
- `POST /users/:id/block` is admin only; a fresh block answers 201 `true`, an already
  blocked user 201 with the body `null` (lib/api/users.rb `break if user.blocked?`; spec
  "returns a 201 if user is already blocked"); blocking oneself is 403;
- `GET /users?search=` matches private emails only for administrators;
  `/users/:id/memberships`, `/personal_access_tokens?user_id=` (another user's),
  `DELETE /users/:id/keys/:key_id` are admin only;
- `DELETE /personal_access_tokens/:id` answers 204, 404 for an unknown id, and 400 for one
  already revoked (the documented "400: not revoked"; the connector reads the token first,
  so it does not depend on this answer);
- lists are paginated by offset (`page`, `per_page` ≤ 100, default 20) with `X-Page`,
  `X-Next-Page`, `X-Total` and a `Link: <...>; rel="next"` header; 429 carries
  `Retry-After`, `RateLimit-Remaining: 0` and `RateLimit-Reset` (epoch seconds).

Every request is recorded with its arrival time (`seen`), so a test can assert that nothing
was sent before a Retry-After deadline.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import uvicorn
from starlette.applications import Starlette
from starlette.datastructures import URL
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

OWNER, MAINTAINER, DEVELOPER = 50, 40, 30
GROUP, PROJECT = "Namespace", "Project"
INSUFFICIENT_SCOPE = {
    "error": "insufficient_scope",
    "error_description": (
        "The request requires higher privileges than provided by the access token."
    ),
    "scope": "api",
}


class Refused(Exception):
    def __init__(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        self.status, self.body, self.headers = status, body, headers or {}


def message(status: int, text: str) -> Refused:
    return Refused(status, {"message": text})


@dataclass
class User:
    id: int
    username: str
    name: str
    email: str
    public_email: str = ""
    state: str = "active"
    is_admin: bool = False


@dataclass
class Node:
    """A group (kind Namespace) or a project."""

    kind: str
    id: int
    path: str
    full_path: str
    parent_id: int | None  # a group's parent group; a project's namespace


@dataclass
class Token:
    id: int
    user_id: int
    name: str
    scopes: list[str]
    secret: str = ""
    revoked: bool = False


@dataclass
class Key:
    id: int
    user_id: int
    title: str


@dataclass(frozen=True)
class Seen:
    at: float  # time.monotonic() on arrival
    method: str
    path: str
    query: str
    status: int


@dataclass
class GitLabState:
    users: dict[int, User] = field(default_factory=dict)
    nodes: dict[tuple[str, int], Node] = field(default_factory=dict)
    members: dict[tuple[str, int], dict[int, int]] = field(default_factory=dict)
    tokens: dict[int, Token] = field(default_factory=dict)
    keys: dict[int, Key] = field(default_factory=dict)
    next_id: int = 100
    current_secret: str = ""  # the token of the request being answered

    def new_id(self) -> int:
        self.next_id += 1
        return self.next_id

    # -- seeding ----------------------------------------------------------------------

    def add_user(self, username: str, email: str, **extra: Any) -> User:
        user = User(self.new_id(), username, extra.pop("name", username.title()), email, **extra)
        self.users[user.id] = user
        return user

    def add_group(self, path: str, parent: Node | None = None) -> Node:
        full = f"{parent.full_path}/{path}" if parent else path
        node = Node(GROUP, self.new_id(), path, full, parent.id if parent else None)
        self.nodes[(GROUP, node.id)] = node
        self.members[(GROUP, node.id)] = {}
        return node

    def add_project(self, path: str, namespace: Node) -> Node:
        node = Node(PROJECT, self.new_id(), path, f"{namespace.full_path}/{path}", namespace.id)
        self.nodes[(PROJECT, node.id)] = node
        self.members[(PROJECT, node.id)] = {}
        return node

    def add_member(self, node: Node, user: User, level: int = DEVELOPER) -> None:
        self.members[(node.kind, node.id)][user.id] = level

    def add_token(self, user: User, name: str, scopes: list[str], secret: str = "") -> Token:
        token = Token(self.new_id(), user.id, name, scopes, secret)
        self.tokens[token.id] = token
        return token

    def add_key(self, user: User, title: str) -> Key:
        key = Key(self.new_id(), user.id, title)
        self.keys[key.id] = key
        return key

    # -- the hierarchy ----------------------------------------------------------------

    def ancestors(self, node: Node) -> list[Node]:
        """The groups above a node, nearest first."""
        found: list[Node] = []
        parent = node.parent_id
        while parent is not None:
            group = self.nodes[(GROUP, parent)]
            found.append(group)
            parent = group.parent_id
        return found

    def descendants(self, group: Node) -> list[Node]:
        return [n for n in self.nodes.values() if group in self.ancestors(n)]

    def effective_level(self, node: Node, user_id: int) -> int:
        chain = [node, *self.ancestors(node)]
        return max((self.members[(n.kind, n.id)].get(user_id, 0) for n in chain), default=0)

    def snapshot(self) -> Any:
        """Everything the connector could change, comparable."""
        return json.loads(
            json.dumps(
                {
                    "users": {u.id: u.state for u in self.users.values()},
                    "members": {f"{k[0]}/{k[1]}": v for k, v in self.members.items()},
                    "tokens": {t.id: t.revoked for t in self.tokens.values()},
                    "keys": sorted(self.keys),
                }
            )
        )


class FakeGitLab:
    """The ASGI app with its state, the API tokens it accepts and what it has seen."""

    def __init__(self, state: GitLabState) -> None:
        self.state = state
        self.api_tokens: dict[str, tuple[int, list[str]]] = {}  # secret -> (user, scopes)
        self.seen: list[Seen] = []
        self.throttles: list[int] = []
        self.limit_next: float | None = None  # seconds: next success says Remaining 0
        self.lock = threading.Lock()
        self.app = Starlette(routes=[Route("/api/v4/{path:path}", self.handle, methods=_ALL)])

    def allow(self, secret: str, user: User, scopes: list[str]) -> None:
        self.api_tokens[secret] = (user.id, scopes)
        self.state.add_token(user, "offboarding", scopes, secret)

    def throttle_once(self, seconds: int) -> None:
        self.throttles.append(seconds)

    async def handle(self, request: Request) -> Response:
        raw = request.scope["raw_path"].decode().split("?")[0]
        path = raw.removeprefix("/api/v4/").rstrip("/")
        with self.lock:
            status, body, headers = self._answer(request, path)
            if self.limit_next is not None and status < 300:
                headers["RateLimit-Remaining"] = "0"
                headers["RateLimit-Reset"] = str(int(time.time() + self.limit_next))
                self.limit_next = None
            seen = Seen(time.monotonic(), request.method, path, request.url.query, status)
            self.seen.append(seen)
        content = b"" if status == 204 else json.dumps(body).encode()
        return Response(content, status, headers, media_type="application/json")

    def _answer(self, request: Request, path: str) -> tuple[int, Any, dict[str, str]]:
        if self.throttles:
            seconds = self.throttles.pop(0)
            headers = {
                "Retry-After": str(seconds),
                "RateLimit-Remaining": "0",
                "RateLimit-Reset": str(int(time.time()) + seconds),
            }
            return 429, {"message": "Retry later"}, headers
        try:
            caller, scopes = self._caller(request)
            needed = "read_api" if request.method == "GET" else "api"
            if "api" not in scopes and needed not in scopes:
                raise Refused(403, INSUFFICIENT_SCOPE)
            parts = [unquote(p) for p in path.split("/")]
            query = dict(request.query_params)
            return route(self.state, caller, request.method, parts, query, request.url)
        except Refused as refused:
            return refused.status, refused.body, refused.headers

    def _caller(self, request: Request) -> tuple[User, list[str]]:
        secret = request.headers.get("PRIVATE-TOKEN") or ""
        if not secret and request.headers.get("Authorization", "").startswith("Bearer "):
            secret = request.headers["Authorization"].removeprefix("Bearer ")
        if secret not in self.api_tokens:
            raise message(401, "401 Unauthorized")
        user_id, scopes = self.api_tokens[secret]
        self.state.current_secret = secret
        token = next((t for t in self.state.tokens.values() if t.secret == secret), None)
        if token is not None and token.revoked:
            raise message(401, "401 Unauthorized")
        return self.state.users[user_id], scopes


_ALL = ["GET", "POST", "PUT", "DELETE", "HEAD"]


@dataclass
class RunningGitLab:
    fake: FakeGitLab
    base_url: str

    @property
    def state(self) -> GitLabState:
        return self.fake.state


@contextmanager
def serving(fake: FakeGitLab) -> Iterator[RunningGitLab]:
    """Serve the fake on a free loopback port until the block ends."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(fake.app, log_level="warning", lifespan="off", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the fake GitLab did not start within 10 s")
        time.sleep(0.005)
    try:
        yield RunningGitLab(fake, f"http://127.0.0.1:{port}/api/v4")
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


# -- the endpoints ---------------------------------------------------------------------

Answer = tuple[int, Any, dict[str, str]]


def route(
    state: GitLabState, caller: User, method: str, parts: list[str], query: dict[str, str], url: URL
) -> Answer:
    head, rest = parts[0], parts[1:]
    if head == "user" and not rest and method == "GET":
        return 200, _user_json(caller, full=True, admin=caller.is_admin), {}
    if head == "users":
        return _users(state, caller, method, rest, query, url)
    if head == "personal_access_tokens":
        return _tokens(state, caller, method, rest, query, url)
    if head in ("groups", "projects") and rest:
        return _sources(state, caller, method, head, rest, query, url)
    raise message(404, "404 Not Found")


def _page(items: list[Any], query: dict[str, str], url: URL) -> Answer:
    per_page = min(int(query.get("per_page", 20)), 100)
    page = max(int(query.get("page", 1)), 1)
    chunk = items[(page - 1) * per_page : page * per_page]
    more = page * per_page < len(items)
    headers = {"X-Page": str(page), "X-Per-Page": str(per_page), "X-Total": str(len(items))}
    headers["X-Next-Page"] = str(page + 1) if more else ""
    if more:
        headers["Link"] = f'<{url.include_query_params(page=page + 1)}>; rel="next"'
    return 200, chunk, headers


def _admin(caller: User) -> None:
    if not caller.is_admin:
        raise message(403, "403 Forbidden")


def _user_json(user: User, *, full: bool = False, admin: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": user.id,
        "username": user.username,
        "name": user.name,
        "state": user.state,
        "web_url": f"https://gitlab.example.test/{user.username}",
    }
    if full:
        body["public_email"] = user.public_email
    if admin:  # administrators see private emails and is_admin (UserWithAdmin)
        body.update(email=user.email, is_admin=user.is_admin)
    return body


def _find_user(state: GitLabState, raw: str) -> User:
    user = state.users.get(int(raw)) if raw.isdigit() else None
    if user is None:
        raise message(404, "404 User Not Found")
    return user


def _users(
    state: GitLabState, caller: User, method: str, rest: list[str], query: dict[str, str], url: URL
) -> Answer:
    admin = caller.is_admin
    if not rest and method == "GET":
        found = list(state.users.values())
        if "username" in query:
            found = [u for u in found if u.username.lower() == query["username"].lower()]
        if "search" in query:
            term = query["search"].lower()

            def matches(u: User) -> bool:
                emails = [u.public_email] + ([u.email] if admin else [])
                fields = [u.username, u.name, *(e for e in emails if e)]
                return any(term in f.lower() for f in fields)

            found = [u for u in found if matches(u)]
        return _page([_user_json(u, full=True, admin=admin) for u in found], query, url)
    user = _find_user(state, rest[0])
    tail = rest[1:]
    if not tail and method == "GET":
        return 200, _user_json(user, full=True, admin=admin), {}
    if tail == ["memberships"] and method == "GET":
        _admin(caller)
        rows = [
            {
                "source_id": node_id,
                "source_name": state.nodes[(kind, node_id)].path,
                "source_type": kind,
                "access_level": levels[user.id],
            }
            for (kind, node_id), levels in state.members.items()
            if user.id in levels
        ]
        return _page(rows, query, url)
    if tail == ["keys"] and method == "GET":  # public: no admin needed
        keys = [k for k in state.keys.values() if k.user_id == user.id]
        return _page(
            [{"id": k.id, "title": k.title, "key": "ssh-ed25519 AAAA"} for k in keys], query, url
        )
    if len(tail) == 2 and tail[0] == "keys" and method == "DELETE":
        _admin(caller)
        key = state.keys.get(int(tail[1])) if tail[1].isdigit() else None
        if key is None or key.user_id != user.id:
            raise message(404, "404 Key Not Found")
        del state.keys[key.id]
        return 204, None, {}
    if tail == ["block"] and method == "POST":
        _admin(caller)
        if user.state == "ldap_blocked":
            raise message(403, "403 Forbidden - LDAP blocked users cannot be modified by the API")
        if user.id == caller.id:
            raise message(
                403, "403 Forbidden - The API initiating user cannot be blocked by the API"
            )
        if user.state == "blocked":
            return 201, None, {}  # `break if user.blocked?`: 201 with the body null
        user.state = "blocked"
        return 201, True, {}
    raise message(404, "404 Not Found")


def _token_json(token: Token) -> dict[str, Any]:
    return {
        "id": token.id,
        "name": token.name,
        "user_id": token.user_id,
        "scopes": token.scopes,
        "revoked": token.revoked,
        "active": not token.revoked,
        "expires_at": None,
    }


def _tokens(
    state: GitLabState, caller: User, method: str, rest: list[str], query: dict[str, str], url: URL
) -> Answer:
    if not rest and method == "GET":
        user_id = int(query.get("user_id", caller.id))
        if user_id != caller.id and not caller.is_admin:
            raise message(401, "401 Unauthorized")
        found = [t for t in state.tokens.values() if t.user_id == user_id]
        if query.get("state") == "active":
            found = [t for t in found if not t.revoked]
        return _page([_token_json(t) for t in found], query, url)
    if rest == ["self"] and method == "GET":
        return 200, _token_json(_own_token(state, caller)), {}
    token = state.tokens.get(int(rest[0])) if rest[0].isdigit() else None
    if token is None or (token.user_id != caller.id and not caller.is_admin):
        raise message(404, "404 Not found")
    if method == "GET":
        return 200, _token_json(token), {}
    if method == "DELETE":
        if token.revoked:
            raise message(400, "400 Bad request")
        token.revoked = True
        return 204, None, {}
    raise message(405, "405 Method Not Allowed")


def _own_token(state: GitLabState, caller: User) -> Token:
    return next(t for t in state.tokens.values() if t.secret == state.current_secret)


def _node_json(state: GitLabState, node: Node) -> dict[str, Any]:
    if node.kind == GROUP:
        return {
            "id": node.id,
            "path": node.path,
            "name": node.path,
            "full_path": node.full_path,
            "parent_id": node.parent_id,
        }
    namespace = state.nodes[(GROUP, node.parent_id or 0)]
    return {
        "id": node.id,
        "path": node.path,
        "name": node.path,
        "path_with_namespace": node.full_path,
        "namespace": {"id": namespace.id, "full_path": namespace.full_path, "kind": "group"},
    }


def _find_node(state: GitLabState, kind: str, raw: str) -> Node:
    for node in state.nodes.values():
        if node.kind == kind and (str(node.id) == raw or node.full_path == raw):
            return node
    raise message(404, f"404 {'Group' if kind == GROUP else 'Project'} Not Found")


def _member_json(state: GitLabState, user_id: int, level: int) -> dict[str, Any]:
    return {**_user_json(state.users[user_id]), "access_level": level, "expires_at": None}


def _sources(
    state: GitLabState,
    caller: User,
    method: str,
    head: str,
    rest: list[str],
    query: dict[str, str],
    url: URL,
) -> Answer:
    node = _find_node(state, GROUP if head == "groups" else PROJECT, rest[0])
    tail = rest[1:]
    if not tail and method == "GET":
        return 200, _node_json(state, node), {}
    if tail == ["descendant_groups"] and method == "GET":
        below = [n for n in state.descendants(node) if n.kind == GROUP]
        return _page([_node_json(state, n) for n in below], query, url)
    if tail == ["projects"] and method == "GET":
        nested = query.get("include_subgroups") == "true"
        found = [
            n
            for n in (state.descendants(node) if nested else state.nodes.values())
            if n.kind == PROJECT and (nested or n.parent_id == node.id)
        ]
        return _page([_node_json(state, n) for n in found], query, url)
    if tail in (["members"], ["members", "all"]) and method == "GET":
        wanted = {int(u) for u in query.get("user_ids", "").split(",") if u.strip().isdigit()}
        if tail == ["members"]:
            levels = dict(state.members[(node.kind, node.id)])
        else:
            users = {
                u for n in [node, *state.ancestors(node)] for u in state.members[(n.kind, n.id)]
            }
            levels = {u: state.effective_level(node, u) for u in users}
        rows = [
            _member_json(state, u, lvl)
            for u, lvl in sorted(levels.items())
            if not wanted or u in wanted
        ]
        return _page(rows, query, url)
    if len(tail) == 2 and tail[0] == "members" and method == "DELETE":
        return _remove_member(state, caller, node, tail[1], query)
    raise message(404, "404 Not Found")


def _remove_member(
    state: GitLabState, caller: User, node: Node, raw_user: str, query: dict[str, str]
) -> Answer:
    direct = state.members[(node.kind, node.id)]
    user_id = int(raw_user) if raw_user.isdigit() else -1
    if user_id not in direct:  # `source_members(source).find_by!(user_id:)`: direct only
        raise message(404, "404 Not found")
    needed = OWNER if node.kind == GROUP else MAINTAINER
    if not caller.is_admin and state.effective_level(node, caller.id) < needed:
        raise message(403, "403 Forbidden")
    if node.kind == GROUP and direct[user_id] == OWNER:
        chain = [node] if node.parent_id is None else [node, *state.ancestors(node)]
        owners = {
            u for n in chain for u, lvl in state.members[(GROUP, n.id)].items() if lvl == OWNER
        }
        if owners == {user_id}:  # GroupMemberPolicy: the last owner cannot be removed
            raise message(403, "403 Forbidden")
    del direct[user_id]
    if node.kind == GROUP and query.get("skip_subresources") != "true":
        for below in state.descendants(node):
            state.members[(below.kind, below.id)].pop(user_id, None)
    return 204, None, {}
