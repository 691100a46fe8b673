"""A real SCIM 2.0 server for the tests: scim2-server, in memory, served on 127.0.0.1.

The server is scim2-server's own test application (`BearerTokenApplication`: a static
Bearer token; wrong or missing tokens get 401), served as the demo serves its SCIM app
(`demo.scim_app`: the threaded wsgiref server of the `scim2-server` command). It starts in
a few milliseconds, so every test gets its own.

`PeerApplication` adds what the tests need to watch or provoke at the server:

- `seen`: every request as the server received it (method, path, query, If-Match, body);
- `interceptors`: functions in front of the SCIM handler, like a WSGI middleware, that
  answer a request themselves (a refused PATCH form, a 503) or act before it is served
  (another client changing the resource);
- `groups_attribute=True`: users carry the read-only `groups` attribute (RFC 7643 §4.1.2),
  which scim2-server does not compute itself, as many SCIM servers do.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any

import httpx
from scim2_models import ScimProvider
from scim2_server.memory import InMemoryStorage
from scim2_server.requests import ScimRequest
from scim2_server.responses import ScimResponse
from scim2_server.testserver.application import BearerTokenApplication

from connectors.base import Leaver
from demo.scim_app import ServedApp, provider, serve

TOKEN = "scim-test-token-0f6c"  # a throwaway token for a throwaway server
USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Group"
ERROR_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:Error"
PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
ADMIN_HEADER = "X-Test-Admin"  # requests of the test itself: not intercepted, not in `seen`

Interceptor = Callable[["PeerApplication", ScimRequest], ScimResponse | None]


@dataclass(frozen=True)
class Seen:
    """One request as the server received it (the Authorization header left out)."""

    method: str
    path: str
    query: dict[str, str]
    if_match: str | None
    body: Any


class PeerApplication(BearerTokenApplication):
    def __init__(self, provider: ScimProvider, *, groups_attribute: bool) -> None:
        self.memory = InMemoryStorage()
        super().__init__(self.memory, provider, bearer_tokens=[TOKEN])
        self.groups_attribute = groups_attribute
        self.seen: list[Seen] = []
        self.interceptors: list[Interceptor] = []

    def serve(self, request: ScimRequest) -> ScimResponse:
        if request.header(ADMIN_HEADER):  # the test's own seeding and reading back
            return super().serve(request)
        body = json.loads(request.body) if request.body else None
        if_match = request.header("If-Match")
        self.seen.append(Seen(request.method, request.path, dict(request.query), if_match, body))
        for intercept in list(self.interceptors):
            if (answer := intercept(self, request)) is not None:
                return self.finalize_response(request, answer)
        return super().serve(request)

    def finalize_response(self, request: ScimRequest, response: ScimResponse) -> ScimResponse:
        if self.groups_attribute and response.body is not None:
            for resource in [response.body, *response.body.get("Resources", [])]:
                if USER_SCHEMA in resource.get("schemas", []) and "id" in resource:
                    groups = self.groups_of(resource["id"])
                    if groups:
                        resource["groups"] = groups
        return super().finalize_response(request, response)

    def groups_of(self, user_id: str) -> list[dict[str, str]]:
        return [
            {
                "value": str(group.id),
                "display": str(getattr(group, "display_name", "")),
                "type": "direct",
            }
            for group in self.memory.resources
            if group.meta is not None
            and group.meta.resource_type == "Group"
            and any(m.value == user_id for m in getattr(group, "members", None) or [])
        ]

    def serve_internally(self, method: str, path: str, body: dict[str, Any]) -> ScimResponse:
        """A request from another client, served before the one being intercepted."""
        request = ScimRequest(
            method=method,
            base_url="http://peer.invalid/v2",
            path=path,
            headers={"Content-Type": "application/scim+json"},
            body=json.dumps(body).encode(),
        )
        return self.handler.handle(request)


def scim_error(status: int, detail: str, scim_type: str | None = None) -> ScimResponse:
    body: dict[str, Any] = {"schemas": [ERROR_SCHEMA], "status": str(status), "detail": detail}
    if scim_type:
        body["scimType"] = scim_type
    return ScimResponse(HTTPStatus(status), body)


# -- interceptors ---------------------------------------------------------------------


def refuse_path_form(app: PeerApplication, request: ScimRequest) -> ScimResponse | None:
    """A server that only takes the value-object form of PATCH replace on users."""
    if request.method != "PATCH" or not request.path.startswith("/Users/"):
        return None
    operations = json.loads(request.body).get("Operations", [])
    if any("path" in op for op in operations):
        return scim_error(400, "attribute paths are not supported here", "invalidPath")
    return None


def refuse_member_filter(app: PeerApplication, request: ScimRequest) -> ScimResponse | None:
    """A server that cannot filter groups on their members (as many SaaS SCIM APIs)."""
    if request.path == "/Groups" and "members" in request.query.get("filter", ""):
        return scim_error(400, "filtering on members is not supported", "invalidFilter")
    return None


def answer_with(
    status: int,
    *,
    retry_after: str | None = None,
    scim_type: str | None = None,
    method: str | None = None,
) -> Interceptor:
    """Answer every request (or every one with `method`) with `status` and no SCIM work."""

    def intercept(app: PeerApplication, request: ScimRequest) -> ScimResponse | None:
        if method is not None and request.method != method:
            return None
        answer = scim_error(status, f"answered {status} by the test", scim_type)
        if retry_after is not None:
            answer.headers["Retry-After"] = retry_after
        return answer

    return intercept


def answer_once(
    status: int, *, retry_after: str | None = None, method: str | None = None
) -> Interceptor:
    """Answer the next request (with `method`) with `status`, then serve as usual."""
    answer = answer_with(status, retry_after=retry_after, method=method)
    done = [False]

    def intercept(app: PeerApplication, request: ScimRequest) -> ScimResponse | None:
        if done[0]:
            return None
        response = answer(app, request)
        done[0] = response is not None
        return response

    return intercept


def concurrent_writer(times: int = 1) -> Interceptor:
    """Another client changes the resource just before each of the next `times` conditional
    writes arrives, so their If-Match no longer matches."""
    remaining = [times]

    def intercept(app: PeerApplication, request: ScimRequest) -> ScimResponse | None:
        if remaining[0] and request.method in ("PATCH", "DELETE") and request.header("If-Match"):
            remaining[0] -= 1
            attribute = "nickName" if request.path.startswith("/Users/") else "externalId"
            value = f"changed by someone else {remaining[0]}"
            change = {"op": "replace", "path": attribute, "value": value}
            answer = app.serve_internally(
                "PATCH", request.path, {"schemas": [PATCH_OP], "Operations": [change]}
            )
            assert answer.status < 300, answer.body
        return None

    return intercept


# -- the running server ---------------------------------------------------------------


@dataclass
class ScimPeer:
    base_url: str
    application: PeerApplication
    served: ServedApp
    token: str = TOKEN
    ca_file: Path | None = None
    _admin: httpx.Client | None = None

    @property
    def seen(self) -> list[Seen]:
        """What the connector sent, in order (the test's own requests left out)."""
        return self.application.seen

    def client(self) -> httpx.Client:
        """The test's own client: the server leaves its requests alone and out of `seen`."""
        if self._admin is None:
            self._admin = httpx.Client(
                base_url=self.base_url + "/",
                headers={"Authorization": f"Bearer {self.token}", ADMIN_HEADER: "yes"},
                timeout=5,
                verify=ssl.create_default_context(cafile=self.ca_file) if self.ca_file else False,
            )
        return self._admin

    def connector_config(self, **overrides: Any) -> dict[str, Any]:
        return {
            "name": "webapp",
            "kind": "scim",
            "base_url": self.base_url,
            "token": self.token,
            "timeout_seconds": 5,
            **overrides,
        }

    def post(self, endpoint: str, resource: dict[str, Any]) -> dict[str, Any]:
        response = self.client().post(endpoint, json=resource)
        assert response.status_code == 201, response.text
        return response.json()  # type: ignore[no-any-return]

    def get(self, path: str) -> dict[str, Any] | None:
        """A resource as the server holds it now; None when it does not exist."""
        response = self.client().get(path)
        if response.status_code == 404:
            return None
        assert response.status_code == 200, response.text
        return response.json()  # type: ignore[no-any-return]

    def state(self) -> dict[str, Any]:
        """Every user and group as the server holds them now, versions included."""
        found = {}
        for endpoint in ("Users", "Groups"):
            response = self.client().get(endpoint, params={"count": "1000"})
            assert response.status_code == 200, response.text
            found[endpoint] = sorted(
                response.json().get("Resources", []), key=lambda resource: resource["id"]
            )
        return found

    def member_ids(self, group_id: str) -> set[str]:
        group = self.get(f"Groups/{group_id}")
        assert group is not None
        return {m["value"] for m in group.get("members", [])}

    def stop(self) -> None:
        if not self.served.stopped:
            if self._admin is not None:
                self._admin.close()
            self.served.stop()


@contextmanager
def running_peer(
    *, etag: bool = True, groups_attribute: bool = False, tls: dict[str, Path] | None = None
) -> Iterator[ScimPeer]:
    """A fresh server; `tls` ({"ca", "cert", "key"} files) serves https instead of http."""
    application = PeerApplication(provider(etag=etag), groups_attribute=groups_attribute)
    served = serve(application, tls=(tls["cert"], tls["key"]) if tls else None)
    peer = ScimPeer(served.base_url, application, served)
    peer.ca_file = tls["ca"] if tls else None
    try:
        yield peer
    finally:
        peer.stop()


# -- the seeded organisation ----------------------------------------------------------


@dataclass
class ScimOrg:
    """A leaver in three of four groups, and colleagues who must keep their access."""

    leaver: Leaver
    leaver_id: str
    users: dict[str, str] = field(default_factory=dict)  # userName -> id
    groups: dict[str, str] = field(default_factory=dict)  # displayName -> id
    leaver_groups: tuple[str, ...] = ("all-staff", "deploy", "developers")


def user_resource(user_name: str, employee_id: str, name: str) -> dict[str, Any]:
    given, _, family = name.partition(" ")
    return {
        "schemas": [USER_SCHEMA],
        "userName": user_name,
        "externalId": employee_id,
        "displayName": name,
        "name": {"givenName": given, "familyName": family},
        "emails": [{"value": user_name, "type": "work", "primary": True}],
        "active": True,
    }


def seed_org(peer: ScimPeer) -> ScimOrg:
    """Seed the server over SCIM itself: POST /Users, then POST /Groups."""
    people = [
        ("jan.devries@example.test", "E1042", "Jan de Vries"),
        ("lisa.smit@example.test", "E1043", "Lisa Smit"),
        ("bram.mulder@example.test", "E1044", "Bram Mulder"),
        ("jan.devries@example.test.old", "E0042", "Jan de Vries"),  # a near miss
    ]
    users = {u: peer.post("Users", user_resource(u, e, n))["id"] for u, e, n in people}
    jan, lisa, bram = (users[u] for u, _, _ in people[:3])
    memberships = {
        "developers": [jan, lisa],
        "deploy": [bram, jan],
        "all-staff": [jan, lisa, bram],
        "finance": [lisa],
    }
    groups = {
        name: peer.post(
            "Groups",
            {
                "schemas": [GROUP_SCHEMA],
                "displayName": name,
                "members": [{"value": member, "type": "User"} for member in members],
            },
        )["id"]
        for name, members in memberships.items()
    }
    leaver = Leaver(employee_id="E1042", email=people[0][0], display_name="Jan de Vries")
    return ScimOrg(leaver=leaver, leaver_id=jan, users=users, groups=groups)
