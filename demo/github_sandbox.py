"""A stateful stand-in for GitHub's REST API: one organisation, as an ASGI app.

Tests use it in-process (`GitHubSandbox.transport()`, an httpx transport, no socket);
`offboarding demo` serves it on 127.0.0.1 (`running_github_sandbox`). What the
organisation is and how each endpoint changes it: `demo.github_sandbox_api`; the JSON it
answers with: `demo.github_sandbox_json`. This module adds what every request meets at
GitHub (docs.github.com/rest: "Authenticating", "Rate limits for the REST API",
"Troubleshooting"):

- `Authorization: Bearer <token>` (or `token <token>`); otherwise 401 "Bad credentials".
  A read-only token gets 403 "Resource not accessible by personal access token" on writes.
- `POST /app/installations/{installation_id}/access_tokens` with a GitHub App JWT (RS256,
  `iss` the app id, at most ten minutes long) mints an installation token (`ghs_...`).
- `X-GitHub-Api-Version` other than 2022-11-28 is refused with 400.
- `x-ratelimit-limit/remaining/used/reset/resource` on every answer. Told to, it answers
  the primary limit (403, remaining 0, until `x-ratelimit-reset`) or the secondary one
  (429 or 403, "You have exceeded a secondary rate limit", `Retry-After`).
- Injected latency per request, and a record of every request with the time it arrived
  and whether it came before a deadline the sandbox had announced (Retry-After or reset).
"""

from __future__ import annotations

import asyncio
import math
import re
import secrets
import socket
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt
import uvicorn
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from demo import github_sandbox_json as js
from demo.github_sandbox_api import NOT_FOUND, Answer, GitHubOrg
from demo.github_sandbox_routes import route
from demo.organisation import LEAVER_ID

NAME = "GitHub (sandbox)"
API_VERSION = "2022-11-28"
LIMIT = 5000
SECONDARY = (
    "You have exceeded a secondary rate limit. Please wait a few minutes before you try again."
)


@dataclass(frozen=True)
class Seen:
    """One request as the sandbox received it."""

    at: float  # time.monotonic() on arrival
    method: str
    path: str
    status: int
    early: bool  # arrived before a Retry-After / reset deadline the sandbox had given


@dataclass
class App:
    """A GitHub App the sandbox knows: its id, public key and installation."""

    app_id: int
    public_key_pem: bytes
    installation_id: int
    token_seconds: int = 3600


@dataclass
class GitHubSandbox:
    """The organisation, who may call, and how the sandbox misbehaves when told to."""

    org: GitHubOrg = field(default_factory=GitHubOrg)
    tokens: dict[str, bool] = field(default_factory=dict)  # token -> may write
    app: App | None = None
    latency: float = 0.0
    seen: list[Seen] = field(default_factory=list)
    minted: list[str] = field(default_factory=list, repr=False)
    _throttles: deque[tuple[int, float]] = field(default_factory=deque)
    _remaining: int = LIMIT
    _reset: int = 0
    _not_before: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # -- telling it what to do ---------------------------------------------------------

    def throttle(self, status: int = 429, retry_after: float = 1, times: int = 1) -> None:
        """Answer the next `times` requests with the secondary rate limit (429 or 403)."""
        self._throttles.extend([(status, retry_after)] * times)

    def exhaust_primary(self, *, after: int, reset_in: float) -> None:
        """Let `after` more requests through (the last one says remaining 0), then answer
        the primary rate limit until `x-ratelimit-reset`, `reset_in` seconds from now."""
        self._remaining = after
        self._reset = math.ceil(time.time() + reset_in)

    @property
    def early_requests(self) -> int:
        return sum(1 for s in self.seen if s.early)

    # -- serving -----------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        body = await request.body()
        arrived, early = time.monotonic(), time.monotonic() < self._not_before
        if self.latency:
            await asyncio.sleep(self.latency)
        with self._lock:
            status, payload, headers = self._answer(request, body)
            self.seen.append(Seen(arrived, request.method, request.url.path, status, early))
        if payload is None:
            response: Response = Response(status_code=status, headers=headers)
        else:
            response = JSONResponse(payload, status_code=status, headers=headers)
        await response(scope, receive, send)

    def _answer(self, request: Request, body: bytes) -> tuple[int, Any, dict[str, str]]:
        now = time.time()
        if self._reset and now >= self._reset:
            self._remaining, self._reset = LIMIT, 0
        reset = self._reset or int(now) + 3600
        if self._throttles:
            status, retry_after = self._throttles.popleft()
            self._not_before = time.monotonic() + retry_after
            headers = self._limits(reset) | {"Retry-After": f"{retry_after:g}"}
            return status, js.error(SECONDARY, "/overview/rate-limits-for-the-rest-api"), headers
        if self._remaining <= 0:
            self._not_before = time.monotonic() + max(0.0, reset - now)
            message = "API rate limit exceeded for installation ID 1."
            return (
                403,
                js.error(message, "/overview/rate-limits-for-the-rest-api"),
                self._limits(reset),
            )
        self._remaining -= 1
        if self._remaining == 0:
            self._not_before = time.monotonic() + max(0.0, reset - now)
        status, payload, extra = self._dispatch(request, body)
        return status, payload, self._limits(reset) | extra

    def _limits(self, reset: int) -> dict[str, str]:
        remaining = max(self._remaining, 0)
        return {
            "x-ratelimit-limit": str(LIMIT),
            "x-ratelimit-remaining": str(remaining),
            "x-ratelimit-used": str(LIMIT - remaining),
            "x-ratelimit-reset": str(reset),
            "x-ratelimit-resource": "core",
        }

    def _dispatch(self, request: Request, body: bytes) -> tuple[int, Any, dict[str, str]]:
        version = request.headers.get("x-github-api-version")
        if version is not None and version != API_VERSION:
            message = f"API version {version} is not supported."
            return 400, js.error(message, "/about-the-rest-api/api-versions"), {}
        found = route(request.method, request.url.path)
        if found is None:
            return (*NOT_FOUND, {})
        handler, params, needs = found
        if needs == "jwt":
            return (*self._mint(request, int(params["installation_id"])), {})
        credentials = request.headers.get("authorization", "")
        token = re.sub(r"^(Bearer|token)\s+", "", credentials, flags=re.IGNORECASE)
        if not credentials or token not in self.tokens:
            return 401, js.error("Bad credentials", "/rest"), {}
        if needs == "write" and not self.tokens[token]:
            message = "Resource not accessible by personal access token"
            return 403, js.error(message, "/rest/orgs/members"), {}
        status, payload = handler(self.org, _base(request), params, request.query_params)
        if isinstance(payload, list):
            return _paged(request, status, payload)
        return status, payload, {}

    def _mint(self, request: Request, installation_id: int) -> Answer:
        if self.app is None or installation_id != self.app.installation_id:
            return NOT_FOUND
        assertion = request.headers.get("authorization", "").removeprefix("Bearer ")
        try:
            claims = jwt.decode(
                assertion,
                self.app.public_key_pem,
                algorithms=["RS256"],
                options={"require": ["iat", "exp", "iss"]},
                leeway=60,
            )
        except jwt.PyJWTError:
            return 401, js.error("A JSON web token could not be decoded", "/rest")
        if str(claims["iss"]) != str(self.app.app_id) or claims["exp"] - claims["iat"] > 660:
            return 401, js.error("'Issuer' claim ('iss') must be an Integer", "/rest")
        token = "ghs_" + secrets.token_urlsafe(27)
        self.tokens[token] = True
        self.minted.append(token)
        expires = time.gmtime(time.time() + self.app.token_seconds)
        return 201, {"token": token, "expires_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", expires)}

    def transport(self) -> httpx.BaseTransport:
        """An httpx transport that hands each request to this app, in this process."""
        return _InProcess(self)


def _base(request: Request) -> str:
    return f"{request.url.scheme}://{request.url.netloc}"


def _paged(request: Request, status: int, items: list[Any]) -> tuple[int, Any, dict[str, str]]:
    """One page of a list, and GitHub's `Link` header to the next and last pages."""
    per_page = min(int(request.query_params.get("per_page", 30)), 100)
    page = max(int(request.query_params.get("page", 1)), 1)
    last = max(1, math.ceil(len(items) / per_page))
    links = []
    for rel, number in (("next", page + 1), ("last", last)):
        if page < last:
            url = request.url.include_query_params(page=number, per_page=per_page)
            links.append(f'<{url}>; rel="{rel}"')
    headers = {"Link": ", ".join(links)} if links else {}
    return status, items[(page - 1) * per_page : page * per_page], headers


class _InProcess(httpx.BaseTransport):
    """Runs the ASGI app on this transport's own event loop, one request at a time."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self._asgi = httpx.ASGITransport(app=app)
        self._runner = asyncio.Runner()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        request.read()

        async def exchange() -> httpx.Response:
            response = await self._asgi.handle_async_request(request)
            content = await response.aread()
            return httpx.Response(response.status_code, headers=response.headers, content=content)

        return self._runner.run(exchange())

    def close(self) -> None:
        """Kept open: each connector session closes its transport, and the next reuses it."""


# -- the demo's organisation ---------------------------------------------------------------

LOGINS = {LEAVER_ID: "jdevries-acme", "E1006": "bmulder-acme", "E1002": "ddeboer-acme"}
LEAVER_LOGIN = LOGINS[LEAVER_ID]


def seed_demo(org: GitHubOrg) -> GitHubOrg:
    """Jan de Vries (E1042) is `jdevries-acme`: a member of acme-nl in the teams `backend`
    and `platform`, a direct collaborator (admin) on `legacy-portal`, with a personal access
    token and an SSH key authorised for the organisation's SAML single sign-on. A
    contractor, `kpietersen-ext`, is an outside collaborator on `legacy-portal`."""
    org.add_member(org.owner, "admin")
    for login in ("jdevries-acme", "bmulder-acme", "ddeboer-acme"):
        org.add_member(login)
    org.add_team("backend", "jdevries-acme", "bmulder-acme", name="Backend")
    org.add_team("platform", "jdevries-acme", "ddeboer-acme", name="Platform")
    org.add_team("support", "ddeboer-acme", name="Support")
    for repo in ("webshop", "infrastructure", "legacy-portal"):
        org.add_repo(repo)
    org.add_collaborator("legacy-portal", "jdevries-acme", "admin")
    org.add_collaborator("legacy-portal", "kpietersen-ext", "write")
    org.authorize_credential("jdevries-acme", "personal access token")
    org.authorize_credential("jdevries-acme", "SSH key")
    org.authorize_credential("bmulder-acme", "SSH key")
    return org


@dataclass(frozen=True)
class RunningSandbox:
    """The demo's GitHub sandbox, served over HTTP on 127.0.0.1."""

    base_url: str
    token: str = field(repr=False)
    sandbox: GitHubSandbox = field(repr=False)

    @property
    def organization(self) -> str:
        return self.sandbox.org.login

    def connector_config(self) -> dict[str, Any]:
        """A `kind: github` connector config for the sandbox."""
        return {
            "name": NAME,
            "kind": "github",
            "base_url": self.base_url,
            "organization": self.organization,
            "token": self.token,
            "logins": dict(LOGINS),
            "saml_sso": True,
        }

    def secrets(self) -> dict[str, str]:
        """The config keys that hold secrets, and their values."""
        return {"token": self.token}


@contextmanager
def running_github_sandbox(*, token: str | None = None) -> Iterator[RunningSandbox]:
    """Serve the seeded sandbox on 127.0.0.1 (a port the system picks); stopped on exit."""
    token = token or "github_pat_" + secrets.token_urlsafe(30)
    sandbox = GitHubSandbox(org=seed_demo(GitHubOrg()), tokens={token: True})
    with serve(sandbox) as base_url:
        yield RunningSandbox(base_url, token, sandbox)


@contextmanager
def serve(app: GitHubSandbox) -> Iterator[str]:
    """Serve `app` with uvicorn from a daemon thread; yields its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the GitHub sandbox did not start within 10 s")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=5)
        sock.close()
