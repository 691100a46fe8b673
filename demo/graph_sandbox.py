"""A stateful stand-in for a Microsoft Entra tenant: the Microsoft Graph v1.0 calls the Entra
connector makes, and the Microsoft identity platform's token endpoint, as one ASGI app.

No tenant runs here, so the connector's tests and `offboarding demo` talk to this. It keeps
users, groups, licences, app role assignments, authentication methods and devices, and
answers the way Microsoft's documentation says Graph does (learn.microsoft.com/graph):

- errors: `{"error": {"code", "message", "innerError": {"date", "request-id",
  "client-request-id"}}}` ("Microsoft Graph error responses and resource types");
  `Request_ResourceNotFound` (404), `Authorization_RequestDenied` (403, "Insufficient
  privileges to complete the operation."), `InvalidAuthenticationToken` (401),
  `Request_BadRequest` (400) for member changes of dynamic, on-premises-synced and
  mail-enabled groups ("Remove member", group-delete-members; the "Cannot Update a
  mail-enabled security groups and or distribution list." refusal) and for a change to
  `accountEnabled` of a user mastered on-premises; removing a non-member answers 404
  ("One or more removed object references do not exist ...");
- a default MFA phone (or other) method cannot be deleted while the user has others
  ("Delete phoneAuthenticationMethod": "If the phone number is the user's default ...
  it can't be deleted"); the password method has no delete;
- throttling: 429 with `Retry-After` in seconds, for a request and for single items of a
  `$batch` ("Microsoft Graph throttling guidance", "JSON batching": at most 20 requests, a
  throttled item carries its own status and Retry-After);
- the token endpoint `/{tenant}/oauth2/v2.0/token` (client credentials, with a secret or a
  client assertion JWT signed by the app's certificate, RS256 + x5t or PS256 + x5t#S256,
  checked against the registered certificate; AADSTS errors as the platform sends them),
  and the discovery documents MSAL reads first (`/{tenant}/v2.0/.well-known/
  openid-configuration`, `/common/discovery/instance`, see msal/authority.py).

Each app registration has its own application permissions, so a missing permission gives
Graph's 403. Tokens live `token_lifetime` seconds and can be expired at will. Every
request is recorded with its time (`requests`), and a request that arrives before a
Retry-After deadline the tenant gave is counted in `early_requests`.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, unquote

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from demo.graph_sandbox_data import (
    METHOD_SEGMENTS,
    PASSWORD_METHOD_ID,
    PERMISSIONS,
    GraphData,
    Reply,
    error,
)

__all__ = ["AppRegistration", "GraphTenant", "Reply", "RequestRecord"]

TOKEN_PATH = re.compile(r"^/(?P<tenant>[^/]+)/oauth2/v2\.0/token$")
OIDC_PATH = re.compile(r"^/(?P<tenant>[^/]+)/v2\.0/\.well-known/openid-configuration$")
GRAPH_SCOPE = "https://graph.microsoft.com/.default"
BATCH_LIMIT = 20


@dataclass
class AppRegistration:
    """An app registration with its credentials and granted application permissions."""

    client_id: str
    permissions: set[str]
    secret: str | None = None
    certificate: x509.Certificate | None = None


@dataclass(frozen=True)
class RequestRecord:
    """One request the tenant received (a `$batch` item is recorded on its own too)."""

    at: float  # time.monotonic()
    method: str
    path: str
    status: int
    in_batch: bool = False
    early: bool = False  # sent before a Retry-After deadline this tenant gave


@dataclass
class _Token:
    client_id: str
    expires_at: float  # time.monotonic()


@dataclass
class GraphTenant:
    """The tenant's state and the HTTP semantics of the calls made to it.

    `handle(method, path, query, headers, body)` answers one request; the ASGI app in
    `demo.graph_sandbox_serve` puts it on the wire.
    """

    tenant_id: str = "sandbox"
    token_lifetime: int = 3599
    data: GraphData = field(default_factory=GraphData)
    apps: dict[str, AppRegistration] = field(default_factory=dict)
    clock: Callable[[], float] = time.monotonic
    requests: list[RequestRecord] = field(default_factory=list)
    early_requests: int = 0
    issuer_host: str = "https://login.microsoftonline.com"
    _tokens: dict[str, _Token] = field(default_factory=dict)
    _throttle_next: list[int] = field(default_factory=list)  # Retry-After of the next answers
    _throttle_items: list[int] = field(default_factory=list)  # for the next $batch items
    _deadline: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # -- what tests and the demo set up ------------------------------------------------

    def register_app(self, client_id: str, permissions: set[str], **credential: Any) -> None:
        self.apps[client_id] = AppRegistration(client_id, set(permissions), **credential)

    def throttle_next(self, retry_after: int, times: int = 1) -> None:
        """The next `times` Graph requests are answered 429 with this Retry-After."""
        self._throttle_next.extend([retry_after] * times)

    def throttle_batch_items(self, retry_after: int, count: int) -> None:
        """The next `count` items inside `$batch` requests are answered 429 (the batch 200)."""
        self._throttle_items.extend([retry_after] * count)

    def expire_tokens(self) -> None:
        """Every access token issued so far is expired from now on."""
        for token in self._tokens.values():
            token.expires_at = 0.0

    # -- one request -----------------------------------------------------------------

    def handle(
        self, method: str, path: str, query: str, headers: dict[str, str], body: bytes
    ) -> Reply:
        with self._lock:
            now = self.clock()
            early = now < self._deadline
            self.early_requests += early
            if path.startswith("/v1.0/"):
                reply = self._graph(method, path.removeprefix("/v1.0"), query, headers, body)
            else:
                reply = self._identity(method, path, query, body)
            self.requests.append(RequestRecord(now, method, path, reply.status, early=early))
            if reply.status in (429, 503) and "Retry-After" in reply.headers:
                self._wait_until(now + int(reply.headers["Retry-After"]))
            return reply

    def _wait_until(self, deadline: float) -> None:
        self._deadline = max(self._deadline, deadline)

    # -- the identity platform ---------------------------------------------------------

    def _identity(self, method: str, path: str, query: str, body: bytes) -> Reply:
        if path == "/common/discovery/instance":
            host = self.issuer_host
            return Reply(
                200,
                {
                    "tenant_discovery_endpoint": (
                        f"{host}/common/v2.0/.well-known/openid-configuration"
                    ),
                    "api-version": "1.1",
                    "metadata": [],
                },
            )
        if match := OIDC_PATH.match(path):
            return self._openid_configuration(match["tenant"])
        if (match := TOKEN_PATH.match(path)) and method == "POST":
            form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
            return self._token(match["tenant"], form)
        return error(404, "NotFound", f"no such endpoint: {method} {path}")

    def _openid_configuration(self, tenant: str) -> Reply:
        if tenant not in (self.tenant_id, "common", "organizations"):
            return Reply(
                400,
                {
                    "error": "invalid_tenant",
                    "error_description": _aadsts(90002, f"Tenant '{tenant}' not found."),
                },
            )
        base = f"{self.issuer_host}/{self.tenant_id}"
        return Reply(
            200,
            {
                "token_endpoint": f"{base}/oauth2/v2.0/token",
                "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                "issuer": f"{base}/v2.0",
                "jwks_uri": f"{base}/discovery/v2.0/keys",
                "response_types_supported": ["code", "id_token", "token"],
                "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt"],
            },
        )

    def _token(self, tenant: str, form: dict[str, str]) -> Reply:
        client_id = form.get("client_id", "")
        if tenant != self.tenant_id:
            return _token_error(400, "invalid_request", 90002, f"Tenant '{tenant}' not found.")
        if form.get("grant_type") != "client_credentials":
            return _token_error(
                400, "unsupported_grant_type", 70003, "The app requested an unsupported grant type."
            )
        if form.get("scope") != GRAPH_SCOPE:
            return _token_error(
                400,
                "invalid_scope",
                1002012,
                f"The provided value for scope {form.get('scope')} is not valid.",
            )
        app = self.apps.get(client_id)
        if app is None:
            return _token_error(
                400,
                "unauthorized_client",
                700016,
                f"Application with "
                f"identifier '{client_id}' was not found in the directory "
                f"'{self.tenant_id}'.",
            )
        if "client_secret" in form:
            if app.secret is None or not secrets.compare_digest(form["client_secret"], app.secret):
                return _token_error(
                    401,
                    "invalid_client",
                    7000215,
                    "Invalid client secret "
                    f"provided. Ensure the secret being sent in the request is "
                    f"the client secret value, not the client secret ID, for a "
                    f"secret added to app '{client_id}'.",
                )
        elif "client_assertion" in form:
            problem = self._assertion_problem(app, form["client_assertion"], tenant)
            if problem:
                return _token_error(401, "invalid_client", *problem)
        else:
            return _token_error(
                401,
                "invalid_client",
                7000218,
                "The request body must contain "
                "the following parameter: 'client_assertion' or 'client_secret'.",
            )
        token = "sandbox." + secrets.token_urlsafe(24)
        self._tokens[token] = _Token(client_id, self.clock() + self.token_lifetime)
        return Reply(
            200,
            {
                "token_type": "Bearer",
                "expires_in": self.token_lifetime,
                "ext_expires_in": self.token_lifetime,
                "access_token": token,
            },
        )

    def _assertion_problem(
        self, app: AppRegistration, assertion: str, tenant: str
    ) -> tuple[int, str] | None:
        """Why a client assertion is refused, as (AADSTS code, text); None when it is good."""
        if app.certificate is None:
            return (
                700027,
                "Client assertion contains an invalid signature. No certificate "
                "is registered for the app.",
            )
        header = jwt.get_unverified_header(assertion)
        thumbprints = {
            "x5t": _b64(app.certificate.fingerprint(hashes.SHA1())),  # noqa: S303
            "x5t#S256": _b64(app.certificate.fingerprint(hashes.SHA256())),
        }
        if not any(str(header.get(k, "")).rstrip("=") == v for k, v in thumbprints.items()):
            return (
                700027,
                "Client assertion contains an invalid signature. [Reason - The "
                "key was not found., Thumbprint of key used by client: "
                f"'{header.get('x5t') or header.get('x5t#S256')}']",
            )
        audience = f"{self.issuer_host}/{tenant}/oauth2/v2.0/token"
        try:
            claims = jwt.decode(
                assertion,
                app.certificate.public_key(),  # type: ignore[arg-type]
                algorithms=["RS256", "PS256"],
                audience=audience,
                options={"require": ["exp", "aud", "iss", "sub", "jti"]},
            )
        except jwt.InvalidTokenError as exc:
            return 700027, f"Client assertion failed signature validation. ({exc})"
        if claims["iss"] != app.client_id or claims["sub"] != app.client_id:
            return (
                700021,
                "Client assertion application identifier doesn't match 'client_id' parameter.",
            )
        return None

    # -- Graph ---------------------------------------------------------------------

    def _graph(
        self, method: str, path: str, query: str, headers: dict[str, str], body: bytes
    ) -> Reply:
        client_request_id = headers.get("client-request-id", str(uuid.uuid4()))
        if self._throttle_next:
            return _throttled(self._throttle_next.pop(0), client_request_id)
        app, problem = self._caller(headers)
        if problem is not None:
            return problem.with_request_id(client_request_id)
        assert app is not None
        if path == "/$batch" and method == "POST":
            return self._batch(app, body, client_request_id)
        return self._call(app, method, path, query, _json(body)).with_request_id(client_request_id)

    def _caller(self, headers: dict[str, str]) -> tuple[AppRegistration | None, Reply | None]:
        authorization = headers.get("authorization", "")
        if not authorization.startswith("Bearer "):
            return None, error(401, "InvalidAuthenticationToken", "Access token is empty.")
        token = self._tokens.get(authorization.removeprefix("Bearer "))
        if token is None:
            return None, error(
                401,
                "InvalidAuthenticationToken",
                "Access token validation failure. Invalid audience.",
            )
        if token.expires_at <= self.clock():
            return None, error(
                401,
                "InvalidAuthenticationToken",
                "Lifetime validation failed, the token is expired.",
            )
        return self.apps[token.client_id], None

    def _call(self, app: AppRegistration, method: str, path: str, query: str, body: Any) -> Reply:
        route = self.data.route(method, path)
        if route is None:
            return error(
                400,
                "BadRequest",
                f"Resource not found for the segment '{path.rsplit('/', 1)[-1]}'.",
            )
        operation, handler, params = route
        if not PERMISSIONS[operation] & app.permissions:
            return error(
                403,
                "Authorization_RequestDenied",
                "Insufficient privileges to complete the operation.",
            )
        return handler(params=params, query=_query(query), body=body, now=time.time())

    def _batch(self, app: AppRegistration, body: bytes, client_request_id: str) -> Reply:
        requests = (_json(body) or {}).get("requests")
        if not isinstance(requests, list) or not requests:
            return error(400, "BadRequest", "Invalid batch payload format.")
        if len(requests) > BATCH_LIMIT:
            return error(
                400, "BadRequest", f"Number of batch requests exceeds the limit of {BATCH_LIMIT}."
            )
        responses = []
        now = self.clock()
        early = now < self._deadline  # every item arrived with the batch
        for item in requests:
            url = str(item.get("url", ""))
            path, _, query = url.partition("?")
            path = "/" + path.lstrip("/")
            self.early_requests += early
            if self._throttle_items:
                reply = _throttled(self._throttle_items.pop(0), client_request_id)
            else:
                reply = self._call(
                    app, str(item.get("method", "GET")).upper(), path, query, item.get("body")
                ).with_request_id(client_request_id)
            self.requests.append(
                RequestRecord(
                    now, str(item.get("method")), path, reply.status, in_batch=True, early=early
                )
            )
            if reply.status == 429:
                self._wait_until(now + int(reply.headers["Retry-After"]))
            responses.append(
                {
                    "id": item.get("id"),
                    "status": reply.status,
                    "headers": reply.headers,
                    "body": reply.body,
                }
            )
        return Reply(200, {"responses": responses})


def _throttled(retry_after: int, client_request_id: str) -> Reply:
    reply = error(
        429, "TooManyRequests", f"Too many requests. Please retry after {retry_after} seconds."
    ).with_request_id(client_request_id)
    return Reply(reply.status, reply.body, {**reply.headers, "Retry-After": str(retry_after)})


def _token_error(status: int, code: str, aadsts: int, text: str) -> Reply:
    return Reply(
        status,
        {
            "error": code,
            "error_description": _aadsts(aadsts, text),
            "error_codes": [aadsts],
            "timestamp": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%SZ"),
            "trace_id": str(uuid.uuid4()),
            "correlation_id": str(uuid.uuid4()),
            "error_uri": f"https://login.microsoftonline.com/error?code={aadsts}",
        },
    )


def _aadsts(code: int, text: str) -> str:
    return (
        f"AADSTS{code}: {text} Trace ID: {uuid.uuid4()} Correlation ID: {uuid.uuid4()} "
        f"Timestamp: {datetime.now(UTC):%Y-%m-%d %H:%M:%SZ}"
    )


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _json(body: Any) -> Any:
    if isinstance(body, bytes | str):
        if not body:
            return None
        try:
            return json.loads(body)
        except ValueError:
            return None
    return body


def _query(query: str) -> dict[str, str]:
    return {unquote(k): v[0] for k, v in parse_qs(query, keep_blank_values=True).items()}


# re-exported for the serve module and tests
__all__ += ["METHOD_SEGMENTS", "PASSWORD_METHOD_ID"]


def running_graph_sandbox(**options: Any) -> Any:
    """The sandbox served over HTTPS (see `demo.graph_sandbox_serve.running_graph_sandbox`):
    a context manager yielding an object with `connector_config()`."""
    from demo.graph_sandbox_serve import running_graph_sandbox as serve

    return serve(**options)
